"""What several test modules need from the sandbox and the Prefect API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import boto3


def inbox(sandbox: Any, region: str, topic_suffix: str) -> Callable[[], list[dict[str, Any]]]:
    """An SQS queue subscribed to the system's SNS topic ending in ``topic_suffix``; returns a reader of what arrived."""
    sns = boto3.client("sns", region_name=region, endpoint_url=sandbox.endpoint)
    sqs = boto3.client("sqs", region_name=region, endpoint_url=sandbox.endpoint)
    url = sqs.create_queue(QueueName=f"inbox-{int(time.time() * 1000)}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = [t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(topic_suffix)][0]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return lambda: [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]


def wait_paused(timeout: float = 60) -> Any:
    """The id of the first flow run the Prefect API shows paused (waiting for approval), within ``timeout`` seconds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    t0 = time.monotonic()
    with get_client(sync_client=True) as client:
        while time.monotonic() - t0 < timeout:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
            runs = [r for r in runs if r.state.is_paused()]
            if runs:
                return runs[0].id
            time.sleep(0.2)
    raise AssertionError("no paused run")
