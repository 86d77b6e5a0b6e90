"""DynamoDB: tables ACTIVE, items created yesterday, recent backups."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.components import judge_backup, judge_created, judge_table
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task, declares
from opsbook.inventory import DynamoTable, System
from opsbook.mutation.core import Applier, Identity, Plan, undo_plan
from opsbook.resources import Discovered
from opsbook.snapshots import iso_utc
from tasks.autoscaling import BOUNDS_KIND, ScalableTarget, describe_targets, table_resource_ids
from tasks.cloudwatch import as_utc


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


# --- capacity: modes, units, and AWS's limits on changing them ----------------------------------
#
# ``read_capacity``/``set_capacity`` are the ``Applier`` of ``CAPACITY_KIND`` on a table: the whole
# capacity state as one string, ``PAY_PER_REQUEST`` or ``PROVISIONED r=5 w=5; byEmail r=5 w=5`` (table
# first, then every GSI by name). One UpdateTable puts a table there: a mode switch carries every GSI's
# throughput (AWS requires it when going to PROVISIONED), a capacity change sends only what differs (AWS
# refuses an "update" to the current value).
#
# AWS limits (DynamoDB developer guide, "Considerations when switching capacity modes" and "Quotas"):
# - provisioned -> on-demand: at most 4 switches in a rolling 24 h window (it was once a day before);
#   DescribeTable shows only the last one (``BillingModeSummary.LastUpdateToPayPerRequestDateTime``), so
#   opsbook does not switch a table again within 24 h of that time. On-demand -> provisioned: any time.
# - decreases of provisioned capacity: 4 a UTC day at any time, then one more each hour without a
#   decrease in the hour before (27 a day at most); read from ``NumberOfDecreasesToday`` and
#   ``LastDecreaseDateTime``.
# - per table (and each GSI) 40,000 read and 40,000 write units by default: the inventory's
#   ``remediation.dynamodb_max_capacity_units`` bounds every proposal.

CAPACITY_KIND = "dynamodb-capacity"
CAPACITY_IAM = "dynamodb:UpdateTable"
ON_DEMAND, PROVISIONED = "PAY_PER_REQUEST", "PROVISIONED"
SWITCH_WINDOW = timedelta(hours=24)
FREE_DECREASES_A_DAY = 4
MAX_DECREASES_A_DAY = 27


class IndexCapacity(BaseModel):
    name: str
    status: str = "ACTIVE"
    read: int = 0
    write: int = 0


class TableCapacity(BaseModel):
    table: str
    status: str
    mode: str
    read: int = 0
    write: int = 0
    indexes: list[IndexCapacity] = Field(default_factory=list)
    last_to_on_demand: datetime | None = None
    last_increase: datetime | None = None
    last_decrease: datetime | None = None
    decreases_today: int = 0
    on_demand_max_read: int | None = None
    on_demand_max_write: int | None = None

    @property
    def value(self) -> str:
        return capacity_value(self.mode, self.read, self.write, {i.name: (i.read, i.write) for i in self.indexes})

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE" and all(i.status == "ACTIVE" for i in self.indexes)

    def units(self, index: str | None, dim: str) -> int:
        if index is None:
            return self.read if dim == "read" else self.write
        ix = next(i for i in self.indexes if i.name == index)
        return ix.read if dim == "read" else ix.write


def capacity_value(mode: str, read: int, write: int, indexes: dict[str, tuple[int, int]]) -> str:
    if mode == ON_DEMAND:
        return ON_DEMAND
    parts = [f"{PROVISIONED} r={read} w={write}"] + [f"{n} r={r} w={w}" for n, (r, w) in sorted(indexes.items())]
    return "; ".join(parts)


_PART = re.compile(r"^(?P<name>\S+) r=(?P<r>\d+) w=(?P<w>\d+)$")


def parse_capacity(value: str) -> tuple[str, tuple[int, int] | None, dict[str, tuple[int, int]]]:
    """``capacity_value``'s inverse: (mode, (read, write) of the table, {index: (read, write)})."""
    if value == ON_DEMAND:
        return ON_DEMAND, None, {}
    parts = [p.strip() for p in value.split(";")]
    out: list[tuple[str, tuple[int, int]]] = []
    for p in parts:
        m = _PART.match(p)
        if not m:
            raise ValueError(f"not a capacity value: {value!r} (expected 'PAY_PER_REQUEST' or 'PROVISIONED r=N w=N; INDEX r=N w=N')")
        out.append((m["name"], (int(m["r"]), int(m["w"]))))
    if out[0][0] != PROVISIONED:
        raise ValueError(f"not a capacity value: {value!r}")
    return PROVISIONED, out[0][1], dict(out[1:])


