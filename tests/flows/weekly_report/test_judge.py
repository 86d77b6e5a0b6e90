"""weekly-report's judgement, pure (no AWS, no Prefect run): what "no data" means (idle, could not read,
an SLO without data), each fault with its healthy twin, thresholds at and either side, success rate, cost
and users. The rendering is tests/flows/weekly_report/test_render.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from flows.weekly_report.judge import (
    NOTABLE_PCT,
    change_text,
    fmt,
    idle_resources,
    is_success_metric,
    judge_costs,
    judge_report,
    judge_trend,
    judge_trends,
    judge_users,
    unconfirmed,
)
from flows.weekly_report.models import Series, Trend, trends_of, week_window
from flows.weekly_report.plan import plan_series
from opsbook.findings import Finding, Status, overall
from opsbook.inventory import load_system
from opsbook.resources import Discovered, Unreadable
from tasks.cloudwatch import TwoWeeks
from tasks.costexplorer import CostReport
from tasks.dynamodb import DistinctCount

HR = load_system("hr-resource-optimization")
TD = load_system("t-developer")


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


# --- window and plan -----------------------------------------------------------------------------------


def test_week_window_is_two_whole_local_weeks_ending_today_and_moves_back_by_weeks():
    now = datetime(2024, 1, 17, 15, 30, tzinfo=HR.tz)
    w = week_window(HR, 0, now)
    assert (w.start, w.mid, w.end) == (datetime(2024, 1, 3, tzinfo=HR.tz), datetime(2024, 1, 10, tzinfo=HR.tz), datetime(2024, 1, 17, tzinfo=HR.tz))
    assert week_window(HR, 1, now).end == w.end - timedelta(days=7)


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


# --- empty input, and the series paired with their values ------------------------------------------------


def test_nothing_to_judge_is_no_finding_and_unread_metrics_are_unknown_never_ok():
    assert judge_trends([], []) == [] and idle_resources([]) == {}
    assert judge_report(HR, [], None, [], None, None) == []
    unread = judge_report(HR, None, None, [], None, None)  # not read, no reason given: still UNKNOWN
    assert [(f.check, f.status, f.summary) for f in unread] == [("metrics", Status.UNKNOWN, "could not be read: not read")]


def test_each_series_gets_the_values_read_for_it_in_order():
    s = lambda_series("busy")[:2]
    values = [TwoWeeks(daily=up(1, 2), last_week=7, this_week=14), TwoWeeks(daily=[None] * 14, last_week=None, this_week=None)]
    first, second = trends_of(s, values)
    assert (first.series.key, first.change_pct, second.series.key, second.no_data) == ("busy Invocations Sum", 100.0, "busy Errors Sum", True)
    with pytest.raises(ValueError):
        trends_of(s, values[:1])  # a value lost on the way is an error, never a shifted series


# --- notable change: at 25 %, and either side -------------------------------------------------------------


def duration(last: float, this: float) -> Trend:
    s = Series(kind="lambda", resource="fn", namespace="AWS/Lambda", metric="Duration", stat="Average", unit="Milliseconds", bad_when_up=True)
    return Trend(series=s, daily=up(last, this), last_week=last, this_week=this)


@pytest.mark.parametrize("this,status,notable", [(125.0, Status.WARN, True), (124.9, Status.OK, False), (75.0, Status.OK, True),
                                                 (75.1, Status.OK, False)])
def test_a_change_of_25_percent_is_notable_and_warns_only_when_up_is_bad(this, status, notable):
    f = judge_trend(duration(100.0, this))
    assert NOTABLE_PCT == 25.0 and f.status is status and f.details["notable"] is notable
    assert ("notable change" in f.summary) is notable and f.summary.startswith(f"{fmt(this, 'Milliseconds')} this week vs 100 ms last week")


def test_a_series_new_this_week_is_notable_and_one_gone_this_week_says_so():
    new = judge_trend(Trend(series=duration(0, 0).series, daily=[None] * 7 + [5.0] * 7, last_week=None, this_week=5.0))
    assert new.status is Status.WARN and "(new this week); notable change" in new.summary
    gone = Trend(series=duration(0, 0).series, daily=[5.0] * 7 + [None] * 7, last_week=5.0, this_week=None)
    assert change_text(gone) == "no data this week" and judge_trend(gone).status is Status.OK


# --- SLO: exactly at it, either side, and 1.5 x ----------------------------------------------------------


def pipeline(this: float, kind: str = "max", slo: float = 45.0) -> Finding:
    s = Series(kind="custom", resource="T-Developer/Pipeline", namespace="T-Developer/Pipeline", metric="PipelineExecutionTime",
               stat="p95", unit="Seconds", slo=slo, slo_kind=kind)
    return judge_trend(Trend(series=s, daily=up(this, this), last_week=this, this_week=this))


@pytest.mark.parametrize("this,status", [(45.0, Status.OK), (45.01, Status.WARN), (67.49, Status.WARN), (67.5, Status.CRIT)])
def test_a_max_slo_breaches_above_it_and_is_crit_from_one_and_a_half_times(this, status):
    f = pipeline(this)
    assert f.status is status and f.details["slo_breached"] is (this > 45)
    assert ("SLO BREACH: p95" in f.summary) is (this > 45) and f.details["days_breaching"] == (7 if this > 45 else 0)


@pytest.mark.parametrize("this,status", [(90.0, Status.OK), (89.9, Status.WARN), (60.01, Status.WARN), (60.0, Status.CRIT)])
def test_a_min_slo_breaches_below_it_and_is_crit_at_a_third_below(this, status):
    f = pipeline(this, kind="min", slo=90.0)
    assert f.status is status and ("SLO BREACH: p95" in f.summary and " < 90 s" in f.summary) is (this < 90)


# --- success rate: error rate at the 2 % SLO, either side, and twice it --------------------------------


@pytest.mark.parametrize("per_day,status", [(98.0, Status.OK), (97.99, Status.WARN), (96.01, Status.WARN), (96.0, Status.CRIT)])
def test_the_error_rate_slo_breaches_above_it_and_is_crit_from_twice_it(per_day, status):
    assert TD.thresholds.error_rate_slo_pct == 2
    rate = only(judge_report(TD, td_trends(up(38, 40), up(per_day, per_day)), None, [], None, None), "slo-success-rate")
    assert rate.status is status and rate.value == pytest.approx(per_day)
    assert ("SLO BREACH: error rate" in rate.summary) is (status is not Status.OK)
    assert rate.summary.startswith(f"{per_day:.2f} % success this week") and rate.details["attempts"] == 700


def test_a_success_count_without_its_sample_count_is_unknown():
    s = Series(kind="custom", resource="X", namespace="X", metric="JobSuccess", stat="Sum")
    assert is_success_metric("JobSuccess", "Sum") and not is_success_metric("JobSuccess", "Average")
    rate = only(judge_report(TD, [trend(s, up(9, 9))], None, [], None, None), "slo-success-rate")
    assert rate.status is Status.UNKNOWN and "the success rate cannot be computed" in rate.summary


# --- cost and users -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("this,status", [(12.5, Status.WARN), (12.49, Status.OK), (5.0, Status.OK)])
def test_cost_up_25_percent_warns_and_names_the_top_services(this, status):
    f = only(judge_costs(CostReport(by_service={"AWS Lambda": (10.0, this), "Amazon S3": (0.0, 0.0)})), "cost")
    assert f.status is status and f.value == this
    assert f.summary.startswith(f"{this:,.2f} USD this week vs 10.00 USD last week (") and "whole account; top: AWS Lambda" in f.summary


def test_cost_that_could_not_be_read_is_unknown_never_zero():
    assert judge_costs(None) == []  # not asked for (reporting.cost_explorer off)
    failed = only(judge_costs(None, "GetCostAndUsage: access denied"), "cost")
    empty = only(judge_costs(CostReport(error="Cost Explorer returned no cost data")), "cost")
    assert failed.status is empty.status is Status.UNKNOWN and "access denied" in failed.summary
    first = only(judge_costs(CostReport(by_service={"AWS Lambda": (0.0, 3.0)})), "cost")
    assert first.status is Status.OK and "(n/a)" in first.summary  # nothing last week: no percentage


def test_users_are_counted_per_table_and_an_unreadable_table_is_unknown():
    assert judge_users([]) == []
    ok, bad = judge_users([DistinctCount(table="meta", attribute="user_id", items=1200, distinct=3),
                           DistinctCount(table="locked", attribute="user_id", error="Scan: access denied")])
    assert (ok.status, ok.value, ok.summary) == (Status.OK, 3, "3 distinct user_id over 1,200 items (whole table)")
    assert bad.status is Status.UNKNOWN and bad.resource == "locked" and "access denied" in bad.summary
