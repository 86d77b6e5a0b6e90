"""alarm-bridge: alarm transitions -> one Prefect event each -> the runbook's deployment runs;
missed scheduled runs -> CRIT and one notification. Sandbox + the session's Prefect test server
(whose trigger services run: a deployment trigger creates the run)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.schedules import Cron
from prefect.states import Completed, Scheduled

from flows.alarm_bridge.flow import TASKS, alarm_bridge
from flows.alarm_bridge.judge import EVENT, ScheduleSpec, routed_runbook
from flows.alarm_bridge.prefect_api import ensure_missed_run_automation, fire_times
from flows.alarm_bridge.triggers import bridge_deployment, trigger_parameters, triggers_for
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.report import RunReport
from sandbox.server import ACCOUNT_ID, Sandbox

pytestmark = pytest.mark.usefixtures("prefect_harness")

HR = "hr-resource-optimization"


def run(**params) -> tuple[RunReport, str]:
    params.setdefault("check_schedules", False)
    state = alarm_bridge(return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report, state.type.value


def sent(report: RunReport) -> list[str]:
    return sorted(f.resource for f in report.findings if f.check == "alarm-transition" and f.value == 1)


def set_state(system, alarm: str, state: str) -> None:
    import boto3

    from opsbook import aws

    boto3.client("cloudwatch", region_name=system.region, endpoint_url=aws.endpoint_url()).set_alarm_state(
        AlarmName=alarm, StateValue=state, StateReason=f"test: {state}")


def put_alarm(system, name: str, dimensions: dict[str, str]) -> None:
    import boto3

    from opsbook import aws

    boto3.client("cloudwatch", region_name=system.region, endpoint_url=aws.endpoint_url()).put_metric_alarm(
        AlarmName=name, MetricName="ReadThrottleEvents", Namespace="AWS/DynamoDB", Statistic="Sum", Period=60, EvaluationPeriods=1,
        Threshold=0, ComparisonOperator="GreaterThanThreshold", Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()])


# --- alarms -> events --------------------------------------------------------------------------------


def test_an_alarm_going_into_alarm_sends_one_event_a_second_poll_none_and_ok_then_alarm_again_sends_again(seeded):
    hr = seeded(HR)
    alarm = "lambda-errors-team2"
    assert routed_runbook(hr, alarm) == "emergency-check"
    set_state(hr, alarm, "ALARM")
    first, state = run(systems=[HR])
    assert sent(first) == [alarm] and state == "COMPLETED", [(f.resource, f.summary) for f in first.findings]
    f = next(f for f in first.findings if f.resource == alarm)
    assert f.details["runbook"] == "emergency-check" and f.details["priority"] == "P2"
    second, _ = run(systems=[HR])
    assert sent(second) == []
    assert "already started" in next(f for f in second.findings if f.resource == alarm).summary
    assert first.api_calls_by_operation == {"cloudwatch:DescribeAlarms": 1} and first.undeclared_iam_actions == []
    # OK, then ALARM again: a new transition, sent again
    alarm = "dynamodb-sandbox-throttle-sandbox"
    set_state(hr, alarm, "ALARM")
    assert sent(run(systems=[HR])[0]) == [alarm]
    set_state(hr, alarm, "OK")
    assert sent(run(systems=[HR])[0]) == []
    time.sleep(0.01)
    set_state(hr, alarm, "ALARM")
    assert sent(run(systems=[HR])[0]) == [alarm]


def test_a_poll_writes_little_to_the_prefect_server_and_a_quiet_poll_writes_no_memory(seeded, monkeypatch):
    """The write cut that keeps the UI answering under the bridge (bench/bridge_ui.py): a poll of three systems in
    three regions makes three task runs whatever the number of systems, regions and alarms (was one a region + one a
    system + the report), sends its events in one request, and writes a system's memory only when it changed."""
    from collections import Counter

    from prefect.tasks import Task

    import flows.alarm_bridge.flow as ab

    systems = seeded(HR, "todo-app", "t-developer")
    alarms = {HR: "lambda-errors-team2", "todo-app": "todo-api-high-error-rate", "t-developer": "t-developer-high-error-rate"}
    for s in systems:
        set_state(s, alarms[s.name], "ALARM")
    names = [s.name for s in systems]
    tasks: Counter[str] = Counter()
    posts: list[int] = []
    submit, send = Task.submit, ab.send_events
    monkeypatch.setattr(Task, "submit", lambda self, *a, **k: (tasks.update([self.name]), submit(self, *a, **k))[1])
    monkeypatch.setattr(ab, "send_events", lambda events: (posts.append(len(events)), send(events))[1])

    def memory_written() -> dict[str, object]:
        from flows.alarm_bridge.prefect_api import variable_name

        with get_client(sync_client=True) as c:
            return {n: getattr(c.read_variable_by_name(variable_name("alarms", n)), "updated", None) for n in names}

    first, _ = run(systems=names)
    assert sent(first) == sorted(alarms.values()) and posts == [3]
    assert tasks == {"read-alarms": 1, "fire-transitions": 1, "publish-report": 1}, tasks
    written = memory_written()
    tasks.clear()
    quiet, _ = run(systems=names)  # nothing changed: the same answer, nothing remembered anew
    assert sent(quiet) == [] and posts == [3] and tasks == {"read-alarms": 1, "fire-transitions": 1, "publish-report": 1}
    assert all("already started" in f.summary for f in quiet.findings if f.resource in alarms.values())
    assert memory_written() == written
    set_state(systems[1], alarms["todo-app"], "OK")  # one system's alarm leaves ALARM: only that system's memory is written
    assert sent(run(systems=names)[0]) == [] and posts == [3]
    now = memory_written()
    assert now["todo-app"] != written["todo-app"] and {n: now[n] for n in (HR, "t-developer")} == {n: written[n] for n in (HR, "t-developer")}


