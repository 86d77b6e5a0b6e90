"""Queue-fed work that stops moving (seed 003 시나리오 A: "uploads succeed, no DynamoDB/OpenSearch data, the UI shows
'processing' forever"): the health rules of a worker fed by an SQS queue. Pure: no AWS, no Prefect, no clock (``now``
is given). The reads are in tasks/ (awslambda: the trigger; sqs: the queue; s3: the uploads reconciliation; logs: the
worker's errors; endpoints: the provider's status page); daily-health and emergency-check submit them through
tasks/health.py, and diagnose-stuck-processing reads the same and names the cause.

Each rule is given what was read, or the reason it could not be read (always UNKNOWN, never OK).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import StuckProcessing, System

TRIGGER, BACKLOG, UPLOADS, WORKER_ERRORS, PROVIDER = "worker-trigger", "queue-backlog", "uploads-unprocessed", "worker-errors", "provider-status"
SERVICE_BREAKER = "__service__"  # the breaker table's item for the whole service (bill-shock-breaker pauses the worker under it)
PAUSED = ("Disabled", "Disabling")  # event source mapping states in which the worker does not consume
HEALTHY_RESULTS = ("OK", "No records processed")
AGE_WINDOW_MINUTES = 15  # ApproximateAgeOfOldestMessage: the Maximum over this window


def settings(system: System) -> StuckProcessing:
    return system.stuck_processing or StuckProcessing()


def consumer_queues(system: System) -> list[tuple[str, str]]:
    """(queue, consumer function) for every queue the inventory says a function consumes (``sqs_queues[].consumer_function``
    or ``lambda_functions[].sqs_source``), without repeats."""
    out: list[tuple[str, str]] = []
    for q in system.sqs_queues:
        if q.consumer_function:
            out.append((q.name, q.consumer_function))
    for f in system.lambda_functions:
        if f.sqs_source and (f.sqs_source, f.name) not in out:
            out.append((f.sqs_source, f.name))
    return out


def uploads_target(system: System) -> tuple[str | None, str, str | None]:
    """(uploads bucket, prefix, results table): stuck_processing's, else bill_shock's and case_store's."""
    cfg = settings(system)
    bucket = cfg.uploads_bucket or (system.bill_shock.uploads_bucket if system.bill_shock else None)
    prefix = cfg.uploads_prefix if cfg.uploads_prefix is not None else (system.bill_shock.uploads_prefix if system.bill_shock else "uploads/")
    table = cfg.results_table or (system.case_store.evidence_table if system.case_store else None)
    return bucket, prefix, table


def results_key(system: System, table: str) -> tuple[str, str | None]:
    """(partition key, sort key) of the results table, from its dynamodb_tables entry (else case_store's names)."""
    spec = next((t for t in system.dynamodb_tables if t.name == table), None)
    if spec is not None:
        return spec.partition_key, spec.sort_key
    cs = system.case_store
    return (cs.case_key, cs.evidence_key) if cs else ("case_id", "evidence_id")


# --- the worker's trigger (the SQS event source mapping) -----------------------------------------------------------


def _when(item: dict[str, Any]) -> str:
    return f"by {item.get('changed_by') or '(unknown)'} at {item.get('changed_at') or '(unknown time)'}"


