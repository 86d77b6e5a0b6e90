"""Backups: DynamoDB PITR and on-demand backups, S3 versioning and replication,
OpenSearch snapshots, RDS automated snapshots.

Collection is apart from judgement: each ``read_*`` task gathers one service's
state into models (an error is kept with its reason, never turned into an
empty, passing result); the ``judge_*`` functions are pure and return one
finding each, with what to do; the appliers at the end are the only code that
changes anything (enable PITR, enable versioning, take an on-demand backup),
called by backup-verify through the safe-mutation path.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import ClientError
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import DynamoTable, OpenSearchDomain, S3Bucket, System
from opsbook.mutation.core import Applier
from opsbook.resources import Discovered
from tasks.dynamodb import read_backups, table_names
from tasks.opensearch import endpoint_for, os_client
from tasks.s3 import buckets as all_buckets

PITR_MAX_LAG = timedelta(hours=1)  # LatestRestorableDateTime is normally about 5 minutes behind
BACKUP_LOOKBACK_DAYS = 35          # what tasks.dynamodb.read_backups lists
NEVER_ENABLED = "never-enabled"    # GetBucketVersioning has no Status until versioning was first enabled

PITR, BACKUP, VERSIONING = "dynamodb-pitr", "dynamodb-backup", "s3-versioning"  # action kinds


def _utc(dt: datetime | None) -> datetime | None:
    return dt.astimezone(timezone.utc) if dt is not None else None


def iso_utc(dt: datetime | None) -> str:
    """ISO time in UTC, or "none" (the value a backup action compares for drift)."""
    return _utc(dt).isoformat() if dt is not None else "none"


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


# --- models (what was read) ------------------------------------------------------------


class TableBackups(BaseModel):
    table: str
    required: bool
    max_age_hours: float
    named: bool = True
    pitr: str | None = None
    latest_restorable: datetime | None = None
    latest_backup: datetime | None = None
    missing: bool = False
    error: str | None = None


class BucketProtection(BaseModel):
    bucket: str
    versioning_required: bool
    replication_required: bool
    named: bool = True
    versioning: str | None = None  # Enabled | Suspended | never-enabled
    replication_role: str | None = None
    replication_rules: list[dict[str, Any]] | None = None  # None: not read; []: no configuration
    missing: bool = False
    error: str | None = None
    replication_error: str | None = None

    @property
    def needs_versioning(self) -> bool:
        """Replication works only on a versioned bucket, so it needs versioning too."""
        return self.versioning_required or self.replication_required


class SnapshotInfo(BaseModel):
    name: str
    state: str
    at: datetime | None  # end time (start time while in progress)


class DomainSnapshots(BaseModel):
    domain: str
    repository: str
    max_age_hours: float
    repository_exists: bool | None = None
    repository_type: str | None = None
    snapshots: list[SnapshotInfo] = Field(default_factory=list)
    error: str | None = None


class RdsSnapshots(BaseModel):
    instance: str
    max_age_hours: float
    missing: bool = False
    status: str | None = None
    retention_days: int | None = None
    latest_id: str | None = None
    latest: datetime | None = None
    count: int = 0
    error: str | None = None


# --- collect ---------------------------------------------------------------------------


def tables_to_check(system: System, found: Discovered) -> list[tuple[DynamoTable, bool]]:
    """(table, named) for the inventory's tables and the tag-discovered ones (their limit: dr.backup_max_age_hours)."""
    named = {t.name: t for t in system.dynamodb_tables}
    return [(named[n], True) if n in named else (DynamoTable(name=n, backup_max_age_hours=system.dr.backup_max_age_hours), False)
            for n in table_names(system, found)]


@aws_task(iam=["dynamodb:DescribeContinuousBackups", "dynamodb:ListBackups"], name="read-table-backups", cache_policy=NO_CACHE)
def read_table_backups(system: System, found: Discovered, deadline: aws.Deadline, only: list[str] | None = None) -> list[TableBackups]:
    now = datetime.now(timezone.utc)
    tables = [(t, named) for t, named in tables_to_check(system, found) if only is None or t.name in only]
    out = []
    for (t, named), info, err in aws.parallel(lambda tn: read_backups(system, tn[0], now), tables, deadline=deadline):
        s = TableBackups(table=t.name, required=t.backup_required, max_age_hours=t.backup_max_age_hours, named=named)
        if err is not None:
            s.missing, s.error = aws.is_not_found(err), aws.describe_error(err)
        else:
            s.pitr, s.latest_restorable, s.latest_backup = info["pitr"], _utc(info["latest_restorable"]), _utc(info["latest_backup"])
        out.append(s)
    return out


