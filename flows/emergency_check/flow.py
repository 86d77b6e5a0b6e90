"""emergency-check: the first two minutes of a P0/P1 (read-only).

Sources: 000 장애 대응 2. 초기 평가 (emergency_check.sh) and 알람별 대응 가이드,
001 장애 대응 가이드 P0 즉시 대응 1-2 (ECS service, ALB target health), 002
장애 대응 절차 P0-P3. Every component at once, within a hard deadline: the
daily-health component checks (without their 24 h log scans), the errors of the
LAST HOUR with their messages ranked over every line read (up to the inventory's
thresholds.error_lines_budget, said when reached), ALB target health, the alarms
firing with their priority; and for ECS services the last hour's performance
(001 P1 서비스 성능 저하: CPU/memory against their targets, the target group's
response time p95, 5XX and unhealthy hosts, each agent's execution_time p95 and
the pipeline's from the service's log). Then the verdict: the incident priority implied and
whom to escalate to, shown first, followed by the findings by severity.

The priority and escalation rules: judge.py.
"""

from __future__ import annotations

import time
from typing import Annotated

from prefect import allow_failure, flow, get_run_logger
from prefect.utilities.annotations import opaque

from flows.emergency_check.judge import RECENT_CHECK, judge_window_errors, verdict
from flows.emergency_check.report import ordered, publish
from opsbook import aws
from opsbook.collect import DeadlineTaskRunner, gather_by
from opsbook.inventory import load_system
from opsbook.params import Param, SystemName
from opsbook.report import RunReport, judge
from opsbook.resources import coverage, discover
from tasks.apigateway import check_apis
from tasks.awslambda import check_functions, check_triggers
from tasks.cloudwatch import check_alarms, check_target_metrics
from tasks.dynamodb import check_tables
from tasks.ecs import check_services, check_utilisation
from tasks.elb import check_target_health, read_alb_targets
from tasks.endpoints import check_endpoints, check_provider_status
from tasks.health import submit_checks
from tasks.logs import check_agent_times, check_worker_errors, count_recent_errors
from tasks.opensearch import check_domains
from tasks.s3 import check_buckets, check_uploads
from tasks.sqs import check_backlogs, check_dlqs

RUNBOOK = "emergency-check"
TASKS = [discover, check_functions, check_tables, check_domains, check_apis, check_services, check_buckets,
         check_alarms, check_dlqs, count_recent_errors, check_target_health, check_endpoints, check_utilisation, read_alb_targets,
         check_target_metrics, check_agent_times, check_triggers, check_backlogs, check_uploads, check_worker_errors, check_provider_status]
SAMPLES = 20  # masked sample lines shown per log group (the messages are ranked over every line read)
WINDOW_MINUTES = 60


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=300, task_runner=DeadlineTaskRunner())
def emergency_check(
    system: SystemName,
    deadline_seconds: Annotated[float, Param("Seconds for the whole check (the first minutes of an incident): what is not read "
                                             "by then is UNKNOWN", gt=0, le=300)] = 10.0,
) -> RunReport:
    """Every component at once, then the incident priority and whom to escalate to. Never mutates."""
    started = time.monotonic()
    logger = get_run_logger()
    inv = load_system(system)
    calls = aws.start_call_log()
    # The checks get the deadline minus a reserve for judging and publishing.
    reserve = min(2.0, deadline_seconds * 0.25)
    deadline = aws.Deadline(max(0.5, deadline_seconds - reserve))
    grace = reserve / 2

    with aws.bounded(deadline):  # no call outlives the deadline; what is not read by then is UNKNOWN
        found = discover.submit(inv)
        checks = submit_checks(inv, found, deadline, logs=False)
        checks[RECENT_CHECK] = count_recent_errors.submit(inv, found, deadline, WINDOW_MINUTES, SAMPLES, inv.thresholds.error_lines_budget)
        checks["alb-targets"] = check_target_health.submit(inv, deadline)

    findings = gather_by(checks, deadline, grace, {RECENT_CHECK: lambda reads: judge_window_errors(reads, inv, WINDOW_MINUTES)})
    found.wait(timeout=deadline.remaining + grace)
    if found.state.is_completed():
        findings += coverage(inv, found.result())
    else:
        findings += gather_by({"discovery": found}, deadline, 0)
    findings.append(verdict(inv, findings))

    report = judge.submit(RUNBOOK, inv, opaque(findings), calls, started,  # not walked: its edges are the checks waited for
                          wait_for=[allow_failure(f) for f in checks.values() if f.state.is_final()]).result()
    report.runbook = RUNBOOK
    report.findings = ordered(report.findings)
    report.count_calls(calls, started)
    publish.submit(report).result()
    logger.info("%s | %s", report.headline(), report.findings[0].summary)
    return report
