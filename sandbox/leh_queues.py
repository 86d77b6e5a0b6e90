"""LEH's job queues in the sandbox, for dlq-redrive (seed 003, scenario A): the worker's event source
mapping and a dead-letter queue full of realistic jobs.

The sandbox's worker never runs (moto would start it in Docker). So that the
mapping exists for the API (ListEventSourceMappings, its State) but does not
make moto try to invoke the function on every message sent to the source
queue, ``consumer_mapping`` detaches it from moto's queue object: messages
moved back wait in the source queue, where tests read them. The sandbox must
run in this process (``Sandbox().start()``) for that.

Moto's SQS is slow on deep queues: ReceiveMessage re-computes every queue
attribute (walking all messages) three times for each message it returns, and
SendMessage once per message; each walk asks every message "visible?" through
a datetime round trip. On a 1,000-message queue a receive cost ~0.7 s and a
send batch ~0.2 s of CPU. ``fast_moto_sqs`` makes the retention check read the
stored period and the visibility clock read ``time.time()`` (same results;
moto's clock is not frozen in the sandbox): ~20x faster. ``fill_dlq`` applies
it. It belongs in sandbox/server.py; it is here until that file takes it.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.inventory import SqsQueue, System
from sandbox.server import Sandbox, fast_moto_sqs, sandbox_client


def _queue(system: System, queue: str | None = None) -> SqsQueue:
    qs = [q for q in system.sqs_queues if q.dlq and (queue is None or queue in (q.name, q.dlq))]
    if not qs:
        raise ValueError(f"{system.name} has no SQS queue with a dead-letter queue" + (f" named {queue!r}" if queue else ""))
    return qs[0]


def _function(system: System, q: SqsQueue) -> str:
    fn = q.consumer_function or next((f.name for f in system.lambda_functions if f.sqs_source == q.name), None)
    if not fn:
        raise ValueError(f"{system.name}: no consumer function for {q.name} in the inventory")
    return fn


def consumer_mapping(sb: Sandbox, system: System, enabled: bool = True, queue: str | None = None) -> str:
    """The event source mapping from the source queue to its consumer (created if missing), Enabled or
    Disabled as asked; returns its UUID."""
    q = _queue(system, queue)
    fn = _function(system, q)
    sqs = sandbox_client(sb, "sqs", system.region)
    lam = sandbox_client(sb, "lambda", system.region)
    arn = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=q.name)["QueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    existing = lam.list_event_source_mappings(FunctionName=fn, EventSourceArn=arn)["EventSourceMappings"]
    uuid = existing[0]["UUID"] if existing else lam.create_event_source_mapping(
        FunctionName=fn, EventSourceArn=arn, BatchSize=10, Enabled=enabled)["UUID"]
    if existing and (existing[0]["State"] == "Enabled") != enabled:
        lam.update_event_source_mapping(UUID=uuid, Enabled=enabled)
    detach_worker(sb, system, q.name)
    return uuid


def delete_consumer_mapping(sb: Sandbox, system: System, queue: str | None = None) -> None:
    q = _queue(system, queue)
    lam = sandbox_client(sb, "lambda", system.region)
    for m in lam.list_event_source_mappings(FunctionName=_function(system, q))["EventSourceMappings"]:
        lam.delete_event_source_mapping(UUID=m["UUID"])


def detach_worker(sb: Sandbox, system: System, queue: str) -> None:
    """Moto invokes a mapped function on every message sent (in Docker); the sandbox's worker does not run."""
    for q in sb.backend("sqs", system.region).queues.values():
        if q.name == queue:
            q.lambda_event_source_mappings.clear()


def job(i: int, cases: int = 10, now: datetime | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(body, message attributes) of the i-th AI job, as the upload API would enqueue it."""
    now = now or datetime.now(timezone.utc)
    case = f"case-{i % cases:04d}"
    body = {
        "evidence_id": f"ev-{i:06d}", "case_id": case, "s3_key": f"uploads/user-{i % 7:03d}/{case}/evidence-{i}.pdf",
        "uploaded_by": f"lawyer{i % 7}@example.com", "requested_at": (now - timedelta(hours=2, seconds=i)).isoformat(timespec="seconds"),
        "task": "summarize-evidence", "attempt": 3,
    }
    attrs = {
        "case_id": {"DataType": "String", "StringValue": case},
        "job_type": {"DataType": "String", "StringValue": "summarize-evidence"},
        "priority": {"DataType": "Number", "StringValue": str(1 + i % 3)},
        "checksum": {"DataType": "Binary", "BinaryValue": random.Random(i).randbytes(8)},
    }
    return body, attrs


def fill_dlq(sb: Sandbox, system: System, count: int, cases: int = 10, start: int = 0, queue: str | None = None,
             workers: int = 8) -> dict[str, Any]:
    """``count`` realistic jobs in the DLQ (JSON body with evidence_id, case_id and a user's e-mail to prove
    masking; four message attributes), ten per SendMessageBatch, ``workers`` batches at a time.
    Returns what was sent (``sent``: (body, message attributes) pairs)."""
    fast_moto_sqs()
    q = _queue(system, queue)
    sqs = sandbox_client(sb, "sqs", system.region)
    url = sqs.get_queue_url(QueueName=q.dlq)["QueueUrl"]
    now = datetime.now(timezone.utc)
    fifo = q.dlq.endswith(".fifo")

    def send(first: int) -> list[tuple[str, dict[str, Any]]]:
        entries = []
        for i in range(first, min(first + 10, start + count)):
            body, attrs = job(i, cases, now)
            e = {"Id": str(i - first), "MessageBody": json.dumps(body), "MessageAttributes": attrs}
            if fifo:
                e.update(MessageGroupId=body["case_id"], MessageDeduplicationId=body["evidence_id"])
            entries.append(e)
        res = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        if res.get("Failed"):
            raise RuntimeError(f"fill_dlq: {res['Failed']}")
        return [(e["MessageBody"], e["MessageAttributes"]) for e in entries]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        sent = [m for batch in pool.map(send, range(start, start + count, 10)) for m in batch]
    return {"resource": q.dlq, "count": count, "cases": cases, "first": start, "sent": sent}


def depth(sb: Sandbox, system: System, name: str) -> dict[str, int]:
    sqs = sandbox_client(sb, "sqs", system.region)
    a = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"],
                                 AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return {"visible": int(a["ApproximateNumberOfMessages"]), "in_flight": int(a["ApproximateNumberOfMessagesNotVisible"])}


def read_all(sb: Sandbox, system: System, name: str, hold_s: int = 60) -> list[dict[str, Any]]:
    """Every visible message of a queue (received and left in flight for ``hold_s``; the queue is not emptied):
    body, message attributes, message id."""
    sqs = sandbox_client(sb, "sqs", system.region)
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=hold_s, MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            return out
        out += [{"id": m["MessageId"], "body": m["Body"], "attributes": m.get("MessageAttributes", {})} for m in got]


def set_breaker(sb: Sandbox, system: System, case_id: str, state: str = "OPEN") -> None:
    """A case's breaker as bill-shock-breaker writes it."""
    sandbox_client(sb, "dynamodb", system.region).put_item(TableName=system.bill_shock.breaker_table, Item={
        "case_id": {"S": case_id}, "state": {"S": state}, "reason": {"S": "sandbox: over budget"},
        "changed_at": {"S": datetime.now(timezone.utc).isoformat(timespec="seconds")}, "changed_by": {"S": "sandbox"}})


__all__ = ["consumer_mapping", "delete_consumer_mapping", "detach_worker", "fill_dlq", "depth", "read_all", "set_breaker", "job"]
