"""Queue-fed work in the sandbox (seed 003 시나리오 A, "AI worker stuck"): the healthy state daily-health,
emergency-check and diagnose-stuck-processing read, and the named faults that break it.

Moto cannot produce these signals: it leaves an event source mapping's LastProcessingResult empty, publishes no SQS
metrics, runs no worker. So ``seed_processing`` (called by sandbox/seed.py for every inventory with a queue-fed worker)
sets them: each worker's mapping Enabled with LastProcessingResult "OK" (``moto_processing_result``), a low
ApproximateAgeOfOldestMessage for its queue over the last minutes, and a few processed uploads (object + result item).
The provider's status page is the endpoint double's (healthy unless a fault plants a degraded answer), and so is the
product's admin API (``serve_admin_api``: POST /admin/reprocess-evidence writes the evidence's result).

Faults (sandbox/faults.py registers them): ``leh-trigger-off`` (the mapping disabled, jobs waiting), ``leh-queue-stalled``
(old messages waiting, nothing erroring), ``leh-uploads-unprocessed`` (uploads older than the queue-age WARN with no
result), ``leh-openai-outage`` (429s in the worker's log and the provider's status page degraded).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.inventory import System
from opsbook.processing import consumer_queues, map_key, results_key, settings, uploads_target
from sandbox.leh_queues import detach_worker, job
from sandbox.server import Sandbox, sandbox_client

PROCESSED_UPLOADS = 3
DEGRADED = {"status": {"indicator": "major", "description": "Elevated error rates on the Chat Completions API"},
            "page": {"name": "OpenAI"}}


def moto_processing_result() -> None:
    """Moto answers LastProcessingResult None for every mapping; answer the value set on the mapping object instead."""
    from moto.awslambda.models import EventSourceMapping

    if getattr(EventSourceMapping, "_opsbook_result", False):
        return
    real = EventSourceMapping.get_configuration

    def get_configuration(self: Any) -> dict[str, Any]:
        out = real(self)
        result = getattr(self, "last_processing_result", None)
        if result:
            out["LastProcessingResult"] = result
        return out

    EventSourceMapping.get_configuration = get_configuration  # type: ignore[method-assign]
    EventSourceMapping._opsbook_result = True  # type: ignore[attr-defined]


def _pair(system: System, fault: str) -> tuple[str, str]:
    pairs = consumer_queues(system)
    if not pairs:
        raise ValueError(f"fault {fault!r} needs an SQS queue with a consumer_function in the inventory of {system.name}")
    return pairs[0]


def _queue_arn(sb: Sandbox, system: System, queue: str) -> tuple[str, str]:
    sqs = sandbox_client(sb, "sqs", system.region)
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def mapping(sb: Sandbox, system: System, queue: str, function: str, enabled: bool = True, result: str | None = "OK") -> str:
    """The worker's mapping (created if missing), Enabled or not, with its LastProcessingResult; the worker never runs."""
    moto_processing_result()
    lam = sandbox_client(sb, "lambda", system.region)
    _, arn = _queue_arn(sb, system, queue)
    existing = lam.list_event_source_mappings(FunctionName=function, EventSourceArn=arn)["EventSourceMappings"]
    uuid = existing[0]["UUID"] if existing else lam.create_event_source_mapping(FunctionName=function, EventSourceArn=arn, BatchSize=10,
                                                                                Enabled=enabled)["UUID"]
    if existing:
        lam.update_event_source_mapping(UUID=uuid, Enabled=enabled)
    detach_worker(sb, system, queue)
    sb.backend("lambda", system.region)._event_source_mappings[uuid].last_processing_result = result
    return uuid


