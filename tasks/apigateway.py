"""API Gateway: the system's REST APIs are present (by name and/or by tag)."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.components import judge_apis
from opsbook.findings import Finding
from opsbook.iam import aws_task
from opsbook.inventory import System
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
    names = [a.name for a in system.api_gateway_apis]
    if not found.api_gateway_ids:
        return names
    by_id = {a["id"]: a["name"] for a in aws.paginate(aws.client("apigateway", system.region), "get_rest_apis", "items")}
    return names + [by_id[i] for i in found.api_gateway_ids if i in by_id and by_id[i] not in names]
