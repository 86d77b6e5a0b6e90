"""weekly-report end to end on the sandbox, whose seed publishes two weeks of metrics for every
system (sandbox/metrics.py): trends and no "no data" UNKNOWN for seeded series, T-Developer's
SLO breach, a far breach ending the run Failed, and idle and missing resources at HR (with the
IAM policy covering the calls), a read task that fails made UNKNOWN with its reason. Judgement and rendering
are tested purely in tests/flows/weekly_report/test_judge.py and test_render.py."""

from __future__ import annotations

import json
from datetime import datetime

import boto3
import pytest
import yaml
from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.weekly_report import flow as weekly_flow
from flows.weekly_report.flow import TASKS, weekly_report
from flows.weekly_report.models import week_window
from opsbook.findings import Finding, Status
from opsbook.iam import iam_action, policy_for
from opsbook.inventory import SYSTEMS_DIR, load_system
from opsbook.report import RunReport
from sandbox.faults import apply_fault
from sandbox.metrics import SLO_THIS_WEEK, SUCCESS_FAILURE_PCT, VOLUME, day_noons, nearest_rank, slow_pipeline, spread, weekly_datums
from sandbox.server import CREDENTIALS

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def not_across_local_midnight():
    """The seed lays the 14 days before today and the run reads the 14 days before today: both must see the
    same today. A test that would start within 2 minutes of the systems' midnight (Asia/Seoul) waits it out."""
    import time as clock
    from datetime import datetime, timedelta

    tz = load_system("t-developer").tz
    now = datetime.now(tz)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    if (midnight - now).total_seconds() < 120:
        clock.sleep((midnight - now).total_seconds() + 1)


def run(system: str, **params) -> tuple[RunReport, str]:
    state = weekly_report(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report, state.type.value


def only(report: RunReport, check: str, resource: str) -> Finding:
    hits = [f for f in report.findings if f.check == check and f.resource == resource]
    assert len(hits) == 1, (check, resource, [(f.check, f.resource) for f in report.findings])
    return hits[0]


def assert_seeded_trends(report: RunReport, name: str) -> None:
    """Every seeded series has data (no trend is UNKNOWN or without data); the weeks differ both ways."""
    inv = load_system(name)
    trends = [f for f in report.findings if f.check.startswith("trend-")]
    assert not [f.resource for f in trends if f.status is Status.UNKNOWN or f.details.get("no_data")]
    changes = [f.details["change_pct"] for f in trends if f.details.get("change_pct") is not None]
    assert min(changes) < -5 and max(changes) > 5, changes  # some series up, some down
    if inv.lambda_functions:  # resource 0 of a kind moves by VOLUME[0], exactly but for rounding
        inv0 = only(report, "trend-lambda", f"{inv.lambda_functions[0].name} Invocations Sum")
        assert inv0.details["change_pct"] == pytest.approx(VOLUME[0] * 100, abs=0.5)
        assert all(v is not None for v in inv0.details["daily"])


@pytest.mark.parametrize("name", ["todo-app", "leh"])  # HR and T-Developer: below
def test_seeded_systems_show_trends_without_no_data(seeded, name):
    seeded(name, weeks_of_metrics=True)
    report, state = run(name)
    assert_seeded_trends(report, name)
    assert not {"idle", "unreadable"} & {f.check for f in report.findings}
    assert state == "COMPLETED" and report.status is Status.WARN  # the seeded errors of function 0 doubled
    assert only(report, "cost", "Cost Explorer").status is Status.UNKNOWN  # moto's Cost Explorer has nothing: never $0
    slo = [f for f in report.findings if f.check == "availability"]
    if name == "leh":  # no availability_slo_pct: not measured
        assert slo == []
    else:  # the seeded 5XX doubled, within the 99.9 % SLO with most of the budget left
        [api] = slo
        assert api.status is Status.OK and api.resource == "todo-api" and 99.9 < api.value < 100 and api.details["budget_left_pct"] > 25
        assert api.details["last_week_pct"] > api.value and len([v for v in api.details["daily"] if v is not None]) == 14


def test_t_developer_trends_slo_breach_success_rate_users_and_html(seeded, sandbox):
    td = seeded("t-developer", weeks_of_metrics=True)
    report, state = run("t-developer")
    assert_seeded_trends(report, "t-developer")
    assert not {"idle", "unreadable"} & {f.check for f in report.findings}

    p95 = only(report, "trend-custom", "T-Developer/Pipeline PipelineExecutionTime p95")
    assert p95.status is Status.WARN and p95.details["slo_breached"] and p95.details["days_breaching"] == 7
    assert p95.value == pytest.approx(45 * SLO_THIS_WEEK) and p95.details["last_week"] < 45
    rate = only(report, "slo-success-rate", "T-Developer/Pipeline GenerationSuccess success rate")
    assert rate.status is Status.OK and rate.value == pytest.approx(100 - SUCCESS_FAILURE_PCT[1], abs=0.3)  # under the 2 % SLO
    assert only(report, "users", "t-developer-metadata-production").value == 3  # the seed's user-0..2
    assert report.status is Status.WARN and state == "COMPLETED"  # a breach under 1.5 x the SLO
    alb = only(report, "availability", "t-developer-tg-production")  # the ALB's counts: the fault's healthy twin, below
    assert alb.status is Status.OK and 99.5 < alb.value < 100 and alb.details["budget_left_pct"] > 25 and alb.details["last_week_pct"] > 99.5
    assert alb.summary.endswith("% of its budget left)") and "against the 99.5 % SLO" in alb.summary
    assert report.api_calls_by_operation["elbv2:DescribeTargetGroups"] == 1 and report.api_calls_by_operation["cloudwatch:GetMetricData"] == 1

    key = f"opsbook-reports/t-developer/{week_window(td).end.date().isoformat()}.html"
    s3 = boto3.client("s3", region_name=td.region, endpoint_url=sandbox.endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    page = s3.get_object(Bucket="t-developer-projects-production", Key=key)["Body"].read().decode()
    assert page.count("<svg") >= 5 and "<script" not in page and "PipelineExecutionTime p95" in page and "SLO 45 s" in page
    assert "t-developer-tg-production availability" in page and "SLO 99.50 %" in page
    assert report.records[0]["html"] and key in report.records[0]["html"]

    with get_client(sync_client=True) as client:  # the markdown and the table of the series, for this run
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[report.flow_run_id])))
    by_key = {a.key: a for a in arts}
    rows = json.loads(by_key["weekly-report-t-developer-series"].data)
    p95_row = next(r for r in rows if r["metric"] == "PipelineExecutionTime p95")
    assert p95_row["SLO"] == "≤ 45 s BREACH" and p95_row["this week"] == "51.75 s" and p95_row["change"] == "+35.3 %"
    md = by_key["weekly-report-t-developer-trends"].data
    assert "## custom" in md and "PipelineExecutionTime p95 **SLO**" in md and "| no data |" not in md  # no row without data


