"""diagnose-stuck-processing's judgement (pure: no AWS, no Prefect, no clock: ``now`` is given).

From the findings of the queue-fed worker's reads (opsbook/processing.py's rules: the trigger, the queue, the uploads
without a result, the worker's errors split the provider's / its own, the provider's status page, and the DLQ's depth)
and each worker's last code change (LastModified), the seed's cause (003 시나리오 A 복구 절차) and the next action:

- ``trigger-off``: the SQS trigger is disabled (or missing) and nothing explains it: re-enable it;
- ``throttled``: a worker's reserved concurrency is 0: it never runs, its trigger included: give it back;
- ``breaker-pause``: the circuit breaker paused the worker (bill-shock-breaker): resume it through the breaker once
  spend is back under budget;
- ``external-outage``: the provider's status page is degraded, or its errors (429/5xx/timeouts) dominate: announce and
  wait (1. 외부 장애 확인), then redrive what went to the DLQ;
- ``code-bug``: the worker's own errors: hot-fix, deploy, then reprocess each stuck evidence (3. 코드 버그); "deploy the
  fix first" while the worker has not changed since the failures began;
- ``trigger-failing``: the mapping is on but its LastProcessingResult is a problem, nothing else explains it;
- ``transient``: messages in the DLQ, nothing failing now: redrive the DLQ (2. 일시적 오류);
- ``not-enqueued``: uploads without a result while the queue and the DLQ are empty and nothing errors: the jobs never
  reached the queue (the upload's enqueue step) or were deleted unprocessed;
- ``stalled``: the queue ages or uploads have no result while the trigger is on and nothing errors: the worker is not
  being run (throttled, reserved concurrency 0, ...);
- ``none``: nothing stuck; ``unknown``: the reads that would tell could not be made.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opsbook.findings import Finding, Status, worst
from opsbook.mutation.core import Action, Plan
from opsbook.processing import BACKLOG, PROVIDER, TRIGGER, UPLOADS, WORKER_ERRORS

RUNBOOK = "diagnose-stuck-processing"
VERDICT = "stuck-processing-verdict"
DLQ = "dlq-depth"
EVIDENCE = (TRIGGER, BACKLOG, UPLOADS, WORKER_ERRORS, PROVIDER, DLQ)


def _bad(findings: list[Finding], check: str, statuses: tuple[Status, ...] = (Status.WARN, Status.CRIT)) -> list[Finding]:
    return [f for f in findings if f.check == check and f.status in statuses]


def _count(findings: list[Finding], key: str) -> int:
    return sum(int(f.details.get(key) or 0) for f in findings if f.check == WORKER_ERRORS)


def first_failure(findings: list[Finding]) -> datetime | None:
    """When the failures began: the first error line of the worker's own, else the oldest upload without a result."""
    times = [f.details.get("first_internal_at") for f in findings if f.check == WORKER_ERRORS]
    times += [f.details.get("oldest_missing_at") for f in findings if f.check == UPLOADS]
    parsed = [datetime.fromisoformat(t) for t in times if t]
    return min(parsed) if parsed else None


def stuck_evidence(findings: list[Finding]) -> list[dict[str, Any]]:
    """The uploads without a result (their key values and object key), as the reconciliation found them."""
    return [m for f in findings if f.check == UPLOADS for m in f.details.get("missing_items", [])]


def _trigger_off(system: str, region: str, f: Finding) -> tuple[str, str, list[str]]:
    d = f.details
    if not d.get("mappings"):
        return ("trigger-off", f"nothing consumes {d.get('queue')}: {f.summary}",
                [f"create the event source mapping from {d.get('queue')} to {d.get('function')} (the inventory's sqs_source), then "
                 "watch the queue drain"])
    return ("trigger-off", f.summary,
            [f"re-enable the trigger: aws lambda update-event-source-mapping --uuid {d.get('uuid')} --enabled --region {region} "
             "(printed, never sent by this runbook)", "then watch the queue's oldest message's age fall"])


def _breaker(system: str, f: Finding) -> tuple[str, str, list[str]]:
    return ("breaker-pause", f.summary,
            ["the circuit breaker paused the worker on purpose (seed 003 시나리오 C): once spend is back under budget, resume it: "
             f"opsbook run bill-shock-breaker --system {system} --param mode=reset --param resume_service=true --execute"])


def worker_fixed(findings: list[Finding], changed: dict[str, datetime | None]) -> tuple[str, datetime, datetime] | None:
    """(worker, when its code changed, when the failures began) when a worker changed after the failures began (the hot-fix
    is deployed); None otherwise (or when either time is unknown: then the fix is not known to be there)."""
    began = first_failure(findings)
    fixed = sorted((at, fn) for fn, at in changed.items() if at is not None and began is not None and at > began)
    return (fixed[-1][1], fixed[-1][0], began) if fixed and began else None


