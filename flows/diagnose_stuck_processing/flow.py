"""diagnose-stuck-processing: why queue-fed work stopped moving, and what to do next (a dry run by default).

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
6. the worker's last code change (LastModified), against when the failures began, and its reserved concurrency (0: it
   never runs, its trigger included).

Then the verdict first: the cause and the next action (the commands are printed, never sent), and the plan. A dry run
(the default, and every alarm-started run) ends there. For a code bug whose fix is deployed (a worker's LastModified
newer than the first failure; before that the plan says "deploy the fix first") the plan offers one
``reprocess-evidence`` step per stuck evidence: through the product's admin API (``POST /admin/reprocess-evidence
{evidence_id}``, ``stuck_processing.reprocess.admin_api_url``) or, without one, its job sent to the worker's queue again
(``reprocess.message``); approved, each evidence requested at most once (the worker's idempotency is the product's:
SQS delivers at least once), and verified by its result item appearing. For a transient failure the plan points to
dlq-redrive. A CRIT run ends Failed in Prefect, with its report.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.diagnose_stuck_processing.judge import NO_RESULT, REPROCESS, RESULT, RUNBOOK, VERDICT, reprocess_plan, verdict
from opsbook import aws
from opsbook.collect import gather, settled
from opsbook.findings import Finding, Status
from opsbook.iam import declares
from opsbook.inventory import Reprocess, System, load_system
from opsbook.masking import mask
from opsbook.mutation.core import Applier, Identity, Plan
from opsbook.mutation.session import SESSION_TASKS, MutationSession, steps_policy
from opsbook.params import ApprovalTimeout, Approver, Deadline, DryRun, Param, SettleTimeout, SystemName
from opsbook.processing import consumer_queues, results_key, settings, uploads_target
from opsbook.report import ICON, RunReport, findings_section, finish_read_only, publish_artifacts, sort_findings
from tasks.awslambda import check_triggers, read_configs, read_reserved_concurrency
from tasks.dynamodb import item_exists
from tasks.endpoints import check_provider_status, post_json
from tasks.logs import check_worker_errors
from tasks.s3 import check_uploads
from tasks.sqs import check_backlogs, check_dlqs, send_job

# --- the step: reprocess one evidence (the product's admin API, or its job sent again) -------------------------------


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def result_keys(system: System) -> tuple[str, list[str]]:
    """(the results table, its key attribute names) a step's resource ``case/evidence`` is made of."""
    table = uploads_target(system)[2] or ""
    pk, sk = results_key(system, table)
    return table, [pk] + ([sk] if sk else [])


def appliers(ctx: dict[str, Any]) -> dict[str, Applier]:
    """The reprocess-evidence step. ``ctx["items"]``: resource -> the upload the plan read (its object key, when uploaded),
    filled at planning; a re-run closing a killed run's step has the key values only."""

    @declares(["dynamodb:GetItem"])
    def read_result(system: System, resource: str) -> str:
        table, keys = result_keys(system)
        return RESULT if item_exists(system, table, dict(zip(keys, resource.split("/", len(keys) - 1)))) else NO_RESULT

    @declares(["dynamodb:GetItem", "sqs:GetQueueUrl", "sqs:SendMessage"])
    def request(system: System, resource: str, target: str) -> None:
        """Ask once: POST the evidence id to the admin API, or send its job to the queue. A result there already: nothing."""
        if read_result(system, resource) == RESULT:
            return
        _, keys = result_keys(system)
        item = _Blank({**ctx.get("items", {}).get(resource, {}), **dict(zip(keys, resource.split("/", len(keys) - 1)))})
        rp = settings(system).reprocess or Reprocess()
        if rp.admin_api_url:
            post_json(rp.admin_api_url, {"evidence_id": item.get("evidence_id") or item[keys[-1]]}, rp.token_env, rp.timeout_s)
        else:
            queue = rp.queue or consumer_queues(system)[0][0]
            send_job(system.region, queue, {k: v.format_map(item) for k, v in rp.message.items()})

    return {REPROCESS: Applier(read=read_result, apply=request)}


def how_requested(system: System) -> tuple[str, str]:
    """(how a step asks, its 'IAM action' in the plan)."""
    rp = settings(system).reprocess or Reprocess()
    if rp.admin_api_url:
        return f"POST {rp.admin_api_url} {{evidence_id}}", "HTTP POST /admin/reprocess-evidence (no IAM action)"
    queue = rp.queue or (consumer_queues(system) or [("?", "?")])[0][0]
    return f"its job sent to {queue} again", "sqs:SendMessage"


@task(name="judge-stuck-processing", cache_policy=NO_CACHE)
def diagnose(system: System, findings: list[Finding], changed: dict[str, datetime | None], reserved: dict[str, Any]) -> list[Finding]:
    """The verdict first, then the evidence by severity."""
    return [verdict(system.name, system.region, findings, changed, settings(system).provider, reserved)] + sort_findings(findings)


def diagnosis_lines(v: Finding | None) -> list[str]:
    """The verdict, the next actions and the uploads without a result, as markdown."""
    if v is None:
        return []
    lines = [f"**{mask(v.summary)}**", ""]
    if v.details.get("next"):
        lines += ["## Next (the commands are printed, never sent)", ""]
        lines += [f"{i}. {mask(n)}" for i, n in enumerate(v.details["next"], 1)] + [""]
    if v.details.get("stuck_evidence"):
        lines += ["## Uploads without a result", "", "| key | uploaded (UTC) |", "|---|---|"]
        lines += [f"| `{mask(m['key'])}` | {m.get('uploaded_at', '')} |" for m in v.details["stuck_evidence"][:20]] + [""]
    return lines


