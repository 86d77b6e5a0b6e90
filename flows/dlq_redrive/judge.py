"""dlq-redrive's decisions (pure: no AWS, no Prefect, no clock: times are passed in).

Which queue, how many messages and how fast (the plan), which messages to move (the case/evidence filter and
the case breakers), when the DLQ refills as fast as it drains, and the findings after moving.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import SqsQueue, System
from opsbook.mutation.core import Action, Identity, Plan, Refused
from opsbook.pii import mask_log

if TYPE_CHECKING:
    from tasks.awslambda import Consumer
    from tasks.sqs import QueueState, RedriveJob, RedriveResult

RUNBOOK = "dlq-redrive"
KIND = "sqs-redrive"
BATCH = 10  # SQS's batch maximum: the most a kill between send and delete can duplicate
OPEN = "OPEN"  # a case breaker's state that holds its messages back
REFILL_WINDOW_S = 60.0  # SQS's approximate counts settle within about a minute


class Sampled(BaseModel):
    message_id: str
    case_id: str | None
    evidence_id: str | None
    receive_count: int
    age_s: float | None
    body: str = Field(description="masked, at most 200 characters")


# --- which messages ------------------------------------------------------------------------------


def parse_body(body: str) -> tuple[str | None, str | None]:
    """(case_id, evidence_id) from a JSON body; (None, None) when it is not JSON or has neither."""
    try:
        doc = json.loads(body)
    except (ValueError, TypeError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    case, ev = doc.get("case_id"), doc.get("evidence_id")
    return (str(case) if case is not None else None), (str(ev) if ev is not None else None)


def matches(case: str | None, evidence: str | None, case_id: str | None, evidence_id: str | None) -> bool:
    return (case_id is None or case == case_id) and (evidence_id is None or evidence == evidence_id)


def hold_back(case: str | None, evidence: str | None, case_id: str | None, evidence_id: str | None,
              states: dict[str, str] | None) -> str | None:
    """Why a message is not moved ("filter", "breaker-open"), or None to move it. ``states``: case -> breaker
    state (None: breakers are not checked)."""
    if not matches(case, evidence, case_id, evidence_id):
        return "filter"
    if states is not None and case and states.get(case) == OPEN:
        return "breaker-open"
    return None


def sample_of(msg: dict[str, Any], now_ms: float) -> Sampled:
    """What the plan shows of a peeked message: its ids, how often it was received, its age, its body masked."""
    case, ev = parse_body(msg["Body"])
    attrs = msg.get("Attributes") or {}
    sent = attrs.get("SentTimestamp")
    return Sampled(message_id=msg["MessageId"], case_id=case, evidence_id=ev, receive_count=int(attrs.get("ApproximateReceiveCount", 0)),
                   age_s=round((now_ms - int(sent)) / 1000, 1) if sent else None, body=" ".join(mask_log(msg["Body"]).split())[:200])


def refill_verdict(samples: list[tuple[float, int, int]], window_s: float | None = None) -> str | None:
    """samples: (seconds since start, DLQ depth, moved so far). Refilling when, over the last ``window_s``
    (default REFILL_WINDOW_S), at least as many messages arrived in the DLQ as were moved out of it."""
    window_s = REFILL_WINDOW_S if window_s is None else window_s
    if len(samples) < 3:
        return None
    t1, d1, m1 = samples[-1]
    older = [s for s in samples if t1 - s[0] >= window_s]
    if not older:
        return None
    t0, d0, m0 = older[-1]
    drained = m1 - m0
    arrived = (d1 - d0) + drained
    if drained > 0 and arrived >= drained:
        return (f"the DLQ refills as fast as it drains: {arrived} message(s) arrived while {drained} were moved in "
                f"{t1 - t0:.0f} s; the messages probably fail again: fix the cause, then redrive")
    return None


# --- the plan ------------------------------------------------------------------------------------


def pick_queue(inv: System, queue: str | None) -> SqsQueue:
    with_dlq = [q for q in inv.sqs_queues if q.dlq]
    if queue:
        for q in with_dlq:
            if queue in (q.name, q.dlq):
                return q
        raise Refused(f"{queue!r} is not a queue with a dead-letter queue in {inv.name}'s inventory "
                      f"(known: {', '.join(f'{q.name} -> {q.dlq}' for q in with_dlq) or 'none'})")
    if not with_dlq:
        raise Refused(f"{inv.name}'s inventory has no SQS queue with a dead-letter queue (sqs_queues[].dlq)")
    if len(with_dlq) > 1:
        raise Refused(f"{inv.name} has {len(with_dlq)} queues with a dead-letter queue; choose one with queue=NAME "
                      f"({', '.join(q.name for q in with_dlq)})")
    return with_dlq[0]


def consumer_function(inv: System, q: SqsQueue) -> str | None:
    if q.consumer_function:
        return q.consumer_function
    fns = [f.name for f in inv.lambda_functions if f.sqs_source == q.name]
    return fns[0] if len(fns) == 1 else None


def queue_arn(identity: Identity, name: str) -> str:
    partition = identity.arn.split(":")[1] if identity.arn.startswith("arn:") else "aws"
    return f"arn:{partition}:sqs:{identity.region}:{identity.account}:{name}"


def planned_limit(depth: int, max_messages: int | None) -> int:
    return min(depth, max_messages) if max_messages else depth


def sampled_cases(sample: list[Sampled], case_id: str | None) -> list[str]:
    """The cases whose breakers the plan reads: those of the sample and the filter's."""
    return sorted({s.case_id for s in sample if s.case_id} | ({case_id} if case_id else set()))


def duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _read_error(name: str, what: str, exc: BaseException) -> str:
    if aws.is_not_found(exc):
        return f"{name}: the {what} does not exist"
    return f"{name}: could not read the {what} ({aws.describe_error(exc)})"


def _read(x: Any) -> bool:
    """A read that returned a value (not the exception it raised)."""
    return x is not None and not isinstance(x, BaseException)


def _cannot(plan: Plan, inv: System, q: SqsQueue, function: str | None, reads: dict[str, Any], breakers: Any,
            case_id: str | None) -> dict[str, str]:
    """Why the plan cannot move (appended to ``plan.cannot``); returns the breakers read ({} when unreadable)."""
    dlq, source, consumer = reads["dlq"], reads["source"], reads.get("consumer")
    if isinstance(dlq, BaseException):
        plan.cannot.append(_read_error(q.dlq, "dead-letter queue", dlq))
    if isinstance(source, BaseException):
        plan.cannot.append(_read_error(q.name, "source queue", source))
    if function is None:
        plan.cannot.append(f"{q.name}: the inventory names no consumer function (sqs_queues[].consumer_function or "
                           "lambda_functions[].sqs_source): cannot check that anything will read the moved messages")
    elif isinstance(consumer, BaseException):
        plan.cannot.append(f"{function}: could not read its event source mappings ({aws.describe_error(consumer)})")
    elif consumer is not None and not consumer.enabled:
        retention = f" and expire after {duration(source.retention_s)}" if _read(source) else ""
        why = (f"no event source mapping from {q.name}" if consumer.mappings == 0 else
               f"its event source mapping {consumer.mapping_uuid} from {q.name} is {consumer.state}, not Enabled")
        plan.cannot.append(f"{function}: {why}: nothing consumes {q.name}, so moved messages would wait there{retention} "
                           "instead of waiting safely in the DLQ; enable the worker first (paused by bill-shock-breaker?)")
    if _read(dlq) and _read(source) and dlq.fifo != source.fifo:
        plan.cannot.append(f"{q.dlq}: {'FIFO' if dlq.fifo else 'standard'} but {q.name} is {'FIFO' if source.fifo else 'standard'}; "
                           "SQS needs both of one kind")
    if isinstance(breakers, BaseException):
        plan.cannot.append(f"{inv.bill_shock.breaker_table if inv.bill_shock else 'breakers'}: could not read the case breakers "
                           f"({aws.describe_error(breakers)}); moving without them could restart the spend they stopped")
        breakers = {}
    if case_id and breakers.get(case_id) == OPEN:
        plan.cannot.append(f"{case_id}: its breaker is OPEN, so its messages would only be set aside; close it first "
                           "(bill-shock-breaker mode=reset)")
    return breakers


def _move_action(q: SqsQueue, function: str | None, consumer: Consumer | None, depth: int, limit: int,
                 visibility_timeout_s: int) -> Action:
    state = f"mapping {consumer.mapping_uuid} {consumer.state}" if consumer else "no mapping read"
    return Action(
        kind=KIND, resource=q.dlq, current=f"{depth} messages",
        target=f"moved to {q.name}" if limit == depth else f"{limit} of them moved to {q.name}",
        iam_action="sqs:SendMessage", reversible=False,
        evidence=(f"consumer {function} reads {q.name} ({state}). Nothing is lost: each batch of {BATCH} is received from "
                  f"the DLQ (invisible for {visibility_timeout_s} s), sent to {q.name} with body and attributes, and deleted "
                  f"from the DLQ only for the entries SQS accepted; a kill leaves every message in the DLQ, in flight (back "
                  f"after {visibility_timeout_s} s) or in {q.name}; a kill between send and delete duplicates at most one batch "
                  f"({BATCH} messages). Not reversible: moved messages go to {function}"))


