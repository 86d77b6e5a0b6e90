"""IAM roles: what a role's inline and attached policies allow, as statements (read-only).

Not ``opsbook.iam``, which declares the IAM actions of opsbook's own tasks: this module reads the roles of the
system (a Lambda function's execution role, for example).
"""

from __future__ import annotations

import fnmatch
import json
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System, name_matches


class Statement(BaseModel):
    policy: str
    effect: str
    actions: list[str] = Field(default_factory=list)
    not_actions: list[str] = Field(default_factory=list)
    resources: list[str] = Field(default_factory=list)
    conditional: bool = False

    def covers(self, action: str, resource: str | None) -> bool:
        a = action.lower()
        if self.actions and not any(fnmatch.fnmatchcase(a, p.lower()) for p in self.actions):
            return False
        if self.not_actions and any(fnmatch.fnmatchcase(a, p.lower()) for p in self.not_actions):
            return False
        if resource is None:
            return True
        return any(fnmatch.fnmatchcase(resource, p) for p in self.resources)

    def text(self) -> str:
        acts = ", ".join(self.actions) or f"all but {', '.join(self.not_actions)}"
        cond = " (with conditions)" if self.conditional else ""
        return f"{self.effect} {acts} on {', '.join(self.resources) or '*'}{cond} [{self.policy}]"


class RolePolicies(BaseModel):
    role: str
    error: str | None = None
    inline: list[str] = Field(default_factory=list)
    attached: list[str] = Field(default_factory=list)
    statements: list[Statement] = Field(default_factory=list)

    def allows(self, action: str, resource: str | None) -> tuple[list[Statement], list[Statement]]:
        """(Allow statements covering it, Deny statements covering it)."""
        allow = [s for s in self.statements if s.effect == "Allow" and s.covers(action, resource)]
        deny = [s for s in self.statements if s.effect == "Deny" and s.covers(action, resource)]
        return allow, deny


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    return [v] if isinstance(v, str) else [str(x) for x in v]


def statements_of(policy: str, doc: Any) -> list[Statement]:
    if isinstance(doc, str):
        doc = json.loads(unquote(doc))
    stmts = doc.get("Statement", [])
    if isinstance(stmts, dict):
        stmts = [stmts]
    return [Statement(policy=policy, effect=s.get("Effect", "Allow"), actions=_as_list(s.get("Action")), not_actions=_as_list(s.get("NotAction")),
                      resources=_as_list(s.get("Resource")) or (["*"] if "NotResource" not in s else []), conditional=bool(s.get("Condition")))
            for s in stmts]


def read_role(region: str, role: str) -> RolePolicies:
    c = aws.client("iam", region)
    out = RolePolicies(role=role)
    attached = list(aws.paginate(c, "list_attached_role_policies", "AttachedPolicies", RoleName=role))
    out.inline = list(aws.paginate(c, "list_role_policies", "PolicyNames", RoleName=role))
    out.attached = [p["PolicyName"] for p in attached]
    for name in out.inline:
        out.statements += statements_of(name, c.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
    for p in attached:
        version = c.get_policy(PolicyArn=p["PolicyArn"])["Policy"]["DefaultVersionId"]
        doc = c.get_policy_version(PolicyArn=p["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
        out.statements += statements_of(p["PolicyName"], doc)
    return out


@aws_task(iam=["iam:ListAttachedRolePolicies", "iam:ListRolePolicies", "iam:GetRolePolicy", "iam:GetPolicy", "iam:GetPolicyVersion"],
          cache_policy=NO_CACHE)
def read_roles(system: System, roles: list[str], deadline: aws.Deadline) -> dict[str, RolePolicies]:
    """The roles' inline and attached policies as statements (each role read once)."""
    out = {}
    for role, res, err in aws.parallel(lambda r: read_role(system.region, r), sorted(set(roles)), deadline=deadline, max_workers=4):
        out[role] = res if err is None else RolePolicies(role=role, error=aws.describe_error(err))
    return out


# --- which roles exist, created when, last used when (maintenance-audit) ---------------------------


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
