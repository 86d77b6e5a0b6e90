"""CloudWatch: alarms in ALARM for the system, and batched metric reads."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.availability import CHECK as AVAILABILITY
from opsbook.availability import Traffic, add_counts, judge_availability, nothing_to_measure
from opsbook.components import declared_names, judge_alarms, judge_declared_alarms
from opsbook.findings import Finding, unknown
from opsbook.iam import aws_task, declares
from opsbook.inventory import ApiGatewayApi, System
from opsbook.performance import TargetGroupMetrics, judge_target_group
from opsbook.resources import Discovered
from tasks.apigateway import all_api_names
from tasks.elb import AlbTarget

# GetMetricData: 50 requests a second per account and region (CloudWatch service quotas).
GET_METRIC_DATA_TPS = 50.0

@aws_task(iam=["cloudwatch:DescribeAlarms", "sns:GetTopicAttributes"], cache_policy=NO_CACHE)
def check_alarms(system: System, found: Discovered, deadline: aws.Deadline) -> list[Finding]:
    """The system's alarms in ALARM (by its name filters), and every alarm it declares: there, with actions and data."""
    c = aws.client("cloudwatch", system.region)
    out: list[Finding] = []
    if system.alarms.name_filters:
        firing: list[dict[str, Any]] = []
        for page in c.get_paginator("describe_alarms").paginate(StateValue="ALARM", AlarmTypes=ALARM_TYPES):
            firing += page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
        out += judge_alarms(system, firing)
    declared = declared_names(system, found)
    if not declared:
        return out
    try:
        alarms = read_alarms_named(c, [n for n, d, _ in declared if not d.is_pattern], [n for n, d, _ in declared if d.is_pattern], deadline)
    except Exception as exc:  # the declared alarms cannot be judged: one UNKNOWN with the reason, the firing ones stay
        return out + [unknown("alarms", "declared alarms", aws.describe_error(exc))]
    sns = {arn for a in alarms.values() for arn in a.get("AlarmActions") or [] if arn.count(":") >= 5 and arn.split(":")[2] == "sns"}  # any partition
    topics = topics_exist(sns, deadline)
    return out + judge_declared_alarms(system, declared, alarms, topics, datetime.now(timezone.utc))


ALARM_TYPES = ["MetricAlarm", "CompositeAlarm"]


def read_alarms_named(c: Any, names: list[str], patterns: list[str], deadline: aws.Deadline) -> dict[str, dict[str, Any]]:
    """Alarms in any state, by name (100 a call, DescribeAlarms' limit) and by the literal prefix of each glob; every page."""
    def read(kw: dict[str, Any]) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        for page in c.get_paginator("describe_alarms").paginate(AlarmTypes=ALARM_TYPES, **kw):
            got += page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
        return got

    prefixes = {re.split(r"[*?\[]", p, maxsplit=1)[0] for p in patterns}
    queries = [{"AlarmNames": names[i:i + 100]} for i in range(0, len(names), 100)]
    queries += [{"AlarmNamePrefix": p} if p else {} for p in sorted(prefixes)]
    out: dict[str, dict[str, Any]] = {}
    for _, got, err in aws.parallel(read, queries, deadline=deadline):
        if err is not None:
            raise err
        out.update({a["AlarmName"]: a for a in got or []})
    return out


def topics_exist(arns: set[str], deadline: aws.Deadline) -> dict[str, bool | str]:
    """SNS topic ARN -> whether it exists, or why that could not be read."""
    def exists(arn: str) -> bool:
        try:
            aws.client("sns", arn.split(":")[3]).get_topic_attributes(TopicArn=arn)
        except Exception as exc:
            if aws.error_code(exc) in ("NotFound", "NotFoundException"):
                return False
            raise
        return True

    return {arn: ok if err is None else aws.describe_error(err) for arn, ok, err in aws.parallel(exists, sorted(arns), deadline=deadline)}


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


# --- metric queries of the last minutes, batched (diagnose-api-5xx, diagnose-bedrock-throttling) ------------------

MetricSpec = tuple[str, str, dict[str, str], str, int]  # (namespace, metric, dimensions, stat, period)


def metric_query(qid: str, namespace: str, metric: str, dims: dict[str, str], stat: str, period: int) -> dict[str, Any]:
    return {"Id": qid, "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]},
        "Period": period, "Stat": stat}}


