"""Two weeks of daily metrics for a seeded system, for the weekly report.

``seed_system`` calls ``seed_weekly_metrics`` for every system: what Lambda, API
Gateway, DynamoDB, S3, the ALB in front of its ECS services (``sandbox.alb``) and
the system's own code would have published over the
14 local days ending yesterday (one timestamp a day, local noon), for the
resources the inventory names (tag-only extras stay idle, as unused resources
are). moto accepts PutMetricData with past timestamps (AWS/ namespaces too);
everything goes out in a few calls (up to 1,000 datums each).

The numbers are deterministic and trend: resource ``k`` of a kind changes week
over week by ``VOLUME[k]`` (traffic), ``LATENCY[k]`` (duration, latency) and
``ERRORS[k]`` (errors), exactly, because day ``i + 7`` is day ``i`` times
``1 + trend`` (same weekday shape). One SLO breach is plausible and seeded:
a custom metric with an SLO (T-Developer's pipeline p95, 45 s) is at
``SLO_LAST_WEEK`` x the SLO last week and ``SLO_THIS_WEEK`` x this week (a WARN,
under the 1.5 x that makes it CRIT). The APIs and target groups meet their
availability SLO both weeks with most of the error budget left (``API_5XX_SHARE``,
``ALB_*``); ``recent_traffic`` adds requests and 5XX to daily-health's last 24 h
(the ``slo-breach`` fault is one). S3 storage grows to ``S3_SIZE_BYTES`` /
``S3_OBJECTS`` yesterday (what daily-health reads as the latest value).

Datums are cheap for moto's linear scans: counters are one value a day,
consumed capacity and success counts one StatisticValues a day, and only the
metrics read as percentiles carry raw values (``RAW_VALUES`` a day).

moto computes no percentiles (p95 comes back empty), so ``enable_percentiles``
teaches its in-process backend nearest-rank percentiles over raw values, the
way CloudWatch computes them from values published one by one.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from typing import Any

from flows.weekly_report.judge import is_success_metric
from opsbook.inventory import CustomMetric, System
from sandbox.alb import alb_dimensions
from sandbox.server import Sandbox, sandbox_client

_PCT = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")

# week-over-week change of resource k of a kind (cycled): some up, some down, some flat
VOLUME = (0.12, -0.30, 0.45, -0.08, 0.20, -0.40, 0.05, 0.60)
LATENCY = (0.05, 0.40, -0.10, 0.02, 0.00, -0.25, 0.12, 0.00)
ERRORS = (1.00, -0.50, 0.10, 0.00, -0.30, 0.20, 0.00, 0.05)
WEEKDAY = (1.00, 1.06, 1.10, 1.08, 1.02, 0.72, 0.64)  # Monday first: weekends are quieter
RAW_VALUES = 10  # raw values a day for a metric read as a percentile (moto scans every datum for every query)
SLO_LAST_WEEK, SLO_THIS_WEEK = 0.85, 1.15  # x the SLO: a breach this week, a WARN (CRIT is 1.5 x)
SUCCESS_FAILURE_PCT = (1.0, 1.5)  # failed generations, last week and this week (T-Developer's SLO: 2 %)
S3_SIZE_BYTES, S3_OBJECTS = 5 * 1024**3, 1234  # yesterday's storage
S3_DAILY_GROWTH = 0.005
MINUTES = 1440


def enable_percentiles() -> None:
    """Patch moto's Statistics (in this process) to answer pNN statistics. Idempotent."""
    from moto.cloudwatch.models import Statistics

    if getattr(Statistics, "_opsbook_percentiles", False):
        return
    original = Statistics.get_statistics_for_type

    def get_statistics_for_type(self: Any, stat: str) -> Any:
        m = _PCT.match(stat)
        if not m:
            return original(self, stat)
        values = self.metric_single_values_list
        return nearest_rank(values, float(m.group(1))) if values else None

    Statistics.get_statistics_for_type = get_statistics_for_type
    Statistics._opsbook_percentiles = True


def day_noons(system: System, now: datetime | None = None) -> list[datetime]:
    """Local noon of each of the 14 days before today, oldest first."""
    now = (now or datetime.now(system.tz)).astimezone(system.tz)
    today = datetime.combine(now.date(), time(0), tzinfo=system.tz)
    return [today - timedelta(days=14 - i) + timedelta(hours=12) for i in range(14)]