def _code_bug(system: str, findings: list[Finding], changed: dict[str, datetime | None]) -> tuple[str, str, list[str]]:
    began = first_failure(findings)
    stuck = stuck_evidence(findings)
    errs = [f for f in findings if f.check == WORKER_ERRORS and f.details.get("internal")]
    sample = (errs[0].details.get("internal_sample") or ["?"])[-1][:200] if errs else "?"
    ids = ", ".join(str(m.get("evidence_id") or m.get("key")) for m in stuck[:5]) or "(none found by the reconciliation)"
    fixed = worker_fixed(findings, changed)
    what = f"the worker's own errors ({_count(findings, 'internal')}: e.g. {sample!r}); {len(stuck)} uploads without a result"
    if fixed:
        fn, at, began = fixed
        return ("code-bug", what, [f"{fn} changed at {at:%Y-%m-%d %H:%M} UTC, after the failures began "
                                   f"({began:%Y-%m-%d %H:%M} UTC): reprocess each stuck evidence ({ids}) through "
                                   "POST /admin/reprocess-evidence {evidence_id}, then check each result appears"])
    when = f" (the worker last changed at {min((a for a in changed.values() if a), default=None):%Y-%m-%d %H:%M} UTC, " \
           f"before the failures began at {began:%Y-%m-%d %H:%M} UTC)" if began and any(changed.values()) else ""
    return ("code-bug", what, [f"deploy the fix first{when}: hot-fix the worker; reprocessing before that fails the same way",
                               f"then reprocess each stuck evidence ({ids}) through POST /admin/reprocess-evidence {{evidence_id}}"])


def _cause(system: str, region: str, findings: list[Finding], changed: dict[str, datetime | None], provider: str,
           reserved: dict[str, Any] | None = None) -> tuple[str, str, list[str]]:
    """(cause, why, next actions) in the order the seed checks them; the trigger first (nothing else matters while off)."""
    off = _bad(findings, TRIGGER, (Status.CRIT,))
    if off:
        return _trigger_off(system, region, off[0])
    zero = sorted(fn for fn, n in (reserved or {}).items() if n == 0)
    if zero:
        return ("throttled", f"{', '.join(zero)} has reserved concurrency 0: it never runs, its SQS trigger included; jobs wait",
                [f"give it back its concurrency: aws lambda delete-function-concurrency --function-name {zero[0]} --region {region} "
                 "(or put the reserved value it had; nothing was changed)"])
    paused = [f for f in _bad(findings, TRIGGER, (Status.WARN,)) if f.details.get("breaker")]
    if paused:
        return _breaker(system, paused[0])
    external, internal = _count(findings, "external"), _count(findings, "internal")
    degraded = _bad(findings, PROVIDER, (Status.WARN,))
    redrive = f"opsbook run dlq-redrive --system {system} --execute"
    if degraded or (external and external >= internal):
        why = "; ".join([f.summary for f in degraded] + ([f"{external} {provider} errors (429/5xx/timeouts) in the worker's log"] if external else []))
        return ("external-outage", why, [f"announce it: {provider} is failing, uploads stay 'processing' (nothing is lost: "
                                         "jobs wait or go to the DLQ); wait for it to recover (its status page)",
                                         f"then redrive what went to the DLQ: {redrive}"])
    if internal:
        return _code_bug(system, findings, changed)
    failing = [f for f in _bad(findings, TRIGGER, (Status.WARN,)) if f.details.get("last_processing_result")]
    if failing:
        d = failing[0].details
        return ("trigger-failing", f"{d.get('function')}'s trigger from {d.get('queue')} reports: {d.get('last_processing_result')}",
                [f"the trigger cannot hand jobs to {d.get('function')}: check its execution role (sqs:ReceiveMessage, sqs:DeleteMessage, "
                 f"sqs:GetQueueAttributes on {d.get('queue')}), that it can be invoked, and its log group"])
    dlq = _bad(findings, DLQ)
    if dlq:
        return ("transient", f"{dlq[0].summary} and nothing is failing now",
                [f"redrive the DLQ to the source queue (2. 일시적 오류): {redrive}"])
    backlog, unprocessed = _bad(findings, BACKLOG), _bad(findings, UPLOADS)
    if unprocessed and not backlog and all(f.details.get("visible", 0) + f.details.get("in_flight", 0) == 0 for f in findings if f.check == BACKLOG):
        return ("not-enqueued", f"{unprocessed[0].summary}; yet the queue is empty, the DLQ too, and nothing errors",
                ["the jobs never reached the queue (the upload's enqueue step: the S3 event notification or the upload API) or were "
                 "deleted unprocessed: check that path, then reprocess each evidence (POST /admin/reprocess-evidence {evidence_id})"])
    slow = backlog + unprocessed
    if slow:
        return ("stalled", "; ".join(f.summary for f in slow) + "; the trigger is on and nothing errors",
                ["the worker is not being run: check its Throttles and reserved concurrency (0 stops an SQS trigger without an "
                 "error), the mapping's maximum concurrency, and its Duration; jobs wait in the queue until its retention"])
    unread = [f for f in findings if f.check in EVIDENCE and f.status is Status.UNKNOWN]
    if not any(f.check in EVIDENCE for f in findings):
        return ("unknown", "nothing was read", ["run it again; see the findings for the reads that failed"])
    if unread:
        return ("unknown", "; ".join(f"{f.check} {f.resource}: {f.summary}" for f in unread[:3]),
                ["grant the reads that failed (opsbook policy diagnose-stuck-processing) and run it again"])
    return ("none", "the trigger is on, the queue moves, every recent upload has its result, no error", [])


