"""backup-verify's judge, fed data and limits directly (no sandbox, no Prefect): PITR lag, backup age, versioning and
replication, snapshots and RDS at their limits, each gap with its healthy twin, unreadable = UNKNOWN, and the plan."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flows.backup_verify import judge as j
from opsbook.findings import Status
from opsbook.inventory import System
from opsbook.mutation.core import Identity, Record
from opsbook.snapshots import iso_utc, judge_rds
from tasks.dynamodb import TableBackups
from tasks.opensearch import DomainSnapshots, SnapshotInfo
from tasks.rds import RdsSnapshots
from tasks.s3 import BucketProtection

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
IDENT = Identity(account="123456789012", arn="arn:aws:sts::123456789012:user/t", region="ap-northeast-2")
SYS = System(name="sys", region="ap-northeast-2")


def table(**kw) -> TableBackups:
    base = dict(table="t", required=True, max_age_hours=26, pitr="ENABLED", latest_restorable=NOW - timedelta(minutes=5),
                latest_backup=NOW - timedelta(hours=2))
    return TableBackups(**{**base, **kw})


def bucket(**kw) -> BucketProtection:
    return BucketProtection(**{**dict(bucket="b", versioning_required=True, replication_required=False, versioning="Enabled"), **kw})


def test_pitr_lag_at_the_limit_and_disabled():
    assert j.judge_pitr(table(latest_restorable=NOW - timedelta(hours=1)), NOW).status is Status.OK
    f = j.judge_pitr(table(latest_restorable=NOW - timedelta(hours=1, seconds=1)), NOW)
    assert f.status is Status.CRIT and "latest restorable time is 1.0 h old" in f.summary
    assert j.judge_pitr(table(required=False, latest_restorable=NOW - timedelta(hours=3)), NOW).status is Status.WARN
    assert "gives no latest restorable time" in j.judge_pitr(table(latest_restorable=None), NOW).summary
    f = j.judge_pitr(table(pitr="DISABLED"), NOW)
    assert f.status is Status.CRIT and "backup-verify enables it" in f.summary
    f = j.judge_pitr(table(pitr="DISABLED", required=False), NOW)
    assert f.status is Status.WARN and "update-continuous-backups" in f.summary
    assert j.judge_pitr(table(pitr="ENABLING"), NOW).status is Status.UNKNOWN
    assert j.judge_pitr(table(error="AccessDenied"), NOW).status is Status.UNKNOWN


def test_on_demand_backup_age_at_the_limit():
    assert j.judge_on_demand(table(latest_backup=NOW - timedelta(hours=26)), NOW).status is Status.OK
    f = j.judge_on_demand(table(latest_backup=NOW - timedelta(hours=26, minutes=6)), NOW)
    assert f.status is Status.CRIT and "latest on-demand backup 26.1 h old (limit 26 h)" in f.summary
    f = j.judge_on_demand(table(latest_backup=None, required=False), NOW)
    assert f.status is Status.WARN and "no on-demand backup in the last 35 days" in f.summary and "create-backup" in f.summary
    assert j.judge_on_demand(table(error="denied"), NOW).status is Status.UNKNOWN


def test_missing_table_and_bucket():
    [f] = j.table_findings(table(missing=True, error="ResourceNotFoundException"), NOW)
    assert (f.check, f.status, f.summary) == ("dynamodb-table", Status.CRIT, "table named in the inventory does not exist")
    [f] = j.bucket_findings(bucket(missing=True, error="NoSuchBucket", named=False))
    assert (f.check, f.status, f.summary) == ("s3-bucket", Status.CRIT, "bucket not found (found by its tags)")
    assert [f.check for f in j.table_findings(table(), NOW)] == ["dynamodb-pitr", "dynamodb-on-demand-backup"]


def test_versioning_required_or_not():
    assert j.judge_versioning(bucket()).status is Status.OK
    f = j.judge_versioning(bucket(versioning="Suspended"))
    assert f.status is Status.CRIT and "versioning Suspended but the inventory says versioning_required" in f.summary
    f = j.judge_versioning(bucket(versioning="never-enabled", versioning_required=False, replication_required=True, replication_rules=[]))
    assert f.status is Status.CRIT and "never enabled" in f.summary and "replication needs versioning" in f.summary
    f = j.judge_versioning(bucket(versioning="Suspended", versioning_required=False))
    assert f.status is Status.OK and "not required by the inventory" in f.summary  # the facts, not a weekly WARN
    assert j.judge_versioning(bucket(error="denied")).status is Status.UNKNOWN


def test_replication():
    rule = {"Status": "Enabled", "Destination": {"Bucket": "arn:aws:s3:::b-replica"}}
    f = j.judge_replication(bucket(replication_required=True, replication_rules=[rule]))
    assert f.status is Status.OK and f.summary == "replicating to b-replica (1 enabled rule(s))"
    f = j.judge_replication(bucket(replication_required=True, replication_rules=[]))
    assert f.status is Status.CRIT and "ReplicationConfigurationNotFoundError" in f.summary
    f = j.judge_replication(bucket(replication_required=True, replication_rules=[{**rule, "Status": "Disabled"}]))
    assert f.status is Status.CRIT and "none of its 1 rule(s) is Enabled" in f.summary
    assert j.judge_replication(bucket(replication_required=True, replication_error="denied")).status is Status.UNKNOWN
    assert [f.check for f in j.bucket_findings(bucket(replication_required=True, replication_rules=[rule]))] == ["s3-versioning", "s3-replication"]
    assert [f.check for f in j.bucket_findings(bucket())] == ["s3-versioning"]


def snaps(*items) -> DomainSnapshots:
    return DomainSnapshots(domain="d", repository="backup_repo", max_age_hours=26, repository_exists=True,
                           snapshots=[SnapshotInfo(name=n, state=s, at=NOW - timedelta(hours=h)) for n, s, h in items])


def test_snapshot_age_at_the_limit():
    assert j.judge_snapshots(snaps(("s1", "SUCCESS", 26)), NOW).status is Status.OK
    f = j.judge_snapshots(snaps(("s1", "SUCCESS", 48)), NOW)
    assert f.status is Status.CRIT and "s1 in backup_repo is 48.0 h old (limit 26 h)" in f.summary
    f = j.judge_snapshots(snaps(("bad", "FAILED", 1), ("s1", "SUCCESS", 2)), NOW)
    assert f.status is Status.WARN and "the newest attempt bad is FAILED" in f.summary
    f = j.judge_snapshots(snaps(), NOW)
    assert f.status is Status.CRIT and "no successful snapshot in backup_repo (no snapshot at all)" in f.summary
    assert "the newest bad FAILED" in j.judge_snapshots(snaps(("bad", "FAILED", 1)), NOW).summary
    f = j.judge_snapshots(snaps().model_copy(update={"repository_exists": False}), NOW)
    assert f.status is Status.CRIT and "backup_repo is not registered" in f.summary
    assert j.judge_snapshots(snaps().model_copy(update={"error": "cluster endpoint unreachable"}), NOW).status is Status.UNKNOWN


def test_rds_snapshot_age_at_the_limit():
    rds = RdsSnapshots(instance="db", max_age_hours=26, retention_days=7, latest_id="rds:db-1", latest=NOW - timedelta(hours=26), count=3)
    assert judge_rds(rds, NOW).status is Status.OK
    f = judge_rds(rds.model_copy(update={"latest": NOW - timedelta(hours=48)}), NOW)
    assert f.status is Status.CRIT and "is 48.0 h old (limit 26 h)" in f.summary and "did not run" in f.summary
    f = judge_rds(rds.model_copy(update={"latest": None, "latest_id": None, "retention_days": 0}), NOW)
    assert f.status is Status.CRIT and "no automated snapshot" in f.summary and "BackupRetentionPeriod 0" in f.summary
    assert "DBInstanceNotFound" in judge_rds(RdsSnapshots(instance="db", max_age_hours=26, missing=True), NOW).summary
    assert judge_rds(RdsSnapshots(instance="db", max_age_hours=26, error="denied"), NOW).status is Status.UNKNOWN


def test_judge_all_and_a_failed_read_is_unknown():
    states = {"dynamodb": [table()], "s3": RuntimeError("throttled"), "opensearch": [], "rds": []}
    found = {(f.check, f.resource): f.status for f in j.judge(states, NOW)}
    assert found == {("dynamodb-pitr", "t"): Status.OK, ("dynamodb-on-demand-backup", "t"): Status.OK, ("s3-backups", "(whole check)"): Status.UNKNOWN}
    assert j.judge({"dynamodb": [], "s3": [], "opensearch": [], "rds": []}, NOW) == []
    assert j.nothing_checked(SYS).status is Status.WARN and "nothing was verified" in j.nothing_checked(SYS).summary


def test_plan_fixes_only_what_the_inventory_requires():
    tables = [table(table="off", pitr="DISABLED", latest_backup=None), table(table="fine"),
              table(table="optional", required=False, pitr="DISABLED"), table(table="err", error="denied")]
    buckets = [bucket(bucket="susp", versioning="Suspended"), bucket(bucket="ok"), bucket(bucket="free", versioning_required=False, versioning="Suspended"),
               bucket(bucket="repl", versioning_required=False, replication_required=True, versioning="never-enabled")]
    plan = j.decide(SYS, IDENT, tables, buckets, True, NOW)
    assert [(a.kind, a.resource, a.current, a.reversible) for a in plan.actions] == [
        ("dynamodb-pitr", "off", "DISABLED", True), ("dynamodb-backup", "off", "none", True),
        ("s3-versioning", "susp", "Suspended", False), ("s3-versioning", "repl", "never-enabled", False)]
    assert plan.actions[1].target == "opsbook-off-20250601T120000Z" and "no on-demand backup in 35 days" in plan.actions[1].evidence
    assert plan.unchanged == ["fine: PITR ENABLED", "fine: on-demand backup 2.0 h old", "ok: versioning Enabled"]
    assert j.decide(SYS, IDENT, tables, buckets, False, NOW).actions == []


def test_backup_name_and_times():
    assert j.backup_name("t", NOW) == "opsbook-t-20250601T120000Z"
    assert len(j.backup_name("x" * 300, NOW)) == 255
    assert iso_utc(None) == "none" and iso_utc(NOW) == "2025-06-01T12:00:00+00:00"


def test_fix_findings_text_and_which_checks_a_fix_replaces():
    r = Record(runbook="backup-verify", system="sys", resource="t", kind="dynamodb-backup", before="none", after="opsbook-t-1", status="applied")
    assert j.fix_what(r) == "on-demand backup opsbook-t-1" and j.fix_what(r.model_copy(update={"kind": "dynamodb-pitr"})) == "enable PITR"
    assert j.fixed_check("dynamodb-pitr") and j.fixed_check("s3-versioning") and not j.fixed_check("rds-snapshot")
