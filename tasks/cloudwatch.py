"""CloudWatch: alarms in ALARM for the system, and batched metric reads."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task, declares
from opsbook.inventory import System, name_matches

# GetMetricData: 50 requests a second per account and region (CloudWatch service quotas).
GET_METRIC_DATA_TPS = 50.0

_PRIORITY_STATUS = {"P0": Status.CRIT, "P1": Status.CRIT, "P2": Status.WARN, "P3": Status.WARN}


def alarm_priority(system: System, alarm_name: str) -> str | None:
    for pattern, prio in system.alarms.priorities.items():
        if name_matches(pattern, alarm_name):
            return prio
    return None


def judge_alarms(system: System, alarms: list[dict[str, Any]]) -> list[Finding]:
    mine = [a for a in alarms if system.alarms.matches(a["AlarmName"])]
    if not mine:
        return [Finding(check="alarms", resource="alarms", status=Status.OK, value=0,
                        summary=f"no alarm in ALARM matching {system.alarms.name_filters}")]
    out = []
    for a in sorted(mine, key=lambda a: a["AlarmName"]):
        prio = alarm_priority(system, a["AlarmName"])
        status = _PRIORITY_STATUS.get(prio or "", Status.CRIT)
        since = a.get("StateUpdatedTimestamp")
        out.append(Finding(check="alarms", resource=a["AlarmName"], status=status, value=1,
                           summary=f"in ALARM{f' ({prio})' if prio else ''}: {a.get('StateReason', '')}"[:300],
                           details={"priority": prio, "since": since.isoformat() if since else None}))
    return out


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


# --- token usage per dimension value over a sliding window (bill-shock-breaker) ------------------------

from pydantic import BaseModel, Field  # noqa: E402  (this section is appended)

from opsbook.inventory import BillShock  # noqa: E402


class Usage(BaseModel):
    """Tokens per window, newest window first, for every active case and user."""

    window_minutes: int
    cases: dict[str, list[float]] = Field(default_factory=dict)
    users: dict[str, list[float]] = Field(default_factory=dict)
    calls: int = 0


def _dimension_values(system: System, cfg: BillShock, dimension: str) -> list[str]:
    c = aws.client("cloudwatch", system.region)
    values = set()
    for m in aws.paginate(c, "list_metrics", "Metrics", Namespace=cfg.namespace, MetricName=cfg.metric, RecentlyActive="PT3H",
                          Dimensions=[{"Name": dimension}]):
        dims = {d["Name"]: d["Value"] for d in m.get("Dimensions", [])}
        if set(dims) == {dimension}:
            values.add(dims[dimension])
    return sorted(values)


def _series(system: System, cfg: BillShock, dimension: str, values: list[str], end: datetime) -> dict[str, list[float]]:
    start = end - timedelta(hours=cfg.baseline_hours)
    queries = [{"Id": f"q{i}", "MetricStat": {"Metric": {"Namespace": cfg.namespace, "MetricName": cfg.metric,
                "Dimensions": [{"Name": dimension, "Value": v}]}, "Period": cfg.window_minutes * 60, "Stat": cfg.statistic},
                "ReturnData": True} for i, v in enumerate(values)]
    data = get_metric_data(system.region, queries, start, end) if queries else {}
    out = {}
    n_windows = cfg.baseline_hours * 60 // cfg.window_minutes
    first_window = start
    for i, v in enumerate(values):
        buckets = [0.0] * n_windows  # newest first; a window without data used no tokens
        for ts, val in data.get(f"q{i}", []):
            idx = n_windows - 1 - int((ts - first_window).total_seconds() // (cfg.window_minutes * 60))
            if 0 <= idx < n_windows:
                buckets[idx] += val
        out[v] = buckets
    return out


@aws_task(iam=["cloudwatch:ListMetrics", "cloudwatch:GetMetricData"], name="read-token-usage", cache_policy=NO_CACHE)
def read_usage(system: System, now: datetime | None = None) -> Usage:
    cfg = system.bill_shock
    assert cfg is not None
    end = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
    log = aws.current_call_log()
    before = log.total if log else 0
    cases = _dimension_values(system, cfg, cfg.case_dimension)
    users = _dimension_values(system, cfg, cfg.user_dimension)
    usage = Usage(window_minutes=cfg.window_minutes, cases=_series(system, cfg, cfg.case_dimension, cases, end),
                  users=_series(system, cfg, cfg.user_dimension, users, end))
    usage.calls = (log.total - before) if log else 0
    return usage