def _queue_notes(q: SqsQueue, dlq: QueueState, source: QueueState, limit: int, rate: float, rate_from: str) -> list[str]:
    depth = dlq.depth
    notes = [f"approval binds the count: at most {limit} message(s) moved and {depth} handled, even if more arrive"
             + (f" ({dlq.in_flight} of the {depth} are in flight now)" if dlq.in_flight else ""),
             f"rate: at most {rate:g} messages/s ({rate_from}): about {duration(limit / rate)} for {limit}"]
    policy = (f", dead letters to {source.dead_letter_target_arn.rsplit(':', 1)[-1]} after {source.max_receive_count} receives"
              if source.dead_letter_target_arn else ", no redrive policy")
    notes.append(f"{q.name}: {'FIFO' if source.fifo else 'standard'}, retention {duration(source.retention_s)}, "
                 f"visibility timeout {source.visibility_timeout_s} s{policy}; {source.depth} message(s) waiting now")
    if source.dead_letter_target_arn and not source.dead_letter_target_arn.endswith(f":{q.dlq}"):
        notes.append(f"{q.name}'s redrive policy names {source.dead_letter_target_arn}, not {q.dlq}: check the inventory")
    if dlq.retention_s <= source.retention_s:
        notes.append(f"{q.dlq}: retention {duration(dlq.retention_s)}, not longer than {q.name}'s: a dead letter keeps its first "
                     "enqueue time, so it expires early (AWS advises a longer DLQ retention)")
    if dlq.max_receive_count:
        notes.append(f"{q.dlq} has its own redrive policy (after {dlq.max_receive_count} receives): sampling and set-aside "
                     "messages count as receives")
    return notes


def _message_notes(inv: System, sample: list[Sampled], breakers: dict[str, str], case_id: str | None,
                   evidence_id: str | None) -> list[str]:
    notes = []
    if case_id or evidence_id:
        notes.append("only messages whose JSON body has " + " and ".join(
            f"{k}={v}" for k, v in (("case_id", case_id), ("evidence_id", evidence_id)) if v)
            + "; the others are set aside and made visible again when the run ends")
    if inv.bill_shock is None:
        notes.append(f"{inv.name} has no breaker table (bill_shock): messages are moved whatever their case")
    else:
        seen = sampled_cases(sample, case_id)
        opened = [c for c in seen if breakers.get(c) == OPEN]
        notes += [f"case {c}: breaker OPEN: its messages are set aside and stay in the DLQ" for c in opened]
        if seen and not opened:
            notes.append(f"breakers of the {len(seen)} sampled case(s): none OPEN (re-read while moving)")
    for i, s in enumerate(sample, 1):
        age = f", {duration(s.age_s)} old" if s.age_s is not None else ""
        notes.append(f"sample {i}/{len(sample)}: case {s.case_id or '-'}, evidence {s.evidence_id or '-'}, received "
                     f"{s.receive_count}x{age}: {s.body}")
    return notes


def decide(inv: System, identity: Identity, q: SqsQueue, function: str | None, reads: dict[str, Any], breakers: Any, *,
           max_messages: int | None, rate: float, rate_from: str, case_id: str | None, evidence_id: str | None,
           visibility_timeout_s: int) -> Plan:
    """The plan from what was read (values, or the exception that reading raised)."""
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    dlq, source, consumer, sample = reads["dlq"], reads["source"], reads.get("consumer"), reads["sample"]
    breakers = _cannot(plan, inv, q, function, reads, breakers, case_id)
    if isinstance(sample, BaseException):
        plan.notes.append(f"{q.dlq}: could not sample messages ({aws.describe_error(sample)}); breakers are still checked while moving")
        sample = []
    if not _read(dlq) or not _read(source):
        return plan
    if dlq.depth == 0:
        plan.unchanged.append(f"{q.dlq}: empty, nothing to move")
        return plan
    limit = planned_limit(dlq.depth, max_messages)
    if not plan.cannot:
        plan.actions.append(_move_action(q, function, consumer, dlq.depth, limit, visibility_timeout_s))
    plan.notes += _queue_notes(q, dlq, source, limit, rate, rate_from)
    plan.notes += _message_notes(inv, sample, breakers, case_id, evidence_id)
    return plan