def test_the_schedule_memory_is_written_when_it_notified_or_lags_behind():
    from flows.alarm_bridge.flow import CHECKED_UNTIL_EVERY, memory_changed
    from flows.alarm_bridge.prefect_api import ScheduleMemory

    now = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
    fresh = ScheduleMemory(checked_until=(now - timedelta(minutes=1)).isoformat(), notified={"a": 1})
    assert not memory_changed(fresh, {"a": 1}, now)  # a quiet poll: no write
    assert memory_changed(fresh, {}, now)  # it notified someone: remembered at once
    assert memory_changed(ScheduleMemory(), {}, now)  # never checked
    assert memory_changed(ScheduleMemory(checked_until=(now - CHECKED_UNTIL_EVERY).isoformat()), {}, now)


def test_other_systems_alarms_and_unrouted_alarms_send_nothing(seeded):
    hr, todo, leh = seeded(HR, "todo-app", "leh")
    set_state(todo, "todo-api-high-error-rate", "ALARM")  # todo-app's, in leh's region
    set_state(hr, "team2-high-latency", "ALARM")          # hr's, but no runbook glob matches it
    assert routed_runbook(hr, "team2-high-latency") is None and routed_runbook(leh, "todo-api-high-error-rate") is None
    report, _ = run(systems=[HR, "leh"])
    assert sent(report) == []
    assert report.api_calls_by_operation == {"cloudwatch:DescribeAlarms": 2}  # one a region
    both, _ = run(systems=["todo-app", "leh"])  # same region: one read shared by both systems
    assert sent(both) == ["todo-api-high-error-rate"] and both.api_calls_by_operation == {"cloudwatch:DescribeAlarms": 1}


def test_stale_transition_and_unreachable_prefect_are_reported_not_sent(seeded, monkeypatch):
    hr = seeded(HR)
    set_state(hr, "lambda-errors-team2", "ALARM")
    report, _ = run(systems=[HR], max_age_minutes=0)
    f = next(f for f in report.findings if f.resource == "lambda-errors-team2")
    assert f.status is Status.WARN and "NOT started" in f.summary and "opsbook run emergency-check" in f.summary
    assert sent(report) == []
    set_state(hr, "lambda-errors-team2", "ALARM")  # a new transition, but the event is refused
    import flows.alarm_bridge.flow as ab

    with monkeypatch.context() as m:  # (monkeypatch.undo() would also undo the sandbox fixture's endpoint)
        m.setattr(ab, "send_events", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("refused")))
        failed, state = run(systems=[HR])
    assert state == "FAILED" and failed.status is Status.CRIT
    assert "the next poll sends it again" in next(f for f in failed.findings if f.resource == "lambda-errors-team2").summary
    assert sent(run(systems=[HR])[0]) == ["lambda-errors-team2"]  # not remembered: sent once the API accepts it


