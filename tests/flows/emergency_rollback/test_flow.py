"""emergency-rollback and the safe-mutation mechanism, against the sandbox."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest

from flows.emergency_rollback import flow as rb
from flows.emergency_rollback.flow import emergency_rollback
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.inventory import load_file
from opsbook.mutation import statestore
from opsbook.mutation.core import ShellApproval, shell_approval
from opsbook.report import RunReport
from sandbox.faults import apply_fault

pytestmark = pytest.mark.usefixtures("prefect_harness")
ECS = "t-developer-cluster-production/t-developer-service-production"


def run(system: str, approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = emergency_rollback(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def alias_version(sandbox, fn="todo-api", alias="LIVE", region="ap-northeast-2"):
    return boto3.client("lambda", region_name=region, endpoint_url=sandbox.endpoint).get_alias(FunctionName=fn, Name=alias)["FunctionVersion"]


def service_td(sandbox):
    ecs = boto3.client("ecs", region_name="us-east-1", endpoint_url=sandbox.endpoint)
    return ecs.describe_services(cluster=ECS.split("/")[0], services=[ECS.split("/")[1]])["services"][0]["taskDefinition"]


def inbox(sandbox, region, topic_suffix):
    sns = boto3.client("sns", region_name=region, endpoint_url=sandbox.endpoint)
    sqs = boto3.client("sqs", region_name=region, endpoint_url=sandbox.endpoint)
    url = sqs.create_queue(QueueName=f"inbox-{int(time.time() * 1000)}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = [t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(topic_suffix)][0]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)

    def read():
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in msgs]

    return read


def test_dry_run_then_yes_alone_then_execute_rolls_back_once_records_and_notifies(seeded, sandbox):
    """The todo-app alias through its whole path: plan (dry run), a guess refused with --yes alone, executed with
    accept_guess (records, notices, settle, health checks, the policy), then a re-run that is a no-op."""
    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")  # Lambda keeps no alias history: the target 1 is a guess
    messages = inbox(sandbox, "ap-northeast-2", ":alerts")
    report = run("todo-app")
    assert report.outcome == "planned" and report.status is Status.OK and report.dry_run
    [action] = report.plan["actions"]
    assert (action["resource"], action["current"], action["target"]) == ("todo-api:LIVE", "2", "1")
    assert action["iam_action"] == "lambda:UpdateAlias" and action["evidence"].startswith("GUESS")
    assert report.plan["identity"]["account"] == "123456789012" and report.plan["identity"]["region"] == "ap-northeast-2"
    assert report.plan["override"] == "to_revision"
    assert alias_version(sandbox) == "2" and report.records == [] and messages() == []

    report = run("todo-app", dry_run=False, approval="yes", settle_timeout_s=10)
    assert report.outcome == "refused" and report.status is Status.UNKNOWN and report.status.exit_code == 3
    why = report.findings[-1].summary
    assert "step 1 (todo-api:LIVE: 2 -> 1" in why and "--param accept_guess=true" in why and "--param to_revision=" in why
    assert alias_version(sandbox) == "2" and report.records == [] and messages() == []  # nothing changed, nobody told

    report = run("todo-app", dry_run=False, approval="yes", accept_guess=True, approver="oncall-kim", settle_timeout_s=10)
    assert report.outcome == "done" and report.status is Status.OK, report.findings
    assert report.plan["actions"][0]["guess"] is True and report.approval["reason"] == "--execute --yes --param accept_guess=true"
    assert alias_version(sandbox) == "1"
    [rec] = report.records
    assert (rec["status"], rec["before"], rec["after"], rec["approver"]) == ("verified", "2", "1", "oncall-kim")
    assert rec["caller_arn"].startswith("arn:aws:sts::123456789012:") and rec["os_user"] and rec["flow_run_id"] == report.flow_run_id
    durable = statestore.read_records(todo)
    assert durable[0]["resource"] == "todo-api:LIVE" and durable[0]["after"] == "1"
    msgs = sorted(messages(), key=lambda m: m["Timestamp"])
    assert len(msgs) == 2 and "rolled back, settling" in msgs[0]["Subject"] and "done" in msgs[1]["Subject"]
    assert all("todo-api:LIVE" in m["Message"] and "2 -> 1" in m["Message"] for m in msgs)
    assert any(f.check == "rollback-settled" and f.status is Status.OK for f in report.findings)
    assert any(f.check == "lambda-state" for f in report.findings)  # health checks after acting
    policy = set(policy_for(rb.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert "lambda:UpdateAlias" in used and used <= policy, used - policy
    assert report.undeclared_iam_actions == []

    again = run("todo-app", dry_run=False, approval="yes", accept_guess=True, settle_timeout_s=10)
    assert again.outcome == "nothing-to-do" and again.records == [] and alias_version(sandbox) == "1"
    assert "already points at the rollback target 1" in again.plan["unchanged"][0]


def test_ecs_uses_the_previous_deployment_and_waits_bounded(seeded, sandbox):
    td = seeded("t-developer")
    fault = apply_fault(sandbox, td, "bad-deploy")
    refused = run("t-developer", to_revision=42)  # the plan step refuses a revision that is not ACTIVE (more: test_judge)
    assert refused.outcome == "refused" and refused.status is Status.UNKNOWN and "not an ACTIVE revision" in refused.findings[-1].summary
    report = run("t-developer", dry_run=False, approval="yes", settle_timeout_s=3)
    [action] = report.plan["actions"]
    assert action["target"] == fault["from"] and "deployment the service ran before" in action["evidence"]
    assert action["guess"] is False  # evidence: --yes alone applies it (the twin of the guess refused in the todo-app test)
    assert service_td(sandbox) == fault["from"]
    settle = [f for f in report.findings if f.check == "rollback-settled"][0]
    assert settle.status is Status.WARN and "not settled after 3 s" in settle.summary  # moto keeps the old deployment
    assert report.outcome == "done-with-warnings" and report.status is Status.WARN
    again = run("t-developer", dry_run=False, approval="yes", settle_timeout_s=3)
    assert again.outcome == "nothing-to-do" and service_td(sandbox) == fault["from"]


def test_ecs_settles_when_the_rollout_completes(seeded, sandbox):
    td = seeded("t-developer")
    fault = apply_fault(sandbox, td, "bad-deploy")
    done = threading.Event()

    def finish_rollout():
        for _ in range(100):
            if service_td(sandbox) == fault["from"]:
                time.sleep(0.5)
                sandbox.complete_ecs_rollout("us-east-1", *ECS.split("/"))
                done.set()
                return
            time.sleep(0.1)

    threading.Thread(target=finish_rollout, daemon=True).start()
    report = run("t-developer", dry_run=False, approval="yes", settle_timeout_s=20)
    assert done.is_set()
    settle = [f for f in report.findings if f.check == "rollback-settled"][0]
    assert settle.status is Status.OK and report.records[0]["status"] == "verified"
    assert report.outcome == "done"


def _wait_paused(flow_name: str, timeout: float = 60):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    t0 = time.monotonic()
    with get_client(sync_client=True) as client:
        while time.monotonic() - t0 < timeout:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
            runs = [r for r in runs if r.state.is_paused()]
            if runs:
                return runs[0].id
            time.sleep(0.3)
    raise AssertionError("no paused run")


def _run_in_thread(**params):
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("report", run(**params)), daemon=True)
    t.start()
    return t, out


def test_ui_approval_through_the_prefect_api(seeded, sandbox):
    from prefect.flow_runs import resume_flow_run

    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    messages = inbox(sandbox, "ap-northeast-2", ":alerts")
    t, out = _run_in_thread(system="todo-app", dry_run=False, approval_timeout_s=60, settle_timeout_s=10)
    run_id = _wait_paused("emergency-rollback")
    assert alias_version(sandbox) == "2"  # nothing before approval
    # the system's topic is told once, with the plan and the run's link in the UI
    [asked] = messages()
    assert "approval needed" in asked["Subject"] and "todo-api:LIVE: 2 -> 1" in asked["Message"]
    assert f"/runs/flow-run/{run_id}" in asked["Message"] and "accept_guess" in asked["Message"]
    form = _pause_form(run_id)  # the Resume form: the guess box, and no shell flags in the UI's text
    assert form["schema"]["properties"]["accept_guess"]["default"] is False
    assert "default" not in form["schema"]["properties"]["approver"]  # a self-hosted server knows no user: the approver types it
    assert "Plan: emergency-rollback · todo-app" in form["description"] and "to_revision set" in form["description"]
    assert "--param" not in form["description"] and "--yes" not in form["description"]
    resume_flow_run(run_id, run_input={"approve": True, "approver": "alice", "reason": "INC-42 P0", "accept_guess": True})
    t.join(60)
    report = out["report"]
    assert report.outcome == "done" and alias_version(sandbox) == "1"
    assert report.approval["approver"] == "alice" and report.approval["via"] == "ui" and report.records[0]["approver"] == "alice"
    later = messages()  # the two notices of the change itself; no second approval notice
    assert len(later) == 2 and not any("approval needed" in m["Subject"] for m in later), [m["Subject"] for m in later]


def _pause_form(run_id) -> dict:
    """What the UI's Resume modal shows for a paused run: the form's schema and its description."""
    from prefect.client.orchestration import get_client
    from prefect.input import keyset_from_paused_state
    from prefect.input.actions import read_flow_run_input

    with get_client(sync_client=True) as client:
        keyset = keyset_from_paused_state(client.read_flow_run(run_id).state)
    return {k: read_flow_run_input(keyset[k], flow_run_id=run_id) for k in ("schema", "description")}


def test_ui_rejection_changes_nothing(seeded, sandbox):
    from prefect.flow_runs import resume_flow_run

    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    t, out = _run_in_thread(system="todo-app", dry_run=False, approval_timeout_s=60)
    resume_flow_run(_wait_paused("emergency-rollback"), run_input={"approve": False, "approver": "bob", "reason": "not this one"})
    t.join(60)
    report = out["report"]
    assert report.outcome == "refused" and report.status is Status.UNKNOWN and "rejected by bob" in report.findings[-1].summary
    assert alias_version(sandbox) == "2" and report.records == []


def test_approval_timeout_ends_the_run_and_changes_nothing(seeded, sandbox):
    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    state = emergency_rollback(system="todo-app", dry_run=False, approval_timeout_s=3, return_state=True)
    # Prefect expires the pause itself: the run ends Failed ("never resumed") and cannot be resumed later.
    assert state.is_failed() and "never resumed" in state.message
    assert alias_version(sandbox) == "2"


def test_drift_between_plan_and_approval_stops_the_run(seeded, sandbox):
    from prefect.flow_runs import resume_flow_run

    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    t, out = _run_in_thread(system="todo-app", dry_run=False, approval_timeout_s=60)
    run_id = _wait_paused("emergency-rollback")
    apply_fault(sandbox, todo, "bad-release")  # someone ships v3 while the plan waits for approval
    resume_flow_run(run_id, run_input={"approve": True, "approver": "alice", "reason": "go", "accept_guess": True})
    t.join(60)
    report = out["report"]
    assert report.outcome == "refused" and "was 2 when planned and is now 3" in report.findings[-1].summary
    assert alias_version(sandbox) == "3" and report.records == []


def test_a_lease_held_elsewhere_refuses_naming_the_holder(seeded, sandbox):
    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    statestore.acquire_lease(todo, "todo-api:LIVE", "lee@laptop run other", "other-run", ttl_s=120)
    report = run("todo-app", dry_run=False, approval="yes", accept_guess=True)
    assert report.outcome == "refused" and "lee@laptop run other" in report.findings[-1].summary and "expires at" in report.findings[-1].summary
    assert alias_version(sandbox) == "2"
    statestore.release_lease(todo, "todo-api:LIVE", "other-run")
    assert run("todo-app", dry_run=False, approval="yes", accept_guess=True, settle_timeout_s=10).outcome == "done"


def test_failure_part_way_undoes_what_was_done(seeded, sandbox, tmp_path, monkeypatch):
    seeded("todo-app")
    lam = boto3.client("lambda", region_name="ap-northeast-2", endpoint_url=sandbox.endpoint)
    for fn in ("todo-api", "todo-worker"):
        if fn == "todo-worker":
            role = lam.get_function(FunctionName="todo-api")["Configuration"]["Role"]
            lam.create_function(FunctionName=fn, Runtime="python3.12", Role=role, Handler="h.h", Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18})
            lam.publish_version(FunctionName=fn)
            lam.create_alias(FunctionName=fn, Name="LIVE", FunctionVersion="1")
        lam.update_function_configuration(FunctionName=fn, Description="v-next")
        v = lam.publish_version(FunctionName=fn)["Version"]
        lam.update_alias(FunctionName=fn, Name="LIVE", FunctionVersion=v)
    inv = tmp_path / "two.yaml"
    inv.write_text("name: two\nregion: ap-northeast-2\nlambda_functions:\n  - {name: todo-api, aliases: [LIVE]}\n  - {name: todo-worker, aliases: [LIVE]}\n")
    real = rb.APPLIERS[rb.ALIAS_KIND]

    def flaky_apply(system, resource, value):
        if resource.startswith("todo-worker") and value == "1":
            raise RuntimeError("injected failure between the two actions")
        real.apply(system, resource, value)

    monkeypatch.setitem(rb.APPLIERS, rb.ALIAS_KIND, rb.Applier(read=real.read, apply=flaky_apply))
    report = run(str(inv), dry_run=False, approval="yes", accept_guess=True, settle_timeout_s=5)
    assert report.outcome == "failed" and report.status is Status.CRIT
    assert [(r["resource"], r["status"]) for r in report.records] == [
        ("todo-api:LIVE", "applied"), ("todo-worker:LIVE", "failed"), ("todo-api:LIVE", "undone")]
    assert alias_version(sandbox, "todo-api") == "2" and alias_version(sandbox, "todo-worker") == "2"
    durable = statestore.read_records(load_file(inv))
    assert {r["status"] for r in durable} == {"applied", "failed", "undone"}
    history = statestore.read_records(load_file(inv), history=True)  # each step: its intent, then its outcome
    assert sorted(r["status"] for r in history) == ["applied", "failed", "intended", "intended", "intended", "undone"]
    assert statestore.open_intents(load_file(inv)) == []


def test_a_pinned_account_refuses_other_credentials(sandbox, tmp_path):
    p = tmp_path / "pinned.yaml"
    p.write_text("name: pinned\nregion: ap-northeast-2\naccount_id: '999999999999'\nlambda_functions: [{name: todo-api, aliases: [LIVE]}]\n")
    report = run(str(p), dry_run=False, approval="yes")
    assert report.outcome == "refused" and "wrong account" in report.findings[-1].summary and "999999999999" in report.findings[-1].summary
