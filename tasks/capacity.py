"""Capacity: DynamoDB capacity modes and units, Application Auto Scaling bounds, ECS desired counts.

Shared by remediate-dynamodb-throttling and scale-service. Raw API dicts stop
here: the runbooks see ``TableCapacity``, ``ScalableTarget`` and ``Usage``.

Each kind of change is an ``Applier`` (read the value as a string, set it
idempotently), so the safe-mutation path (drift check, undo in reverse,
``undo_plan``) works on it unchanged:

- ``dynamodb-capacity`` on a table: the whole capacity state as one string,
  ``PAY_PER_REQUEST`` or ``PROVISIONED r=5 w=5; byEmail r=5 w=5`` (table first,
  then every GSI by name). One UpdateTable puts a table there: a mode switch
  carries every GSI's throughput (AWS requires it when going to PROVISIONED), a
  capacity change sends only what differs (AWS refuses an "update" to the
  current value).
- ``autoscaling-bounds`` on ``<resource id> <scalable dimension>`` (e.g.
  ``table/todos dynamodb:table:WriteCapacityUnits``): ``min=5 max=100`` set by
  RegisterScalableTarget, which updates an existing target in place.
- ``ecs-desired-count`` on ``cluster/service``: the desired count.

AWS limits this module knows (DynamoDB developer guide, "Considerations when
switching capacity modes" and "Quotas"):

- provisioned -> on-demand: at most 4 switches in a rolling 24 h window (it was
  once a day before); DescribeTable shows only the last one
  (``BillingModeSummary.LastUpdateToPayPerRequestDateTime``), so opsbook does not
  switch a table again within 24 h of that time. On-demand -> provisioned: any time.
- decreases of provisioned capacity: 4 a UTC day at any time, then one more
  each hour without a decrease in the hour before (27 a day at most); read from
  ``NumberOfDecreasesToday`` and ``LastDecreaseDateTime``.
- per table (and each GSI) 40,000 read and 40,000 write units by default: the
  inventory's ``remediation.dynamodb_max_capacity_units`` bounds every proposal.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.iam import declares
from opsbook.inventory import System
from opsbook.mutation.core import Applier, Identity, Plan, undo_plan
from tasks.cloudwatch import get_metric_data

CAPACITY, BOUNDS, DESIRED = "dynamodb-capacity", "autoscaling-bounds", "ecs-desired-count"
ON_DEMAND, PROVISIONED = "PAY_PER_REQUEST", "PROVISIONED"
SWITCH_WINDOW = timedelta(hours=24)
FREE_DECREASES_A_DAY = 4
MAX_DECREASES_A_DAY = 27
IAM = {CAPACITY: "dynamodb:UpdateTable", BOUNDS: "application-autoscaling:RegisterScalableTarget", DESIRED: "ecs:UpdateService"}


# --- DynamoDB capacity ----------------------------------------------------------------------


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


def _utc(v: Any) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(v), timezone.utc)


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
        indexes=sorted(idx, key=lambda i: i.name), last_to_on_demand=_utc(bms.get("LastUpdateToPayPerRequestDateTime")),
        last_increase=_utc(pt.get("LastIncreaseDateTime")), last_decrease=_utc(pt.get("LastDecreaseDateTime")),
        decreases_today=int(pt.get("NumberOfDecreasesToday") or 0),
        on_demand_max_read=(odt.get("MaxReadRequestUnits") if (odt.get("MaxReadRequestUnits") or -1) > 0 else None),
        on_demand_max_write=(odt.get("MaxWriteRequestUnits") if (odt.get("MaxWriteRequestUnits") or -1) > 0 else None),
    )


@declares(["dynamodb:DescribeTable"])
def describe_capacity(system: System, table: str) -> TableCapacity:
    return table_capacity(aws.client("dynamodb", system.region).describe_table(TableName=table))


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


# --- Application Auto Scaling -----------------------------------------------------------------


class ScalableTarget(BaseModel):
    namespace: str
    resource_id: str
    dimension: str
    min: int
    max: int
    scale_in_suspended: bool = False
    scale_out_suspended: bool = False

    @property
    def key(self) -> str:
        return f"{self.resource_id} {self.dimension}"

    @property
    def bounds(self) -> str:
        return bounds_value(self.min, self.max)


def bounds_value(lo: int, hi: int) -> str:
    return f"min={lo} max={hi}"


def parse_bounds(value: str) -> tuple[int, int]:
    m = re.match(r"^min=(\d+) max=(\d+)$", value)
    if not m:
        raise ValueError(f"not auto scaling bounds: {value!r} (expected 'min=N max=N')")
    return int(m[1]), int(m[2])


def table_resource_ids(table: str, indexes: list[str]) -> list[str]:
    return [f"table/{table}"] + [f"table/{table}/index/{i}" for i in indexes]


def dimension_for(index: str | None, dim: str) -> str:
    unit = "ReadCapacityUnits" if dim == "read" else "WriteCapacityUnits"
    return f"dynamodb:{'index' if index else 'table'}:{unit}"


@declares(["application-autoscaling:DescribeScalableTargets"])
def describe_targets(system: System, namespace: str, resource_ids: list[str]) -> dict[str, ScalableTarget]:
    """Scalable targets of these resources, by key (every page; ResourceIds takes 50 at a time)."""
    c = aws.client("application-autoscaling", system.region)
    out: dict[str, ScalableTarget] = {}
    for i in range(0, len(resource_ids), 50):
        for t in aws.paginate(c, "describe_scalable_targets", "ScalableTargets", ServiceNamespace=namespace, ResourceIds=resource_ids[i : i + 50]):
            susp = t.get("SuspendedState") or {}
            st = ScalableTarget(namespace=namespace, resource_id=t["ResourceId"], dimension=t["ScalableDimension"], min=int(t["MinCapacity"]),
                                max=int(t["MaxCapacity"]), scale_in_suspended=bool(susp.get("DynamicScalingInSuspended")),
                                scale_out_suspended=bool(susp.get("DynamicScalingOutSuspended")))
            out[st.key] = st
    return out


def split_target_key(key: str) -> tuple[str, str, str]:
    resource_id, _, dimension = key.partition(" ")
    return dimension.split(":", 1)[0], resource_id, dimension


def read_bounds(system: System, key: str) -> str:
    ns, rid, dim = split_target_key(key)
    t = describe_targets(system, ns, [rid]).get(key)
    return t.bounds if t else "none"


@declares(["application-autoscaling:DescribeScalableTargets", "application-autoscaling:RegisterScalableTarget"])
def set_bounds(system: System, key: str, value: str) -> None:
    """RegisterScalableTarget updates the existing target's bounds in place (idempotent)."""
    if read_bounds(system, key) == value:
        return
    if value == "none":
        raise ValueError(f"{key}: opsbook never registers or removes a scalable target, it only changes bounds")
    ns, rid, dim = split_target_key(key)
    lo, hi = parse_bounds(value)
    aws.client("application-autoscaling", system.region).register_scalable_target(
        ServiceNamespace=ns, ResourceId=rid, ScalableDimension=dim, MinCapacity=lo, MaxCapacity=hi)