def test_a_region_that_cannot_be_read_is_unknown(seeded, closed_port, monkeypatch):
    seeded(HR)
    from opsbook import aws

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("OPSBOOK_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("OPSBOOK_MAX_ATTEMPTS", "1")
    aws.reset_clients()
    report, _ = run(systems=[HR, "todo-app"])
    bad = [f for f in report.findings if f.check == "alarms-read"]
    assert {f.resource for f in bad} == {HR, "todo-app"} and all(f.status is Status.UNKNOWN for f in bad)
    assert report.status is Status.UNKNOWN


# --- triggers: the event starts the runbook's deployment --------------------------------------------------


@flow(name="alarm-probe")
def probe(system: str, dry_run: bool = True, alarm: dict | None = None, tables: list[str] | str | None = None, priority: str | None = None):
    return system


def test_trigger_parameters_follow_each_flows_signature():
    assert trigger_parameters(HR, "emergency-check") == {"system": HR}
    assert trigger_parameters("leh", "bill-shock-breaker") == {"system": "leh", "dry_run": False, "approver": "alarm-bridge"}
    assert trigger_parameters(HR, "remediate-dynamodb-throttling", flow=probe) == {
        "system": HR, "alarm": "{{ event.payload }}", "tables": "{{ event.payload.tables }}", "priority": "{{ event.payload.priority }}"}
    assert triggers_for(HR, "bill-shock-breaker") == []  # hr routes no alarm to it
    (t,) = triggers_for("leh", "bill-shock-breaker")
    assert t.expect == {EVENT} and t.match.get("opsbook.runbook") == ["bill-shock-breaker"] and t.match.get("opsbook.system") == ["leh"]
    spec = bridge_deployment()
    assert spec["cron"] == "* * * * *" and "opsbook" in spec["tags"]


def test_a_deployment_with_triggers_for_is_started_by_the_event(seeded, removed_after):
    hr = seeded(HR)
    table = hr.dynamodb_tables[0].name
    alarm = f"dynamodb-{table}-throttle-reads"
    put_alarm(hr, alarm, {"TableName": table})
    dep_id = probe.to_deployment(name=f"probe-{uuid.uuid4().hex[:8]}", parameters={"system": HR},
                                 triggers=triggers_for(HR, "remediate-dynamodb-throttling", flow=probe)).apply()
    removed_after["deployments"].append(dep_id)
    time.sleep(1.5)  # the trigger service loads new automations every ~1 s
    set_state(hr, alarm, "ALARM")
    assert sent(run(systems=[HR])[0]) == [alarm]
    assert sent(run(systems=[HR])[0]) == []

    def runs():
        with get_client(sync_client=True) as c:
            return c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep_id])))

    deadline = time.monotonic() + 20
    while not runs() and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(1.0)  # a duplicate would show up by now
    (fr,) = runs()
    assert fr.parameters["system"] == HR and fr.parameters["tables"] == [table] and fr.parameters["priority"] == "P2"
    assert fr.parameters["alarm"]["alarm"] == alarm and fr.parameters["alarm"]["threshold"] == 0
    assert "dry_run" not in fr.parameters  # the flow's default (a dry run) applies: an alarm never turns it off


# --- missed scheduled runs -------------------------------------------------------------------------------------


@flow(name="scheduled-probe")
def scheduled_probe(system: str):
    return system


def sns_sent(system, mentioning: str) -> int:
    """Messages published to the system's topic that name this deployment (other test files share the Prefect server)."""
    topic = f"arn:aws:sns:{system.region}:{ACCOUNT_ID}:{system.notifications.sns_topic}"
    return sum(mentioning in str(n) for n in Sandbox.backend("sns", system.region).topics[topic].sent_notifications)


