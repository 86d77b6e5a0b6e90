"""weekly-report: week-over-week trends of a system's metrics, users and cost (read-only).

Collection (three AWS tasks) is apart from judgement (pure functions over the
``Trend`` models) and rendering (markdown with sparklines, HTML with inline SVG).

- Every metric of both weeks is read in one ``get_metric_data`` call batch: per
  series a daily query (Period 86400, for the sparkline) and a weekly query
  (Period 604800, for the week's value: a week's p95 is not derivable from daily p95s).
- A series with no datapoint in either week is "no data", never a 0 % change.
- Success rate (custom metrics named ``*Success``): each datapoint is one
  generation, 1 for success and 0 for failure (seed 001 publishes
  GenerationSuccess and reads its Sum), so rate = Sum / SampleCount of the week
  and error rate = 100 - rate, judged against ``thresholds.error_rate_slo_pct``.
"""

from __future__ import annotations

import html
import math
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks import aws
from tasks.awslambda import function_names
from tasks.cloudwatch import get_metric_data
from tasks.dynamodb import table_names
from tasks.findings import Finding, Status, unknown
from tasks.iam import aws_task
from tasks.inventory import System
from tasks.masking import mask
from tasks.s3 import buckets
from tasks.tagging import Discovered

DAY = 86400
WEEK = 7 * DAY
NOTABLE_PCT = 25.0  # a week-over-week change at least this large is called out
# DynamoDB publishes ThrottledRequests per (TableName, Operation) only; the report sums these.
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
    def label(self) -> str:
        return f"{self.metric} {self.stat}"


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
    suffix = {"Seconds": " s", "Milliseconds": " ms"}.get(unit, "")
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


def judge_trend(t: Trend) -> Finding:
    s = t.series
    details: dict[str, Any] = {"metric": s.metric, "stat": s.stat, "unit": s.unit, "daily": t.daily,
                               "last_week": t.last_week, "this_week": t.this_week, "change_pct": t.change_pct, "no_data": t.no_data}
    resource = f"{s.resource} {s.label}"
    check = trend_check(s)
    if t.no_data:
        details["slo"] = s.slo
        if s.sparse:
            return Finding(check=check, resource=resource, status=Status.OK, value=None, details=details,
                           summary="no data in either week (published only when it happens: none)")
        return Finding(check=check, resource=resource, status=Status.UNKNOWN, value=None, details=details,
                       summary="no data: no datapoint in either week" + (f"; the {fmt(s.slo, s.unit)} SLO cannot be judged" if s.slo else ""))
    text = f"{fmt(t.this_week, s.unit)} this week vs {fmt(t.last_week, s.unit)} last week ({change_text(t)})"
    status = Status.OK
    if s.slo is not None and t.this_week is not None:
        breached = t.this_week > s.slo if s.slo_kind != "min" else t.this_week < s.slo
        days = [v for v in t.daily[7:] if v is not None and (v > s.slo if s.slo_kind != "min" else v < s.slo)]
        details.update(slo=s.slo, slo_kind=s.slo_kind, slo_breached=breached, days_breaching=len(days))
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
    return Finding(check=check, resource=resource, status=status, value=t.this_week, details=details, summary=text)


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
                               summary="no data: no GenerationSuccess datapoint this week, the success rate cannot be computed"))
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


# --- rendering ----------------------------------------------------------------------------

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    """One character a day; a day without data is a space."""
    nums = [v for v in values if v is not None]
    if not nums:
        return " " * len(values)
    lo, hi = min(nums), max(nums)
    span = hi - lo
    return "".join(" " if v is None else BARS[0 if span == 0 else min(7, int((v - lo) / span * 7 + 0.5))] for v in values)


ICON = {Status.OK: "", Status.WARN: "⚠️", Status.CRIT: "🔴", Status.UNKNOWN: "❔"}


def markdown_report(system: System, window: Window, trends: list[Trend], findings: list[Finding], link: str | None, status: Status) -> str:
    """The artifact a person reads at a glance (every text from AWS is masked)."""
    days = window.days()
    lines = [f"# weekly-report · {system.name}: **{status.value}**", "",
             f"This week {days[7]} – {days[13]} vs last week {days[0]} – {days[6]} ({system.timezone}); "
             f"sparklines: 14 daily points, oldest first, the bar after `|` starts this week.", ""]
    if link:
        lines += [f"Charts: [HTML report]({link})", ""]
    judged = {f.resource: f for f in findings if f.check.startswith("trend-")}
    slo = [f for f in findings if f.details.get("slo_breached") or (f.check.startswith("slo-") and f.status in (Status.WARN, Status.CRIT))]
    if slo:
        lines += ["## SLO breaches", ""] + [f"- {ICON[f.status]} **{mask(f.resource)}**: {mask(f.summary)}" for f in slo] + [""]
    notable = [f for f in findings if f.check.startswith("trend-") and f.details.get("notable") and not f.details.get("slo_breached")]
    if notable:
        lines += [f"## Notable week-over-week changes (±{NOTABLE_PCT:g} % or more)", ""]
        lines += [f"- {ICON[f.status] or '•'} `{mask(f.resource)}`: {mask(f.summary)}" for f in notable] + [""]
    other = [f for f in findings if not f.check.startswith("trend-")]
    if other:
        lines += ["## Users, rates and cost", "", "| | check | resource | summary |", "|---|---|---|---|"]
        lines += [f"| {f.status.value} | {f.check} | `{mask(f.resource)}` | {mask(f.summary).replace('|', '/')} |" for f in other] + [""]
    for kind in ("custom", "lambda", "apigateway", "dynamodb", "s3"):
        ts = [t for t in trends if t.series.kind == kind and not t.series.hidden]
        if not ts:
            continue
        lines += [f"## {kind}", "", "| | resource | metric | 14 days | last week | this week | change |", "|---|---|---|---|---|---|---|"]
        for t in ts:
            f = judged.get(f"{t.series.resource} {t.series.label}")
            st = f.status if f else Status.OK
            s = t.series
            full = sparkline(t.daily)
            spark = "no data" if t.no_data else f"`{full[:7]}|{full[7:]}`"
            flag = " **SLO**" if f and f.details.get("slo_breached") else ""
            lines.append(f"| {ICON[st]} | `{mask(s.resource)}` | {s.label}{flag} | {spark} | {fmt(t.last_week, s.unit)} | {fmt(t.this_week, s.unit)} | {change_text(t)} |")
        lines.append("")
    return "\n".join(lines)