def judge_trigger(queue: str, function: str, mappings: list[dict[str, Any]] | None, unreadable: str | None = None,
                  breaker: dict[str, Any] | None = None, breaker_unreadable: str | None = None) -> Finding:
    """The event source mapping from ``queue`` to ``function``: none is CRIT (nothing consumes the queue); Disabled or
    Disabling is CRIT unless the breaker table's service item is OPEN (a pause by the circuit breaker: WARN, saying who
    and when); a LastProcessingResult other than OK / "No records processed" is WARN with its text."""
    resource = f"{function}<-{queue}"
    if unreadable is not None:
        return unknown(TRIGGER, resource, unreadable)
    if mappings is None:
        return unknown(TRIGGER, resource, "no answer from ListEventSourceMappings")
    if not mappings:
        return Finding(check=TRIGGER, resource=resource, status=Status.CRIT, value=0, details={"function": function, "queue": queue, "mappings": 0},
                       summary=f"no event source mapping from {queue} to {function}: nothing consumes the queue (sqs_source in the inventory)")
    m = sorted(mappings, key=lambda x: x.get("State") != "Enabled")[0]
    state, result = m.get("State") or "?", m.get("LastProcessingResult")
    details = {"function": function, "queue": queue, "uuid": m.get("UUID"), "state": state, "last_processing_result": result,
               "mappings": len(mappings), "last_modified": str(m.get("LastModified") or "") or None,
               "state_transition_reason": m.get("StateTransitionReason")}
    if state in PAUSED or state == "Deleting":
        if breaker and str(breaker.get("state", "")).upper() in ("OPEN", "PAUSED") and state in PAUSED:
            details["breaker"] = breaker
            return Finding(check=TRIGGER, resource=resource, status=Status.WARN, value=0, details=details,
                           summary=(f"{function}'s trigger from {queue} is {state}: paused by the circuit breaker "
                                    f"({breaker.get('reason') or 'no reason recorded'}; {_when(breaker)}); messages wait in the queue"))
        why = f"; the breaker table could not be read to explain it ({breaker_unreadable})" if breaker_unreadable else \
            "; no circuit-breaker record explains it"
        return Finding(check=TRIGGER, resource=resource, status=Status.CRIT, value=0, details=details,
                       summary=f"{function}'s trigger from {queue} is {state}: the worker consumes nothing, uploads stay 'processing'{why}")
    if result and not any(str(result).startswith(ok) for ok in HEALTHY_RESULTS):
        return Finding(check=TRIGGER, resource=resource, status=Status.WARN, value=1, details=details,
                       summary=f"{function}'s trigger from {queue} is {state}; last processing result: {result}")
    seen = f"; last processing result: {result}" if result else ""
    return Finding(check=TRIGGER, resource=resource, status=Status.OK, value=1, details=details, summary=f"{state} from {queue}{seen}")


# --- the source queue: depth and the oldest message's age ------------------------------------------------------------


def judge_backlog(queue: str, depth: dict[str, int] | None, unreadable: str | None, age_s: float | None, age_unreadable: str | None,
                  warn_minutes: float, crit_minutes: float) -> Finding:
    """Messages waiting and the oldest one's age (ApproximateAgeOfOldestMessage, Maximum over the last 15 min) against the
    thresholds. No datapoint while messages wait is UNKNOWN, never OK; an empty queue is OK."""
    if unreadable is not None:
        return unknown(BACKLOG, queue, unreadable)
    if depth is None:
        return Finding(check=BACKLOG, resource=queue, status=Status.CRIT, summary="the worker's source queue does not exist (named in the inventory)")
    visible, in_flight = depth.get("visible", 0), depth.get("in_flight", 0)
    details: dict[str, Any] = {"visible": visible, "in_flight": in_flight, "oldest_age_s": age_s,
                               "warn_minutes": warn_minutes, "crit_minutes": crit_minutes}
    waiting = f"{visible} waiting, {in_flight} in flight"
    if visible + in_flight == 0:
        return Finding(check=BACKLOG, resource=queue, status=Status.OK, value=0, details=details, summary=f"{queue}: empty")
    if age_unreadable is not None:
        return Finding(check=BACKLOG, resource=queue, status=Status.UNKNOWN, details=details,
                       summary=f"{queue}: {waiting}; the oldest message's age could not be read: {age_unreadable}")
    if age_s is None:
        return Finding(check=BACKLOG, resource=queue, status=Status.UNKNOWN, details=details,
                       summary=(f"{queue}: {waiting}, but no ApproximateAgeOfOldestMessage datapoint in the last {AGE_WINDOW_MINUTES} min: "
                                "how long they have waited is not known"))
    minutes = age_s / 60
    if minutes >= crit_minutes:
        status, why = Status.CRIT, f" (CRIT from {crit_minutes:g} min): the worker is not keeping up or not consuming"
    elif minutes >= warn_minutes:
        status, why = Status.WARN, f" (WARN from {warn_minutes:g} min)"
    else:
        status, why = Status.OK, ""
    return Finding(check=BACKLOG, resource=queue, status=status, value=round(minutes, 1), details=details,
                   summary=f"{queue}: oldest message {minutes:.0f} min old{why}; {waiting}")


# --- reconciliation: uploads without a result ------------------------------------------------------------------------


class UploadsRead(BaseModel):
    """What the reconciliation read: the uploads of the window (newest first, up to the sample), and which have a result."""

    bucket: str
    prefix: str
    table: str
    listed: int = 0
    list_cut: bool = False
    in_window: int = 0
    pending: int = 0
    unmapped: list[str] = Field(default_factory=list)
    checked: list[dict[str, Any]] = Field(default_factory=list, description="{key, uploaded_at, key values}")
    missing: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None
    missing_bucket: bool = False


