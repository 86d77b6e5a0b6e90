"""weekly-report's judgement (pure): trends, SLOs, idle resources, what could not be read, success rate, cost, users.

A series with no datapoint in either week is never a 0 % change. What it means depends on the series, and
the report says which:

- an SLO metric without data is UNKNOWN (nobody can say the SLO is met);
- a resource whose activity metric (invocations, requests, consumed capacity, storage) has no datapoint in
  either week is idle: CloudWatch publishes nothing without activity. Idle resources are one OK line per
  kind ("54 tables had no consumed capacity in either week: ...");
- metrics published only when something happens (errors, throttles) on an active resource: none happened,
  one OK line per kind;
- an idle resource that tag discovery did not see is looked up (``opsbook.resources.confirm_idle``): one
  that does not exist, or that cannot be looked up, is UNKNOWN with the reason, one finding per cause;
- any other metric without data on an active resource is UNKNOWN.

Success rate (custom metrics named ``*Success``): each datapoint is one generation, 1 for success and 0 for
failure (seed 001 publishes GenerationSuccess and reads its Sum), so rate = Sum / SampleCount of the week
and error rate = 100 - rate, judged against ``thresholds.error_rate_slo_pct``.

Availability (``thresholds.availability_slo_pct``): 1 - 5XX / requests of this week, for each API (Count, 5XXError)
and each ECS service's target group (ALB counts, read hidden), with the error budget left and the burn rate
(``opsbook.availability``: below the SLO CRIT, budget mostly spent WARN, no traffic OK and said so), last week's
alongside and a value a day for the chart (a day without requests: no value, not 100 %).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flows.weekly_report.models import ACTIVITY
from opsbook.availability import ROLES, Traffic, add_counts, availability_pct, budget, judge_availability, nothing_to_measure, pct_text
from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import System, Thresholds

if TYPE_CHECKING:
    from flows.weekly_report.models import Series, Trend
    from opsbook.resources import Discovered, Unreadable
    from tasks.cloudwatch import TrafficSubject
    from tasks.costexplorer import CostReport
    from tasks.dynamodb import DistinctCount

NOTABLE_PCT = 25.0  # a week-over-week change at least this large is called out
NOUNS = {"custom": "custom metrics", "lambda": "functions", "apigateway": "APIs", "dynamodb": "tables", "s3": "buckets"}
IDLE_TEXT = {
    "custom": "had no datapoints in either week: nothing was published, so nothing can be said of them; check their publisher",
    "lambda": "had no invocations in either week",
    "apigateway": "had no requests in either week",
    "dynamodb": "had no consumed capacity in either week",
    "s3": "had no storage datapoints in either week (S3 reports storage once a day, for a bucket that holds objects)",
}


def is_success_metric(name: str, statistic: str) -> bool:
    return name.endswith("Success") and statistic == "Sum"


# --- words and numbers ---------------------------------------------------------------------------


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


def noun(kind: str, n: int) -> str:
    return NOUNS[kind] if n != 1 else NOUNS[kind][:-1]


# --- one series with data ------------------------------------------------------------------------


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


# --- no data: idle, none happened, unreadable, an SLO without data -------------------------------


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


def unconfirmed(system: System, found: Discovered, apis: list[str], idle: dict[str, list[str]]) -> dict[str, list[str]]:
    """Idle resources nothing has shown to exist: named in the inventory only (tag discovery, the run's lookup of the named
    ones and the API listing prove the others)."""
    seen = {"lambda": found.confirmed("lambda"), "dynamodb": found.confirmed("dynamodb"), "s3": found.confirmed("s3"),
            "apigateway": set(apis) - {a.name for a in system.api_gateway_apis}}
    out = {kind: [n for n in names if n not in seen[kind]] for kind, names in idle.items() if kind in seen}
    return {kind: names for kind, names in out.items() if names}


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


# --- success rate, cost, users -------------------------------------------------------------------


def _rate(total: float | None, count: float | None) -> float | None:
    return round(total / count * 100, 2) if total is not None and count else None


def _success_finding(t: Trend, n: Trend | None, slo: float | None) -> Finding:
    s = t.series
    resource = f"{s.resource} {s.metric} success rate"
    this, last = _rate(t.this_week, n.this_week if n else None), _rate(t.last_week, n.last_week if n else None)
    daily = [_rate(a, b) for a, b in zip(t.daily, n.daily if n else [None] * 14)]
    details: dict[str, Any] = {"this_week_pct": this, "last_week_pct": last, "daily": daily, "successes": t.this_week,
                               "attempts": n.this_week if n else None, "error_rate_slo_pct": slo,
                               "definition": "Sum / SampleCount of the week: each datapoint is one generation, 1 success, 0 failure"}
    if this is None:
        return Finding(check="slo-success-rate", resource=resource, status=Status.UNKNOWN, details=details,
                       summary=f"no {s.metric} datapoint this week: the success rate cannot be computed"
                               + (f", nobody can say that the {slo:g} % error-rate SLO is met" if slo is not None else ""))
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
    return Finding(check="slo-success-rate", resource=resource, status=status, value=this, details=details, summary=text)


def success_rate(trends: list[Trend], system: System) -> list[Finding]:
    """Rate = Sum / SampleCount of each week for ``*Success`` metrics (1 a success, 0 a failure)."""
    out = []
    for t in trends:
        s = t.series
        if s.kind == "custom" and is_success_metric(s.metric, s.stat):
            n = next((x for x in trends if x.series.hidden and x.series.metric == s.metric and x.series.namespace == s.namespace), None)
            out.append(_success_finding(t, n, system.thresholds.error_rate_slo_pct))
    return out


# --- availability against the SLO, both weeks ---------------------------------------------------------------------


def _counts(ts: list[Trend], pick: Callable[[Trend], float | None]) -> tuple[float | None, float | None]:
    return add_counts([((t.series.namespace, t.series.metric), pick(t)) for t in ts])


def _week_text(requests: float | None, errors: float | None, slo: float) -> tuple[float | None, float | None, str]:
    """Last week's availability, budget left and words."""
    pct = availability_pct(requests, errors)
    if pct is None:
        return None, None, "last week: no traffic"
    left = budget(slo, requests or 0.0, errors or 0.0).left_pct
    return pct, left, f"last week: {pct_text(pct)}" + ("" if left is None else f" ({max(left, 0.0):g} % of its budget left)")


