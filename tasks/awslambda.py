"""Lambda: functions present and Active, aliases present."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System
from opsbook.resources import Discovered

CHECK = "lambda-state"


def function_names(system: System, found: Discovered) -> list[str]:
    """Explicit names and tag-discovered names, as a union (explicit first)."""
    names = [f.name for f in system.lambda_functions]
    return names + [n for n in found.lambda_functions if n not in names]


def judge_function(name: str, cfg: dict[str, Any] | None, error: BaseException | None, named: bool) -> Finding:
    if error is not None:
        if aws.is_not_found(error):
            return Finding(
                check=CHECK, resource=name, status=Status.CRIT,
                summary="named in the inventory but does not exist" if named else "not found",
            )
        return unknown(CHECK, name, aws.describe_error(error))
    assert cfg is not None
    state = cfg.get("State")
    update = cfg.get("LastUpdateStatus")
    details = {"state": state, "last_update_status": update, "runtime": cfg.get("Runtime"),
               "memory_mb": cfg.get("MemorySize"), "timeout_s": cfg.get("Timeout")}
    if state is None:
        return Finding(check=CHECK, resource=name, status=Status.UNKNOWN,
                       summary="GetFunction returned no State", details=details)
    if state == "Failed" or update == "Failed":
        reason = cfg.get("StateReason") or cfg.get("LastUpdateStatusReason") or ""
        return Finding(check=CHECK, resource=name, status=Status.CRIT, summary=f"state {state}, last update {update}: {reason}".strip(), details=details)
    if state != "Active":
        return Finding(check=CHECK, resource=name, status=Status.WARN, summary=f"state {state} (not Active)", details=details)
    if update == "InProgress":
        return Finding(check=CHECK, resource=name, status=Status.WARN, summary="Active, an update is in progress", details=details)
    return Finding(check=CHECK, resource=name, status=Status.OK, summary=f"Active ({cfg.get('Runtime')})", details=details)


@aws_task(iam=["lambda:GetFunctionConfiguration", "lambda:GetAlias"], cache_policy=NO_CACHE)
def check_functions(system: System, found: Discovered, deadline: aws.Deadline) -> list[Finding]:
    c = aws.client("lambda", system.region)
    named = {f.name for f in system.lambda_functions}
    names = function_names(system, found)
    results = aws.parallel(lambda n: c.get_function_configuration(FunctionName=n), names, deadline=deadline)
    findings = [judge_function(n, cfg, err, n in named) for n, cfg, err in results]
    present = {n for n, _, err in results if err is None}
    aliases = [(f.name, a) for f in system.lambda_functions for a in f.aliases if f.name in present]
    for (fn, alias), res, err in aws.parallel(lambda fa: c.get_alias(FunctionName=fa[0], Name=fa[1]), aliases, deadline=deadline):
        resource = f"{fn}:{alias}"
        if err is None:
            findings.append(Finding(check="lambda-alias", resource=resource, status=Status.OK, summary=f"alias points to version {res['FunctionVersion']}", details={"version": res["FunctionVersion"]}))
        elif aws.is_not_found(err):
            findings.append(Finding(check="lambda-alias", resource=resource, status=Status.CRIT, summary="alias named in the inventory does not exist"))
        else:
            findings.append(unknown("lambda-alias", resource, aws.describe_error(err)))
    return findings


# --- rollback support ------------------------------------------------------------------


def alias_value(alias: dict[str, Any]) -> str:
    """The alias as one comparable value: '7', or '7+8=0.1' while it shifts weight to another version."""
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    extra = ",".join(f"{v}={w:g}" for v, w in sorted(weights.items()))
    return f"{alias['FunctionVersion']}+{extra}" if extra else alias["FunctionVersion"]


def split_alias(resource: str) -> tuple[str, str]:
    fn, _, alias = resource.rpartition(":")
    return fn, alias


@aws_task(iam=["lambda:GetAlias", "lambda:ListVersionsByFunction"], name="read-lambda-alias", cache_policy=NO_CACHE)
def read_alias_history(system: System, resource: str) -> dict[str, Any]:
    fn, alias = split_alias(resource)
    c = aws.client("lambda", system.region)
    a = c.get_alias(FunctionName=fn, Name=alias)
    versions = sorted(int(v["Version"]) for v in aws.paginate(c, "list_versions_by_function", "Versions", FunctionName=fn) if v["Version"] != "$LATEST")
    return {"value": alias_value(a), "version": a["FunctionVersion"], "versions": versions}


def read_alias(system: System, resource: str) -> str:
    fn, alias = split_alias(resource)
    return alias_value(aws.client("lambda", system.region).get_alias(FunctionName=fn, Name=alias))


def set_alias(system: System, resource: str, value: str) -> None:
    """Point the alias at one version (clearing any weighted routing). Idempotent."""
    if read_alias(system, resource) == value:
        return
    fn, alias = split_alias(resource)
    version, _, extra = value.partition("+")
    weights = {v: float(w) for v, w in (p.split("=") for p in extra.split(",") if p)} if extra else {}
    aws.client("lambda", system.region).update_alias(FunctionName=fn, Name=alias, FunctionVersion=version,
                                                     RoutingConfig={"AdditionalVersionWeights": weights})


# --- SQS event source mappings: is a queue's consumer consuming? (dlq-redrive, bill-shock-breaker) -------

from pydantic import BaseModel  # noqa: E402  (this section is appended)


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


def event_source_mappings(region: str, function: str, queue_arn: str) -> list[dict[str, Any]]:
    """The function's event source mappings from the queue (every page)."""
    return list(aws.paginate(aws.client("lambda", region), "list_event_source_mappings", "EventSourceMappings",
                             FunctionName=function, EventSourceArn=queue_arn))


@aws_task(iam=["lambda:ListEventSourceMappings"], name="read-consumer-mapping", cache_policy=NO_CACHE)
def read_consumer_mapping(system: System, function: str, queue_arn: str) -> Consumer:
    """The event source mapping from the queue to its consumer function (an Enabled one first)."""
    maps = event_source_mappings(system.region, function, queue_arn)
    best = sorted(maps, key=lambda m: m.get("State") != "Enabled")[0] if maps else None
    return Consumer(function=function, queue_arn=queue_arn, mappings=len(maps), mapping_uuid=best.get("UUID") if best else None,
                    state=best.get("State") if best else None, batch_size=best.get("BatchSize") if best else None)


@aws_task(iam=["lambda:ListEventSourceMappings", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="read-consumer", cache_policy=NO_CACHE)
def read_worker(system: System, queue: str, function: str) -> dict[str, Any]:
    """The first mapping from ``queue`` to ``function`` and what waits in the queue (depth, retention)."""
    sqs = aws.client("sqs", system.region)
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "MessageRetentionPeriod", "ApproximateNumberOfMessages"])["Attributes"]
    maps = event_source_mappings(system.region, function, attrs["QueueArn"])
    m = maps[0] if maps else None
    return {"mapping_uuid": m["UUID"] if m else None, "state": m.get("State") if m else None,
            "last_modified": m.get("LastModified") if m else None, "retention_s": int(attrs.get("MessageRetentionPeriod", 345600)),
            "queued": int(attrs.get("ApproximateNumberOfMessages", 0))}
