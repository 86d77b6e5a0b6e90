"""opsbook's durable state in AWS: leases and action records.

Runs come from laptops, the UI and workers with different Prefect databases,
and Prefect's event history expires, so what a mutating runbook did (and who
holds a resource right now) lives in one DynamoDB table in the system's
account (``mutations.state_table``, default ``opsbook-state``; created on
first use, on-demand billing, partition key ``pk`` and sort key ``sk``):

- lease:  pk ``lease#<resource>``, sk ``lease``: holder, run, fence, expires_at (epoch s).
  Taken with a conditional write (free, expired, or its run certainly finished), kept alive by the holder's
  heartbeat, released only by its holder; ``fence`` grows by one at each takeover.
- intent: pk ``intent#<system>``, sk ``<runbook>#<run id>#<n>``: a step about to be taken (written before
  the AWS call, deleted with its outcome in one transaction); one left open means its run stopped in between.
- record: pk ``record#<system>``, sk ``<iso time>#<run id>#<n>``: one action's intent or outcome.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from opsbook import aws
from opsbook.iam import declares
from opsbook.inventory import System

_known_tables: set[tuple[str, str]] = set()


class LeaseHeld(RuntimeError):
    def __init__(self, resource: str, holder: str, expires_at: float) -> None:
        when = datetime.fromtimestamp(expires_at, timezone.utc).isoformat(timespec="seconds")
        super().__init__(f"{resource} is being changed by {holder}; its lease expires at {when} (wait, or ask them)")
        self.resource, self.holder, self.expires_at = resource, holder, expires_at


def _put_again_if_table_vanished(system: System, put: Any) -> Any:
    try:
        return put()
    except Exception as exc:
        if aws.error_code(exc) != "ResourceNotFoundException":
            raise
        forget_table(system)
        ensure_table(system)
        return put()


@declares(["dynamodb:DescribeTable", "dynamodb:CreateTable"])
def ensure_table(system: System) -> str:
    """Create the state table on first use (idempotent) and wait until it is ACTIVE."""
    name = system.mutations.state_table
    if (aws.endpoint_url(), system.region, name) in _known_tables:
        return name
    c = aws.client("dynamodb", system.region)
    try:
        status = c.describe_table(TableName=name)["Table"]["TableStatus"]
    except Exception as exc:
        if not aws.is_not_found(exc):
            raise
        try:
            c.create_table(
                TableName=name, BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
                Tags=[{"Key": "opsbook:purpose", "Value": "leases-and-records"}],
            )
        except Exception as exc2:
            if aws.error_code(exc2) != "ResourceInUseException":  # another run created it first: fine
                raise
        status = "CREATING"
    deadline = time.monotonic() + 120
    delay = 0.1
    while status != "ACTIVE":
        status = c.describe_table(TableName=name)["Table"]["TableStatus"]
        if status == "ACTIVE":
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"state table {name} not ACTIVE after 120 s")
        time.sleep(delay)
        delay = min(2.0, delay * 2)
    _known_tables.add((aws.endpoint_url(), system.region, name))
    return name


def forget_table(system: System) -> None:
    """The table vanished under us (deleted by hand): the next call creates it again."""
    _known_tables.discard((aws.endpoint_url(), system.region, system.mutations.state_table))


def _lease_key(resource: str) -> dict[str, Any]:
    return {"pk": {"S": f"lease#{resource}"}, "sk": {"S": "lease"}}


@dataclass
class Lease:
    """A lease this run holds: ``fence`` is its fencing version (each takeover by another run adds one), which every
    fenced write checks, so a holder that lost the lease (killed and replaced, or stalled past its heartbeat) cannot
    write after the new holder took over."""

    system: System
    resource: str
    run_id: str
    holder: str
    fence: int
    ttl_s: int
    expires_at: float
    took_over: str = ""  # whose expired (or finished) lease this run took, when it did


class LeaseLost(RuntimeError):
    """Another run took the lease over (this run's heartbeat lapsed): nothing more may be written or done."""


def _item_num(item: dict[str, Any], name: str, default: float = 0.0) -> float:
    return float(item.get(name, {}).get("N", default))


@declares(["dynamodb:PutItem", "dynamodb:GetItem"])
def acquire_lease(system: System, resource: str, holder: str, run_id: str, ttl_s: int | None = None,
                  is_dead: Callable[[str], bool] | None = None) -> Lease:
    """Take the lease on ``resource`` (or renew it, when this run holds it already) or raise LeaseHeld naming the holder.

    A lease held by another run is taken over only when its heartbeat lapsed (``expires_at`` passed) or ``is_dead``
    (the holder's run id -> True only when its end is certain, e.g. Prefect says the run finished). Each takeover adds
    one to the fencing version, and the write is conditional on the version and expiry just read, so two runs racing
    for a dead holder's lease cannot both win."""
    table = ensure_table(system)
    c = aws.client("dynamodb", system.region)
    ttl = ttl_s or system.mutations.lease_ttl_s
    for _ in range(5):
        item = _put_again_if_table_vanished(system, lambda: c.get_item(TableName=table, Key=_lease_key(resource), ConsistentRead=True)).get("Item")
        now = time.time()
        took_over = ""
        if item is None:
            fence, cond, values = 1, "attribute_not_exists(pk)", {}
        else:
            old_fence, old_exp, old_run = int(_item_num(item, "fence")), item.get("expires_at", {}).get("N", "0"), item.get("run", {}).get("S", "")
            mine = old_run == run_id
            if not mine and float(old_exp) >= now and not (is_dead is not None and is_dead(old_run)):
                raise LeaseHeld(resource, item.get("holder", {}).get("S", "another run"), float(old_exp))
            if not mine:
                took_over = f"{item.get('holder', {}).get('S', old_run)} (lease " + ("expired)" if float(old_exp) < now else "of a finished run)")
            fence = old_fence if mine else old_fence + 1
            cond = "expires_at = :old_exp AND #run = :old_run AND " + ("fence = :old_fence" if "fence" in item else "attribute_not_exists(fence)")
            values = {":old_exp": {"N": old_exp}, ":old_run": {"S": old_run}}
            if "fence" in item:
                values[":old_fence"] = {"N": str(old_fence)}
        expires = now + ttl
        try:
            c.put_item(TableName=table, Item={**_lease_key(resource), "holder": {"S": holder}, "run": {"S": run_id}, "fence": {"N": str(fence)},
                                              "expires_at": {"N": f"{expires:.3f}"}, "taken_at": {"N": f"{now:.3f}"}},
                       ConditionExpression=cond, **({"ExpressionAttributeNames": {"#run": "run"}} if values else {}),
                       **({"ExpressionAttributeValues": values} if values else {}))
            return Lease(system=system, resource=resource, run_id=run_id, holder=holder, fence=fence, ttl_s=ttl, expires_at=expires,
                         took_over=took_over)
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
    item = c.get_item(TableName=table, Key=_lease_key(resource), ConsistentRead=True).get("Item", {})
    raise LeaseHeld(resource, item.get("holder", {}).get("S", "another run"), _item_num(item, "expires_at"))


@declares(["dynamodb:UpdateItem"])
def renew_lease(lease: Lease) -> None:
    """The heartbeat: push the expiry ``ttl_s`` ahead, only while this run still holds the lease at its fence (else LeaseLost)."""
    expires = time.time() + lease.ttl_s
    try:
        aws.client("dynamodb", lease.system.region).update_item(
            TableName=lease.system.mutations.state_table, Key=_lease_key(lease.resource),
            UpdateExpression="SET expires_at = :e", ConditionExpression="#run = :run AND fence = :f",
            ExpressionAttributeNames={"#run": "run"},
            ExpressionAttributeValues={":e": {"N": f"{expires:.3f}"}, ":run": {"S": lease.run_id}, ":f": {"N": str(lease.fence)}})
        lease.expires_at = expires
    except Exception as exc:
        if aws.error_code(exc) == "ConditionalCheckFailedException":
            raise LeaseLost(f"the lease on {lease.resource} was taken over by another run (this run's heartbeat lapsed)") from None
        raise


@declares(["dynamodb:DeleteItem"])
def release_lease(system: System, resource: str, run_id: str) -> bool:
    c = aws.client("dynamodb", system.region)
    try:
        c.delete_item(TableName=system.mutations.state_table, Key=_lease_key(resource),
                      ConditionExpression="#run = :run", ExpressionAttributeNames={"#run": "run"},
                      ExpressionAttributeValues={":run": {"S": run_id}})
        return True
    except Exception as exc:
        if aws.error_code(exc) == "ConditionalCheckFailedException":
            return False  # expired and taken by someone else: not ours to delete
        raise


def _record_sk(record: dict[str, Any], n: int) -> str:
    return f"{record['at']}#{record.get('flow_run_id') or 'no-run'}#{n:03d}"


def _record_item(system: System, record: dict[str, Any], n: int) -> dict[str, Any]:
    return {"pk": {"S": f"record#{system.name}"}, "sk": {"S": _record_sk(record, n)}, "resource": {"S": record["resource"]},
            "body": {"S": json.dumps(record, default=str)}}


def _intent_key(system: System, step_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"intent#{system.name}"}, "sk": {"S": step_id}}


