"""weekly-report's availability against the SLO (pure: the series planned, the judgement of both weeks, the chart): no
traffic, exactly at the SLO, below it, budget mostly spent, budget left, unreadable. The rule's own edges are
tests/opsbook/test_availability.py's."""

from __future__ import annotations

from flows.weekly_report.judge import availability, judge_trends
from flows.weekly_report.models import Series, Trend, week_window
from flows.weekly_report.plan import plan_series
from flows.weekly_report.render import chart_plan, html_report, markdown_report
from opsbook.findings import Status
from opsbook.inventory import load_system
from opsbook.resources import Discovered
from tasks.cloudwatch import alb_traffic, api_traffic
from tasks.elb import AlbTarget

TODO, TD, HR = load_system("todo-app"), load_system("t-developer"), load_system("hr-resource-optimization")
TG = AlbTarget(service="t-developer-cluster-production/t-developer-service-production", target_group="t-developer-tg-production",
               arn="arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/t-developer-tg-production/abc",
               target_group_dim="targetgroup/t-developer-tg-production/abc", load_balancer_dims=["app/t-developer-alb/def"])


def trend(s: Series, daily: list[float | None]) -> Trend:
    def week(vs: list[float | None]) -> float | None:
        nums = [v for v in vs if v is not None]
        return sum(nums) if nums else None

    return Trend(series=s, daily=daily, last_week=week(daily[:7]), this_week=week(daily[7:]))


def api_trends(requests: list[float | None], errors: list[float | None]) -> list[Trend]:
    values = {"Count": requests, "5XXError": errors}
    return [trend(s, values.get(s.metric, [None] * 14)) for s in plan_series(TODO, Discovered(), ["todo-api"])
            if s.kind == "apigateway" and s.stat == "Sum"]


def todo(requests: list[float | None], errors: list[float | None]):
    return availability(TODO, [api_traffic("todo-api")], api_trends(requests, errors), None)


def test_no_slo_no_finding_and_an_slo_with_nothing_to_measure_is_unknown():
    assert availability(HR, [api_traffic("hr-resource-optimization-api-team2")], [], None) == []
    [f] = availability(TODO, [], [], None)
    assert f.status is Status.UNKNOWN and "no API Gateway API and no ECS service with a target_group" in f.summary


def test_budget_left_is_ok_with_last_week_alongside_and_a_value_a_day():
    [f] = todo([1000.0] * 6 + [None] + [1000.0] * 7, [None] * 7 + [1.0] * 3 + [None] * 4)  # a quiet Sunday last week: no value
    assert f.status is Status.OK and f.check == "availability" and f.resource == "todo-api"
    assert f.details["budget_left_pct"] == round(100 * (1 - 3 / 7), 2) and f.details["last_week_pct"] == 100
    assert f.details["daily"][6] is None and f.details["daily"][0] == 100 and f.details["daily"][7] == 99.9
    assert f.summary.startswith("99.957 % available over this week (3 5XX of 7,000 requests) against the 99.9 % SLO")
    assert f.summary.endswith("; last week: 100 % (100 % of its budget left)")


def test_below_the_slo_this_week_is_crit_and_last_weeks_healthy_twin_said_alongside():
    [f] = todo([1000.0] * 14, [1.0] * 7 + [2.0] * 7)  # last week exactly at 99.9 %, this week 99.8 %
    assert f.status is Status.CRIT and f.summary.startswith("BELOW SLO: 99.8 % available over this week") and f.details["burn_rate"] == 2
    assert f.details["last_week_pct"] == 99.9 and f.details["last_week_budget_left_pct"] == 0
    assert "last week: 99.9 % (0 % of its budget left)" in f.summary


def test_exactly_at_the_slo_is_a_warning_and_budget_mostly_spent_too():
    [at] = todo([1000.0] * 14, [None] * 7 + [1.0] * 7)
    assert at.status is Status.WARN and at.details["budget_left_pct"] == 0 and not at.details["below_slo"]
    [spent] = todo([10_000.0] * 14, [None] * 7 + [8.0] * 7)  # 80 % of the budget used
    assert spent.status is Status.WARN and spent.details["budget_left_pct"] == 20


