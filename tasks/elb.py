"""ALB target health for ECS services that name a target group (seed 001 P0 즉시 대응 2), and the CloudWatch dimensions of
their ALB metrics (``alb_targets``: what tasks/cloudwatch.py reads for performance and availability)."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.components import judge_targets
from opsbook.findings import Finding
from opsbook.iam import aws_task, declares
from opsbook.inventory import EcsService, System


def _describe(region: str, svc: EcsService) -> dict[str, Any]:
    tg = svc.target_group or ""
    kw = {"TargetGroupArns": [tg]} if tg.startswith("arn:") else {"Names": [tg]}
    return aws.client("elbv2", region).describe_target_groups(**kw)["TargetGroups"][0]


TARGET_HEALTH_IAM = ["elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth"]


def _one(region: str, svc: EcsService) -> dict[str, Any]:
    arn = _describe(region, svc)["TargetGroupArn"]
    return {"arn": arn, "targets": aws.client("elbv2", region).describe_target_health(TargetGroupArn=arn).get("TargetHealthDescriptions", [])}


def _not_found(system: System, svc: EcsService, err: BaseException) -> str:
    """Why a target group could not be read, for the UNKNOWN."""
    name, tg = f"{svc.cluster}/{svc.service}", svc.target_group or ""
    if aws.error_code(err) in ("TargetGroupNotFound", "TargetGroupNotFoundException"):
        return f"target group {tg} not found in {system.region} (service {name}); check the inventory's target_group"
    return aws.describe_error(err)


@declares(TARGET_HEALTH_IAM)
def target_health(system: System, svc: EcsService) -> list[dict[str, Any]]:
    """The registered targets of the service's target group with their health (TargetHealthDescriptions)."""
    return _one(system.region, svc)["targets"]


@aws_task(iam=TARGET_HEALTH_IAM, cache_policy=NO_CACHE)
def check_target_health(system: System, deadline: aws.Deadline) -> list[Finding]:
    svcs = [s for s in system.ecs_services if s.target_group]
    out: list[Finding] = []
    for svc, res, err in aws.parallel(lambda s: _one(system.region, s), svcs, deadline=deadline):
        reason = _not_found(system, svc, err) if err is not None else None
        out.append(judge_targets(svc.target_group or "", f"{svc.cluster}/{svc.service}", res["targets"] if res else None, reason))
    return out


# --- CloudWatch dimensions of ELB resources ----------------------------------------------------------------------


def dimension_of(arn: str) -> str:
    """The CloudWatch dimension value of an ELB ARN: ``targetgroup/name/id`` for a target group, ``app/name/id`` for a
    load balancer (the resource part of the ARN, without ``loadbalancer/``)."""
    return arn.split(":", 5)[-1].removeprefix("loadbalancer/")


# --- CloudWatch dimensions of a service's target group (availability; ALB metrics) --------------------------------


class AlbTarget(BaseModel):
    """An ECS service's target group and the CloudWatch dimensions of its ALB metrics (AWS/ApplicationELB): ``TargetGroup``
    ``targetgroup/NAME/ID`` and ``LoadBalancer`` ``app/NAME/ID`` of each load balancer that forwards to it; or why not."""

    service: str  # cluster/service
    target_group: str  # as the inventory names it (a name or an ARN)
    arn: str | None = None
    target_group_dim: str | None = None
    load_balancer_dims: list[str] = Field(default_factory=list)
    error: str | None = None


def alb_target(svc: EcsService, tg: dict[str, Any] | None, reason: str | None = None) -> AlbTarget:
    """What DescribeTargetGroups answered for the service's target group, as dimensions (pure)."""
    name, ref = f"{svc.cluster}/{svc.service}", svc.target_group or ""
    if tg is None:
        return AlbTarget(service=name, target_group=ref, error=reason or f"target group {ref} not found")
    lbs = tg.get("LoadBalancerArns") or []
    out = AlbTarget(service=name, target_group=ref, arn=tg["TargetGroupArn"], target_group_dim=dimension_of(tg["TargetGroupArn"]),
                    load_balancer_dims=[dimension_of(a) for a in lbs])
    if not lbs:
        out.error = f"no load balancer forwards to target group {ref} (service {name}): ALB publishes no metric for it"
    return out


@declares(["elasticloadbalancing:DescribeTargetGroups"])
def alb_targets(system: System, deadline: aws.Deadline | None = None) -> list[AlbTarget]:
    """Each ECS service's target group (the inventory's ``target_group``) resolved to its ALB metric dimensions: one
    DescribeTargetGroups a target group, concurrently; a group that is missing or unreadable carries the reason."""
    svcs = [s for s in system.ecs_services if s.target_group]

    out = []
    for svc, res, err in aws.parallel(lambda s: _describe(system.region, s), svcs, deadline=deadline):
        out.append(alb_target(svc, res, None if err is None else _not_found(system, svc, err)))
    return out


@aws_task(iam=["elasticloadbalancing:DescribeTargetGroups"], name="read-alb-targets", cache_policy=NO_CACHE)
def read_alb_targets(system: System) -> list[AlbTarget]:
    """``alb_targets`` as a task (weekly-report)."""
    return alb_targets(system, aws.Deadline(60))