# --- ECS desired count -----------------------------------------------------------------------


def split_service(resource: str) -> tuple[str, str]:
    cluster, _, service = resource.partition("/")
    return cluster, service


@declares(["ecs:DescribeServices"])
def describe_service(system: System, resource: str) -> dict[str, Any]:
    cluster, service = split_service(resource)
    res = aws.client("ecs", system.region).describe_services(cluster=cluster, services=[service])
    svc = (res.get("services") or [None])[0]
    if not svc or svc.get("status") == "INACTIVE":
        raise LookupError(f"ECS service {resource} does not exist (or is INACTIVE); check the inventory's ecs_services")
    return svc


def read_desired(system: System, resource: str) -> str:
    return str(describe_service(system, resource)["desiredCount"])


@declares(["ecs:DescribeServices", "ecs:UpdateService"])
def set_desired(system: System, resource: str, value: str) -> None:
    if read_desired(system, resource) == value:
        return
    cluster, service = split_service(resource)
    aws.client("ecs", system.region).update_service(cluster=cluster, service=service, desiredCount=int(value))


APPLIERS = {
    CAPACITY: Applier(read=read_capacity, apply=set_capacity),
    BOUNDS: Applier(read=read_bounds, apply=set_bounds),
    DESIRED: Applier(read=read_desired, apply=set_desired),
}


# --- DynamoDB usage (CloudWatch) -----------------------------------------------------------------

METRICS = {"read_throttles": "ReadThrottleEvents", "write_throttles": "WriteThrottleEvents",
           "consumed_read": "ConsumedReadCapacityUnits", "consumed_write": "ConsumedWriteCapacityUnits"}
PERIOD_S = 60


class Usage(BaseModel):
    """One table or GSI over the window: per-minute sums, newest first."""

    table: str
    index: str | None = None
    series: dict[str, list[tuple[datetime, float]]] = Field(default_factory=dict)

    def throttles(self, dim: str, since: datetime | None = None) -> float:
        return sum(v for ts, v in self.series.get(f"{dim}_throttles", []) if since is None or _utc(ts) >= since)

    def peak_units_per_s(self, dim: str) -> float | None:
        """Peak consumed units a second (the busiest minute's sum / 60); None without any datapoint."""
        pts = self.series.get(f"consumed_{dim}", [])
        return max(v for _, v in pts) / PERIOD_S if pts else None

    @property
    def label(self) -> str:
        return self.table + (f" (GSI {self.index})" if self.index else "")


