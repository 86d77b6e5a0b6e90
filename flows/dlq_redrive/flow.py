"""dlq-redrive: move dead-lettered messages back to their source queue (seed 003, scenario A).

LEH's AI worker (Lambda ``leh-ai-worker``) is fed by SQS ``leh-ai-jobs``; a
message it fails three times lands in ``leh-ai-jobs-dlq``. Once the outage is
over, the dead letters go back to the source queue, in batches, at a bounded
rate, without losing one.

Steps: confirm identity -> plan (read concurrently: the DLQ's depth, a masked
sample of its messages, the source queue's settings, the consumer's event
source mapping; then the breakers of the sampled cases) -> (dry run ends
here) -> approval, bound to the plan: at most the planned count is moved even
if more arrive -> lease on the DLQ (renewed while moving, so a killed run
frees it within a minute) -> the consumer is checked again -> move -> verify
the depths -> record -> notify.

The plan cannot move when nothing consumes the source queue (no event source
mapping, or one not Enabled): the messages would wait there and expire after
its retention instead of waiting safely in the DLQ.

Nothing is lost. Each batch of at most 10 is received from the DLQ (invisible
for ``visibility_timeout_s``), sent to the source queue with its body and
message attributes, and deleted from the DLQ only for the entries SQS
accepted. A kill at any moment leaves each message in the DLQ, in flight
(visible again after the visibility timeout) or in the source queue; a kill
between the send and the delete duplicates at most one batch (10 messages).
Messages of a case whose breaker is OPEN, or outside the ``case_id`` /
``evidence_id`` filter, are set aside (invisible while the run goes on) and
made visible again in the DLQ when it ends.

API calls: 3 per batch of 10 moved (ReceiveMessage, SendMessageBatch,
DeleteMessageBatch), a GetQueueAttributes every 5 batches, a BatchGetItem for
cases whose breaker was not read in the last 5 s, a lease renewal every 20 s:
about 0.33 calls a message, plus about 25 for the plan, the session, the
verification and the record (bench/redrive.py: 347 calls for 1,000).
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import SqsQueue, System, load_system
from opsbook.mutation.core import Action, Identity, Plan, Record, Refused
from opsbook.mutation.session import SESSION_TASKS, MutationSession
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SystemName
from tasks.redrive import (
    BATCH,
    QueueState,
    RedriveJob,
    RedriveResult,
    Sampled,
    peek_dlq,
    read_case_breakers,
    read_consumer,
    read_queue,
    redrive_messages,
)

RUNBOOK = "dlq-redrive"
KIND = "sqs-redrive"
LEASE_TTL_S = 60  # renewed every 20 s while moving


# --- deciding (pure: unit-tested without AWS) --------------------------------------------------


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


def decide(inv: System, identity: Identity, q: SqsQueue, function: str | None, reads: dict[str, Any], breakers: Any, *,
           max_messages: int | None, rate: float, rate_from: str, case_id: str | None, evidence_id: str | None,
           visibility_timeout_s: int) -> Plan:
    """The plan from what was read (values, or the exception that reading raised)."""
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    dlq, source, consumer, sample = reads["dlq"], reads["source"], reads.get("consumer"), reads["sample"]
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
        retention = f" and expire after {duration(source.retention_s)}" if isinstance(source, QueueState) else ""
        why = (f"no event source mapping from {q.name}" if consumer.mappings == 0 else
               f"its event source mapping {consumer.mapping_uuid} from {q.name} is {consumer.state}, not Enabled")
        plan.cannot.append(f"{function}: {why}: nothing consumes {q.name}, so moved messages would wait there{retention} "
                           "instead of waiting safely in the DLQ; enable the worker first (paused by bill-shock-breaker?)")
    if isinstance(dlq, QueueState) and isinstance(source, QueueState) and dlq.fifo != source.fifo:
        plan.cannot.append(f"{q.dlq}: {'FIFO' if dlq.fifo else 'standard'} but {q.name} is {'FIFO' if source.fifo else 'standard'}; "
                           "SQS needs both of one kind")
    if isinstance(breakers, BaseException):
        plan.cannot.append(f"{inv.bill_shock.breaker_table if inv.bill_shock else 'breakers'}: could not read the case breakers "
                           f"({aws.describe_error(breakers)}); moving without them could restart the spend they stopped")
        breakers = {}
    if case_id and breakers.get(case_id) == "OPEN":
        plan.cannot.append(f"{case_id}: its breaker is OPEN, so its messages would only be set aside; close it first "
                           "(bill-shock-breaker mode=reset)")

    if isinstance(sample, BaseException):
        plan.notes.append(f"{q.dlq}: could not sample messages ({aws.describe_error(sample)}); breakers are still checked while moving")
        sample = []
    if not isinstance(dlq, QueueState) or not isinstance(source, QueueState):
        return plan
    depth = dlq.depth
    if depth == 0:
        plan.unchanged.append(f"{q.dlq}: empty, nothing to move")
        return plan
    limit = planned_limit(depth, max_messages)
    if not plan.cannot:
        state = f"mapping {consumer.mapping_uuid} {consumer.state}" if consumer else "no mapping read"
        plan.actions.append(Action(
            kind=KIND, resource=q.dlq, current=f"{depth} messages",
            target=f"moved to {q.name}" if limit == depth else f"{limit} of them moved to {q.name}",
            iam_action="sqs:SendMessage", reversible=False,
            evidence=(f"consumer {function} reads {q.name} ({state}). Nothing is lost: each batch of {BATCH} is received from "
                      f"the DLQ (invisible for {visibility_timeout_s} s), sent to {q.name} with body and attributes, and deleted "
                      f"from the DLQ only for the entries SQS accepted; a kill leaves every message in the DLQ, in flight (back "
                      f"after {visibility_timeout_s} s) or in {q.name}; a kill between send and delete duplicates at most one batch "
                      f"({BATCH} messages). Not reversible: moved messages go to {function}")))
    plan.notes.append(f"approval binds the count: at most {limit} message(s) moved and {depth} handled, even if more arrive"
                      + (f" ({dlq.in_flight} of the {depth} are in flight now)" if dlq.in_flight else ""))
    plan.notes.append(f"rate: at most {rate:g} messages/s ({rate_from}): about {duration(limit / rate)} for {limit}")
    policy = (f", dead letters to {source.dead_letter_target_arn.rsplit(':', 1)[-1]} after {source.max_receive_count} receives"
              if source.dead_letter_target_arn else ", no redrive policy")
    plan.notes.append(f"{q.name}: {'FIFO' if source.fifo else 'standard'}, retention {duration(source.retention_s)}, "
                      f"visibility timeout {source.visibility_timeout_s} s{policy}; {source.depth} message(s) waiting now")
    if source.dead_letter_target_arn and not source.dead_letter_target_arn.endswith(f":{q.dlq}"):
        plan.notes.append(f"{q.name}'s redrive policy names {source.dead_letter_target_arn}, not {q.dlq}: check the inventory")
    if dlq.retention_s <= source.retention_s:
        plan.notes.append(f"{q.dlq}: retention {duration(dlq.retention_s)}, not longer than {q.name}'s: a dead letter keeps its first "
                          "enqueue time, so it expires early (AWS advises a longer DLQ retention)")
    if dlq.max_receive_count:
        plan.notes.append(f"{q.dlq} has its own redrive policy (after {dlq.max_receive_count} receives): sampling and set-aside "
                          "messages count as receives")
    if case_id or evidence_id:
        plan.notes.append("only messages whose JSON body has " + " and ".join(
            f"{k}={v}" for k, v in (("case_id", case_id), ("evidence_id", evidence_id)) if v)
            + "; the others are set aside and made visible again when the run ends")
    if inv.bill_shock is None:
        plan.notes.append(f"{inv.name} has no breaker table (bill_shock): messages are moved whatever their case")
    else:
        seen = sorted({s.case_id for s in sample if s.case_id} | ({case_id} if case_id else set()))
        opened = [c for c in seen if breakers.get(c) == "OPEN"]
        for c in opened:
            plan.notes.append(f"case {c}: breaker OPEN: its messages are set aside and stay in the DLQ")
        if seen and not opened:
            plan.notes.append(f"breakers of the {len(seen)} sampled case(s): none OPEN (re-read while moving)")
    for i, s in enumerate(sample, 1):
        age = f", {duration(s.age_s)} old" if s.age_s is not None else ""
        plan.notes.append(f"sample {i}/{len(sample)}: case {s.case_id or '-'}, evidence {s.evidence_id or '-'}, received "
                          f"{s.receive_count}x{age}: {s.body}")
    return plan


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
    b_dlq, b_src = before
    for name, b, what in ((dlq, b_dlq, "dlq"), (source, b_src, "source")):
        a = after.get(what)
        check = "dlq-depth" if what == "dlq" else "source-depth"
        if isinstance(a, BaseException) or a is None:
            out.append(unknown(check, name, aws.describe_error(a) if a is not None else "not read"))
            continue
        if what == "dlq":
            expected = b.depth - r.moved
            extra = a.depth - expected
            status = Status.WARN if extra > 0 else Status.OK
            summary = (f"{b.depth} when planned, {a.depth} now ({a.visible} visible, {a.in_flight} in flight); expected {expected}"
                       + (f": {extra} arrived during the run and were not moved (the approval covered {b.depth}); run again"
                          if extra > 0 else ""))
        else:
            status = Status.OK
            summary = (f"{b.depth} before, {a.depth} now ({a.depth - b.depth:+d}); {r.moved} sent and acknowledged by SQS "
                       "(botocore checks each body's MD5); the consumer takes them from here")
        out.append(Finding(check=check, resource=name, status=status, value=a.depth, summary=summary,
                           details={"before": b.depth, "after": a.depth}))
    act_calls = sum(r.calls.values())
    per = act_calls / r.moved if r.moved else 0.0
    out.append(Finding(check="redrive-api-calls", resource=flow_name, status=Status.OK, value=round(per, 3),
                       summary=f"{act_calls} calls to move {r.moved} ({per:.2f} a message); {run_calls} in the whole run so far"
                               + (f" ({run_calls / r.moved:.2f} a message)" if r.moved else ""),
                       details={"by_operation": r.calls}))
    return out


# --- tasks ----------------------------------------------------------------------------------------


@task(name="make-plan", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, q: SqsQueue, function: str | None, reads: dict[str, Any], breakers: Any,
              max_messages: int | None, rate: float, rate_from: str, case_id: str | None, evidence_id: str | None,
              visibility_timeout_s: int) -> Plan:
    return decide(inv, identity, q, function, reads, breakers, max_messages=max_messages, rate=rate, rate_from=rate_from,
                  case_id=case_id, evidence_id=evidence_id, visibility_timeout_s=visibility_timeout_s)


def _value(fut: Any) -> Any:
    """A future's result, or the exception it ended with (turned into plan text, never swallowed)."""
    fut.wait()
    return fut.result() if fut.state.is_completed() else fut.state.result(raise_on_failure=False)


