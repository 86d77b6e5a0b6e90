"""API Gateway: the system's REST APIs are present (by name and/or by tag)."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task
from opsbook.inventory import System
from opsbook.resources import Discovered


@aws_task(iam=["apigateway:GET"], cache_policy=NO_CACHE)
def check_apis(system: System, found: Discovered, deadline: aws.Deadline) -> list[Finding]:
    if not system.api_gateway_apis and not found.api_gateway_ids:
        return []
    c = aws.client("apigateway", system.region)
    apis = list(aws.paginate(c, "get_rest_apis", "items"))  # errors become UNKNOWN in the flow
    by_name: dict[str, list[dict]] = {}
    for a in apis:
        by_name.setdefault(a["name"], []).append(a)
    findings: list[Finding] = []
    seen: set[str] = set()
    for want in system.api_gateway_apis:
        matches = by_name.get(want.name, [])
        if not matches:
            findings.append(Finding(check="apigateway-present", resource=want.name, status=Status.CRIT, summary="named in the inventory but no REST API has that name"))
        elif len(matches) > 1:
            ids = [m["id"] for m in matches]
            seen.update(ids)
            findings.append(Finding(check="apigateway-present", resource=want.name, status=Status.WARN, summary=f"{len(matches)} REST APIs share this name ({', '.join(ids)}): ambiguous", details={"ids": ids}))
        else:
            seen.add(matches[0]["id"])
            findings.append(Finding(check="apigateway-present", resource=want.name, status=Status.OK, summary=f"present (id {matches[0]['id']})", details={"id": matches[0]["id"]}))
    by_id = {a["id"]: a for a in apis}
    for api_id in found.api_gateway_ids:
        if api_id in seen:
            continue
        a = by_id.get(api_id)
        if a is None:
            findings.append(Finding(check="apigateway-present", resource=api_id, status=Status.WARN, summary="tagged API no longer listed by GetRestApis"))
        else:
            findings.append(Finding(check="apigateway-present", resource=a["name"], status=Status.OK, summary=f"present (id {api_id}, found by tag)", details={"id": api_id}))
    return findings


@aws_task(iam=["apigateway:GET"], cache_policy=NO_CACHE)
def api_names(system: System, found: Discovered) -> list[str]:
    """API names (CloudWatch's ApiName dimension): the inventory's, plus tag-discovered ids mapped to names."""
    names = [a.name for a in system.api_gateway_apis]
    if not found.api_gateway_ids:
        return names
    by_id = {a["id"]: a["name"] for a in aws.paginate(aws.client("apigateway", system.region), "get_rest_apis", "items")}
    return names + [by_id[i] for i in found.api_gateway_ids if i in by_id and by_id[i] not in names]