def table_capacity(desc: dict[str, Any]) -> TableCapacity:
    """A DescribeTable answer as a TableCapacity (pure). No BillingModeSummary means PROVISIONED (tables made before it existed)."""
    t = desc["Table"]
    bms = t.get("BillingModeSummary") or {}
    mode = bms.get("BillingMode") or PROVISIONED
    pt = t.get("ProvisionedThroughput") or {}
    odt = t.get("OnDemandThroughput") or {}
    provisioned = mode != ON_DEMAND
    idx = [IndexCapacity(name=g["IndexName"], status=g.get("IndexStatus", "ACTIVE"),
                         read=int(g.get("ProvisionedThroughput", {}).get("ReadCapacityUnits", 0)) if provisioned else 0,
                         write=int(g.get("ProvisionedThroughput", {}).get("WriteCapacityUnits", 0)) if provisioned else 0)
           for g in t.get("GlobalSecondaryIndexes") or []]
    return TableCapacity(
        table=t["TableName"], status=t.get("TableStatus", "?"), mode=mode,
        read=int(pt.get("ReadCapacityUnits", 0)) if provisioned else 0, write=int(pt.get("WriteCapacityUnits", 0)) if provisioned else 0,
        indexes=sorted(idx, key=lambda i: i.name), last_to_on_demand=as_utc(bms.get("LastUpdateToPayPerRequestDateTime")),
        last_increase=as_utc(pt.get("LastIncreaseDateTime")), last_decrease=as_utc(pt.get("LastDecreaseDateTime")),
        decreases_today=int(pt.get("NumberOfDecreasesToday") or 0),
        on_demand_max_read=(odt.get("MaxReadRequestUnits") if (odt.get("MaxReadRequestUnits") or -1) > 0 else None),
        on_demand_max_write=(odt.get("MaxWriteRequestUnits") if (odt.get("MaxWriteRequestUnits") or -1) > 0 else None),
    )


@declares(["dynamodb:DescribeTable"])
def describe_capacity(system: System, table: str) -> TableCapacity:
    return table_capacity(aws.client("dynamodb", system.region).describe_table(TableName=table))


@declares(["dynamodb:DescribeTable"])
def capacity_settled(system: System, table: str, target: str) -> tuple[bool, str]:
    """The table (and its GSIs) ACTIVE with the target capacity: the settled check of the capacity step."""
    cap = describe_capacity(system, table)
    gsis = ", ".join(f"{i.name} {i.status}" for i in cap.indexes)
    return cap.active and cap.value == target, f"{cap.status}{' (GSIs ' + gsis + ')' if gsis else ''}: {cap.value}"


@declares(["dynamodb:DescribeTable"])
def read_capacity(system: System, table: str) -> str:
    return describe_capacity(system, table).value


@declares(["dynamodb:DescribeTable", "dynamodb:UpdateTable"])
def set_capacity(system: System, table: str, value: str) -> None:
    """Put the table at ``value`` with one UpdateTable (idempotent: a table already there is left alone)."""
    cur = describe_capacity(system, table)
    if cur.value == value:
        return
    mode, units, indexes = parse_capacity(value)
    c = aws.client("dynamodb", system.region)
    if mode == ON_DEMAND:
        c.update_table(TableName=table, BillingMode=ON_DEMAND)
        return
    assert units is not None
    have = {i.name for i in cur.indexes}
    if set(indexes) != have:
        raise ValueError(f"{table}: its GSIs are now {sorted(have)}, the capacity to set names {sorted(indexes)}; plan again")
    switching = cur.mode == ON_DEMAND
    kwargs: dict[str, Any] = {}
    if switching:
        kwargs["BillingMode"] = PROVISIONED
    if switching or (cur.read, cur.write) != units:
        kwargs["ProvisionedThroughput"] = {"ReadCapacityUnits": units[0], "WriteCapacityUnits": units[1]}
    updates = [{"Update": {"IndexName": n, "ProvisionedThroughput": {"ReadCapacityUnits": r, "WriteCapacityUnits": w}}}
               for n, (r, w) in sorted(indexes.items()) if switching or (cur.units(n, "read"), cur.units(n, "write")) != (r, w)]
    if updates:
        kwargs["GlobalSecondaryIndexUpdates"] = updates
    c.update_table(TableName=table, **kwargs)


