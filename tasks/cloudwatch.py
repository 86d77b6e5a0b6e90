"""CloudWatch: alarms in ALARM for the system, and batched metric reads."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE

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