def svg_chart(values: list[float | None], slo: float | None = None, width: int = 280, height: int = 70) -> str:
    """A 14-day bar chart, last week grey and this week blue, with an SLO line (inline SVG, coordinates with decimals)."""
    nums = [v for v in values if v is not None] + ([slo] if slo is not None else [])
    hi = max(nums) if nums else 1.0
    hi = hi if hi > 0 else 1.0
    bw = width / len(values)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 14}" viewBox="0 0 {width} {height + 14}" role="img">']
    for i, v in enumerate(values):
        x = i * bw + 1.5
        if v is None:
            parts.append(f'<text x="{x + bw / 2 - 2:.1f}" y="{height - 2:.1f}" font-size="9" fill="#999">·</text>')
            continue
        h = max(1.0, v / hi * (height - 4))
        color = "#9aa5b1" if i < 7 else "#2b6cb0"
        if slo is not None and v > slo:
            color = "#c53030"
        parts.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bw - 3:.1f}" height="{h:.1f}" fill="{color}"><title>{fmt(v)}</title></rect>')
    if slo is not None:
        y = height - slo / hi * (height - 4)
        parts.append(f'<line x1="0.0" y1="{y:.1f}" x2="{width:.1f}" y2="{y:.1f}" stroke="#c53030" stroke-dasharray="4,3"/>')
    parts.append(f'<line x1="{7 * bw:.1f}" y1="0.0" x2="{7 * bw:.1f}" y2="{height:.1f}" stroke="#555" stroke-width="0.5"/>')
    parts.append(f'<text x="2.0" y="{height + 11:.1f}" font-size="9" fill="#555">last week</text>')
    parts.append(f'<text x="{7 * bw + 2:.1f}" y="{height + 11:.1f}" font-size="9" fill="#555">this week</text></svg>')
    return "".join(parts)


def html_report(system: System, window: Window, trends: list[Trend], findings: list[Finding], cost: CostReport | None, status: Status) -> str:
    """A self-contained page: no external script or style; every text masked and escaped."""

    def e(s: Any) -> str:
        return html.escape(mask(str(s)))

    days = window.days()
    judged = {f.resource: f for f in findings if f.check.startswith("trend-")}
    out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(f'weekly-report {system.name} {days[13]}')}</title>",
           "<style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:4px 8px;"
           "text-align:left;vertical-align:middle}.WARN{color:#b7791f}.CRIT{color:#c53030}.UNKNOWN{color:#718096}.card{display:inline-block;margin:8px;"
           "padding:8px;border:1px solid #e2e8f0;border-radius:6px}</style></head><body>",
           f"<h1>weekly-report · {e(system.name)}: <span class='{status.value}'>{status.value}</span></h1>",
           f"<p>This week {days[7]} – {days[13]} vs last week {days[0]} – {days[6]} ({e(system.timezone)}).</p>"]
    bad = [f for f in findings if f.status is not Status.OK]
    if bad:
        out.append("<h2>Findings</h2><table><tr><th>status</th><th>check</th><th>resource</th><th>summary</th></tr>")
        out += [f"<tr><td class='{f.status.value}'>{f.status.value}</td><td>{e(f.check)}</td><td>{e(f.resource)}</td><td>{e(f.summary)}</td></tr>" for f in bad]
        out.append("</table>")
    for kind in ("custom", "lambda", "apigateway", "dynamodb", "s3"):
        ts = [t for t in trends if t.series.kind == kind and not t.series.hidden and not t.no_data]
        if not ts:
            continue
        out.append(f"<h2>{e(kind)}</h2>")
        for t in ts:
            f = judged.get(f"{t.series.resource} {t.series.label}")
            cls = f.status.value if f else "OK"
            out.append(f"<div class='card'><div><b>{e(t.series.resource)}</b> {e(t.series.label)} <span class='{cls}'>{e(change_text(t))}"
                       f"{' SLO breach' if f and f.details.get('slo_breached') else ''}</span></div>"
                       f"{svg_chart(t.daily, t.series.slo)}<div>{e(fmt(t.last_week, t.series.unit))} → {e(fmt(t.this_week, t.series.unit))}</div></div>")
        nodata = [t for t in trends if t.series.kind == kind and not t.series.hidden and t.no_data]
        if nodata:
            out.append("<p>No data in either week: " + ", ".join(e(f"{t.series.resource} {t.series.label}") for t in nodata) + "</p>")
    if cost is not None and not cost.error:
        out.append("<h2>Cost by service</h2>" + svg_chart(cost.daily) + "<table><tr><th>service</th><th>last week</th><th>this week</th></tr>")
        out += [f"<tr><td>{e(k)}</td><td>{v[0]:,.2f}</td><td>{v[1]:,.2f}</td></tr>" for k, v in sorted(cost.by_service.items(), key=lambda kv: -kv[1][1])]
        out.append("</table>")
    out.append("</body></html>")
    page = "".join(out)
    return mask(page)


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

