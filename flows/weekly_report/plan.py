"""The series weekly-report reads for a system: its custom metrics, then per function, API, table and bucket, and the hidden
ALB counts of its load-balanced services (pure)."""

from __future__ import annotations

from flows.weekly_report.judge import is_success_metric
from flows.weekly_report.models import Series
from opsbook.inventory import System
from opsbook.resources import Discovered
from tasks.awslambda import function_names
from tasks.cloudwatch import alb_traffic
from tasks.dynamodb import table_names
from tasks.elb import AlbTarget
from tasks.s3 import buckets

# DynamoDB publishes ThrottledRequests per (TableName, Operation) only; the report sums these.
DDB_OPERATIONS = ["GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem", "BatchWriteItem", "TransactGetItems", "TransactWriteItems"]


def _custom_series(system: System) -> list[Series]:
    out = []
    th = system.thresholds
    for m in system.custom_metrics:
        dims = [dict(m.dimensions)]
        unit = m.unit or ""
        slo, kind = m.slo, m.slo_kind
        if slo is None and m.name == "PipelineExecutionTime" and th.pipeline_p95_slo_s:
            slo, kind = th.pipeline_p95_slo_s, "max"
        timed = unit.lower() in ("seconds", "milliseconds", "microseconds")
        if timed and m.statistic != "Average":
            out.append(Series(kind="custom", resource=m.namespace, namespace=m.namespace, metric=m.name, stat="Average",
                              dimension_sets=dims, unit=unit, bad_when_up=True))
        out.append(Series(kind="custom", resource=m.namespace, namespace=m.namespace, metric=m.name, stat=m.statistic,
                          dimension_sets=dims, unit=unit, bad_when_up=timed, slo=slo, slo_kind=kind))
        if is_success_metric(m.name, m.statistic):
            out.append(Series(kind="custom", resource=m.namespace, namespace=m.namespace, metric=m.name, stat="SampleCount",
                              dimension_sets=dims, hidden=True))
    return out


_COUNT = {"stat": "Sum", "sparse": True, "bad_when_up": True}  # published only when it happens
_MS = {"unit": "Milliseconds", "bad_when_up": True}
LAMBDA = [{"metric": "Invocations", "stat": "Sum"}, {"metric": "Errors", **_COUNT}, {"metric": "Throttles", **_COUNT},
          {"metric": "Duration", "stat": "Average", **_MS}, {"metric": "Duration", "stat": "p95", **_MS}]
API = [{"metric": "Count", "stat": "Sum"}, {"metric": "4XXError", **_COUNT}, {"metric": "5XXError", **_COUNT},
       {"metric": "Latency", "stat": "Average", **_MS}, {"metric": "Latency", "stat": "p95", **_MS}]


def _lambda_series(fn: str) -> list[Series]:
    return [Series(kind="lambda", resource=fn, namespace="AWS/Lambda", dimension_sets=[{"FunctionName": fn}], **m) for m in LAMBDA]


def _api_series(api: str, slo: float | None) -> list[Series]:
    """The p95 latency carries the API SLO (thresholds.api_p95_slo_ms), when there is one."""
    out = [Series(kind="apigateway", resource=api, namespace="AWS/ApiGateway", dimension_sets=[{"ApiName": api}], **m) for m in API]
    out[-1] = out[-1].model_copy(update={"slo": slo, "slo_kind": "max" if slo else None})
    return out


def _table_series(t: str) -> list[Series]:
    d = [{"TableName": t}]
    out = []
    for m in ("ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits"):
        out += [Series(kind="dynamodb", resource=t, namespace="AWS/DynamoDB", metric=m, stat="Average", dimension_sets=d),
                Series(kind="dynamodb", resource=t, namespace="AWS/DynamoDB", metric=m, stat="Maximum", dimension_sets=d)]
    out.append(Series(kind="dynamodb", resource=t, namespace="AWS/DynamoDB", metric="ThrottledRequests", stat="Sum",
                      dimension_sets=[{"TableName": t, "Operation": op} for op in DDB_OPERATIONS], sparse=True, bad_when_up=True))
    for m in ("ReadThrottleEvents", "WriteThrottleEvents"):
        out.append(Series(kind="dynamodb", resource=t, namespace="AWS/DynamoDB", metric=m, stat="Sum", dimension_sets=d, sparse=True, bad_when_up=True))
    return out


def _bucket_series(b: str) -> list[Series]:
    return [
        Series(kind="s3", resource=b, namespace="AWS/S3", metric="BucketSizeBytes", stat="Average",
               dimension_sets=[{"BucketName": b, "StorageType": "StandardStorage"}], unit="Bytes"),
        Series(kind="s3", resource=b, namespace="AWS/S3", metric="NumberOfObjects", stat="Average",
               dimension_sets=[{"BucketName": b, "StorageType": "AllStorageTypes"}], unit="Count"),
    ]


def _alb_series(t: AlbTarget) -> list[Series]:
    """A service's target group: the ALB counts its availability is computed from (hidden: read for that, not shown)."""
    sub = alb_traffic(t)
    return [Series(kind="alb", resource=sub.subject, namespace=m.namespace, metric=m.metric, stat=m.stat, dimension_sets=m.dimension_sets,
                   sparse=True, hidden=True) for m in sub.series]


def plan_series(system: System, found: Discovered, api_names: list[str], albs: list[AlbTarget] | None = None) -> list[Series]:
    """Every series of the report, in report order (pure: tested without AWS); ``albs``: the target groups whose counts the
    availability needs (those resolved; the others are the availability's UNKNOWN)."""
    out = _custom_series(system)
    for fn in function_names(system, found):
        out += _lambda_series(fn)
    for api in api_names:
        out += _api_series(api, system.thresholds.api_p95_slo_ms)
    for t in table_names(system, found):
        out += _table_series(t)
    for b in buckets(system, found):
        out += _bucket_series(b.name)
    for t in albs or []:
        out += _alb_series(t) if t.error is None else []
    return out
