"""DynamoDB: tables ACTIVE, items created yesterday, recent backups."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import DynamoTable, System
from opsbook.resources import Discovered
from opsbook.snapshots import iso_utc

_BAD = {"DELETING", "INACCESSIBLE_ENCRYPTION_CREDENTIALS", "ARCHIVING", "ARCHIVED"}


def table_names(system: System, found: Discovered) -> list[str]:
    names = [t.name for t in system.dynamodb_tables]
    return names + [n for n in found.dynamodb_tables if n not in names]


def judge_table(name: str, desc: dict[str, Any] | None, error: BaseException | None, named: bool) -> Finding:
    check = "dynamodb-status"
    if error is not None:
        if aws.is_not_found(error):
            return Finding(check=check, resource=name, status=Status.CRIT,
                           summary="named in the inventory but does not exist" if named else "not found")
        return unknown(check, name, aws.describe_error(error))
    t = (desc or {}).get("Table", {})
    status = t.get("TableStatus")
    details = {"status": status, "billing_mode": t.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"),
               "size_bytes": t.get("TableSizeBytes"), "item_count_estimate": t.get("ItemCount")}
    if status == "ACTIVE":
        return Finding(check=check, resource=name, status=Status.OK, summary="ACTIVE", details=details)
    if status in _BAD:
        return Finding(check=check, resource=name, status=Status.CRIT, summary=f"status {status}", details=details)
    if status is None:
        return Finding(check=check, resource=name, status=Status.UNKNOWN, summary="DescribeTable returned no TableStatus", details=details)
    return Finding(check=check, resource=name, status=Status.WARN, summary=f"status {status} (not ACTIVE)", details=details)


def yesterday_bounds(system: System, fmt: str, now: datetime | None = None) -> tuple[Any, Any, str]:
    """Bounds of yesterday (system time zone) in the attribute's own format, and the DynamoDB type."""
    start, end = system.yesterday(now)
    if fmt == "iso8601":
        # ISO-8601 strings compare correctly as text when both are UTC.
        f = "%Y-%m-%dT%H:%M:%S"
        return start.astimezone(timezone.utc).strftime(f), end.astimezone(timezone.utc).strftime(f), "S"
    mult = 1000 if fmt == "epoch_millis" else 1
    return str(int(start.timestamp() * mult)), str(int(end.timestamp() * mult) - 1), "N"


def count_created_yesterday(system: System, table: DynamoTable, now: datetime | None = None) -> int:
    """Scan with Select=COUNT over every page (a scan page stops at 1 MB)."""
    c = aws.client("dynamodb", system.region)
    lo, hi, typ = yesterday_bounds(system, table.created_at_format, now)
    kwargs: dict[str, Any] = dict(
        TableName=table.name,
        Select="COUNT",
        FilterExpression="#c >= :lo AND #c < :hi" if typ == "S" else "#c BETWEEN :lo AND :hi",
        ExpressionAttributeNames={"#c": table.created_at_attribute},
        ExpressionAttributeValues={":lo": {typ: lo}, ":hi": {typ: hi}},
    )
    total = 0
    for page in c.get_paginator("scan").paginate(**kwargs):
        total += page["Count"]
    return total


def judge_created(system: System, table: DynamoTable, count: int | None, error: BaseException | None) -> Finding:
    check = "dynamodb-items-yesterday"
    start, _ = system.yesterday()
    day = start.date().isoformat()
    if error is not None:
        return unknown(check, table.name, aws.describe_error(error))
    if count is not None and count < table.min_items_yesterday:
        return Finding(check=check, resource=table.name, status=Status.WARN, value=count,
                       summary=f"{count} items created on {day} ({system.timezone}); expected at least {table.min_items_yesterday}")
    return Finding(check=check, resource=table.name, status=Status.OK, value=count, summary=f"{count} items created on {day} ({system.timezone})")


def read_backups(system: System, table: DynamoTable, now: datetime) -> dict[str, Any]:
    c = aws.client("dynamodb", system.region)
    cont = c.describe_continuous_backups(TableName=table.name)["ContinuousBackupsDescription"]
    pitr = cont.get("PointInTimeRecoveryDescription", {})
    backups = list(aws.paginate(c, "list_backups", "BackupSummaries", TableName=table.name,
                                TimeRangeLowerBound=now - timedelta(days=35), BackupType="ALL"))
    latest = max((b["BackupCreationDateTime"] for b in backups if b.get("BackupStatus") == "AVAILABLE"), default=None)
    return {"pitr": pitr.get("PointInTimeRecoveryStatus"), "latest_restorable": pitr.get("LatestRestorableDateTime"), "latest_backup": latest}