def switch_blocked_until(cap: TableCapacity, now: datetime) -> datetime | None:
    """When a switch to on-demand becomes possible again (None: possible now)."""
    if cap.last_to_on_demand and now - cap.last_to_on_demand < SWITCH_WINDOW:
        return cap.last_to_on_demand + SWITCH_WINDOW
    return None


def decrease_blocked_until(cap: TableCapacity, now: datetime) -> datetime | None:
    """When one more decrease of provisioned capacity is allowed (None: allowed now)."""
    last = cap.last_decrease
    same_day = last is not None and last.date() == now.date()
    done = cap.decreases_today if same_day or last is None else 0
    if done < FREE_DECREASES_A_DAY:
        return None
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    if done >= MAX_DECREASES_A_DAY:
        return tomorrow
    if last is not None and now - last < timedelta(hours=1):
        return min(last + timedelta(hours=1), tomorrow)
    return None


def is_decrease(current: str, target: str) -> bool:
    """Does going from ``current`` to ``target`` lower any provisioned unit (a switch to PROVISIONED is not a decrease)?"""
    cm, cu, ci = parse_capacity(current)
    tm, tu, ti = parse_capacity(target)
    if cm == ON_DEMAND or tm == ON_DEMAND:
        return False
    assert cu is not None and tu is not None
    pairs = [(cu, tu)] + [(ci[n], ti[n]) for n in ci if n in ti]
    return any(t[0] < c[0] or t[1] < c[1] for c, t in pairs)


def undo_within_limits(plan: Plan, describe: Callable[[str], TableCapacity], now: datetime) -> Plan:
    """An undo plan's capacity actions within AWS's limits (pure but for ``describe``, read only when a limit applies):
    a decrease or a switch to on-demand AWS would refuse now moves to ``cannot`` with the time it becomes possible."""
    keep = []
    for a in plan.actions:
        if a.kind == CAPACITY_KIND and a.target == ON_DEMAND:
            when = switch_blocked_until(describe(a.resource), now)
            if when is not None:
                plan.cannot.append(f"{a.resource}: undo switches it to on-demand, which AWS allows 4 times in 24 h; the last switch was "
                                   f"less than 24 h ago: possible at {when.isoformat(timespec='minutes')}")
                continue
        elif a.kind == CAPACITY_KIND and is_decrease(a.current, a.target):
            when = decrease_blocked_until(describe(a.resource), now)
            if when is not None:
                plan.cannot.append(f"{a.resource}: undo lowers provisioned capacity and the table has used its decreases for now "
                                   f"(AWS: 4 a UTC day, then one an hour): possible at {when.isoformat(timespec='minutes')}")
                continue
            a = a.model_copy(update={"evidence": a.evidence + "; a decrease (AWS allows 4 a UTC day, then one an hour)"})
        elif a.kind == CAPACITY_KIND:
            a = a.model_copy(update={"evidence": a.evidence + "; back to PROVISIONED with the earlier capacities (allowed any time)"})
        elif a.kind == BOUNDS_KIND:
            a = a.model_copy(update={"evidence": a.evidence + "; auto scaling moves the capacity into the old bounds by its own policy"})
        keep.append(a)
    plan.actions = keep
    return plan


def undo_capacity_plan(system: System, runbook: str, identity: Identity, records: list[dict[str, Any]], run_id: str,
                       appliers: dict[str, Applier], iam: dict[str, str]) -> Plan:
    """``undo_plan`` of an earlier run, then AWS's limits on capacity changes (``undo_within_limits``).
    Call inside a task that declares the reads (DescribeTable, and what the appliers read)."""
    plan = undo_plan(system, runbook, identity, records, run_id, appliers, iam)
    return undo_within_limits(plan, lambda table: describe_capacity(system, table), datetime.now(timezone.utc))


