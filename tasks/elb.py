"""ALB target health for ECS services that name a target group (seed 001 P0 즉시 대응 2), and the target group's
metrics of the last hour (001 P1 서비스 성능 저하: response time p95, target 5XX, unhealthy hosts)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.components import judge_targets
from opsbook.findings import Finding
from opsbook.iam import aws_task, declares
from opsbook.inventory import EcsService, System
from opsbook.performance import TargetGroupMetrics, judge_target_group
from tasks.cloudwatch import get_metric_data, metric_query


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


# --- the target group's CloudWatch metrics ---------------------------------------------------------------------------


def dimension_of(arn: str) -> str:
    """The CloudWatch dimension value of an ELB ARN: ``targetgroup/name/id`` for a target group, ``app/name/id`` for a
    load balancer (the resource part of the ARN, without ``loadbalancer/``)."""
    return arn.split(":", 5)[-1].removeprefix("loadbalancer/")


@declares(["elasticloadbalancing:DescribeTargetGroups"])
def target_group_dimensions(region: str, svc: EcsService) -> dict[str, str]:
    """AWS/ApplicationELB's TargetGroup and LoadBalancer dimensions of the service's target group (DescribeTargetGroups).
    A target group behind no load balancer has no LoadBalancer (and ALB publishes nothing for it)."""
    tg = _describe(region, svc)
    dims = {"TargetGroup": dimension_of(tg["TargetGroupArn"])}
    lbs = tg.get("LoadBalancerArns") or []
    if lbs:
        dims["LoadBalancer"] = dimension_of(lbs[0])
    return dims


WINDOW_PERIOD_S = 3600  # the window, one period (sums and the p95 of the hour)
HOSTS_PERIOD_S = 60  # host counts a minute: the newest is now's
ALB_SERIES = {"requests": ("RequestCount", "Sum", WINDOW_PERIOD_S), "errors_5xx": ("HTTPCode_Target_5XX_Count", "Sum", WINDOW_PERIOD_S),
              "p95_s": ("TargetResponseTime", "p95", WINDOW_PERIOD_S), "unhealthy": ("UnHealthyHostCount", "Maximum", HOSTS_PERIOD_S),
              "healthy": ("HealthyHostCount", "Minimum", HOSTS_PERIOD_S)}


def alb_queries(dims: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [metric_query(f"t{i}_{key}", "AWS/ApplicationELB", metric, d, stat, period)
            for i, d in enumerate(dims) for key, (metric, stat, period) in ALB_SERIES.items()]


def alb_values(i: int, data: dict[str, list[tuple[datetime, float]]]) -> dict[str, float | None]:
    """The window's value of each series of target group ``i``: its one datapoint, the newest minute for host counts."""
    out: dict[str, float | None] = {}
    for key, (_, stat, period) in ALB_SERIES.items():
        points = data.get(f"t{i}_{key}", [])  # newest first
        out[key] = (sum(v for _, v in points) if stat == "Sum" else points[0][1]) if points else None
    return out


@aws_task(iam=["elasticloadbalancing:DescribeTargetGroups", "cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def check_target_metrics(system: System, deadline: aws.Deadline, hours: float = 1) -> list[Finding]:
    """Each ECS service's target group: response time p95, target 5XX against requests, unhealthy hosts over the last hour
    (AWS/ApplicationELB, TargetGroup + LoadBalancer resolved with DescribeTargetGroups), one batched GetMetricData."""
    svcs = [s for s in system.ecs_services if s.target_group]
    if not svcs:
        return []
    resolved = aws.parallel(lambda s: target_group_dimensions(system.region, s), svcs, deadline=deadline)
    readable = [k for k, (_, dims, err) in enumerate(resolved) if err is None and dims and "LoadBalancer" in dims]
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    data: dict[str, list[tuple[datetime, float]]] = {}
    metrics_err = None
    if readable:
        try:
            data = get_metric_data(system.region, alb_queries([resolved[k][1] or {} for k in readable]), end - timedelta(hours=hours), end)
        except Exception as exc:  # every target group's numbers are then unknown, with the reason
            metrics_err = f"GetMetricData: {aws.describe_error(exc)}"
    out: list[Finding] = []
    for k, (svc, dims, err) in enumerate(resolved):
        tg, name = svc.target_group or "", f"{svc.cluster}/{svc.service}"
        if err is not None:
            out += judge_target_group(None, tg, name, system.thresholds, _not_found(system, svc, err), hours)
        elif "LoadBalancer" not in (dims or {}):
            out += judge_target_group(None, tg, name, system.thresholds, f"target group {tg} is behind no load balancer (service {name}): "
                                      "ALB publishes no metric for it", hours)
        else:
            m = TargetGroupMetrics(target_group=tg, service=name, dimensions=dims or {}, **alb_values(readable.index(k), data))
            out += judge_target_group(m, tg, name, system.thresholds, metrics_err, hours)
    return out
