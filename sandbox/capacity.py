"""Capacity scenarios in the sandbox: throttled DynamoDB tables and an auto-scaled ECS service.

Seeded tables are on-demand without GSIs; each scenario turns one into what
the runbooks must diagnose, and publishes the CloudWatch evidence DynamoDB
would have (throttle events and consumed capacity per minute, table and GSI).
Each returns what it did (the resource and the numbers a test asserts on).

Where moto lacks something the sandbox supplies it, and says so
(``enable_capacity_history``, patched into moto in this process, idempotent):
DescribeTable's ``BillingModeSummary.LastUpdateToPayPerRequestDateTime`` (set
when a table switches to on-demand) and ``ProvisionedThroughput``'s
``LastIncreaseDateTime`` / ``LastDecreaseDateTime`` / ``NumberOfDecreasesToday``,
and on-demand tables report 0 provisioned units as DynamoDB does. moto never
runs Application Auto Scaling: a registered target's bounds are only stored.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.inventory import System
from sandbox.server import Sandbox, sandbox_client


def enable_capacity_history() -> None:
    """Teach moto's DynamoDB (in this process) the capacity history fields DescribeTable carries."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    if getattr(Table, "_opsbook_capacity", False):
        return
    real_update, real_describe = DynamoDBBackend.update_table, Table.describe

    def update_table(self: Any, *args: Any, **kwargs: Any) -> Any:
        name = kwargs.get("name", args[0] if args else None)
        table = self.get_table(name)
        mode_before = table.billing_mode
        before = [(table.throughput.get("ReadCapacityUnits", 0), table.throughput.get("WriteCapacityUnits", 0))]
        before += [(i.throughput.get("ReadCapacityUnits", 0), i.throughput.get("WriteCapacityUnits", 0)) for i in table.global_indexes]
        result = real_update(self, *args, **kwargs)
        now = datetime.now(timezone.utc)
        if table.billing_mode == "PAY_PER_REQUEST" and mode_before != "PAY_PER_REQUEST":
            table._opsbook_last_ppr = now
        elif table.billing_mode != "PAY_PER_REQUEST" and mode_before != "PAY_PER_REQUEST":
            after = [(table.throughput.get("ReadCapacityUnits", 0), table.throughput.get("WriteCapacityUnits", 0))]
            after += [(i.throughput.get("ReadCapacityUnits", 0), i.throughput.get("WriteCapacityUnits", 0)) for i in table.global_indexes]
            pairs = list(zip(before, after))
            if any(a[0] > b[0] or a[1] > b[1] for b, a in pairs):
                table._opsbook_last_increase = now
            if any(a[0] < b[0] or a[1] < b[1] for b, a in pairs):
                last = getattr(table, "_opsbook_last_decrease", None)
                n = getattr(table, "_opsbook_decreases", 0) if last and last.date() == now.date() else 0
                table._opsbook_decreases, table._opsbook_last_decrease = n + 1, now
        return result

    def describe(self: Any, base_key: str = "TableDescription") -> Any:
        out = real_describe(self, base_key)
        t = out[base_key]
        on_demand = self.billing_mode == "PAY_PER_REQUEST"
        t["BillingModeSummary"] = dict(t.get("BillingModeSummary") or {})
        if getattr(self, "_opsbook_last_ppr", None):
            t["BillingModeSummary"]["LastUpdateToPayPerRequestDateTime"] = self._opsbook_last_ppr
        pt = {k: v for k, v in (t.get("ProvisionedThroughput") or {}).items()}
        if on_demand:
            pt.update(ReadCapacityUnits=0, WriteCapacityUnits=0)
            t["GlobalSecondaryIndexes"] = [{**g, "ProvisionedThroughput": {"ReadCapacityUnits": 0, "WriteCapacityUnits": 0}}
                                           for g in t.get("GlobalSecondaryIndexes") or []]
        pt["NumberOfDecreasesToday"] = getattr(self, "_opsbook_decreases", 0)
        for attr, key in (("_opsbook_last_increase", "LastIncreaseDateTime"), ("_opsbook_last_decrease", "LastDecreaseDateTime")):
            if getattr(self, attr, None):
                pt[key] = getattr(self, attr)
        t["ProvisionedThroughput"] = pt
        return out

    DynamoDBBackend.update_table = update_table
    Table.describe = describe
    Table._opsbook_capacity = True


def _pick(items: list[str], name: str | None, what: str, scenario: str, system: System) -> str:
    if name is not None:
        return name
    if not items:
        raise ValueError(f"scenario {scenario!r} needs {what} in the inventory of {system.name}")
    return items[0]


def _dims(table: str, index: str | None = None) -> list[dict[str, str]]:
    return [{"Name": "TableName", "Value": table}] + ([{"Name": "GlobalSecondaryIndexName", "Value": index}] if index else [])


