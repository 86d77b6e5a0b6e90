"""weekly-report: last week against the week before, for one system (read-only).

Sources: 001 주간 리포트 (PipelineExecutionTime average, GenerationSuccess, distinct
users of the metadata table), 000 용량 관리 (DynamoDB consumed capacity average/max,
S3 bucket sizes), 002 주간 점검 / 용량 계획 / 비용 모니터링 (Cost Explorer by service).

Reads top to bottom like the procedure: discover the system's resources, read
every metric of both weeks in one GetMetricData batch, look up the idle
resources that discovery did not see (a missing one has no datapoints either),
count users, read cost, judge (SLO breaches, notable changes, idle resources
one line per kind, UNKNOWN for what could not be read and for an SLO without
data), store the HTML report, publish the markdown, table and link artifacts.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Failed

from opsbook import aws
from opsbook.findings import Finding, Status, overall, unknown
from opsbook.inventory import System, load_system
from opsbook.masking import mask
from opsbook.params import Param, SystemName
from opsbook.report import RunReport, artifact_key, publish_report, run_url
from opsbook.resources import Discovered, discover
from tasks.weekly import (
    Trend,
    Unreadable,
    Window,
    api_names,
    confirm_idle,
    count_distinct_users,
    html_report,
    idle_resources,
    judge_report,
    markdown_report,
    plan_series,
    read_costs,
    read_trends,
    report_key,
    series_rows,
    store_html,
    unconfirmed,
    week_window,
)

RUNBOOK = "weekly-report"
TASKS = [discover, api_names, read_trends, confirm_idle, count_distinct_users, read_costs, store_html]


def failed_reason(fut: PrefectFuture) -> str:
    exc = fut.state.result(raise_on_failure=False)
    return aws.describe_error(exc) if isinstance(exc, BaseException) else str(fut.state.message)


def look_up_idle(inv: System, found: Discovered, apis: list[str], trends: list[Trend] | None) -> list[Unreadable]:
    """The idle resources nothing has shown to exist, looked up; a failed look-up makes each of them UNKNOWN with the reason."""
    names = unconfirmed(inv, found, apis, idle_resources(trends)) if trends else {}
    if not names:
        return []
    fut = confirm_idle.submit(inv, names)
    fut.wait()
    if fut.state.is_completed():
        return fut.result()
    reason = failed_reason(fut)
    return [Unreadable(kind=k, resource=n, code="lookup-failed", reason=reason) for k, ns in names.items() for n in ns]


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

    # collect
    found_f = discover.submit(inv)
    found_f.wait()
    findings: list[Finding] = []
    if found_f.state.is_completed():
        found: Discovered = found_f.result()
        if found.error:
            findings.append(unknown("discovery", f"tags {inv.discovery.tags}", found.error))
    else:
        found = Discovered()
        findings.append(unknown("discovery", f"tags {inv.discovery.tags}", failed_reason(found_f)))
    apis_f = api_names.submit(inv, found)
    users_f = count_distinct_users.submit(inv)
    cost_f = read_costs.submit(inv, window) if inv.reporting.cost_explorer else None
    apis_f.wait()
    if apis_f.state.is_completed():
        apis = apis_f.result()
    else:
        apis = [a.name for a in inv.api_gateway_apis]
        findings.append(unknown("apigateway-names", "(tag-discovered APIs)", failed_reason(apis_f)))
    trends_f = read_trends.submit(inv, plan_series(inv, found, apis), window)

    trends_f.wait()
    trends = trends_f.result() if trends_f.state.is_completed() else None
    trends_error = None if trends is not None else failed_reason(trends_f)
    unreadable = look_up_idle(inv, found, apis, trends)
    users_f.wait()
    users = users_f.result() if users_f.state.is_completed() else [unknown("users", "(whole check)", failed_reason(users_f))]
    cost, cost_reason = None, None
    if cost_f is not None:
        cost_f.wait()
        if cost_f.state.is_completed():
            cost = cost_f.result()
        else:
            cost_reason = failed_reason(cost_f)

    # judge
    findings += judge_report(inv, trends, trends_error, unreadable, cost, cost_reason) + users
    status = overall(findings)

    # report: HTML in the bucket, markdown and link artifacts
    key = artifact_key(RUNBOOK, inv.name)
    link: str | None = None
    page = html_report(inv, window, trends or [], findings, cost, status)
    if inv.reporting.report_bucket:
        stored = store_html.submit(inv, report_key(inv, window), page)
        stored.wait()
        if stored.state.is_completed():
            where = stored.result()
            link = where["url"]
            create_link_artifact(key=f"{key}-html", link=link, link_text=where["uri"], description=f"weekly report {inv.name} (HTML, presigned 7 days)")
        else:
            findings.append(unknown("report-html", f"s3://{inv.reporting.report_bucket}", failed_reason(stored)))
    else:
        findings.append(Finding(check="report-html", resource=inv.name, status=Status.OK,
                                summary="reporting.report_bucket is not set: the HTML report was not stored"))
    status = overall(findings)
    publish_trends(inv, window, trends or [], findings, link, status)

    report = RunReport(
        runbook=RUNBOOK, system=inv.name, status=status, findings=findings, region=inv.region,
        api_calls=calls.total, api_calls_by_operation=calls.by_operation(), duration_s=round(time.monotonic() - started, 2),
        flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None, flow_run_url=run_url(),
        undeclared_iam_actions=sorted(calls.undeclared),
        records=[{"html": link, "window": {"start": window.start.isoformat(), "end": window.end.isoformat()}}],
    )
    publish_report.submit(report).result()
    logger.info(report.headline())
    if report.status is Status.CRIT:
        return Failed(message=report.headline(), data=report)
    return report
