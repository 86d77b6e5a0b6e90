"""weekly-report's rendering: the markdown and table artifacts (sparklines) and the HTML page, from
``templates/weekly_report.html.j2`` with pygal SVG charts inlined: no script, no external URL, it renders offline."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import jinja2
import pygal
from markupsafe import Markup
from pydantic import BaseModel
from pygal.style import Style

from flows.weekly_report.judge import NOUNS, change_text, fmt
from flows.weekly_report.models import Trend, Window
from opsbook.availability import CHECK as AVAILABILITY
from opsbook.findings import Finding, Status
from opsbook.inventory import System
from opsbook.masking import mask
from tasks.costexplorer import CostReport

KINDS = ("custom", "lambda", "apigateway", "dynamodb", "s3")  # the report's sections, in order


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
        if t.series.stat == "Sum" and t.series.kind != "custom" and not t.no_data and not t.series.hidden:
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
    """The charts worth a look (rates and availability against their SLO, totals, SLO series, then WARN/CRIT, notable changes, the
    rest) and how many were left out."""
    judged = {f.resource: f for f in findings if f.check.startswith("trend-")}
    charts = [Chart(title=mask(f.resource), unit="%", last=f.details["daily"][:7], this=f.details["daily"][7:], status=f.status,
                    slo=None if f.details.get("error_rate_slo_pct") is None else 100 - f.details["error_rate_slo_pct"], caption=mask(f.summary))
              for f in findings if f.check == "slo-success-rate" and f.details.get("daily")]
    charts += [Chart(title=f"{mask(f.resource)} availability", unit="%", last=f.details["daily"][:7], this=f.details["daily"][7:],
                     status=f.status, slo=f.details["slo_pct"], caption=mask(f.summary))
               for f in findings if f.check == AVAILABILITY and f.details.get("daily")]
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


# Next to this module (package data, see pyproject.toml); a FileSystemLoader, because under pytest ``flows`` also names tests/flows.
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