def run_metric_queries(region: str, specs: dict[str, MetricSpec], start: datetime, end: datetime) -> dict[str, list[tuple[datetime, float]]]:
    """specs: key -> (namespace, metric, dimensions, stat, period). One batched GetMetricData for all."""
    keys = list(specs)
    queries = [metric_query(f"q{i}", *specs[k]) for i, k in enumerate(keys)]
    res = get_metric_data(region, queries, start, end)
    return {k: res[f"q{i}"] for i, k in enumerate(keys)}


def total(points: list[tuple[datetime, float]]) -> float | None:
    return sum(v for _, v in points) if points else None


def peak(points: list[tuple[datetime, float]]) -> float | None:
    return max(v for _, v in points) if points else None


def minutes_window(minutes: int) -> tuple[datetime, datetime]:
    """The last ``minutes`` up to the next whole second (the current second included)."""
    end = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
    return end - timedelta(minutes=minutes), end


def _avg(res: dict[str, list[tuple[datetime, float]]], key: str) -> float | None:
    s, n = total(res[f"{key}.sum"]), total(res[f"{key}.n"])
    return round(s / n, 1) if s is not None and n else None


def _latency_specs(ns: str, metric: str, dims: dict[str, str], key: str, minutes: int) -> dict[str, MetricSpec]:
    whole = minutes * 60
    return {f"{key}.sum": (ns, metric, dims, "Sum", 60), f"{key}.n": (ns, metric, dims, "SampleCount", 60),
            f"{key}.p95": (ns, metric, dims, "p95", whole), f"{key}.max": (ns, metric, dims, "Maximum", whole)}


def _r(v: float | None) -> float | None:
    return round(v, 1) if v is not None else None


class ApiMetrics(BaseModel):
    api: str
    error: str | None = None
    requests: float | None = None
    errors_5xx: float | None = None
    errors_4xx: float | None = None
    latency_avg_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None
    integration_latency_avg_ms: float | None = None
    integration_latency_p95_ms: float | None = None
    integration_latency_max_ms: float | None = None
    dimensions: str | None = None

    @property
    def has_data(self) -> bool:
        return self.error is None and self.requests is not None

    @property
    def rate_5xx_pct(self) -> float | None:
        if not self.requests or self.errors_5xx is None:
            return None
        return 100.0 * self.errors_5xx / self.requests