# --- the numbers (pure) -------------------------------------------------------------------------


def trend(cycle: tuple[float, ...], k: int) -> float:
    return cycle[k % len(cycle)]


def daily(base: float, change: float, i: int, day: date) -> float:
    """Day ``i`` (0..13) of a series whose week-over-week change is ``change``, shaped by weekday."""
    return base * WEEKDAY[day.weekday()] * (1 + change) ** (i / 7)


def spread(p95: float, n: int = RAW_VALUES) -> list[float]:
    """``n`` raw values (0.5 .. 1.5 x a centre) whose nearest-rank p95 is ``p95``; their mean is the centre."""
    shape = [0.5 + k / (n - 1) for k in range(n)]
    centre = p95 / nearest_rank(shape)
    return [round(centre * s, 3) for s in shape]


def nearest_rank(values: list[float], pct: float = 95.0) -> float:
    """CloudWatch's percentile of values published one by one."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


# --- datums ----------------------------------------------------------------------------------


def _dims(**kw: str) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in kw.items()]


def _value(name: str, dims: list[dict[str, str]], ts: datetime, v: float, unit: str = "Count") -> dict[str, Any]:
    return {"MetricName": name, "Dimensions": dims, "Timestamp": ts, "Value": round(v, 3), "Unit": unit}


def _values(name: str, dims: list[dict[str, str]], ts: datetime, vs: list[float], unit: str) -> dict[str, Any]:
    return {"MetricName": name, "Dimensions": dims, "Timestamp": ts, "Values": vs, "Unit": unit}


def _stats(name: str, dims: list[dict[str, str]], ts: datetime, total: float, count: float, lo: float, hi: float,
           unit: str = "Count") -> dict[str, Any]:
    return {"MetricName": name, "Dimensions": dims, "Timestamp": ts, "Unit": unit,
            "StatisticValues": {"Sum": round(total, 3), "SampleCount": count, "Minimum": round(lo, 3), "Maximum": round(hi, 3)}}


def _requests(d: list[dict[str, str]], k: int, i: int, ts: datetime, base: float, ms: float, metrics: tuple[str, str, str],
              error_share: float) -> list[dict[str, Any]]:
    """Day ``i`` of resource ``k``: its request count, its errors (``error_share`` of the base) and raw latencies."""
    count, errors, latency = metrics
    return [_value(count, d, ts, round(daily(base, trend(VOLUME, k), i, ts.date()))),
            _value(errors, d, ts, round(daily(base * error_share, trend(ERRORS, k), i, ts.date()))),
            _values(latency, d, ts, spread(ms * (1 + trend(LATENCY, k)) ** (i / 7)), "Milliseconds")]


def lambda_data(names: list[str], days: list[datetime]) -> list[dict[str, Any]]:
    """Invocations, Errors (about 0.4 %) and Duration (raw values: Average and p95) of each function; no Throttles."""
    return [datum for k, fn in enumerate(names) for i, ts in enumerate(days)
            for datum in _requests(_dims(FunctionName=fn), k, i, ts, 900.0 + 250 * k, 120.0 + 60 * (k % 5), ("Invocations", "Errors", "Duration"), 0.004)]


API_5XX_SHARE = 0.0002  # of the requests, before the ERRORS trend: within a 99.9 % SLO both weeks, with most of the budget left


def api_data(names: list[str], days: list[datetime]) -> list[dict[str, Any]]:
    """Count, 5XXError (about 0.02 %: ``API_5XX_SHARE``), Latency (raw values) and 4XXError (1.5 % of the requests) of each REST API."""
    out = []
    for k, api in enumerate(names):
        d, base = _dims(ApiName=api), 5000.0 + 2000 * k
        for i, ts in enumerate(days):
            out += _requests(d, k, i, ts, base, 240.0 + 40 * (k % 3), ("Count", "5XXError", "Latency"), API_5XX_SHARE)
            out.append(_value("4XXError", d, ts, round(daily(base * 0.015, trend(VOLUME, k), i, ts.date()))))
    return out


ALB_REQUESTS, ALB_TARGET_5XX_SHARE, ALB_ELB_5XX_SHARE = 20_000.0, 0.0004, 0.0001  # a day; within a 99.5 % SLO, most budget left


def alb_data(albs: list[dict[str, Any]], days: list[datetime]) -> list[dict[str, Any]]:
    """RequestCount and HTTPCode_Target_5XX_Count of each target group (LoadBalancer + TargetGroup) and HTTPCode_ELB_5XX_Count of
    its load balancer (``sandbox.alb.alb_dimensions``)."""
    out = []
    for k, a in enumerate(albs):
        pair, lb = _dims(LoadBalancer=a["LoadBalancer"], TargetGroup=a["TargetGroup"]), _dims(LoadBalancer=a["LoadBalancer"])
        for i, ts in enumerate(days):
            out += [_value("RequestCount", pair, ts, round(daily(ALB_REQUESTS, trend(VOLUME, k), i, ts.date()))),
                    _value("HTTPCode_Target_5XX_Count", pair, ts, round(daily(ALB_REQUESTS * ALB_TARGET_5XX_SHARE, trend(ERRORS, k), i, ts.date()))),
                    _value("HTTPCode_ELB_5XX_Count", lb, ts, round(daily(ALB_REQUESTS * ALB_ELB_5XX_SHARE, trend(ERRORS, k), i, ts.date())))]
    return out


def table_data(names: list[str], days: list[datetime]) -> list[dict[str, Any]]:
    """Consumed read and write units a minute (one day's StatisticValues: Average a minute, Maximum the busiest minute)."""
    out = []
    for k, t in enumerate(names):
        d = _dims(TableName=t)
        for i, ts in enumerate(days):
            for metric, per_min in (("ConsumedReadCapacityUnits", 60.0 + 25 * k), ("ConsumedWriteCapacityUnits", 12.0 + 5 * k)):
                avg = daily(per_min, trend(VOLUME, k + 1), i, ts.date())
                out.append(_stats(metric, d, ts, avg * MINUTES, MINUTES, avg * 0.1, avg * 3.2))
    return out


def bucket_data(names: list[str], days: list[datetime]) -> list[dict[str, Any]]:
    """Storage once a day, growing to ``S3_SIZE_BYTES`` and ``S3_OBJECTS`` yesterday."""
    out = []
    for b in names:
        for i, ts in enumerate(days):
            shrink = (1 + S3_DAILY_GROWTH) ** (len(days) - 1 - i)
            out += [_value("BucketSizeBytes", _dims(BucketName=b, StorageType="StandardStorage"), ts, S3_SIZE_BYTES / shrink, "Bytes"),
                    _value("NumberOfObjects", _dims(BucketName=b, StorageType="AllStorageTypes"), ts, round(S3_OBJECTS / shrink))]
    return out


def slo_targets(system: System, m: CustomMetric) -> tuple[float, float] | None:
    """(last week, this week) of a custom metric with a ``max`` SLO: under it, then over it (the seeded breach)."""
    slo = m.slo if m.slo is not None else (system.thresholds.pipeline_p95_slo_s if m.name == "PipelineExecutionTime" else None)
    if slo is None or m.slo_kind == "min":
        return None
    return slo * SLO_LAST_WEEK, slo * SLO_THIS_WEEK


def custom_data(system: System, m: CustomMetric, k: int, days: list[datetime]) -> list[dict[str, Any]]:
    """A custom metric: raw values when it is timed or read as a percentile (a step between the weeks), attempts and
    successes for ``*Success``, else a daily sum."""
    d = _dims(**m.dimensions)
    unit = m.unit or "None"
    out = []
    for i, ts in enumerate(days):
        if m.statistic.startswith("p") or unit in ("Seconds", "Milliseconds", "Microseconds"):
            last, this = slo_targets(system, m) or (30.0, 30.0 * (1 + trend(LATENCY, k)))
            out.append(_values(m.name, d, ts, spread(this if i >= 7 else last), unit))
        elif is_success_metric(m.name, m.statistic):
            attempts = round(daily(100.0, trend(VOLUME, k), i, ts.date()))
            failed = round(attempts * SUCCESS_FAILURE_PCT[1 if i >= 7 else 0] / 100)
            out.append(_stats(m.name, d, ts, attempts - failed, attempts, 0.0, 1.0, unit))
        else:
            out.append(_value(m.name, d, ts, round(daily(1_000_000.0, trend(VOLUME, k + 2), i, ts.date())), unit))
    return out


def weekly_datums(system: System, days: list[datetime], albs: list[dict[str, Any]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Namespace -> datums for every resource the inventory names, and the ALB target groups ``albs`` (pure)."""
    by_ns: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_ns["AWS/ApplicationELB"] += alb_data(albs or [], days)
    by_ns["AWS/Lambda"] += lambda_data([f.name for f in system.lambda_functions], days)
    by_ns["AWS/ApiGateway"] += api_data([a.name for a in system.api_gateway_apis], days)
    by_ns["AWS/DynamoDB"] += table_data([t.name for t in system.dynamodb_tables], days)
    by_ns["AWS/S3"] += bucket_data([b.name for b in system.s3_buckets], days)
    for k, m in enumerate(system.custom_metrics):
        by_ns[m.namespace] += custom_data(system, m, k, days)
    return {ns: data for ns, data in by_ns.items() if data}


def put_metric_data(cw: Any, namespace: str, data: list[dict[str, Any]]) -> int:
    """PutMetricData in calls of up to 1,000 datums (its limit); returns the number of calls."""
    calls = 0
    for i in range(0, len(data), 1000):
        cw.put_metric_data(Namespace=namespace, MetricData=data[i : i + 1000])
        calls += 1
    return calls


def seed_weekly_metrics(sb: Sandbox, system: System, now: datetime | None = None, namespaces: set[str] | None = None) -> dict[str, int]:
    """Publish the 14 days (of ``namespaces`` only, when given); returns the number of datums and PutMetricData calls."""
    enable_percentiles()
    cw = sandbox_client(sb, "cloudwatch", system.region)
    albs = alb_dimensions(sb, system) if namespaces is None or "AWS/ApplicationELB" in namespaces else []
    by_ns = {ns: data for ns, data in weekly_datums(system, day_noons(system, now), albs).items() if namespaces is None or ns in namespaces}
    calls = sum(put_metric_data(cw, ns, data) for ns, data in by_ns.items())
    return {"datums": sum(len(v) for v in by_ns.values()), "calls": calls}


def slow_pipeline(sb: Sandbox, system: System, metric: str, seconds: float, per_day: int = 3 * RAW_VALUES, now: datetime | None = None) -> None:
    """A fault on top of the seeded weeks: ``per_day`` more runs of ``seconds`` each day of this week (p95 goes to ``seconds``)."""
    m = next(c for c in system.custom_metrics if c.name == metric)
    cw = sandbox_client(sb, "cloudwatch", system.region)
    data = [_values(m.name, _dims(**m.dimensions), ts, [seconds] * per_day, m.unit or "None") for ts in day_noons(system, now)[7:]]
    put_metric_data(cw, m.namespace, data)


def recent_traffic(sb: Sandbox, system: System, requests: int, errors: int, hours_ago: float = 0.5, now: datetime | None = None) -> list[str]:
    """``requests`` requests and ``errors`` 5XX ``hours_ago`` on every API (Count, 5XXError) and every seeded target group
    (RequestCount, HTTPCode_Target_5XX_Count; no ELB 5XX): the traffic daily-health's availability reads. Returns the subjects."""
    ts = (now or datetime.now(system.tz)) - timedelta(hours=hours_ago)
    cw = sandbox_client(sb, "cloudwatch", system.region)
    subjects = []
    for a in system.api_gateway_apis:
        d = _dims(ApiName=a.name)
        put_metric_data(cw, "AWS/ApiGateway", [_value("Count", d, ts, requests), _value("5XXError", d, ts, errors)])
        subjects.append(a.name)
    for a in alb_dimensions(sb, system):
        d = _dims(LoadBalancer=a["LoadBalancer"], TargetGroup=a["TargetGroup"])
        put_metric_data(cw, "AWS/ApplicationELB", [_value("RequestCount", d, ts, requests), _value("HTTPCode_Target_5XX_Count", d, ts, errors)])
        subjects.append(a["target_group"])
    return subjects
