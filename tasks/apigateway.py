"""API Gateway: the system's REST APIs are present (by name and/or by tag)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.components import judge_apis
from opsbook.findings import Finding
from opsbook.iam import aws_task, declares
from opsbook.inventory import ApiGatewayApi, System
from opsbook.resources import Discovered


@aws_task(iam=["apigateway:GET"], cache_policy=NO_CACHE)
def check_apis(system: System, found: Discovered, deadline: aws.Deadline) -> list[Finding]:
    if not system.api_gateway_apis and not found.api_gateway_ids:
        return []
    c = aws.client("apigateway", system.region)
    apis = list(aws.paginate(c, "get_rest_apis", "items"))  # errors become UNKNOWN in the flow
    return judge_apis([a.name for a in system.api_gateway_apis], found.api_gateway_ids, apis)


@aws_task(iam=["apigateway:GET"], cache_policy=NO_CACHE)
def api_names(system: System, found: Discovered) -> list[str]:
    """API names (CloudWatch's ApiName dimension): the inventory's, plus tag-discovered ids mapped to names."""
    return all_api_names(system, found)


@declares(["apigateway:GET"])
def all_api_names(system: System, found: Discovered) -> list[str]:
    """``api_names`` as a function: one GetRestApis listing, only when discovery found API ids."""
    names = [a.name for a in system.api_gateway_apis]
    if not found.api_gateway_ids:
        return names
    by_id = {a["id"]: a["name"] for a in aws.paginate(aws.client("apigateway", system.region), "get_rest_apis", "items")}
    return names + [by_id[i] for i in found.api_gateway_ids if i in by_id and by_id[i] not in names]



# --- a REST API's routes and their integrations (diagnose-api-5xx) -------------------------------------------

_LAMBDA_URI = re.compile(r":lambda:path/[\d-]+/functions/(?P<arn>.+?)/invocations")


def function_from_uri(uri: str | None) -> tuple[str | None, str | None, str | None]:
    """(function name, qualifier, problem) from an integration URI; (None, None, None) when it names no Lambda function."""
    if not uri:
        return None, None, None
    m = _LAMBDA_URI.search(uri)
    if not m:
        return None, None, None
    arn = unquote(m.group("arn"))
    if "${stageVariables." in arn:
        return None, None, f"the function comes from a stage variable ({arn}); resolve it from the stage"
    parts = arn.split(":")
    if len(parts) >= 7 and parts[5] == "function":
        return parts[6], (parts[7] if len(parts) > 7 else None), None
    if len(parts) == 1:  # a bare function name
        return parts[0], None, None
    return None, None, f"unrecognised Lambda ARN in the integration URI: {arn}"


class Route(BaseModel):
    path: str
    method: str
    type: str | None = None
    uri: str | None = None
    function: str | None = None
    qualifier: str | None = None
    timeout_ms: int | None = None
    problem: str | None = None


class ApiInfo(BaseModel):
    name: str
    id: str | None = None
    found: bool = False
    error: str | None = None
    ambiguous_ids: list[str] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)

    def integrated_functions(self) -> list[str]:
        return sorted({r.function for r in self.routes if r.function})


@aws_task(iam=["apigateway:GET"], cache_policy=NO_CACHE)
def read_api(system: System, api: ApiGatewayApi, deadline: aws.Deadline) -> ApiInfo:
    """The REST API by name, its resources and their integrations (GetRestApis, GetResources, GetIntegration)."""
    c = aws.client("apigateway", system.region)
    try:
        matches = [a for a in aws.paginate(c, "get_rest_apis", "items") if a["name"] == api.name]
    except Exception as exc:  # the reason becomes an UNKNOWN finding
        return ApiInfo(name=api.name, error=aws.describe_error(exc))
    if not matches:
        return ApiInfo(name=api.name)
    info = ApiInfo(name=api.name, id=matches[0]["id"], found=True, ambiguous_ids=[m["id"] for m in matches] if len(matches) > 1 else [])
    try:
        resources = list(aws.paginate(c, "get_resources", "items", restApiId=info.id, embed=["methods"]))
    except Exception as exc:
        info.error = aws.describe_error(exc)
        return info
    pairs = [(r, m) for r in resources for m in sorted((r.get("resourceMethods") or {}))]

    def integration(rm: tuple[dict[str, Any], str]) -> dict[str, Any]:
        return c.get_integration(restApiId=info.id, resourceId=rm[0]["id"], httpMethod=rm[1])

    for (r, m), res, err in aws.parallel(integration, pairs, deadline=deadline, max_workers=8):
        if err is not None:
            if aws.is_not_found(err):
                info.routes.append(Route(path=r.get("path", "?"), method=m, problem="method has no integration"))
            else:
                info.routes.append(Route(path=r.get("path", "?"), method=m, problem=f"integration unreadable: {aws.describe_error(err)}"))
            continue
        fn, qual, problem = function_from_uri(res.get("uri"))
        tmo = res.get("timeoutInMillis")
        info.routes.append(Route(path=r.get("path", "?"), method=m, type=res.get("type"), uri=res.get("uri"), function=fn, qualifier=qual,
                                 timeout_ms=int(tmo) if tmo not in (None, "") else None, problem=problem))
    info.routes.sort(key=lambda x: (x.path, x.method))
    return info