def test_a_scheduled_run_not_executed_is_crit_and_notified_once(seeded):
    hr = seeded(HR)
    name = f"daily-probe-{uuid.uuid4().hex[:8]}"
    dep_id = scheduled_probe.to_deployment(name=name, parameters={"system": HR}, tags=["opsbook", HR],
                                           schedules=[Cron("0 9 * * *", timezone="Asia/Seoul")]).apply()
    with get_client(sync_client=True) as c:
        late = c.create_flow_run_from_deployment(dep_id, state=Scheduled(scheduled_time=datetime.now(timezone.utc) - timedelta(minutes=30)))
        done = c.create_flow_run_from_deployment(dep_id, state=Scheduled(scheduled_time=datetime.now(timezone.utc) - timedelta(minutes=40)))
        c.set_flow_run_state(done.id, Completed(), force=True)

    def mine(report):
        return [f for f in report.findings if f.resource == name]

    report, state = run(system=HR, check_schedules=True, grace_minutes=10)
    crit = [f for f in mine(report) if f.status is Status.CRIT]
    assert state == "FAILED" and len(crit) == 1 and crit[0].details["flow_run_id"] == str(late.id), mine(report)
    assert crit[0].details["kind"] == "stuck" and "30 min after its expected start" in crit[0].summary
    assert sns_sent(hr, name) == 1 and report.notification["sent"] and report.notification["errors"] == []
    again, _ = run(system=HR, check_schedules=True, grace_minutes=10)
    assert [f.status for f in mine(again)] == [Status.CRIT] and sns_sent(hr, name) == 1  # still missed, notified once
    with get_client(sync_client=True) as c:
        c.set_flow_run_state(late.id, Completed(), force=True)
    ok, _ = run(system=HR, check_schedules=True, grace_minutes=10)
    assert [f.status for f in mine(ok)] == [Status.OK] and sns_sent(hr, name) == 1
    policy = set(policy_for(TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert used and used <= policy and report.undeclared_iam_actions == []


def test_fire_times_follow_the_cron_in_its_time_zone():
    """Prefect's own cron computation (the judge gets it as a function: test_judge)."""
    now = datetime(2025, 3, 5, 1, 30, tzinfo=timezone.utc)  # 10:30 in Seoul
    daily = ScheduleSpec(cron="0 9 * * *", timezone="Asia/Seoul")
    assert fire_times(daily, now - timedelta(hours=24), now) == [datetime(2025, 3, 5, 0, 0, tzinfo=timezone.utc)]
    assert fire_times(daily, now, now - timedelta(hours=1)) == []
    assert len(fire_times(ScheduleSpec(cron="* * * * *"), now - timedelta(minutes=10), now)) == 10


@pytest.fixture
def removed_after():
    """Deployments and automations a test makes on the session's server, deleted after it: a proactive automation
    left behind fires every window for the rest of the session (a run each time), and a deployment's triggers stay."""
    made: dict[str, list] = {"deployments": [], "automations": []}
    yield made
    with get_client(sync_client=True) as c:
        for automation_id in made["automations"]:
            c.delete_automation(automation_id)
        for dep_id in made["deployments"]:
            c.delete_deployment(dep_id)


def test_the_watchdog_automation_starts_the_bridge_when_no_bridge_run_finished(removed_after):
    dep_id = scheduled_probe.to_deployment(name=f"bridge-{uuid.uuid4().hex[:8]}", parameters={"system": HR}).apply()
    removed_after["deployments"].append(dep_id)
    first = ensure_missed_run_automation(dep_id, within_s=10)
    second = ensure_missed_run_automation(dep_id, within_s=10)
    removed_after["automations"].append(second)
    assert second != first  # replaced, not added
    with get_client(sync_client=True) as c:
        assert len([a for a in c.read_automations() if str(dep_id) in str(a.trigger)]) == 1
        deadline = time.monotonic() + 40
        runs = []
        while not runs and time.monotonic() < deadline:
            time.sleep(0.5)
            runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep_id])))
        assert runs, "the proactive trigger did not start the bridge within 40 s"