def queue_age(sb: Sandbox, system: System, queue: str, seconds: float, minutes: int = 10) -> None:
    """ApproximateAgeOfOldestMessage of ``queue`` at ``seconds`` for each of the last ``minutes`` minutes, as SQS publishes it."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    sandbox_client(sb, "cloudwatch", system.region).put_metric_data(Namespace="AWS/SQS", MetricData=[
        {"MetricName": "ApproximateAgeOfOldestMessage", "Dimensions": [{"Name": "QueueName", "Value": queue}], "Timestamp": now - timedelta(minutes=m),
         "Value": float(seconds), "Unit": "Seconds"} for m in range(minutes)])


def upload_key(system: System, case_id: str, evidence_id: str, user: str = "user-001") -> str:
    _, prefix, _ = uploads_target(system)
    return f"{prefix}{user}/{case_id}/{evidence_id}.pdf"


def put_uploads(sb: Sandbox, system: System, count: int, minutes_old: float, processed: bool, tag: str) -> list[str]:
    """``count`` uploads ``minutes_old`` minutes old (LastModified set through moto's state), with their result item or not."""
    bucket, _, table = uploads_target(system)
    if not bucket or not table:
        raise ValueError(f"{system.name}: no uploads bucket or results table (stuck_processing / bill_shock / case_store)")
    s3, ddb = sandbox_client(sb, "s3", system.region), sandbox_client(sb, "dynamodb", system.region)
    pk, sk = results_key(system, table)
    store = sb.backend("s3", "aws").buckets[bucket].keys
    keys = []
    for i in range(count):
        key = upload_key(system, f"case-{tag}-{i % 3:02d}", f"ev-{tag}-{i:05d}", user=f"user-{i % 2:03d}")
        s3.put_object(Bucket=bucket, Key=key, Body=b"%PDF-1.4 sandbox evidence")
        store[key].last_modified = store[key].last_modified - timedelta(minutes=minutes_old + i)
        ids = map_key(key, settings(system).upload_key_pattern, pk, sk) or {}
        if processed and ids:
            ddb.put_item(TableName=table, Item={**{a: {"S": v} for a, v in ids.items()}, "status": {"S": "done"}, "s3_key": {"S": key}})
        keys.append(key)
    return keys


def serve_admin_api(sb: Sandbox, system: System) -> str | None:
    """The product's ``POST /admin/reprocess-evidence {evidence_id}`` on the endpoint double (stuck_processing.reprocess
    .admin_api_url): finds the evidence's upload, "processes" it (writes its result item) and answers 202; 404 when no
    upload is that evidence's. The requests are in ``sb.endpoints.posts``."""
    rp = settings(system).reprocess
    bucket, prefix, table = uploads_target(system)
    if rp is None or not rp.admin_api_url or not bucket or not table:
        return None
    pk, sk = results_key(system, table)

    def handle(body: bytes) -> tuple[int, str]:
        evidence = json.loads(body or b"{}").get("evidence_id")
        s3, ddb = sandbox_client(sb, "s3", system.region), sandbox_client(sb, "dynamodb", system.region)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                ids = map_key(o["Key"], settings(system).upload_key_pattern, pk, sk)
                if ids and (ids.get(sk) if sk else ids.get(pk)) == evidence:
                    ddb.put_item(TableName=table, Item={**{a: {"S": v} for a, v in ids.items()}, "status": {"S": "done"},
                                                        "s3_key": {"S": o["Key"]}, "reprocessed": {"BOOL": True}})
                    return 202, json.dumps({"evidence_id": evidence, "status": "reprocessing"})
        return 404, json.dumps({"message": f"no evidence {evidence}"})

    sb.endpoints.on_post(rp.admin_api_url, handle)
    return rp.admin_api_url


def seed_processing(sb: Sandbox, system: System) -> dict[str, Any]:
    """The healthy state: each worker's mapping Enabled ("OK"), its queue's oldest message a few seconds old, and a few
    uploads of the last hours each with its result."""
    made: dict[str, Any] = {"mappings": [], "uploads": []}
    for queue, function in consumer_queues(system):
        made["mappings"].append(mapping(sb, system, queue, function))
        queue_age(sb, system, queue, 0)
    bucket, _, table = uploads_target(system)
    if consumer_queues(system) and bucket and table:
        made["uploads"] = put_uploads(sb, system, PROCESSED_UPLOADS, 120, processed=True, tag="ok")
    made["admin_api"] = serve_admin_api(sb, system)
    return made


def _enqueue(sb: Sandbox, system: System, queue: str, count: int) -> None:
    url, _ = _queue_arn(sb, system, queue)
    sqs = sandbox_client(sb, "sqs", system.region)
    for first in range(0, count, 10):
        entries = []
        for i in range(first, min(first + 10, count)):
            body, attrs = job(i)
            entries.append({"Id": str(i - first), "MessageBody": json.dumps(body), "MessageAttributes": attrs})
        sqs.send_message_batch(QueueUrl=url, Entries=entries)


# --- faults ----------------------------------------------------------------------------------------------------------


def trigger_off(sb: Sandbox, system: System, waiting: int = 12, age_minutes: float = 40) -> dict[str, Any]:
    """The worker's trigger disabled (by hand, no breaker record): jobs wait in the queue and age."""
    queue, function = _pair(system, "leh-trigger-off")
    mapping(sb, system, queue, function, enabled=False, result="OK")
    _enqueue(sb, system, queue, waiting)
    queue_age(sb, system, queue, age_minutes * 60)
    return {"resource": f"{function}<-{queue}", "queue": queue, "function": function, "waiting": waiting}


def queue_stalled(sb: Sandbox, system: System, waiting: int = 40, age_minutes: float = 90) -> dict[str, Any]:
    """Old messages wait in the worker's queue; the trigger is Enabled and nothing errors (the seed's quiet failure)."""
    queue, _ = _pair(system, "leh-queue-stalled")
    _enqueue(sb, system, queue, waiting)
    queue_age(sb, system, queue, age_minutes * 60)
    return {"resource": queue, "waiting": waiting, "age_minutes": age_minutes}


def uploads_unprocessed(sb: Sandbox, system: System, count: int = 5, minutes_old: float = 90) -> dict[str, Any]:
    """Uploads older than the queue-age WARN with no result item: the UI shows them 'processing' forever."""
    _pair(system, "leh-uploads-unprocessed")
    keys = put_uploads(sb, system, count, minutes_old, processed=False, tag="stuck")
    bucket, prefix, _ = uploads_target(system)
    return {"resource": f"s3://{bucket}/{prefix}", "keys": keys, "count": count}


def openai_outage(sb: Sandbox, system: System, lines: int = 12) -> dict[str, Any]:
    """The provider refuses: 429s in the worker's log over the last half hour, and its status page says so."""
    from sandbox.faults import _put

    _, function = _pair(system, "leh-openai-outage")
    group = next((f.log_group_name for f in system.lambda_functions if f.name == function), f"/aws/lambda/{function}")
    now = datetime.now(timezone.utc)
    msg = ("[ERROR] openai.RateLimitError: Error code: 429 - {'error': {'message': 'Rate limit reached for gpt-4o', "
           "'type': 'requests', 'code': 'rate_limit_exceeded'}} evidence_id=ev-%05d")
    _put(sb, system, group, "2026/12/04/[$LATEST]openai", [(now - timedelta(minutes=2 + 2 * i), msg % i) for i in range(lines)])
    ep = settings(system).provider_status
    if ep is not None:
        sb.endpoints.plant(ep.url, status=200, body=json.dumps(DEGRADED))
    return {"resource": function, "lines": lines, "status_page": ep.url if ep else None}


SCENARIOS = {
    "leh-trigger-off": trigger_off,
    "leh-queue-stalled": queue_stalled,
    "leh-uploads-unprocessed": uploads_unprocessed,
    "leh-openai-outage": openai_outage,
}