def judge_backup(table: DynamoTable, info: dict[str, Any] | None, error: BaseException | None, now: datetime) -> Finding:
    check = "dynamodb-backup"
    if error is not None:
        return unknown(check, table.name, aws.describe_error(error))
    assert info is not None
    max_age = timedelta(hours=table.backup_max_age_hours)
    latest = info["latest_backup"]
    age_h = (now - latest).total_seconds() / 3600 if latest else None
    pitr_ok = info["pitr"] == "ENABLED" and info["latest_restorable"] is not None and now - info["latest_restorable"] < timedelta(hours=1)
    details = {"pitr": info["pitr"], "latest_backup": latest.isoformat() if latest else None}
    if latest and now - latest <= max_age:
        return Finding(check=check, resource=table.name, status=Status.OK, value=round(age_h, 1), details=details,
                       summary=f"latest on-demand backup {age_h:.1f} h old; PITR {info['pitr']}")
    if pitr_ok:
        return Finding(check=check, resource=table.name, status=Status.WARN, value=round(age_h, 1) if age_h else None, details=details,
                       summary=f"no on-demand backup within {table.backup_max_age_hours:g} h, but PITR is enabled and current")
    what = f"latest on-demand backup {age_h:.1f} h old" if latest else "no on-demand backup in 35 days"
    return Finding(check=check, resource=table.name, status=Status.CRIT, value=round(age_h, 1) if age_h else None, details=details,
                   summary=f"{what} and PITR {info['pitr'] or 'unknown'}: no recent backup (limit {table.backup_max_age_hours:g} h)")


@aws_task(iam=["dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:DescribeContinuousBackups", "dynamodb:ListBackups"], cache_policy=NO_CACHE)
def check_tables(system: System, found: Discovered, deadline: aws.Deadline) -> list[Finding]:
    c = aws.client("dynamodb", system.region)
    named = {t.name for t in system.dynamodb_tables}
    results = aws.parallel(lambda n: c.describe_table(TableName=n), table_names(system, found), deadline=deadline)
    findings = [judge_table(n, d, e, n in named) for n, d, e in results]
    active = {f.resource for f in findings if f.status is Status.OK}
    now = datetime.now(timezone.utc)
    counted = [t for t in system.dynamodb_tables if t.created_at_attribute and t.name in active]
    for t, n, e in aws.parallel(lambda t: count_created_yesterday(system, t), counted, deadline=deadline):
        findings.append(judge_created(system, t, n, e))
    backed = [t for t in system.dynamodb_tables if t.backup_required and t.name in active]
    for t, info, e in aws.parallel(lambda t: read_backups(system, t, now), backed, deadline=deadline):
        findings.append(judge_backup(t, info, e, now))
    return findings


# --- backups: PITR and on-demand backups (read, fix), restores ------------------------------------

BACKUP_LOOKBACK_DAYS = 35  # what read_backups lists


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
            s.pitr, s.latest_restorable, s.latest_backup = info["pitr"], aws.utc(info["latest_restorable"]), aws.utc(info["latest_backup"])
        out.append(s)
    return out


def read_pitr(system: System, table: str) -> str:
    d = aws.client("dynamodb", system.region).describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    return d.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus", "DISABLED")


def set_pitr(system: System, table: str, value: str) -> None:
    aws.client("dynamodb", system.region).update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": value == "ENABLED"})


def read_latest_backup(system: System, table: str) -> str:
    """The newest AVAILABLE backup's creation time (ISO, UTC), or "none"."""
    return iso_utc(read_backups(system, DynamoTable(name=table), datetime.now(timezone.utc))["latest_backup"])


def take_backup(system: System, table: str, name: str) -> None:
    aws.client("dynamodb", system.region).create_backup(TableName=table, BackupName=name)


def backup_status(system: System, table: str, name: str) -> str | None:
    """The status of the table's backup with this name (None: no such backup)."""
    c = aws.client("dynamodb", system.region)
    since = datetime.now(timezone.utc) - timedelta(days=1)
    for b in aws.paginate(c, "list_backups", "BackupSummaries", TableName=table, TimeRangeLowerBound=since, BackupType="USER"):
        if b.get("BackupName") == name:
            return b.get("BackupStatus")
    return None


@aws_task(iam=["dynamodb:ListBackups", "dynamodb:DescribeBackup", "dynamodb:DescribeContinuousBackups", "dynamodb:DescribeTable"],
          name="find-table-backups", cache_policy=NO_CACHE)
def find_table_backups(system: System) -> dict[str, dict[str, Any]]:
    """Per inventory table: its size and key, and what it can be restored from (the latest backup, else PITR, else nothing)."""
    c = aws.client("dynamodb", system.region)

    def one(table: str) -> dict[str, Any]:
        desc = c.describe_table(TableName=table)["Table"]
        backups = [b for b in aws.paginate(c, "list_backups", "BackupSummaries", TableName=table, BackupType="ALL")
                   if b.get("BackupStatus") == "AVAILABLE"]
        latest = max(backups, key=lambda b: b["BackupCreationDateTime"], default=None)
        out = {"size_bytes": desc.get("TableSizeBytes", 0), "key": [k["AttributeName"] for k in desc["KeySchema"]]}
        if latest:
            d = c.describe_backup(BackupArn=latest["BackupArn"])["BackupDescription"]
            out.update(kind="backup", arn=latest["BackupArn"], at=latest["BackupCreationDateTime"].isoformat(),
                       item_count=d["SourceTableDetails"].get("ItemCount"))
            return out
        pitr = c.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"].get("PointInTimeRecoveryDescription", {})
        if pitr.get("PointInTimeRecoveryStatus") == "ENABLED":
            out.update(kind="pitr", at=str(pitr.get("LatestRestorableDateTime")), item_count=None)
        else:
            out.update(kind=None)
        return out

    res = {}
    for t, info, err in aws.parallel(one, [t.name for t in system.dynamodb_tables]):
        res[t] = info if err is None else {"kind": None, "error": aws.describe_error(err)}
    return res


