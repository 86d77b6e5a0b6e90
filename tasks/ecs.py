"""ECS: running vs desired tasks and deployment state; CPU and memory utilisation of the last hour."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.components import judge_service, td_revision
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task, declares
from opsbook.inventory import System
from opsbook.performance import UTILISATION, judge_utilisation
from opsbook.resources import Discovered
from tasks.autoscaling import ScalableTarget, describe_targets
from tasks.cloudwatch import get_metric_data, metric_query


def services(system: System, found: Discovered) -> list[tuple[str, str]]:
    out = [(s.cluster, s.service) for s in system.ecs_services]
    return out + [cs for cs in found.ecs_services if cs not in out]


@aws_task(iam=["ecs:DescribeServices"], cache_policy=NO_CACHE)
def check_services(system: System, found: Discovered, deadline: aws.Deadline) -> list[Finding]:
    wanted = services(system, found)
    if not wanted:
        return []
    named = {(s.cluster, s.service) for s in system.ecs_services}
    c = aws.client("ecs", system.region)
    batches: list[tuple[str, list[str]]] = []
    by_cluster: dict[str, list[str]] = {}
    for cl, sv in wanted:
        by_cluster.setdefault(cl, []).append(sv)
    for cl, svs in by_cluster.items():
        batches += [(cl, svs[i : i + 10]) for i in range(0, len(svs), 10)]  # DescribeServices takes up to 10
    findings: list[Finding] = []
    for (cl, svs), res, err in aws.parallel(lambda b: c.describe_services(cluster=b[0], services=b[1]), batches, deadline=deadline):
        gone = err is not None and aws.error_code(err) == "ClusterNotFoundException"
        reason = aws.describe_error(err) if err is not None and not gone else None
        got = {s["serviceName"]: s for s in (res or {}).get("services", [])}
        for s in svs:
            findings.append(judge_service(cl, s, got.get(s), (cl, s) in named, reason, gone))
    return findings


# --- utilisation (001 P1 서비스 성능 저하 1: CPU/memory of the last hour) ------------------------------------------


def utilisation_queries(services: list[str]) -> list[dict[str, Any]]:
    """CPU and memory Maximum over one period each ("cluster/service" names); ids ``u{i}_cpu`` / ``u{i}_memory``."""
    out = []
    for i, resource in enumerate(services):
        cluster, service = split_resource(resource)
        for kind, (metric, _) in UTILISATION.items():
            dims = {"ClusterName": cluster, "ServiceName": service}
            out.append(metric_query(f"u{i}_{kind}", "AWS/ECS", metric, dims, "Maximum", UTILISATION_PERIOD_S))
    return out


UTILISATION_PERIOD_S = 3600  # the window, one period: the Maximum of the hour in one datapoint


def measured_services(states: list[Finding]) -> list[tuple[str, int | None, str | None]]:
    """(cluster/service, running tasks or None, why the service could not be read) of each ecs-service finding, except those of
    services that do not exist (their finding is the CRIT)."""
    out = []
    for f in states:
        if f.check != "ecs-service" or (f.status is Status.CRIT and not f.details):
            continue
        out.append((f.resource, f.details.get("running"), f.summary if f.status is Status.UNKNOWN and not f.details else None))
    return out


@aws_task(iam=["cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def check_utilisation(system: System, states: list[Finding], hours: float = 1) -> list[Finding]:
    """Every ECS service check_services read: CPUUtilization and MemoryUtilization Maximum over the last hour (AWS/ECS,
    ClusterName + ServiceName), one batched GetMetricData, against the inventory's targets."""
    services = measured_services(states)
    if not services:
        return []
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    try:
        data, err = get_metric_data(system.region, utilisation_queries([s for s, _, _ in services]), end - timedelta(hours=hours), end), None
    except Exception as exc:  # every service's utilisation is then unknown, with the reason
        data, err = {}, f"GetMetricData: {aws.describe_error(exc)}"
    th = system.thresholds
    out = []
    for i, (resource, running, unread) in enumerate(services):
        for kind, target in (("cpu", th.ecs_cpu_target_pct), ("memory", th.ecs_memory_target_pct)):
            points = [v for _, v in data.get(f"u{i}_{kind}", [])]
            why = err if err is not None else (None if points or unread is None else f"the service could not be read either: {unread}")
            out.append(judge_utilisation(resource, kind, max(points) if points else None, target, running, why, hours))
    return out