@aws_task(iam=["dynamodb:DescribeTable"], name="read-table-capacity", cache_policy=NO_CACHE)
def read_capacities(system: System, names: list[str], deadline: aws.Deadline) -> dict[str, TableCapacity | str]:
    """Table -> TableCapacity, or the error (text) that prevented reading it (``missing: ...`` when it does not exist)."""
    out: dict[str, TableCapacity | str] = {}
    for name, cap, err in aws.parallel(lambda n: describe_capacity(system, n), names, deadline=deadline):
        if err is None:
            out[name] = cap
        elif aws.is_not_found(err):
            out[name] = f"missing: {name} does not exist in {system.region}" + (" (named in the inventory)" if any(t.name == name for t in system.dynamodb_tables) else "")
        else:
            out[name] = aws.describe_error(err)
    return out


class TableState(BaseModel):
    table: str
    capacity: TableCapacity
    targets: dict[str, ScalableTarget]


@aws_task(iam=["dynamodb:DescribeTable", "application-autoscaling:DescribeScalableTargets"], name="read-table-scaling", cache_policy=NO_CACHE)
def read_table_scaling(system: System, table: str) -> TableState:
    """The table's capacity and the auto scaling targets of the table and its GSIs."""
    cap = describe_capacity(system, table)
    return TableState(table=table, capacity=cap,
                      targets=describe_targets(system, "dynamodb", table_resource_ids(table, [i.name for i in cap.indexes])))


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


@declares(["dynamodb:DescribeContinuousBackups"])
def read_pitr(system: System, table: str) -> str:
    d = aws.client("dynamodb", system.region).describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    return d.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus", "DISABLED")


@declares(["dynamodb:UpdateContinuousBackups"])
def set_pitr(system: System, table: str, value: str) -> None:
    aws.client("dynamodb", system.region).update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": value == "ENABLED"})


@declares(["dynamodb:ListBackups", "dynamodb:DescribeContinuousBackups"])
def read_latest_backup(system: System, table: str) -> str:
    """The newest AVAILABLE backup's creation time (ISO, UTC), or "none"."""
    return iso_utc(read_backups(system, DynamoTable(name=table), datetime.now(timezone.utc))["latest_backup"])


@declares(["dynamodb:CreateBackup"])
def take_backup(system: System, table: str, name: str) -> None:
    aws.client("dynamodb", system.region).create_backup(TableName=table, BackupName=name)


@declares(["dynamodb:ListBackups"])
def backup_status(system: System, table: str, name: str) -> str | None:
    """The status of the table's backup with this name (None: no such backup)."""
    c = aws.client("dynamodb", system.region)
    since = datetime.now(timezone.utc) - timedelta(days=1)
    for b in aws.paginate(c, "list_backups", "BackupSummaries", TableName=table, TimeRangeLowerBound=since, BackupType="USER"):
        if b.get("BackupName") == name:
            return b.get("BackupStatus")
    return None


@declares(["dynamodb:ListBackups"])
def backup_settled(system: System, table: str, name: str) -> tuple[bool, str]:
    """The on-demand backup ``name`` is AVAILABLE: the settled check of the backup step."""
    status = backup_status(system, table, name)
    return status == "AVAILABLE", f"backup {name} {status or 'not found'}"


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


# --- a case store's evidence (reindex-case; the case's status is in its SQL database: tasks/cases_db.py). Plain
# functions: the calling task declares dynamodb:Query.

import base64  # noqa: E402  (this section is appended)
from collections.abc import Iterator  # noqa: E402
from decimal import Decimal  # noqa: E402

from boto3.dynamodb.types import Binary, TypeDeserializer  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from opsbook.inventory import CaseStore  # noqa: E402

_deserializer = TypeDeserializer()