def publish_usage(sb: Sandbox, system: System, table: str, index: str | None = None, *, read_per_s: float = 0.0, write_per_s: float = 0.0,
                  read_throttles: int = 0, write_throttles: int = 0, minutes: int = 20, ended_minutes_ago: int = 2,
                  now: datetime | None = None) -> None:
    """Per-minute DynamoDB metrics for the ``minutes`` minutes ending ``ended_minutes_ago`` ago: consumed units
    (``*_per_s`` x 60 a minute, peaking in the last minute) and throttle events (spread over the minutes)."""
    cw = sandbox_client(sb, "cloudwatch", system.region)
    now = now or datetime.now(timezone.utc)
    data: list[dict[str, Any]] = []
    for m in range(minutes):
        ts = now - timedelta(minutes=ended_minutes_ago + m, seconds=30)
        share = 1.0 if m == 0 else 0.8  # the busiest minute is the latest
        for metric, per_s in (("ConsumedReadCapacityUnits", read_per_s), ("ConsumedWriteCapacityUnits", write_per_s)):
            if per_s:
                data.append({"MetricName": metric, "Dimensions": _dims(table, index), "Timestamp": ts, "Value": per_s * 60 * share, "Unit": "Count"})
        for metric, total in (("ReadThrottleEvents", read_throttles), ("WriteThrottleEvents", write_throttles)):
            n = total // minutes + (1 if m < total % minutes else 0)
            if n:
                data.append({"MetricName": metric, "Dimensions": _dims(table, index), "Timestamp": ts, "Value": float(n), "Unit": "Count"})
    for i in range(0, len(data), 500):
        cw.put_metric_data(Namespace="AWS/DynamoDB", MetricData=data[i : i + 500])


def make_provisioned(sb: Sandbox, system: System, table: str, read: int, write: int, gsi: str | None = None,
                     gsi_read: int = 5, gsi_write: int = 5) -> None:
    """Switch a seeded (on-demand) table to PROVISIONED, optionally with one GSI on attribute ``<gsi>_key``."""
    enable_capacity_history()
    ddb = sandbox_client(sb, "dynamodb", system.region)
    ddb.update_table(TableName=table, BillingMode="PROVISIONED", ProvisionedThroughput={"ReadCapacityUnits": read, "WriteCapacityUnits": write})
    if gsi:
        attrs = ddb.describe_table(TableName=table)["Table"]["AttributeDefinitions"] + [{"AttributeName": f"{gsi}_key", "AttributeType": "S"}]
        ddb.update_table(TableName=table, AttributeDefinitions=attrs, GlobalSecondaryIndexUpdates=[{"Create": {
            "IndexName": gsi, "KeySchema": [{"AttributeName": f"{gsi}_key", "KeyType": "HASH"}], "Projection": {"ProjectionType": "ALL"},
            "ProvisionedThroughput": {"ReadCapacityUnits": gsi_read, "WriteCapacityUnits": gsi_write}}}])
    sb.backend("dynamodb", system.region).tables[table]._opsbook_decreases = 0


def throttled_provisioned_table(sb: Sandbox, system: System, table: str | None = None, gsi: str | None = "byEmail",
                                read: int = 5, write: int = 5) -> dict[str, Any]:
    """A provisioned table with a GSI, both throttled: table writes at capacity (peak 6 WCU/s against 5), GSI reads
    (peak 8 RCU/s against 5). With the default headroom 1.5: table write -> 9, GSI read -> 12."""
    name = _pick([t.name for t in system.dynamodb_tables], table, "a DynamoDB table", "throttled-provisioned-table", system)
    make_provisioned(sb, system, name, read, write, gsi)
    publish_usage(sb, system, name, read_per_s=2.0, write_per_s=6.0, write_throttles=40)
    if gsi:
        publish_usage(sb, system, name, gsi, read_per_s=8.0, write_per_s=3.0, read_throttles=25)
    return {"resource": name, "gsi": gsi, "read": read, "write": write, "table_write_target": 9, "gsi_read_target": 12,
            "write_throttles": 40, "gsi_read_throttles": 25 if gsi else 0}


