"""CloudWatch: alarms in ALARM for the system, and batched metric reads."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

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


# --- alarms in ALARM, as models (the alarm bridge's read) ---------------------------------------------------


class Alarm(BaseModel):
    name: str
    region: str
    kind: str = "MetricAlarm"
    state: str = "ALARM"
    state_time: datetime  # when it went into its state (StateTransitionedTimestamp, else StateUpdatedTimestamp)
    reason: str = ""
    namespace: str | None = None
    metric: str | None = None
    dimensions: dict[str, str] = Field(default_factory=dict)
    statistic: str | None = None
    threshold: float | None = None
    comparison: str | None = None


def _alarm(raw: dict[str, Any], region: str, kind: str) -> Alarm:
    ts = raw.get("StateTransitionedTimestamp") or raw.get("StateUpdatedTimestamp")
    if ts is None:
        raise ValueError(f"alarm {raw.get('AlarmName')!r} has no state timestamp")
    metric = raw.get("MetricName")
    namespace = raw.get("Namespace")
    dims = {d["Name"]: d["Value"] for d in raw.get("Dimensions", []) or []}
    if not metric and raw.get("Metrics"):  # a metric-math alarm: name the first metric it reads
        for q in raw["Metrics"]:
            m = (q.get("MetricStat") or {}).get("Metric")
            if m:
                metric, namespace = m.get("MetricName"), m.get("Namespace")
                dims = {d["Name"]: d["Value"] for d in m.get("Dimensions", []) or []}
                break
    return Alarm(name=raw["AlarmName"], region=region, kind=kind, state=raw.get("StateValue", "ALARM"),
                 state_time=ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc), reason=raw.get("StateReason", "") or "",
                 namespace=namespace, metric=metric, dimensions=dims, statistic=raw.get("Statistic") or raw.get("ExtendedStatistic"),
                 threshold=raw.get("Threshold"), comparison=raw.get("ComparisonOperator"))


@aws_task(iam=["cloudwatch:DescribeAlarms"], cache_policy=NO_CACHE)
def read_alarms(region: str) -> list[Alarm]:
    """Every metric and composite alarm in ALARM in one region (every page)."""
    c = aws.client("cloudwatch", region)
    out: list[Alarm] = []
    for page in c.get_paginator("describe_alarms").paginate(StateValue="ALARM", AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
        out += [_alarm(a, region, "MetricAlarm") for a in page.get("MetricAlarms", []) or []]
        out += [_alarm(a, region, "CompositeAlarm") for a in page.get("CompositeAlarms", []) or []]
    return out