# --- rollback support ------------------------------------------------------------------


def split_resource(resource: str) -> tuple[str, str]:
    cluster, _, service = resource.partition("/")
    return cluster, service


@aws_task(iam=["ecs:DescribeServices", "ecs:ListTaskDefinitions"], name="read-ecs-service", cache_policy=NO_CACHE)
def read_service_history(system: System, resource: str) -> dict[str, Any]:
    """The service's current task definition, deployments, recent events, and the family's ACTIVE revisions."""
    cluster, service = split_resource(resource)
    c = aws.client("ecs", system.region)
    res = c.describe_services(cluster=cluster, services=[service])
    if not res.get("services") or res["services"][0].get("status") == "INACTIVE":
        raise LookupError(f"ECS service {resource} does not exist")
    svc = res["services"][0]
    family, _ = td_revision(svc["taskDefinition"])
    revisions = list(aws.paginate(c, "list_task_definitions", "taskDefinitionArns", familyPrefix=family, status="ACTIVE", sort="DESC"))
    return {
        "task_definition": svc["taskDefinition"],
        "deployments": [{k: d.get(k) for k in ("status", "taskDefinition", "rolloutState", "runningCount", "desiredCount")} for d in svc.get("deployments", [])],
        "events": [e.get("message", "") for e in svc.get("events", [])[:10]],
        "revisions": [r for r in revisions if td_revision(r)[0] == family],
        "running": svc.get("runningCount", 0),
        "desired": svc.get("desiredCount", 0),
    }


@declares(["ecs:DescribeServices"])
def read_task_definition(system: System, resource: str) -> str:
    cluster, service = split_resource(resource)
    svc = aws.client("ecs", system.region).describe_services(cluster=cluster, services=[service])["services"][0]
    return svc["taskDefinition"]


@declares(["ecs:DescribeServices", "ecs:UpdateService"])
def set_task_definition(system: System, resource: str, task_definition: str) -> None:
    """Idempotent: a service already on this task definition is left alone (no new deployment)."""
    if read_task_definition(system, resource) == task_definition:
        return
    cluster, service = split_resource(resource)
    aws.client("ecs", system.region).update_service(cluster=cluster, service=service, taskDefinition=task_definition)


def settle_state(svc: dict[str, Any], target: str) -> tuple[bool, str]:
    """Is the service settled on ``target``? (pure; the sandbox and real ECS both answer through this)."""
    deps = svc.get("deployments", [])
    primary = next((d for d in deps if d.get("status") == "PRIMARY"), {})
    running, desired = svc.get("runningCount", 0), svc.get("desiredCount", 0)
    if svc.get("taskDefinition") != target:
        return False, f"service runs {svc.get('taskDefinition')}, not {target}"
    if primary.get("taskDefinition") != target:
        return False, f"primary deployment still on {primary.get('taskDefinition')}"
    if primary.get("rolloutState") == "FAILED":
        return False, f"rollout FAILED: {primary.get('rolloutStateReason', '')}"
    if len(deps) > 1 or primary.get("rolloutState") == "IN_PROGRESS":
        return False, f"deployment in progress ({len(deps)} deployments, rollout {primary.get('rolloutState')})"
    if running != desired:
        return False, f"{running} of {desired} tasks running"
    return True, f"{running}/{desired} tasks running on {target.rsplit('/', 1)[-1]}"


@declares(["ecs:DescribeServices"])
def task_definition_settled(system: System, resource: str, target: str) -> tuple[bool, str]:
    """The service's rollout onto ``target`` is complete (the settled check of the task-definition step)."""
    return settle_state(describe_service(system, resource), target)


# --- desired count (scale-service): ``read_desired``/``set_desired`` are the ``Applier`` of DESIRED_KIND --------

DESIRED_KIND = "ecs-desired-count"
DESIRED_IAM = "ecs:UpdateService"


@declares(["ecs:DescribeServices"])
def describe_service(system: System, resource: str) -> dict[str, Any]:
    cluster, service = split_resource(resource)
    res = aws.client("ecs", system.region).describe_services(cluster=cluster, services=[service])
    svc = (res.get("services") or [None])[0]
    if not svc or svc.get("status") == "INACTIVE":
        raise LookupError(f"ECS service {resource} does not exist (or is INACTIVE); check the inventory's ecs_services")
    return svc


