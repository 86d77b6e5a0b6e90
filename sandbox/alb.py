"""The ALB in front of a seeded system's ECS services: a load balancer, each service's target group (the inventory's
``target_group``) with two healthy IP targets, and a listener forwarding to it, so the target group has the
CloudWatch dimensions (LoadBalancer, TargetGroup) its ALB metrics are published under. moto publishes no ALB metric:
``sandbox.metrics`` seeds them (``alb_dimensions`` says under which dimensions).
"""

from __future__ import annotations

from typing import Any

from opsbook.inventory import System
from sandbox.server import Sandbox, sandbox_client

TARGETS = 2  # healthy IP targets a target group


def alb_name(system: System) -> str:
    return f"{system.name}-alb"[:32].rstrip("-")


def seed_load_balancers(sb: Sandbox, system: System) -> dict[str, str]:
    """One ALB (two subnets) and, per ECS service with a ``target_group``, that group with healthy targets and a listener
    forwarding to it (port 80, 81, ...); returns target group name -> ARN. Nothing without such a service."""
    groups = [s.target_group for s in system.ecs_services if s.target_group and not s.target_group.startswith("arn:")]
    if not groups:
        return {}
    ec2, elb = sandbox_client(sb, "ec2", system.region), sandbox_client(sb, "elbv2", system.region)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=z)["Subnet"]["SubnetId"] for i, z in enumerate(zones)]
    lb = elb.create_load_balancer(Name=alb_name(system), Subnets=subnets, Scheme="internet-facing", Type="application")["LoadBalancers"][0]
    out = {}
    for port, name in enumerate(groups, start=80):
        arn = elb.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": f"10.0.0.{10 + i}", "Port": 80} for i in range(TARGETS)])
        elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=port,
                            DefaultActions=[{"Type": "forward", "TargetGroupArn": arn}])
        out[name] = arn
    return out


def alb_dimensions(sb: Sandbox, system: System) -> list[dict[str, Any]]:
    """Per seeded target group: its CloudWatch dimension values ``{"target_group": name, "TargetGroup": ..., "LoadBalancer": ...}``."""
    groups = [s.target_group for s in system.ecs_services if s.target_group and not s.target_group.startswith("arn:")]
    if not groups:
        return []
    elb = sandbox_client(sb, "elbv2", system.region)
    out = []
    for tg in elb.describe_target_groups(Names=groups)["TargetGroups"]:
        for lb in tg.get("LoadBalancerArns") or []:
            out.append({"target_group": tg["TargetGroupName"], "TargetGroup": tg["TargetGroupArn"].split(":", 5)[-1],
                        "LoadBalancer": lb.split(":", 5)[-1].removeprefix("loadbalancer/")})
    return out


def target_group_missing(sb: Sandbox, system: System) -> dict[str, Any]:
    """The first service's target group deleted (its listener first): what an inventory naming a wrong group reads."""
    name = next((s.target_group for s in system.ecs_services if s.target_group), None)
    if name is None:
        raise ValueError(f"fault 'alb-target-group-missing' needs an ECS service with a target_group in the inventory of {system.name}")
    elb = sandbox_client(sb, "elbv2", system.region)
    arn = elb.describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"]
    for lb in elb.describe_load_balancers()["LoadBalancers"]:
        for listener in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]:
            if any(a.get("TargetGroupArn") == arn for a in listener.get("DefaultActions", [])):
                elb.delete_listener(ListenerArn=listener["ListenerArn"])
    elb.delete_target_group(TargetGroupArn=arn)
    return {"resource": name}
