"""ALB target health for ECS services that name a target group (seed 001 P0 즉시 대응 2)."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.components import judge_targets
from opsbook.findings import Finding
from opsbook.iam import aws_task, declares
from opsbook.inventory import EcsService, System


TARGET_HEALTH_IAM = ["elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth"]


def _one(region: str, svc: EcsService) -> dict[str, Any]:
    c = aws.client("elbv2", region)
    tg = svc.target_group or ""
    kw = {"TargetGroupArns": [tg]} if tg.startswith("arn:") else {"Names": [tg]}
    arn = c.describe_target_groups(**kw)["TargetGroups"][0]["TargetGroupArn"]
    return {"arn": arn, "targets": c.describe_target_health(TargetGroupArn=arn).get("TargetHealthDescriptions", [])}


@declares(TARGET_HEALTH_IAM)
def target_health(system: System, svc: EcsService) -> list[dict[str, Any]]:
    """The registered targets of the service's target group with their health (TargetHealthDescriptions)."""
    return _one(system.region, svc)["targets"]


@aws_task(iam=TARGET_HEALTH_IAM, cache_policy=NO_CACHE)
def check_target_health(system: System, deadline: aws.Deadline) -> list[Finding]:
    svcs = [s for s in system.ecs_services if s.target_group]
    out: list[Finding] = []
    for svc, res, err in aws.parallel(lambda s: _one(system.region, s), svcs, deadline=deadline):
        name, tg = f"{svc.cluster}/{svc.service}", svc.target_group or ""
        reason = None
        if err is not None and aws.error_code(err) in ("TargetGroupNotFound", "TargetGroupNotFoundException"):
            reason = f"target group {tg} not found in {system.region} (service {name}); check the inventory's target_group"
            if aws.is_loopback_url(aws.endpoint_url()):
                reason += " (the sandbox seed creates no ALB target groups)"
        elif err is not None:
            reason = aws.describe_error(err)
        out.append(judge_targets(tg, name, res["targets"] if res else None, reason))
    return out
