"""SQS: messages waiting in dead-letter queues."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from tasks import aws
from tasks.findings import Finding, Status, by_threshold, unknown
from tasks.iam import aws_task
from tasks.inventory import System


def read_depth(region: str, queue: str) -> dict[str, int]:
    c = aws.client("sqs", region)
    url = c.get_queue_url(QueueName=queue)["QueueUrl"]
    attrs = c.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return {"visible": int(attrs.get("ApproximateNumberOfMessages", 0)), "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))}


@aws_task(iam=["sqs:GetQueueUrl", "sqs:GetQueueAttributes"], cache_policy=NO_CACHE)
def check_dlqs(system: System, deadline: aws.Deadline) -> list[Finding]:
    dlqs = [q.dlq for q in system.sqs_queues if q.dlq]
    th = system.thresholds
    out = []
    for name, depth, err in aws.parallel(lambda n: read_depth(system.region, n), dlqs, deadline=deadline):
        if err is not None:
            if aws.is_not_found(err):
                out.append(Finding(check="dlq-depth", resource=name, status=Status.CRIT, summary="dead-letter queue named in the inventory does not exist"))
            else:
                out.append(unknown("dlq-depth", name, aws.describe_error(err)))
            continue
        n = depth["visible"] + depth["in_flight"]
        status = by_threshold(n, th.dlq_messages_warn, th.dlq_messages_crit)
        summary = f"{n} message(s) waiting in the dead-letter queue" + ("; see dlq-redrive" if n else "")
        out.append(Finding(check="dlq-depth", resource=name, status=status, value=n, summary=summary, details=depth))
    return out
