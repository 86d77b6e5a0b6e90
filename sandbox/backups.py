"""Backups in the sandbox: a system with every backup in order, and named gaps.

``good_backups`` sets up what backup-verify expects of a healthy system;
``apply_gap(sb, system, name)`` then breaks one thing. Each returns what it
did (the resource and the numbers a test asserts on).

Where moto cannot produce a signal the sandbox sets it through moto's own
state, and says so: moto stamps a DynamoDB backup, PITR's latest restorable
time and an RDS snapshot with the time of the call, so "old" and "stale" move
those timestamps back. RDS snapshots are moto's own: like RDS, moto takes the
first automated snapshot when the instance is created (no manual snapshot
stands in for one). OpenSearch snapshots live in the test double.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.inventory import System
from sandbox.server import ACCOUNT_ID, Sandbox, sandbox_client
from tasks.opensearch import os_client


def replica_region(system: System) -> str:
    return "us-west-2" if system.region != "us-west-2" else "us-east-2"


def _need(items: list[Any], what: str, gap: str, system: System) -> Any:
    if not items:
        raise ValueError(f"gap {gap!r} needs {what} in the inventory of {system.name}")
    return items[0]


def _pick(items: list[Any], name: str | None, key: Callable[[Any], str], what: str, gap: str, system: System) -> Any:
    if name is None:
        return _need(items, what, gap, system)
    for i in items:
        if key(i) == name:
            return i
    raise ValueError(f"gap {gap!r}: {name!r} is not {what} in the inventory of {system.name}")


def _os(sb: Sandbox, domain: str) -> Any:
    return os_client(sb.opensearch.url_for(domain), "us-east-1")


# --- good backups --------------------------------------------------------------------------


def good_backups(sb: Sandbox, system: System, snapshot_age_hours: float = 2.0) -> dict[str, Any]:
    """Every backup backup-verify checks, in order (after ``seed_system``)."""
    r = system.region
    made: dict[str, Any] = {"tables": [], "buckets": [], "replicas": [], "snapshots": [], "rds": []}
    ddb = sandbox_client(sb, "dynamodb", r)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    for t in system.dynamodb_tables:  # every table, not only backup_required ones: the others would be WARN
        ddb.update_continuous_backups(TableName=t.name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
        ddb.create_backup(TableName=t.name, BackupName=f"{t.name}-sandbox-{stamp}")
        made["tables"].append(t.name)

    s3 = sandbox_client(sb, "s3", r)
    for b in system.s3_buckets:
        if b.versioning_required or b.replication_required:
            s3.put_bucket_versioning(Bucket=b.name, VersioningConfiguration={"Status": "Enabled"})
            made["buckets"].append(b.name)
        if b.replication_required:
            made["replicas"].append(replicate(sb, system, b.name))

    for d in system.opensearch_domains:
        if d.snapshot_repository:
            register_repository(sb, system, d.name, d.snapshot_repository)
            made["snapshots"].append(add_snapshot(sb, d.name, d.snapshot_repository, d.indices, snapshot_age_hours))

    for inst in system.rds_instances:
        made["rds"].append(create_rds_instance(sb, system, inst.identifier))
    return made


def replicate(sb: Sandbox, system: System, bucket: str) -> str:
    """Cross-region replication to ``<bucket>-replica`` (versioned) with a role S3 can assume."""
    dest_region = replica_region(system)
    dest = f"{bucket}-replica"
    s3d = sandbox_client(sb, "s3", dest_region)
    s3d.create_bucket(Bucket=dest, CreateBucketConfiguration={"LocationConstraint": dest_region})
    s3d.put_bucket_versioning(Bucket=dest, VersioningConfiguration={"Status": "Enabled"})
    iam = sandbox_client(sb, "iam", system.region)
    role_name = f"{system.name}-s3-replication"
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    try:
        role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName=role_name)["Role"]["Arn"]
    sandbox_client(sb, "s3", system.region).put_bucket_replication(Bucket=bucket, ReplicationConfiguration={
        "Role": role, "Rules": [{"ID": "all-to-replica", "Status": "Enabled", "Priority": 1, "Filter": {},
                                 "DeleteMarkerReplication": {"Status": "Disabled"}, "Destination": {"Bucket": f"arn:aws:s3:::{dest}"}}]})
    return dest


def register_repository(sb: Sandbox, system: System, domain: str, repo: str) -> None:
    """The seed's repository: type s3 in the system's snapshot bucket, with the snapshot role."""
    bucket = next((b.name for b in system.s3_buckets if "snapshot" in b.name), f"{domain}-snapshots")
    _os(sb, domain).snapshot.create_repository(repository=repo, body={"type": "s3", "settings": {
        "bucket": bucket, "region": system.region, "role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/OpenSearchSnapshotRole"}})


def add_snapshot(sb: Sandbox, domain: str, repo: str, indices: list[str], age_hours: float, state: str = "SUCCESS",
                 name: str | None = None) -> str:
    at = datetime.now(timezone.utc) - timedelta(hours=age_hours)
    name = name or f"snapshot_{at.strftime('%Y%m%d%H%M')}"
    sb.opensearch.add_snapshot(domain, repo, name, indices or ["default"], state=state, start_time_ms=int(at.timestamp() * 1000))
    return name


def create_rds_instance(sb: Sandbox, system: System, identifier: str) -> str:
    """The instance; moto takes its first automated snapshot at creation, as RDS does."""
    tags = [{"Key": k, "Value": v} for k, v in {**system.discovery.tags, "opsbook:system": system.name}.items()]
    sandbox_client(sb, "rds", system.region).create_db_instance(
        DBInstanceIdentifier=identifier, DBInstanceClass="db.r5.2xlarge", Engine="postgres", AllocatedStorage=100,
        MasterUsername="opsbook", MasterUserPassword="sandbox-only-1", BackupRetentionPeriod=7, Tags=tags)
    return identifier


# --- gaps -----------------------------------------------------------------------------------


def pitr_off(sb: Sandbox, system: System, table: str | None = None) -> dict[str, Any]:
    t = _pick([t for t in system.dynamodb_tables if t.backup_required], table, lambda t: t.name, "a backup_required table", "pitr-off", system)
    sandbox_client(sb, "dynamodb", system.region).update_continuous_backups(
        TableName=t.name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False})
    return {"resource": t.name}


def pitr_stale(sb: Sandbox, system: System, table: str | None = None, hours: float = 3.0) -> dict[str, Any]:
    """PITR on but its latest restorable time hours behind (moto's state: it never advances that time)."""
    t = _pick([t for t in system.dynamodb_tables if t.backup_required], table, lambda t: t.name, "a backup_required table", "pitr-stale", system)
    desc = sb.backend("dynamodb", system.region).get_table(t.name).continuous_backups["PointInTimeRecoveryDescription"]
    if desc.get("PointInTimeRecoveryStatus") != "ENABLED":
        raise ValueError(f"gap 'pitr-stale': PITR is not enabled on {t.name} (run good_backups first)")
    desc["LatestRestorableDateTime"] = (datetime.now(timezone.utc) - timedelta(hours=hours)).timestamp()
    return {"resource": t.name, "hours": hours}


def backup_old(sb: Sandbox, system: System, table: str | None = None, hours: float | None = None) -> dict[str, Any]:
    """Every on-demand backup of the table made older than its limit (moto's state)."""
    t = _pick([t for t in system.dynamodb_tables if t.backup_required], table, lambda t: t.name, "a backup_required table", "backup-old", system)
    hours = hours if hours is not None else t.backup_max_age_hours + 14
    backend = sb.backend("dynamodb", system.region)
    moved = 0
    for b in backend.backups.values():
        if b.table.name == t.name:
            b.creation_date_time = b.creation_date_time - timedelta(hours=hours)
            moved += 1
    if not moved:
        raise ValueError(f"gap 'backup-old': {t.name} has no backup to age")
    return {"resource": t.name, "hours": hours}


def backup_none(sb: Sandbox, system: System, table: str | None = None) -> dict[str, Any]:
    t = _pick([t for t in system.dynamodb_tables if t.backup_required], table, lambda t: t.name, "a backup_required table", "backup-none", system)
    ddb = sandbox_client(sb, "dynamodb", system.region)
    for b in ddb.list_backups(TableName=t.name)["BackupSummaries"]:
        ddb.delete_backup(BackupArn=b["BackupArn"])
    return {"resource": t.name}


def versioning_off(sb: Sandbox, system: System, bucket: str | None = None) -> dict[str, Any]:
    """Suspended (once enabled, S3 versioning can only be suspended)."""
    b = _pick([b for b in system.s3_buckets if b.versioning_required], bucket, lambda b: b.name, "a versioning_required bucket",
              "versioning-off", system)
    sandbox_client(sb, "s3", system.region).put_bucket_versioning(Bucket=b.name, VersioningConfiguration={"Status": "Suspended"})
    return {"resource": b.name}


def replication_none(sb: Sandbox, system: System, bucket: str | None = None) -> dict[str, Any]:
    b = _pick([b for b in system.s3_buckets if b.replication_required], bucket, lambda b: b.name, "a replication_required bucket",
              "replication-none", system)
    sandbox_client(sb, "s3", system.region).delete_bucket_replication(Bucket=b.name)
    return {"resource": b.name}


def _domain(system: System, gap: str) -> Any:
    return _need([d for d in system.opensearch_domains if d.snapshot_repository], "an OpenSearch domain with a snapshot_repository", gap, system)


def _drop_snapshots(sb: Sandbox, domain: str, repo: str) -> None:
    c = _os(sb, domain)
    for s in c.snapshot.get(repository=repo, snapshot="_all")["snapshots"]:
        c.snapshot.delete(repository=repo, snapshot=s["snapshot"])


def snapshot_stale(sb: Sandbox, system: System, hours: float | None = None) -> dict[str, Any]:
    """Only a SUCCESS snapshot older than dr.snapshot_max_age_hours."""
    d = _domain(system, "snapshot-stale")
    hours = hours if hours is not None else system.dr.snapshot_max_age_hours + 22
    _drop_snapshots(sb, d.name, d.snapshot_repository)
    name = add_snapshot(sb, d.name, d.snapshot_repository, d.indices, hours)
    return {"resource": d.name, "snapshot": name, "hours": hours}


def snapshot_none(sb: Sandbox, system: System) -> dict[str, Any]:
    d = _domain(system, "snapshot-none")
    _drop_snapshots(sb, d.name, d.snapshot_repository)
    return {"resource": d.name}


def snapshot_failed(sb: Sandbox, system: System) -> dict[str, Any]:
    """A fresh SUCCESS snapshot and, after it, a FAILED attempt."""
    d = _domain(system, "snapshot-failed")
    name = add_snapshot(sb, d.name, d.snapshot_repository, d.indices, 0.5, state="FAILED", name="snapshot_failed")
    return {"resource": d.name, "snapshot": name}


def repository_missing(sb: Sandbox, system: System) -> dict[str, Any]:
    d = _domain(system, "repository-missing")
    _os(sb, d.name).snapshot.delete_repository(repository=d.snapshot_repository)
    return {"resource": d.name, "repository": d.snapshot_repository}


def _rds(system: System, gap: str) -> Any:
    return _need(system.rds_instances, "an RDS instance", gap, system)


def rds_snapshot_stale(sb: Sandbox, system: System, hours: float | None = None) -> dict[str, Any]:
    """The instance's automated snapshots made older than its limit (moto's state)."""
    inst = _rds(system, "rds-snapshot-stale")
    hours = hours if hours is not None else inst.snapshot_max_age_hours + 22
    snaps = [s for s in sb.backend("rds", system.region).database_snapshots.values()
             if s.db_instance_identifier == inst.identifier and s.snapshot_type == "automated"]
    if not snaps:
        raise ValueError(f"gap 'rds-snapshot-stale': {inst.identifier} has no automated snapshot (run good_backups first)")
    for s in snaps:
        s.created = s.created - timedelta(hours=hours)
    return {"resource": inst.identifier, "hours": hours}


def rds_snapshot_none(sb: Sandbox, system: System) -> dict[str, Any]:
    """No automated snapshot at all (RDS refuses to delete them; the sandbox drops them from moto's state)."""
    inst = _rds(system, "rds-snapshot-none")
    snaps = sb.backend("rds", system.region).database_snapshots
    for key in [k for k, s in snaps.items() if s.db_instance_identifier == inst.identifier and s.snapshot_type == "automated"]:
        del snaps[key]
    return {"resource": inst.identifier}


def rds_missing(sb: Sandbox, system: System) -> dict[str, Any]:
    inst = _rds(system, "rds-missing")
    sandbox_client(sb, "rds", system.region).delete_db_instance(DBInstanceIdentifier=inst.identifier, SkipFinalSnapshot=True,
                                                         DeleteAutomatedBackups=True)
    return {"resource": inst.identifier}


GAPS: dict[str, Callable[..., dict[str, Any]]] = {
    "pitr-off": pitr_off,
    "pitr-stale": pitr_stale,
    "backup-old": backup_old,
    "backup-none": backup_none,
    "versioning-off": versioning_off,
    "replication-none": replication_none,
    "snapshot-stale": snapshot_stale,
    "snapshot-none": snapshot_none,
    "snapshot-failed": snapshot_failed,
    "repository-missing": repository_missing,
    "rds-snapshot-stale": rds_snapshot_stale,
    "rds-snapshot-none": rds_snapshot_none,
    "rds-missing": rds_missing,
}


def apply_gap(sb: Sandbox, system: System, name: str, **kwargs: Any) -> dict[str, Any]:
    if name not in GAPS:
        raise ValueError(f"unknown gap {name!r}; known gaps: {', '.join(sorted(GAPS))}")
    return GAPS[name](sb, system, **kwargs)