@aws_task(iam=["cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def read_api_metrics(system: System, apis: list[ApiGatewayApi], minutes: int = 60) -> dict[str, ApiMetrics]:
    """Count, 5XXError, 4XXError (sums), Latency and IntegrationLatency (avg, p95, max) per API.

    API Gateway publishes each metric by ApiName and by ApiName+Stage: both are asked for in the same batch and
    the ApiName series is used when it has data, else the stage's.
    """
    if not apis:
        return {}
    specs: dict[str, MetricSpec] = {}
    for i, api in enumerate(apis):
        for v, d in enumerate(({"ApiName": api.name}, {"ApiName": api.name, "Stage": api.stage})):
            for metric in ("Count", "5XXError", "4XXError"):
                specs[f"{i}.{v}.{metric}"] = ("AWS/ApiGateway", metric, d, "Sum", 60)
            specs.update(_latency_specs("AWS/ApiGateway", "Latency", d, f"{i}.{v}.lat", minutes))
            specs.update(_latency_specs("AWS/ApiGateway", "IntegrationLatency", d, f"{i}.{v}.ilat", minutes))
    start, end = minutes_window(minutes)
    try:
        res = run_metric_queries(system.region, specs, start, end)
    except Exception as exc:
        reason = aws.describe_error(exc)
        return {a.name: ApiMetrics(api=a.name, error=reason) for a in apis}
    out = {}
    for i, api in enumerate(apis):
        v = 0 if res[f"{i}.0.Count"] or not res[f"{i}.1.Count"] else 1
        k = f"{i}.{v}"
        out[api.name] = ApiMetrics(
            api=api.name, requests=total(res[f"{k}.Count"]), errors_5xx=total(res[f"{k}.5XXError"]), errors_4xx=total(res[f"{k}.4XXError"]),
            latency_avg_ms=_avg(res, f"{k}.lat"), latency_p95_ms=_r(peak(res[f"{k}.lat.p95"])), latency_max_ms=_r(peak(res[f"{k}.lat.max"])),
            integration_latency_avg_ms=_avg(res, f"{k}.ilat"), integration_latency_p95_ms=_r(peak(res[f"{k}.ilat.p95"])),
            integration_latency_max_ms=_r(peak(res[f"{k}.ilat.max"])), dimensions="ApiName" if v == 0 else f"ApiName+Stage={api.stage}")
    return out


class FunctionMetrics(BaseModel):
    function: str
    error: str | None = None
    invocations: float | None = None
    errors: float | None = None
    throttles: float | None = None
    duration_avg_ms: float | None = None
    duration_p95_ms: float | None = None
    duration_max_ms: float | None = None


@aws_task(iam=["cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def read_function_metrics(system: System, functions: list[str], minutes: int = 60) -> dict[str, FunctionMetrics]:
    """Invocations, Errors, Throttles (sums) and Duration (avg, p95, max) per function."""
    if not functions:
        return {}
    specs: dict[str, MetricSpec] = {}
    for i, fn in enumerate(functions):
        d = {"FunctionName": fn}
        for metric in ("Invocations", "Errors", "Throttles"):
            specs[f"{i}.{metric}"] = ("AWS/Lambda", metric, d, "Sum", 60)
        specs.update(_latency_specs("AWS/Lambda", "Duration", d, f"{i}.dur", minutes))
    start, end = minutes_window(minutes)
    try:
        res = run_metric_queries(system.region, specs, start, end)
    except Exception as exc:
        reason = aws.describe_error(exc)
        return {f: FunctionMetrics(function=f, error=reason) for f in functions}
    return {fn: FunctionMetrics(function=fn, invocations=total(res[f"{i}.Invocations"]), errors=total(res[f"{i}.Errors"]),
                                throttles=total(res[f"{i}.Throttles"]), duration_avg_ms=_avg(res, f"{i}.dur"),
                                duration_p95_ms=_r(peak(res[f"{i}.dur.p95"])), duration_max_ms=_r(peak(res[f"{i}.dur.max"])))
            for i, fn in enumerate(functions)}


class UsageMetrics(BaseModel):
    error: str | None = None
    invocations: dict[str, float | None] = Field(default_factory=dict)  # function -> sum in the window
    invocations_per_minute: dict[str, dict[str, float]] = Field(default_factory=dict)
    model_invocations: dict[str, float | None] = Field(default_factory=dict)
    model_throttles: dict[str, float | None] = Field(default_factory=dict)
    model_tokens: dict[str, float | None] = Field(default_factory=dict)  # input + output

    def tokens_per_call(self, model: str) -> float | None:
        n, tok = self.model_invocations.get(model), self.model_tokens.get(model)
        return tok / n if n and tok else None


@aws_task(iam=["cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def read_invocations(system: System, functions: list[str], models: list[str], minutes: int = 60) -> UsageMetrics:
    """Lambda Invocations per function and minute; Bedrock's own metrics per model (AWS/Bedrock, ModelId)."""
    specs: dict[str, MetricSpec] = {}
    for i, fn in enumerate(functions):
        specs[f"f{i}"] = ("AWS/Lambda", "Invocations", {"FunctionName": fn}, "Sum", 60)
    for j, model in enumerate(models):
        for metric in ("Invocations", "InvocationThrottles", "InputTokenCount", "OutputTokenCount"):
            specs[f"m{j}.{metric}"] = ("AWS/Bedrock", metric, {"ModelId": model}, "Sum", 60)
    if not specs:
        return UsageMetrics()
    start, end = minutes_window(minutes)
    try:
        res = run_metric_queries(system.region, specs, start, end)
    except Exception as exc:
        return UsageMetrics(error=aws.describe_error(exc))
    out = UsageMetrics()
    for i, fn in enumerate(functions):
        out.invocations[fn] = total(res[f"f{i}"])
        out.invocations_per_minute[fn] = {ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"): v for ts, v in res[f"f{i}"]}
    for j, model in enumerate(models):
        out.model_invocations[model] = total(res[f"m{j}.Invocations"])
        out.model_throttles[model] = total(res[f"m{j}.InvocationThrottles"])
        inp, outp = total(res[f"m{j}.InputTokenCount"]), total(res[f"m{j}.OutputTokenCount"])
        out.model_tokens[model] = (inp or 0) + (outp or 0) if inp is not None or outp is not None else None
    return out


# --- availability: requests and 5XX of the system's APIs and load-balanced services (daily-health) -----------------

AVAILABILITY_WINDOW_H = 24.0  # daily-health's window, as its log scans


class TrafficSubject(BaseModel):
    """What one availability is measured on: an API or a service's target group, the Sums that count its requests and
    5XX (``opsbook.availability.ROLES``), or why they cannot be read."""

    subject: str
    kind: str  # apigateway | alb
    series: list[MetricSeries] = Field(default_factory=list)
    source: str = ""
    service: str | None = None
    error: str | None = None


def api_traffic(api: str) -> TrafficSubject:
    """API Gateway's Count and 5XXError by ApiName: every stage of the API (the dimension weekly-report reads)."""
    d = [{"ApiName": api}]
    return TrafficSubject(subject=api, kind="apigateway", source="AWS/ApiGateway Count and 5XXError by ApiName",
                          series=[MetricSeries(namespace="AWS/ApiGateway", metric=m, stat="Sum", dimension_sets=d) for m in ("Count", "5XXError")])


def alb_traffic(t: AlbTarget) -> TrafficSubject:
    """The target group's RequestCount and HTTPCode_Target_5XX_Count (LoadBalancer + TargetGroup), and each load balancer's own
    HTTPCode_ELB_5XX_Count (LoadBalancer only: every target group behind it), summed over the load balancers."""
    name = t.target_group.rsplit("/", 2)[-2] if t.target_group.startswith("arn:") else t.target_group
    if t.error is not None:
        return TrafficSubject(subject=name, kind="alb", service=t.service, error=t.error, source="elbv2 DescribeTargetGroups")
    pair = [{"LoadBalancer": lb, "TargetGroup": t.target_group_dim or ""} for lb in t.load_balancer_dims]
    lbs = [{"LoadBalancer": lb} for lb in t.load_balancer_dims]
    return TrafficSubject(subject=name, kind="alb", service=t.service,
                          source=(f"AWS/ApplicationELB RequestCount and HTTPCode_Target_5XX_Count of {t.target_group_dim} behind "
                                  f"{', '.join(t.load_balancer_dims)}, plus the load balancer's HTTPCode_ELB_5XX_Count (in requests and 5XX)"),
                          series=[MetricSeries(namespace="AWS/ApplicationELB", metric="RequestCount", stat="Sum", dimension_sets=pair),
                                  MetricSeries(namespace="AWS/ApplicationELB", metric="HTTPCode_Target_5XX_Count", stat="Sum", dimension_sets=pair),
                                  MetricSeries(namespace="AWS/ApplicationELB", metric="HTTPCode_ELB_5XX_Count", stat="Sum", dimension_sets=lbs)])


def read_traffic(region: str, subjects: list[TrafficSubject], start: datetime, end: datetime) -> list[Traffic]:
    """Each subject's requests and 5XX over [start, end): one batched GetMetricData for all (one period over the window);
    a subject that could not be resolved, or a read that failed, carries the reason."""
    period = max(60, int((end - start).total_seconds()) // 60 * 60)
    specs: dict[str, MetricSpec] = {f"{n}.{m}.{j}": (s.namespace, s.metric, dims, "Sum", period)
                                    for n, sub in enumerate(subjects) if sub.error is None
                                    for m, s in enumerate(sub.series) for j, dims in enumerate(s.dimension_sets)}
    res: dict[str, list[tuple[datetime, float]]] = {}
    reason = None
    try:
        res = run_metric_queries(region, specs, end - timedelta(seconds=period), end) if specs else {}
    except Exception as exc:  # every subject read in the batch is then unknown, with the reason
        reason = f"GetMetricData: {aws.describe_error(exc)}"
    out = []
    for n, sub in enumerate(subjects):
        base = {"subject": sub.subject, "kind": sub.kind, "source": sub.source, "service": sub.service}
        if sub.error is not None or reason is not None:
            out.append(Traffic(**base, error=sub.error or reason))
            continue
        sums = [((s.namespace, s.metric), _sum_or_none([total(res[f"{n}.{m}.{j}"]) for j in range(len(s.dimension_sets))]))
                for m, s in enumerate(sub.series)]
        req, err = add_counts(sums)
        out.append(Traffic(**base, requests=req, errors=err))
    return out


def _sum_or_none(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) if got else None


@aws_task(iam=["cloudwatch:GetMetricData", "apigateway:GET"], name="check-availability",
          cache_policy=NO_CACHE)
def check_availability(system: System, found: Discovered, targets: list[AlbTarget], deadline: aws.Deadline,
                       hours: float = AVAILABILITY_WINDOW_H) -> list[Finding]:
    """Availability over the last ``hours`` against ``thresholds.availability_slo_pct`` and the error budget left, for every
    API (named and tag-discovered: GetRestApis only when discovery found some) and every ECS service's target group
    (``targets``: read_alb_targets); one GetMetricData for all. No SLO: no finding, no call."""
    th = system.thresholds
    if th.availability_slo_pct is None:
        return []
    out: list[Finding] = []
    try:
        apis = all_api_names(system, found)
    except Exception as exc:  # the named APIs are still measured
        apis = [a.name for a in system.api_gateway_apis]
        out.append(unknown(AVAILABILITY, "(tag-discovered APIs)", f"GetRestApis: {aws.describe_error(exc)}"))
    subjects = [api_traffic(a) for a in apis] + [alb_traffic(t) for t in targets]
    if not subjects:
        return out + nothing_to_measure(system.name, th)
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    window = f"the last {hours:g} h"
    return out + [f for t in read_traffic(system.region, subjects, end - timedelta(hours=hours), end) if (f := judge_availability(t, th, window))]


# --- the target groups' metrics of the last hour (001 P1 서비스 성능 저하: response time p95, target 5XX, unhealthy hosts) ---

WINDOW_PERIOD_S = 3600  # the window, one period (sums and the p95 of the hour)
HOSTS_PERIOD_S = 60  # host counts a minute: the newest is now's
ALB_SERIES = {"requests": ("RequestCount", "Sum", WINDOW_PERIOD_S), "errors_5xx": ("HTTPCode_Target_5XX_Count", "Sum", WINDOW_PERIOD_S),
              "p95_s": ("TargetResponseTime", "p95", WINDOW_PERIOD_S), "unhealthy": ("UnHealthyHostCount", "Maximum", HOSTS_PERIOD_S),
              "healthy": ("HealthyHostCount", "Minimum", HOSTS_PERIOD_S)}


def alb_dims(t: AlbTarget) -> dict[str, str]:
    return {"TargetGroup": t.target_group_dim or "", "LoadBalancer": t.load_balancer_dims[0]}


def alb_queries(dims: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [metric_query(f"t{i}_{key}", "AWS/ApplicationELB", metric, d, stat, period)
            for i, d in enumerate(dims) for key, (metric, stat, period) in ALB_SERIES.items()]


def alb_values(i: int, data: dict[str, list[tuple[datetime, float]]]) -> dict[str, float | None]:
    """The window's value of each series of target group ``i``: its one datapoint, the newest minute for host counts."""
    out: dict[str, float | None] = {}
    for key, (_, stat, period) in ALB_SERIES.items():
        points = data.get(f"t{i}_{key}", [])  # newest first
        out[key] = (sum(v for _, v in points) if stat == "Sum" else points[0][1]) if points else None
    return out


@aws_task(iam=["cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def check_target_metrics(system: System, targets: list[AlbTarget], hours: float = 1) -> list[Finding]:
    """Each ECS service's target group (``targets``: read_alb_targets, DescribeTargetGroups): response time p95, target 5XX
    against requests, unhealthy hosts over the last hour (AWS/ApplicationELB, TargetGroup + LoadBalancer), one batched
    GetMetricData."""
    readable = [t for t in targets if t.error is None]
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    data: dict[str, list[tuple[datetime, float]]] = {}
    metrics_err = None
    if readable:
        try:
            data = get_metric_data(system.region, alb_queries([alb_dims(t) for t in readable]), end - timedelta(hours=hours), end)
        except Exception as exc:  # every target group's numbers are then unknown, with the reason
            metrics_err = f"GetMetricData: {aws.describe_error(exc)}"
    pos = {id(t): i for i, t in enumerate(readable)}
    out: list[Finding] = []
    for t in targets:
        if t.error is not None:
            out += judge_target_group(None, t.target_group, t.service, system.thresholds, t.error, hours)
        else:
            m = TargetGroupMetrics(target_group=t.target_group, service=t.service, dimensions=alb_dims(t), **alb_values(pos[id(t)], data))
            out += judge_target_group(m, t.target_group, t.service, system.thresholds, metrics_err, hours)
    return out


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


# --- token usage per dimension value over a sliding window (bill-shock-breaker) ------------------------

from pydantic import BaseModel, Field  # noqa: E402  (this section is appended)

from opsbook.inventory import BillShock  # noqa: E402


class TokenUsage(BaseModel):
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
def read_token_usage(system: System, now: datetime | None = None) -> TokenUsage:
    cfg = system.bill_shock
    assert cfg is not None
    end = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
    log = aws.current_call_log()
    before = log.total if log else 0
    cases = _dimension_values(system, cfg, cfg.case_dimension)
    users = _dimension_values(system, cfg, cfg.user_dimension)
    usage = TokenUsage(window_minutes=cfg.window_minutes, cases=_series(system, cfg, cfg.case_dimension, cases, end),
                  users=_series(system, cfg, cfg.user_dimension, users, end))
    usage.calls = (log.total - before) if log else 0
    return usage
