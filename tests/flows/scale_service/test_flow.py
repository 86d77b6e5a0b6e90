"""scale-service against the sandbox: t-developer's ECS service (auto scaling 2..20) and DynamoDB capacity (its rules: test_judge.py)."""

from __future__ import annotations

import contextlib
import threading
from datetime import datetime, timezone

import boto3
import pytest
from botocore.exceptions import ClientError

from flows.scale_service import flow as ss
from flows.scale_service.flow import scale_service
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.inventory import load_system
from opsbook.mutation import statestore
from opsbook.mutation.core import Action, Identity, Plan, Refused, ShellApproval, shell_approval
from opsbook.mutation.session import check_drift
from opsbook.report import RunReport
from sandbox.capacity import apply_scenario, make_provisioned
from tasks import ecs
from tasks.dynamodb import table_capacity
from tasks.ecs import DESIRED_KIND as DESIRED

pytestmark = pytest.mark.usefixtures("prefect_harness")
TD = "t-developer"
CLUSTER, SERVICE = "t-developer-cluster-production", "t-developer-service-production"
SVC = f"{CLUSTER}/{SERVICE}"
REGION = "us-east-1"


def run(system: str, approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = scale_service(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def counts(sandbox) -> tuple[int, int]:
    svc = boto3.client("ecs", region_name=REGION, endpoint_url=sandbox.endpoint).describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
    return svc["desiredCount"], svc["runningCount"]


@contextlib.contextmanager
def ecs_scheduler(sandbox, delay_s: float = 0.5):
    """ECS starting/stopping tasks until running = desired, after a short delay (with the ecs-tasks-pending scenario,
    a new desired count leaves them pending until this does it)."""
    stop = threading.Event()

    def loop():
        while not stop.wait(0.2):
            svc = sandbox.backend("ecs", REGION).services[f"{CLUSTER}:{SERVICE}"]
            if svc.running_count != svc.desired_count:
                stop.wait(delay_s)
                sandbox.set_ecs_running(REGION, CLUSTER, SERVICE, svc.desired_count)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


def test_dry_run_then_scale_to_10_waits_for_running_rerun_plans_nothing_and_undo_restores(seeded, sandbox):
    td = seeded(TD)
    apply_scenario(sandbox, td, "ecs-scalable-target")
    apply_scenario(sandbox, td, "ecs-tasks-pending")
    dry = run(TD, desired=10)
    assert dry.outcome == "planned" and dry.status is Status.OK and dry.records == []
    [action] = dry.plan["actions"]
    assert (action["kind"], action["resource"], action["current"], action["target"]) == (DESIRED, SVC, "2", "10")
    assert "within [2, 20] from the auto scaling target" in action["evidence"] and action["iam_action"] == "ecs:UpdateService"
    assert counts(sandbox) == (2, 2)
    with ecs_scheduler(sandbox):
        report = run(TD, desired=10, dry_run=False, approval="yes", approver="devops-lead", settle_timeout_s=20)
        assert report.outcome == "done" and report.status is Status.OK, report.findings
        [rec] = report.records
        assert (rec["status"], rec["before"], rec["after"], rec["approver"]) == ("verified", "2", "10", "devops-lead")
        assert "desired 10, running 10" in rec["detail"] and counts(sandbox) == (10, 10)
        again = run(TD, desired=10, dry_run=False, approval="yes")
        assert again.outcome == "nothing-to-do" and "already 10" in again.plan["unchanged"][0]
        undo = run(TD, undo_run=report.flow_run_id, dry_run=False, approval="yes", settle_timeout_s=20)
        assert undo.outcome == "done" and [(a["current"], a["target"]) for a in undo.plan["actions"]] == [("10", "2")]
        assert counts(sandbox) == (2, 2)


def test_plus_two_is_relative_to_the_plan_and_notes_earlier_scaling(seeded, sandbox):
    td = seeded(TD)
    apply_scenario(sandbox, td, "ecs-scalable-target")
    apply_scenario(sandbox, td, "ecs-tasks-pending")
    with ecs_scheduler(sandbox, delay_s=0.1):
        first = run(TD, delta=2, dry_run=False, approval="yes", settle_timeout_s=20)
        assert first.outcome == "done" and counts(sandbox) == (4, 4)
        second = run(TD, delta=2)
        [action] = second.plan["actions"]
        assert (action["current"], action["target"]) == ("4", "6") and "delta=+2 on the current 4" in action["evidence"]
        assert any("already scaled 2 -> 4" in n and "use desired=N" in n for n in second.plan["notes"])


def test_out_of_bounds_is_refused_naming_the_bound(seeded, sandbox):
    seeded(TD)
    report = run(TD, desired=25, dry_run=False, approval="yes")  # no scalable target: the inventory's max_tasks
    assert report.outcome == "refused" and report.status is Status.UNKNOWN
    assert "above the maximum 20 set by the inventory of t-developer" in report.findings[-1].summary
    assert counts(sandbox) == (2, 2)


def test_unreadable_auto_scaling_falls_back_to_the_inventory_bounds(seeded, sandbox, monkeypatch):
    td = seeded(TD)
    apply_scenario(sandbox, td, "ecs-scalable-target", lo=2, hi=5)

    def denied(*a, **k):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no DescribeScalableTargets"}}, "DescribeScalableTargets")

    monkeypatch.setattr(ecs, "describe_targets", denied)
    report = run(TD, desired=8)
    assert report.outcome == "planned" and report.plan["actions"][0]["target"] == "8"
    assert "from the inventory of t-developer" in report.plan["actions"][0]["evidence"]
    gap = next(f for f in report.findings if f.check == "ecs-autoscaling-target")
    assert gap.status is Status.UNKNOWN and "access denied" in gap.summary and report.status is Status.UNKNOWN


def test_not_settling_is_a_warning_with_the_counts(seeded, sandbox):
    td = seeded(TD)
    apply_scenario(sandbox, td, "ecs-tasks-pending")
    report = run(TD, desired=4, dry_run=False, approval="yes", settle_timeout_s=2)
    assert report.outcome == "done-with-warnings" and report.status is Status.WARN
    [rec] = report.records
    assert rec["status"] == "applied" and "not there after 2 s: desired 4, running 2, pending 2" in rec["detail"]
    assert counts(sandbox) == (4, 2)


def test_hold_raises_the_auto_scaling_min_and_undo_puts_it_back(seeded, sandbox):
    td = seeded(TD)
    apply_scenario(sandbox, td, "ecs-scalable-target")
    apply_scenario(sandbox, td, "ecs-tasks-pending")
    with ecs_scheduler(sandbox, delay_s=0.1):
        report = run(TD, desired=10, hold=True, dry_run=False, approval="yes", settle_timeout_s=20)
        assert report.outcome == "done", report.findings
        assert [(a["kind"], a["target"]) for a in report.plan["actions"]] == [(DESIRED, "10"), ("autoscaling-bounds", "min=10 max=20")]
        undo = run(TD, undo_run=report.flow_run_id, dry_run=False, approval="yes", settle_timeout_s=20)
        assert undo.outcome == "done" and counts(sandbox) == (2, 2)
    aas = boto3.client("application-autoscaling", region_name=REGION, endpoint_url=sandbox.endpoint)
    [t] = aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    assert (t["MinCapacity"], t["MaxCapacity"]) == (2, 20)


def test_dynamodb_capacity_provisioned_undo_within_the_decrease_limit_and_auto_scaled(seeded, sandbox):
    td, todo = seeded(TD, "todo-app")
    table = "t-developer-metadata-production"
    make_provisioned(sandbox, td, table, 5, 5)
    report = run(TD, table=table, read_units=50, dry_run=False, approval="yes", settle_timeout_s=10)
    assert report.outcome == "done" and report.records[0]["status"] == "verified"
    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=sandbox.endpoint)
    assert table_capacity(ddb.describe_table(TableName=table)).value == "PROVISIONED r=50 w=5"
    # the table has used up its decreases today: the undo (a decrease) is not planned, and says when
    t = sandbox.backend("dynamodb", REGION).tables[table]
    t._opsbook_decreases, t._opsbook_last_decrease = 27, datetime.now(timezone.utc)
    blocked = run(TD, undo_run=report.flow_run_id)
    assert blocked.plan["actions"] == [] and "possible at" in blocked.plan["cannot"][0]
    apply_scenario(sandbox, todo, "auto-scaled-table")
    bounds = run("todo-app", table="todos", write_units=40)
    [action] = bounds.plan["actions"]
    assert (action["kind"], action["current"], action["target"]) == ("autoscaling-bounds", "min=5 max=10", "min=40 max=40")


def test_drift_between_plan_and_action_refuses(seeded, sandbox):
    inv = seeded(TD)
    me = Identity(account="123456789012", arn="arn:aws:sts::123456789012:user/moto", region=REGION)
    plan = Plan(runbook=ss.RUNBOOK, system=inv.name, identity=me,
                actions=[Action(kind=DESIRED, resource=SVC, current="5", target="7", iam_action="ecs:UpdateService")])
    with pytest.raises(Refused, match="was 5 when planned and is now 2"):
        check_drift.fn(inv, plan, ss.APPLIERS)  # the step reads what the plan read


def test_calls_made_are_covered_by_the_printed_policy(seeded, sandbox):
    td = seeded(TD)
    apply_scenario(sandbox, td, "ecs-scalable-target")
    apply_scenario(sandbox, td, "ecs-tasks-pending")
    make_provisioned(sandbox, td, "t-developer-metadata-production", 5, 5)
    with ecs_scheduler(sandbox, delay_s=0.1):
        report = run(TD, desired=6, hold=True, table="t-developer-metadata-production", write_units=9, dry_run=False, approval="yes",
                     settle_timeout_s=20)
    assert report.outcome == "done", report.findings
    policy = set(policy_for(ss.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert {"ecs:UpdateService", "dynamodb:UpdateTable", "application-autoscaling:RegisterScalableTarget"} <= used
    assert used <= policy, used - policy
    assert report.undeclared_iam_actions == []
    assert len(statestore.read_records(load_system(TD))) == 3
