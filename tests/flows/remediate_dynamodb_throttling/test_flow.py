"""remediate-dynamodb-throttling against the sandbox: seed systems with throttled (and healthy) tables (its rules: test_judge.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import boto3
import pytest
from botocore.exceptions import ClientError

from flows.remediate_dynamodb_throttling import flow as rt
from flows.remediate_dynamodb_throttling.flow import remediate_dynamodb_throttling
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.mutation.core import ShellApproval, shell_approval
from opsbook.report import RunReport
from sandbox.capacity import apply_scenario
from tasks import cloudwatch
from tasks.dynamodb import table_capacity

pytestmark = pytest.mark.usefixtures("prefect_harness")
HR, EMP = "hr-resource-optimization", "Employees-Team2"
EMP_BEFORE = "PROVISIONED r=5 w=5; byEmail r=5 w=5"


def run(system: str, approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = remediate_dynamodb_throttling(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def table_value(sandbox, region: str, table: str) -> str:
    desc = boto3.client("dynamodb", region_name=region, endpoint_url=sandbox.endpoint).describe_table(TableName=table)
    return table_capacity(desc).value


def finding(report: RunReport, check: str, resource: str):
    return next(f for f in report.findings if f.check == check and f.resource == resource)


def test_hr_dry_run_plans_on_demand_for_the_throttled_table_only(seeded, sandbox):
    hr = seeded(HR)
    made = apply_scenario(sandbox, hr, "throttled-provisioned-table")
    apply_scenario(sandbox, hr, "on-demand-throttled-table", table="Projects-Team2")
    report = run(HR)
    assert report.outcome == "planned" and report.dry_run and report.records == []
    [action] = report.plan["actions"]
    assert (action["resource"], action["current"], action["target"]) == (EMP, EMP_BEFORE, "PAY_PER_REQUEST")
    assert action["iam_action"] == "dynamodb:UpdateTable" and "1 GSI(s) switch together" in action["evidence"]
    emp = finding(report, "dynamodb-throttling", EMP)
    assert emp.status is Status.WARN and emp.value == made["write_throttles"] + made["gsi_read_throttles"]
    assert "write: 40 throttle events, peak 6.0 units/s consumed vs 5 provisioned" in emp.summary and "GSI byEmail read: 25" in emp.summary
    projects = finding(report, "dynamodb-throttling", "Projects-Team2")
    assert projects.status is Status.WARN and "hot partition" in projects.summary and "Nothing to change" in projects.summary
    quiet = [f for f in report.findings if f.check == "dynamodb-throttling" and f.resource not in (EMP, "Projects-Team2")]
    assert len(quiet) == 4 and all(f.status is Status.OK for f in quiet)
    assert any("Projects-Team2: on-demand and throttled" in u for u in report.plan["unchanged"])
    assert table_value(sandbox, "us-east-2", EMP) == EMP_BEFORE  # dry run: nothing changed


def test_execute_switches_verifies_rerun_is_idempotent_and_undo_restores(seeded, sandbox):
    hr = seeded(HR)
    apply_scenario(sandbox, hr, "throttled-provisioned-table")
    report = run(HR, dry_run=False, approval="yes", approver="oncall-kim", settle_timeout_s=10)
    assert report.outcome == "done" and report.status is Status.OK, report.findings
    assert table_value(sandbox, "us-east-2", EMP) == "PAY_PER_REQUEST"
    [rec] = report.records
    assert (rec["status"], rec["before"], rec["after"], rec["approver"]) == ("verified", EMP_BEFORE, "PAY_PER_REQUEST", "oncall-kim")
    assert "ACTIVE" in rec["detail"]
    after = finding(report, "throttling-after-change", EMP)
    assert after.status is Status.OK and "since the change" in after.summary
    again = run(HR, dry_run=False, approval="yes")
    assert again.outcome == "nothing-to-do" and again.records == []
    emp = finding(again, "dynamodb-throttling", EMP)  # the throttles before the switch are history now
    assert emp.status is Status.OK and "65 earlier event(s) before the last switch to on-demand" in emp.summary

    undo = run(HR, dry_run=False, approval="yes", undo_run=report.flow_run_id, settle_timeout_s=10)
    [action] = undo.plan["actions"]
    assert (action["current"], action["target"]) == ("PAY_PER_REQUEST", EMP_BEFORE) and "allowed any time" in action["evidence"]
    assert undo.outcome == "done" and undo.records[0]["status"] == "verified"
    assert table_value(sandbox, "us-east-2", EMP) == EMP_BEFORE
    twice = run(HR, undo_run=report.flow_run_id)
    assert twice.plan["actions"] == [] and "already back at" in twice.plan["unchanged"][0]


def test_provisioned_preference_sizes_table_and_gsi_from_peak_and_undo_respects_decrease_limits(seeded, sandbox):
    hr = seeded(HR)
    made = apply_scenario(sandbox, hr, "throttled-provisioned-table")
    report = run(HR, prefer="provisioned", dry_run=False, approval="yes", settle_timeout_s=10)
    [action] = report.plan["actions"]
    target = f"PROVISIONED r=5 w={made['table_write_target']}; byEmail r={made['gsi_read_target']} w=5"
    assert (action["current"], action["target"]) == (EMP_BEFORE, target)
    assert any("6.0 units/s consumed x headroom 1.5 = 9" in n for n in report.plan["notes"])
    assert report.outcome == "done" and table_value(sandbox, "us-east-2", EMP) == target
    # least privilege: every call made is in the policy `opsbook policy` prints
    policy = set(policy_for(rt.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert {"dynamodb:UpdateTable", "cloudwatch:GetMetricData", "application-autoscaling:DescribeScalableTargets"} <= used
    assert used <= policy, used - policy
    assert report.undeclared_iam_actions == [] and "ecs:UpdateService" not in policy
    assert run(HR, prefer="provisioned").outcome == "nothing-to-do"  # throttles before the increase are history
    # the table has used up its decreases for this hour: undo (a decrease) is not planned, and says when
    t = sandbox.backend("dynamodb", "us-east-2").tables[EMP]
    t._opsbook_decreases, t._opsbook_last_decrease = 5, datetime.now(timezone.utc)
    blocked = run(HR, undo_run=report.flow_run_id)
    assert blocked.plan["actions"] == [] and "possible at" in blocked.plan["cannot"][0] and "4 a UTC day" in blocked.plan["cannot"][0]
    t._opsbook_decreases = 0
    undo = run(HR, dry_run=False, approval="yes", undo_run=report.flow_run_id, settle_timeout_s=10)
    assert undo.outcome == "done" and table_value(sandbox, "us-east-2", EMP) == EMP_BEFORE


def test_todo_auto_scaled_table_gets_bounds_not_capacity(seeded, sandbox):
    todo = seeded("todo-app")
    made = apply_scenario(sandbox, todo, "auto-scaled-table")
    report = run("todo-app", prefer="provisioned", dry_run=False, approval="yes", settle_timeout_s=10)
    [action] = report.plan["actions"]
    assert (action["kind"], action["resource"], action["current"], action["target"]) == (
        "autoscaling-bounds", made["write_target"], "min=5 max=10", "min=5 max=15")
    assert action["iam_action"] == "application-autoscaling:RegisterScalableTarget" and "auto scaling max" in action["evidence"]
    assert report.outcome == "done" and report.records[0]["status"] == "verified"
    aas = boto3.client("application-autoscaling", region_name="ap-northeast-2", endpoint_url=sandbox.endpoint)
    tgt = {t["ScalableDimension"]: t for t in aas.describe_scalable_targets(ServiceNamespace="dynamodb")["ScalableTargets"]}
    assert tgt["dynamodb:table:WriteCapacityUnits"]["MaxCapacity"] == 15 and tgt["dynamodb:table:ReadCapacityUnits"]["MaxCapacity"] == 10
    assert table_value(sandbox, "ap-northeast-2", "todos") == "PROVISIONED r=10 w=10"  # capacity left to auto scaling
    assert run("todo-app", prefer="provisioned").outcome == "nothing-to-do"
    undo = run("todo-app", dry_run=False, approval="yes", undo_run=report.flow_run_id, settle_timeout_s=10)
    assert undo.outcome == "done"
    tgt = {t["ScalableDimension"]: t for t in aas.describe_scalable_targets(ServiceNamespace="dynamodb")["ScalableTargets"]}
    assert tgt["dynamodb:table:WriteCapacityUnits"]["MaxCapacity"] == 10
    # the inventory's policy (on-demand) switches it instead, and says the targets stay
    default = run("todo-app")
    [switch] = default.plan["actions"]
    assert switch["target"] == "PAY_PER_REQUEST" and "auto scaling targets stay registered" in switch["evidence"]


def test_leh_tables_are_left_alone(seeded, sandbox):
    seeded("leh")
    before = {t: table_value(sandbox, "ap-northeast-2", t) for t in ("leh-evidence", "leh-circuit-breakers")}
    report = run("leh", dry_run=False, approval="yes")
    assert report.outcome == "nothing-to-do" and report.status is Status.OK and report.records == []
    assert [f.status for f in report.findings if f.check == "dynamodb-throttling"] == [Status.OK] * 2
    assert {t: table_value(sandbox, "ap-northeast-2", t) for t in before} == before


def test_metrics_that_cannot_be_read_are_unknown_and_nothing_is_planned(seeded, sandbox, monkeypatch):
    hr = seeded(HR)
    apply_scenario(sandbox, hr, "throttled-provisioned-table")

    def denied(*a, **k):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no cloudwatch:GetMetricData"}}, "GetMetricData")

    monkeypatch.setattr(cloudwatch, "get_metric_data", denied)
    report = run(HR, dry_run=False, approval="yes")
    assert report.plan["actions"] == [] and report.outcome == "nothing-to-do" and report.status is Status.UNKNOWN
    emp = finding(report, "dynamodb-throttling", EMP)
    assert emp.status is Status.UNKNOWN and "access denied" in emp.summary and "nothing planned" in emp.summary
    assert table_value(sandbox, "us-east-2", EMP) == EMP_BEFORE


def test_missing_table_and_foreign_table(seeded, sandbox):
    seeded("t-developer")
    boto3.client("dynamodb", region_name="us-east-1", endpoint_url=sandbox.endpoint).delete_table(TableName="t-developer-metadata-production")
    report = run("t-developer")
    gone = finding(report, "dynamodb-throttling", "t-developer-metadata-production")
    assert gone.status is Status.CRIT and "does not exist" in gone.summary and report.plan["actions"] == []
    refused = run("t-developer", tables="not-mine")
    assert refused.outcome == "refused" and "not tables of t-developer" in refused.findings[-1].summary