@declares(["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"])
def fenced_write(lease: Lease, records: list[tuple[dict[str, Any], int]], open_intent: tuple[str, dict[str, Any]] | None = None,
                 close_intent: str | None = None) -> None:
    """Write ``records`` (record, n), open an intent (step id, body) or close one, in one transaction that holds only
    while ``lease`` is still this run's at its fence: a run that lost its lease gets LeaseLost and writes nothing."""
    system = lease.system
    table = ensure_table(system)
    items: list[dict[str, Any]] = [{"ConditionCheck": {
        "TableName": table, "Key": _lease_key(lease.resource), "ConditionExpression": "#run = :run AND fence = :f",
        "ExpressionAttributeNames": {"#run": "run"},
        "ExpressionAttributeValues": {":run": {"S": lease.run_id}, ":f": {"N": str(lease.fence)}}}}]
    items += [{"Put": {"TableName": table, "Item": _record_item(system, r, n)}} for r, n in records]
    if open_intent is not None:
        step_id, body = open_intent
        items.append({"Put": {"TableName": table, "Item": {**_intent_key(system, step_id), "resource": {"S": body["resource"]},
                                                             "body": {"S": json.dumps(body, default=str)}}}})
    if close_intent is not None:
        items.append({"Delete": {"TableName": table, "Key": _intent_key(system, close_intent)}})
    try:
        aws.client("dynamodb", system.region).transact_write_items(TransactItems=items)
    except Exception as exc:
        reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
        if aws.error_code(exc) == "TransactionCanceledException" and reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
            raise LeaseLost(f"the lease on {lease.resource} is no longer this run's (fence {lease.fence}): another run took it over; "
                            "nothing was written") from None
        raise