@task(name="count-distinct-users")
def users_task_that_fails(system):
    raise RuntimeError("the users' Scan broke")


def test_a_far_pipeline_breach_is_crit_and_the_run_fails_with_its_report_and_a_failed_read_is_unknown(seeded, sandbox, monkeypatch):
    td = seeded("t-developer", weeks_of_metrics=True)
    slow_pipeline(sandbox, td, "PipelineExecutionTime", 80.0)
    yesterday_noon = day_noons(td)[-1]  # a 5XX burst yesterday morning: this week
    apply_fault(sandbox, td, "slo-breach", requests=100_000, hours_ago=(datetime.now(td.tz) - yesterday_noon).total_seconds() / 3600 + 1)
    monkeypatch.setattr(weekly_flow, "count_distinct_users", users_task_that_fails)  # the healthy twin counts 3 users, above
    report, state = run("t-developer")
    assert only(report, "trend-custom", "T-Developer/Pipeline PipelineExecutionTime p95").status is Status.CRIT  # >= 1.5 x 45 s
    alb = only(report, "availability", "t-developer-tg-production")
    assert alb.status is Status.CRIT and alb.summary.startswith("BELOW SLO: ") and alb.details["errors_5xx"] > 2000 and alb.details["last_week_pct"] > 99.5
    assert only(report, "slo-success-rate", "T-Developer/Pipeline GenerationSuccess success rate").status is Status.OK
    users = only(report, "users", "(whole check)")
    assert users.status is Status.UNKNOWN and "RuntimeError: the users' Scan broke" in users.summary
    assert report.status is Status.CRIT and state == "FAILED"


def test_idle_and_missing_resources_at_hr_and_the_calls_are_covered_by_the_policy(seeded, sandbox, tmp_path):
    seeded("hr-resource-optimization", extra={"functions": 3, "tables": 2}, weeks_of_metrics=True)
    inv = yaml.safe_load((SYSTEMS_DIR / "hr-resource-optimization.yaml").read_text())
    inv["lambda_functions"].append({"name": "ghost-fn"})  # named in the inventory, never deployed
    path = tmp_path / "hr-resource-optimization.yaml"
    path.write_text(yaml.safe_dump(inv))
    report, _ = run(str(path))

    idle = only(report, "idle", "functions")
    assert idle.status is Status.OK and idle.value == 3 and idle.summary.startswith("3 functions had no invocations in either week")
    assert only(report, "idle", "tables").summary.startswith("2 tables had no consumed capacity in either week")
    ghost = only(report, "inventory", "ghost-fn")  # reported once by the run's resolution, and read no further
    assert ghost.status is Status.WARN and "named in the inventory but does not exist" in ghost.summary
    assert not [f for f in report.findings if f.check == "unreadable"] and not [s for s in report.findings if "ghost-fn" in s.summary and s.check != "inventory"]
    assert_seeded_trends(report, "hr-resource-optimization")  # the named resources: trends, as seeded

    policy = set(policy_for(TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert used and used <= policy, used - policy
    assert report.undeclared_iam_actions == []
    assert report.api_calls_by_operation["cloudwatch:GetMetricData"] == 1  # every series of both weeks: one call
    assert report.api_calls_by_operation["lambda:GetFunction"] == 1  # only the named function discovery did not see
    assert "lambda:GetFunctionConfiguration" not in report.api_calls_by_operation  # nothing left to look up when idle


def test_the_seeded_numbers_are_what_the_report_reads():
    """Pure: the sandbox's datums per system, their PutMetricData batches, and the percentile helper."""
    assert nearest_rank(spread(51.75)) == pytest.approx(51.75, abs=0.01)
    for name in ("hr-resource-optimization", "t-developer", "todo-app", "leh"):
        inv = load_system(name)
        by_ns = weekly_datums(inv, day_noons(inv))
        assert sum(len(v) for v in by_ns.values()) <= 2000  # moto scans its datums linearly: a few calls, little to scan
        assert {"AWS/Lambda", "AWS/DynamoDB", "AWS/S3"} & set(by_ns)
    td = load_system("t-developer")
    pipeline = [d for d in weekly_datums(td, day_noons(td))["T-Developer/Pipeline"] if d["MetricName"] == "PipelineExecutionTime"]
    assert nearest_rank([v for d in pipeline[7:] for v in d["Values"]]) == pytest.approx(45 * SLO_THIS_WEEK, abs=0.01)
