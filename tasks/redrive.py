"""dlq-redrive's units of work: read a dead-letter queue, its source queue and the consumer; move messages back.

Nothing is lost, by the order of the calls for each batch of (at most) 10:

    ReceiveMessage         the batch becomes invisible in the DLQ for ``visibility_timeout_s``
    SendMessageBatch       to the source queue, body and message attributes unchanged
    DeleteMessageBatch     from the DLQ, only the entries SQS accepted in the send

A kill at any moment leaves each message in the DLQ (visible, or in flight and
visible again after the visibility timeout) or in the source queue. A kill
between the send and the delete leaves that one batch in both: at most 10
duplicates (batches are moved one at a time; consumers of SQS must be
idempotent anyway: delivery is at least once). FIFO queues get a
deduplication id derived from the DLQ message id, so a re-run within SQS's
5-minute deduplication window does not duplicate even that batch.

Messages that are not moved (their case's breaker is OPEN, they do not match
the case/evidence filter, or SQS refused them) are set aside: kept invisible
while the run goes on (else every receive would return them again, and in
SQS FIFO order they would block the queue) and made visible again when the
run ends. After a kill they reappear when that hold expires.
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
import time
from collections import Counter
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System
from opsbook.mutation import statestore
from opsbook.pii import mask_log
from tasks import breaker, sqs

BATCH = 10  # SQS's batch maximum
BREAKER_TTL_S = 5.0  # re-read a case's breaker at most this often while moving
DEPTH_EVERY_BATCHES = 5  # measure the DLQ's depth every few batches (refill check)
REFILL_WINDOW_S = 60.0  # SQS's approximate counts settle within about a minute
IDLE_RECEIVES = 20  # receives in a row that bring nothing new: stop
PROGRESS_EVERY_S = 1.0
MAX_HOLD_S = 43200  # SQS's maximum visibility timeout

# SQS authorises SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch by sqs:SendMessage,
# sqs:DeleteMessage and sqs:ChangeMessageVisibility. opsbook/iam.py derives "sqs:<Operation>" (no such IAM actions
# for the *Batch calls), so the tasks declare both until its _SPECIAL table maps them.
SEND = ["sqs:SendMessage"]
DELETE = ["sqs:DeleteMessage"]
VISIBILITY = ["sqs:ChangeMessageVisibility"]


# --- models ------------------------------------------------------------------------------


class QueueState(BaseModel):
    name: str
    url: str
    arn: str
    fifo: bool
    visible: int
    in_flight: int
    delayed: int = 0
    retention_s: int
    visibility_timeout_s: int
    max_message_bytes: int
    dead_letter_target_arn: str | None = None
    max_receive_count: int | None = None

    @property
    def depth(self) -> int:
        return self.visible + self.in_flight


class Consumer(BaseModel):
    function: str
    queue_arn: str
    mapping_uuid: str | None = None
    state: str | None = None
    batch_size: int | None = None
    mappings: int = 0

    @property
    def enabled(self) -> bool:
        return self.state == "Enabled"


class Sampled(BaseModel):
    message_id: str
    case_id: str | None
    evidence_id: str | None
    receive_count: int
    age_s: float | None
    body: str = Field(description="masked, at most 200 characters")


class RedriveJob(BaseModel):
    """What the approved plan allows; small and hashable (no clients, no raw API data)."""

    model_config = ConfigDict(frozen=True)

    dlq: str
    dlq_url: str
    source: str
    source_url: str
    fifo: bool
    limit: int = Field(description="move at most this many (the plan's count or max_messages)")
    budget: int = Field(description="handle (move or set aside) at most this many: the DLQ depth when planned")
    rate_per_s: float
    visibility_timeout_s: int
    max_batch_bytes: int
    case_id: str | None = None
    evidence_id: str | None = None
    breakers: bool = True
    run_id: str = "local"
    lease_ttl_s: int = 60


class RedriveResult(BaseModel):
    moved: int = 0
    set_aside: dict[str, int] = Field(default_factory=dict, description="reason -> distinct messages not moved")
    duplicates: int = 0
    duplicate_codes: dict[str, int] = Field(default_factory=dict)
    released: int = 0
    release_failed: int = 0
    batches: int = 0
    receives: int = 0
    stop_reason: str = ""
    refill: str | None = None
    error: str | None = None
    depth_samples: list[tuple[float, int, int]] = Field(default_factory=list, description="(s since start, DLQ depth, moved)")
    calls: dict[str, int] = Field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(n for k, n in self.set_aside.items() if k.startswith("send-failed"))

    @property
    def skipped(self) -> int:
        return sum(n for k, n in self.set_aside.items() if not k.startswith("send-failed"))


# --- pure helpers (unit-tested without AWS) ---------------------------------------------------


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


def send_entry(msg: dict[str, Any], entry_id: str, fifo: bool) -> dict[str, Any]:
    """A SendMessageBatch entry carrying the message's body, message attributes and trace header unchanged."""
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": msg["Body"]}
    attrs = {}
    for name, v in (msg.get("MessageAttributes") or {}).items():
        a = {"DataType": v["DataType"]}
        if "StringValue" in v:
            a["StringValue"] = v["StringValue"]
        if "BinaryValue" in v:
            a["BinaryValue"] = v["BinaryValue"]
        attrs[name] = a
    if attrs:
        entry["MessageAttributes"] = attrs
    system_attrs = msg.get("Attributes") or {}
    if system_attrs.get("AWSTraceHeader"):
        entry["MessageSystemAttributes"] = {"AWSTraceHeader": {"DataType": "String", "StringValue": system_attrs["AWSTraceHeader"]}}
    if fifo:
        entry["MessageGroupId"] = system_attrs.get("MessageGroupId") or "opsbook-redrive"
        # New, stable per DLQ message: a re-run after a kill between send and delete is deduplicated by SQS
        # (5-minute window); the original id could collide with the original send and silently drop the message.
        entry["MessageDeduplicationId"] = f"redrive-{msg['MessageId']}"[:128]
    return entry


