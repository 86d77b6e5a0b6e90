"""opsbook's durable state in AWS: leases and action records.

Runs come from laptops, the UI and workers with different Prefect databases,
and Prefect's event history expires, so what a mutating runbook did (and who
holds a resource right now) lives in one DynamoDB table in the system's
account (``mutations.state_table``, default ``opsbook-state``; created on
first use, on-demand billing, partition key ``pk`` and sort key ``sk``):

- lease:  pk ``lease#<resource>``, sk ``lease``: holder, run, expires_at (epoch s).
  Taken with a conditional write (free or expired), released only by its holder.
- record: pk ``record#<system>``, sk ``<iso time>#<run id>#<n>``: one executed action.
"""

from __future__ import annotations

import json
import time
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


@declares(["dynamodb:PutItem", "dynamodb:GetItem"])
def acquire_lease(system: System, resource: str, holder: str, run_id: str, ttl_s: int | None = None) -> float:
    """Take the lease on ``resource`` or raise LeaseHeld naming the holder and expiry."""
    table = ensure_table(system)
    c = aws.client("dynamodb", system.region)
    now = time.time()
    expires = now + (ttl_s or system.mutations.lease_ttl_s)
    try:
        _put_again_if_table_vanished(system, lambda: c.put_item(
            TableName=table,
            Item={"pk": {"S": f"lease#{resource}"}, "sk": {"S": "lease"}, "holder": {"S": holder}, "run": {"S": run_id},
                  "expires_at": {"N": f"{expires:.3f}"}, "taken_at": {"N": f"{now:.3f}"}},
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now OR #run = :run",
            ExpressionAttributeNames={"#run": "run"},
            ExpressionAttributeValues={":now": {"N": f"{now:.3f}"}, ":run": {"S": run_id}},
        ))
        return expires
    except Exception as exc:
        if aws.error_code(exc) != "ConditionalCheckFailedException":
            raise
    item = c.get_item(TableName=table, Key={"pk": {"S": f"lease#{resource}"}, "sk": {"S": "lease"}}, ConsistentRead=True).get("Item", {})
    raise LeaseHeld(resource, item.get("holder", {}).get("S", "another run"), float(item.get("expires_at", {}).get("N", "0")))


@declares(["dynamodb:DeleteItem"])
def release_lease(system: System, resource: str, run_id: str) -> bool:
    c = aws.client("dynamodb", system.region)
    try:
        c.delete_item(TableName=system.mutations.state_table, Key={"pk": {"S": f"lease#{resource}"}, "sk": {"S": "lease"}},
                      ConditionExpression="#run = :run", ExpressionAttributeNames={"#run": "run"},
                      ExpressionAttributeValues={":run": {"S": run_id}})
        return True
    except Exception as exc:
        if aws.error_code(exc) == "ConditionalCheckFailedException":
            return False  # expired and taken by someone else: not ours to delete
        raise


@declares(["dynamodb:PutItem"])
def put_record(system: System, record: dict[str, Any], n: int) -> None:
    table = ensure_table(system)
    sk = f"{record['at']}#{record.get('flow_run_id') or 'no-run'}#{n:03d}"
    _put_again_if_table_vanished(system, lambda: aws.client("dynamodb", system.region).put_item(
        TableName=table,
        Item={"pk": {"S": f"record#{system.name}"}, "sk": {"S": sk}, "resource": {"S": record["resource"]},
              "body": {"S": json.dumps(record, default=str)}},
    ))


@declares(["dynamodb:Query", "dynamodb:DescribeTable"])
def read_records(system: System, resource: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The newest records of the system (newest first), every page up to ``limit``."""
    c = aws.client("dynamodb", system.region)
    try:
        c.describe_table(TableName=system.mutations.state_table)
    except Exception as exc:
        if aws.is_not_found(exc):
            return []  # nothing recorded yet
        raise
    out: list[dict[str, Any]] = []
    for page in c.get_paginator("query").paginate(
        TableName=system.mutations.state_table, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"record#{system.name}"}}, ScanIndexForward=False,
    ):
        for item in page["Items"]:
            rec = json.loads(item["body"]["S"])
            if resource is None or rec.get("resource") == resource:
                out.append(rec)
        if len(out) >= limit:
            break
    return out[:limit]