# --- after moving --------------------------------------------------------------------------------


def _depth_finding(name: str, what: str, b: QueueState, a: Any, moved: int) -> Finding:
    """The DLQ's or the source queue's depth now against before (``a``: the state read after, or its exception)."""
    check = "dlq-depth" if what == "dlq" else "source-depth"
    if isinstance(a, BaseException) or a is None:
        return unknown(check, name, aws.describe_error(a) if a is not None else "not read")
    if what == "dlq":
        expected = b.depth - moved
        extra = a.depth - expected
        status = Status.WARN if extra > 0 else Status.OK
        summary = (f"{b.depth} when planned, {a.depth} now ({a.visible} visible, {a.in_flight} in flight); expected {expected}"
                   + (f": {extra} arrived during the run and were not moved (the approval covered {b.depth}); run again"
                      if extra > 0 else ""))
    else:
        status = Status.OK
        summary = (f"{b.depth} before, {a.depth} now ({a.depth - b.depth:+d}); {moved} sent and acknowledged by SQS "
                   "(botocore checks each body's MD5); the consumer takes them from here")
    return Finding(check=check, resource=name, status=status, value=a.depth, summary=summary,
                   details={"before": b.depth, "after": a.depth})


def judge(dlq: str, source: str, job: RedriveJob, r: RedriveResult, before: tuple[QueueState, QueueState],
          after: dict[str, Any], run_calls: int) -> list[Finding]:
    """Findings after moving: what moved, what stayed, what the queues hold now, what it cost."""
    out: list[Finding] = []
    flow_name = f"{dlq} -> {source}"
    rate = r.moved / r.seconds if r.seconds else 0.0
    moved_status = Status.CRIT if r.error else Status.WARN if (r.failed or r.refill) else Status.OK
    out.append(Finding(check="redrive-moved", resource=flow_name, status=moved_status, value=r.moved,
                       summary=f"moved {r.moved} of {job.limit} planned in {r.seconds:.1f} s ({rate:.0f} msg/s, at most "
                               f"{job.rate_per_s:g}); stopped: {r.stop_reason}",
                       details={"seconds": r.seconds, "batches": r.batches, "receives": r.receives, "stop_reason": r.stop_reason}))
    if r.refill:
        out.append(Finding(check="redrive-refill", resource=dlq, status=Status.WARN, summary=r.refill,
                           details={"depth_samples": r.depth_samples}))
    reasons = {"breaker-open": "case breaker OPEN", "filter": "outside the filter", "reappeared": "reappeared"}
    aside = ", ".join(f"{reasons.get(k, k)}: {n}" for k, n in sorted(r.set_aside.items())) or "none"
    aside_status = Status.WARN if (r.failed or r.release_failed) else Status.OK
    out.append(Finding(check="redrive-set-aside", resource=dlq, status=aside_status, value=r.skipped + r.failed,
                       summary=f"not moved: {aside}; "
                               + (f"{r.released} made visible again in the DLQ" if not r.release_failed else
                                  f"{r.release_failed} could not be made visible again: they reappear by themselves"),
                       details={"skipped": r.skipped, "failed": r.failed, "by_reason": r.set_aside}))
    out.append(Finding(check="redrive-duplicates", resource=flow_name, status=Status.WARN if r.duplicates else Status.OK, value=r.duplicates,
                       summary=(f"{r.duplicates} message(s) sent but not deleted from the DLQ ({r.duplicate_codes}): they are in "
                                "both queues" if r.duplicates else "none") + f"; a kill between send and delete duplicates at most "
                               f"one batch ({BATCH} messages)"))
    out.append(_depth_finding(dlq, "dlq", before[0], after.get("dlq"), r.moved))
    out.append(_depth_finding(source, "source", before[1], after.get("source"), r.moved))
    act_calls = sum(r.calls.values())
    per = act_calls / r.moved if r.moved else 0.0
    out.append(Finding(check="redrive-api-calls", resource=flow_name, status=Status.OK, value=round(per, 3),
                       summary=f"{act_calls} calls to move {r.moved} ({per:.2f} a message); {run_calls} in the whole run so far"
                               + (f" ({run_calls / r.moved:.2f} a message)" if r.moved else ""),
                       details={"by_operation": r.calls}))
    return out
