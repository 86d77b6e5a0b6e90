"""weekly-report: last week against the week before, for one system (read-only).

Sources: 001 주간 리포트 (PipelineExecutionTime average, GenerationSuccess, distinct
users of the metadata table), 000 용량 관리 (DynamoDB consumed capacity average/max,
S3 bucket sizes), 002 주간 점검 / 용량 계획 / 비용 모니터링 (Cost Explorer by service), and the
inventories' availability SLO (API Gateway and ALB requests and 5XX, the error budget left).

Reads top to bottom like the procedure: resolve the system's resources once
(named and tag-discovered, the set daily-health checks; a named function, table
or bucket that does not exist is reported once and not read further), read
every metric of both weeks in one GetMetricData batch (with the ALB counts of the
load-balanced services, their dimensions from DescribeTargetGroups), look up the idle
APIs that the API listing did not show (a missing one has no datapoints either),
count users, read cost, judge (SLO breaches, notable changes, idle resources
one line per kind, UNKNOWN for what could not be read and for an SLO without
data; availability and error budget against the SLO), store the HTML report, publish the markdown, table and link artifacts.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Failed

from flows.weekly_report.judge import availability, idle_resources, judge_report, judge_users, unconfirmed
from flows.weekly_report.models import Trend, Window, trends_of, week_window
from flows.weekly_report.plan import plan_series
from flows.weekly_report.render import html_report, markdown_report, report_key, series_rows
from opsbook import aws
from opsbook.collect import settled
from opsbook.findings import Finding, Status, overall, unknown
from opsbook.inventory import System, load_system
from opsbook.masking import mask
from opsbook.params import Param, SystemName
from opsbook.report import RunReport, artifact_key, publish_report, run_url
from opsbook.resources import Discovered, Resolved, Unreadable, build_resolved, confirm_idle, resolution_findings, resolve_metered
from tasks.apigateway import api_names
from tasks.cloudwatch import alb_traffic, api_traffic, read_trends
from tasks.costexplorer import read_costs
from tasks.dynamodb import count_distinct_users
from tasks.elb import AlbTarget, read_alb_targets
from tasks.s3 import store_html

RUNBOOK = "weekly-report"
TASKS = [resolve_metered, api_names, read_alb_targets, read_trends, confirm_idle, count_distinct_users, read_costs, store_html]


def outcome(fut: PrefectFuture) -> tuple[Any, str | None]:
    """The task's result and no reason, or no result and why the task failed."""
    fut.wait()
    if fut.state.is_completed():
        return fut.result(), None
    exc = fut.state.result(raise_on_failure=False)
    return None, aws.describe_error(exc) if isinstance(exc, BaseException) else str(fut.state.message)


def resolved(inv: System) -> tuple[Resolved, list[Finding]]:
    """The run's resources, resolved once: discovery that failed or erred is UNKNOWN (the inventory's names stay); a named
    function, table or bucket that does not exist is reported once (and read no further)."""
    found, reason = outcome(resolve_metered.submit(inv, aws.Deadline(60)))
    res = found if found is not None else build_resolved(inv, [], {}, enabled=True, error=reason)
    return res, resolution_findings(inv, res)


def read_api_names(inv: System, found: Discovered, findings: list[Finding]) -> list[str]:
    """API names for the ApiName dimension; without the API listing, the inventory's (and an UNKNOWN)."""
    apis, reason = outcome(api_names.submit(inv, found))
    if reason is None:
        return apis
    findings.append(unknown("apigateway-names", "(tag-discovered APIs)", reason))
    return [a.name for a in inv.api_gateway_apis]


def read_albs(inv: System) -> list[AlbTarget]:
    """The load-balanced services' ALB metric dimensions, read only when the availability is measured (an SLO, a target group);
    a failed read leaves each with the reason (its availability UNKNOWN)."""
    svcs = [s for s in inv.ecs_services if s.target_group]
    if inv.thresholds.availability_slo_pct is None or not svcs:
        return []
    albs, reason = outcome(read_alb_targets.submit(inv))
    return albs if reason is None else [AlbTarget(service=f"{s.cluster}/{s.service}", target_group=s.target_group or "", error=reason) for s in svcs]


