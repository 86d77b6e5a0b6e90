"""LEH token-spend scenarios for bill-shock-breaker: the worker's TokensUsed
metrics (per case and per user), uploads, and the worker's SQS event source mapping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.inventory import System
from sandbox.server import Sandbox, sandbox_client


def publish(sb: Sandbox, system: System, dimension: str, series: dict[str, tuple[float, float]], hours: int = 24,
            recent_windows: int = 1, now: datetime | None = None) -> None:
    """series: name -> (tokens per 15 min normally, tokens per 15 min in the last ``recent_windows`` windows)."""
    cfg = system.bill_shock
    cw = sandbox_client(sb, "cloudwatch", system.region)
    now = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
    data = []
    for name, (normal, recent) in series.items():
        for w in range(hours * 4):
            ts = now - timedelta(minutes=15 * w + 7)
            data.append({"MetricName": cfg.metric, "Dimensions": [{"Name": dimension, "Value": name}], "Timestamp": ts,
                         "Value": recent if w < recent_windows else normal, "Unit": "Count"})
    for i in range(0, len(data), 1000):
        cw.put_metric_data(Namespace=cfg.namespace, MetricData=data[i : i + 1000])


def normal_traffic(sb: Sandbox, system: System, cases: int = 30, users: int = 10) -> None:
    publish(sb, system, system.bill_shock.case_dimension, {f"case-{i:04d}": (6000.0, 6500.0) for i in range(cases)})
    publish(sb, system, system.bill_shock.user_dimension, {f"user-{i:03d}": (18000.0, 19000.0) for i in range(users)})


def uploads(sb: Sandbox, system: System, user: str, count: int) -> None:
    cfg = system.bill_shock
    s3 = sandbox_client(sb, "s3", system.region)
    for i in range(count):
        s3.put_object(Bucket=cfg.uploads_bucket, Key=f"{cfg.uploads_prefix}{user}/case-x/evidence-{i}.pdf", Body=b"%PDF-1.4 sandbox")


def event_source_mapping(sb: Sandbox, system: System) -> str:
    cfg = system.bill_shock
    sqs = sandbox_client(sb, "sqs", system.region)
    lam = sandbox_client(sb, "lambda", system.region)
    arn = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=cfg.source_queue)["QueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    existing = lam.list_event_source_mappings(FunctionName=cfg.worker_function, EventSourceArn=arn)["EventSourceMappings"]
    if existing:
        return existing[0]["UUID"]
    uuid = lam.create_event_source_mapping(FunctionName=cfg.worker_function, EventSourceArn=arn, BatchSize=10, Enabled=True)["UUID"]
    from sandbox.leh_queues import detach_worker

    detach_worker(sb, system, cfg.source_queue)  # the sandbox's worker does not run (moto would start it in Docker)
    return uuid


def mapping_state(sb: Sandbox, system: System) -> Any:
    lam = sandbox_client(sb, "lambda", system.region)
    return lam.get_event_source_mapping(UUID=event_source_mapping(sb, system))["State"]


def source_queue_missing(sb: Sandbox, system: System) -> dict[str, Any]:
    """The worker's source queue deleted (its event source mapping with it): the consumer cannot be read; the token
    metrics and the breaker table are untouched, so a case's trip is still decided (bill-shock-breaker)."""
    if system.bill_shock is None:
        raise ValueError(f"fault 'leh-source-queue-missing' needs a bill_shock section in the inventory of {system.name}")
    cfg = system.bill_shock
    sqs = sandbox_client(sb, "sqs", system.region)
    lam = sandbox_client(sb, "lambda", system.region)
    try:
        url = sqs.get_queue_url(QueueName=cfg.source_queue)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return {"resource": cfg.source_queue}
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for m in lam.list_event_source_mappings(FunctionName=cfg.worker_function, EventSourceArn=arn)["EventSourceMappings"]:
        lam.delete_event_source_mapping(UUID=m["UUID"])
    sqs.delete_queue(QueueUrl=url)
    return {"resource": cfg.source_queue}


def case_spike(sb: Sandbox, system: System, case: str = "case-spike", tokens: float = 90000.0) -> dict[str, Any]:
    """One case's token use jumps to ``tokens`` in the last window from 6,000 a window (15x its baseline): its breaker trips."""
    if system.bill_shock is None:
        raise ValueError(f"fault 'leh-case-spike' needs a bill_shock section in the inventory of {system.name}")
    publish(sb, system, system.bill_shock.case_dimension, {case: (6000.0, tokens)})
    return {"resource": case, "tokens": tokens}


SCENARIOS = {
    "leh-source-queue-missing": source_queue_missing,
    "leh-case-spike": case_spike,
}
