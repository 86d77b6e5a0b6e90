"""ECS restarts in the sandbox (restart-service): a forced new deployment that rolls as ECS's does.

moto runs no tasks, and its UpdateService forceNewDeployment=true only gives the PRIMARY deployment a new id and
createdAt, COMPLETED at once. ``ecs_rolling_restart`` makes it look like ECS (in this process, on moto's own
state; the sandbox's reset clears it): the call leaves a new PRIMARY deployment IN_PROGRESS with no task running
and the old one ACTIVE with its tasks, then, ``settle_after_s`` later (None: never; a test then calls
``finish_rollout``), the new tasks run, the old deployment is gone and the service's target group (where the
inventory names one: created here, with one healthy ip target a running task) holds the new tasks' targets only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from opsbook.inventory import EcsService, System
from sandbox.server import Sandbox, sandbox_client


def _target_group(sb: Sandbox, system: System, s: EcsService) -> str:
    """The service's target group (created when missing, in the default VPC), its ARN."""
    elb = sandbox_client(sb, "elbv2", system.region)
    try:
        return str(elb.describe_target_groups(Names=[s.target_group])["TargetGroups"][0]["TargetGroupArn"])
    except elb.exceptions.TargetGroupNotFoundException:
        ec2 = sandbox_client(sb, "ec2", system.region)
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        vpc = vpcs[0]["VpcId"] if vpcs else ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        return str(elb.create_target_group(Name=s.target_group, Protocol="HTTP", Port=8080, TargetType="ip", VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"])


def _set_targets(sb: Sandbox, system: System, arn: str, generation: int, count: int) -> None:
    """The target group holds ``count`` targets of this generation of tasks (10.0.<generation>.<n>), and no other."""
    elb = sandbox_client(sb, "elbv2", system.region)
    have = [t["Target"] for t in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]]
    if have:
        elb.deregister_targets(TargetGroupArn=arn, Targets=have)
    if count:
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": f"10.0.{generation}.{n + 1}", "Port": 8080} for n in range(count)])


def finish_rollout(sb: Sandbox, system: System, s: EcsService) -> None:
    """What ECS does once the new tasks are up: every desired task RUNNING on the new deployment, the old one gone, the
    target group holding the new tasks."""
    svc = sb.backend("ecs", system.region).services[f"{s.cluster}:{s.service}"]
    sb.complete_ecs_rollout(system.region, s.cluster, s.service)
    if s.target_group:
        svc._opsbook_generation = getattr(svc, "_opsbook_generation", 0) + 1
        _set_targets(sb, system, _target_group(sb, system, s), svc._opsbook_generation, svc.desired_count)


def ecs_rolling_restart(sb: Sandbox, system: System, settle_after_s: float | None = 1.0) -> dict[str, Any]:
    """Forced new deployments of the system's ECS services roll (see the module's docstring)."""
    if not system.ecs_services:
        raise ValueError(f"scenario 'ecs-rolling-restart' needs an ECS service in the inventory of {system.name}")
    backend = sb.backend("ecs", system.region)
    for s in system.ecs_services:
        if s.target_group:
            _set_targets(sb, system, _target_group(sb, system, s), 0, backend.services[f"{s.cluster}:{s.service}"].running_count)
    real = backend.update_service
    specs = {f"{s.cluster}:{s.service}": s for s in system.ecs_services}

    def update_service(service_properties: dict[str, Any]) -> Any:
        key = f"{service_properties.get('cluster', 'default').split('/')[-1]}:{service_properties.get('service', '').split('/')[-1]}"
        forced = bool(service_properties.get("force_new_deployment"))
        svc = backend.services.get(key)
        old = dict(svc.deployments[0]) if svc is not None and svc.deployments else None
        result = real(service_properties)
        if forced and svc is not None and old is not None and key in specs:
            new = svc.deployments[0]
            new.update(status="PRIMARY", rolloutState="IN_PROGRESS", runningCount=0, pendingCount=svc.desired_count,
                       desiredCount=svc.desired_count, rolloutStateReason=f"ECS deployment {new['id']} in progress.")
            old.update(status="ACTIVE", runningCount=svc.running_count, desiredCount=0)
            svc.deployments = [new, old]
            if settle_after_s is not None:
                timer = threading.Timer(settle_after_s, _finish_quietly, args=(sb, system, specs[key], new["id"]))
                timer.daemon = True
                timer.start()
        return result

    backend.update_service = update_service  # an instance attribute: the sandbox's reset clears it
    s = system.ecs_services[0]
    return {"resource": f"{s.cluster}/{s.service}", "settle_after_s": settle_after_s}


def _finish_quietly(sb: Sandbox, system: System, s: EcsService, deployment: str) -> None:
    """The timer's end of a rollout: only when that deployment is still the one rolling (the sandbox may have been reset)."""
    try:
        svc = sb.backend("ecs", system.region).services.get(f"{s.cluster}:{s.service}")
        if svc is not None and svc.deployments and svc.deployments[0].get("id") == deployment:
            finish_rollout(sb, system, s)
    except Exception:  # a reset sandbox: nothing to finish
        pass


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "ecs-rolling-restart": ecs_rolling_restart,
}