def look_up_idle(inv: System, found: Discovered, apis: list[str], trends: list[Trend] | None) -> list[Unreadable]:
    """The idle resources nothing has shown to exist, looked up; a failed look-up makes each of them UNKNOWN with the reason."""
    names = unconfirmed(inv, found, apis, idle_resources(trends)) if trends else {}
    if not names:
        return []
    missing, reason = outcome(confirm_idle.submit(inv, names))
    if reason is None:
        return missing
    return [Unreadable(kind=k, resource=n, code="lookup-failed", reason=reason) for k, ns in names.items() for n in ns]


def store_report(inv: System, window: Window, page: str) -> tuple[str | None, Finding | None]:
    """The HTML page in the report bucket and its link artifact: (presigned link, None), or (None, why not)."""
    if not inv.reporting.report_bucket:
        return None, Finding(check="report-html", resource=inv.name, status=Status.OK,
                             summary="reporting.report_bucket is not set: the HTML report was not stored")
    where, reason = outcome(store_html.submit(inv, report_key(inv, window), page))
    if reason is not None:
        return None, unknown("report-html", f"s3://{inv.reporting.report_bucket}", reason)
    create_link_artifact(key=f"{artifact_key(RUNBOOK, inv.name)}-html", link=where["url"], link_text=where["uri"],
                         description=f"weekly report {inv.name} (HTML, presigned 7 days)")
    return where["url"], None


def publish_trends(inv: System, window: Window, trends: list[Trend], findings: list[Finding], link: str | None, status: Status) -> None:
    """The markdown artifact (read at a glance) and the table artifact of every series with data."""
    key = artifact_key(RUNBOOK, inv.name)
    create_markdown_artifact(key=f"{key}-trends", markdown=markdown_report(inv, window, trends, findings, link, status),
                             description=mask(f"weekly-report {inv.name}: {status.value}"))
    rows = series_rows(trends, findings)
    if rows:
        create_table_artifact(key=f"{key}-series", table=rows, description=f"{len(rows)} series with data, last week and this week")


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=900)
def weekly_report(
    system: SystemName,
    weeks_back: Annotated[int, Param("Which week: 0 the last 7 days (against the 7 before), 1 the week before that, ...",
                                     ge=0, le=52)] = 0,
) -> Any:
    """Trends of the last 7 local days against the 7 before; CRIT (a far SLO breach) ends the run Failed, with its report."""
    started = time.monotonic()
    logger = get_run_logger()
    inv = load_system(system)
    calls = aws.start_call_log()
    window = week_window(inv, weeks_back)

    # collect: resources, every metric of both weeks, the idle ones looked up, users, cost
    found, findings = resolved(inv)
    inv = found.present(inv)  # without the missing ones, reported above
    users_f = count_distinct_users.submit(inv)
    cost_f = read_costs.submit(window.start.date(), window.end.date()) if inv.reporting.cost_explorer else None
    apis = read_api_names(inv, found, findings)
    albs = read_albs(inv)
    series = plan_series(inv, found, apis, albs)
    values, trends_error = outcome(read_trends.submit(inv.region, series, window.start, window.end))
    trends = None if values is None else trends_of(series, values)
    unreadable = look_up_idle(inv, found, apis, trends)
    lost: list[Finding] = []
    counts = settled(users_f, "users", [], lost)
    cost, cost_reason = outcome(cost_f) if cost_f is not None else (None, None)

    # judge
    findings += judge_report(inv, trends, trends_error, unreadable, cost, cost_reason) + judge_users(counts) + lost
    findings += availability(inv, [api_traffic(a) for a in apis] + [alb_traffic(t) for t in albs], trends, trends_error)
    status = overall(findings)

    # report: HTML in the bucket, markdown and link artifacts
    link, stored = store_report(inv, window, html_report(inv, window, trends or [], findings, cost, status))
    findings += [stored] if stored else []
    status = overall(findings)
    publish_trends(inv, window, trends or [], findings, link, status)

    report = RunReport(
        runbook=RUNBOOK, system=inv.name, status=status, findings=findings, region=inv.region,
        api_calls=calls.total, api_calls_by_operation=calls.by_operation(), duration_s=round(time.monotonic() - started, 2),
        api_retries=calls.retries_total, api_retries_by_operation=calls.retries_by_operation(),
        flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None, flow_run_url=run_url(),
        undeclared_iam_actions=sorted(calls.undeclared),
        records=[{"html": link, "window": {"start": window.start.isoformat(), "end": window.end.isoformat()}}],
    )
    publish_report.submit(report).result()
    logger.info(report.headline())
    if report.status is Status.CRIT:
        return Failed(message=report.headline(), data=report)
    return report