def stuck_markdown(report: RunReport) -> str:
    v = next((f for f in report.findings if f.check == VERDICT), None)
    lines = [f"# {ICON[report.status]} {report.runbook} · {report.system}: **{report.status.value}**", ""] + diagnosis_lines(v)
    return "\n".join(lines + findings_section(report, skip=(VERDICT,)))


@task(name="publish-stuck-processing-report", cache_policy=NO_CACHE)
def publish(report: RunReport) -> RunReport:
    return publish_artifacts(report, stuck_markdown(report))


@task(name="publish-stuck-processing-diagnosis", cache_policy=NO_CACHE)
def publish_stuck(system: str, v: Finding, findings: list[Finding]) -> None:
    """The diagnosis (verdict, next actions, the uploads without a result, the evidence) as its own artifact, before the plan."""
    from prefect.artifacts import create_markdown_artifact

    from opsbook.report import finding_lines

    md = [f"# {ICON[v.status]} {RUNBOOK} · {system}: {v.status.value}", ""] + diagnosis_lines(v) + finding_lines(sort_findings(findings))
    create_markdown_artifact(key=f"{RUNBOOK}-{system}-diagnosis".lower(), markdown="\n".join(md), description=mask(v.summary)[:200])


def collect(inv: System, deadline: aws.Deadline, hours: float, workers: list[str]
            ) -> tuple[list[Finding], dict[str, datetime | None], dict[str, Any]]:
    """Every read at once (each check reads one concern; a failed one is UNKNOWN, never dropped), each worker's LastModified and
    reserved concurrency."""
    reads = {"worker-trigger": check_triggers.submit(inv, deadline), "queue-backlog": check_backlogs.submit(inv, deadline),
             "uploads-unprocessed": check_uploads.submit(inv, deadline), "worker-errors": check_worker_errors.submit(inv, deadline, hours),
             "provider-status": check_provider_status.submit(inv, deadline), "dlq": check_dlqs.submit(inv, deadline)}
    configs_f = read_configs.submit(inv, workers, deadline)
    reserved_f = read_reserved_concurrency.submit(inv, workers, deadline)
    lost: list[Finding] = []
    configs = settled(configs_f, "read-lambda-configs", [], lost)
    reserved = settled(reserved_f, "read-reserved-concurrency", {}, lost)
    lost += [Finding(check="worker-concurrency", resource=fn, status=Status.UNKNOWN, summary=f"could not be read: {why}")
             for fn, why in reserved.items() if isinstance(why, str)]
    return gather(reads) + lost, {c.name: c.last_modified for c in configs}, reserved


def act(inv: System, session: MutationSession, identity: Identity, settle_timeout_s: int) -> None:
    """Leases, drift check, one request per evidence (each independent), wait for each result to appear, record, notify."""
    done, ok = session.act(identity, undo_on_failure=False)
    done = session.settle(done, settle_timeout_s or inv.mutations.settle_timeout_s,
                          "no result after {timeout} s: {what}; the request was made: the next run (or the reconciliation) shows it")
    session.record(done)
    session.conclude(done, ok, lambda r: f"{r.resource}: {r.kind}: {r.status} {r.detail}".strip())


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def diagnose_stuck_processing(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    hours: Annotated[float, Param("How far back the worker's error lines are read, in hours (its first failure is looked for "
                                  "in them)", gt=0, le=168)] = 24.0,
    deadline_seconds: Deadline = 60.0,
    settle_timeout_s: SettleTimeout = 0,
    approval_timeout_s: ApprovalTimeout = 0,
) -> Any:
    """Why queue-fed work is stuck 'processing' and the next action; a fixed code bug: a plan to reprocess each stuck evidence (dry run by default)."""
    inv = load_system(system)
    workers = list(dict.fromkeys(fn for _, fn in consumer_queues(inv)))
    if not workers:
        findings = [Finding(check=VERDICT, resource=inv.name, status=Status.OK, value=0,
                            summary=(f"nothing to check: the inventory of {inv.name} names no queue-fed worker (no sqs_queues entry has a "
                                     f"consumer_function); name it in systems/{inv.name}.yaml"))]
        return finish_read_only(RUNBOOK, inv, findings, aws.start_call_log(), time.monotonic(), publish, get_run_logger())
    ctx: dict[str, Any] = {}
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s, appliers=appliers(ctx))
    with session:
        identity = session.identity()
        findings, changed, reserved = collect(inv, aws.Deadline(deadline_seconds), hours, workers)
        findings = diagnose.submit(inv, findings, changed, reserved).result()
        session.report.findings += findings
        v = findings[0]
        ctx["items"] = {"/".join(str(m.get(k, "")) for k in result_keys(inv)[1]): m for m in v.details.get("stuck_evidence", [])}
        how, iam = how_requested(inv)
        rp = settings(inv).reprocess or Reprocess()
        plan = reprocess_plan(Plan(runbook=RUNBOOK, system=inv.name, identity=identity), v, result_keys(inv)[1], how, iam, rp.max_items, inv.name)
        publish_stuck.submit(inv.name, v, findings[1:]).result()
        if session.gate(plan):
            act(inv, session, identity, settle_timeout_s)
    return session.finish()


TASKS = [check_triggers, check_backlogs, check_uploads, check_worker_errors, check_provider_status, check_dlqs, read_configs, read_reserved_concurrency,
         steps_policy(appliers({}))] + SESSION_TASKS