def auto_scaled_table(sb: Sandbox, system: System, table: str | None = None, lo: int = 5, hi: int = 10,
                      at_max: bool = True) -> dict[str, Any]:
    """A provisioned table whose read and write capacity auto scaling manages (seed 002 문제 1), writes throttled.

    ``at_max``: capacity sits at the target's max (auto scaling can grow no further), peak 10 WCU/s -> needed 15."""
    name = _pick([t.name for t in system.dynamodb_tables], table, "a DynamoDB table", "auto-scaled-table", system)
    units = hi if at_max else lo
    make_provisioned(sb, system, name, units, units)
    aas = sandbox_client(sb, "application-autoscaling", system.region)
    for dim in ("ReadCapacityUnits", "WriteCapacityUnits"):
        aas.register_scalable_target(ServiceNamespace="dynamodb", ResourceId=f"table/{name}", ScalableDimension=f"dynamodb:table:{dim}",
                                     MinCapacity=lo, MaxCapacity=hi)
    publish_usage(sb, system, name, read_per_s=2.0, write_per_s=float(hi), write_throttles=30)
    return {"resource": name, "min": lo, "max": hi, "capacity": units, "needed": 15,
            "write_target": f"table/{name} dynamodb:table:WriteCapacityUnits"}


def on_demand_throttled_table(sb: Sandbox, system: System, table: str | None = None) -> dict[str, Any]:
    """An on-demand table with write throttle events (a hot partition or the table's quota): nothing to change."""
    name = _pick([t.name for t in system.dynamodb_tables], table, "a DynamoDB table", "on-demand-throttled-table", system)
    enable_capacity_history()
    publish_usage(sb, system, name, write_per_s=900.0, write_throttles=120)
    return {"resource": name, "write_throttles": 120}


def recently_switched_table(sb: Sandbox, system: System, table: str | None = None, hours_ago: float = 3.0) -> dict[str, Any]:
    """A throttled provisioned table that was switched to on-demand ``hours_ago`` ago (and back to provisioned since):
    another switch to on-demand is not planned until 24 h after that."""
    made = throttled_provisioned_table(sb, system, table, gsi=None)
    t = sb.backend("dynamodb", system.region).tables[made["resource"]]
    t._opsbook_last_ppr = datetime.now(timezone.utc) - timedelta(hours=hours_ago)
    return {**made, "switched_at": t._opsbook_last_ppr, "possible_at": t._opsbook_last_ppr + timedelta(hours=24)}


def ecs_scalable_target(sb: Sandbox, system: System, lo: int | None = None, hi: int | None = None) -> dict[str, Any]:
    """Register the service's DesiredCount scalable target (001 스케일링 가이드: min 2, max 20 from the inventory)."""
    if not system.ecs_services:
        raise ValueError(f"scenario 'ecs-scalable-target' needs an ECS service in the inventory of {system.name}")
    s = system.ecs_services[0]
    lo = lo if lo is not None else (s.min_tasks or 1)
    hi = hi if hi is not None else (s.max_tasks or 10)
    sandbox_client(sb, "application-autoscaling", system.region).register_scalable_target(
        ServiceNamespace="ecs", ResourceId=f"service/{s.cluster}/{s.service}", ScalableDimension="ecs:service:DesiredCount",
        MinCapacity=lo, MaxCapacity=hi)
    return {"resource": f"{s.cluster}/{s.service}", "min": lo, "max": hi}


def ecs_tasks_pending(sb: Sandbox, system: System) -> dict[str, Any]:
    """ECS starts new tasks over time, moto at once (UpdateService sets runningCount = desiredCount): after this, a
    changed desired count leaves the running count where it was and the difference PENDING, until the test says
    otherwise (``Sandbox.set_ecs_running``), as when tasks wait for capacity or image pulls."""
    if not system.ecs_services:
        raise ValueError(f"scenario 'ecs-tasks-pending' needs an ECS service in the inventory of {system.name}")
    backend = sb.backend("ecs", system.region)
    real = backend.update_service

    def update_service(service_properties: dict[str, Any]) -> Any:
        key = f"{service_properties.get('cluster', 'default').split('/')[-1]}:{service_properties.get('service', '').split('/')[-1]}"
        svc = backend.services.get(key)
        running = svc.running_count if svc is not None else 0
        result = real(service_properties)
        if svc is not None:
            svc.running_count, svc.pending_count = running, max(0, svc.desired_count - running)
        return result

    backend.update_service = update_service  # an instance attribute: the sandbox's reset clears it
    s = system.ecs_services[0]
    return {"resource": f"{s.cluster}/{s.service}"}


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "ecs-tasks-pending": ecs_tasks_pending,
    "throttled-provisioned-table": throttled_provisioned_table,
    "auto-scaled-table": auto_scaled_table,
    "on-demand-throttled-table": on_demand_throttled_table,
    "recently-switched-table": recently_switched_table,
    "ecs-scalable-target": ecs_scalable_target,
}


def apply_scenario(sb: Sandbox, system: System, name: str, **kwargs: Any) -> dict[str, Any]:
    if name not in SCENARIOS:
        raise ValueError(f"unknown capacity scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    enable_capacity_history()
    return SCENARIOS[name](sb, system, **kwargs)