def map_key(key: str, pattern: str, pk: str, sk: str | None) -> dict[str, str] | None:
    """The results table's key values an upload's object key maps to (named groups ``case_id``/``evidence_id`` or the
    table's own key names), or None when the key does not match."""
    m = re.match(pattern, key)
    if not m:
        return None
    g = m.groupdict()
    out = {pk: g.get(pk) or g.get("case_id")}
    if sk:
        out[sk] = g.get(sk) or g.get("evidence_id")
    return out if all(out.values()) else None


def split_uploads(objects: list[tuple[str, datetime]], now: datetime, hours: float, grace_minutes: float
                  ) -> tuple[list[tuple[str, datetime]], int, int]:
    """(the uploads due: in the window and older than the grace, newest first; how many were in the window; how many are
    still within the grace: not yet due, never 'missing'). The caller samples the due ones it can map to a result key."""
    since, due = now - timedelta(hours=hours), now - timedelta(minutes=grace_minutes)
    window = [(k, t) for k, t in objects if t >= since]
    ripe = sorted(((k, t) for k, t in window if t <= due), key=lambda kt: kt[1], reverse=True)
    return ripe, len(window), len(window) - len(ripe)


def judge_uploads(r: UploadsRead | None, hours: float, grace_minutes: float, warn: int, crit: int, unreadable: str | None = None) -> Finding:
    resource = f"s3://{r.bucket}/{r.prefix}" if r else "uploads"
    if unreadable is not None:
        return unknown(UPLOADS, resource, unreadable)
    if r is None:
        return unknown(UPLOADS, resource, "nothing was read")
    if r.missing_bucket:
        return unknown(UPLOADS, resource, f"the uploads bucket {r.bucket} does not exist: nothing to reconcile")
    if r.error is not None:
        return unknown(UPLOADS, resource, r.error)
    n, missing = len(r.checked), len(r.missing)
    cut = f" (listing stopped at {r.listed:,} keys: a lower bound)" if r.list_cut else ""
    sampled = f" (the newest {n} of {r.in_window - r.pending})" if n < r.in_window - r.pending else ""
    details = {"bucket": r.bucket, "prefix": r.prefix, "table": r.table, "checked": n, "missing": missing, "in_window": r.in_window,
               "pending": r.pending, "unmapped": len(r.unmapped), "unmapped_keys": r.unmapped[:5], "listed": r.listed,
               "list_cut": r.list_cut, "missing_keys": [m["key"] for m in r.missing[:10]],
               "missing_items": r.missing[:50], "oldest_missing_at": min((m["uploaded_at"] for m in r.missing), default=None)}
    tail = f"; {r.pending} younger than {grace_minutes:g} min not due yet" if r.pending else ""
    if r.unmapped:
        tail += f"; {len(r.unmapped)} keys not matching upload_key_pattern (not judged)"
    if not n:
        return Finding(check=UPLOADS, resource=resource, status=Status.OK, value=0, details=details,
                       summary=f"no upload older than {grace_minutes:g} min in the last {hours:g} h to reconcile{tail}{cut}")
    status = Status.CRIT if missing >= crit else Status.WARN if missing >= warn else Status.OK
    if status is Status.OK:
        return Finding(check=UPLOADS, resource=resource, status=status, value=0, details=details,
                       summary=f"{n} uploads of the last {hours:g} h{sampled} each have their result in {r.table}{tail}{cut}")
    keys = ", ".join(m["key"] for m in r.missing[:3])
    return Finding(check=UPLOADS, resource=resource, status=status, value=missing, details=details,
                   summary=(f"{missing} of {n} uploads of the last {hours:g} h{sampled} have no result in {r.table} "
                            f"(stuck 'processing'), e.g. {keys}{tail}{cut}"))


# --- the worker's errors: the provider's (external) and its own (internal) ---------------------------------------------

def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


ERROR_LINE = re.compile(r"ERROR|Error|Exception|Traceback|Task timed out")


def split_errors(lines: list[tuple[datetime, str]], patterns: list[str]) -> tuple[list[tuple[datetime, str]], list[tuple[datetime, str]]]:
    """(external, internal) error lines; lines that are not errors (the filter may return others) are dropped."""
    ext = [re.compile(p) for p in patterns]
    external, internal = [], []
    for t, line in lines:
        if not ERROR_LINE.search(line):
            continue
        (external if any(p.search(line) for p in ext) else internal).append((t, line))
    return external, internal


