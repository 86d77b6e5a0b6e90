"""The per-case circuit breaker table (bill-shock-breaker, seed 003 scenario C).

Table (``bill_shock.breaker_table``, default ``leh-circuit-breakers``): partition
key ``case_id``; ``state`` is OPEN, HALF_OPEN or CLOSED, with ``reason``,
``tokens``, ``changed_at``, ``changed_by``, ``run``. Every write is conditional,
so tripping twice is harmless and two runs never overwrite each other blindly.
The AI worker reads it through ``flows/bill_shock_breaker/breaker_client.py`` (no opsbook imports).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from opsbook import aws
from opsbook.iam import declares
from opsbook.inventory import System

OPEN, HALF_OPEN, CLOSED = "OPEN", "HALF_OPEN", "CLOSED"


def _table(system: System) -> str:
    if system.bill_shock is None:
        raise ValueError(f"{system.name} has no bill_shock section in its inventory")
    return system.bill_shock.breaker_table


@declares(["dynamodb:BatchGetItem"])
def read_breakers(system: System, case_ids: list[str]) -> dict[str, dict[str, Any]]:
    """State of each case that has a breaker item (cases without one are CLOSED). 100 keys a call."""
    table = _table(system)
    c = aws.client("dynamodb", system.region)
    out: dict[str, dict[str, Any]] = {}
    ids = sorted(set(case_ids))
    for i in range(0, len(ids), 100):
        request: dict[str, Any] = {table: {"Keys": [{"case_id": {"S": cid}} for cid in ids[i : i + 100]], "ConsistentRead": True}}
        for _ in range(8):
            res = c.batch_get_item(RequestItems=request)
            for item in res.get("Responses", {}).get(table, []):
                out[item["case_id"]["S"]] = {k: next(iter(v.values())) for k, v in item.items()}
            request = res.get("UnprocessedKeys") or {}
            if not request:
                break
        if request:
            raise RuntimeError(f"BatchGetItem left {len(request[table]['Keys'])} keys unprocessed after 8 tries (throttled)")
    return out


@declares(["dynamodb:UpdateItem"])
def set_state(system: System, case_id: str, state: str, *, reason: str, by: str, run: str, tokens: int | None = None,
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
        cond = f"({cond}) AND (#s IN ({', '.join(allowed)})" + (" OR attribute_not_exists(#s))" if CLOSED in only_if else ")")
    update = "SET #s = :s, reason = :r, changed_at = :t, changed_by = :b, #run = :run"
    names["#run"] = "run"
    if tokens is not None:
        update += ", tokens = :tok"
        values[":tok"] = {"N": str(int(tokens))}
    try:
        aws.client("dynamodb", system.region).update_item(
            TableName=_table(system), Key={"case_id": {"S": case_id}}, UpdateExpression=update,
            ConditionExpression=cond, ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        return True
    except Exception as exc:
        if aws.error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise


@declares(["dynamodb:Query", "dynamodb:Scan"])
def open_cases(system: System) -> dict[str, dict[str, Any]]:
    """Every case whose breaker is OPEN or HALF_OPEN (a filtered scan over all pages)."""
    c = aws.client("dynamodb", system.region)
    out = {}
    for page in c.get_paginator("scan").paginate(
        TableName=_table(system), FilterExpression="#s IN (:o, :h)", ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":o": {"S": OPEN}, ":h": {"S": HALF_OPEN}}, ConsistentRead=True,
    ):
        for item in page["Items"]:
            out[item["case_id"]["S"]] = {k: next(iter(v.values())) for k, v in item.items()}
    return out
