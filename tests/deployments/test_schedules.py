import pytest

from deployments.schedules import build, deployment_specs


def test_every_seed_system_has_its_daily_health_schedule_in_its_time_zone():
    specs = {s["name"]: s for s in deployment_specs()}
    for system in ("hr-resource-optimization", "t-developer", "todo-app", "leh"):
        s = specs[f"daily-health-{system}"]
        assert s["cron"] == "0 9 * * *" and s["timezone"] == "Asia/Seoul" and s["parameters"] == {"system": system}


@pytest.fixture(scope="module")
def built():
    """Every deployment, built once for the module (52 ``to_deployment`` calls)."""
    return {d.name: d for d in build()}


STORED = ("daily-health-todo-app", "emergency-rollback-t-developer", "dr-test-todo-app")


@pytest.fixture(scope="module")
def stored(built, prefect_harness):
    """A read-only, a mutating and a scheduled-drill deployment, registered and read back from the server."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {name: client.read_deployment(built[name].apply()) for name in STORED}


def test_deployments_register_with_their_schedules(stored):
    sched = stored["daily-health-todo-app"].schedules[0].schedule
    assert sched.cron == "0 9 * * *" and sched.timezone == "Asia/Seoul"
    assert stored["daily-health-todo-app"].parameters == {"system": "todo-app"}
    assert not stored["emergency-rollback-t-developer"].schedules


@pytest.mark.usefixtures("prefect_harness")
def test_work_pool_deployments_are_idempotent():
    from prefect.client.orchestration import get_client

    from deployments.schedules import deploy_to_work_pool

    some = ["daily-health-todo-app", "alarm-bridge-all"]  # a runbook's, and the bridge's (with its watchdog automation)
    first = deploy_to_work_pool("opsbook-test", only=some)  # from source, as a worker runs them
    second = deploy_to_work_pool("opsbook-test", only=some)
    assert first == second and len(first) == len(some)
    with get_client(sync_client=True) as client:
        deps = [client.read_deployment(i) for i in first]
    assert {d.work_pool_name for d in deps} == {"opsbook-test"}
    assert "flows/daily_health/flow.py:daily_health" in {d.entrypoint for d in deps}


def test_every_runbook_is_deployed_for_every_system_it_applies_to():
    from opsbook.inventory import known_systems, load_system
    from opsbook.registry import RUNBOOKS

    specs = deployment_specs()
    pairs = {(s["runbook"], s["system"]) for s in specs}
    for system in known_systems():
        inv = load_system(system)
        for rb in RUNBOOKS.values():
            if rb.name == "alarm-bridge":
                continue  # one deployment for every system, below
            assert ((rb.name, system) in pairs) == (rb.why_not(inv) is None), (rb.name, system, rb.why_not(inv))
    by_name = {s["name"]: s for s in specs}
    assert len(by_name) == len(specs)  # unique names
    # the schedules, from the inventories
    assert by_name["weekly-report-t-developer"]["cron"] == "0 9 * * 1"
    assert by_name["bill-shock-breaker-leh"]["cron"] == "*/5 * * * *"
    assert by_name["dr-test-todo-app"]["cron"] == "0 10 1 1,4,7,10 *" and by_name["dr-test-todo-app"]["parameters"]["dry_run"] is False
    assert by_name["backup-verify-hr-resource-optimization"]["cron"] == "0 9 * * 1"
    for unscheduled in ("emergency-rollback-t-developer", "dlq-redrive-leh", "reindex-case-leh", "emergency-check-todo-app"):
        assert by_name[unscheduled]["cron"] is None and "on-demand" in by_name[unscheduled]["tags"]
    assert "bill-shock-breaker-hr-resource-optimization" not in by_name  # HR has no bill_shock section
    rb = by_name["emergency-rollback-t-developer"]
    assert rb["tags"] == ["opsbook", "emergency-rollback", "t-developer", "mutating", "on-demand"]
    assert "read-only" in by_name["daily-health-leh"]["tags"]
    assert by_name["alarm-bridge-all"]["cron"] == "* * * * *" and by_name["alarm-bridge-all"]["system"] is None


def test_deployments_carry_descriptions_and_a_parameter_form(built, stored):
    deps = built
    d = deps["emergency-rollback-t-developer"]
    assert d.description.startswith("**emergency-rollback** for **t-developer**") and "dry run by default" in d.description
    props = stored[d.name].parameter_openapi_schema["properties"]  # the UI's form, as the server keeps it
    assert props["dry_run"]["default"] is True and "approval" not in props  # how to approve is the shell's, never a parameter
    assert props["to_revision"] == {**props["to_revision"], "type": "integer", "default": 0, "minimum": 0}
    assert props["accept_guess"]["default"] is False and "guess" in props["accept_guess"]["description"]
    assert stored[d.name].parameters == {"system": "t-developer"} and "mutating" in stored[d.name].tags
    assert deps["daily-health-leh"].schedules and not d.schedules
    # alarm-driven runs: HR routes throttle alarms to the DynamoDB remediation, with the alarm's details
    t = deps["remediate-dynamodb-throttling-hr-resource-optimization"].triggers
    assert len(t) == 1 and t[0].match["opsbook.system"] in ("hr-resource-optimization", ["hr-resource-optimization"]) and t[0].parameters["system"] == "hr-resource-optimization"
    assert not deps["daily-health-hr-resource-optimization"].triggers


def bare_null(prop: dict) -> bool:
    """A property the UI renders as a "T | None" switch, or pre-fills with null."""
    return any(alt.get("type") == "null" for alt in prop.get("anyOf", [])) or prop.get("type") == "null" or (
        "default" in prop and prop["default"] is None)


def test_every_deployed_parameter_is_described_and_plain(built, stored):
    """What the UI's Run form is built from. The form depends on the runbook only: one deployment a runbook is
    checked, and the server is shown to keep exactly the schema each deployment sends (the stored ones)."""
    from prefect.utilities.schema_tools import validate

    from opsbook.registry import RUNBOOKS

    for name, dep in stored.items():  # the form's fields, their types, defaults, bounds and help text, as sent
        sent = built[name]._parameter_openapi_schema.model_dump()
        assert {k: dep.parameter_openapi_schema[k] for k in ("properties", "required")} == {k: sent[k] for k in ("properties", "required")}, name
    schemas = {}
    for d in built.values():
        schemas.setdefault(d.flow_name, d._parameter_openapi_schema.model_dump())
    assert set(schemas) == set(RUNBOOKS) - {"fleet"}  # fleet runs over a targets file: no deployment of its own
    for flow, schema in schemas.items():
        assert "approval" not in schema["properties"], flow
        for key, prop in schema["properties"].items():
            assert prop.get("description", "").strip(), (flow, key, prop)
            assert not bare_null(prop), (flow, key, prop)
    for d in built.values():  # what the schedules pass passes the schema the server enforces (a required case_id: the form asks)
        assert validate(d.parameters, schemas[d.flow_name], ignore_required=True) == [], (d.name, d.parameters)
    drill = built["dr-test-todo-app"]  # what the schedule passes stays a parameter, described
    assert drill.parameters == {"system": "todo-app", "dry_run": False, "approver": "schedule"}
    assert "schedule" in schemas["dr-test"]["properties"]["approver"]["description"]


def test_the_check_for_nullable_parameters_would_see_one():
    """The twin: what Prefect makes of ``int | None = None`` (the old form) is caught."""
    from prefect import flow
    from prefect.utilities.callables import parameter_schema

    @flow
    def old_style(to_revision: int | None = None, only: str = "") -> None:
        return None

    props = parameter_schema(old_style).model_dump()["properties"]
    assert bare_null(props["to_revision"]) and not bare_null(props["only"])


def test_the_description_states_the_schedule_and_its_time_zone():
    from deployments.schedules import cron_words, describe

    specs = {s["name"]: s for s in deployment_specs()}

    class Flow:
        description = "The runbook's docstring."

    text = describe(specs["daily-health-todo-app"], Flow())
    assert "Scheduled: 09:00 every day, Asia/Seoul time (`0 9 * * *`)." in text and text.endswith("The runbook's docstring.")
    assert "Scheduled: 09:00 every Monday, Asia/Seoul time (`0 9 * * 1`)." in describe(specs["weekly-report-t-developer"], Flow())
    assert "Scheduled: every minute, UTC time" in describe(specs["alarm-bridge-all"], Flow())
    assert "No schedule" in describe(specs["emergency-rollback-t-developer"], Flow())
    assert cron_words("0 10 1 1,4,7,10 *") == "10:00 on day 1 of January, April, July and October"
    assert cron_words("*/5 * * * *") == "every 5 minutes"
    odd = {**specs["daily-health-todo-app"], "cron": "0 9 * * 1-5"}  # not in words: the cron itself, still with its zone
    assert cron_words("0 9 * * 1-5") is None and "Scheduled: `0 9 * * 1-5`, Asia/Seoul time." in describe(odd, Flow())


def test_the_serving_process_asks_for_runs_every_2_s_unless_told_otherwise(monkeypatch):
    from deployments.schedules import poll_seconds

    monkeypatch.delenv("OPSBOOK_RUNNER_POLL_S", raising=False)
    monkeypatch.delenv("PREFECT_RUNNER_POLL_FREQUENCY", raising=False)
    assert poll_seconds() == 2.0  # Prefect's own default is 10 s: a UI click waited up to 10 s before its run started
    monkeypatch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "10")
    assert poll_seconds() == 10.0  # Prefect's setting, when someone set it, is honoured
    monkeypatch.setenv("OPSBOOK_RUNNER_POLL_S", "0.1")
    with pytest.raises(RuntimeError, match="between 0.5 and 60 seconds"):
        poll_seconds()
