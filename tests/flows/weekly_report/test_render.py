"""weekly-report's rendering, pure (no AWS, no Prefect run): the HTML page (pygal charts, offline, masked),
the markdown and the table rows. The judgement it renders is tests/flows/weekly_report/test_judge.py."""

from __future__ import annotations

import re
from datetime import datetime

from flows.weekly_report.judge import judge_report, judge_trends
from flows.weekly_report.models import Series, Trend, Window
from flows.weekly_report.plan import plan_series
from flows.weekly_report.render import MAX_CHARTS, chart_plan, html_report, markdown_report, series_rows, sparkline
from opsbook.findings import Status, overall
from opsbook.resources import Discovered
from tasks.costexplorer import CostReport
from tests.flows.weekly_report.test_judge import HR, active_function, idle_function, trend, up

WINDOW = Window(start=datetime(2024, 1, 1, tzinfo=HR.tz), end=datetime(2024, 1, 15, tzinfo=HR.tz), timezone=HR.timezone)


def hr_trends() -> list[Trend]:
    out = []
    for k, s in enumerate(plan_series(HR, Discovered(), [])):
        if s.sparse and s.metric != "Errors":
            out.append(trend(s))
        else:
            out.append(trend(s, [float(100 + k + i) for i in range(7)] + [float(130 + k + i) for i in range(7)]))
    return out


def svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, re.S)


def test_html_has_an_svg_chart_per_chart_with_axes_values_and_both_weeks_and_no_external_url():
    trends = hr_trends()
    cost = CostReport(by_service={"AWS Lambda": (10.0, 14.0), "Amazon DynamoDB": (5.0, 4.0)}, daily=[2.0] * 7 + [2.5] * 7)
    findings = judge_report(HR, trends, None, [], cost, None)
    page = html_report(HR, WINDOW, trends, findings, cost, overall(findings))
    charts, left_out = chart_plan(trends, findings)
    assert len(charts) == MAX_CHARTS and left_out > 0 and f"{left_out} more series are in the tables below" in page
    found = svgs(page)
    assert len(found) == len(charts) + 2  # and the cost by service, and a day
    for svg, c in zip(found, charts):
        assert 'class="axis x' in svg and 'class="axis y' in svg and ">day (last week: 01-01 – 01-07)<" in svg  # both axes, titled
        assert ">last week<" in svg and ">this week<" in svg
        assert "Mon 01-08" in svg  # x labels: this week's days
        printed = re.findall(r'class="value"[^>]*>([^<]+)<', svg)
        assert len(printed) >= 14, c.title  # every day of both weeks printed
    resume = next(svg for svg in found if "ResumeParser Invocations Sum" in svg)
    assert ">100<" in resume and ">130<" in resume  # a value of last week and one of this week
    assert "AWS Lambda" in found[-2] and ">14<" in found[-2]
    assert "<script" not in page and "<link" not in page and "@import" not in page and "<!--" not in page
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+[^\s\"'<>]*", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls  # XML namespaces: names, never fetched


def test_html_without_data_has_no_chart_and_says_what_is_idle():
    trends = [trend(s) for s in plan_series(HR, Discovered(), [])]
    findings = judge_report(HR, trends, None, [], None, None)
    page = html_report(HR, WINDOW, trends, findings, None, overall(findings))
    assert not svgs(page)
    assert "8 functions had no invocations in either week" in page and "6 tables had no consumed capacity in either week" in page


def test_html_and_charts_mask_what_they_show():
    s = Series(kind="lambda", resource="fn-AKIAIOSFODNN7EXAMPLE", namespace="AWS/Lambda", metric="Errors", stat="Sum")
    t = trend(s, up(1, 1))
    page = html_report(HR, WINDOW, [t], judge_trends([t], []), None, Status.OK)
    assert "AKIAIOSFODNN7EXAMPLE" not in page and "[AWS-ACCESS-KEY]" in page and svgs(page)


def test_markdown_and_series_rows_list_series_with_data_and_summarise_the_idle():
    trends = active_function("busy") + [t for i in range(5) for t in idle_function(f"spare-{i}")]
    findings = judge_trends(trends, [])
    md = markdown_report(HR, WINDOW, trends, findings, None, overall(findings))
    assert "5 functions had no invocations in either week" in md and "spare-0" in md and not re.search(r"\bno data\b", md)
    rows = series_rows(trends, findings)
    assert [r["metric"] for r in rows] == ["Invocations Sum", "Errors Sum", "Duration Average", "Duration p95"]
    assert rows[0] == {"status": "OK", "kind": "lambda", "resource": "busy", "metric": "Invocations Sum", "last week": "7,000",
                       "this week": "7,700", "change": "+10.0 %", "SLO": "", "14 days": "▁▁▁▁▁▁▁|███████"}


def test_sparkline_gaps():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([None, 5, 5]) == " ▁▁"
