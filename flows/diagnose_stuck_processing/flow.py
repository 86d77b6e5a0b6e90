"""diagnose-stuck-processing: why queue-fed work stopped moving, and what to do next (read-only).

Source: seed 003 시나리오 A "AI Worker 멈춤 (업로드 후 무한 '처리 중')": uploads land in S3 but no DynamoDB/OpenSearch
result appears. The seed's diagnosis reads the worker's ERROR lines and the DLQ's depth; its recovery tells three
causes apart: 1. an external outage (OpenAI's status page: announce and wait), 2. a transient error (redrive the DLQ),
3. a code bug (hot-fix, then ``POST /admin/reprocess-evidence {evidence_id}`` for each evidence). A fourth stops the
work as quietly: the worker's SQS trigger disabled.

For every queue-fed worker of the inventory (``sqs_queues[].consumer_function``), all at once:

1. the trigger: the SQS event source mapping's State and LastProcessingResult (a pause the circuit breaker's table
   explains is reported as that pause);
2. the source queue: messages waiting and in flight, and the oldest message's age (AWS/SQS
   ApproximateAgeOfOldestMessage, Maximum over the last 15 min) against ``thresholds.queue_age_*_minutes``;
3. the uploads of the last ``stuck_processing.reconcile_hours`` without their result item (sample-bounded);
4. the worker's error lines of the last ``hours``, the provider's (429/5xx/timeouts) apart from its own;
5. the provider's status page (``stuck_processing.provider_status``) and the DLQ's depth;
6. the worker's last code change (LastModified), against when the failures began.

Then the verdict first: the cause and the next action (nothing is changed: the commands are printed). A CRIT run ends
Failed in Prefect, with its report.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.diagnose_stuck_processing.judge import RUNBOOK, VERDICT, verdict
from opsbook import aws
from opsbook.collect import gather, settled
from opsbook.findings import Finding, Status
from opsbook.inventory import System, load_system
from opsbook.masking import mask
from opsbook.params import Deadline, Param, SystemName
from opsbook.processing import consumer_queues, settings
from opsbook.report import ICON, RunReport, findings_section, finish_read_only, publish_artifacts, sort_findings
from tasks.awslambda import check_triggers, read_configs
from tasks.endpoints import check_provider_status
from tasks.logs import check_worker_errors
from tasks.s3 import check_uploads
from tasks.sqs import check_backlogs, check_dlqs


@task(name="judge-stuck-processing", cache_policy=NO_CACHE)
def diagnose(system: System, findings: list[Finding], changed: dict[str, datetime | None]) -> list[Finding]:
    """The verdict first, then the evidence by severity."""
    return [verdict(system.name, system.region, findings, changed, settings(system).provider)] + sort_findings(findings)


def stuck_markdown(report: RunReport) -> str:
    lines = [f"# {ICON[report.status]} {report.runbook} · {report.system}: **{report.status.value}**", ""]
    v = next((f for f in report.findings if f.check == VERDICT), None)
    if v is not None:
        lines += [f"**{mask(v.summary)}**", ""]
        if v.details.get("next"):
            lines += ["## Next (nothing was changed: this runbook is read-only)", ""]
            lines += [f"{i}. {mask(n)}" for i, n in enumerate(v.details["next"], 1)] + [""]
        if v.details.get("stuck_evidence"):
            lines += ["## Uploads without a result", "", "| key | uploaded (UTC) |", "|---|---|"]
            lines += [f"| `{mask(m['key'])}` | {m.get('uploaded_at', '')} |" for m in v.details["stuck_evidence"][:20]] + [""]
    lines += findings_section(report, skip=(VERDICT,))
    return "\n".join(lines)


@task(name="publish-stuck-processing-report", cache_policy=NO_CACHE)
def publish(report: RunReport) -> RunReport:
    return publish_artifacts(report, stuck_markdown(report))


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=600)
def diagnose_stuck_processing(
    system: SystemName,
    hours: Annotated[float, Param("How far back the worker's error lines are read, in hours (its first failure is looked for "
                                  "in them)", gt=0, le=168)] = 24.0,
    deadline_seconds: Deadline = 60.0,
) -> Any:
    """Why queue-fed work is stuck 'processing' (trigger off, external outage, code bug, transient, stalled) and the next action. Never mutates."""
    started = time.monotonic()
    logger = get_run_logger()
    inv = load_system(system)
    calls = aws.start_call_log()
    deadline = aws.Deadline(deadline_seconds)
    workers = list(dict.fromkeys(fn for _, fn in consumer_queues(inv)))
    if not workers:
        findings = [Finding(check=VERDICT, resource=inv.name, status=Status.OK, value=0,
                            summary=(f"nothing to check: the inventory of {inv.name} names no queue-fed worker (no sqs_queues entry has a "
                                     f"consumer_function); name it in systems/{inv.name}.yaml"))]
        return finish_read_only(RUNBOOK, inv, findings, calls, started, publish, logger)

    # collect: every read at once (each check reads one concern; a failed one is UNKNOWN, never dropped)
    reads = {"worker-trigger": check_triggers.submit(inv, deadline), "queue-backlog": check_backlogs.submit(inv, deadline),
             "uploads-unprocessed": check_uploads.submit(inv, deadline), "worker-errors": check_worker_errors.submit(inv, deadline, hours),
             "provider-status": check_provider_status.submit(inv, deadline), "dlq": check_dlqs.submit(inv, deadline)}
    configs_f = read_configs.submit(inv, workers, deadline)
    lost: list[Finding] = []
    configs = settled(configs_f, "read-lambda-configs", [], lost)
    findings = gather(reads) + lost

    # judge: the verdict first, then the evidence
    changed = {c.name: c.last_modified for c in configs}
    findings = diagnose.submit(inv, findings, changed).result()
    return finish_read_only(RUNBOOK, inv, findings, calls, started, publish, logger)


TASKS = [check_triggers, check_backlogs, check_uploads, check_worker_errors, check_provider_status, check_dlqs, read_configs]
