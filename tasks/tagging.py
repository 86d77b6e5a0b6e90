"""Resource Groups Tagging API: the tags of the system's functions, tables, buckets and queues (one paged call)."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System

TAG_TYPES = {"lambda:function": "lambda", "dynamodb:table": "dynamodb", "s3:bucket": "s3", "sqs:queue": "sqs", "logs:log-group": "logs"}


class ResourceTags(BaseModel):
    kind: str
    name: str
    tags: dict[str, str] = Field(default_factory=dict)


def name_of(arn: str) -> tuple[str, str] | None:
    """(kind, name) of a function, table, bucket, queue or log group ARN; None for anything else."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return None
    service, res = parts[2], parts[5]
    if service == "lambda" and res.startswith("function:"):
        return "lambda", res.split(":")[1]
    if service == "dynamodb" and res.startswith("table/") and "/" not in res[6:]:
        return "dynamodb", res[6:]
    if service == "s3" and "/" not in res:
        return "s3", res
    if service == "sqs":
        return "sqs", res
    if service == "logs" and res.startswith("log-group:"):
        return "logs", res[len("log-group:"):].removesuffix(":*")
    return None


def system_resources(system: System) -> list[tuple[str, str]]:
    return ([("lambda", f.name) for f in system.lambda_functions] + [("dynamodb", t.name) for t in system.dynamodb_tables]
            + [("s3", b.name) for b in system.s3_buckets] + [("sqs", q.name) for q in system.sqs_queues])


@aws_task(iam=["tag:GetResources"], name="read-resource-tags", cache_policy=NO_CACHE)
def read_resource_tags(system: System) -> list[ResourceTags]:
    """Tags of the system's functions, tables, buckets and queues (one paged GetResources: an untagged resource is absent)."""
    if not system.audit.required_tags:
        return []
    c = aws.client("resourcegroupstaggingapi", system.region)
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for r in aws.paginate(c, "get_resources", "ResourceTagMappingList", ResourceTypeFilters=list(TAG_TYPES)):
        key = name_of(r["ResourceARN"])
        if key:
            seen[key] = {t["Key"]: t["Value"] for t in r.get("Tags", [])}
    return [ResourceTags(kind=k, name=n, tags=seen.get((k, n), {})) for k, n in system_resources(system)]