# --- the runbook --------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def dlq_redrive(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    queue: Annotated[str, Param("The source queue (or its dead-letter queue) to redrive; empty: the system's only queue "
                                "with a dead-letter queue")] = "",
    max_messages: Annotated[int, Param("Move at most this many messages; 0: the whole dead-letter queue as planned", ge=0)] = 0,
    rate_per_s: Annotated[float, Param("Move at most this many messages a second; 0: the inventory's redrive_rate_per_s",
                                       ge=0, le=3000)] = 0,
    case_id: Annotated[str, Param("Move only the messages of this case (others are set aside); empty: every case")] = "",
    evidence_id: Annotated[str, Param("Move only the messages of this evidence item; empty: every item")] = "",
    sample_size: Annotated[int, Param("Messages shown (masked) in the plan, read without consuming them", ge=0, le=10)] = 5,
    visibility_timeout_s: Annotated[int, Param("Seconds a batch in hand stays invisible: after a kill, it reappears then",
                                               ge=1, le=43200)] = 30,
) -> Any:
    """Move the messages of a dead-letter queue back to its source queue.

    dry_run (default) ends after the plan (depth, masked sample, consumer,
    breakers). Otherwise the run asks for approval (a form on the paused run
    in the UI; the shell's prompt or --yes) and moves at most the planned count, at most
    ``rate_per_s`` a second (default: the inventory's redrive_rate_per_s),
    skipping cases whose breaker is OPEN and, with ``case_id`` /
    ``evidence_id``, messages of other cases. ``visibility_timeout_s``: how
    long a batch in hand stays invisible (after a kill, it reappears then).
    A kill never loses a message and duplicates at most one batch (10).
    """
    inv = load_system(system)
    case_id, evidence_id = case_id or None, evidence_id or None  # "" (not given) filters nothing
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
    with session:
        identity = session.identity()
        q = pick_queue(inv, queue)
        function = consumer_function(inv, q)
        rate = rate_per_s or q.redrive_rate_per_s
        futures = {"dlq": read_queue.submit(inv, q.dlq), "source": read_queue.submit(inv, q.name),
                   "sample": peek_dlq.submit(inv, q.dlq, sample_size)}
        if function:
            futures["consumer"] = read_consumer.submit(inv, function, queue_arn(identity, q.name))
        reads = {k: _value(f) for k, f in futures.items()}
        sample: list[Sampled] = reads["sample"] if isinstance(reads["sample"], list) else []
        cases = sorted({s.case_id for s in sample if s.case_id} | ({case_id} if case_id else set()))
        breakers = _value(read_case_breakers.submit(inv, cases)) if inv.bill_shock and cases else {}
        plan = make_plan.submit(inv, identity, q, function, reads, breakers, max_messages=max_messages, rate=rate,
                                rate_from="the rate_per_s parameter" if rate_per_s else "the inventory's redrive_rate_per_s",
                                case_id=case_id, evidence_id=evidence_id, visibility_timeout_s=visibility_timeout_s).result()
        if isinstance(reads["sample"], BaseException):
            session.report.findings.append(unknown("dlq-sample", q.dlq, aws.describe_error(reads["sample"])))
        if session.gate(plan):
            session.lease(LEASE_TTL_S)
            if function:  # approval may have taken an hour: is the worker still consuming?
                now = read_consumer.submit(inv, function, queue_arn(identity, q.name)).result()
                if not now.enabled:
                    raise Refused(f"{function}'s event source mapping from {q.name} is now {now.state or 'gone'}, not Enabled; "
                                  "nothing was moved")
            dlq, source = reads["dlq"], reads["source"]
            job = RedriveJob(dlq=q.dlq, dlq_url=dlq.url, source=q.name, source_url=source.url, fifo=source.fifo,
                             limit=planned_limit(dlq.depth, max_messages), budget=dlq.depth, rate_per_s=rate,
                             visibility_timeout_s=visibility_timeout_s, max_batch_bytes=min(source.max_message_bytes, 1024 * 1024),
                             case_id=case_id, evidence_id=evidence_id, breakers=inv.bill_shock is not None,
                             run_id=session.run_id, lease_ttl_s=LEASE_TTL_S)
            result = redrive_messages.submit(inv, job).result()
            after_f = {"dlq": read_queue.submit(inv, q.dlq), "source": read_queue.submit(inv, q.name)}
            after = {k: _value(f) for k, f in after_f.items()}
            a = session.approval
            ok = result.error is None and result.failed == 0
            record = Record(runbook=RUNBOOK, system=inv.name, resource=q.dlq, kind=KIND, before=f"{dlq.depth} messages",
                            after=f"{result.moved} moved to {q.name}", status="applied" if ok else "failed",
                            detail=(f"{result.moved} moved, {result.skipped} skipped, {result.failed} failed, {result.duplicates} "
                                    f"duplicated; {result.stop_reason}"),
                            flow_run_id=session.run_id, approver=a.approver if a else None, approved_via=a.via if a else None,
                            caller_arn=identity.arn, plan_fingerprint=plan.fingerprint)
            session.record([record])
            session.report.findings += judge(q.dlq, q.name, job, result, (dlq, source), after, session.calls.total)
            session.done(result.error is None)
            session.notify(session.report.outcome, [f"{q.dlq} -> {q.name}: {record.after}; {record.detail}"])
    return session.finish()


TASKS = [read_queue, peek_dlq, read_consumer, read_case_breakers, redrive_messages] + SESSION_TASKS
