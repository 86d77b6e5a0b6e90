"""daily-health: the morning check of one system (read-only).

Sources: 000 §일상 운영 1 (daily_health_check.sh) and 부록 A, 001 일일 점검 and
일일 보안 점검, 002 일일 점검, 003 (DLQ). Reads top to bottom like the procedure:
discover the system's resources, check every component concurrently, judge,
report, notify on a change of status.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import allow_failure, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Failed

from opsbook.params import Deadline, Param, SystemName
from tasks import aws
from tasks.apigateway import check_apis
from tasks.awslambda import check_functions
from tasks.cloudwatch import check_alarms
from tasks.dynamodb import check_tables
from tasks.ecs import check_services
from tasks.findings import Finding, Status, overall, unknown
from tasks.inventory import System, load_system
from tasks.logs import check_error_logs, check_security_logs
from tasks.notify import notify_status
from tasks.opensearch import check_domains
from tasks.report import RunReport, markdown, publish_report
from tasks.s3 import check_buckets
from tasks.sqs import check_dlqs
from tasks.tagging import Discovered, discover

RUNBOOK = "daily-health"
TASKS = [discover, check_functions, check_tables, check_domains, check_apis, check_services, check_buckets,
         check_alarms, check_error_logs, check_security_logs, check_dlqs, notify_status]


def coverage(system: System, found: Discovered) -> list[Finding]:
    """Discovery problems, and the rule that finding no resources at all is never OK."""
    out = []
    if found.error:
        out.append(unknown("discovery", f"tags {system.discovery.tags}", found.error))
    named = sum(len(getattr(system, f)) for f in ("lambda_functions", "dynamodb_tables", "opensearch_domains", "api_gateway_apis",
                                                  "ecs_services", "s3_buckets", "log_groups", "sqs_queues"))
    if found.enabled and not found.error and found.count() == 0:
        out.append(Finding(check="discovery", resource=f"tags {system.discovery.tags}", status=Status.WARN, value=0,
                           summary=f"no resource in {system.region} carries the tags {system.discovery.tags}; check the region, account and tags"))
    if named + found.count() == 0 and not found.error:
        out.append(Finding(check="discovery", resource=system.name, status=Status.CRIT, value=0,
                           summary="the inventory resolves to no resources at all; nothing was checked"))
    return out


def gather(futures: dict[str, PrefectFuture]) -> list[Finding]:
    """Each check's findings; a check task that failed is UNKNOWN with its reason, never dropped."""
    findings: list[Finding] = []
    for name, fut in futures.items():
        fut.wait()
        state = fut.state
        if state.is_completed():
            findings += fut.result()
        else:
            exc = state.result(raise_on_failure=False)
            reason = aws.describe_error(exc) if isinstance(exc, BaseException) else str(state.message)
            findings.append(unknown(name, "(whole check)", reason))
    return findings


def run_url() -> str | None:
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url
    return f"{ui}/runs/flow-run/{flow_run.get_id()}" if ui and flow_run.get_id() else None


def submit_checks(inv: System, found: PrefectFuture, deadline: aws.Deadline, logs: bool = True) -> dict[str, PrefectFuture]:
    """Every component check, submitted concurrently after discovery (the DAG's middle row)."""
    checks = {
        "lambda": check_functions.submit(inv, found, deadline),
        "dynamodb": check_tables.submit(inv, found, deadline),
        "opensearch": check_domains.submit(inv, found, deadline),
        "apigateway": check_apis.submit(inv, found, deadline),
        "ecs": check_services.submit(inv, found, deadline),
        "s3": check_buckets.submit(inv, found, deadline),
        "alarms": check_alarms.submit(inv, deadline),
        "dlq": check_dlqs.submit(inv, deadline),
    }
    if logs:
        checks["log-errors"] = check_error_logs.submit(inv, found, deadline)
        checks["security-logs"] = check_security_logs.submit(inv, deadline)
    return checks


def run_checks(inv: System, deadline: aws.Deadline, logs: bool = True) -> tuple[dict[str, PrefectFuture], list[Finding]]:
    """Discover, run the checks, gather findings (a failed check is UNKNOWN, never dropped)."""
    found = discover.submit(inv)
    checks = submit_checks(inv, found, deadline, logs)
    found.wait()
    if found.state.is_completed():
        return checks, gather(checks) + coverage(inv, found.result())
    return checks, gather({"discovery": found} | checks)


@task(name="judge", cache_policy=NO_CACHE)
def judge(system: System, findings: list[Finding], calls: aws.CallLog, started: float) -> RunReport:
    return RunReport(
        runbook=RUNBOOK, system=system.name, status=overall(findings), findings=findings, region=system.region,
        api_calls=calls.total, api_calls_by_operation=calls.by_operation(), duration_s=round(time.monotonic() - started, 2),
        flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None, flow_run_url=run_url(),
        undeclared_iam_actions=sorted(calls.undeclared),
    )


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=900)
def daily_health(
    system: SystemName,
    deadline_seconds: Deadline = 60.0,
    notify: Annotated[bool, Param("Alert the system's channels (SNS topic, Prefect block) when the status changes: once on "
                                  "WARN/CRIT, once on recovery")] = True,
) -> Any:
    """Check every component of a system; CRIT ends the run Failed, with its report saved."""
    started = time.monotonic()
    logger = get_run_logger()
    inv = load_system(system)
    calls = aws.start_call_log()
    deadline = aws.Deadline(deadline_seconds)

    checks, findings = run_checks(inv, deadline)

    report = judge.submit(inv, findings, calls, started, wait_for=[allow_failure(f) for f in checks.values()]).result()
    if notify:
        note = notify_status.submit(inv, RUNBOOK, report.status, report.headline(), markdown(report))
        note.wait()
        if note.state.is_completed():
            report.notification = note.result()
        else:
            report.notification = {"kind": None, "sent": [], "errors": [f"notify task failed: {note.state.message}"]}
            logger.warning("notification failed: %s", note.state.message)
    report.count_calls(calls, started)
    publish_report.submit(report).result()
    logger.info(report.headline())
    if report.status is Status.CRIT:
        return Failed(message=report.headline(), data=report)
    return report