@declares(["ecs:DescribeServices"])
def read_desired(system: System, resource: str) -> str:
    return str(describe_service(system, resource)["desiredCount"])


@declares(["ecs:DescribeServices"])
def desired_settled(system: System, resource: str, target: str) -> tuple[bool, str]:
    """desiredCount is the target and as many tasks run: the settled check of the desired-count step."""
    svc = describe_service(system, resource)
    desired, running = svc["desiredCount"], svc.get("runningCount", 0)
    return desired == int(target) and running == desired, f"desired {desired}, running {running}, pending {svc.get('pendingCount', 0)}"


@declares(["ecs:DescribeServices", "ecs:UpdateService"])
def set_desired(system: System, resource: str, value: str) -> None:
    if read_desired(system, resource) == value:
        return
    cluster, service = split_resource(resource)
    aws.client("ecs", system.region).update_service(cluster=cluster, service=service, desiredCount=int(value))


class ServiceState(BaseModel):
    resource: str
    desired: int
    running: int
    pending: int = 0
    target: ScalableTarget | None = None
    target_error: str | None = None


@aws_task(iam=["ecs:DescribeServices", "application-autoscaling:DescribeScalableTargets"], name="read-service-scaling", cache_policy=NO_CACHE)
def read_service_scaling(system: System, resource: str) -> ServiceState:
    """The service's counts and its auto scaling target (when the target cannot be read: the error, the counts still)."""
    svc = describe_service(system, resource)
    state = ServiceState(resource=resource, desired=svc["desiredCount"], running=svc.get("runningCount", 0), pending=svc.get("pendingCount", 0))
    rid = f"service/{resource}"
    try:
        state.target = describe_targets(system, "ecs", [rid]).get(f"{rid} ecs:service:DesiredCount")
    except Exception as exc:  # the bounds fall back to the inventory's, and the report says why
        state.target_error = aws.describe_error(exc)
    return state


# --- restart (restart-service): a forced new deployment; ``read_primary``/``force_new_deployment`` are the ``Applier`` of RESTART_KIND ---

RESTART_KIND = "ecs-force-new-deployment"
RESTART_IAM = "ecs:UpdateService"
_REPLACING = "a new deployment replacing "


def restart_target(primary_id: str) -> str:
    """The restart step's target: it names the change (the deployment read when planned is no longer PRIMARY), not a value."""
    return f"{_REPLACING}{primary_id}"


def replaced_id(target: str) -> str:
    """The deployment a restart target replaces (``restart_target``'s argument)."""
    if not target.startswith(_REPLACING):
        raise ValueError(f"not a restart target: {target!r}")
    return target[len(_REPLACING):]


def primary_of(svc: dict[str, Any]) -> dict[str, Any]:
    return next((d for d in svc.get("deployments", []) if d.get("status") == "PRIMARY"), {})


@declares(["ecs:DescribeServices"])
def read_primary(system: System, resource: str) -> str:
    """The id of the service's PRIMARY deployment ("none" when it has none): what a restart replaces."""
    return str(primary_of(describe_service(system, resource)).get("id") or "none")


@declares(["ecs:DescribeServices"])
def restart_reached(system: System, resource: str, before: str, target: str) -> bool:
    """The restart was made: the deployment PRIMARY when it was planned (``before``) no longer is. A re-run after a kill
    between the call and its record finds it so and does not restart again."""
    return read_primary(system, resource) != before


@declares(["ecs:DescribeServices", "ecs:UpdateService"])
def force_new_deployment(system: System, resource: str, target: str) -> None:
    """UpdateService forceNewDeployment=true: new tasks replace the running ones (rolling, within the service's
    deploymentConfiguration). Idempotent: when the deployment it replaces is no longer PRIMARY, the restart is made."""
    if read_primary(system, resource) != replaced_id(target):
        return
    cluster, service = split_resource(resource)
    aws.client("ecs", system.region).update_service(cluster=cluster, service=service, forceNewDeployment=True)