def entry_bytes(entry: dict[str, Any]) -> int:
    """Payload size as SQS counts it: body plus each attribute's name, type and value."""
    n = len(entry["MessageBody"].encode())
    for name, a in (entry.get("MessageAttributes") or {}).items():
        value = a.get("StringValue", "").encode() if "StringValue" in a else bytes(a.get("BinaryValue", b""))
        n += len(name.encode()) + len(a["DataType"].encode()) + len(value)
    return n


def chunks_by_size(entries: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """Split a batch so that no SendMessageBatch exceeds the payload limit (a lone oversize entry gets its own
    chunk; SQS refuses it and it is set aside)."""
    out: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    size = 0
    for e in entries:
        b = entry_bytes(e)
        if cur and size + b > max_bytes:
            out.append(cur)
            cur, size = [], 0
        cur.append(e)
        size += b
    if cur:
        out.append(cur)
    return out


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


class Pacer:
    """At most ``rate`` messages a second on average, spacing the starts of batches. ``wait()`` before taking a
    batch (so no batch is held while waiting: its visibility timeout only has to cover a few calls), ``spend(n)``
    for what was sent; the time the calls take counts toward the spacing."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = time.monotonic()

    def wait(self) -> float:
        now = time.monotonic()
        delay = self._next - now
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next, now)  # this batch's start: what it sends is spaced from here
        return max(delay, 0.0)

    def spend(self, n: int) -> None:
        self._next += n / self.rate


def sample_of(msg: dict[str, Any], now_ms: float | None = None) -> Sampled:
    case, ev = parse_body(msg["Body"])
    attrs = msg.get("Attributes") or {}
    sent = attrs.get("SentTimestamp")
    now_ms = now_ms if now_ms is not None else time.time() * 1000
    return Sampled(message_id=msg["MessageId"], case_id=case, evidence_id=ev, receive_count=int(attrs.get("ApproximateReceiveCount", 0)),
                   age_s=round((now_ms - int(sent)) / 1000, 1) if sent else None, body=" ".join(mask_log(msg["Body"]).split())[:200])


# --- reads (plan) -----------------------------------------------------------------------------


@aws_task(iam=["sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="read-queue", cache_policy=NO_CACHE)
def read_queue(system: System, name: str) -> QueueState:
    return QueueState(**sqs.queue_state(system.region, name))


@aws_task(iam=["sqs:GetQueueUrl", "sqs:ReceiveMessage"], name="peek-dlq", cache_policy=NO_CACHE)
def peek_dlq(system: System, dlq: str, sample_size: int) -> list[Sampled]:
    """Up to ``sample_size`` messages, read with VisibilityTimeout=0 so they stay visible; bodies masked."""
    if sample_size <= 0:
        return []
    url = sqs.queue_url(system.region, dlq)
    seen: dict[str, Sampled] = {}
    for _ in range(3):  # SQS samples servers: a second look may bring others
        for m in sqs.receive(system.region, url, sample_size, visibility_timeout_s=0):
            seen.setdefault(m["MessageId"], sample_of(m))
        if len(seen) >= sample_size:
            break
    return list(seen.values())[:sample_size]


@aws_task(iam=["lambda:ListEventSourceMappings"], name="read-consumer-mapping", cache_policy=NO_CACHE)
def read_consumer(system: System, function: str, queue_arn: str) -> Consumer:
    """The event source mapping from the queue to its consumer function (every page)."""
    maps = list(aws.paginate(aws.client("lambda", system.region), "list_event_source_mappings", "EventSourceMappings",
                             FunctionName=function, EventSourceArn=queue_arn))
    best = sorted(maps, key=lambda m: m.get("State") != "Enabled")[0] if maps else None
    return Consumer(function=function, queue_arn=queue_arn, mappings=len(maps), mapping_uuid=best.get("UUID") if best else None,
                    state=best.get("State") if best else None, batch_size=best.get("BatchSize") if best else None)


@aws_task(iam=["dynamodb:BatchGetItem"], name="read-case-breakers", cache_policy=NO_CACHE)
def read_case_breakers(system: System, case_ids: list[str]) -> dict[str, str]:
    """case -> breaker state, for the cases that have a breaker item (others are CLOSED)."""
    if not case_ids:
        return {}
    return {c: str(item.get("state", breaker.CLOSED)) for c, item in breaker.read_breakers(system, case_ids).items()}


# --- act --------------------------------------------------------------------------------------


def _hold_s(job: RedriveJob, handled: int) -> int:
    """How long set-aside messages stay invisible: the rest of the run, twice over, plus a minute."""
    left = max(job.budget - handled, 0)
    return int(min(MAX_HOLD_S, max(job.visibility_timeout_s, 2 * left / job.rate_per_s + 60)))


def _holder(run_id: str) -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} run {run_id}"


@aws_task(iam=["sqs:GetQueueAttributes", "sqs:ReceiveMessage", *SEND, *DELETE, *VISIBILITY, "dynamodb:BatchGetItem",
               "dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DescribeTable", "dynamodb:CreateTable"],
          name="redrive-messages", cache_policy=NO_CACHE, read_only=False)
def redrive_messages(system: System, job: RedriveJob) -> RedriveResult:
    """Move at most ``job.limit`` messages from the DLQ to the source queue, one batch at a time, at most
    ``job.rate_per_s`` a second. Stops at the planned count, when the DLQ has nothing left to move, when it
    refills as fast as it drains, or on an error (what is in hand is made visible again). Never raises for
    an AWS error: the result says what was done and why it stopped."""
    region = system.region
    r = RedriveResult()
    log = aws.current_call_log()
    calls_before = dict(log.by_operation()) if log else {}
    started = time.monotonic()
    pacer = Pacer(job.rate_per_s)
    aside: dict[str, str] = {}  # message id -> latest receipt handle (skipped or refused: released at the end)
    aside_reason: Counter[str] = Counter()
    breakers: dict[str, tuple[float, str]] = {}  # case -> (read at, state)
    in_hand: dict[str, str] = {}  # message id -> receipt handle: received, not yet moved or set aside
    sent_not_deleted: set[str] = set()
    idle = 0
    last_lease = started
    last_progress = started - PROGRESS_EVERY_S  # the first batch shows at once
    long_polled = False
    progress = create_progress_artifact(progress=0.0, description=f"dlq-redrive: {job.dlq} -> {job.source}, at most {job.limit}")

    def handled() -> int:
        return r.moved + len(aside)

    def show(final: bool = False) -> None:
        nonlocal last_progress
        now = time.monotonic()
        if not final and now - last_progress < PROGRESS_EVERY_S:
            return
        last_progress = now
        elapsed = max(now - started, 1e-6)
        pct = 100.0 if final else 100.0 * min(1.0, max(r.moved / max(job.limit, 1), handled() / max(job.budget, 1)))
        update_progress_artifact(progress, progress=pct)
        rate = r.moved / elapsed
        eta = (job.limit - r.moved) / rate if rate and not final else 0
        print(f"opsbook: dlq-redrive: {job.dlq} -> {job.source}: moved {r.moved}/{job.limit}, set aside {len(aside)}, "
              f"{rate:.0f} msg/s, {elapsed:.0f} s" + (f", ~{eta:.0f} s left" if eta else "") + (" (done)" if final else ""),
              file=sys.stderr, flush=True)

    def set_aside(msgs: list[tuple[dict[str, Any], str]]) -> None:
        """Keep these invisible for the rest of the run (their reason counted once per message)."""
        for m, reason in msgs:
            if m["MessageId"] not in aside:
                aside_reason[reason] += 1
            aside[m["MessageId"]] = m["ReceiptHandle"]
            in_hand.pop(m["MessageId"], None)
        if msgs:
            sqs.set_visibility(region, job.dlq_url, [m["ReceiptHandle"] for m, _ in msgs], _hold_s(job, handled()))

    def breaker_states(cases: set[str]) -> dict[str, str]:
        now = time.monotonic()
        stale = sorted(c for c in cases if c not in breakers or now - breakers[c][0] > BREAKER_TTL_S)
        if stale:
            states = breaker.read_breakers(system, stale)
            for c in stale:
                breakers[c] = (now, str(states.get(c, {}).get("state", breaker.CLOSED)))
        return {c: breakers[c][1] for c in cases}

    try:
        r.depth_samples.append((0.0, sqs.queue_depth(region, job.dlq_url), 0))
        while True:
            want = min(BATCH, job.limit - r.moved, job.budget - handled())
            if r.moved >= job.limit:
                r.stop_reason = f"moved the {job.limit} message(s) planned"
                break
            if want <= 0:
                r.stop_reason = f"handled the {job.budget} message(s) planned ({r.moved} moved, {len(aside)} set aside)"
                break
            if idle >= IDLE_RECEIVES:
                r.stop_reason = f"{IDLE_RECEIVES} receives in a row brought only messages already set aside"
                break
            pacer.wait()
            msgs = sqs.receive(region, job.dlq_url, want, job.visibility_timeout_s, wait_s=0 if not long_polled else 1)
            r.receives += 1
            if not msgs:
                if not long_polled:  # a short poll can miss messages on some SQS servers: ask them all once
                    long_polled = True
                    continue
                r.stop_reason = "the DLQ has no visible message left" + (f" ({len(aside)} set aside)" if aside else "")
                break
            long_polled = False
            for m in msgs:
                in_hand[m["MessageId"]] = m["ReceiptHandle"]
            again = [m for m in msgs if m["MessageId"] in aside]
            fresh = [m for m in msgs if m["MessageId"] not in aside]
            idle = idle + 1 if not fresh else 0
            parsed = {m["MessageId"]: parse_body(m["Body"]) for m in fresh}
            skip = [(m, "reappeared") for m in again]
            wanted = []
            for m in fresh:
                if matches(*parsed[m["MessageId"]], job.case_id, job.evidence_id):
                    wanted.append(m)
                else:
                    skip.append((m, "filter"))
            if job.breakers:
                states = breaker_states({parsed[m["MessageId"]][0] for m in wanted if parsed[m["MessageId"]][0]})
                still = []
                for m in wanted:
                    case = parsed[m["MessageId"]][0]
                    if case and states.get(case) == breaker.OPEN:
                        skip.append((m, "breaker-open"))
                    else:
                        still.append(m)
                wanted = still
            set_aside(skip)
            by_id = {str(i): m for i, m in enumerate(wanted)}
            entries = [send_entry(m, i, job.fifo) for i, m in by_id.items()]
            for chunk in chunks_by_size(entries, job.max_batch_bytes):
                ok, refused = sqs.send_batch(region, job.source_url, chunk)
                pacer.spend(len(ok))
                sent = [by_id[i] for i in ok]
                sent_not_deleted.update(m["MessageId"] for m in sent)
                not_deleted = sqs.delete_batch(region, job.dlq_url, [m["ReceiptHandle"] for m in sent])
                for m in sent:
                    sent_not_deleted.discard(m["MessageId"])
                    in_hand.pop(m["MessageId"], None)
                    if m["ReceiptHandle"] in not_deleted:  # in the source and, after its visibility timeout, again in the DLQ
                        r.duplicates += 1
                        r.duplicate_codes[not_deleted[m["ReceiptHandle"]]] = r.duplicate_codes.get(not_deleted[m["ReceiptHandle"]], 0) + 1
                r.moved += len(sent)
                set_aside([(by_id[i], f"send-failed:{code}") for i, code in refused.items()])
            r.batches += 1
            if r.batches % DEPTH_EVERY_BATCHES == 0:
                r.depth_samples.append((round(time.monotonic() - started, 2), sqs.queue_depth(region, job.dlq_url), r.moved))
                r.refill = refill_verdict(r.depth_samples)
                if r.refill:
                    r.stop_reason = "the DLQ refills as fast as it drains"
                    break
            if time.monotonic() - last_lease > job.lease_ttl_s / 3:  # keep the lease while we work; a killed run frees it soon
                statestore.acquire_lease(system, job.dlq, _holder(job.run_id), job.run_id, job.lease_ttl_s)
                last_lease = time.monotonic()
            show()
    except Exception as exc:  # stop; the result says what was done; in-hand messages go back below
        r.error = aws.describe_error(exc)
        r.stop_reason = f"stopped by an error: {r.error}"
        if sent_not_deleted:  # sent, then the delete failed: try it once more, else they are duplicates
            handles = {in_hand.pop(mid) for mid in sent_not_deleted if mid in in_hand}
            try:
                left = sqs.delete_batch(region, job.dlq_url, sorted(handles))
            except Exception:
                left = dict.fromkeys(handles, "delete-failed")
            r.moved += len(handles)
            r.duplicates += len(left)
            for code in left.values():
                r.duplicate_codes[code] = r.duplicate_codes.get(code, 0) + 1
    finally:
        back = list(in_hand.values()) + list(aside.values())
        if back:
            try:
                failed = sqs.set_visibility(region, job.dlq_url, back, 0)
                r.released, r.release_failed = len(back) - len(failed), len(failed)
            except Exception as exc:  # they reappear when their visibility timeout ends
                r.release_failed = len(back)
                r.error = r.error or f"could not make set-aside messages visible again ({aws.describe_error(exc)}); they reappear by themselves"
        r.set_aside = dict(aside_reason)
        r.seconds = round(time.monotonic() - started, 2)
        if log:
            after = log.by_operation()
            r.calls = {k: n - calls_before.get(k, 0) for k, n in after.items() if n - calls_before.get(k, 0)}
        show(final=True)
    return r