def _read_bucket(system: System, b: S3Bucket, named: bool) -> BucketProtection:
    c = aws.client("s3", system.region)
    s = BucketProtection(bucket=b.name, versioning_required=b.versioning_required, replication_required=b.replication_required, named=named)
    try:
        s.versioning = c.get_bucket_versioning(Bucket=b.name).get("Status") or NEVER_ENABLED
    except ClientError as exc:
        s.missing, s.error = aws.is_not_found(exc), aws.describe_error(exc)
        return s
    if b.replication_required:
        try:
            cfg = c.get_bucket_replication(Bucket=b.name)["ReplicationConfiguration"]
            s.replication_role, s.replication_rules = cfg.get("Role"), cfg.get("Rules", [])
        except ClientError as exc:
            if aws.error_code(exc) == "ReplicationConfigurationNotFoundError":
                s.replication_rules = []
            else:
                s.replication_error = aws.describe_error(exc)
    return s


@aws_task(iam=["s3:GetBucketVersioning", "s3:GetReplicationConfiguration"], name="read-bucket-protection", cache_policy=NO_CACHE)
def read_bucket_protection(system: System, found: Discovered, deadline: aws.Deadline, only: list[str] | None = None) -> list[BucketProtection]:
    named = {b.name for b in system.s3_buckets}
    bs = [b for b in all_buckets(system, found) if only is None or b.name in only]
    out = []
    for b, s, err in aws.parallel(lambda b: _read_bucket(system, b, b.name in named), bs, deadline=deadline):
        out.append(s if err is None else BucketProtection(bucket=b.name, versioning_required=b.versioning_required,
                                                          replication_required=b.replication_required, named=b.name in named,
                                                          error=aws.describe_error(err)))
    return out


def _os_reason(exc: BaseException) -> str:
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import ConnectionTimeout, TransportError

    if isinstance(exc, (OSConnectionError, ConnectionTimeout)):
        return f"cluster endpoint unreachable ({type(exc).__name__}); check the endpoint, VPC access or the domain's access policy"
    if isinstance(exc, TransportError):
        return f"snapshot API answered {exc.status_code}: {exc.error}; check es:ESHttpGet permission and the access policy"
    return aws.describe_error(exc)


def _snapshot_time(s: dict[str, Any]) -> datetime | None:
    ms = s.get("end_time_in_millis") or s.get("start_time_in_millis")
    return datetime.fromtimestamp(ms / 1000, timezone.utc) if ms else None