def scan_count(c: Any, table: str) -> int:
    return sum(p["Count"] for p in c.get_paginator("scan").paginate(TableName=table, Select="COUNT"))


def wait_active(c: Any, table: str, copy: str, status: str | None, t0: float, timeout_s: float, label: str) -> str | None:
    """Poll the restored copy until ACTIVE or ``timeout_s`` since ``t0`` (a progress artifact shows how far); its last status."""
    progress = create_progress_artifact(progress=0.0, description=f"{label}: restoring {table} into {copy}")
    while status != "ACTIVE":
        elapsed = time.monotonic() - t0
        if elapsed > timeout_s:
            return status
        update_progress_artifact(progress, progress=min(95.0, 100 * elapsed / timeout_s))
        print(f"opsbook: {label}: {copy} {status} after {elapsed:.0f} s", file=sys.stderr)
        time.sleep(min(10.0, max(1.0, elapsed / 5)))
        status = c.describe_table(TableName=copy)["Table"]["TableStatus"]
    update_progress_artifact(progress, progress=100.0)
    return status


def sample_differences(c: Any, table: str, copy: str, key: list[str], size: int) -> tuple[int, int]:
    """(sampled, differ): a sample of the source's items looked up by key in the copy, and how many differ."""
    sample = c.scan(TableName=table, Limit=size).get("Items", [])
    keys = [{k: item[k] for k in key} for item in sample]
    got: list[dict] = []
    for i in range(0, len(keys), 100):
        req = {copy: {"Keys": keys[i : i + 100]}}
        while req:
            r = c.batch_get_item(RequestItems=req)
            got += r["Responses"].get(copy, [])
            req = r.get("UnprocessedKeys") or {}
    by_key = {json.dumps({k: it[k] for k in key}, sort_keys=True): it for it in got}
    return len(sample), sum(1 for it in sample if by_key.get(json.dumps({k: it[k] for k in key}, sort_keys=True)) != it)


@aws_task(iam=["dynamodb:RestoreTableFromBackup", "dynamodb:RestoreTableToPointInTime", "dynamodb:DescribeTable", "dynamodb:TagResource",
               "dynamodb:Scan", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
               "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"],
          name="restore-table", cache_policy=NO_CACHE, read_only=False)
def restore_table(system: System, table: str, info: dict[str, Any], copy: str, timeout_s: float, tags: dict[str, str],
                  label: str) -> dict[str, Any]:
    """Restore ``info``'s backup (or the latest PITR time) into ``copy``, wait for it, count it by scan and compare a sample with
    the source: seconds to ACTIVE, status, items restored, items expected (the backup's count, else the source's now), sampled, differ."""
    c = aws.client("dynamodb", system.region)
    t0 = time.monotonic()
    if info["kind"] == "backup":
        res = c.restore_table_from_backup(TargetTableName=copy, BackupArn=info["arn"])
    else:
        res = c.restore_table_to_point_in_time(SourceTableName=table, TargetTableName=copy, UseLatestRestorableTime=True)
    c.tag_resource(ResourceArn=res["TableDescription"]["TableArn"], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    status = wait_active(c, table, copy, res["TableDescription"].get("TableStatus"), t0, timeout_s, label)
    seconds = time.monotonic() - t0
    if status != "ACTIVE":
        return {"seconds": seconds, "status": status, "timeout_s": timeout_s}
    count = scan_count(c, copy)
    expected = info.get("item_count")
    if expected is None:  # PITR: the latest restorable time is minutes old; compare with the source now
        expected = scan_count(c, table)
    sampled, differ = sample_differences(c, table, copy, info["key"], system.dr.sample_items)
    return {"seconds": seconds, "status": status, "count": count, "expected": expected, "sampled": sampled, "differ": differ}


def remove_tables(system: System, is_copy: Callable[[str], bool]) -> list[str]:
    """Delete every table ``is_copy`` picks; what was removed (a table still being created is left for the next run)."""
    c = aws.client("dynamodb", system.region)
    removed = []
    for name in aws.paginate(c, "list_tables", "TableNames"):
        if is_copy(name):
            try:
                c.delete_table(TableName=name)
                removed.append(f"table {name}")
            except Exception as exc:
                if aws.error_code(exc) != "ResourceInUseException":  # still being created: the next run removes it
                    raise
    return removed
