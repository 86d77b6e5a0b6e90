"""IAM roles: which exist (by name pattern), when each was created and last used. Reads only; the framework's
declaration of a task's IAM actions is opsbook.iam."""

from __future__ import annotations

from datetime import datetime

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System, name_matches


class RoleUse(BaseModel):
    role: str
    created: datetime | None = None
    last_used: datetime | None = None
    error: str | None = None


@aws_task(iam=["iam:ListRoles", "iam:GetRole"], name="read-iam-roles", cache_policy=NO_CACHE)
def read_iam_roles(system: System, deadline: aws.Deadline) -> list[RoleUse]:
    """The roles matching ``audit.iam_role_patterns`` (ListRoles carries no RoleLastUsed: GetRole does)."""
    if not system.audit.iam_role_patterns:
        return []
    c = aws.client("iam", system.region)
    names = [r["RoleName"] for r in aws.paginate(c, "list_roles", "Roles")
             if any(name_matches(p, r["RoleName"]) for p in system.audit.iam_role_patterns)]

    def one(name: str) -> RoleUse:
        r = c.get_role(RoleName=name)["Role"]
        return RoleUse(role=name, created=aws.utc(r.get("CreateDate")), last_used=aws.utc((r.get("RoleLastUsed") or {}).get("LastUsedDate")))

    return [s if err is None else RoleUse(role=n, error=aws.describe_error(err)) for n, s, err in aws.parallel(one, sorted(names), deadline=deadline)]