def _availability_weeks(sub: TrafficSubject, trends: list[Trend], th: Thresholds) -> Finding:
    """One subject: this week judged (``opsbook.availability``), last week and the 14 days alongside for the chart."""
    mine = [t for t in trends if t.series.kind == sub.kind and t.series.resource == sub.subject and (t.series.namespace, t.series.metric) in ROLES]
    req, err = _counts(mine, lambda t: t.this_week)
    f = judge_availability(Traffic(subject=sub.subject, kind=sub.kind, requests=req, errors=err, source=sub.source, service=sub.service),
                           th, "this week")
    assert f is not None and th.availability_slo_pct is not None
    last_req, last_err = _counts(mine, lambda t: t.last_week)
    last_pct, last_left, words = _week_text(last_req, last_err, th.availability_slo_pct)
    daily = [availability_pct(*_counts(mine, lambda t, i=i: t.daily[i])) for i in range(14)]
    details = {**f.details, "daily": [None if v is None else round(v, 4) for v in daily], "last_week_pct": None if last_pct is None else round(last_pct, 4),
               "last_week_budget_left_pct": last_left, "last_week_requests": last_req, "last_week_errors_5xx": last_err}
    if all(v is None for v in daily):
        details.pop("daily")  # nothing to chart
    return f.model_copy(update={"details": details, "summary": f"{f.summary}; {words}"})


def availability(system: System, subjects: list[TrafficSubject], trends: list[Trend] | None, trends_error: str | None) -> list[Finding]:
    """Each API's and load-balanced service's availability this week against ``thresholds.availability_slo_pct``, the error
    budget left and last week's (``opsbook.availability``'s rules); nothing without an SLO; UNKNOWN for a subject whose counts
    could not be read (its target group not resolved, or the metrics batch failed)."""
    th = system.thresholds
    if th.availability_slo_pct is None:
        return []
    if not subjects:
        return nothing_to_measure(system.name, th)
    out = []
    for sub in subjects:
        reason = sub.error or (None if trends is not None else f"GetMetricData: {trends_error or 'not read'}")
        if reason is not None:
            f = judge_availability(Traffic(subject=sub.subject, kind=sub.kind, error=reason, source=sub.source, service=sub.service), th, "this week")
            out += [f] if f else []
            continue
        out.append(_availability_weeks(sub, trends or [], th))
    return out


def judge_costs(cost: CostReport | None, reason: str | None = None) -> list[Finding]:
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


def judge_users(counts: list[DistinctCount]) -> list[Finding]:
    """Distinct users per table (whole table), or UNKNOWN with the reason it could not be counted."""
    return [unknown("users", c.table, c.error) if c.error else
            Finding(check="users", resource=c.table, status=Status.OK, value=c.distinct,
                    summary=f"{c.distinct:,} distinct {c.attribute} over {c.items:,} items (whole table)",
                    details={"attribute": c.attribute, "items": c.items, "distinct": c.distinct})
            for c in counts]


def judge_report(system: System, trends: list[Trend] | None, trends_error: str | None, unreadable: list[Unreadable],
                 cost: CostReport | None, cost_reason: str | None) -> list[Finding]:
    """Every finding of the metrics and the cost (the users' are ``judge_users``)."""
    if trends is None:
        findings = [unknown("metrics", "GetMetricData", trends_error or "not read")]
    else:
        findings = judge_trends(trends, unreadable) + success_rate(trends, system)
    return findings + judge_costs(cost, cost_reason)
