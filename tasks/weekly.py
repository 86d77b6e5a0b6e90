"""weekly-report: week-over-week trends of a system's metrics, users and cost (read-only).

Collection (AWS tasks) is apart from judgement (pure functions over the
``Trend`` models) and rendering (markdown with sparklines, a table of the
series, and an HTML page from ``templates/weekly_report.html.j2`` with pygal
SVG charts inlined: no script, no external URL, it renders offline).

- Every metric of both weeks is read in one ``get_metric_data`` call batch: per
  series a daily query (Period 86400, for the sparkline and the charts) and a
  weekly query (Period 604800, for the week's value: a week's p95 is not
  derivable from daily p95s).
- A series with no datapoint in either week is never a 0 % change. What it
  means depends on the series, and the report says which:
  - an SLO metric without data is UNKNOWN (nobody can say the SLO is met);
  - a resource whose activity metric (invocations, requests, consumed
    capacity, storage) has no datapoint in either week is idle: CloudWatch
    publishes nothing without activity. Idle resources are one OK line per
    kind ("54 tables had no consumed capacity in either week: ...");
  - metrics published only when something happens (errors, throttles) on an
    active resource: none happened, one OK line per kind;
  - an idle resource that tag discovery did not see is looked up
    (``confirm_idle``): one that does not exist, or that cannot be looked up, is
    UNKNOWN with the reason, one finding per cause;
  - any other metric without data on an active resource is UNKNOWN.
- Success rate (custom metrics named ``*Success``): each datapoint is one
  generation, 1 for success and 0 for failure (seed 001 publishes
  GenerationSuccess and reads its Sum), so rate = Sum / SampleCount of the week
  and error rate = 100 - rate, judged against ``thresholds.error_rate_slo_pct``.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import jinja2
import pygal
from markupsafe import Markup
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field
from pygal.style import Style

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System
from opsbook.masking import mask
from opsbook.resources import Discovered
from tasks.awslambda import function_names
from tasks.cloudwatch import get_metric_data
from tasks.dynamodb import table_names
from tasks.s3 import buckets

DAY = 86400
WEEK = 7 * DAY
NOTABLE_PCT = 25.0  # a week-over-week change at least this large is called out
# DynamoDB publishes ThrottledRequests per (TableName, Operation) only; the report sums these.
# The metrics a resource publishes whenever it is used: none in either week means it was idle.
ACTIVITY = {"lambda": ("Invocations",), "apigateway": ("Count",), "dynamodb": ("ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits"),
            "s3": ("BucketSizeBytes", "NumberOfObjects")}
KINDS = ("custom", "lambda", "apigateway", "dynamodb", "s3")
NOUNS = {"custom": "custom metrics", "lambda": "functions", "apigateway": "APIs", "dynamodb": "tables", "s3": "buckets"}
IDLE_TEXT = {
    "custom": "had no datapoints in either week: nothing was published, so nothing can be said of them; check their publisher",
    "lambda": "had no invocations in either week",
    "apigateway": "had no requests in either week",
    "dynamodb": "had no consumed capacity in either week",
    "s3": "had no storage datapoints in either week (S3 reports storage once a day, for a bucket that holds objects)",
}
DDB_OPERATIONS = ["GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem", "BatchWriteItem", "TransactGetItems", "TransactWriteItems"]


# --- models ----------------------------------------------------------------------------


class Window(BaseModel):
    """Two whole weeks of local days: [start, mid) is last week, [mid, end) this week."""

    start: datetime
    end: datetime
    timezone: str

    @property
    def mid(self) -> datetime:
        return self.start + timedelta(days=7)

    def days(self) -> list[date]:
        tz = self.start.tzinfo
        return [(self.start + timedelta(days=i)).astimezone(tz).date() for i in range(14)]


def week_window(system: System, weeks_back: int = 0, now: datetime | None = None) -> Window:
    """The 7 local days before today (minus ``weeks_back`` weeks) and the 7 before those."""
    now = (now or datetime.now(system.tz)).astimezone(system.tz)
    end = datetime.combine(now.date(), time(0), tzinfo=system.tz) - timedelta(days=7 * weeks_back)
    return Window(start=end - timedelta(days=14), end=end, timezone=system.timezone)


class Series(BaseModel):
    """One trend line: a metric statistic of one resource (summed over ``dimension_sets``)."""

    kind: str  # custom, lambda, apigateway, dynamodb, s3
    resource: str
    namespace: str
    metric: str
    stat: str
    dimension_sets: list[dict[str, str]] = Field(default_factory=lambda: [{}])
    unit: str = ""
    sparse: bool = False  # published only when it happens (errors, throttles): no data is normal
    bad_when_up: bool = False
    slo: float | None = None
    slo_kind: str | None = None  # max | min
    hidden: bool = False  # read for a derived value (SampleCount for a rate), not shown

    @property
    def activity(self) -> bool:
        """No datapoint of this metric in either week means that the subject was idle."""
        return self.kind == "custom" or self.metric in ACTIVITY.get(self.kind, ())

    @property
    def label(self) -> str:
        return f"{self.metric} {self.stat}"

    @property
    def key(self) -> str:
        """The finding's resource for this series."""
        return f"{self.resource} {self.label}"

    @property
    def subject(self) -> str:
        """What is idle when the series has no data: the resource, or for custom metrics the metric."""
        return f"{self.namespace} {self.metric}" if self.kind == "custom" else self.resource


