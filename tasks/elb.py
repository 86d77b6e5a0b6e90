"""ALB target health for ECS services that name a target group (seed 001 P0 즉시 대응 2)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import EcsService, System

CHECK = "alb-targets"


def judge_targets(tg: str, service: str, targets: list[dict[str, Any]]) -> Finding:
    """0 healthy targets: CRIT (the ALB answers 503, the service is down); some unhealthy: WARN."""
    states = Counter(t.get("TargetHealth", {}).get("State", "unknown") for t in targets)
    healthy, total = states.get("healthy", 0), len(targets)
    bad = [f"{t['Target']['Id']}: {t['TargetHealth'].get('State')} ({t['TargetHealth'].get('Reason') or t['TargetHealth'].get('Description') or '-'})"
           for t in targets if t.get("TargetHealth", {}).get("State") != "healthy"]
    details = {"service": service, "healthy": healthy, "total": total, "states": dict(states), "unhealthy": bad[:10]}
    if total == 0:
        return Finding(check=CHECK, resource=tg, status=Status.CRIT, value=0, details=details,
                       summary=f"no target registered (service {service}): the ALB has nowhere to send traffic")
    if healthy == 0:
        return Finding(check=CHECK, resource=tg, status=Status.CRIT, value=0, details=details,
                       summary=f"0 of {total} targets healthy (service {service}): " + "; ".join(bad[:3]))
    if healthy < total:
        return Finding(check=CHECK, resource=tg, status=Status.WARN, value=healthy, details=details,
                       summary=f"{healthy} of {total} targets healthy (service {service}): " + "; ".join(bad[:3]))
    return Finding(check=CHECK, resource=tg, status=Status.OK, value=healthy, details=details,
                   summary=f"{healthy}/{total} targets healthy (service {service})")


def _one(region: str, svc: EcsService) -> dict[str, Any]:
    c = aws.client("elbv2", region)
    tg = svc.target_group or ""
    kw = {"TargetGroupArns": [tg]} if tg.startswith("arn:") else {"Names": [tg]}
    arn = c.describe_target_groups(**kw)["TargetGroups"][0]["TargetGroupArn"]
    return {"arn": arn, "targets": c.describe_target_health(TargetGroupArn=arn).get("TargetHealthDescriptions", [])}


@aws_task(iam=["elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth"], cache_policy=NO_CACHE)
def check_target_health(system: System, deadline: aws.Deadline) -> list[Finding]:
    svcs = [s for s in system.ecs_services if s.target_group]
    out: list[Finding] = []
    for svc, res, err in aws.parallel(lambda s: _one(system.region, s), svcs, deadline=deadline):
        name, tg = f"{svc.cluster}/{svc.service}", svc.target_group or ""
        if err is not None:
            if aws.error_code(err) in ("TargetGroupNotFound", "TargetGroupNotFoundException"):
                reason = f"target group {tg} not found in {system.region} (service {name}); check the inventory's target_group"
                if aws.is_loopback_url(aws.endpoint_url()):
                    reason += " (the sandbox seed creates no ALB target groups)"
                out.append(unknown(CHECK, tg, reason))
            else:
                out.append(unknown(CHECK, tg, aws.describe_error(err)))
            continue
        assert res is not None
        out.append(judge_targets(tg, name, res["targets"]))
    return out
