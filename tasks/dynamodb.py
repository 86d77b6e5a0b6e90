"""DynamoDB: tables ACTIVE, items created yesterday, recent backups."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.components import judge_backup, judge_created, judge_table
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task
from opsbook.inventory import DynamoTable, System
from opsbook.resources import Discovered

def table_names(system: System, found: Discovered) -> list[str]:
    names = [t.name for t in system.dynamodb_tables]
    return names + [n for n in found.dynamodb_tables if n not in names]


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


def read_backups(system: System, table: DynamoTable, now: datetime) -> dict[str, Any]:
    c = aws.client("dynamodb", system.region)
    cont = c.describe_continuous_backups(TableName=table.name)["ContinuousBackupsDescription"]
    pitr = cont.get("PointInTimeRecoveryDescription", {})
    backups = list(aws.paginate(c, "list_backups", "BackupSummaries", TableName=table.name,
                                TimeRangeLowerBound=now - timedelta(days=35), BackupType="ALL"))
    latest = max((b["BackupCreationDateTime"] for b in backups if b.get("BackupStatus") == "AVAILABLE"), default=None)
    return {"pitr": pitr.get("PointInTimeRecoveryStatus"), "latest_restorable": pitr.get("LatestRestorableDateTime"), "latest_backup": latest}


@aws_task(iam=["dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:DescribeContinuousBackups", "dynamodb:ListBackups"], cache_policy=NO_CACHE)
def check_tables(system: System, found: Discovered, deadline: aws.Deadline) -> list[Finding]:
    c = aws.client("dynamodb", system.region)
    named = {t.name for t in system.dynamodb_tables}
    results = aws.parallel(lambda n: c.describe_table(TableName=n), table_names(system, found), deadline=deadline)
    findings = [judge_table(n, d, n in named, aws.unreadable(e)) for n, d, e in results]
    active = {f.resource for f in findings if f.status is Status.OK}
    now = datetime.now(timezone.utc)
    counted = [t for t in system.dynamodb_tables if t.created_at_attribute and t.name in active]
    for t, n, e in aws.parallel(lambda t: count_created_yesterday(system, t), counted, deadline=deadline):
        findings.append(judge_created(system, t, n, aws.unreadable(e, missing_ok=False), now))
    backed = [t for t in system.dynamodb_tables if t.backup_required and t.name in active]
    for t, info, e in aws.parallel(lambda t: read_backups(system, t, now), backed, deadline=deadline):
        findings.append(judge_backup(t, info, aws.unreadable(e, missing_ok=False), now))
    return findings


class DistinctCount(BaseModel):
    """Distinct values of one attribute over a whole table, or why they could not be counted."""

    table: str
    attribute: str
    items: int = 0
    distinct: int = 0
    error: str | None = None


@aws_task(iam=["dynamodb:Scan"], cache_policy=NO_CACHE)
def count_distinct_users(system: System) -> list[DistinctCount]:
    """Distinct values of each table's ``user_attribute``: a projected Scan over every page (seed 001 사용자 수)."""
    out = []
    c = aws.client("dynamodb", system.region)
    for t in system.dynamodb_tables:
        if not t.user_attribute:
            continue
        users: set[str] = set()
        items = 0
        try:
            for item in aws.paginate(c, "scan", "Items", TableName=t.name, ProjectionExpression="#u", ExpressionAttributeNames={"#u": t.user_attribute}):
                items += 1
                v = item.get(t.user_attribute)
                if v:
                    users.add(str(next(iter(v.values()))))
        except Exception as exc:  # the count is unknown, with the reason
            out.append(DistinctCount(table=t.name, attribute=t.user_attribute, error=aws.describe_error(exc)))
            continue
        out.append(DistinctCount(table=t.name, attribute=t.user_attribute, items=items, distinct=len(users)))
    return out
