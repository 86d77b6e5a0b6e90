"""restore-table's sandbox scenarios: items lost after a backup; a Lambda function reading a table, its role allowed on it.

moto's point-in-time restore copies a table as it is now (it keeps no history), so lost items are staged around an
on-demand backup: the backup's ARN is the restore point that brings them back.
"""

from __future__ import annotations

import json
from typing import Any

from opsbook.inventory import System
from sandbox.server import Sandbox, sandbox_client

UPDATED = "2026-01-01T00:00:00Z"
EXPIRES = "expires"


def _table(system: System, table: str | None) -> Any:
    tables = [t for t in system.dynamodb_tables if table in (None, t.name)]
    if not tables:
        raise ValueError(f"table-items-deleted needs a DynamoDB table in {system.name}'s inventory" + (f" named {table}" if table else ""))
    return tables[0]


def items_deleted(sb: Sandbox, system: System, table: str | None = None, items: int = 6, deleted: int = 2) -> dict[str, Any]:
    """``items`` items (updated_at before the backup), an on-demand backup of them, then the first ``deleted`` deleted, one
    item edited after the backup (updated_at in the future: newer, never to be overwritten) and one added. The first item
    carries binary attributes (B, BS). The table has a
    TTL (``expires``) and one more item in the backup whose TTL is past, deleted as DynamoDB's TTL would (``expired``: never
    to be put back)."""
    t = _table(system, table)
    ddb = sandbox_client(sb, "dynamodb", system.region)
    if ddb.describe_time_to_live(TableName=t.name)["TimeToLiveDescription"].get("TimeToLiveStatus") != "ENABLED":
        ddb.update_time_to_live(TableName=t.name, TimeToLiveSpecification={"Enabled": True, "AttributeName": EXPIRES})
    ttl = ddb.describe_time_to_live(TableName=t.name)["TimeToLiveDescription"].get("AttributeName", EXPIRES)

    def item(i: int, title: str, updated: str = UPDATED) -> dict[str, Any]:
        key = {t.partition_key: {"S": f"t{i:02d}"}} | ({t.sort_key: {"S": "0"}} if t.sort_key else {})
        return key | {"title": {"S": title}, "updated_at": {"S": updated}}

    for i in range(items):
        ddb.put_item(TableName=t.name, Item=item(i, f"task {i}") | ({"blob": {"B": b"\x00\xff"}, "tags": {"BS": [b"b", b"a"]}} if i == 0 else {}))
    gone = item(items + 20, "expired before the incident") | {ttl: {"N": "1700000000"}}
    ddb.put_item(TableName=t.name, Item=gone)
    arn = ddb.create_backup(TableName=t.name, BackupName=f"{t.name}-before-the-incident")["BackupDetails"]["BackupArn"]
    ddb.delete_item(TableName=t.name, Key={k: v for k, v in gone.items() if k in (t.partition_key, t.sort_key)})  # as TTL does
    for i in range(deleted):
        ddb.delete_item(TableName=t.name, Key={k: v for k, v in item(i, "").items() if k in (t.partition_key, t.sort_key)})
    newer, added = f"t{items - 1:02d}", f"t{items + 10:02d}"
    ddb.put_item(TableName=t.name, Item=item(items - 1, "edited after the backup", "2099-01-01T00:00:00Z"))
    ddb.put_item(TableName=t.name, Item=item(items + 10, "added after the backup"))
    return {"resource": t.name, "backup_arn": arn, "deleted": [f"t{i:02d}" for i in range(deleted)], "newer": newer, "added": added,
            "expired": f"t{items + 20:02d}"}


def table_consumer(sb: Sandbox, system: System, table: str | None = None, function: str | None = None, variable: str = "TABLE_NAME",
                   allow: str | None = None) -> dict[str, Any]:
    """A function of the inventory reading ``table`` from ``variable``; its role allowed GetItem/PutItem/Query on ``allow``
    (default: the table's ARN only, so a restored copy is out of its reach; give ``<arn>*`` for the healthy twin)."""
    t = _table(system, table)
    if not system.lambda_functions:
        raise ValueError(f"table-consumer needs a Lambda function in {system.name}'s inventory")
    fn = function or system.lambda_functions[0].name
    lam, iam = sandbox_client(sb, "lambda", system.region), sandbox_client(sb, "iam", system.region)
    cfg = lam.get_function_configuration(FunctionName=fn)
    env = dict((cfg.get("Environment") or {}).get("Variables") or {}) | {variable: t.name}
    lam.update_function_configuration(FunctionName=fn, Environment={"Variables": env})
    arn = sandbox_client(sb, "dynamodb", system.region).describe_table(TableName=t.name)["Table"]["TableArn"]
    role = cfg["Role"].rsplit("/", 1)[-1]
    iam.put_role_policy(RoleName=role, PolicyName=f"{t.name}-access", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"], "Resource": allow or arn}]}))
    return {"resource": fn, "variable": variable, "table": t.name, "role": role, "allowed": allow or arn}


SCENARIOS = {"table-items-deleted": items_deleted, "table-consumer": table_consumer}
