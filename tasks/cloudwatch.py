"""CloudWatch: alarms in ALARM for the system, and batched metric reads."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.components import alarm_priority, judge_alarms  # noqa: F401  (alarm_priority: tasks/alarm_bridge.py imports it from here)
from opsbook.findings import Finding
from opsbook.iam import aws_task, declares
from opsbook.inventory import System

# GetMetricData: 50 requests a second per account and region (CloudWatch service quotas).
GET_METRIC_DATA_TPS = 50.0

@aws_task(iam=["cloudwatch:DescribeAlarms"], cache_policy=NO_CACHE)
def check_alarms(system: System, deadline: aws.Deadline) -> list[Finding]:
    if not system.alarms.name_filters:
        return []
    c = aws.client("cloudwatch", system.region)
    alarms: list[dict[str, Any]] = []
    for page in c.get_paginator("describe_alarms").paginate(StateValue="ALARM", AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
        alarms += page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
    return judge_alarms(system, alarms)


class MetricsUnreadable(RuntimeError):
    """A series answered Forbidden or InternalError: its missing datapoints say nothing about the resource."""


@declares(["cloudwatch:GetMetricData"])
def get_metric_data(region: str, queries: list[dict[str, Any]], start: datetime, end: datetime) -> dict[str, list[tuple[datetime, float]]]:
    """Run metric queries in batches of 500 (GetMetricData's limit), every page.

    Returns id -> [(timestamp, value)] newest first.
    """
    c = aws.client("cloudwatch", region)
    out: dict[str, list[tuple[datetime, float]]] = {q["Id"]: [] for q in queries}
    lim = aws.limiter("get_metric_data", GET_METRIC_DATA_TPS)

    def one_batch(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = []
        for page in c.get_paginator("get_metric_data").paginate(MetricDataQueries=batch, StartTime=start, EndTime=end, ScanBy="TimestampDescending"):
            lim.acquire()
            results += page["MetricDataResults"]
        return results

    batches = [queries[i : i + 500] for i in range(0, len(queries), 500)]
    unread: list[str] = []
    for _, results, err in aws.parallel(one_batch, batches, max_workers=8):  # independent batches, concurrently
        if err is not None:
            raise err
        for r in results:
            out[r["Id"]] += list(zip(r["Timestamps"], r["Values"]))
            if r.get("StatusCode") in ("Forbidden", "InternalError"):  # no datapoints here does not mean no activity
                detail = "; ".join(m.get("Value", "") for m in r.get("Messages", [])) or r["StatusCode"]
                unread.append(f"{r['Id']} ({r['StatusCode']}: {detail})")
    if unread:
        raise MetricsUnreadable(f"GetMetricData could not read {len(unread)} of {len(queries)} series, e.g. {', '.join(unread[:3])}")
    for k in out:
        out[k].sort(key=lambda tv: tv[0], reverse=True)
    return out


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def window(hours: float) -> tuple[datetime, datetime]:
    end = utcnow()
    return end - timedelta(hours=hours), end


# --- two weeks of metrics, by day and by week (weekly-report's trends) --------------------------

DAY = 86400
WEEK = 7 * DAY


class MetricSeries(BaseModel):
    """A metric statistic, summed over ``dimension_sets`` (one query each; Sum statistics only when several)."""

    namespace: str
    metric: str
    stat: str
    dimension_sets: list[dict[str, str]] = Field(default_factory=lambda: [{}])


class TwoWeeks(BaseModel):
    """One series over two weeks: 14 daily values, oldest first, and the value of each week."""

    daily: list[float | None]  # 14 days, oldest first
    last_week: float | None
    this_week: float | None


def metric_queries(series: list[MetricSeries]) -> list[dict[str, Any]]:
    """Two queries per (series, dimension set): ``d{i}_{j}`` daily and ``w{i}_{j}`` weekly."""
    qs = []
    for i, s in enumerate(series):
        for j, dims in enumerate(s.dimension_sets):
            metric = {"Namespace": s.namespace, "MetricName": s.metric, "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]}
            for prefix, period in (("d", DAY), ("w", WEEK)):
                qs.append({"Id": f"{prefix}{i}_{j}", "MetricStat": {"Metric": metric, "Period": period, "Stat": s.stat}, "ReturnData": True})
    return qs


def _bucket(points: list[tuple[datetime, float | None]], start: datetime, period: int, n: int) -> list[float | None]:
    out: list[float | None] = [None] * n
    for ts, v in points:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        k = int((ts - start).total_seconds() // period)
        if 0 <= k < n:
            out[k] = v if out[k] is None else out[k] + v  # type: ignore[operator]
    return out


def two_weeks(series: list[MetricSeries], data: dict[str, list[tuple[datetime, float]]], start: datetime) -> list[TwoWeeks]:
    """Daily and weekly values per series from ``start``; a series over several dimension sets is their sum."""
    start = start.astimezone(timezone.utc)
    out = []
    for i, s in enumerate(series):
        daily: list[float | None] = [None] * 14
        weekly: list[float | None] = [None] * 2
        for j in range(len(s.dimension_sets)):
            for target, prefix, period, n in ((daily, "d", DAY, 14), (weekly, "w", WEEK, 2)):
                for k, v in enumerate(_bucket(data.get(f"{prefix}{i}_{j}", []), start, period, n)):
                    if v is not None:
                        target[k] = v if target[k] is None else target[k] + v  # type: ignore[operator]
        out.append(TwoWeeks(daily=daily, last_week=weekly[0], this_week=weekly[1]))
    return out


@aws_task(iam=["cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def read_trends(region: str, series: list[MetricSeries], start: datetime, end: datetime) -> list[TwoWeeks]:
    """Every series of the two weeks [start, end) in one get_metric_data call batch (500 queries a call, every page)."""
    if not series:
        return []
    data = get_metric_data(region, metric_queries(series), start.astimezone(timezone.utc), end.astimezone(timezone.utc))
    return two_weeks(series, data, start)


def as_utc(v: Any) -> datetime | None:
    """A timestamp as AWS answers it (an aware or naive datetime, or epoch seconds) as aware UTC."""
    if v is None:
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(v), timezone.utc)


# --- DynamoDB usage: throttle events and consumed capacity of tables and GSIs ----------------------

DYNAMODB_METRICS = {"read_throttles": "ReadThrottleEvents", "write_throttles": "WriteThrottleEvents",
                    "consumed_read": "ConsumedReadCapacityUnits", "consumed_write": "ConsumedWriteCapacityUnits"}
PERIOD_S = 60


class Usage(BaseModel):
    """One table or GSI over the window: per-minute sums, newest first."""

    table: str
    index: str | None = None
    series: dict[str, list[tuple[datetime, float]]] = Field(default_factory=dict)

    def throttles(self, dim: str, since: datetime | None = None) -> float:
        return sum(v for ts, v in self.series.get(f"{dim}_throttles", []) if since is None or as_utc(ts) >= since)  # type: ignore[operator]

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
        for key, metric in DYNAMODB_METRICS.items():
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
        out[n].series[key] = [(as_utc(ts), float(v)) for ts, v in points]  # type: ignore[misc]
    return out


@aws_task(iam=["cloudwatch:GetMetricData"], name="read-table-usage", cache_policy=NO_CACHE)
def read_table_usage(system: System, entities: list[tuple[str, str | None]], start: datetime, end: datetime) -> list[Usage]:
    """``read_usage`` as a task: (table, GSI or None) in the order given."""
    return read_usage(system, entities, start, end)


# --- Lambda durations: Invocations, Errors, Duration Average and Maximum per function --------------


class DurationStats(BaseModel):
    function: str
    since: datetime
    invocations: float = 0
    errors: float = 0
    avg_ms: float | None = None
    max_ms: float | None = None
    datapoints: int = 0


def ceil_minute(t: datetime) -> datetime:
    floor = t.replace(second=0, microsecond=0)
    return floor if floor == t else floor + timedelta(minutes=1)


def duration_queries(names: list[str]) -> list[dict[str, Any]]:
    out = []
    for i, fn in enumerate(names):
        for metric, stat, key in (("Invocations", "Sum", "inv"), ("Errors", "Sum", "err"), ("Duration", "Average", "avg"),
                                  ("Duration", "Maximum", "max")):
            out.append({"Id": f"f{i}_{key}", "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": "AWS/Lambda", "MetricName": metric, "Dimensions": [{"Name": "FunctionName", "Value": fn}]},
                "Period": 60, "Stat": stat}})
    return out


def summarize_durations(fn: str, since: datetime, series: dict[str, list[tuple[datetime, float]]], i: int) -> DurationStats:
    """One function's numbers over its window: sums, the maximum, and the average weighted by each minute's invocations."""
    inv = dict(series.get(f"f{i}_inv", []))
    avg = series.get(f"f{i}_avg", [])
    mx = [v for _, v in series.get(f"f{i}_max", [])]
    stats = DurationStats(function=fn, since=since, invocations=sum(inv.values()), errors=sum(v for _, v in series.get(f"f{i}_err", [])),
                          max_ms=max(mx) if mx else None, datapoints=len(inv))
    if avg:
        weights = [inv.get(t, 0.0) for t, _ in avg]
        total = sum(weights)
        stats.avg_ms = (sum(w * v for w, (_, v) in zip(weights, avg)) / total) if total else sum(v for _, v in avg) / len(avg)
    return stats


@aws_task(iam=["cloudwatch:GetMetricData"], name="read-lambda-metrics", cache_policy=NO_CACHE)
def read_duration_metrics(system: System, since: dict[str, datetime]) -> list[DurationStats]:
    """One GetMetricData request for every function (batched by 500 queries), per function window.

    Each function is read from its own start (a minute boundary after its last change): functions are grouped by start."""
    end = datetime.now(timezone.utc)
    by_start: dict[datetime, list[str]] = {}
    for fn, t in since.items():
        by_start.setdefault(ceil_minute(t), []).append(fn)
    out: dict[str, DurationStats] = {}
    for start, names in by_start.items():
        if (end - start).total_seconds() < 60:  # changed less than a minute ago: no full minute to read yet
            out.update({fn: DurationStats(function=fn, since=start) for fn in names})
            continue
        series = get_metric_data(system.region, duration_queries(names), start, end)
        out.update({fn: summarize_durations(fn, start, series, i) for i, fn in enumerate(names)})
    return [out[fn] for fn in since]