def usage_queries(entities: list[tuple[str, str | None]]) -> tuple[list[dict[str, Any]], dict[str, tuple[int, str]]]:
    qs, ids = [], {}
    for n, (table, index) in enumerate(entities):
        dims = [{"Name": "TableName", "Value": table}] + ([{"Name": "GlobalSecondaryIndexName", "Value": index}] if index else [])
        for key, metric in METRICS.items():
            qid = f"u{n}_{key}"
            ids[qid] = (n, key)
            qs.append({"Id": qid, "MetricStat": {"Metric": {"Namespace": "AWS/DynamoDB", "MetricName": metric, "Dimensions": dims},
                                                  "Period": PERIOD_S, "Stat": "Sum"}, "ReturnData": True})
    return qs, ids


@declares(["cloudwatch:GetMetricData"])
def read_usage(system: System, entities: list[tuple[str, str | None]], start: datetime, end: datetime) -> list[Usage]:
    """Throttle events and consumed capacity of tables and GSIs, one batched GetMetricData (4 series each)."""
    qs, ids = usage_queries(entities)
    out = [Usage(table=t, index=i) for t, i in entities]
    if not qs:
        return out
    data = get_metric_data(system.region, qs, start, end)
    for qid, points in data.items():
        n, key = ids[qid]
        out[n].series[key] = [(_utc(ts), float(v)) for ts, v in points]  # type: ignore[misc]
    return out


# --- waiting, with progress --------------------------------------------------------------------


def wait_until(label: str, checks: dict[str, Callable[[], tuple[bool, str]]], timeout_s: float, poll_s: float = 2.0
               ) -> dict[str, tuple[bool, str, float]]:
    """Poll every check until it passes or ``timeout_s`` runs out; a Prefect progress artifact and a line on stderr.

    Returns resource -> (passed, last answer, seconds). A check that raises counts as not passed (its error is the answer)."""
    pending = dict(checks)
    out: dict[str, tuple[bool, str, float]] = {}
    why: dict[str, str] = {}
    started = time.monotonic()
    progress = create_progress_artifact(progress=0.0, description=f"{label}: waiting for {len(checks)} resource(s)")
    while pending:
        for res, check in list(pending.items()):
            try:
                ok, why[res] = check()
            except Exception as exc:  # read again next round; the last error is the answer at the end
                ok, why[res] = False, aws.describe_error(exc)
            if ok:
                out[res] = (True, why[res], round(time.monotonic() - started, 1))
                del pending[res]
        elapsed = time.monotonic() - started
        done = len(checks) - len(pending)
        update_progress_artifact(progress, progress=100.0 * min(1.0, max(done / max(len(checks), 1), elapsed / max(timeout_s, 0.001))))
        if pending:
            print(f"opsbook: {label}: {done}/{len(checks)} done after {elapsed:.0f}/{timeout_s:g} s; "
                  + "; ".join(f"{r}: {why.get(r, '...')}" for r in pending), file=sys.stderr)
        if not pending or elapsed >= timeout_s:
            break
        time.sleep(min(poll_s, max(0.0, timeout_s - elapsed)))
    for res in pending:
        out[res] = (False, why.get(res, "no answer"), round(time.monotonic() - started, 1))
    update_progress_artifact(progress, progress=100.0)
    return out


def ceil_units(x: float) -> int:
    return max(1, math.ceil(x - 1e-9))


# --- undo of an earlier run, within AWS's limits -------------------------------------------------


def undo_with_limits(inv: System, runbook: str, identity: Identity, records: list[dict[str, Any]], run_id: str) -> Plan:
    """``undo_plan`` for these kinds, then AWS's limits: a capacity decrease or a switch to on-demand AWS would refuse
    now moves to ``cannot`` with the time it becomes possible. Call inside a task that declares the reads."""
    plan = undo_plan(inv, runbook, identity, records, run_id, APPLIERS, IAM)
    keep, now = [], datetime.now(timezone.utc)
    for a in plan.actions:
        if a.kind == CAPACITY and a.target == ON_DEMAND:
            when = switch_blocked_until(describe_capacity(inv, a.resource), now)
            if when is not None:
                plan.cannot.append(f"{a.resource}: undo switches it to on-demand, which AWS allows 4 times in 24 h; the last switch was "
                                   f"less than 24 h ago: possible at {when.isoformat(timespec='minutes')}")
                continue
        elif a.kind == CAPACITY and is_decrease(a.current, a.target):
            when = decrease_blocked_until(describe_capacity(inv, a.resource), now)
            if when is not None:
                plan.cannot.append(f"{a.resource}: undo lowers provisioned capacity and the table has used its decreases for now "
                                   f"(AWS: 4 a UTC day, then one an hour): possible at {when.isoformat(timespec='minutes')}")
                continue
            a = a.model_copy(update={"evidence": a.evidence + "; a decrease (AWS allows 4 a UTC day, then one an hour)"})
        elif a.kind == CAPACITY:
            a = a.model_copy(update={"evidence": a.evidence + "; back to PROVISIONED with the earlier capacities (allowed any time)"})
        elif a.kind == BOUNDS:
            a = a.model_copy(update={"evidence": a.evidence + "; auto scaling moves the capacity into the old bounds by its own policy"})
        keep.append(a)
    plan.actions = keep
    return plan
