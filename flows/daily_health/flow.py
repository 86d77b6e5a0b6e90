"""daily-health: the morning check of one system (read-only).

Sources: 000 §일상 운영 1 (daily_health_check.sh) and 부록 A, 001 일일 점검 and
일일 보안 점검, 002 일일 점검, 003 (DLQ). Reads top to bottom like the procedure:
discover the system's resources, check every component concurrently (ECS
services with their last hour's performance: 001 성능 모니터링), judge,
report, notify on a change of status.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import allow_failure, flow, get_run_logger
from prefect.states import Failed
from prefect.utilities.annotations import opaque

from flows.daily_health.judge import BREACH_CHECKS, ends_failed
from opsbook import aws
from opsbook.collect import DeadlineTaskRunner
from opsbook.escalation import breach_escalation
from opsbook.inventory import load_system
from opsbook.notify import notify_status
from opsbook.paging import page_report
from opsbook.params import Deadline, Param, SystemName
from opsbook.report import judge, markdown, publish_report
from tasks.health import CHECKS, run_checks

RUNBOOK = "daily-health"
NOTIFY_S = 5.0  # seconds a notification has at least, past the deadline
TASKS = [*CHECKS, notify_status]


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=900, task_runner=DeadlineTaskRunner())
def daily_health(
    system: SystemName,
    deadline_seconds: Deadline = 60.0,
    notify: Annotated[bool, Param("Alert the system's channels (SNS topic, Prefect block) when the status changes: once on "
                                  "WARN/CRIT, once on recovery; page CRIT findings once per incident (notifications.paging)")] = True,
) -> Any:
    """Check every component of a system; CRIT ends the run Failed, with its report saved."""
    started = time.monotonic()
    logger = get_run_logger()
    inv = load_system(system)
    calls = aws.start_call_log()
    deadline = aws.Deadline(deadline_seconds)

    with aws.bounded(deadline):  # the reads; a notification after them is sent whatever the time
        checks, findings = run_checks(inv, deadline)
    findings += breach_escalation(inv, findings, BREACH_CHECKS)

    report = judge.submit(RUNBOOK, inv, opaque(findings), calls, started,  # not walked: its edges are the checks waited for
                          wait_for=[allow_failure(f) for f in checks.values() if f.state.is_final()]).result()
    if notify:  # sent even after the deadline, but within NOTIFY_S more at most: a hung SNS cannot hold the run
        with aws.bounded(aws.Deadline(max(deadline.remaining, NOTIFY_S))):
            note = notify_status.submit(inv, RUNBOOK, report.status, report.headline(), markdown(report))
        note.wait(timeout=max(deadline.remaining, NOTIFY_S) + 2)
        if note.state.is_completed():
            report.notification = note.result()
        elif not note.state.is_final():
            report.notification = {"kind": None, "sent": [], "errors": [f"not sent within {max(NOTIFY_S, 0):g} s past the "
                                                                         "deadline: the notification service did not answer"]}
            logger.warning("notification not sent in time")
        else:
            report.notification = {"kind": None, "sent": [], "errors": [f"notify task failed: {note.state.message}"]}
            logger.warning("notification failed: %s", note.state.message)
        page_report(report, inv, RUNBOOK)
    report.count_calls(calls, started)
    publish_report.submit(report).result()
    logger.info(report.headline())
    if ends_failed(report.status):
        return Failed(message=report.headline(), data=report)
    return report
