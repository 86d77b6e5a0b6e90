"""weekly-report end to end: sandbox with two weeks of published metrics, a Prefect
test server; the SLO breach, rates, users, trends, HTML in the bucket, no-data and
Cost Explorer's empty answer asserted."""

from __future__ import annotations

import json
from datetime import datetime

import boto3
import pytest

from flows.weekly_report import TASKS, weekly_report
from sandbox.metrics import publish_weekly_metrics
from sandbox.server import CREDENTIALS
from tasks.findings import Finding, Status
from tasks.iam import iam_action, policy_for
from tasks.inventory import load_system
from tasks.report import RunReport
from tasks.weekly import Series, Trend, Window, html_report, judge_trend, sparkline, summarize_costs, week_window

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(system: str, **params) -> tuple[RunReport, str]:
    state = weekly_report(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report, state.type.value


def only(report: RunReport, check: str, resource: str) -> Finding:
    hits = [f for f in report.findings if f.check == check and f.resource == resource]
    assert len(hits) == 1, (check, resource, [(f.check, f.resource) for f in report.findings])
    return hits[0]


def s3(sandbox, region: str):
    return boto3.client("s3", region_name=region, endpoint_url=sandbox.endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def test_t_developer_slo_breach_success_rate_users_and_html(seeded, sandbox):
    td = seeded("t-developer")
    publish_weekly_metrics(sandbox, td, pipeline_p95_s=60.0, failures_last_week=3, users=17)
    report, state = run("t-developer")

    p95 = only(report, "trend-custom", "T-Developer/Pipeline PipelineExecutionTime p95")
    assert p95.status is Status.WARN and p95.details["slo_breached"] and p95.value == pytest.approx(60.0)
    assert p95.details["days_breaching"] == 7 and p95.details["last_week"] == pytest.approx(38.0)
    avg = only(report, "trend-custom", "T-Developer/Pipeline PipelineExecutionTime Average")
    assert avg.details["last_week"] == pytest.approx(29.5)

    rate = only(report, "slo-success-rate", "T-Developer/Pipeline GenerationSuccess success rate")
    assert rate.value == 97.0 and rate.details["last_week_pct"] == 99.0 and rate.details["error_rate_pct"] == 3.0
    assert rate.status is Status.WARN and "SLO BREACH" in rate.summary  # 3 % errors > the 2 % SLO

    users = only(report, "users", "t-developer-metadata-production")
    assert users.value == 17 + 3  # 17 published + the seed's user-0..2

    assert report.status is Status.WARN and state == "COMPLETED"  # 60 s: a breach, under 1.5 x the SLO (CRIT)
    # the HTML report is in the bucket, with real charts, and linked
    key = f"opsbook-reports/t-developer/{week_window(td).end.date().isoformat()}.html"
    page = s3(sandbox, td.region).get_object(Bucket="t-developer-projects-production", Key=key)["Body"].read().decode()
    assert "<svg" in page and "<script" not in page and "PipelineExecutionTime" in page and "SLO breach" in page
    assert report.records[0]["html"] and key in report.records[0]["html"]
    # Cost Explorer has nothing in moto: UNKNOWN with the reason, never $0
    cost = only(report, "cost", "Cost Explorer")
    assert cost.status is Status.UNKNOWN and "no cost data" in cost.summary and cost.value is None


def test_a_far_pipeline_breach_is_crit_and_the_run_fails_with_its_report(seeded, sandbox):
    td = seeded("t-developer")
    publish_weekly_metrics(sandbox, td, pipeline_p95_s=70.0, failures_last_week=1)
    report, state = run("t-developer")
    assert only(report, "trend-custom", "T-Developer/Pipeline PipelineExecutionTime p95").status is Status.CRIT  # >= 1.5 x 45 s
    assert only(report, "slo-success-rate", "T-Developer/Pipeline GenerationSuccess success rate").status is Status.OK  # 1 % errors
    assert report.status is Status.CRIT and state == "FAILED"


def test_hr_trends_week_over_week_and_no_data(seeded, sandbox):
    hr = seeded("hr-resource-optimization")
    publish_weekly_metrics(sandbox, hr, change=0.5, skip=("apigateway",))
    report, _ = run("hr-resource-optimization")

    inv = only(report, "trend-lambda", "ResumeParser Invocations Sum")
    assert inv.details["last_week"] == 7000 and inv.value == 10500 and inv.details["change_pct"] == 50.0
    assert inv.details["daily"] == [1000.0] * 7 + [1500.0] * 7 and inv.details["notable"]
    err = only(report, "trend-lambda", "ResumeParser Errors Sum")
    assert err.details["change_pct"] == 50.0 and err.status is Status.WARN  # errors up notably
    p95 = only(report, "trend-lambda", "ResumeParser Duration p95")
    assert p95.details["last_week"] == 400.0 and p95.value == 600.0
    rcu = only(report, "trend-dynamodb", "Employees-Team2 ConsumedReadCapacityUnits Maximum")
    assert rcu.details["last_week"] == 30.0 and rcu.value == 45.0 and rcu.details["change_pct"] == 50.0
    assert only(report, "trend-dynamodb", "Employees-Team2 ConsumedReadCapacityUnits Average").details["change_pct"] == 50.0

    # nothing published for the API: "no data", not a 0 % change
    count = only(report, "trend-apigateway", "hr-resource-optimization-api-team2 Count Sum")
    assert count.status is Status.UNKNOWN and count.details["no_data"] and count.details["change_pct"] is None and "no data" in count.summary
    thr = only(report, "trend-lambda", "ResumeParser Throttles Sum")
    assert thr.status is Status.OK and thr.details["no_data"] and "no data" in thr.summary

    assert only(report, "cost", "Cost Explorer").status is Status.UNKNOWN
    assert "users" not in {f.check for f in report.findings}  # no HR table names a user attribute

    earlier, _ = run("hr-resource-optimization", weeks_back=1)  # the week before: this week's data is out of the window
    back = only(earlier, "trend-lambda", "ResumeParser Invocations Sum")
    assert back.value == 7000 and back.details["last_week"] is None and back.details["change_pct"] is None


def test_calls_made_are_covered_by_the_printed_policy_in_few_metric_calls(seeded, sandbox):
    hr = seeded("hr-resource-optimization")
    publish_weekly_metrics(sandbox, hr)
    report, _ = run("hr-resource-optimization")
    policy = set(policy_for(TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert used and used <= policy, used - policy
    assert report.undeclared_iam_actions == []
    # HR: 8 functions, 1 API, 6 tables (ThrottledRequests per operation), 4 buckets -> < 500 queries: one call
    assert report.api_calls_by_operation["cloudwatch:GetMetricData"] == 1
    assert report.api_calls_by_operation["ce:GetCostAndUsage"] == 1


def test_cost_explorer_data_is_summed_by_service_and_week():
    from datetime import date, timedelta

    start = date(2024, 1, 1)
    results = [{"TimePeriod": {"Start": (start + timedelta(days=i)).isoformat()}, "Groups": [
        {"Keys": ["AWS Lambda"], "Metrics": {"UnblendedCost": {"Amount": str(1.0 if i < 7 else 2.0), "Unit": "USD"}}}]} for i in range(14)]
    c = summarize_costs(results, start)
    assert c.error is None and c.by_service["AWS Lambda"] == (7.0, 14.0) and c.totals() == (7.0, 14.0)
    assert summarize_costs([{"TimePeriod": {"Start": "2024-01-01"}, "Groups": []}], start).error


def test_sparkline_gaps_and_html_masking():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([None, 5, 5]) == " ▁▁"
    hr = load_system("hr-resource-optimization")
    s = Series(kind="lambda", resource="fn-AKIAIOSFODNN7EXAMPLE", namespace="AWS/Lambda", metric="Errors", stat="Sum")
    t = Trend(series=s, daily=[1.0] * 14, last_week=7.0, this_week=7.0)
    w = Window(start=datetime(2024, 1, 1, tzinfo=hr.tz), end=datetime(2024, 1, 15, tzinfo=hr.tz), timezone=hr.timezone)
    page = html_report(hr, w, [t], [judge_trend(t)], None, Status.OK)
    assert "AKIAIOSFODNN7EXAMPLE" not in page and "[AWS-ACCESS-KEY]" in page and "<svg" in page
    assert "AKIAIOSFODNN7EXAMPLE" not in json.dumps(page)