def plain(value: Any) -> Any:
    """A deserialized DynamoDB value as plain JSON (numbers, lists, base64 for binary)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (Binary, bytes, bytearray)):
        return base64.b64encode(bytes(value.value if isinstance(value, Binary) else value)).decode()
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=lambda v: (str(type(v)), v))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def to_document(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item (DynamoDB JSON) as a plain JSON document."""
    return {k: plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _by_case(store: CaseStore, case_id: str) -> dict[str, Any]:
    return dict(TableName=store.evidence_table, KeyConditionExpression="#k = :c", ExpressionAttributeNames={"#k": store.case_key},
                ExpressionAttributeValues={":c": {"S": case_id}}, ConsistentRead=True)


def evidence(system: System, store: CaseStore, case_id: str, page_size: int) -> Iterator[dict[str, Any]]:
    """Every evidence item of the case as a plain document (Query on the partition key, every page of ``page_size``)."""
    for item in aws.paginate(aws.client("dynamodb", system.region), "query", "Items", **_by_case(store, case_id),
                             PaginationConfig={"PageSize": page_size}):
        yield to_document(item)


def count_evidence(system: System, store: CaseStore, case_id: str) -> int:
    """How many evidence items the case has (Query on the partition key, Select=COUNT, every page).

    Pages by hand: ``aws.paginate`` yields list items and ``Count`` is a number per page."""
    c = aws.client("dynamodb", system.region)
    return sum(page.get("Count", 0) for page in c.get_paginator("query").paginate(**_by_case(store, case_id), Select="COUNT"))


@aws_task(iam=["dynamodb:Query"], name="read-case-evidence", cache_policy=NO_CACHE)
def read_evidence(system: System, store: CaseStore, case_id: str) -> int:
    """How many evidence items the case has: all the plan needs; the rebuild reads the items themselves, fresh."""
    return count_evidence(system, store, case_id)


# --- the per-case circuit breaker table (bill-shock-breaker, dlq-redrive) ---------------------------------
# Table ``bill_shock.breaker_table``: partition key ``case_id``; ``state`` is OPEN, HALF_OPEN or CLOSED, with
# ``reason``, ``tokens``, ``changed_at``, ``changed_by``, ``run``. A case without an item is CLOSED. Every write is
# conditional, so writing twice is harmless and two runs never overwrite each other blindly. The AI worker reads
# it through flows/bill_shock_breaker/breaker_client.py (no opsbook imports).


BREAKER_OPEN, BREAKER_HALF_OPEN, BREAKER_CLOSED = "OPEN", "HALF_OPEN", "CLOSED"


def _breaker_table(system: System) -> str:
    if system.bill_shock is None:
        raise ValueError(f"{system.name} has no bill_shock section in its inventory")
    return system.bill_shock.breaker_table


def _plain_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: next(iter(v.values())) for k, v in item.items()}