def _read_domain(system: System, d: OpenSearchDomain) -> DomainSnapshots:
    from opensearchpy.exceptions import NotFoundError

    assert d.snapshot_repository
    s = DomainSnapshots(domain=d.name, repository=d.snapshot_repository, max_age_hours=system.dr.snapshot_max_age_hours)
    url = endpoint_for(d, None)
    if url is None:  # no override: the domain's own endpoint
        url = endpoint_for(d, aws.client("opensearch", system.region).describe_domain(DomainName=d.name)["DomainStatus"])
    if url is None:
        s.error = "no endpoint: the domain has none yet and the inventory gives no endpoint override"
        return s
    c = os_client(url, system.region)
    try:
        repo = c.snapshot.get_repository(repository=d.snapshot_repository)
        s.repository_exists, s.repository_type = True, (repo.get(d.snapshot_repository) or {}).get("type")
    except NotFoundError:
        s.repository_exists = False
        return s
    except Exception as exc:  # UNKNOWN with the reason
        s.error = _os_reason(exc)
        return s
    try:
        snaps = c.snapshot.get(repository=d.snapshot_repository, snapshot="_all").get("snapshots", [])
    except Exception as exc:
        s.error = _os_reason(exc)
        return s
    s.snapshots = sorted((SnapshotInfo(name=x["snapshot"], state=x.get("state", "?"), at=_snapshot_time(x)) for x in snaps),
                         key=lambda x: x.at or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
    return s


@aws_task(iam=["es:DescribeDomain", "es:ESHttpGet"], name="read-opensearch-snapshots", cache_policy=NO_CACHE)
def read_snapshots(system: System, deadline: aws.Deadline) -> list[DomainSnapshots]:
    doms = [d for d in system.opensearch_domains if d.snapshot_repository]
    out = []
    for d, s, err in aws.parallel(lambda d: _read_domain(system, d), doms, deadline=deadline):
        out.append(s if err is None else DomainSnapshots(domain=d.name, repository=d.snapshot_repository or "",
                                                         max_age_hours=system.dr.snapshot_max_age_hours, error=aws.describe_error(err)))
    return out


def _read_instance(system: System, identifier: str, max_age_hours: float) -> RdsSnapshots:
    c = aws.client("rds", system.region)
    s = RdsSnapshots(instance=identifier, max_age_hours=max_age_hours)
    try:
        inst = c.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except ClientError as exc:
        if aws.error_code(exc) == "DBInstanceNotFound":
            s.missing = True
            return s
        raise
    s.status, s.retention_days = inst.get("DBInstanceStatus"), inst.get("BackupRetentionPeriod")
    snaps = [x for x in aws.paginate(c, "describe_db_snapshots", "DBSnapshots", DBInstanceIdentifier=identifier, SnapshotType="automated")
             if x.get("Status") == "available" and x.get("SnapshotCreateTime")]
    s.count = len(snaps)
    if snaps:
        latest = max(snaps, key=lambda x: x["SnapshotCreateTime"])
        s.latest_id, s.latest = latest["DBSnapshotIdentifier"], _utc(latest["SnapshotCreateTime"])
    return s


@aws_task(iam=["rds:DescribeDBInstances", "rds:DescribeDBSnapshots"], name="read-rds-snapshots", cache_policy=NO_CACHE)
def read_rds_snapshots(system: System, deadline: aws.Deadline) -> list[RdsSnapshots]:
    out = []
    for r, s, err in aws.parallel(lambda r: _read_instance(system, r.identifier, r.snapshot_max_age_hours), system.rds_instances, deadline=deadline):
        out.append(s if err is None else RdsSnapshots(instance=r.identifier, max_age_hours=r.snapshot_max_age_hours, error=aws.describe_error(err)))
    return out


# --- judge (pure) ------------------------------------------------------------------------


def _missing(check: str, name: str, named: bool, what: str) -> Finding:
    return Finding(check=check, resource=name, status=Status.CRIT,
                   summary=f"{what} named in the inventory does not exist" if named else f"{what} not found (found by its tags)")


def judge_pitr(s: TableBackups, now: datetime) -> Finding:
    check = "dynamodb-pitr"
    if s.error:
        return unknown(check, s.table, s.error)
    bad = Status.CRIT if s.required else Status.WARN
    details = {"pitr": s.pitr, "latest_restorable": iso_utc(s.latest_restorable), "backup_required": s.required}
    if s.pitr == "ENABLED":
        lag = now - s.latest_restorable if s.latest_restorable else None
        if lag is not None and lag <= PITR_MAX_LAG:
            return Finding(check=check, resource=s.table, status=Status.OK, value=round(lag.total_seconds() / 60, 1), details=details,
                           summary=f"PITR enabled; restorable to {lag.total_seconds() / 60:.0f} min ago")
        behind = f"the latest restorable time is {_hours(lag):.1f} h old" if lag is not None else "DescribeContinuousBackups gives no latest restorable time"
        return Finding(check=check, resource=s.table, status=bad, value=round(_hours(lag), 1) if lag else None, details=details,
                       summary=f"PITR enabled but {behind} (more than {_hours(PITR_MAX_LAG):g} h): a restore would lose recent writes; "
                               "check the table's status and AWS Health, and open an AWS support case")
    if s.pitr == "DISABLED":
        todo = ("backup-verify enables it (fix=true, with approval)" if s.required else
                f"enable it (aws dynamodb update-continuous-backups --table-name {s.table} --point-in-time-recovery-specification "
                "PointInTimeRecoveryEnabled=true) or set backup_required: true in the inventory so that backup-verify does")
        return Finding(check=check, resource=s.table, status=bad, details=details,
                       summary=f"PITR disabled: the table cannot be restored to a point in time; {todo}")
    return Finding(check=check, resource=s.table, status=Status.UNKNOWN, details=details,
                   summary=f"DescribeContinuousBackups returned PITR status {s.pitr!r}")


def judge_on_demand(s: TableBackups, now: datetime) -> Finding:
    check = "dynamodb-on-demand-backup"
    if s.error:
        return unknown(check, s.table, s.error)
    age = _hours(now - s.latest_backup) if s.latest_backup else None
    details = {"latest_backup": iso_utc(s.latest_backup), "limit_hours": s.max_age_hours, "backup_required": s.required}
    if age is not None and age <= s.max_age_hours:
        return Finding(check=check, resource=s.table, status=Status.OK, value=round(age, 1), details=details,
                       summary=f"latest on-demand backup {age:.1f} h old (limit {s.max_age_hours:g} h)")
    what = f"latest on-demand backup {age:.1f} h old" if age is not None else f"no on-demand backup in the last {BACKUP_LOOKBACK_DAYS} days"
    todo = ("backup-verify takes one now (fix=true, with approval); schedule daily backups (AWS Backup plan)" if s.required else
            f"take one (aws dynamodb create-backup --table-name {s.table} --backup-name ...) or set backup_required: true in the inventory")
    return Finding(check=check, resource=s.table, status=Status.CRIT if s.required else Status.WARN,
                   value=round(age, 1) if age is not None else None, details=details,
                   summary=f"{what} (limit {s.max_age_hours:g} h); {todo}")


def table_findings(s: TableBackups, now: datetime) -> list[Finding]:
    if s.missing:
        return [_missing("dynamodb-table", s.table, s.named, "table")]
    return [judge_pitr(s, now), judge_on_demand(s, now)]


def judge_versioning(s: BucketProtection) -> Finding:
    """Where the inventory requires versioning (or replication, which needs it) anything but Enabled is CRIT.
    Elsewhere the state is reported as OK with the facts: the inventory says the bucket's objects can be
    rebuilt (a front end from git, reports regenerated), and a WARN every week on such a bucket would only
    teach people to ignore WARN."""
    check = "s3-versioning"
    if s.error:
        return unknown(check, s.bucket, s.error)
    details = {"versioning": s.versioning, "versioning_required": s.versioning_required, "replication_required": s.replication_required}
    state = "never enabled" if s.versioning == NEVER_ENABLED else s.versioning
    if s.versioning == "Enabled":
        return Finding(check=check, resource=s.bucket, status=Status.OK, summary="versioning Enabled", details=details)
    if s.needs_versioning:
        why = "versioning_required" if s.versioning_required else "replication_required (replication needs versioning)"
        return Finding(check=check, resource=s.bucket, status=Status.CRIT, details=details,
                       summary=f"versioning {state} but the inventory says {why}: an overwritten or deleted object cannot be recovered; "
                               "backup-verify enables it (fix=true, with approval; it can only be Suspended afterwards, never removed)")
    return Finding(check=check, resource=s.bucket, status=Status.OK, details=details,
                   summary=f"versioning {state}; not required by the inventory (set versioning_required: true if its objects cannot be rebuilt)")


def judge_replication(s: BucketProtection) -> Finding:
    check = "s3-replication"
    if s.replication_error:
        return unknown(check, s.bucket, s.replication_error)
    rules = s.replication_rules or []
    enabled = [r for r in rules if r.get("Status") == "Enabled"]
    dests = sorted({(r.get("Destination") or {}).get("Bucket", "?").removeprefix("arn:aws:s3:::") for r in enabled})
    details = {"role": s.replication_role, "rules": len(rules), "enabled_rules": len(enabled), "destinations": dests}
    todo = ("configure it: aws s3api put-bucket-replication --bucket " + s.bucket + " --replication-configuration file://replication.json "
            "(a versioned destination bucket in another region and an IAM role S3 can assume); not fixed automatically")
    if not rules:
        return Finding(check=check, resource=s.bucket, status=Status.CRIT, details=details,
                       summary=f"no replication configuration (ReplicationConfigurationNotFoundError): objects are not copied to another region; {todo}")
    if not enabled:
        return Finding(check=check, resource=s.bucket, status=Status.CRIT, details=details,
                       summary=f"replication configured but none of its {len(rules)} rule(s) is Enabled; enable a rule (not fixed automatically)")
    return Finding(check=check, resource=s.bucket, status=Status.OK, details=details,
                   summary=f"replicating to {', '.join(dests)} ({len(enabled)} enabled rule(s))")


def bucket_findings(s: BucketProtection) -> list[Finding]:
    if s.missing:
        return [_missing("s3-bucket", s.bucket, s.named, "bucket")]
    return [judge_versioning(s)] + ([judge_replication(s)] if s.replication_required and not s.error else [])


def judge_snapshots(s: DomainSnapshots, now: datetime) -> Finding:
    check = "opensearch-snapshot"
    if s.error:
        return unknown(check, s.domain, s.error)
    details = {"repository": s.repository, "repository_type": s.repository_type, "snapshots": len(s.snapshots), "limit_hours": s.max_age_hours}
    take = (f"take one (PUT _snapshot/{s.repository}/snapshot_YYYYMMDD) and schedule them (a Snapshot Management policy); "
            "not fixed automatically")
    if not s.repository_exists:
        return Finding(check=check, resource=s.domain, status=Status.CRIT, details=details,
                       summary=f"snapshot repository {s.repository} is not registered: register it (PUT _snapshot/{s.repository} with type s3, "
                               f"the snapshot bucket and the snapshot role), then {take}")
    good = [x for x in s.snapshots if x.state == "SUCCESS" and x.at]
    newest = s.snapshots[0] if s.snapshots else None
    if not good:
        seen = f"{len(s.snapshots)} snapshot(s), the newest {newest.name} {newest.state}" if newest else "no snapshot at all"
        return Finding(check=check, resource=s.domain, status=Status.CRIT, details=details,
                       summary=f"no successful snapshot in {s.repository} ({seen}); {take}")
    latest = good[0]
    age = _hours(now - latest.at)
    details.update(latest=latest.name, latest_at=iso_utc(latest.at))
    if age > s.max_age_hours:
        return Finding(check=check, resource=s.domain, status=Status.CRIT, value=round(age, 1), details=details,
                       summary=f"latest successful snapshot {latest.name} in {s.repository} is {age:.1f} h old (limit {s.max_age_hours:g} h); {take}")
    if newest is not None and newest is not latest and newest.state in ("FAILED", "PARTIAL"):
        return Finding(check=check, resource=s.domain, status=Status.WARN, value=round(age, 1), details=details,
                       summary=f"latest successful snapshot {latest.name} is {age:.1f} h old, but the newest attempt {newest.name} is "
                               f"{newest.state}: check the cluster health and the snapshot role before the next one is due")
    return Finding(check=check, resource=s.domain, status=Status.OK, value=round(age, 1), details=details,
                   summary=f"latest successful snapshot {latest.name} in {s.repository} is {age:.1f} h old (limit {s.max_age_hours:g} h)")


def judge_rds(s: RdsSnapshots, now: datetime) -> Finding:
    check = "rds-snapshot"
    if s.error:
        return unknown(check, s.instance, s.error)
    if s.missing:
        return Finding(check=check, resource=s.instance, status=Status.CRIT,
                       summary="the RDS instance named in the inventory does not exist (DBInstanceNotFound); check the identifier and region")
    details = {"status": s.status, "retention_days": s.retention_days, "latest": s.latest_id, "latest_at": iso_utc(s.latest),
               "automated_snapshots": s.count, "limit_hours": s.max_age_hours}
    disabled = s.retention_days == 0
    enable = (f"automated backups are disabled (BackupRetentionPeriod 0): enable them (aws rds modify-db-instance --db-instance-identifier "
              f"{s.instance} --backup-retention-period 7 --apply-immediately)")
    if s.latest is None:
        why = enable if disabled else "check the instance's backup window and its events (aws rds describe-events)"
        return Finding(check=check, resource=s.instance, status=Status.CRIT, details=details,
                       summary=f"no automated snapshot; {why}; not fixed automatically")
    age = _hours(now - s.latest)
    if age > s.max_age_hours:
        why = enable if disabled else "the daily automated backup did not run: check the backup window, the instance's status and its events"
        return Finding(check=check, resource=s.instance, status=Status.CRIT, value=round(age, 1), details=details,
                       summary=f"latest automated snapshot {s.latest_id} is {age:.1f} h old (limit {s.max_age_hours:g} h); {why}")
    return Finding(check=check, resource=s.instance, status=Status.OK, value=round(age, 1), details=details,
                   summary=f"latest automated snapshot {s.latest_id} is {age:.1f} h old (limit {s.max_age_hours:g} h; retention {s.retention_days} d)")


# --- act: how each fix reads and sets its value (idempotent) ------------------------------


def read_pitr(system: System, table: str) -> str:
    d = aws.client("dynamodb", system.region).describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    return d.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus", "DISABLED")


def set_pitr(system: System, table: str, value: str) -> None:
    aws.client("dynamodb", system.region).update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": value == "ENABLED"})


def read_versioning(system: System, bucket: str) -> str:
    return aws.client("s3", system.region).get_bucket_versioning(Bucket=bucket).get("Status") or NEVER_ENABLED


def set_versioning(system: System, bucket: str, value: str) -> None:
    if value not in ("Enabled", "Suspended"):
        raise ValueError(f"versioning can only be set to Enabled or Suspended, not {value!r}")
    aws.client("s3", system.region).put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": value})


def read_latest_backup(system: System, table: str) -> str:
    """The newest AVAILABLE backup's creation time (ISO, UTC), or "none"."""
    return iso_utc(read_backups(system, DynamoTable(name=table), datetime.now(timezone.utc))["latest_backup"])


def take_backup(system: System, table: str, name: str) -> None:
    aws.client("dynamodb", system.region).create_backup(TableName=table, BackupName=name)


APPLIERS = {
    PITR: Applier(read=read_pitr, apply=set_pitr),
    VERSIONING: Applier(read=read_versioning, apply=set_versioning),
    BACKUP: Applier(read=read_latest_backup, apply=take_backup),
}


def backup_name(table: str, now: datetime) -> str:
    """opsbook-<table>-<UTC timestamp> (DynamoDB allows [a-zA-Z0-9_.-], 3-255 characters)."""
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"opsbook-{table[: 255 - 9 - len(stamp)]}-{stamp}"


def backup_status(system: System, table: str, name: str) -> str | None:
    """The status of the table's backup with this name (None: no such backup)."""
    c = aws.client("dynamodb", system.region)
    since = datetime.now(timezone.utc) - timedelta(days=1)
    for b in aws.paginate(c, "list_backups", "BackupSummaries", TableName=table, TimeRangeLowerBound=since, BackupType="USER"):
        if b.get("BackupName") == name:
            return b.get("BackupStatus")
    return None


def verified(system: System, kind: str, resource: str, target: str) -> tuple[bool | None, str]:
    """(True: the target state is read back; None: not yet (still creating); False: not there), and what was read."""
    if kind == PITR:
        now = read_pitr(system, resource)
        return now == target, f"PITR {now}"
    if kind == VERSIONING:
        now = read_versioning(system, resource)
        return now == target, f"versioning {now}"
    if kind == BACKUP:
        status = backup_status(system, resource, target)
        return (True if status == "AVAILABLE" else None if status == "CREATING" else False), f"backup {target} {status or 'not found'}"
    raise ValueError(f"unknown action kind {kind}")


def wait_verified(system: System, items: list[tuple[str, str, str]], timeout_s: float, poll_s: float = 2.0) -> dict[tuple[str, str], tuple[bool | None, str]]:
    """Read each (kind, resource, target) back until all are there or ``timeout_s`` passes (bounded; never hangs)."""
    started = time.monotonic()
    result: dict[tuple[str, str], tuple[bool | None, str]] = {}
    pending = list(items)
    while pending:
        for kind, resource, target in list(pending):
            try:
                ok, seen = verified(system, kind, resource, target)
            except Exception as exc:  # reported on the record; the fix itself was applied
                ok, seen = False, f"could not read it back ({aws.describe_error(exc)})"
            result[(kind, resource)] = (ok, seen)
            if ok is not None:
                pending.remove((kind, resource, target))
        if not pending or time.monotonic() - started >= timeout_s:
            break
        time.sleep(poll_s)
    return result
