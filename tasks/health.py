"""Every component check of a system, submitted together: what daily-health runs each morning,
emergency-check runs (without the 24 h log scans) in a P0, and a mutation's verify step runs after acting.

The checks themselves are per service (tasks/ecs.py, tasks/dynamodb.py ...); this module only
submits them concurrently after discovery and gathers their findings.
"""

from __future__ import annotations

from prefect.futures import PrefectFuture

from opsbook import aws
from opsbook.collect import gather_by
from opsbook.findings import Finding
from opsbook.inventory import System
from opsbook.processing import consumer_queues, settings
from opsbook.resources import coverage, discover
from tasks.apigateway import check_apis
from tasks.awslambda import check_durations, check_functions, check_triggers
from tasks.cloudwatch import check_alarms, check_availability, check_target_metrics
from tasks.dynamodb import check_tables
from tasks.ecs import check_services, check_utilisation
from tasks.elb import read_alb_targets
from tasks.endpoints import check_endpoints, check_provider_status
from tasks.logs import (
    check_agent_times,
    check_error_logs,
    check_security_logs,
    check_worker_errors,
)
from tasks.opensearch import check_domains
from tasks.s3 import check_buckets, check_uploads
from tasks.sqs import check_backlogs, check_dlqs

GRACE_S = 2.0  # past the deadline, for a check's last call to come back before it is UNKNOWN
CHECKS = [discover, check_functions, check_tables, check_domains, check_apis, check_services, check_buckets,
          check_alarms, check_error_logs, check_security_logs, check_dlqs, check_endpoints, check_durations,
          check_utilisation, read_alb_targets, check_target_metrics, check_agent_times, check_availability,
          check_triggers, check_backlogs, check_uploads, check_worker_errors, check_provider_status]


def submit_checks(inv: System, found: PrefectFuture, deadline: aws.Deadline, logs: bool = True) -> dict[str, PrefectFuture]:
    """Every component check, submitted concurrently after discovery (the DAG's middle row); ``logs``: with the checks over
    the last 24 h (log scans, Lambda Duration p99 against the timeout, availability against the SLO), which only daily-health runs."""
    checks = {
        "lambda": check_functions.submit(inv, found, deadline),
        "dynamodb": check_tables.submit(inv, found, deadline),
        "opensearch": check_domains.submit(inv, found, deadline),
        "apigateway": check_apis.submit(inv, found, deadline),
        "ecs": check_services.submit(inv, found, deadline),
        "s3": check_buckets.submit(inv, found, deadline),
        "alarms": check_alarms.submit(inv, found, deadline),
    }
    if any(q.dlq for q in inv.sqs_queues):
        checks["dlq"] = check_dlqs.submit(inv, deadline)
    if inv.endpoints:
        checks["endpoints"] = check_endpoints.submit(inv, deadline)  # what users reach: an HTTP request each, not AWS
    checks["ecs-utilisation"] = check_utilisation.submit(inv, checks["ecs"])  # CPU/memory Maximum of the last hour, of the services read
    # The checks of what only some inventories declare (queues, endpoints, security logs ...) are submitted only for those
    # (a task that has nothing to read is a box in the run graph and ~40 ms of bookkeeping, nothing more): they read the
    # inventory's resources, not discovery's. The checks above take discovery's too, so they always run.
    if consumer_queues(inv):  # queue-fed workers (003 A)
        checks["worker-trigger"] = check_triggers.submit(inv, deadline)  # the SQS trigger, paused or not
        checks["queue-backlog"] = check_backlogs.submit(inv, deadline)  # the source queue's depth and oldest message's age
        checks["uploads-unprocessed"] = check_uploads.submit(inv, deadline)  # uploads without a result (sample-bounded)
        checks["worker-errors"] = check_worker_errors.submit(inv, deadline, 24 if logs else 1)  # the provider's errors vs their own
    if settings(inv).provider_status is not None:
        checks["provider-status"] = check_provider_status.submit(inv, deadline)  # the external provider's status page (HTTP)
    if any(s.target_group for s in inv.ecs_services):
        albs = read_alb_targets.submit(inv)  # each service's target group resolved once, for its metrics and availability
        checks["alb-metrics"] = check_target_metrics.submit(inv, albs)  # the target groups' p95, 5XX, unhealthy hosts of the last hour
    else:
        albs = None
    if any(s.log_group for s in inv.ecs_services):
        checks["agent-times"] = check_agent_times.submit(inv, checks["ecs"], deadline)  # the agents' execution_time lines of the last hour
    if logs:
        checks["log-errors"] = check_error_logs.submit(inv, found, deadline)
        if inv.security_logs is not None:
            checks["security-logs"] = check_security_logs.submit(inv, deadline)
        checks["lambda-duration"] = check_durations.submit(inv, checks["lambda"])  # p99 over the same 24 h, against the timeouts read
        if inv.thresholds.availability_slo_pct is not None:  # 1 - 5XX / requests over the same 24 h, against the SLO
            checks["availability"] = check_availability.submit(inv, found, albs if albs is not None else [], deadline)
    return checks


def run_checks(inv: System, deadline: aws.Deadline, logs: bool = True) -> tuple[dict[str, PrefectFuture], list[Finding]]:
    """Discover, run the checks, gather findings (a failed check is UNKNOWN, never dropped)."""
    found = discover.submit(inv, deadline)
    checks = submit_checks(inv, found, deadline, logs)
    findings = gather_by(checks, deadline, GRACE_S)  # a check not done by the deadline is UNKNOWN, not waited for
    found.wait(timeout=deadline.remaining + GRACE_S)
    if found.state.is_completed():
        return checks, findings + coverage(inv, found.result())
    return checks, findings + gather_by({"discovery": found}, deadline, 0)


def health_after(inv: System) -> list[Finding]:
    """The system's component checks after acting (no 24 h log scans or Duration p99: those belong to daily-health)."""
    return run_checks(inv, aws.Deadline(60), logs=False)[1]
