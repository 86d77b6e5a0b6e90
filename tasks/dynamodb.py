"""DynamoDB: tables ACTIVE, items created yesterday, recent backups."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import DynamoTable, System
from opsbook.resources import Discovered

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


# --- a case store's items (reindex-case): the case's status, its evidence. Plain functions: the calling task
# declares dynamodb:GetItem / Query / UpdateItem.

import base64  # noqa: E402  (this section is appended)
from collections.abc import Iterator  # noqa: E402
from decimal import Decimal  # noqa: E402

from boto3.dynamodb.types import Binary, TypeDeserializer  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from opsbook.inventory import CaseStore  # noqa: E402

NO_STATUS = "(none)"  # the case item has no status attribute
NO_CASE = "(no such case)"
_deserializer = TypeDeserializer()


class StatusChanged(RuntimeError):
    """The conditional status update found another value than the one planned."""


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


def read_status(system: System, store: CaseStore, case_id: str) -> str | None:
    """The case's status (NO_STATUS when it has none); None when there is no such case."""
    item = aws.client("dynamodb", system.region).get_item(
        TableName=store.cases_table, Key={store.case_key: {"S": case_id}}, ConsistentRead=True, ProjectionExpression="#k, #s",
        ExpressionAttributeNames={"#k": store.case_key, "#s": store.status_attribute}).get("Item")
    if item is None:
        return None
    if store.status_attribute not in item:
        return NO_STATUS
    return str(to_document({"s": item[store.status_attribute]})["s"])


def set_status(system: System, store: CaseStore, case_id: str, expected: str, value: str) -> None:
    """Set the status, only if it still is ``expected`` (else StatusChanged, saying what it is now)."""
    names = {"#k": store.case_key, "#s": store.status_attribute}
    values: dict[str, Any] = {":to": {"S": value}}
    if expected == NO_STATUS:
        condition = "attribute_exists(#k) AND attribute_not_exists(#s)"
    else:
        condition = "attribute_exists(#k) AND #s = :from"
        values[":from"] = {"S": expected}
    try:
        aws.client("dynamodb", system.region).update_item(
            TableName=store.cases_table, Key={store.case_key: {"S": case_id}}, UpdateExpression="SET #s = :to",
            ConditionExpression=condition, ExpressionAttributeNames=names, ExpressionAttributeValues=values)
    except ClientError as exc:
        if aws.error_code(exc) != "ConditionalCheckFailedException":
            raise
        now = read_status(system, store, case_id)
        raise StatusChanged(f"{store.cases_table}/{case_id} was {expected} when planned and is now {now or NO_CASE} "
                            f"(changed by someone else); it was not set to {value}") from None


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


@aws_task(iam=["dynamodb:GetItem"], name="read-case", cache_policy=NO_CACHE)
def read_case(system: System, store: CaseStore, case_id: str) -> str | None:
    return read_status(system, store, case_id)


@aws_task(iam=["dynamodb:Query"], name="read-case-evidence", cache_policy=NO_CACHE)
def read_evidence(system: System, store: CaseStore, case_id: str) -> int:
    """How many evidence items the case has: all the plan needs; the rebuild reads the items themselves, fresh."""
    return count_evidence(system, store, case_id)


# --- the per-case circuit breaker table (bill-shock-breaker, dlq-redrive) ---------------------------------
# Table ``bill_shock.breaker_table``: partition key ``case_id``; ``state`` is OPEN, HALF_OPEN or CLOSED, with
# ``reason``, ``tokens``, ``changed_at``, ``changed_by``, ``run``. A case without an item is CLOSED. Every write is
# conditional, so writing twice is harmless and two runs never overwrite each other blindly. The AI worker reads
# it through flows/bill_shock_breaker/breaker_client.py (no opsbook imports).

from opsbook.iam import declares  # noqa: E402  (this section is appended)

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
