"""dlq-redrive: move dead-lettered messages back to their source queue (seed 003, scenario A).

LEH's AI worker (Lambda ``leh-ai-worker``) is fed by SQS ``leh-ai-jobs``; a
message it fails three times lands in ``leh-ai-jobs-dlq``. Once the outage is
over, the dead letters go back to the source queue, in batches, at a bounded
rate, without losing one.

Steps: confirm identity -> plan (read concurrently: the DLQ's depth, a masked
sample of its messages, the source queue's settings, the consumer's event
source mapping; then the breakers of the sampled cases) -> (dry run ends
here) -> approval, bound to the plan: at most the planned count is moved even
if more arrive -> lease on the DLQ (the mutation session's heartbeat keeps it
while the run lives, so a killed run frees it within a minute) -> the consumer
is checked again -> the move, as one step of the mutation mechanism (its
intent written before the first batch, its outcome after the last; a re-run
after a kill closes it from the DLQ's depth) -> verify the depths -> record ->
notify.

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
cases whose breaker was not read in the last 5 s, a lease heartbeat every 15 s:
about 0.33 calls a message, plus about 25 for the plan, the session, the
verification and the record (bench/redrive.py: 347 calls for 1,000).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.dlq_redrive.judge import (
    KIND,
    RUNBOOK,
    Sampled,
    consumer_function,
    decide,
    hold_back,
    judge,
    parse_body,
    pick_queue,
    planned_limit,
    queue_arn,
    refill_verdict,
    sample_of,
    sampled_cases,
)
from opsbook import aws
from opsbook.findings import unknown
from opsbook.iam import declares
from opsbook.inventory import SqsQueue, System, load_system
from opsbook.mutation import statestore, steps
from opsbook.mutation.core import Applier, Identity, Plan, Record, Refused
from opsbook.mutation.session import SESSION_TASKS, MutationSession, steps_policy
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SystemName
from tasks.awslambda import read_consumer_mapping
from tasks.dynamodb import BREAKER_CLOSED, read_breakers, read_case_breakers
from tasks.sqs import RedriveJob, peek_dlq, queue_depth, read_queue, redrive_messages

BREAKER_TTL_S = 5.0  # re-read a case's breaker at most this often while moving


# --- the step: the move, closed after a kill from the DLQ's depth -------------------------------------------


@declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes"])
def read_depth(system: System, dlq: str) -> str:
    url = aws.client("sqs", system.region).get_queue_url(QueueName=dlq)["QueueUrl"]
    return f"{queue_depth(system.region, url)} messages"


def moved_some(system: System, dlq: str, before: str, target: str) -> bool:
    """A killed move went (in part) when the DLQ holds fewer messages than when it started; the re-run plans the rest."""
    return int(read_depth(system, dlq).split()[0]) < int(before.split()[0])


def not_by_value(system: System, dlq: str, target: str) -> None:
    raise Refused(f"{dlq}: a redrive is a move of messages (redrive-messages), not a value to set; run dlq-redrive")


APPLIERS = {KIND: Applier(read=read_depth, apply=not_by_value, reached=moved_some)}


class CaseSteer:
    """Which messages redrive-messages moves: the case/evidence filter, and the case breakers (re-read at most
    every BREAKER_TTL_S while moving; None: the system has no breaker table); when the DLQ refills; when the run lost
    its lease on the DLQ (stop: another run may be moving)."""

    def __init__(self, system: System, case_id: str | None, evidence_id: str | None, breakers: bool, run_id: str = "",
                 dlq: str | None = None) -> None:
        self.system, self.case_id, self.evidence_id, self.breakers = system, case_id, evidence_id, breakers
        self.run_id, self.dlq = run_id, dlq  # the lease this run must hold while it moves
        self.read: dict[str, tuple[float, str]] = {}  # case -> (read at, state)

    def states(self, cases: set[str]) -> dict[str, str]:
        now = time.monotonic()
        stale = sorted(c for c in cases if c not in self.read or now - self.read[c][0] > BREAKER_TTL_S)
        if stale:
            items = read_breakers(self.system, stale)
            for c in stale:
                self.read[c] = (now, str(items.get(c, {}).get("state", BREAKER_CLOSED)))
        return {c: self.read[c][1] for c in cases}

    def halt(self) -> str | None:
        """Stop moving once this run's lease on the DLQ is lost (or about to lapse unrenewed): another run may take it over."""
        journal = steps.active(self.run_id)
        if journal is None or self.dlq is None:
            return None
        try:
            journal.check(self.dlq)
        except statestore.LeaseLost as exc:
            return f"stopped: {exc}"
        return None

    def choose(self, msgs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
        ids = [parse_body(m["Body"]) for m in msgs]
        states = None
        if self.breakers:  # only the cases of messages the filter lets through
            states = self.states({c for c, e in ids if c and hold_back(c, e, self.case_id, self.evidence_id, None) is None})
        return [(m, hold_back(c, e, self.case_id, self.evidence_id, states)) for m, (c, e) in zip(msgs, ids)]

    def refill(self, samples: list[tuple[float, int, int]]) -> str | None:
        return refill_verdict(samples)


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


def _read_all(inv: System, identity: Identity, q: SqsQueue, function: str | None, sample_size: int,
              case_id: str | None) -> tuple[dict[str, Any], Any]:
    """The DLQ, the source queue, a masked sample and the consumer's mapping, at once; then the sampled cases' breakers."""
    futures = {"dlq": read_queue.submit(inv, q.dlq), "source": read_queue.submit(inv, q.name),
               "sample": peek_dlq.submit(inv, q.dlq, sample_size)}
    if function:
        futures["consumer"] = read_consumer_mapping.submit(inv, function, queue_arn(identity, q.name))
    reads = {k: _value(f) for k, f in futures.items()}
    if isinstance(reads["sample"], list):
        now_ms = time.time() * 1000
        reads["sample"] = [sample_of(m, now_ms) for m in reads["sample"]]
    sample: list[Sampled] = reads["sample"] if isinstance(reads["sample"], list) else []
    cases = sampled_cases(sample, case_id)
    breakers = _value(read_case_breakers.submit(inv, cases)) if inv.bill_shock and cases else {}
    return reads, breakers


def _move(session: MutationSession, inv: System, q: SqsQueue, function: str | None, reads: dict[str, Any], plan: Plan,
          job: RedriveJob, steer: CaseSteer) -> None:
    """Lease, check the consumer again, move, read the depths again, record, judge, notify."""
    session.lease()
    if function:  # approval may have taken an hour: is the worker still consuming?
        now = read_consumer_mapping.submit(inv, function, queue_arn(session.identity_, q.name)).result()
        if not now.enabled:
            raise Refused(f"{function}'s event source mapping from {q.name} is now {now.state or 'gone'}, not Enabled; "
                          "nothing was moved")
    a, dlq, journal = session.approval, reads["dlq"], steps.active(session.run_id)
    [action] = plan.actions
    intent = steps.intend(journal, Record(runbook=RUNBOOK, system=inv.name, resource=q.dlq, kind=KIND, before=action.current,
                                          after=action.target, status="applied", flow_run_id=session.run_id,
                                          approver=a.approver if a else None, approved_via=a.via if a else None,
                                          caller_arn=session.identity_.arn, plan_fingerprint=plan.fingerprint), "applied")
    result = redrive_messages.submit(inv, job, steer).result()
    ok = result.error is None and result.failed == 0
    record = steps.done(journal, intent.model_copy(update={
        "after": f"{result.moved} moved to {q.name}", "status": "applied" if ok else "failed",
        "detail": f"{result.moved} moved, {result.skipped} skipped, {result.failed} failed, {result.duplicates} duplicated; {result.stop_reason}"}))
    after_f = {"dlq": read_queue.submit(inv, q.dlq), "source": read_queue.submit(inv, q.name)}
    after = {k: _value(f) for k, f in after_f.items()}
    session.record([record])
    session.report.findings += judge(q.dlq, q.name, job, result, (dlq, reads["source"]), after, session.calls.total)
    session.done(result.error is None)
    session.notify(session.report.outcome, [f"{q.dlq} -> {q.name}: {record.after}; {record.detail}"])


# --- the runbook --------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def dlq_redrive(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    queue: Annotated[str, Param("The source queue (or its dead-letter queue) to redrive; empty: the system's only queue "
                                "with a dead-letter queue")] = "",
    max_messages: Annotated[int, Param("Move at most this many messages; 0: the whole dead-letter queue as planned", ge=0,
                                       le=10**9)] = 0,
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
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s,
                              appliers=APPLIERS)  # a move a killed run left open is closed from the DLQ's depth before planning
    with session:
        identity = session.identity()
        q = pick_queue(inv, queue)
        function = consumer_function(inv, q)
        rate = rate_per_s or q.redrive_rate_per_s
        reads, breakers = _read_all(inv, identity, q, function, sample_size, case_id)
        plan = make_plan.submit(inv, identity, q, function, reads, breakers, max_messages=max_messages, rate=rate,
                                rate_from="the rate_per_s parameter" if rate_per_s else "the inventory's redrive_rate_per_s",
                                case_id=case_id, evidence_id=evidence_id, visibility_timeout_s=visibility_timeout_s).result()
        if isinstance(reads["sample"], BaseException):
            session.report.findings.append(unknown("dlq-sample", q.dlq, aws.describe_error(reads["sample"])))
        if session.gate(plan):
            dlq, source = reads["dlq"], reads["source"]
            job = RedriveJob(dlq=q.dlq, dlq_url=dlq.url, source=q.name, source_url=source.url, fifo=source.fifo,
                             limit=planned_limit(dlq.depth, max_messages), budget=dlq.depth, rate_per_s=rate,
                             visibility_timeout_s=visibility_timeout_s, max_batch_bytes=min(source.max_message_bytes, 1024 * 1024),
                             run_id=session.run_id)
            _move(session, inv, q, function, reads, plan, job, CaseSteer(inv, case_id, evidence_id, inv.bill_shock is not None,
                                                                              session.run_id, q.dlq))
    return session.finish()


TASKS = [read_queue, peek_dlq, read_consumer_mapping, read_case_breakers, redrive_messages, steps_policy(APPLIERS)] + SESSION_TASKS