class Trend(BaseModel):
    series: Series
    daily: list[float | None]  # 14 local days, oldest first
    last_week: float | None
    this_week: float | None

    @property
    def no_data(self) -> bool:
        return self.last_week is None and self.this_week is None and all(v is None for v in self.daily)

    @property
    def change_pct(self) -> float | None:
        a, b = self.last_week, self.this_week
        if a is None or b is None:
            return None
        if a == 0:
            return 0.0 if b == 0 else None
        return round((b - a) / abs(a) * 100, 1)


class CostReport(BaseModel):
    by_service: dict[str, tuple[float, float]] = Field(default_factory=dict)  # service -> (last week, this week)
    daily: list[float | None] = Field(default_factory=list)
    unit: str = "USD"
    error: str | None = None

    def totals(self) -> tuple[float, float]:
        return sum(v[0] for v in self.by_service.values()), sum(v[1] for v in self.by_service.values())


# --- the series a system has ------------------------------------------------------------


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


def is_success_metric(name: str, statistic: str) -> bool:
    return name.endswith("Success") and statistic == "Sum"


def plan_series(system: System, found: Discovered, api_names: list[str]) -> list[Series]:
    """Every series of the report (pure: tested without AWS)."""
    out = _custom_series(system)
    for fn in function_names(system, found):
        d = [{"FunctionName": fn}]
        out += [
            Series(kind="lambda", resource=fn, namespace="AWS/Lambda", metric="Invocations", stat="Sum", dimension_sets=d),
            Series(kind="lambda", resource=fn, namespace="AWS/Lambda", metric="Errors", stat="Sum", dimension_sets=d, sparse=True, bad_when_up=True),
            Series(kind="lambda", resource=fn, namespace="AWS/Lambda", metric="Throttles", stat="Sum", dimension_sets=d, sparse=True, bad_when_up=True),
            Series(kind="lambda", resource=fn, namespace="AWS/Lambda", metric="Duration", stat="Average", dimension_sets=d, unit="Milliseconds", bad_when_up=True),
            Series(kind="lambda", resource=fn, namespace="AWS/Lambda", metric="Duration", stat="p95", dimension_sets=d, unit="Milliseconds", bad_when_up=True),
        ]
    api_slo = system.thresholds.api_p95_slo_ms
    for api in api_names:
        d = [{"ApiName": api}]
        out += [
            Series(kind="apigateway", resource=api, namespace="AWS/ApiGateway", metric="Count", stat="Sum", dimension_sets=d),
            Series(kind="apigateway", resource=api, namespace="AWS/ApiGateway", metric="4XXError", stat="Sum", dimension_sets=d, sparse=True, bad_when_up=True),
            Series(kind="apigateway", resource=api, namespace="AWS/ApiGateway", metric="5XXError", stat="Sum", dimension_sets=d, sparse=True, bad_when_up=True),
            Series(kind="apigateway", resource=api, namespace="AWS/ApiGateway", metric="Latency", stat="Average", dimension_sets=d, unit="Milliseconds", bad_when_up=True),
            Series(kind="apigateway", resource=api, namespace="AWS/ApiGateway", metric="Latency", stat="p95", dimension_sets=d, unit="Milliseconds",
                   bad_when_up=True, slo=api_slo, slo_kind="max" if api_slo else None),
        ]
    for t in table_names(system, found):
        d = [{"TableName": t}]
        for m in ("ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits"):
            out += [Series(kind="dynamodb", resource=t, namespace="AWS/DynamoDB", metric=m, stat="Average", dimension_sets=d),
                    Series(kind="dynamodb", resource=t, namespace="AWS/DynamoDB", metric=m, stat="Maximum", dimension_sets=d)]
        out.append(Series(kind="dynamodb", resource=t, namespace="AWS/DynamoDB", metric="ThrottledRequests", stat="Sum",
                          dimension_sets=[{"TableName": t, "Operation": op} for op in DDB_OPERATIONS], sparse=True, bad_when_up=True))
        for m in ("ReadThrottleEvents", "WriteThrottleEvents"):
            out.append(Series(kind="dynamodb", resource=t, namespace="AWS/DynamoDB", metric=m, stat="Sum", dimension_sets=d, sparse=True, bad_when_up=True))
    for b in buckets(system, found):
        out += [
            Series(kind="s3", resource=b.name, namespace="AWS/S3", metric="BucketSizeBytes", stat="Average",
                   dimension_sets=[{"BucketName": b.name, "StorageType": "StandardStorage"}], unit="Bytes"),
            Series(kind="s3", resource=b.name, namespace="AWS/S3", metric="NumberOfObjects", stat="Average",
                   dimension_sets=[{"BucketName": b.name, "StorageType": "AllStorageTypes"}], unit="Count"),
        ]
    return out