@declares(["dynamodb:BatchGetItem"])
def read_breakers(system: System, case_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The item of each case that has one (cases without one are CLOSED). 100 keys a call."""
    table = _breaker_table(system)
    c = aws.client("dynamodb", system.region)
    out: dict[str, dict[str, Any]] = {}
    ids = sorted(set(case_ids))
    for i in range(0, len(ids), 100):
        request: dict[str, Any] = {table: {"Keys": [{"case_id": {"S": cid}} for cid in ids[i : i + 100]], "ConsistentRead": True}}
        for _ in range(8):
            res = c.batch_get_item(RequestItems=request)
            for item in res.get("Responses", {}).get(table, []):
                out[item["case_id"]["S"]] = _plain_item(item)
            request = res.get("UnprocessedKeys") or {}
            if not request:
                break
        if request:
            raise RuntimeError(f"BatchGetItem left {len(request[table]['Keys'])} keys unprocessed after 8 tries (throttled)")
    return out


@declares(["dynamodb:UpdateItem"])
def set_breaker_state(system: System, case_id: str, state: str, *, reason: str, by: str, run: str, tokens: int | None = None,
                      only_if: tuple[str, ...] | None = None) -> bool:
    """Set a case's breaker state. Returns False (and changes nothing) when it already is ``state``
    or, with ``only_if``, when its current state is not one of those."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    names = {"#s": "state"}
    values: dict[str, Any] = {":s": {"S": state}, ":r": {"S": reason[:500]}, ":t": {"S": now}, ":b": {"S": by}, ":run": {"S": run}}
    cond = "attribute_not_exists(#s) OR #s <> :s"
    if only_if:
        allowed = [f":o{i}" for i in range(len(only_if))]
        values.update({f":o{i}": {"S": s} for i, s in enumerate(only_if)})
        cond = f"({cond}) AND (#s IN ({', '.join(allowed)})" + (" OR attribute_not_exists(#s))" if BREAKER_CLOSED in only_if else ")")
    update = "SET #s = :s, reason = :r, changed_at = :t, changed_by = :b, #run = :run"
    names["#run"] = "run"
    if tokens is not None:
        update += ", tokens = :tok"
        values[":tok"] = {"N": str(int(tokens))}
    try:
        aws.client("dynamodb", system.region).update_item(
            TableName=_breaker_table(system), Key={"case_id": {"S": case_id}}, UpdateExpression=update,
            ConditionExpression=cond, ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        return True
    except Exception as exc:
        if aws.error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise


@declares(["dynamodb:Query", "dynamodb:Scan"])
def open_breakers(system: System) -> dict[str, dict[str, Any]]:
    """Every case whose breaker is OPEN or HALF_OPEN (a filtered scan over all pages)."""
    c = aws.client("dynamodb", system.region)
    out = {}
    for page in c.get_paginator("scan").paginate(
        TableName=_breaker_table(system), FilterExpression="#s IN (:o, :h)", ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":o": {"S": BREAKER_OPEN}, ":h": {"S": BREAKER_HALF_OPEN}}, ConsistentRead=True,
    ):
        for item in page["Items"]:
            out[item["case_id"]["S"]] = _plain_item(item)
    return out


@aws_task(iam=["dynamodb:BatchGetItem"], name="read-case-breakers", cache_policy=NO_CACHE)
def read_case_breakers(system: System, case_ids: list[str]) -> dict[str, str]:
    """case -> breaker state, for the cases that have a breaker item (others are CLOSED)."""
    if not case_ids:
        return {}
    return {c: str(item.get("state", BREAKER_CLOSED)) for c, item in read_breakers(system, case_ids).items()}


@aws_task(iam=["dynamodb:BatchGetItem", "dynamodb:Scan"], name="read-breakers", cache_policy=NO_CACHE)
def read_breaker_states(system: System, case_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The breaker items of ``case_ids`` plus every OPEN / HALF_OPEN one."""
    states = read_breakers(system, case_ids)
    states.update(open_breakers(system))
    return states


@declares(["dynamodb:GetItem"])
def item_exists(system: System, table: str, key: dict[str, str]) -> bool:
    """Whether ``table`` holds the item of ``key`` (string key attributes; a consistent read of the keys only)."""
    names = {f"#k{i}": a for i, a in enumerate(key)}
    item = aws.client("dynamodb", system.region).get_item(TableName=table, Key={a: {"S": v} for a, v in key.items()}, ConsistentRead=True,
                                                          ProjectionExpression=", ".join(names), ExpressionAttributeNames=names).get("Item")
    return item is not None


# --- restore-table: a restored copy (tagged with its source and restore point), its items, its settings. Plain functions:
# the calling task or step declares their IAM actions.


class TableCopy(BaseModel):
    name: str
    exists: bool = False
    status: str | None = None
    arn: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)  # read only once ACTIVE (DynamoDB refuses ListTagsOfResource while CREATING)
    restore_at: datetime | None = None  # RestoreSummary.RestoreDateTime: the time its data is as of
    created: float | None = None  # CreationDateTime (epoch): when its restore started


@declares(["dynamodb:DescribeTable", "dynamodb:ListTagsOfResource"])
def read_table_copy(system: System, name: str) -> TableCopy:
    c = aws.client("dynamodb", system.region)
    try:
        desc = c.describe_table(TableName=name)["Table"]
    except ClientError as exc:
        if aws.error_code(exc) == "ResourceNotFoundException":
            return TableCopy(name=name)
        raise
    status = desc.get("TableStatus")
    tags = ({t["Key"]: t["Value"] for t in aws.paginate(c, "list_tags_of_resource", "Tags", ResourceArn=desc["TableArn"])}
            if status == "ACTIVE" else {})
    created = desc.get("CreationDateTime")
    return TableCopy(name=name, exists=True, status=status, arn=desc["TableArn"], tags=tags,
                     restore_at=(desc.get("RestoreSummary") or {}).get("RestoreDateTime"),
                     created=created.timestamp() if isinstance(created, datetime) else None)


@declares(["dynamodb:DescribeBackup", "dynamodb:DescribeContinuousBackups"])
def restore_point_facts(system: System, table: str, arn: str | None) -> dict[str, Any]:
    """A backup's creation time, item count and source table; or the table's PITR status and latest restorable time."""
    c = aws.client("dynamodb", system.region)
    if arn:
        d = c.describe_backup(BackupArn=arn)["BackupDescription"]
        det, src = d["BackupDetails"], d.get("SourceTableDetails", {})
        return {"at": det["BackupCreationDateTime"], "status": det.get("BackupStatus"), "item_count": src.get("ItemCount"),
                "source": src.get("TableName")}
    pitr = c.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"].get("PointInTimeRecoveryDescription", {})
    return {"status": pitr.get("PointInTimeRecoveryStatus", "DISABLED"), "at": pitr.get("LatestRestorableDateTime"),
            "earliest": pitr.get("EarliestRestorableDateTime")}


@declares(["dynamodb:RestoreTableFromBackup", "dynamodb:RestoreTableToPointInTime", "dynamodb:TagResource"])
def start_table_restore(system: System, table: str, copy: str, arn: str | None, at: datetime | None) -> str:
    """Restore into ``copy`` (a backup ARN, a time, else the latest restorable time); its ARN. Not tagged here: DynamoDB
    refuses TagResource while the table is CREATING (``tag_table`` once it is ACTIVE)."""
    c = aws.client("dynamodb", system.region)
    if arn:
        res = c.restore_table_from_backup(TargetTableName=copy, BackupArn=arn)
    elif at is not None:
        res = c.restore_table_to_point_in_time(SourceTableName=table, TargetTableName=copy, RestoreDateTime=at)
    else:
        res = c.restore_table_to_point_in_time(SourceTableName=table, TargetTableName=copy, UseLatestRestorableTime=True)
    return res["TableDescription"]["TableArn"]


@declares(["dynamodb:DescribeTable", "dynamodb:TagResource"])
def tag_table(system: System, table: str, tags: dict[str, str]) -> None:
    c = aws.client("dynamodb", system.region)
    arn = c.describe_table(TableName=table)["Table"]["TableArn"]
    c.tag_resource(ResourceArn=arn, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])


@declares(["dynamodb:DescribeTable"])
def wait_table_active(system: System, table: str, copy: str, timeout_s: float, label: str) -> str | None:
    c = aws.client("dynamodb", system.region)
    return wait_active(c, table, copy, c.describe_table(TableName=copy)["Table"].get("TableStatus"), time.monotonic(), timeout_s, label)


@declares(["dynamodb:DescribeTable"])
def key_names(system: System, table: str) -> list[str]:
    schema = aws.client("dynamodb", system.region).describe_table(TableName=table)["Table"]["KeySchema"]
    return [k["AttributeName"] for k in sorted(schema, key=lambda k: k["KeyType"] != "HASH")]


@declares(["dynamodb:Scan"])
def scan_items(system: System, table: str) -> list[dict[str, Any]]:
    """Every item of the table (a consistent scan)."""
    c = aws.client("dynamodb", system.region)
    return [it for page in c.get_paginator("scan").paginate(TableName=table, ConsistentRead=True) for it in page["Items"]]


@declares(["dynamodb:BatchGetItem"])
def get_items(system: System, table: str, keys: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """The items of ``keys`` (consistent reads), in their order; None where there is none."""
    c = aws.client("dynamodb", system.region)
    got: list[dict[str, Any]] = []
    for i in range(0, len(keys), 100):
        req: dict[str, Any] = {table: {"Keys": keys[i: i + 100], "ConsistentRead": True}}
        while req:
            r = c.batch_get_item(RequestItems=req)
            got += r["Responses"].get(table, [])
            req = r.get("UnprocessedKeys") or {}
    names = list(keys[0]) if keys else []

    def text(key: dict[str, Any]) -> str:  # binary key values as base64
        return json.dumps(key, sort_keys=True, default=lambda b: base64.b64encode(b).decode())

    by = {text({k: it[k] for k in names}): it for it in got}
    return [by.get(text(k)) for k in keys]


def _equals(image: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    names = {f"#a{i}": a for i, a in enumerate(sorted(image))}
    values = {f":v{i}": image[a] for i, a in enumerate(sorted(image))}
    return " AND ".join(f"#a{i} = :v{i}" for i in range(len(image))), names, values


@declares(["dynamodb:PutItem", "dynamodb:DeleteItem"])
def write_item_if(system: System, table: str, key: dict[str, Any], image: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    """Put ``image`` (None: delete the item) only while the live item is still ``expected`` (None: there is none):
    ConditionalCheckFailedException otherwise, and nothing is written."""
    c = aws.client("dynamodb", system.region)
    if expected is None:
        names = {f"#k{i}": k for i, k in enumerate(key)}
        cond: dict[str, Any] = {"ConditionExpression": " AND ".join(f"attribute_not_exists(#k{i})" for i in range(len(key))),
                                "ExpressionAttributeNames": names}
    else:
        expr, names, values = _equals(expected)
        cond = {"ConditionExpression": expr, "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}
    if image is None:
        c.delete_item(TableName=table, Key=key, **cond)
    else:
        c.put_item(TableName=table, Item=image, **cond)


@declares(["dynamodb:DescribeTimeToLive", "dynamodb:DescribeTable", "dynamodb:DescribeContinuousBackups", "dynamodb:ListTagsOfResource"])
def read_table_setting(system: System, table: str, setting: str) -> str:
    """A setting a restore does not bring, as a value: ttl (off | attribute NAME), stream (off | its view type),
    pitr (ENABLED | DISABLED), tags (JSON, without opsbook's restore tags)."""
    c = aws.client("dynamodb", system.region)
    if setting == "ttl":
        d = c.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
        return f"attribute {d['AttributeName']}" if d.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and d.get("AttributeName") else "off"
    if setting == "stream":
        s = c.describe_table(TableName=table)["Table"].get("StreamSpecification") or {}
        return s.get("StreamViewType", "off") if s.get("StreamEnabled") else "off"
    if setting == "pitr":
        return read_pitr(system, table)
    arn = c.describe_table(TableName=table)["Table"]["TableArn"]
    tags = {t["Key"]: t["Value"] for t in aws.paginate(c, "list_tags_of_resource", "Tags", ResourceArn=arn)}
    return json.dumps({k: v for k, v in tags.items() if not k.startswith("opsbook:restore-")}, sort_keys=True)


@declares(["dynamodb:UpdateTimeToLive", "dynamodb:UpdateTable", "dynamodb:UpdateContinuousBackups", "dynamodb:TagResource",
           "dynamodb:DescribeTable"])
def set_table_setting(system: System, table: str, setting: str, value: str) -> None:
    c = aws.client("dynamodb", system.region)
    if setting == "ttl":
        now = read_table_setting(system, table, "ttl")
        attr = value.removeprefix("attribute ") if value != "off" else now.removeprefix("attribute ")
        if now != value and attr != "off":
            c.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": value != "off", "AttributeName": attr})
    elif setting == "stream":
        spec = {"StreamEnabled": False} if value == "off" else {"StreamEnabled": True, "StreamViewType": value}
        c.update_table(TableName=table, StreamSpecification=spec)
    elif setting == "pitr":
        set_pitr(system, table, value)
    else:
        arn = c.describe_table(TableName=table)["Table"]["TableArn"]
        c.tag_resource(ResourceArn=arn, Tags=[{"Key": k, "Value": v} for k, v in json.loads(value).items()])


@declares(["dynamodb:DeleteTable"])
def delete_table(system: System, table: str) -> None:
    try:
        aws.client("dynamodb", system.region).delete_table(TableName=table)
    except ClientError as exc:
        if aws.error_code(exc) != "ResourceNotFoundException":
            raise
