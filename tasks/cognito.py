"""Cognito user pools: find the inventory's pool, read, disable/enable and sign out a user.

Source: 002 Cognito 사용자 관리 (``admin-get-user`` / ``admin-disable-user``). A username is
personal data: what these return for showing names a user by a pseudonym (``subject_id``);
the username itself is only for the calls and the durable record an undo needs.
"""

from __future__ import annotations

import hashlib

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.iam import aws_task, declares
from opsbook.inventory import System


def pool_of(system: System) -> tuple[str | None, str | None]:
    """(user_pool_id, user_pool_name) the inventory names, either may be None."""
    if system.cognito and (system.cognito.user_pool_id or system.cognito.user_pool_name):
        return system.cognito.user_pool_id, system.cognito.user_pool_name
    if system.bill_shock and system.bill_shock.cognito_user_pool:
        return None, system.bill_shock.cognito_user_pool
    return None, None


def subject_id(pool_name: str, pool_id: str, username: str) -> str:
    """A user's pseudonym in everything the run shows: stable per pool and user, not the username."""
    digest = hashlib.sha256(f"{pool_id}:{username}".encode()).hexdigest()[:8]
    return f"{pool_name}/{username[:1]}***#{digest}"


@declares(["cognito-idp:ListUserPools"])
def find_user_pool(system: System) -> tuple[str, str]:
    """(pool id, pool name) of the inventory's user pool; LookupError with the reason when there is none."""
    pool_id, pool_name = pool_of(system)
    if pool_id:
        return pool_id, pool_name or pool_id
    if not pool_name:
        raise LookupError(f"{system.name}'s inventory names no Cognito user pool (cognito.user_pool_name or user_pool_id)")
    c = aws.client("cognito-idp", system.region)
    ids = [p["Id"] for p in aws.paginate(c, "list_user_pools", "UserPools", MaxResults=60) if p["Name"] == pool_name]
    if not ids:
        raise LookupError(f"Cognito user pool {pool_name!r} not found in {system.region}")
    if len(ids) > 1:
        raise LookupError(f"{len(ids)} Cognito user pools are named {pool_name!r} in {system.region} ({', '.join(ids)}); "
                          "put the right one in the inventory as cognito.user_pool_id")
    return ids[0], pool_name


@declares(["cognito-idp:AdminGetUser"])
def read_user(system: System, pool_id: str, username: str) -> tuple[str, bool]:
    """(the pool's own username for this user, enabled)."""
    u = aws.client("cognito-idp", system.region).admin_get_user(UserPoolId=pool_id, Username=username)
    return u["Username"], bool(u.get("Enabled", True))


def account_state(system: System, pool_id: str, username: str) -> str:
    """enabled / disabled."""
    return "enabled" if read_user(system, pool_id, username)[1] else "disabled"


@declares(["cognito-idp:AdminDisableUser", "cognito-idp:AdminEnableUser"])
def set_user(system: System, pool_id: str, username: str, enabled: bool) -> None:
    c = aws.client("cognito-idp", system.region)
    if enabled:
        c.admin_enable_user(UserPoolId=pool_id, Username=username)
    else:
        c.admin_disable_user(UserPoolId=pool_id, Username=username)


@declares(["cognito-idp:AdminUserGlobalSignOut"])
def sign_out_everywhere(system: System, pool_id: str, username: str) -> None:
    aws.client("cognito-idp", system.region).admin_user_global_sign_out(UserPoolId=pool_id, Username=username)


class UserState(BaseModel):
    index: int
    subject: str = ""
    pool_id: str = ""
    pool_name: str = ""
    username: str = ""  # personal data: never shown; kept for the act and the durable subjects record
    enabled: bool | None = None
    error: str | None = None


@aws_task(iam=["cognito-idp:ListUserPools", "cognito-idp:AdminGetUser"], name="read-cognito-users", cache_policy=NO_CACHE)
def read_users(system: System, usernames: list[str], deadline: aws.Deadline) -> list[UserState]:
    """Resolve the pool once, then AdminGetUser for each requested user (errors say why, usernames masked)."""
    if not usernames:
        return []
    try:
        pool_id, pool_name = find_user_pool(system)
    except LookupError as exc:
        return [UserState(index=i, error=str(exc)) for i in range(len(usernames))]

    def one(i: int) -> UserState:
        name, enabled = read_user(system, pool_id, usernames[i])
        return UserState(index=i, subject=subject_id(pool_name, pool_id, name), pool_id=pool_id, pool_name=pool_name,
                         username=name, enabled=enabled)

    out = []
    for i, u, err in aws.parallel(one, range(len(usernames)), deadline=deadline):
        if err is None:
            out.append(u)
        elif aws.error_code(err) == "UserNotFoundException":
            out.append(UserState(index=i, pool_id=pool_id, pool_name=pool_name, error=f"no such user in the pool {pool_name} ({pool_id})"))
        else:
            out.append(UserState(index=i, pool_id=pool_id, pool_name=pool_name, error=aws.describe_error(err)))
    return out