TITLES = {"trigger-off": "the worker's trigger is off", "throttled": "the worker may not run (reserved concurrency 0)",
          "breaker-pause": "paused by the circuit breaker", "external-outage": "external outage ({provider})", "code-bug": "a bug in the worker",
          "transient": "a transient failure", "trigger-failing": "the trigger fails to hand jobs over", "stalled": "the queue is not moving and nothing errors",
          "not-enqueued": "uploads never became jobs", "none": "nothing stuck", "unknown": "could not tell"}


def verdict(system: str, region: str, findings: list[Finding], changed: dict[str, datetime | None], provider: str = "the provider",
            reserved: dict[str, Any] | None = None) -> Finding:
    """The cause, the evidence's worst status, and the next actions (``details.next``). ``reserved``: each worker's reserved
    concurrency (0: it never runs)."""
    cause, why, nxt = _cause(system, region, findings, changed, provider, reserved)
    statuses = [f.status for f in findings if f.check in EVIDENCE and f.status is not Status.UNKNOWN]
    status = Status.UNKNOWN if cause == "unknown" else worst(statuses) if statuses else Status.UNKNOWN
    if cause == "none":
        status = Status.OK
    elif cause == "throttled":
        status = Status.CRIT
    elif status is Status.OK:
        status = Status.WARN
    began = first_failure(findings)
    stuck = stuck_evidence(findings)
    title = TITLES[cause].format(provider=provider)
    summary = f"{title}: {why}" + (f". Next: {nxt[0]}" if nxt else "")
    fixed = cause == "code-bug" and worker_fixed(findings, changed) is not None
    return Finding(check=VERDICT, resource=system, status=status, value=len(stuck), summary=summary[:1500],
                   details={"cause": cause, "next": nxt, "fixed": fixed, "first_failure": began.isoformat() if began else None,
                            "stuck_evidence": stuck[:50], "workers_changed": {k: v.isoformat() if v else None for k, v in changed.items()}})


# --- the plan: reprocess each stuck evidence (code bug, fix deployed) ----------------------------------------------------

REPROCESS = "reprocess-evidence"
RESULT, NO_RESULT = "result", "no result"
IDEMPOTENCY = ("each evidence is requested at most once by this plan; a retried request or SQS's at-least-once delivery may "
               "still process one twice: the worker's idempotency is the product's")


def evidence_resource(item: dict[str, Any], keys: list[str]) -> str:
    """A step's resource: the result's key values, ``case/evidence``."""
    return "/".join(str(item.get(k, "")) for k in keys)


def reprocess_plan(plan: Plan, v: Finding, keys: list[str], how: str, iam: str, max_items: int, system: str) -> Plan:
    """``plan`` with a reprocess-evidence step per stuck evidence (each once) when the verdict is a code bug whose fix is
    deployed; otherwise no step, and the notes say what comes first (deploy the fix, redrive the DLQ, re-enable ...)."""
    cause, nxt = v.details.get("cause"), list(v.details.get("next") or [])
    redrive = f"opsbook run dlq-redrive --system {system} --execute"
    if cause == "code-bug" and v.details.get("fixed"):
        items = list({evidence_resource(m, keys): m for m in v.details.get("stuck_evidence", [])}.items())
        for res, m in items[:max_items]:
            plan.actions.append(Action(kind=REPROCESS, resource=res, current=NO_RESULT, target=RESULT, iam_action=iam, reversible=False,
                                       evidence=f"uploaded {m.get('uploaded_at', '?')} as {m.get('key', '?')}, no result; {how}"))
        if len(items) > max_items:
            plan.notes.append(f"{len(items) - max_items} more stuck evidences are left for the next run (at most {max_items} a plan)")
        if not items:
            plan.notes.append("the fix is deployed, but the reconciliation found no upload without a result to reprocess")
        plan.notes.append(IDEMPOTENCY)
        plan.notes.append(f"and whatever went to the DLQ meanwhile: {redrive}")
    elif cause == "code-bug":
        plan.notes.append("no reprocess-evidence step: " + (nxt[0] if nxt else "deploy the fix first"))
    elif cause == "transient":
        plan.notes.append(f"transient: redrive the DLQ, not a reprocess: {redrive}")
    else:
        plan.notes += [f"{cause}: {n}" for n in nxt] or [f"{cause}: nothing to reprocess"]
    return plan
