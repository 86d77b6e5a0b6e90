"""backup-verify against the sandbox: every backup in order is OK, each named gap is its exact
finding, fixes are planned on a dry run, applied with approval, read back, and not planned again."""

from __future__ import annotations

from datetime import datetime, timezone

import boto3
import pytest

from flows.backup_verify import flow as bv
from flows.backup_verify.flow import backup_verify
from flows.backup_verify.judge import RUNBOOK, judge
from opsbook import aws
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.mutation import statestore
from opsbook.mutation.core import Action, Identity, Plan, Refused, ShellApproval, shell_approval
from opsbook.mutation.session import check_drift
from opsbook.report import RunReport
from opsbook.resources import Discovered
from sandbox.backups import apply_gap, good_backups
from tasks.dynamodb import read_table_backups
from tasks.opensearch import read_snapshots
from tasks.rds import read_rds_snapshots
from tasks.s3 import read_bucket_protection

pytestmark = pytest.mark.usefixtures("prefect_harness")

HR, TD, TODO = "hr-resource-optimization", "t-developer", "todo-app"
TD_TABLE, TD_BUCKET, TD_DB = "t-developer-metadata-production", "t-developer-projects-production", "t-developer-prod"
HR_TABLES = ["Employees-Team2", "Projects-Team2", "EmployeeAffinity-Team2", "MessengerLogs-Team2", "CompanyEvents-Team2", "TechTrends-Team2"]
HR_BUCKETS = ["hr-resumes-bucket-team2", "hr-opensearch-snapshots-team2", "hr-reports-bucket-team2", "hr-frontend-bucket-team2"]
HR_DOMAIN = "hr-resource-optimization-team2"