def judge_worker_errors(function: str, group: str, lines: list[tuple[datetime, str]] | None, unreadable: str | None, patterns: list[str],
                        provider: str, hours: float, warn: int, crit: int, truncated: bool = False, missing_group: bool = False) -> Finding:
    """The worker's error lines of the window split into the provider's (429, 5xx, timeouts) and its own, a count and a
    sample each (the lines are masked by the caller). Any error is WARN, CRIT from ``crit`` of one kind."""
    if unreadable is not None:
        return unknown(WORKER_ERRORS, function, f"{group}: {unreadable}")
    if missing_group:
        return unknown(WORKER_ERRORS, function, f"the log group {group} does not exist (the worker never ran, or logs elsewhere)")
    if lines is None:
        return unknown(WORKER_ERRORS, function, f"{group}: nothing was read")
    external, internal = split_errors(lines, patterns)
    details = {"group": group, "external": len(external), "internal": len(internal), "hours": hours, "truncated": truncated,
               "external_sample": [m for _, m in external[-3:]], "internal_sample": [m for _, m in internal[-3:]],
               "first_external_at": _iso(min((t for t, _ in external), default=None)),
               "first_internal_at": _iso(min((t for t, _ in internal), default=None)),
               "last_external_at": _iso(max((t for t, _ in external), default=None))}
    lower = "at least " if truncated else ""
    window = f"in the last {hours:g} h" if hours >= 1 else f"in the last {hours * 60:.0f} min"
    if not external and not internal:
        return Finding(check=WORKER_ERRORS, resource=function, status=Status.OK, value=0, details=details, summary=f"no error line {window}")
    status = Status.CRIT if max(len(external), len(internal)) >= crit else Status.WARN if len(external) + len(internal) >= warn else Status.OK
    parts = []
    if external:
        parts.append(f"{lower}{len(external)} from {provider} (429/5xx/timeouts), e.g. {external[-1][1][:160]!r}")
    if internal:
        parts.append(f"{lower}{len(internal)} of its own, e.g. {internal[-1][1][:160]!r}")
    return Finding(check=WORKER_ERRORS, resource=function, status=status, value=len(external) + len(internal), details=details,
                   summary=f"{window}: " + "; ".join(parts))


# --- the provider's status page --------------------------------------------------------------------------------------


def judge_provider_status(provider: str, url: str, status: int | None, body: str | None, error: str | None, not_probed: str | None) -> Finding:
    """A Statuspage ``status.json`` (indicator none / minor / major / critical) or any URL answering 2xx when healthy. The
    page unreachable or not probed is UNKNOWN (the provider's state is not known, not ours to call an outage)."""
    if not_probed is not None:
        return Finding(check=PROVIDER, resource=url, status=Status.UNKNOWN, summary=not_probed)
    if error is not None or status is None:
        return unknown(PROVIDER, url, f"{provider}'s status page did not answer: {error or 'no status'}")
    details: dict[str, Any] = {"provider": provider, "http_status": status}
    if not 200 <= status < 300:
        return Finding(check=PROVIDER, resource=url, status=Status.WARN, value=status, details=details,
                       summary=f"{provider}'s status page answered {status}")
    try:
        doc = json.loads(body or "")
    except ValueError:
        doc = None
    st = doc.get("status") if isinstance(doc, dict) else None
    if isinstance(st, dict):
        indicator, desc = str(st.get("indicator", "")).lower(), st.get("description") or ""
        details.update(indicator=indicator, description=desc)
        if indicator in ("", "none"):
            return Finding(check=PROVIDER, resource=url, status=Status.OK, value=0, details=details,
                           summary=f"{provider}: {desc or 'operational'}")
        return Finding(check=PROVIDER, resource=url, status=Status.WARN, value=1, details=details,
                       summary=f"{provider} reports {indicator}: {desc or 'degraded'} (external: announce and wait)")
    if isinstance(st, str) and st.lower() not in ("ok", "operational", "up", "none", "healthy"):
        details["indicator"] = st
        return Finding(check=PROVIDER, resource=url, status=Status.WARN, value=1, details=details,
                       summary=f"{provider} reports {st!r} (external: announce and wait)")
    return Finding(check=PROVIDER, resource=url, status=Status.OK, value=0, details=details, summary=f"{provider}: answered {status}")