def test_no_traffic_in_either_week_is_ok_no_chart_and_this_week_only_quiet_says_no_traffic():
    [f] = todo([None] * 14, [None] * 14)
    assert f.status is Status.OK and f.details["no_traffic"] and "daily" not in f.details and f.value is None
    assert f.summary == "no traffic over this week: no request, so nothing to measure against the 99.9 % SLO; last week: no traffic"
    [g] = todo([500.0] * 7 + [None] * 7, [None] * 14)
    assert g.status is Status.OK and g.details["no_traffic"] and g.details["daily"][:7] == [100.0] * 7 and g.details["daily"][7:] == [None] * 7


def test_unreadable_counts_and_an_unresolved_target_group_are_unknown_with_the_reason():
    [f] = availability(TODO, [api_traffic("todo-api")], None, "AccessDenied: not authorized")
    assert f.status is Status.UNKNOWN and "GetMetricData: AccessDenied" in f.summary
    gone = TG.model_copy(update={"error": "target group t-developer-tg-production not found"})
    [g] = availability(TD, [alb_traffic(gone)], [], None)
    assert g.status is Status.UNKNOWN and g.resource == "t-developer-tg-production" and "not found" in g.summary


def test_alb_counts_are_hidden_series_and_the_load_balancers_own_5xx_count_in_both():
    series = plan_series(TD, Discovered(), [], [TG, TG.model_copy(update={"error": "unresolved"})])
    alb = [s for s in series if s.kind == "alb"]
    assert [s.metric for s in alb] == ["RequestCount", "HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count"]  # the resolved one only
    assert all(s.hidden and s.stat == "Sum" for s in alb) and alb[2].dimension_sets == [{"LoadBalancer": "app/t-developer-alb/def"}]
    assert alb[0].dimension_sets == [{"LoadBalancer": "app/t-developer-alb/def", "TargetGroup": "targetgroup/t-developer-tg-production/abc"}]
    values = {"RequestCount": [20_000.0] * 14, "HTTPCode_Target_5XX_Count": [10.0] * 14, "HTTPCode_ELB_5XX_Count": [None] * 7 + [50.0] * 7}
    trends = [trend(s, values[s.metric]) for s in alb]
    [f] = availability(TD, [alb_traffic(TG)], trends, None)
    assert f.details["requests"] == 7 * 20_050 and f.details["errors_5xx"] == 7 * 60 and f.status is Status.OK  # 0.3 %: 60 % of 0.5 % used
    assert f.details["budget_left_pct"] == 40.15 and f.details["last_week_pct"] == 99.95
    assert f.details["service"] == TG.service and f.details["last_week_requests"] == 7 * 20_000
    assert judge_trends(trends, []) == []  # hidden: no trend finding, not idle


def test_the_chart_this_week_against_last_with_the_slo_line_in_the_html_and_the_markdown():
    trends = api_trends([1000.0] * 14, [None] * 7 + [2.0] * 7)
    findings = availability(TODO, [api_traffic("todo-api")], trends, None)
    charts, _ = chart_plan(trends, findings)
    chart = next(c for c in charts if c.title == "todo-api availability")
    assert chart.slo == 99.9 and chart.unit == "%" and chart.last == [100.0] * 7 and chart.this == [99.8] * 7 and chart.status is Status.CRIT
    window = week_window(TODO)
    page = html_report(TODO, window, trends, findings, None, Status.CRIT)
    assert "todo-api availability" in page and "SLO 99.90 %" in page and "BELOW SLO" in page
    md = markdown_report(TODO, window, trends, findings, None, Status.CRIT)
    assert "| availability | `todo-api` | BELOW SLO: 99.8 % available over this week" in md
