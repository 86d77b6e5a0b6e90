"""SQS: messages waiting in dead-letter queues."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.components import judge_dlq
from opsbook.findings import Finding
from opsbook.iam import aws_task, declares
from opsbook.inventory import System


def read_depth(region: str, queue: str) -> dict[str, int]:
    c = aws.client("sqs", region)
    url = c.get_queue_url(QueueName=queue)["QueueUrl"]
    attrs = c.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return {"visible": int(attrs.get("ApproximateNumberOfMessages", 0)), "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))}


@aws_task(iam=["sqs:GetQueueUrl", "sqs:GetQueueAttributes"], cache_policy=NO_CACHE)
def check_dlqs(system: System, deadline: aws.Deadline) -> list[Finding]:
    dlqs = [q.dlq for q in system.sqs_queues if q.dlq]
    th = system.thresholds
    return [judge_dlq(name, depth, aws.unreadable(err), th.dlq_messages_warn, th.dlq_messages_crit)
            for name, depth, err in aws.parallel(lambda n: read_depth(system.region, n), dlqs, deadline=deadline)]


# --- queue state and moving messages (dlq-redrive). Plain functions: the aws_task that calls them
# declares the IAM actions (SQS authorises the *Batch calls by the single-message action).

from typing import Any  # noqa: E402  (this section is appended; the file's head is not ours to edit)

_STATE_ATTRIBUTES = ["QueueArn", "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                     "ApproximateNumberOfMessagesDelayed", "MessageRetentionPeriod", "VisibilityTimeout", "FifoQueue",
                     "MaximumMessageSize", "RedrivePolicy"]


def queue_url(region: str, name: str) -> str:
    return aws.client("sqs", region).get_queue_url(QueueName=name)["QueueUrl"]


def queue_state(region: str, name: str) -> dict[str, Any]:
    """Depth and settings of one queue (GetQueueUrl + GetQueueAttributes), as plain values."""
    import json

    url = queue_url(region, name)
    a = aws.client("sqs", region).get_queue_attributes(QueueUrl=url, AttributeNames=_STATE_ATTRIBUTES)["Attributes"]
    policy = json.loads(a["RedrivePolicy"]) if a.get("RedrivePolicy") else {}
    return {
        "name": name, "url": url, "arn": a["QueueArn"], "fifo": a.get("FifoQueue") == "true",
        "visible": int(a.get("ApproximateNumberOfMessages", 0)), "in_flight": int(a.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(a.get("ApproximateNumberOfMessagesDelayed", 0)),
        "retention_s": int(a.get("MessageRetentionPeriod", 345600)), "visibility_timeout_s": int(a.get("VisibilityTimeout", 30)),
        "max_message_bytes": int(a.get("MaximumMessageSize", 262144)),
        "dead_letter_target_arn": policy.get("deadLetterTargetArn"),
        "max_receive_count": int(policy["maxReceiveCount"]) if policy.get("maxReceiveCount") is not None else None,
    }


def queue_depth(region: str, url: str) -> int:
    """Visible + in flight (one GetQueueAttributes call)."""
    a = aws.client("sqs", region).get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(a.get("ApproximateNumberOfMessages", 0)) + int(a.get("ApproximateNumberOfMessagesNotVisible", 0))


def receive(region: str, url: str, max_messages: int = 10, visibility_timeout_s: int = 30, wait_s: int = 0) -> list[dict[str, Any]]:
    """Up to 10 messages with every attribute and message attribute. ``visibility_timeout_s=0`` peeks:
    the messages stay visible (their receive count still goes up)."""
    return aws.client("sqs", region).receive_message(
        QueueUrl=url, MaxNumberOfMessages=max(1, min(10, max_messages)), VisibilityTimeout=visibility_timeout_s,
        WaitTimeSeconds=wait_s, AttributeNames=["All"], MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"],
    ).get("Messages", [])


def set_visibility(region: str, url: str, handles: list[str], seconds: int) -> dict[str, str]:
    """ChangeMessageVisibilityBatch in tens; returns {receipt handle: error code} for the entries that failed."""
    failed: dict[str, str] = {}
    c = aws.client("sqs", region)
    for i in range(0, len(handles), 10):
        chunk = handles[i : i + 10]
        res = c.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "ReceiptHandle": h, "VisibilityTimeout": seconds} for n, h in enumerate(chunk)])
        for f in res.get("Failed", []):
            failed[chunk[int(f["Id"])]] = f.get("Code", "failed")
    return failed


def send_batch(region: str, url: str, entries: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """SendMessageBatch (at most 10 entries); returns (ids sent, {id: error code} not sent)."""
    res = aws.client("sqs", region).send_message_batch(QueueUrl=url, Entries=entries)
    return [s["Id"] for s in res.get("Successful", [])], {f["Id"]: f.get("Code", "failed") for f in res.get("Failed", [])}


def delete_batch(region: str, url: str, handles: list[str]) -> dict[str, str]:
    """DeleteMessageBatch in tens; returns {receipt handle: error code} for the entries not deleted."""
    failed: dict[str, str] = {}
    c = aws.client("sqs", region)
    for i in range(0, len(handles), 10):
        chunk = handles[i : i + 10]
        res = c.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(chunk)])
        for f in res.get("Failed", []):
            failed[chunk[int(f["Id"])]] = f.get("Code", "failed")
    return failed


# --- visibility timeout: read (remediate-lambda-timeout's evidence) and set (its ``Applier`` of VISIBILITY_KIND) ------

VISIBILITY_KIND = "sqs-visibility"
VISIBILITY_IAM = "sqs:SetQueueAttributes"
MAX_VISIBILITY_S = 43200  # 12 h


# --- moving messages from one queue to another (dlq-redrive) -----------------------------------------------
#
# Nothing is lost, by the order of the calls for each batch of (at most) 10:
#
#     ReceiveMessage         the batch becomes invisible in the DLQ for ``visibility_timeout_s``
#     SendMessageBatch       to the source queue, body and message attributes unchanged
#     DeleteMessageBatch     from the DLQ, only the entries SQS accepted in the send
#
# A kill at any moment leaves each message in the DLQ (visible, or in flight and visible again after the
# visibility timeout) or in the source queue. A kill between the send and the delete leaves that one batch in
# both: at most 10 duplicates (batches are moved one at a time; consumers of SQS must be idempotent anyway:
# delivery is at least once). FIFO queues get a deduplication id derived from the DLQ message id, so a re-run
# within SQS's 5-minute deduplication window does not duplicate even that batch.
#
# Messages the caller's ``steer`` does not move (e.g. their case's breaker is OPEN, or they do not match a
# filter) and those SQS refused are set aside: kept invisible while the run goes on (else every receive would
# return them again, and in SQS FIFO order they would block the queue) and made visible again when the run
# ends. After a kill they reappear when that hold expires.

import sys  # noqa: E402  (this section is appended)
import time  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Protocol  # noqa: E402

from prefect.artifacts import create_progress_artifact, update_progress_artifact  # noqa: E402
from pydantic import ConfigDict, Field  # noqa: E402

BATCH = 10  # SQS's batch maximum
DEPTH_EVERY_BATCHES = 5  # measure the DLQ's depth every few batches (refill check)
IDLE_RECEIVES = 20  # receives in a row that bring nothing new: stop
PROGRESS_EVERY_S = 1.0
MAX_HOLD_S = 43200  # SQS's maximum visibility timeout

# SQS authorises SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch by sqs:SendMessage,
# sqs:DeleteMessage and sqs:ChangeMessageVisibility. opsbook/iam.py derives "sqs:<Operation>" (no such IAM actions
# for the *Batch calls), so the tasks declare both until its _SPECIAL table maps them.
SEND = ["sqs:SendMessage"]
DELETE = ["sqs:DeleteMessage"]
VISIBILITY = ["sqs:ChangeMessageVisibility"]


class QueueVisibility(BaseModel):
    name: str
    visibility_s: int | None = None
    error: str | None = None


@declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes"])
def read_visibility(region: str, name: str) -> int:
    c = aws.client("sqs", region)
    url = c.get_queue_url(QueueName=name)["QueueUrl"]
    return int(c.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]["VisibilityTimeout"])


@aws_task(iam=["sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="read-source-queues", cache_policy=NO_CACHE)
def read_queues(system: System, names: list[str], deadline: aws.Deadline) -> list[QueueVisibility]:
    """Each queue's VisibilityTimeout, or why it could not be read."""
    out = []
    for name, vis, err in aws.parallel(lambda n: read_visibility(system.region, n), names, deadline=deadline):
        if err is None:
            out.append(QueueVisibility(name=name, visibility_s=vis))
        else:
            out.append(QueueVisibility(name=name, error="the queue does not exist" if aws.is_not_found(err) else aws.describe_error(err)))
    return out


@declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes"])
def read_queue_visibility(system: System, queue: str) -> str:
    return str(read_visibility(system.region, queue))


@declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes"])
def queue_visibility_settled(system: System, queue: str, target: str) -> tuple[bool, str]:
    v = read_queue_visibility(system, queue)
    return v == target, f"VisibilityTimeout {v} s"


@declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SetQueueAttributes"])
def set_queue_visibility(system: System, queue: str, value: str) -> None:
    if read_queue_visibility(system, queue) == value:
        return
    c = aws.client("sqs", system.region)
    c.set_queue_attributes(QueueUrl=c.get_queue_url(QueueName=queue)["QueueUrl"], Attributes={"VisibilityTimeout": value})


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
    run_id: str = "local"


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


class Steer(Protocol):
    """What the caller decides while messages move."""

    def choose(self, msgs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
        """Each fresh message with the reason to set it aside, or None to move it."""

    def refill(self, samples: list[tuple[float, int, int]]) -> str | None:
        """Why to stop because the DLQ refills ((s since start, depth, moved) samples), or None."""

    def halt(self) -> str | None:
        """Why to stop before the next batch (the run no longer holds the DLQ: another run may be moving), or None."""


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


def hold_s(job: RedriveJob, handled: int) -> int:
    """How long set-aside messages stay invisible: the rest of the run, twice over, plus a minute."""
    left = max(job.budget - handled, 0)
    return int(min(MAX_HOLD_S, max(job.visibility_timeout_s, 2 * left / job.rate_per_s + 60)))


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


@aws_task(iam=["sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="read-queue", cache_policy=NO_CACHE)
def read_queue(system: System, name: str) -> QueueState:
    return QueueState(**queue_state(system.region, name))


@aws_task(iam=["sqs:GetQueueUrl", "sqs:ReceiveMessage"], name="peek-dlq", cache_policy=NO_CACHE)
def peek_dlq(system: System, dlq: str, sample_size: int) -> list[dict[str, Any]]:
    """Up to ``sample_size`` distinct messages, read with VisibilityTimeout=0 so they stay visible (raw: the
    caller masks what it shows)."""
    if sample_size <= 0:
        return []
    url = queue_url(system.region, dlq)
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(3):  # SQS samples servers: a second look may bring others
        for m in receive(system.region, url, sample_size, visibility_timeout_s=0):
            seen.setdefault(m["MessageId"], m)
        if len(seen) >= sample_size:
            break
    return list(seen.values())[:sample_size]


class _Mover:
    """One redrive: the loop's state and its steps (take a batch, sort it, move it, check after it, clean up)."""

    def __init__(self, system: System, job: RedriveJob, steer: Steer) -> None:
        self.system, self.region, self.job, self.steer = system, system.region, job, steer
        self.r = RedriveResult()
        self.started = time.monotonic()
        self.pacer = Pacer(job.rate_per_s)
        self.aside: dict[str, str] = {}  # message id -> latest receipt handle (skipped or refused: released at the end)
        self.aside_reason: Counter[str] = Counter()
        self.in_hand: dict[str, str] = {}  # message id -> receipt handle: received, not yet moved or set aside
        self.sent_not_deleted: set[str] = set()
        self.idle = 0
        self.long_polled = False
        self.last_progress = self.started - PROGRESS_EVERY_S  # the first batch shows at once
        self.progress = create_progress_artifact(progress=0.0, description=f"dlq-redrive: {job.dlq} -> {job.source}, at most {job.limit}")

    def handled(self) -> int:
        return self.r.moved + len(self.aside)

    def show(self, final: bool = False) -> None:
        r, job, now = self.r, self.job, time.monotonic()
        if not final and now - self.last_progress < PROGRESS_EVERY_S:
            return
        self.last_progress = now
        elapsed = max(now - self.started, 1e-6)
        pct = 100.0 if final else 100.0 * min(1.0, max(r.moved / max(job.limit, 1), self.handled() / max(job.budget, 1)))
        update_progress_artifact(self.progress, progress=pct)
        rate = r.moved / elapsed
        eta = (job.limit - r.moved) / rate if rate and not final else 0
        print(f"opsbook: dlq-redrive: {job.dlq} -> {job.source}: moved {r.moved}/{job.limit}, set aside {len(self.aside)}, "
              f"{rate:.0f} msg/s, {elapsed:.0f} s" + (f", ~{eta:.0f} s left" if eta else "") + (" (done)" if final else ""),
              file=sys.stderr, flush=True)

    def set_aside(self, msgs: list[tuple[dict[str, Any], str]]) -> None:
        """Keep these invisible for the rest of the run (their reason counted once per message)."""
        for m, reason in msgs:
            if m["MessageId"] not in self.aside:
                self.aside_reason[reason] += 1
            self.aside[m["MessageId"]] = m["ReceiptHandle"]
            self.in_hand.pop(m["MessageId"], None)
        if msgs:
            set_visibility(self.region, self.job.dlq_url, [m["ReceiptHandle"] for m, _ in msgs], hold_s(self.job, self.handled()))

    def stop_before(self) -> str | None:
        """Why not to take another batch (the planned count, the budget, only set-aside messages come back)."""
        job, r = self.job, self.r
        if r.moved >= job.limit:
            return f"moved the {job.limit} message(s) planned"
        if min(BATCH, job.limit - r.moved, job.budget - self.handled()) <= 0:
            return f"handled the {job.budget} message(s) planned ({r.moved} moved, {len(self.aside)} set aside)"
        if self.idle >= IDLE_RECEIVES:
            return f"{IDLE_RECEIVES} receives in a row brought only messages already set aside"
        return None

    def take(self) -> list[dict[str, Any]] | None:
        """The next batch, in hand; [] when a short poll brought nothing (ask again, once, by long poll);
        None when the DLQ has nothing left."""
        job = self.job
        want = min(BATCH, job.limit - self.r.moved, job.budget - self.handled())
        self.pacer.wait()
        msgs = receive(self.region, job.dlq_url, want, job.visibility_timeout_s, wait_s=0 if not self.long_polled else 1)
        self.r.receives += 1
        if not msgs:
            if not self.long_polled:  # a short poll can miss messages on some SQS servers: ask them all once
                self.long_polled = True
                return []
            return None
        self.long_polled = False
        for m in msgs:
            self.in_hand[m["MessageId"]] = m["ReceiptHandle"]
        return msgs

    def sort(self, msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Set aside what reappeared and what the steer holds back; the rest is to move."""
        fresh = [m for m in msgs if m["MessageId"] not in self.aside]
        self.idle = self.idle + 1 if not fresh else 0
        skip = [(m, "reappeared") for m in msgs if m["MessageId"] in self.aside]
        chosen = self.steer.choose(fresh)
        skip += [(m, reason) for m, reason in chosen if reason is not None]
        self.set_aside(skip)
        return [m for m, reason in chosen if reason is None]

    def move(self, wanted: list[dict[str, Any]]) -> None:
        """Send, then delete from the DLQ only what SQS accepted (never the other way round)."""
        r, job = self.r, self.job
        by_id = {str(i): m for i, m in enumerate(wanted)}
        entries = [send_entry(m, i, job.fifo) for i, m in by_id.items()]
        for chunk in chunks_by_size(entries, job.max_batch_bytes):
            ok, refused = send_batch(self.region, job.source_url, chunk)
            self.pacer.spend(len(ok))
            sent = [by_id[i] for i in ok]
            self.sent_not_deleted.update(m["MessageId"] for m in sent)
            not_deleted = delete_batch(self.region, job.dlq_url, [m["ReceiptHandle"] for m in sent])
            for m in sent:
                self.sent_not_deleted.discard(m["MessageId"])
                self.in_hand.pop(m["MessageId"], None)
                if m["ReceiptHandle"] in not_deleted:  # in the source and, after its visibility timeout, again in the DLQ
                    r.duplicates += 1
                    r.duplicate_codes[not_deleted[m["ReceiptHandle"]]] = r.duplicate_codes.get(not_deleted[m["ReceiptHandle"]], 0) + 1
            r.moved += len(sent)
            self.set_aside([(by_id[i], f"send-failed:{code}") for i, code in refused.items()])

    def after_batch(self) -> bool:
        """Every few batches: the DLQ's depth (stop, True, when it refills); show progress. (The run's lease on the DLQ is
        kept by the mutation session's heartbeat.)"""
        r, job = self.r, self.job
        r.batches += 1
        if r.batches % DEPTH_EVERY_BATCHES == 0:
            r.depth_samples.append((round(time.monotonic() - self.started, 2), queue_depth(self.region, job.dlq_url), r.moved))
            r.refill = self.steer.refill(r.depth_samples)
            if r.refill:
                r.stop_reason = "the DLQ refills as fast as it drains"
                return True
        self.show()
        return False

    def loop(self) -> None:
        self.r.depth_samples.append((0.0, queue_depth(self.region, self.job.dlq_url), 0))
        while True:
            stop = self.stop_before() or self.steer.halt()
            if stop:
                self.r.stop_reason = stop
                return
            msgs = self.take()
            if msgs is None:
                self.r.stop_reason = "the DLQ has no visible message left" + (f" ({len(self.aside)} set aside)" if self.aside else "")
                return
            if not msgs:
                continue
            self.move(self.sort(msgs))
            if self.after_batch():
                return

    def on_error(self, exc: Exception) -> None:
        """Stop; the result says what was done. Sent but not deleted: try the delete once more, else duplicates."""
        r = self.r
        r.error = aws.describe_error(exc)
        r.stop_reason = f"stopped by an error: {r.error}"
        if self.sent_not_deleted:
            handles = {self.in_hand.pop(mid) for mid in self.sent_not_deleted if mid in self.in_hand}
            try:
                left = delete_batch(self.region, self.job.dlq_url, sorted(handles))
            except Exception:
                left = dict.fromkeys(handles, "delete-failed")
            r.moved += len(handles)
            r.duplicates += len(left)
            for code in left.values():
                r.duplicate_codes[code] = r.duplicate_codes.get(code, 0) + 1

    def release(self, calls_before: dict[str, int]) -> None:
        """Make what is in hand or set aside visible again; the result's totals."""
        r = self.r
        back = list(self.in_hand.values()) + list(self.aside.values())
        if back:
            try:
                failed = set_visibility(self.region, self.job.dlq_url, back, 0)
                r.released, r.release_failed = len(back) - len(failed), len(failed)
            except Exception as exc:  # they reappear when their visibility timeout ends
                r.release_failed = len(back)
                r.error = r.error or f"could not make set-aside messages visible again ({aws.describe_error(exc)}); they reappear by themselves"
        r.set_aside = dict(self.aside_reason)
        r.seconds = round(time.monotonic() - self.started, 2)
        log = aws.current_call_log()
        if log:
            after = log.by_operation()
            r.calls = {k: n - calls_before.get(k, 0) for k, n in after.items() if n - calls_before.get(k, 0)}
        self.show(final=True)


@aws_task(iam=["sqs:GetQueueAttributes", "sqs:ReceiveMessage", *SEND, *DELETE, *VISIBILITY, "dynamodb:BatchGetItem"],
          name="redrive-messages", cache_policy=NO_CACHE, read_only=False)
def redrive_messages(system: System, job: RedriveJob, steer: Steer) -> RedriveResult:
    """Move at most ``job.limit`` messages from the DLQ to the source queue, one batch at a time, at most
    ``job.rate_per_s`` a second; ``steer`` says which to set aside and when the DLQ refills (it may read
    DynamoDB: this task declares dynamodb:BatchGetItem). Stops at the planned count, when the DLQ has nothing
    left to move, when it refills as fast as it drains, or on an error (what is in hand is made visible again).
    Never raises for an AWS error: the result says what was done and why it stopped."""
    log = aws.current_call_log()
    calls_before = dict(log.by_operation()) if log else {}
    mover = _Mover(system, job, steer)
    try:
        mover.loop()
    except Exception as exc:  # stop; the result says what was done; in-hand messages go back below
        mover.on_error(exc)
    finally:
        mover.release(calls_before)
    return mover.r


# --- a worker's source queue: depth and the oldest message's age (daily-health, emergency-check, diagnose-stuck-processing) ---

from datetime import datetime, timedelta, timezone  # noqa: E402  (this section is appended)

from opsbook.processing import AGE_WINDOW_MINUTES, consumer_queues, judge_backlog  # noqa: E402
from tasks.cloudwatch import peak, run_metric_queries  # noqa: E402


def oldest_ages(region: str, queues: list[str], minutes: int = AGE_WINDOW_MINUTES) -> dict[str, float | None]:
    """Each queue's ApproximateAgeOfOldestMessage (s), the Maximum over the last ``minutes``: one batched GetMetricData;
    None: no datapoint in the window."""
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(minutes=1)
    specs = {q: ("AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": q}, "Maximum", 60) for q in queues}
    res = run_metric_queries(region, specs, end - timedelta(minutes=minutes + 1), end)
    return {q: peak(res[q]) for q in queues}


@aws_task(iam=["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "cloudwatch:GetMetricData"], name="check-queue-backlogs", cache_policy=NO_CACHE)
def check_backlogs(system: System, deadline: aws.Deadline) -> list[Finding]:
    """Each queue-fed worker's source queue: messages waiting and in flight, and the oldest message's age against
    thresholds.queue_age_warn_minutes / queue_age_crit_minutes (no datapoint while messages wait: UNKNOWN)."""
    queues = list(dict.fromkeys(q for q, _ in consumer_queues(system)))
    if not queues:
        return []
    try:
        ages, age_err = oldest_ages(system.region, queues), None
    except Exception as exc:  # every age unknown, with the reason; the depths are still read
        ages, age_err = {}, aws.describe_error(exc)
    th = system.thresholds
    return [judge_backlog(name, depth, aws.unreadable(err), ages.get(name), age_err, th.queue_age_warn_minutes, th.queue_age_crit_minutes)
            for name, depth, err in aws.parallel(lambda n: read_depth(system.region, n), queues, deadline=deadline)]


@declares(["sqs:GetQueueUrl", "sqs:SendMessage"])
def send_job(region: str, queue: str, body: dict[str, Any]) -> str:
    """One job (a JSON body) sent to ``queue``; its message id (diagnose-stuck-processing's re-enqueue)."""
    import json

    return aws.client("sqs", region).send_message(QueueUrl=queue_url(region, queue), MessageBody=json.dumps(body))["MessageId"]
