"""Tag-based discovery (Resource Groups Tagging API): one paged call finds every
tagged resource of the system, whatever the service. ListFunctions carries no
tags, so this is how "all Team=Team2 functions" is answered correctly."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System

RESOURCE_TYPES = [
    "lambda:function",
    "dynamodb:table",
    "es:domain",
    "apigateway:restapis",
    "s3:bucket",
    "sqs:queue",
    "ecs:service",
    "logs:log-group",
]


class Discovered(BaseModel):
    """Names found by tag, by kind. ``error`` is set when discovery could not run."""

    lambda_functions: list[str] = Field(default_factory=list)
    dynamodb_tables: list[str] = Field(default_factory=list)
    opensearch_domains: list[str] = Field(default_factory=list)
    api_gateway_ids: list[str] = Field(default_factory=list)
    s3_buckets: list[str] = Field(default_factory=list)
    sqs_queues: list[str] = Field(default_factory=list)
    ecs_services: list[tuple[str, str]] = Field(default_factory=list)
    log_groups: list[str] = Field(default_factory=list)
    enabled: bool = False
    error: str | None = None

    def count(self) -> int:
        return sum(len(v) for v in self.model_dump(exclude={"enabled", "error"}).values())


def classify(arns: list[str]) -> Discovered:
    """Sort ARNs into names by kind (pure: tested without AWS)."""
    d = Discovered(enabled=True)
    for arn in arns:
        parts = arn.split(":", 5)
        if len(parts) < 6:
            continue
        service, resource = parts[2], parts[5]
        if service == "lambda" and resource.startswith("function:"):
            name = resource.split(":")[1]
            if name not in d.lambda_functions:
                d.lambda_functions.append(name)
        elif service == "dynamodb" and resource.startswith("table/") and "/" not in resource[6:]:
            d.dynamodb_tables.append(resource[6:])
        elif service == "es" and resource.startswith("domain/"):
            d.opensearch_domains.append(resource[7:])
        elif service == "apigateway" and resource.startswith("/restapis/") and resource.count("/") == 2:
            d.api_gateway_ids.append(resource.split("/")[2])
        elif service == "s3" and "/" not in resource:
            d.s3_buckets.append(resource)
        elif service == "sqs":
            d.sqs_queues.append(resource)
        elif service == "ecs" and resource.startswith("service/"):
            bits = resource.split("/")
            if len(bits) == 3:
                d.ecs_services.append((bits[1], bits[2]))
        elif service == "logs" and resource.startswith("log-group:"):
            d.log_groups.append(resource[len("log-group:"):].removesuffix(":*"))
    return d


@aws_task(iam=["tag:GetResources"], cache_policy=NO_CACHE)
def discover(system: System) -> Discovered:
    """Find the system's resources by its discovery tags (empty when it has none)."""
    if not system.discovery.tags:
        return Discovered()
    c = aws.client("resourcegroupstaggingapi", system.region)
    filters = [{"Key": k, "Values": [v]} for k, v in system.discovery.tags.items()]
    try:
        arns = [
            r["ResourceARN"]
            for r in aws.paginate(c, "get_resources", "ResourceTagMappingList", TagFilters=filters, ResourceTypeFilters=RESOURCE_TYPES, ResourcesPerPage=100)
        ]
    except Exception as exc:  # turned into an UNKNOWN finding by the flow
        return Discovered(enabled=True, error=aws.describe_error(exc))
    return classify(arns)


def coverage(system: System, found: Discovered) -> list[Finding]:
    """Discovery problems, and the rule that finding no resources at all is never OK."""
    out = []
    if found.error:
        out.append(unknown("discovery", f"tags {system.discovery.tags}", found.error))
    named = sum(len(getattr(system, f)) for f in ("lambda_functions", "dynamodb_tables", "opensearch_domains", "api_gateway_apis",
                                                  "ecs_services", "s3_buckets", "log_groups", "sqs_queues"))
    if found.enabled and not found.error and found.count() == 0:
        out.append(Finding(check="discovery", resource=f"tags {system.discovery.tags}", status=Status.WARN, value=0,
                           summary=f"no resource in {system.region} carries the tags {system.discovery.tags}; check the region, account and tags"))
    if named + found.count() == 0 and not found.error:
        out.append(Finding(check="discovery", resource=system.name, status=Status.CRIT, value=0,
                           summary="the inventory resolves to no resources at all; nothing was checked"))
    return out


# --- do named resources exist? ------------------------------------------------------------


class Unreadable(BaseModel):
    """A named resource that could not be shown to exist: missing (``not_found``) or not readable."""

    kind: str  # lambda, dynamodb, s3, apigateway
    resource: str
    code: str  # the error code: what callers group causes by
    reason: str
    not_found: bool = False


_LOOKUP = {"lambda": ("lambda", "get_function_configuration", "FunctionName"), "dynamodb": ("dynamodb", "describe_table", "TableName"),
           "s3": ("s3", "head_bucket", "Bucket")}


def _unreadable(kind: str, name: str, exc: BaseException) -> Unreadable:
    return Unreadable(kind=kind, resource=name, code=aws.error_code(exc), reason=aws.describe_error(exc), not_found=aws.is_not_found(exc))


@aws_task(iam=["lambda:GetFunctionConfiguration", "dynamodb:DescribeTable", "s3:ListBucket", "apigateway:GET"], cache_policy=NO_CACHE)
def confirm_idle(system: System, names: dict[str, list[str]]) -> list[Unreadable]:
    """Look up resources by kind (an idle one and a missing one both have no datapoints); returns those missing or not readable."""
    out: list[Unreadable] = []
    for kind, items in names.items():
        if kind == "apigateway":
            try:
                existing = {a["name"] for a in aws.paginate(aws.client("apigateway", system.region), "get_rest_apis", "items")}
            except Exception as exc:  # every API asked about is then unreadable, with the reason
                out += [_unreadable(kind, n, exc) for n in items]
                continue
            out += [Unreadable(kind=kind, resource=n, code="NotFoundException", reason=f"GetRestApis lists no API named {n}", not_found=True)
                    for n in items if n not in existing]
            continue
        service, operation, param = _LOOKUP[kind]
        c = aws.client(service, system.region)
        out += [_unreadable(kind, n, err) for n, _, err in aws.parallel(lambda n: getattr(c, operation)(**{param: n}), items) if err is not None]
    return out


def discovered_or_inventory(system: System, found: Discovered | BaseException, fallback: str) -> tuple[Discovered, list[Finding]]:
    """Tag discovery's result (``discover``'s, or the exception its task raised); when it failed: nothing discovered, and an
    UNKNOWN finding with the reason and ``fallback`` (what the run does instead, e.g. "only the inventory's tables were checked")."""
    if isinstance(found, BaseException) or found.error:
        reason = aws.describe_error(found) if isinstance(found, BaseException) else found.error
        return Discovered(), [unknown("discovery", f"tags {system.discovery.tags}", f"{reason}; {fallback}")]
    return found, []
