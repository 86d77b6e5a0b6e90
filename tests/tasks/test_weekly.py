"""weekly-report's judgement and rendering, pure (no AWS, no Prefect run): what "no data" means
(idle, could not read, an SLO without data), each fault with its healthy twin, and the HTML page."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

import boto3
import pytest

from opsbook.findings import Finding, Status, overall
from opsbook.inventory import load_system
from opsbook.resources import Discovered
from tasks.weekly import (
    MAX_CHARTS,
    CostReport,
    Series,
    Trend,
    Unreadable,
    Window,
    chart_plan,
    confirm_idle,
    html_report,
    idle_resources,
    judge_report,
    judge_trends,
    markdown_report,
    plan_series,
    series_rows,
    sparkline,
    summarize_costs,
    unconfirmed,
    week_window,
)

HR = load_system("hr-resource-optimization")
TD = load_system("t-developer")
WINDOW = Window(start=datetime(2024, 1, 1, tzinfo=HR.tz), end=datetime(2024, 1, 15, tzinfo=HR.tz), timezone=HR.timezone)


def trend(s: Series, daily: list[float | None] | None = None) -> Trend:
    """A trend from 14 daily values (None: no datapoint); the weeks are their sums (Sum, SampleCount) or means."""
    daily = daily if daily is not None else [None] * 14

    def week(vs: list[float | None]) -> float | None:
        nums = [v for v in vs if v is not None]
        if not nums:
            return None
        return sum(nums) if s.stat in ("Sum", "SampleCount") else sum(nums) / len(nums)

    return Trend(series=s, daily=daily, last_week=week(daily[:7]), this_week=week(daily[7:]))


def up(a: float, b: float) -> list[float | None]:
    return [a] * 7 + [b] * 7


def lambda_series(fn: str) -> list[Series]:
    return [s for s in plan_series(HR, Discovered(lambda_functions=[fn]), []) if s.resource == fn]


def active_function(fn: str) -> list[Trend]:
    """Invocations, Duration and Errors with data; Throttles without (none happened)."""
    values = {"Invocations": up(1000, 1100), "Errors": up(2, 2), "Duration": up(120, 125)}
    return [trend(s, values.get(s.metric)) for s in lambda_series(fn)]


def idle_function(fn: str) -> list[Trend]:
    return [trend(s) for s in lambda_series(fn)]


def only(findings: list[Finding], check: str, resource: str | None = None) -> Finding:
    hits = [f for f in findings if f.check == check and (resource is None or f.resource == resource)]
    assert len(hits) == 1, (check, resource, [(f.check, f.resource, f.status.value) for f in findings])
    return hits[0]


# --- idle resources: one OK line per kind --------------------------------------------------------


def test_idle_functions_are_one_ok_line_not_an_unknown_each():
    trends = active_function("busy") + [t for i in range(12) for t in idle_function(f"spare-{i}")]
    findings = judge_trends(trends, [])
    idle = only(findings, "idle", "functions")
    assert idle.status is Status.OK and idle.value == 12
    assert idle.summary.startswith("12 functions had no invocations in either week: spare-0, spare-1, spare-2 and 9 more")
    assert idle.details["resources"] == [f"spare-{i}" for i in range(12)]
    assert not [f for f in findings if "spare-" in f.resource]  # no line per series of an idle function
    assert all(f.status is Status.OK for f in findings)


def test_an_active_function_is_judged_series_by_series_and_not_idle():  # the healthy twin
    findings = judge_trends(active_function("busy"), [])
    assert "idle" not in {f.check for f in findings}
    assert only(findings, "trend-lambda", "busy Invocations Sum").value == 7700
    assert only(findings, "trend-lambda", "busy Duration p95").status is Status.OK
    quiet = only(findings, "none-happened", "functions")  # Throttles: published only when they happen
    assert quiet.status is Status.OK and "Throttles on the active function" in quiet.summary


def test_54_idle_tables_and_the_wording_of_the_summary():
    series = plan_series(HR, Discovered(dynamodb_tables=[f"t{i}" for i in range(54)]), [])
    tables = [s for s in series if s.kind == "dynamodb" and s.resource.startswith("t")]
    named = [s for s in series if s.kind == "dynamodb" and not s.resource.startswith("t")]
    trends = [trend(s) for s in tables] + [trend(s, up(10, 12) if not s.sparse else None) for s in named]
    idle = only(judge_trends(trends, []), "idle", "tables")
    assert idle.summary.startswith("54 tables had no consumed capacity in either week: t0, t1, t2 and 51 more")
    assert idle_resources(trends) == {"dynamodb": [f"t{i}" for i in range(54)]}


def test_a_table_with_reads_only_is_active_and_its_writes_none_happened():
    s = [x for x in plan_series(HR, Discovered(), []) if x.resource == "Employees-Team2"]
    trends = [trend(x, up(5, 6) if x.metric == "ConsumedReadCapacityUnits" else None) for x in s]
    findings = judge_trends(trends, [])
    assert "idle" not in {f.check for f in findings}
    quiet = only(findings, "none-happened", "tables")
    assert quiet.details["by_metric"]["ConsumedWriteCapacityUnits"] == ["Employees-Team2"]
    assert all(f.status is Status.OK for f in findings)


def test_a_missing_metric_of_an_active_resource_is_unknown_and_present_it_is_ok():
    trends = [t if t.series.metric != "Duration" else trend(t.series) for t in active_function("busy")]
    bad = [f for f in judge_trends(trends, []) if f.status is Status.UNKNOWN]
    assert [f.resource for f in bad] == ["busy Duration Average", "busy Duration p95"]
    assert "although the function was active (Invocations)" in bad[0].summary
    assert not [f for f in judge_trends(active_function("busy"), []) if f.status is Status.UNKNOWN]  # the twin


# --- could not read: UNKNOWN, one per cause --------------------------------------------------------


def test_idle_resources_that_do_not_exist_or_cannot_be_looked_up_are_unknown_one_per_cause():
    trends = [t for fn in ("spare", "ghost-1", "ghost-2", "locked") for t in idle_function(fn)]
    unreadable = [Unreadable(kind="lambda", resource=n, code="ResourceNotFoundException", reason="GetFunctionConfiguration: not found", not_found=True)
                  for n in ("ghost-1", "ghost-2")]
    unreadable.append(Unreadable(kind="lambda", resource="locked", code="AccessDeniedException",
                                 reason="GetFunctionConfiguration: access denied (no); grant the IAM action (see `opsbook policy`)"))
    findings = judge_trends(trends, unreadable)
    gone = only(findings, "unreadable", "functions (ResourceNotFoundException)")
    assert gone.status is Status.UNKNOWN and gone.value == 2
    assert gone.summary.startswith("2 functions named in the inventory do not exist (ResourceNotFoundException), so they have no datapoints: ghost-1, ghost-2")
    denied = only(findings, "unreadable", "functions (AccessDeniedException)")
    assert denied.status is Status.UNKNOWN and "access denied" in denied.summary and "locked" in denied.summary
    idle = only(findings, "idle", "functions")
    assert idle.details["resources"] == ["spare"] and idle.summary.startswith("1 function had no invocations")
    assert overall(findings) is Status.UNKNOWN


def test_idle_resources_that_exist_stay_ok():  # the twin: nothing unreadable
    findings = judge_trends([t for fn in ("spare", "ghost-1") for t in idle_function(fn)], [])
    assert overall(findings) is Status.OK and only(findings, "idle").value == 2


def test_only_idle_resources_nothing_has_shown_to_exist_are_looked_up():
    idle = {"lambda": ["ResumeParser", "tagged-fn"], "dynamodb": ["Employees-Team2"], "apigateway": ["hr-resource-optimization-api-team2", "found-api"],
            "custom": ["X/Y Z"]}
    found = Discovered(lambda_functions=["tagged-fn"], dynamodb_tables=["Employees-Team2"])
    todo = unconfirmed(HR, found, ["hr-resource-optimization-api-team2", "found-api"], idle)
    assert todo == {"lambda": ["ResumeParser"], "apigateway": ["hr-resource-optimization-api-team2"]}
    assert unconfirmed(HR, found, [], {"lambda": ["tagged-fn"]}) == {}


def test_confirm_idle_reports_missing_resources_and_not_existing_ones(aws_mock):
    region = HR.region
    ddb = boto3.client("dynamodb", region_name=region)
    ddb.create_table(TableName="here", BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    boto3.client("apigateway", region_name=region).create_rest_api(name="api-here")
    out = confirm_idle.fn(HR, {"dynamodb": ["here", "gone"], "lambda": ["no-fn"], "s3": ["no-bucket"], "apigateway": ["api-here", "api-gone"]})
    assert {(u.kind, u.resource) for u in out} == {("dynamodb", "gone"), ("lambda", "no-fn"), ("s3", "no-bucket"), ("apigateway", "api-gone")}
    assert all(u.not_found for u in out), [u.reason for u in out]


# --- an SLO metric without data: UNKNOWN -------------------------------------------------------------


def td_trends(pipeline: list[float | None] | None, success: list[float | None] | None) -> list[Trend]:
    out = []
    for s in plan_series(TD, Discovered(), []):
        if s.metric == "PipelineExecutionTime":
            out.append(trend(s, pipeline))
        elif s.metric == "GenerationSuccess":
            out.append(trend(s, success if s.stat == "Sum" else (None if success is None else up(100, 100))))
        else:
            out.append(trend(s, None if s.sparse else up(10, 11)))
    return out


def test_an_slo_metric_without_data_is_unknown_and_its_siblings_are_not_called_idle():
    findings = judge_report(TD, td_trends(None, None), None, [], None, None)
    p95 = only(findings, "trend-custom", "T-Developer/Pipeline PipelineExecutionTime p95")
    assert p95.status is Status.UNKNOWN and "nobody can say that the 45 s SLO is met" in p95.summary
    rate = only(findings, "slo-success-rate")
    assert rate.status is Status.UNKNOWN and "2 % error-rate SLO" in rate.summary
    assert not [f for f in findings if f.resource == "T-Developer/Pipeline PipelineExecutionTime Average"]  # the p95's UNKNOWN speaks for it
    assert "idle" not in {f.check for f in findings}
    assert overall(findings) is Status.UNKNOWN


def test_an_slo_metric_with_data_under_its_slo_is_ok():  # the twin
    findings = judge_report(TD, td_trends(up(38, 40), up(99, 99)), None, [], None, None)
    assert only(findings, "trend-custom", "T-Developer/Pipeline PipelineExecutionTime p95").status is Status.OK
    assert only(findings, "slo-success-rate").status is Status.OK
    assert overall(findings) is Status.OK


def test_an_slo_metric_without_data_this_week_is_unknown_not_ok():
    findings = judge_report(TD, td_trends([38.0] * 7 + [None] * 7, up(99, 99)), None, [], None, None)
    p95 = only(findings, "trend-custom", "T-Developer/Pipeline PipelineExecutionTime p95")
    assert p95.status is Status.UNKNOWN and "no datapoint this week" in p95.summary


def test_an_idle_api_with_a_latency_slo_is_idle_and_its_slo_unknown():
    todo = load_system("todo-app")
    trends = [trend(s, None if s.kind == "apigateway" or s.sparse else up(10, 11)) for s in plan_series(todo, Discovered(), ["todo-api"])]
    findings = judge_trends(trends, [])
    assert only(findings, "idle", "APIs").summary.startswith("1 API had no requests in either week: todo-api")
    p95 = only(findings, "trend-apigateway", "todo-api Latency p95")
    assert p95.status is Status.UNKNOWN and "500 ms SLO" in p95.summary
    busy = [trend(s, None if s.sparse else up(10, 11)) for s in plan_series(todo, Discovered(), ["todo-api"])]
    assert only(judge_trends(busy, []), "trend-apigateway", "todo-api Latency p95").status is Status.OK  # the twin


def test_slo_breach_is_warn_near_and_crit_far():
    near = only(judge_report(TD, td_trends(up(38, 52), up(99, 99)), None, [], None, None), "trend-custom",
                "T-Developer/Pipeline PipelineExecutionTime p95")
    assert near.status is Status.WARN and near.details["slo_breached"] and near.details["days_breaching"] == 7
    far = only(judge_report(TD, td_trends(up(38, 70), up(99, 99)), None, [], None, None), "trend-custom",
               "T-Developer/Pipeline PipelineExecutionTime p95")
    assert far.status is Status.CRIT


def test_metrics_that_could_not_be_read_at_all_are_one_unknown():
    findings = judge_report(TD, None, "GetMetricData: access denied", [], None, None)
    assert [(f.check, f.status) for f in findings] == [("metrics", Status.UNKNOWN)]


# --- rendering ---------------------------------------------------------------------------------------


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


# --- window and cost -----------------------------------------------------------------------------------


def test_week_window_is_two_whole_local_weeks_ending_today_and_moves_back_by_weeks():
    now = datetime(2024, 1, 17, 15, 30, tzinfo=HR.tz)
    w = week_window(HR, 0, now)
    assert (w.start, w.mid, w.end) == (datetime(2024, 1, 3, tzinfo=HR.tz), datetime(2024, 1, 10, tzinfo=HR.tz), datetime(2024, 1, 17, tzinfo=HR.tz))
    assert week_window(HR, 1, now).end == w.end - timedelta(days=7)


def test_cost_explorer_data_is_summed_by_service_and_week():
    start = date(2024, 1, 1)
    results = [{"TimePeriod": {"Start": (start + timedelta(days=i)).isoformat()}, "Groups": [
        {"Keys": ["AWS Lambda"], "Metrics": {"UnblendedCost": {"Amount": str(1.0 if i < 7 else 2.0), "Unit": "USD"}}}]} for i in range(14)]
    c = summarize_costs(results, start)
    assert c.error is None and c.by_service["AWS Lambda"] == (7.0, 14.0) and c.totals() == (7.0, 14.0)
    assert summarize_costs([{"TimePeriod": {"Start": "2024-01-01"}, "Groups": []}], start).error


@pytest.mark.parametrize("name", ["hr-resource-optimization", "t-developer", "todo-app", "leh"])
def test_every_series_of_a_seed_system_is_planned_once(name):
    inv = load_system(name)
    keys = [s.key for s in plan_series(inv, Discovered(), [a.name for a in inv.api_gateway_apis])]
    assert keys and len(keys) == len(set(keys))


def test_a_listed_custom_metric_nobody_published_is_unknown_not_idle():
    """A custom metric the inventory lists with no datapoint for two weeks: a stopped publisher or a renamed metric."""
    tokens = Series(kind="custom", resource="LEH/AI", namespace="LEH/AI", metric="TokensUsed", stat="Sum")
    silent = only(judge_trends([trend(tokens)], []), "idle", "custom metrics")
    assert silent.status is Status.UNKNOWN and "check their publisher" in silent.summary
    published = judge_trends([trend(tokens, up(1000, 1200))], [])  # the healthy twin
    assert "idle" not in {f.check for f in published} and all(f.status is Status.OK for f in published)
