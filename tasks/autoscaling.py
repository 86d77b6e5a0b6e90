"""Application Auto Scaling: scalable targets and their bounds (MinCapacity, MaxCapacity).

A target is keyed ``<resource id> <scalable dimension>`` (e.g.
``table/todos dynamodb:table:WriteCapacityUnits``) and its bounds are one string,
``min=5 max=100``, so that ``read_bounds``/``set_bounds`` serve as an ``Applier``
of the kind ``BOUNDS_KIND``: RegisterScalableTarget updates an existing target in
place (idempotent); opsbook never registers or removes a target.
"""

from __future__ import annotations

import re

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.iam import aws_task, declares
from opsbook.inventory import System

BOUNDS_KIND = "autoscaling-bounds"
BOUNDS_IAM = "application-autoscaling:RegisterScalableTarget"


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


def table_target_key(table: str, index: str | None, dim: str) -> str:
    """The key of the scalable target of a table's (or one of its GSIs') read or write capacity."""
    return f"table/{table}{'/index/' + index if index else ''} {dimension_for(index, dim)}"


def table_of(key: str) -> str:
    """The table a DynamoDB target key belongs to (``table/T/index/I dynamodb:...`` -> ``T``)."""
    return key.split(" ")[0].split("/")[1]


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


@declares(["application-autoscaling:DescribeScalableTargets"])
def read_bounds(system: System, key: str) -> str:
    ns, rid, dim = split_target_key(key)
    t = describe_targets(system, ns, [rid]).get(key)
    return t.bounds if t else "none"


@declares(["application-autoscaling:DescribeScalableTargets"])
def bounds_settled(system: System, key: str, target: str) -> tuple[bool, str]:
    now = read_bounds(system, key)
    return now == target, f"bounds {now}"


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


@aws_task(iam=["application-autoscaling:DescribeScalableTargets"], name="read-table-scalable-targets", cache_policy=NO_CACHE)
def read_table_targets(system: System, tables: dict[str, list[str]]) -> dict[str, ScalableTarget]:
    """The scalable targets of these tables and their GSIs (table -> GSI names), by key."""
    ids = [rid for name, indexes in tables.items() for rid in table_resource_ids(name, indexes)]
    return describe_targets(system, "dynamodb", ids) if ids else {}