def run(system: str, approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = backup_verify(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def not_ok(report: RunReport) -> list[tuple[str, str, str]]:
    return sorted((f.check, f.resource, f.status.value) for f in report.findings if f.status is not Status.OK)


def finding(report: RunReport, check: str, resource: str):
    hits = [f for f in report.findings if f.check == check and f.resource == resource]
    assert len(hits) == 1, (check, resource, report.findings)
    return hits[0]


def client(sandbox, service: str, region: str):
    return boto3.client(service, region_name=region, endpoint_url=sandbox.endpoint)


def read_and_judge(inv) -> list[tuple[str, str, str, str]]:
    """The collection tasks and judges without a flow run (IAM still checked): (check, resource, status, summary)."""
    d = aws.Deadline(30)
    states = {"dynamodb": read_table_backups.fn(inv, Discovered(), d), "s3": read_bucket_protection.fn(inv, Discovered(), d),
              "opensearch": read_snapshots.fn(inv, d), "rds": read_rds_snapshots.fn(inv, d)}
    return [(f.check, f.resource, f.status.value, f.summary) for f in judge(states, datetime.now(timezone.utc)) if f.status is not Status.OK]


def test_all_good_is_ok_with_a_finding_for_every_component(seeded, sandbox):
    for inv in seeded(TD, HR, TODO):
        good_backups(sandbox, inv)
    expected = {
        TD: {("dynamodb-pitr", TD_TABLE), ("dynamodb-on-demand-backup", TD_TABLE), ("s3-versioning", TD_BUCKET),
             ("s3-replication", TD_BUCKET), ("rds-snapshot", TD_DB)},
        HR: {(c, t) for t in HR_TABLES for c in ("dynamodb-pitr", "dynamodb-on-demand-backup")}
            | {("s3-versioning", b) for b in HR_BUCKETS} | {("opensearch-snapshot", HR_DOMAIN)},
        TODO: {("dynamodb-pitr", "todos"), ("dynamodb-on-demand-backup", "todos"), ("s3-versioning", "todo-app-prod-frontend")},
    }
    reports = {}
    for system, pairs in expected.items():
        report = reports[system] = run(system)
        assert not_ok(report) == [] and report.status is Status.OK and report.outcome == "nothing-to-do", not_ok(report)
        assert {(f.check, f.resource) for f in report.findings} == pairs and len(report.findings) == len(pairs)
        assert report.plan["actions"] == [] and report.undeclared_iam_actions == []
    td, hr = reports[TD], reports[HR]
    assert "replicating to t-developer-projects-production-replica" in finding(td, "s3-replication", TD_BUCKET).summary
    assert finding(td, "rds-snapshot", TD_DB).summary.startswith("latest automated snapshot rds:t-developer-prod-")
    assert "not required by the inventory" in finding(hr, "s3-versioning", "hr-reports-bucket-team2").summary  # OK, with the facts
    assert "in backup_repo is 2.0 h old" in finding(hr, "opensearch-snapshot", HR_DOMAIN).summary


def test_each_gap_is_its_exact_finding(seeded, sandbox):
    td, hr = seeded(TD, HR)
    good_backups(sandbox, td)
    good_backups(sandbox, hr)
    for gap in ("pitr-off", "backup-old", "replication-none", "rds-snapshot-stale"):
        apply_gap(sandbox, td, gap)
    apply_gap(sandbox, hr, "versioning-off")
    apply_gap(sandbox, hr, "snapshot-stale")
    client(sandbox, "dynamodb", hr.region).update_continuous_backups(  # seed 000 backs up all six tables (a table not required: test_judge)
        TableName="EmployeeAffinity-Team2", PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False})

    report = run(TD)
    assert not_ok(report) == [("dynamodb-on-demand-backup", TD_TABLE, "CRIT"), ("dynamodb-pitr", TD_TABLE, "CRIT"),
                              ("rds-snapshot", TD_DB, "CRIT"), ("s3-replication", TD_BUCKET, "CRIT")]
    assert "latest on-demand backup 40.0 h old (limit 26 h)" in finding(report, "dynamodb-on-demand-backup", TD_TABLE).summary
    assert "ReplicationConfigurationNotFoundError" in finding(report, "s3-replication", TD_BUCKET).summary
    assert "48.0 h old (limit 26 h)" in finding(report, "rds-snapshot", TD_DB).summary
    assert [(a["kind"], a["resource"]) for a in report.plan["actions"]] == [("dynamodb-pitr", TD_TABLE), ("dynamodb-backup", TD_TABLE)]

    report = run(HR)
    assert not_ok(report) == [("dynamodb-pitr", "EmployeeAffinity-Team2", "CRIT"), ("opensearch-snapshot", HR_DOMAIN, "CRIT"),
                              ("s3-versioning", "hr-resumes-bucket-team2", "CRIT")]
    assert "is 48.0 h old (limit 26 h)" in finding(report, "opensearch-snapshot", HR_DOMAIN).summary
    assert "versioning Suspended" in finding(report, "s3-versioning", "hr-resumes-bucket-team2").summary
    assert [(a["kind"], a["resource"]) for a in report.plan["actions"]] == [("dynamodb-pitr", "EmployeeAffinity-Team2"), ("s3-versioning", "hr-resumes-bucket-team2")]


@pytest.mark.parametrize("system, gaps, expected", [
    (TD, ["pitr-stale", "backup-none", "rds-missing"], [("dynamodb-on-demand-backup", TD_TABLE, "CRIT", "no on-demand backup in the last 35 days"),
                                                         ("dynamodb-pitr", TD_TABLE, "CRIT", "latest restorable time is 3.0 h old"),
                                                         ("rds-snapshot", TD_DB, "CRIT", "does not exist (DBInstanceNotFound)")]),
    (HR, ["snapshot-failed"], [("opensearch-snapshot", HR_DOMAIN, "WARN", "the newest attempt snapshot_failed is FAILED")]),
    (HR, ["repository-missing"], [("opensearch-snapshot", HR_DOMAIN, "CRIT", "backup_repo is not registered")]),
])
def test_more_gaps(seeded, sandbox, system, gaps, expected):
    """What the collectors read of each gap (the judging's edges are test_judge's)."""
    inv = seeded(system)
    good_backups(sandbox, inv)
    for gap in gaps:
        apply_gap(sandbox, inv, gap)
    bad = sorted(read_and_judge(inv))
    assert [b[:3] for b in bad] == [e[:3] for e in expected], bad
    for b, e in zip(bad, expected):
        assert e[3] in b[3], (b, e)


def test_unreachable_opensearch_is_unknown_with_the_reason(seeded, sandbox):
    hr = seeded(HR)
    good_backups(sandbox, hr)
    sandbox.opensearch.set_unreachable(HR_DOMAIN)
    bad = read_and_judge(hr)
    assert [b[:3] for b in bad] == [("opensearch-snapshot", HR_DOMAIN, "UNKNOWN")] and "endpoint unreachable" in bad[0][3]


def test_dry_run_plans_approval_applies_and_a_second_run_plans_nothing(seeded, sandbox):
    hr = seeded(HR)
    good_backups(sandbox, hr)
    apply_gap(sandbox, hr, "pitr-off", table="Employees-Team2")
    apply_gap(sandbox, hr, "backup-none", table="Employees-Team2")
    apply_gap(sandbox, hr, "versioning-off")
    ddb, s3 = client(sandbox, "dynamodb", hr.region), client(sandbox, "s3", hr.region)

    def pitr():
        return ddb.describe_continuous_backups(TableName="Employees-Team2")["ContinuousBackupsDescription"][
            "PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"]

    def backups():
        return [b["BackupName"] for b in ddb.list_backups(TableName="Employees-Team2")["BackupSummaries"]]

    def versioning():
        return s3.get_bucket_versioning(Bucket="hr-resumes-bucket-team2").get("Status")

    dry = run(HR)
    assert dry.outcome == "planned" and dry.status is Status.CRIT and dry.records == []
    actions = [(a["kind"], a["resource"], a["current"], a["target"][:24], a["iam_action"], a["reversible"]) for a in dry.plan["actions"]]
    assert actions == [
        ("dynamodb-pitr", "Employees-Team2", "DISABLED", "ENABLED", "dynamodb:UpdateContinuousBackups", True),
        ("dynamodb-backup", "Employees-Team2", "none", "opsbook-Employees-Team2-", "dynamodb:CreateBackup", True),
        ("s3-versioning", "hr-resumes-bucket-team2", "Suspended", "Enabled", "s3:PutBucketVersioning", False)]
    assert "can only be Suspended" in dry.plan["actions"][2]["evidence"]
    assert (pitr(), backups(), versioning()) == ("DISABLED", [], "Suspended")  # a dry run changes nothing

    no_fix = run(HR, fix=False)
    assert no_fix.plan["actions"] == [] and any(n.startswith("fix=false: not planned") for n in no_fix.plan["notes"])

    done = run(HR, dry_run=False, approval="yes", approver="kim")
    assert done.outcome == "done" and done.status is Status.OK, not_ok(done)
    assert [(r["resource"], r["kind"], r["status"]) for r in done.records] == [
        ("Employees-Team2", "dynamodb-pitr", "verified"), ("Employees-Team2", "dynamodb-backup", "verified"),
        ("hr-resumes-bucket-team2", "s3-versioning", "verified")]
    name = done.records[1]["after"]
    assert name.startswith("opsbook-Employees-Team2-") and name.endswith("Z")
    assert (pitr(), backups(), versioning()) == ("ENABLED", [name], "Enabled")
    assert finding(done, "dynamodb-pitr", "Employees-Team2").status is Status.OK  # the report shows the state after the fixes
    assert {r["status"] for r in statestore.read_records(hr)} == {"verified"}

    policy = set(policy_for(bv.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in done.api_calls_by_operation} - {None}
    assert {"dynamodb:UpdateContinuousBackups", "dynamodb:CreateBackup", "s3:PutBucketVersioning"} <= used <= policy, used - policy
    assert done.undeclared_iam_actions == []

    again = run(HR, dry_run=False, approval="yes")
    assert again.outcome == "nothing-to-do" and again.plan["actions"] == [] and again.status is Status.OK
    assert backups() == [name]


def test_a_fix_whose_state_changed_since_the_plan_is_refused(seeded, sandbox):
    todo = seeded(TODO)  # the seed enables PITR on todos (backup_required)
    ident = Identity(account="123456789012", arn="arn:aws:sts::123456789012:user/moto", region=todo.region)
    plan = Plan(runbook=RUNBOOK, system=TODO, identity=ident, actions=[
        Action(kind="dynamodb-pitr", resource="todos", current="DISABLED", target="ENABLED", iam_action="dynamodb:UpdateContinuousBackups")])
    with pytest.raises(Refused, match="todos was DISABLED when planned and is now ENABLED"):
        check_drift.fn(todo, plan, bv.APPLIERS)  # the step reads what the plan read


def test_a_named_table_that_does_not_exist_is_crit_once_and_not_read(seeded, sandbox, monkeypatch):
    """The run's one resolution finds it missing: one finding, no PITR or backup finding, no fix planned for it."""
    from opsbook.inventory import load_system

    hr = seeded(HR)
    good_backups(sandbox, hr)
    ghost = hr.dynamodb_tables[0].model_copy(update={"name": "Ghost-Team2"})  # backup_required, like Employees-Team2
    with_ghost = hr.model_copy(update={"dynamodb_tables": [*hr.dynamodb_tables, ghost]})
    monkeypatch.setattr(bv, "load_system", lambda name: with_ghost if name == HR else load_system(name))
    report = run(HR)
    assert not_ok(report) == [("inventory", "Ghost-Team2", "CRIT")]
    assert "named in the inventory but does not exist" in finding(report, "inventory", "Ghost-Team2").summary
    assert report.plan["actions"] == [] and report.undeclared_iam_actions == []
