"""KMS: which key an alias names, and whether its automatic rotation is on (read and set)."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.iam import aws_task, declares
from opsbook.inventory import System

ENABLED, DISABLED = "ENABLED", "DISABLED"  # a key's rotation as one comparable value


class KeyRotation(BaseModel):
    alias: str
    key_id: str | None = None
    enabled: bool | None = None
    error: str | None = None


def alias_targets(system: System) -> dict[str, str]:
    c = aws.client("kms", system.region)
    return {a["AliasName"]: a["TargetKeyId"] for a in aws.paginate(c, "list_aliases", "Aliases") if a.get("TargetKeyId")}


def alias_name(alias: str) -> str:
    return alias if alias.startswith("alias/") else f"alias/{alias}"


@aws_task(iam=["kms:ListAliases", "kms:GetKeyRotationStatus"], name="read-kms-rotation", cache_policy=NO_CACHE)
def read_kms_rotation(system: System, deadline: aws.Deadline, only: list[str] | None = None) -> list[KeyRotation]:
    aliases = [a for a in system.audit.kms_key_aliases if only is None or alias_name(a) in only]
    if not aliases:
        return []
    targets = alias_targets(system)
    c = aws.client("kms", system.region)

    def one(alias: str) -> KeyRotation:
        key = targets.get(alias_name(alias))
        if key is None:
            return KeyRotation(alias=alias_name(alias), error="alias not found (ListAliases); check the name in the inventory")
        return KeyRotation(alias=alias_name(alias), key_id=key, enabled=c.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"])

    return [s if err is None else KeyRotation(alias=alias_name(a), error=aws.describe_error(err)) for a, s, err in aws.parallel(one, aliases, deadline=deadline)]


@declares(["kms:ListAliases", "kms:GetKeyRotationStatus"])
def read_key_rotation(system: System, alias: str) -> str:
    key = alias_targets(system).get(alias)
    if key is None:
        raise RuntimeError(f"{alias} not found")
    return ENABLED if aws.client("kms", system.region).get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] else DISABLED


@declares(["kms:ListAliases", "kms:EnableKeyRotation", "kms:DisableKeyRotation"])
def set_key_rotation(system: System, alias: str, value: str) -> None:
    key = alias_targets(system)[alias]
    c = aws.client("kms", system.region)
    (c.enable_key_rotation if value == ENABLED else c.disable_key_rotation)(KeyId=key)
