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