def metric_queries(series: list[Series]) -> list[dict[str, Any]]:
    """Two queries per (series, dimension set): ``d{i}_{j}`` daily and ``w{i}_{j}`` weekly."""
    qs = []
    for i, s in enumerate(series):
        for j, dims in enumerate(s.dimension_sets):
            metric = {"Namespace": s.namespace, "MetricName": s.metric, "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]}
            for prefix, period in (("d", DAY), ("w", WEEK)):
                qs.append({"Id": f"{prefix}{i}_{j}", "MetricStat": {"Metric": metric, "Period": period, "Stat": s.stat}, "ReturnData": True})
    return qs


def _bucket(points: list[tuple[datetime, float | None]], start: datetime, period: int, n: int, combine_sum: bool) -> list[float | None]:
    out: list[float | None] = [None] * n
    for ts, v in points:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        k = int((ts - start).total_seconds() // period)
        if 0 <= k < n:
            out[k] = v if out[k] is None or not combine_sum else out[k] + v  # type: ignore[operator]
    return out


def build_trends(series: list[Series], data: dict[str, list[tuple[datetime, float]]], window: Window) -> list[Trend]:
    """Daily and weekly values per series; a series over several dimension sets is their sum (Sum statistics only)."""
    start = window.start.astimezone(timezone.utc)
    trends = []
    for i, s in enumerate(series):
        daily: list[float | None] = [None] * 14
        weekly: list[float | None] = [None] * 2
        for j in range(len(s.dimension_sets)):
            for target, prefix, period, n in ((daily, "d", DAY, 14), (weekly, "w", WEEK, 2)):
                part = _bucket(data.get(f"{prefix}{i}_{j}", []), start, period, n, combine_sum=True)
                for k, v in enumerate(part):
                    if v is not None:
                        target[k] = v if target[k] is None else target[k] + v  # type: ignore[operator]
        trends.append(Trend(series=s, daily=daily, last_week=weekly[0], this_week=weekly[1]))
    return trends


# --- collection (AWS) --------------------------------------------------------------------


@aws_task(iam=["apigateway:GET"], cache_policy=NO_CACHE)
def api_names(system: System, found: Discovered) -> list[str]:
    """API names (CloudWatch's ApiName dimension): the inventory's, plus tag-discovered ids mapped to names."""
    names = [a.name for a in system.api_gateway_apis]
    if not found.api_gateway_ids:
        return names
    by_id = {a["id"]: a["name"] for a in aws.paginate(aws.client("apigateway", system.region), "get_rest_apis", "items")}
    return names + [by_id[i] for i in found.api_gateway_ids if i in by_id and by_id[i] not in names]


@aws_task(iam=["cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def read_trends(system: System, series: list[Series], window: Window) -> list[Trend]:
    """Every metric of both weeks in one get_metric_data call batch (500 queries a call, every page)."""
    if not series:
        return []
    data = get_metric_data(system.region, metric_queries(series), window.start.astimezone(timezone.utc), window.end.astimezone(timezone.utc))
    return build_trends(series, data, window)


class Unreadable(BaseModel):
    """A resource without datapoints that could not be shown to exist: not an idle one."""

    kind: str
    resource: str
    code: str  # the error code: the cause findings are grouped by
    reason: str
    not_found: bool = False


def unconfirmed(system: System, found: Discovered, apis: list[str], idle: dict[str, list[str]]) -> dict[str, list[str]]:
    """Idle resources nothing has shown to exist: named in the inventory only (tag discovery and the API listing prove the others)."""
    seen = {"lambda": set(found.lambda_functions), "dynamodb": set(found.dynamodb_tables), "s3": set(found.s3_buckets),
            "apigateway": set(apis) - {a.name for a in system.api_gateway_apis}}
    out = {kind: [n for n in names if n not in seen[kind]] for kind, names in idle.items() if kind in seen}
    return {kind: names for kind, names in out.items() if names}


_LOOKUP = {"lambda": ("lambda", "get_function_configuration", "FunctionName"), "dynamodb": ("dynamodb", "describe_table", "TableName"),
           "s3": ("s3", "head_bucket", "Bucket")}


def _unreadable(kind: str, name: str, exc: BaseException) -> Unreadable:
    return Unreadable(kind=kind, resource=name, code=aws.error_code(exc), reason=aws.describe_error(exc), not_found=aws.is_not_found(exc))


@aws_task(iam=["lambda:GetFunctionConfiguration", "dynamodb:DescribeTable", "s3:ListBucket", "apigateway:GET"], cache_policy=NO_CACHE)
def confirm_idle(system: System, names: dict[str, list[str]]) -> list[Unreadable]:
    """Look up idle resources (a missing resource has no datapoints either); returns those missing or not readable."""
    out: list[Unreadable] = []
    for kind, items in names.items():
        if kind == "apigateway":
            try:
                existing = {a["name"] for a in aws.paginate(aws.client("apigateway", system.region), "get_rest_apis", "items")}
            except Exception as exc:  # every API asked about is then UNKNOWN with the reason
                out += [_unreadable(kind, n, exc) for n in items]
                continue
            out += [Unreadable(kind=kind, resource=n, code="NotFoundException", reason=f"GetRestApis lists no API named {n}", not_found=True)
                    for n in items if n not in existing]
            continue
        service, operation, param = _LOOKUP[kind]
        c = aws.client(service, system.region)
        out += [_unreadable(kind, n, err) for n, _, err in aws.parallel(lambda n: getattr(c, operation)(**{param: n}), items) if err is not None]
    return out


@aws_task(iam=["dynamodb:Scan"], cache_policy=NO_CACHE)
def count_distinct_users(system: System) -> list[Finding]:
    """Distinct values of each table's ``user_attribute``: a projected Scan over every page (seed 001 사용자 수)."""
    findings = []
    c = aws.client("dynamodb", system.region)
    for t in system.dynamodb_tables:
        if not t.user_attribute:
            continue
        users: set[str] = set()
        items = 0
        try:
            for item in aws.paginate(c, "scan", "Items", TableName=t.name, ProjectionExpression="#u", ExpressionAttributeNames={"#u": t.user_attribute}):
                items += 1
                v = item.get(t.user_attribute)
                if v:
                    users.add(str(next(iter(v.values()))))
        except Exception as exc:  # the finding is UNKNOWN with the reason
            findings.append(unknown("users", t.name, aws.describe_error(exc)))
            continue
        findings.append(Finding(check="users", resource=t.name, status=Status.OK, value=len(users),
                                summary=f"{len(users):,} distinct {t.user_attribute} over {items:,} items (whole table)",
                                details={"attribute": t.user_attribute, "items": items, "distinct": len(users)}))
    return findings


@aws_task(iam=["ce:GetCostAndUsage"], cache_policy=NO_CACHE)
def read_costs(system: System, window: Window) -> CostReport:
    """Unblended cost by SERVICE, daily, for both weeks (Cost Explorer days are UTC; the account's whole bill)."""
    c = aws.client("ce", "us-east-1")  # Cost Explorer's one endpoint
    start_d, end_d = window.start.date(), window.end.date()
    kwargs: dict[str, Any] = dict(TimePeriod={"Start": start_d.isoformat(), "End": end_d.isoformat()}, Granularity="DAILY",
                                  Metrics=["UnblendedCost"], GroupBy=[{"Type": "DIMENSION", "Key": "SERVICE"}])
    results: list[dict[str, Any]] = []
    try:
        while True:
            page = c.get_cost_and_usage(**kwargs)
            results += page.get("ResultsByTime", [])
            if not page.get("NextPageToken"):
                break
            kwargs["NextPageToken"] = page["NextPageToken"]
    except Exception as exc:
        return CostReport(error=aws.describe_error(exc))
    return summarize_costs(results, start_d)


def summarize_costs(results: list[dict[str, Any]], start: date) -> CostReport:
    mid = start + timedelta(days=7)
    by_service: dict[str, list[float]] = {}
    daily: list[float | None] = [None] * 14
    unit = "USD"
    groups_seen = 0
    for r in results:
        day = date.fromisoformat(r["TimePeriod"]["Start"])
        k = (day - start).days
        for g in r.get("Groups", []):
            groups_seen += 1
            amt = g["Metrics"]["UnblendedCost"]
            unit = amt.get("Unit", unit)
            v = float(amt["Amount"])
            by_service.setdefault(g["Keys"][0], [0.0, 0.0])[0 if day < mid else 1] += v
            if 0 <= k < 14:
                daily[k] = (daily[k] or 0.0) + v
    if not groups_seen:
        return CostReport(error=f"Cost Explorer returned no cost data for {start} to {start + timedelta(days=14)} "
                                f"({len(results)} periods, no service groups): not enabled for the account, no access, or nothing billed; not shown as $0")
    return CostReport(by_service={k: (round(v[0], 2), round(v[1], 2)) for k, v in by_service.items()}, daily=daily, unit=unit)


# --- judgement (pure) -----------------------------------------------------------------------


def fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    if unit == "Bytes":
        for u in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(v) < 1024 or u == "TiB":
                return f"{v:,.1f} {u}"
            v /= 1024
    suffix = {"Seconds": " s", "Milliseconds": " ms", "%": " %"}.get(unit, "")
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:,.0f}{suffix}"
    return f"{v:,.2f}{suffix}"


def change_text(t: Trend) -> str:
    if t.no_data:
        return "no data"
    c = t.change_pct
    if c is None:
        if t.last_week in (None, 0) and t.this_week not in (None, 0):
            return "new this week"
        if t.this_week is None:
            return "no data this week"
        return "n/a"
    return f"{c:+.1f} %"


def trend_check(s: Series) -> str:
    return f"trend-{s.kind}"


def names_text(names: list[str], limit: int = 3) -> str:
    """'a, b, c and 9 more'."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _breach(s: Series, v: float) -> bool:
    assert s.slo is not None
    return v > s.slo if s.slo_kind != "min" else v < s.slo


def judge_trend(t: Trend) -> Finding:
    """A series with data in at least one week (``judge_trends`` says what no data means)."""
    s = t.series
    details: dict[str, Any] = {"metric": s.metric, "stat": s.stat, "unit": s.unit, "daily": t.daily,
                               "last_week": t.last_week, "this_week": t.this_week, "change_pct": t.change_pct, "no_data": t.no_data}
    text = f"{fmt(t.this_week, s.unit)} this week vs {fmt(t.last_week, s.unit)} last week ({change_text(t)})"
    status = Status.OK
    if s.slo is not None:
        details.update(slo=s.slo, slo_kind=s.slo_kind)
        if t.this_week is None:
            return Finding(check=trend_check(s), resource=s.key, status=Status.UNKNOWN, details=details,
                           summary=f"{text}: no datapoint this week, nobody can say that the {fmt(s.slo, s.unit)} SLO is met")
        breached = _breach(s, t.this_week)
        days = [v for v in t.daily[7:] if v is not None and _breach(s, v)]
        details.update(slo_breached=breached, days_breaching=len(days))
        if breached:
            far = t.this_week >= 1.5 * s.slo if s.slo_kind != "min" else t.this_week <= s.slo / 1.5
            status = Status.CRIT if far else Status.WARN
            text += f"; SLO BREACH: {s.stat} {fmt(t.this_week, s.unit)} {'>' if s.slo_kind != 'min' else '<'} {fmt(s.slo, s.unit)} ({len(days)} of 7 days)"
    c = t.change_pct
    notable = (c is not None and abs(c) >= NOTABLE_PCT) or change_text(t) == "new this week"
    details["notable"] = notable
    if notable:
        text += "; notable change"
        if s.bad_when_up and (c is None or c > 0) and status is Status.OK:
            status = Status.WARN
    return Finding(check=trend_check(s), resource=s.key, status=status, value=t.this_week, details=details, summary=text)


def slo_covered(trends: list[Trend]) -> set[tuple[str, str]]:
    """Custom metrics an SLO finding speaks for: a series with an SLO, or a success count (the success rate's SLO)."""
    return {(t.series.namespace, t.series.metric) for t in trends
            if t.series.kind == "custom" and (t.series.slo is not None or is_success_metric(t.series.metric, t.series.stat))}


def idle_resources(trends: list[Trend]) -> dict[str, list[str]]:
    """Per kind, the subjects whose activity metrics have no datapoint in either week, in plan order (pure)."""
    covered = slo_covered(trends)
    subjects: dict[str, list[str]] = {}
    active: set[tuple[str, str]] = set()
    for t in trends:
        s = t.series
        if s.hidden or not s.activity or (s.kind == "custom" and (s.namespace, s.metric) in covered):
            continue
        if s.subject not in subjects.setdefault(s.kind, []):
            subjects[s.kind].append(s.subject)
        if not t.no_data:
            active.add((s.kind, s.subject))
    idle = {kind: [n for n in names if (kind, n) not in active] for kind, names in subjects.items()}
    return {kind: names for kind, names in idle.items() if names}


def noun(kind: str, n: int) -> str:
    return NOUNS[kind] if n != 1 else NOUNS[kind][:-1]


def _idle_finding(kind: str, names: list[str]) -> Finding:
    """An idle function, API, table or bucket is a fact (OK); a custom metric the inventory lists that nobody
    published for two weeks is a publisher that stopped, or a renamed metric: UNKNOWN, never OK."""
    return Finding(check="idle", resource=NOUNS[kind], status=Status.UNKNOWN if kind == "custom" else Status.OK, value=len(names),
                   summary=f"{len(names)} {noun(kind, len(names))} {IDLE_TEXT[kind]}: {names_text(names)}",
                   details={"kind": kind, "resources": names})


def _quiet_finding(kind: str, by_metric: dict[str, list[str]], active: int) -> Finding:
    everywhere = [m for m, ns in by_metric.items() if len(ns) == active]
    parts = [f"{', '.join(everywhere)} on {'the' if active == 1 else f'all {active}'} active {noun(kind, active)}"] if everywhere else []
    parts += [f"{m} on {len(ns)} of {active} ({names_text(ns)})" for m, ns in by_metric.items() if len(ns) != active]
    return Finding(check="none-happened", resource=NOUNS[kind], status=Status.OK,
                   summary="no datapoint in either week, none happened (CloudWatch publishes these only when they do): " + "; ".join(parts),
                   details={"kind": kind, "active": active, "by_metric": by_metric})


def judge_unreadable(items: list[Unreadable]) -> list[Finding]:
    """One UNKNOWN per cause (kind and error code): resources without datapoints that could not be shown to exist."""
    groups: dict[tuple[str, str], list[Unreadable]] = {}
    for u in items:
        groups.setdefault((u.kind, u.code), []).append(u)
    out = []
    for (kind, code), us in groups.items():
        names = [u.resource for u in us]
        one = len(us) == 1
        if us[0].not_found:
            text = (f"{len(us)} {noun(kind, len(us))} named in the inventory {'does' if one else 'do'} not exist ({code}), so "
                    f"{'it has' if one else 'they have'} no datapoints: {names_text(names)}; fix the inventory or the deployment")
        else:
            text = f"{len(us)} {noun(kind, len(us))} without datapoints could not be looked up: {us[0].reason}: {names_text(names)}"
        out.append(Finding(check="unreadable", resource=f"{NOUNS[kind]} ({code})", status=Status.UNKNOWN, value=len(us), summary=text,
                           details={"kind": kind, "code": code, "resources": names, "reasons": [u.reason for u in us]}))
    return out


def _slo_no_data(t: Trend) -> Finding:
    s = t.series
    return Finding(check=trend_check(s), resource=s.key, status=Status.UNKNOWN,
                   details={"metric": s.metric, "stat": s.stat, "no_data": True, "slo": s.slo, "slo_kind": s.slo_kind},
                   summary=(f"no datapoint in either week: nobody can say that the {fmt(s.slo, s.unit)} SLO is met "
                            f"(not published, or under other dimensions than {s.dimension_sets[0] or 'none'})"))


def judge_trends(trends: list[Trend], unreadable: list[Unreadable]) -> list[Finding]:
    """Every series: judged when it has data, else by what no data means (see the module's docstring)."""
    idle = idle_resources(trends)
    missing = {(u.kind, u.resource) for u in unreadable}
    covered = slo_covered(trends)
    findings: list[Finding] = []
    quiet: dict[str, dict[str, list[str]]] = {}
    for t in trends:
        s = t.series
        if s.hidden:
            continue
        if not t.no_data:
            findings.append(judge_trend(t))
        elif s.slo is not None:
            findings.append(_slo_no_data(t))
        elif (s.kind == "custom" and (s.namespace, s.metric) in covered) or s.subject in idle.get(s.kind, ()):
            continue
        elif s.sparse or s.activity:
            names = quiet.setdefault(s.kind, {}).setdefault(s.metric, [])
            names += [] if s.subject in names else [s.subject]
        else:
            findings.append(Finding(check=trend_check(s), resource=s.key, status=Status.UNKNOWN, details={"no_data": True},
                                    summary=f"no datapoint in either week although the {noun(s.kind, 1)} was active ({', '.join(ACTIVITY[s.kind])})"))
    for kind, names in idle.items():
        if present := [n for n in names if (kind, n) not in missing]:
            findings.append(_idle_finding(kind, present))
    all_subjects = {(t.series.kind, t.series.subject) for t in trends if not t.series.hidden}
    for kind, by_metric in quiet.items():
        findings.append(_quiet_finding(kind, by_metric, len({n for k, n in all_subjects if k == kind}) - len(idle.get(kind, []))))
    return findings + judge_unreadable(unreadable)


def success_rate(trends: list[Trend], system: System) -> list[Finding]:
    """Rate = Sum / SampleCount of each week for ``*Success`` metrics (1 a success, 0 a failure)."""
    out = []
    slo = system.thresholds.error_rate_slo_pct
    for t in trends:
        s = t.series
        if not (s.kind == "custom" and is_success_metric(s.metric, s.stat)):
            continue
        n = next((x for x in trends if x.series.hidden and x.series.metric == s.metric and x.series.namespace == s.namespace), None)
        resource = f"{s.resource} {s.metric} success rate"

        def rate(total: float | None, count: float | None) -> float | None:
            return round(total / count * 100, 2) if total is not None and count else None

        this, last = rate(t.this_week, n.this_week if n else None), rate(t.last_week, n.last_week if n else None)
        daily = [rate(a, b) for a, b in zip(t.daily, n.daily if n else [None] * 14)]
        details = {"this_week_pct": this, "last_week_pct": last, "daily": daily, "successes": t.this_week,
                   "attempts": n.this_week if n else None, "error_rate_slo_pct": slo,
                   "definition": "Sum / SampleCount of the week: each datapoint is one generation, 1 success, 0 failure"}
        if this is None:
            out.append(Finding(check="slo-success-rate", resource=resource, status=Status.UNKNOWN, details=details,
                               summary=f"no {s.metric} datapoint this week: the success rate cannot be computed"
                                       + (f", nobody can say that the {slo:g} % error-rate SLO is met" if slo is not None else "")))
            continue
        err = round(100 - this, 2)
        details["error_rate_pct"] = err
        text = (f"{this:.2f} % success this week ({fmt(t.this_week)} of {fmt(n.this_week if n else None)} generations) "
                f"vs {'–' if last is None else f'{last:.2f} %'} last week")
        status = Status.OK
        if slo is not None:
            if err > slo:
                status = Status.CRIT if err >= 2 * slo else Status.WARN
                text += f"; SLO BREACH: error rate {err:.2f} % > {slo:g} %"
            else:
                text += f"; error rate {err:.2f} % within the {slo:g} % SLO"
        out.append(Finding(check="slo-success-rate", resource=resource, status=status, value=this, details=details, summary=text))
    return out


def judge_costs(system: System, cost: CostReport | None, reason: str | None = None) -> list[Finding]:
    if cost is None:
        return [] if reason is None else [unknown("cost", "Cost Explorer", reason)]
    if cost.error:
        return [unknown("cost", "Cost Explorer", cost.error)]
    last, this = cost.totals()
    change = round((this - last) / last * 100, 1) if last else None
    top = sorted(cost.by_service.items(), key=lambda kv: -kv[1][1])[:5]
    text = (f"{this:,.2f} {cost.unit} this week vs {last:,.2f} {cost.unit} last week"
            f" ({'n/a' if change is None else f'{change:+.1f} %'}), whole account; top: "
            + ", ".join(f"{k} {v[1]:,.2f}" for k, v in top))
    status = Status.WARN if change is not None and change >= NOTABLE_PCT else Status.OK
    return [Finding(check="cost", resource="Cost Explorer", status=status, value=round(this, 2), summary=text,
                    details={"by_service": {k: list(v) for k, v in cost.by_service.items()}, "change_pct": change, "daily": cost.daily})]


def judge_report(system: System, trends: list[Trend] | None, trends_error: str | None, unreadable: list[Unreadable],
                 cost: CostReport | None, cost_reason: str | None) -> list[Finding]:
    """Every finding of the metrics and the cost (the users' come from their own task)."""
    if trends is None:
        findings = [unknown("metrics", "GetMetricData", trends_error or "not read")]
    else:
        findings = judge_trends(trends, unreadable) + success_rate(trends, system)
    return findings + judge_costs(system, cost, cost_reason)


# --- rendering: rows, markdown --------------------------------------------------------------

BARS = "▁▂▃▄▅▆▇█"
ICON = {Status.OK: "", Status.WARN: "⚠️", Status.CRIT: "🔴", Status.UNKNOWN: "❔"}
SUMMARY_CHECKS = ("idle", "none-happened", "unreadable")  # one line per kind (or cause), shown under the kind's table


def sparkline(values: list[float | None]) -> str:
    """One character a day; a day without data is a space."""
    nums = [v for v in values if v is not None]
    if not nums:
        return " " * len(values)
    lo, hi = min(nums), max(nums)
    span = hi - lo
    return "".join(" " if v is None else BARS[0 if span == 0 else min(7, int((v - lo) / span * 7 + 0.5))] for v in values)


def series_rows(trends: list[Trend], findings: list[Finding]) -> list[dict[str, Any]]:
    """One row a series with data, in plan order, masked: the table artifact, and the tables of the markdown and HTML reports."""
    judged = {f.resource: f for f in findings if f.check.startswith("trend-")}
    rows = []
    for t in trends:
        s = t.series
        if s.hidden or t.no_data:
            continue
        f = judged.get(s.key)
        spark = sparkline(t.daily)
        rows.append({"status": (f.status if f else Status.OK).value, "kind": s.kind, "resource": mask(s.resource), "metric": s.label,
                     "last week": fmt(t.last_week, s.unit), "this week": fmt(t.this_week, s.unit), "change": change_text(t),
                     "SLO": "" if s.slo is None else f"{'≤' if s.slo_kind != 'min' else '≥'} {fmt(s.slo, s.unit)}"
                            + (" BREACH" if f and f.details.get("slo_breached") else ""),
                     "14 days": f"{spark[:7]}|{spark[7:]}"})
    return rows


def kind_summaries(findings: list[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.check in SUMMARY_CHECKS and f.details.get("kind") == kind]


def markdown_report(system: System, window: Window, trends: list[Trend], findings: list[Finding], link: str | None, status: Status) -> str:
    """The artifact a person reads at a glance (every text from AWS is masked)."""
    days = window.days()
    lines = [f"# weekly-report · {system.name}: **{status.value}**", "",
             f"This week {days[7]} – {days[13]} vs last week {days[0]} – {days[6]} ({system.timezone}); "
             f"sparklines: 14 daily points, oldest first, the bar after `|` starts this week. Every series is also in the "
             f"table artifact with the same key plus `-series`.", ""]
    if link:
        lines += [f"Charts: [HTML report]({link})", ""]
    look = [f for f in findings if f.status is not Status.OK]
    if look:
        lines += ["## To look at", "", "| | check | resource | summary |", "|---|---|---|---|"]
        lines += [f"| {ICON[f.status]} {f.status.value} | {f.check} | `{mask(f.resource)}` | {mask(f.summary).replace('|', '/')} |" for f in look] + [""]
    other = [f for f in findings if f.status is Status.OK and not f.check.startswith("trend-") and f.check not in SUMMARY_CHECKS]
    if other:
        lines += ["## Users, rates and cost", ""] + [f"- **{f.check}** `{mask(f.resource)}`: {mask(f.summary)}" for f in other] + [""]
    rows = series_rows(trends, findings)
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        notes = kind_summaries(findings, kind)
        if not mine and not notes:
            continue
        lines += [f"## {kind}", ""]
        if mine:
            lines += ["| | resource | metric | 14 days | last week | this week | change |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {ICON[Status(r['status'])]} | `{r['resource']}` | {r['metric']}{' **SLO**' if 'BREACH' in r['SLO'] else ''} | "
                      f"`{r['14 days']}` | {r['last week']} | {r['this week']} | {r['change']} |" for r in mine] + [""]
        lines += [f"- {ICON[f.status] or '•'} {mask(f.summary)}" for f in notes] + ([""] if notes else [])
    return "\n".join(lines)


# --- rendering: charts, HTML ----------------------------------------------------------------

MAX_CHARTS = 24  # per page; every series is in the tables below the charts
CHART_STYLE = Style(background="white", plot_background="white", foreground="#333", foreground_strong="#222", foreground_subtle="#ccc",
                    font_family="sans-serif", colors=("#9aa5b1", "#2b6cb0", "#c53030"), title_font_size=13, label_font_size=10,
                    major_label_font_size=10, legend_font_size=10, value_font_size=9, tooltip_font_size=10, guide_stroke_color="#cbd5e0",
                    major_guide_stroke_color="#a0aec0", guide_stroke_dasharray="2,3", major_guide_stroke_dasharray="2,3", stroke_width="2",
                    opacity=".9")
_COMMENT = re.compile(r"<!--.*?-->", re.S)  # pygal's: its version, the date and its web site
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)  # pygal's config for its tooltip script (js=[]: not loaded)
_ATTRIBUTE = re.compile(r'="[^"]*"')
_LONG_DECIMAL = re.compile(r"(\d\.\d)\d+")  # pygal writes coordinates with 15 decimals


class Chart(BaseModel):
    """Two weeks side by side: ``this`` against ``last`` (same weekday, or the same ``labels``)."""

    title: str
    unit: str = ""
    last: list[float | None]
    this: list[float | None]
    labels: list[str] | None = None  # x labels; default: this week's days
    slo: float | None = None
    bars: bool = False  # counts as grouped bars; levels (durations, capacity, rates) as lines
    status: Status = Status.OK
    caption: str = ""


def _totals(trends: list[Trend]) -> list[Chart]:
    """Per kind and counted metric (Sum), the day-by-day total over the resources with data, when there are several."""
    groups: dict[tuple[str, str], list[Trend]] = {}
    for t in trends:
        if t.series.stat == "Sum" and t.series.kind != "custom" and not t.no_data:
            groups.setdefault((t.series.kind, t.series.metric), []).append(t)
    out = []
    for (kind, metric), ts in groups.items():
        if len(ts) < 2:
            continue
        daily = [None if all(t.daily[i] is None for t in ts) else sum(t.daily[i] or 0.0 for t in ts) for i in range(14)]
        last, this = sum(v or 0 for v in daily[:7]), sum(v or 0 for v in daily[7:])
        out.append(Chart(title=f"{metric}: all {len(ts)} {NOUNS[kind]}", last=daily[:7], this=daily[7:], bars=True,
                         caption=f"{kind} {metric} total: {fmt(last)} → {fmt(this)}"))
    return out


def _priority(t: Trend, f: Finding | None) -> int:
    if t.series.slo is not None:
        return 0
    if f is not None and f.status is not Status.OK:
        return 1
    return 2 if f is not None and f.details.get("notable") else 3


def chart_plan(trends: list[Trend], findings: list[Finding], limit: int = MAX_CHARTS) -> tuple[list[Chart], int]:
    """The charts worth a look (totals, SLO series and rates, then WARN/CRIT, notable changes, the rest) and how many were left out."""
    judged = {f.resource: f for f in findings if f.check.startswith("trend-")}
    charts = [Chart(title=mask(f.resource), unit="%", last=f.details["daily"][:7], this=f.details["daily"][7:], status=f.status,
                    slo=None if f.details.get("error_rate_slo_pct") is None else 100 - f.details["error_rate_slo_pct"], caption=mask(f.summary))
              for f in findings if f.check == "slo-success-rate" and f.details.get("daily")]
    charts += _totals(trends)
    shown = [t for t in trends if not t.series.hidden and not t.no_data]
    shown.sort(key=lambda t: (_priority(t, judged.get(t.series.key)), KINDS.index(t.series.kind)))
    room = max(0, limit - len(charts))
    for t in shown[:room]:
        s, f = t.series, judged.get(t.series.key)
        charts.append(Chart(title=mask(s.key), unit=s.unit, last=t.daily[:7], this=t.daily[7:], slo=s.slo, status=f.status if f else Status.OK,
                            bars=s.stat == "Sum" and s.slo is None, caption=f"{fmt(t.last_week, s.unit)} → {fmt(t.this_week, s.unit)} ({change_text(t)})"
                            + ("; SLO breach" if f and f.details.get("slo_breached") else "")))
    return charts, max(0, len(shown) - room)


def chart_svg(c: Chart, days: list[date]) -> str:
    """One chart as inline SVG: axes with titles and labels, every value printed, no script, no external reference.

    Bars (counts) start at zero; lines (levels: durations, rates) may zoom to their values."""
    kind = pygal.Bar if c.bars and c.slo is None else pygal.Line
    chart = kind(style=CHART_STYLE, js=[], disable_xml_declaration=True, width=480, height=300, margin_right=28, explicit_size=True,
                 title=c.title, y_title=c.unit or "count", x_title=None if c.labels else f"day (last week: {days[0]:%m-%d} – {days[6]:%m-%d})",
                 include_x_axis=c.bars, print_values=True, print_values_position="top" if c.bars else "center",
                 value_formatter=lambda v: fmt(v, c.unit), x_label_rotation=20 if c.labels else 0, truncate_label=24,
                 legend_at_bottom=True, legend_at_bottom_columns=3)
    chart.x_labels = c.labels or [f"{d:%a %m-%d}" for d in days[7:]]
    chart.add("last week", c.last)
    chart.add("this week", c.this)
    if c.slo is not None:
        chart.add(f"SLO {fmt(c.slo, c.unit)}", [c.slo] * len(c.this), formatter=lambda v: "", show_dots=False, stroke_style={"width": 2, "dasharray": "6, 4"})
    svg = _SCRIPT.sub("", _COMMENT.sub("", chart.render(is_unicode=True)))
    return _ATTRIBUTE.sub(lambda m: _LONG_DECIMAL.sub(r"\1", m.group(0)), svg)


def cost_charts(cost: CostReport, top: int = 8) -> list[Chart]:
    services = sorted(cost.by_service.items(), key=lambda kv: -max(kv[1]))[:top]
    out = [Chart(title=f"Cost by service (top {len(services)})", unit=cost.unit, labels=[mask(k) for k, _ in services], bars=True,
                 last=[v[0] for _, v in services], this=[v[1] for _, v in services])]
    if len(cost.daily) == 14:
        out.append(Chart(title="Cost a day, whole account", unit=cost.unit, last=cost.daily[:7], this=cost.daily[7:], bars=True))
    return out


# Next to this module (package data, see pyproject.toml); a FileSystemLoader, because under pytest ``tasks`` also names tests/tasks.
_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"), autoescape=True,
                                undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def html_report(system: System, window: Window, trends: list[Trend], findings: list[Finding], cost: CostReport | None, status: Status) -> str:
    """A self-contained page from ``templates/weekly_report.html.j2``: every text masked (then escaped by Jinja2)."""
    days = window.days()
    charts, left_out = chart_plan(trends, findings)
    rows = series_rows(trends, findings)
    ok_cost = cost is not None and not cost.error
    page = {
        "system": mask(system.name), "status": status.value, "timezone": system.timezone, "days": days,
        "look": [{"status": f.status.value, "check": f.check, "resource": mask(f.resource), "summary": mask(f.summary)}
                 for f in findings if f.status is not Status.OK],
        "charts": [{"svg": Markup(chart_svg(c, days)), "caption": c.caption, "status": c.status.value} for c in charts],
        "left_out": left_out,
        "kinds": [{"kind": k, "rows": [r for r in rows if r["kind"] == k], "notes": [mask(f.summary) for f in kind_summaries(findings, k)]}
                  for k in KINDS if any(r["kind"] == k for r in rows) or kind_summaries(findings, k)],
        "others": [{"check": f.check, "resource": mask(f.resource), "summary": mask(f.summary)} for f in findings
                   if f.status is Status.OK and not f.check.startswith("trend-") and f.check not in SUMMARY_CHECKS],
        "cost": None if not ok_cost else {"unit": cost.unit, "charts": [Markup(chart_svg(c, days)) for c in cost_charts(cost)],  # type: ignore[union-attr]
                                          "services": [(mask(k), v[0], v[1]) for k, v in sorted(cost.by_service.items(), key=lambda kv: -kv[1][1])]},  # type: ignore[union-attr]
    }
    return _TEMPLATES.get_template("weekly_report.html.j2").render(**page)


def report_key(system: System, window: Window) -> str:
    return f"{system.reporting.report_prefix}{system.name}/{window.end.date().isoformat()}.html"


@aws_task(iam=["s3:PutObject", "s3:GetObject"], cache_policy=NO_CACHE)
def store_html(system: System, key: str, page: str) -> dict[str, str]:
    """Put the page in the report bucket; a presigned GET (7 days) links it (s3:GetObject: the link's reader acts as us)."""
    bucket = system.reporting.report_bucket
    assert bucket
    c = aws.client("s3", system.region)
    c.put_object(Bucket=bucket, Key=key, Body=page.encode("utf-8"), ContentType="text/html; charset=utf-8")
    url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=7 * 86400)
    return {"uri": f"s3://{bucket}/{key}", "url": url}
