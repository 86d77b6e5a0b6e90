"""bill-shock-breaker against the sandbox: spikes trip, normal traffic does not. Budgets, spikes, state
transitions and findings without the sandbox: test_judge.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest

from flows.bill_shock_breaker import flow as bsb
from flows.bill_shock_breaker.breaker_client import BreakerClient
from flows.bill_shock_breaker.flow import bill_shock_breaker
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.mutation.core import ShellApproval, shell_approval
from opsbook.report import RunReport
from sandbox import leh_spend
from tasks import dynamodb

pytestmark = pytest.mark.usefixtures("prefect_harness")
REGION = "ap-northeast-2"


def run(approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = bill_shock_breaker(system="leh", return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


@pytest.fixture
def leh(seeded, sandbox):
    inv = seeded("leh")
    leh_spend.event_source_mapping(sandbox, inv)
    leh_spend.normal_traffic(sandbox, inv)
    return inv


def states(inv, *cases):
    return {c: v.get("state") for c, v in dynamodb.read_breakers(inv, list(cases)).items()}


def test_normal_traffic_trips_nothing(leh, sandbox):
    report = run(dry_run=False, approver="schedule")
    assert report.outcome == "nothing-to-do" and report.status is Status.OK, [f for f in report.findings if f.status is not Status.OK]
    spend = [f for f in report.findings if f.check == "token-spend"][0]
    assert spend.value == 30 * 6500 * 4 - 30 * 500 * 3  # the last hour: one recent window and three normal ones
    assert report.records == []


def test_a_spiking_case_trips_automatically_and_twice_is_harmless(leh, sandbox):
    leh_spend.publish(sandbox, leh, "CaseId", {"case-spike": (6000.0, 90000.0)})
    dry = run()
    assert [(a["resource"], a["target"]) for a in dry.plan["actions"]] == [("case-spike", "OPEN")]
    assert "15.0x its 24 h baseline" in dry.plan["actions"][0]["evidence"] and states(leh, "case-spike") == {}
    report = run(dry_run=False, approver="schedule")
    assert report.outcome == "done-with-warnings" and report.approval["via"] == "policy"  # a trip is WARN-worthy
    assert states(leh, "case-spike", "case-0001") == {"case-spike": "OPEN"}
    assert report.records[0]["resource"] == "case-spike" and report.records[0]["status"] == "applied"
    again = run(dry_run=False, approver="schedule")
    assert again.outcome == "nothing-to-do" and states(leh, "case-spike") == {"case-spike": "OPEN"}
    # every call made is covered by the policy `opsbook policy bill-shock-breaker` prints
    policy = set(policy_for(bsb.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert "dynamodb:UpdateItem" in used and used <= policy, used - policy
    assert report.undeclared_iam_actions == []


def test_global_spike_pauses_the_service_only_after_approval(leh, sandbox):
    leh_spend.publish(sandbox, leh, "CaseId", {f"hot-{i}": (60000.0, 60000.0) for i in range(30)})
    report = run(dry_run=False, approver="schedule")
    assert leh_spend.mapping_state(sandbox, leh) == "Enabled"  # the evaluation never pauses without approval
    assert any(f.check == "token-spend" and f.status is Status.CRIT for f in report.findings)
    needs = [f for f in report.findings if f.check == "needs-approval"][0]
    assert "pause-service" in needs.summary
    handoff = [f for f in report.findings if f.check == "escalation"][0]
    assert handoff.status is Status.WARN and "mode=escalate" in handoff.summary  # no deployment served in the test
    esc = run(mode="escalate", dry_run=False, approval="yes", approver="cfo")
    assert esc.outcome in ("done", "done-with-warnings") and leh_spend.mapping_state(sandbox, leh) in ("Disabled", "Disabling")
    assert states(leh, "__service__") == {"__service__": "OPEN"}  # what daily-health's worker-trigger check reads: a pause, explained
    after = run(dry_run=False)
    paused = [f for f in after.findings if f.check == "service-paused"][0]
    assert "messages waiting" in paused.summary and paused.status in (Status.WARN, Status.CRIT)
    resumed = run(mode="reset", resume_service=True, dry_run=False, approval="yes")
    assert resumed.outcome == "done" and leh_spend.mapping_state(sandbox, leh) in ("Enabled", "Enabling")
    assert states(leh, "__service__") == {"__service__": "CLOSED"}


def test_mass_upload_plans_a_block_behind_approval(leh, sandbox):
    cognito = boto3.client("cognito-idp", region_name=REGION, endpoint_url=sandbox.endpoint)
    pool = [p["Id"] for p in cognito.list_user_pools(MaxResults=60)["UserPools"] if p["Name"] == "leh-users"][0]
    cognito.admin_create_user(UserPoolId=pool, Username="user-003")
    leh_spend.uploads(sandbox, leh, "user-003", 110)
    report = run(dry_run=False)
    assert [f.resource for f in report.findings if f.check == "mass-upload"] == ["user-003"]
    assert cognito.admin_get_user(UserPoolId=pool, Username="user-003")["Enabled"] is True
    esc = run(mode="escalate", dry_run=False, approval="yes", approver="security")
    assert [(a["kind"], a["resource"]) for a in esc.plan["actions"]] == [("block-user", "user-003")]
    assert cognito.admin_get_user(UserPoolId=pool, Username="user-003")["Enabled"] is False


def test_half_open_after_cooldown_then_closed_and_reset_by_hand(leh, sandbox):
    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=sandbox.endpoint)
    old = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat(timespec="seconds")
    for case in ("case-0002", "stuck"):
        ddb.put_item(TableName="leh-circuit-breakers", Item={"case_id": {"S": case}, "state": {"S": "OPEN"}, "changed_at": {"S": old}})
    run(dry_run=False)
    assert states(leh, "case-0002") == {"case-0002": "HALF_OPEN"}
    run(dry_run=False)
    assert states(leh, "case-0002") == {"case-0002": "CLOSED"}
    ddb.put_item(TableName="leh-circuit-breakers", Item={"case_id": {"S": "stuck"}, "state": {"S": "OPEN"},
                                                         "changed_at": {"S": datetime.now(timezone.utc).isoformat(timespec="seconds")}})
    report = run(mode="reset", case_id="stuck", dry_run=False, approval="yes", approver="lead")
    assert report.outcome == "done" and states(leh, "stuck") == {"stuck": "CLOSED"}


def test_worker_helper_honours_open_and_allows_when_the_table_is_unreadable(leh, sandbox):
    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=sandbox.endpoint)
    cw = boto3.client("cloudwatch", region_name=REGION, endpoint_url=sandbox.endpoint)
    ddb.put_item(TableName="leh-circuit-breakers", Item={"case_id": {"S": "c-open"}, "state": {"S": "OPEN"}})
    client = BreakerClient("leh-circuit-breakers", dynamodb=ddb, cloudwatch=cw)
    assert client.allowed("c-open") is False and client.allowed("c-other") is True
    broken = BreakerClient("no-such-table", dynamodb=ddb, cloudwatch=cw)
    assert broken.allowed("c-open") is True
    assert BreakerClient("no-such-table", dynamodb=ddb, cloudwatch=cw, on_error="deny").allowed("c-open") is False
    names = [m["MetricName"] for m in cw.list_metrics(Namespace="LEH/AI")["Metrics"]]
    assert "BreakerReadErrors" in names


def test_a_pause_is_reached_while_the_mapping_is_disabling_and_a_resume_while_enabling(monkeypatch):
    """A run killed right after UpdateEventSourceMapping: the re-run finds the mapping on its way and closes the step applied."""
    step = bsb.appliers({})["pause-service"]
    for state, target, reached in [("Disabling", "Disabled", True), ("Disabled", "Disabled", True), ("Enabled", "Disabled", False),
                                   ("Enabling", "Enabled", True), ("Disabling", "Enabled", False)]:
        monkeypatch.setattr(bsb, "_mapping", lambda system, s=state: {"State": s, "UUID": "m"})
        assert step.reached(None, "leh-ai-worker<-leh-ai-jobs", "x", target) is reached, (state, target)


def test_a_missing_source_queue_is_a_finding_and_the_case_breaker_still_trips(leh, sandbox):
    """Issue 19 item 5: the consumer read (source queue, mapping) is not needed to trip a case; its failure is said."""
    from sandbox.faults import apply_fault

    apply_fault(sandbox, leh, "leh-case-spike", case="case-spike")
    healthy = run(dry_run=False, approver="schedule")  # the twin: queue present, no such finding
    assert states(leh, "case-spike") == {"case-spike": "OPEN"}
    assert not [f for f in healthy.findings if f.check == "worker-consumer"]
    apply_fault(sandbox, leh, "leh-source-queue-missing")
    apply_fault(sandbox, leh, "leh-case-spike", case="case-spike-2")
    report = run(dry_run=False, approver="schedule")
    assert report.outcome == "done-with-warnings", report.findings
    assert states(leh, "case-spike-2") == {"case-spike-2": "OPEN"}
    assert [(r["resource"], r["status"]) for r in report.records] == [("case-spike-2", "applied")]
    unread = [f for f in report.findings if f.check == "worker-consumer"]
    assert [(f.status, f.resource) for f in unread] == [(Status.UNKNOWN, "leh-ai-jobs")]
    assert "the source queue leh-ai-jobs does not exist" in unread[0].summary and "read-consumer" in unread[0].summary
    assert not any("PENDING" in f.summary for f in report.findings)
    closed = run(mode="reset", case_id="case-spike-2", dry_run=False, approval="yes")  # closing a case needs no consumer
    assert closed.outcome == "done-with-warnings" and states(leh, "case-spike-2") == {"case-spike-2": "CLOSED"}
    assert [f.check for f in closed.findings if f.status is Status.UNKNOWN] == ["worker-consumer"]
    # resuming the worker needs the consumer: the run stops, naming the step
    resumed = run(mode="reset", resume_service=True, dry_run=False, approval="yes")
    assert resumed.outcome == "failed" and "step 'read-consumer' failed: the source queue leh-ai-jobs does not exist" in \
        resumed.findings[-1].summary
