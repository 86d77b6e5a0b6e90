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


class QueueState(BaseModel):
    name: str
    visibility_s: int | None = None
    error: str | None = None


@declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes"])
def read_visibility(region: str, name: str) -> int:
    c = aws.client("sqs", region)
    url = c.get_queue_url(QueueName=name)["QueueUrl"]
    return int(c.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]["VisibilityTimeout"])


@aws_task(iam=["sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="read-source-queues", cache_policy=NO_CACHE)
def read_queues(system: System, names: list[str], deadline: aws.Deadline) -> list[QueueState]:
    """Each queue's VisibilityTimeout, or why it could not be read."""
    out = []
    for name, vis, err in aws.parallel(lambda n: read_visibility(system.region, n), names, deadline=deadline):
        if err is None:
            out.append(QueueState(name=name, visibility_s=vis))
        else:
            out.append(QueueState(name=name, error="the queue does not exist" if aws.is_not_found(err) else aws.describe_error(err)))
    return out


@declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes"])
def read_queue_visibility(system: System, queue: str) -> str:
    return str(read_visibility(system.region, queue))


@declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SetQueueAttributes"])
def set_queue_visibility(system: System, queue: str, value: str) -> None:
    if read_queue_visibility(system, queue) == value:
        return
    c = aws.client("sqs", system.region)
    c.set_queue_attributes(QueueUrl=c.get_queue_url(QueueName=queue)["QueueUrl"], Attributes={"VisibilityTimeout": value})
