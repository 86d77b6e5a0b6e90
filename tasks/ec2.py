"""EC2: security groups (by name pattern) and their inbound rules, one rule a source CIDR."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System, name_matches


class IngressRule(BaseModel):
    protocol: str  # "-1": all traffic
    from_port: int | None = None
    to_port: int | None = None
    cidr: str  # IPv4 or IPv6 source range


class SecurityGroup(BaseModel):
    group_id: str
    name: str
    ingress: list[IngressRule] = Field(default_factory=list)


def ingress_rules(group: dict) -> list[IngressRule]:
    """Every (permission, source range) of a DescribeSecurityGroups group, in the API's order."""
    out = []
    for p in group.get("IpPermissions", []):
        cidrs = [r.get("CidrIp") for r in p.get("IpRanges", [])] + [r.get("CidrIpv6") for r in p.get("Ipv6Ranges", [])]
        out += [IngressRule(protocol=p.get("IpProtocol", "-1"), from_port=p.get("FromPort"), to_port=p.get("ToPort"), cidr=c) for c in cidrs if c]
    return out


@aws_task(iam=["ec2:DescribeSecurityGroups"], name="read-security-groups", cache_policy=NO_CACHE)
def read_security_groups(system: System) -> list[SecurityGroup]:
    if not system.audit.security_group_patterns:
        return []
    c = aws.client("ec2", system.region)
    return [SecurityGroup(group_id=g["GroupId"], name=g.get("GroupName", ""), ingress=ingress_rules(g))
            for g in aws.paginate(c, "describe_security_groups", "SecurityGroups")
            if any(name_matches(p, g.get("GroupName", "")) for p in system.audit.security_group_patterns)]