def restart_settle_state(svc: dict[str, Any], replaced: str, targets: list[dict[str, Any]] | None = None, target_group: str = "",
                         target_error: str = "") -> tuple[bool, str]:
    """Has a restart replacing deployment ``replaced`` finished? (pure) A new PRIMARY deployment with every desired task
    RUNNING, its rollout COMPLETED, no other deployment left (the old tasks are gone), and, where the service has a target
    group (``target_group``), every registered target healthy and at least as many as desired."""
    deps = svc.get("deployments", [])
    primary = primary_of(svc)
    desired = int(primary.get("desiredCount", svc.get("desiredCount", 0)) or 0)
    running = int(primary.get("runningCount", 0) or 0)
    old = [d for d in deps if d is not primary]
    old_running = sum(int(d.get("runningCount", 0) or 0) for d in old)
    rollout = primary.get("rolloutState") or "-"
    seen = f"new deployment {primary.get('id', '?')}: {running} of {desired} tasks running, rollout {rollout}"
    if not primary or primary.get("id") == replaced:
        return False, f"deployment {replaced} is still PRIMARY: no new deployment yet"
    if rollout == "FAILED":
        return False, f"{seen}: FAILED ({primary.get('rolloutStateReason') or 'no reason given'})"
    if old:
        seen += f"; old deployment(s) {', '.join(str(d.get('id', '?')) for d in old)} still running {old_running} task(s)"
    else:
        seen += "; old tasks gone"
    ok = running >= desired and not old and rollout in ("COMPLETED", "-")
    if target_group:
        if targets is None:
            return False, f"{seen}; target group {target_group} not read: {target_error or 'no answer'}"
        healthy = sum(1 for t in targets if t.get("TargetHealth", {}).get("State") == "healthy")
        other = [f"{t.get('Target', {}).get('Id', '?')} {t.get('TargetHealth', {}).get('State', '?')}" for t in targets
                 if t.get("TargetHealth", {}).get("State") != "healthy"]
        seen += f"; target group {target_group}: {healthy}/{len(targets)} healthy" + (f" ({', '.join(other[:3])})" if other else "")
        ok = ok and healthy >= desired and not other
    return ok, seen


@declares(["ecs:DescribeServices", "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth"])
def restart_settled(system: System, resource: str, target: str) -> tuple[bool, str]:
    """The settled check of the restart step (``restart_settle_state`` on the service and its target group's health)."""
    from tasks.elb import target_health

    svc = describe_service(system, resource)
    spec = next((s for s in system.ecs_services if f"{s.cluster}/{s.service}" == resource), None)
    targets, error = None, ""
    if spec is not None and spec.target_group:
        try:
            targets = target_health(system, spec)
        except Exception as exc:  # not healthy as far as anyone can tell: the wait goes on, and says why
            error = aws.describe_error(exc)
    return restart_settle_state(svc, replaced_id(target), targets, (spec.target_group or "") if spec else "", error)


class RestartState(BaseModel):
    """What a restart is planned from: the service's counts and deployments."""

    resource: str
    desired: int
    running: int
    pending: int = 0
    task_definition: str = ""
    primary: str = "none"
    primary_created: str = ""
    rollout: str = ""
    deployments: int = 0
    min_healthy_pct: int | None = None
    max_pct: int | None = None
    controller: str = "ECS"


@aws_task(iam=["ecs:DescribeServices"], name="read-service-deployments", cache_policy=NO_CACHE)
def read_restart_state(system: System, resource: str) -> RestartState:
    svc = describe_service(system, resource)
    primary = primary_of(svc)
    conf = svc.get("deploymentConfiguration") or {}
    created = primary.get("createdAt")
    return RestartState(resource=resource, desired=svc.get("desiredCount", 0), running=svc.get("runningCount", 0),
                        pending=svc.get("pendingCount", 0), task_definition=svc.get("taskDefinition", ""),
                        primary=str(primary.get("id") or "none"), primary_created=created.isoformat() if hasattr(created, "isoformat") else str(created or ""),
                        rollout=primary.get("rolloutState") or "", deployments=len(svc.get("deployments", [])),
                        min_healthy_pct=conf.get("minimumHealthyPercent"), max_pct=conf.get("maximumPercent"),
                        controller=(svc.get("deploymentController") or {}).get("type") or "ECS")