@declares(["dynamodb:Query"])
def open_intents(system: System, runbook: str | None = None) -> list[dict[str, Any]]:
    """Steps some run said it was about to take and never closed (it was killed, or lost its lease, in between)."""
    c = aws.client("dynamodb", system.region)
    out: list[dict[str, Any]] = []
    try:
        pages = list(c.get_paginator("query").paginate(
            TableName=system.mutations.state_table, KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"intent#{system.name}"}}, ConsistentRead=True))
    except Exception as exc:
        if aws.is_not_found(exc):
            return []
        raise
    for page in pages:
        for item in page["Items"]:
            body = json.loads(item["body"]["S"])
            if runbook is None or body.get("runbook") == runbook:
                out.append({**body, "step_id": item["sk"]["S"]})
    return out


@declares(["dynamodb:PutItem"])
def put_record(system: System, record: dict[str, Any], n: int) -> None:
    table = ensure_table(system)
    _put_again_if_table_vanished(system, lambda: aws.client("dynamodb", system.region).put_item(TableName=table, Item=_record_item(system, record, n)))


@declares(["dynamodb:Query", "dynamodb:DescribeTable"])
def read_records(system: System, resource: str | None = None, limit: int = 200, history: bool = False) -> list[dict[str, Any]]:
    """The newest records of the system (newest first), every page up to ``limit``: the last word on each step (its
    intent, its outcome, then verified, collapse to the newest), or with ``history`` every row as written."""
    c = aws.client("dynamodb", system.region)
    try:
        c.describe_table(TableName=system.mutations.state_table)
    except Exception as exc:
        if aws.is_not_found(exc):
            return []  # nothing recorded yet
        raise
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for page in c.get_paginator("query").paginate(
        TableName=system.mutations.state_table, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"record#{system.name}"}}, ScanIndexForward=False,
    ):
        for item in page["Items"]:
            rec = json.loads(item["body"]["S"])
            step = rec.get("step_id") or ""
            if step and not history:
                if step in seen:
                    continue
                seen.add(step)
            if resource is None or rec.get("resource") == resource:
                out.append(rec)
        if len(out) >= limit:
            break
    return out[:limit]
