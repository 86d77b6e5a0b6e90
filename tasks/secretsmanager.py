"""Secrets Manager: a secret's versions and rotation (never its value), and rotating it.

Sources: 001 보안 인시던트 대응 (``aws secretsmanager rotate-secret``). A secret's value
never leaves the function that reads it: these return version ids and yes/no answers only,
and nothing logs a value. Without a rotation function a new random value of the same shape
is put (``new_secret_string``: JSON keys kept, credential strings replaced).
"""

from __future__ import annotations

import json
import secrets
import string
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.iam import aws_task, declares
from opsbook.inventory import System

VIA_ROTATE, VIA_PUT = "RotateSecret", "PutSecretValue"

# Keys of a JSON secret that hold connection settings, not credentials: kept as they are.
CONNECTION_KEYS = frozenset({"host", "hostname", "port", "engine", "dbname", "database", "dbinstanceidentifier",
                             "dbclusteridentifier", "username", "user", "url", "endpoint", "region", "masterarn"})
TOKEN_ALPHABET = string.ascii_letters + string.digits


class SecurityError(RuntimeError):
    """A containment step could not be done; the message says why and what to do."""


# --- a new secret value of the same shape (pure) ------------------------------------------------


def new_token(length: int = 40) -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(max(32, min(length, 4096))))


def _replace(value: Any, key: str, replaced: list[str], kept: list[str], path: str) -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, k, replaced, kept, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, key, replaced, kept, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and key.lower() not in CONNECTION_KEYS:
        replaced.append(path)
        return new_token(len(value))
    kept.append(path)
    return value


def new_secret_string(old: str) -> tuple[str, list[str], list[str]]:
    """(new value, replaced key paths, kept key paths): a JSON object keeps its keys, every credential
    string gets a new random token (connection settings, numbers and booleans are kept); any other
    string becomes a new token. The key paths are names, never values."""
    try:
        doc = json.loads(old)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        replaced: list[str] = []
        kept: list[str] = []
        new = _replace(doc, "", replaced, kept, "")
        if not replaced:
            raise SecurityError("the secret is a JSON object without a credential string to replace (only "
                                f"{', '.join(kept) or 'nothing'}); rotate it with its own rotation function")
        return json.dumps(new), replaced, kept
    return new_token(len(old)), ["(whole value)"], []


def new_secret_binary(old: bytes) -> bytes:
    return secrets.token_bytes(max(32, len(old)))


# --- AWS ---------------------------------------------------------------------------------------------


class SecretState(BaseModel):
    requested: str
    entry: str = ""
    name: str = ""
    arn: str = ""
    current_version: str | None = None
    pending_version: str | None = None
    previous_version: str | None = None
    rotation_enabled: bool = False
    rotation_lambda: str | None = None
    deleted: bool = False
    error: str | None = None

    @property
    def value(self) -> str:
        return version_value(self.current_version)

    @property
    def rotates(self) -> bool:
        """Secrets Manager can rotate it itself (a rotation Lambda, or managed rotation)."""
        return bool(self.rotation_enabled or self.rotation_lambda)


def version_value(version: str | None) -> str:
    return f"AWSCURRENT {version}" if version else "no AWSCURRENT version"


def _stage(stages: dict[str, list[str]], label: str, exclude: str | None = None) -> str | None:
    return next((v for v, s in stages.items() if label in s and v != exclude), None)


@declares(["secretsmanager:DescribeSecret"])
def describe_secret(system: System, secret_id: str) -> SecretState:
    d = aws.client("secretsmanager", system.region).describe_secret(SecretId=secret_id)
    stages = d.get("VersionIdsToStages") or {}
    current = _stage(stages, "AWSCURRENT")
    return SecretState(requested=secret_id, name=d["Name"], arn=d["ARN"], current_version=current,
                       pending_version=_stage(stages, "AWSPENDING", exclude=current), previous_version=_stage(stages, "AWSPREVIOUS"),
                       rotation_enabled=bool(d.get("RotationEnabled")), rotation_lambda=d.get("RotationLambdaARN") or None,
                       deleted=d.get("DeletedDate") is not None)


@declares(["secretsmanager:DescribeSecret"])
def read_secret_version(system: System, name: str) -> str:
    """The applier's read: which version is AWSCURRENT (no value is read)."""
    return describe_secret(system, name).value


def _value(c: Any, name: str, **which: str) -> tuple[str | None, bytes | None]:
    v = c.get_secret_value(SecretId=name, **which)
    return v.get("SecretString"), v.get("SecretBinary")


@declares(["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue",
           "secretsmanager:RotateSecret", "kms:Decrypt", "kms:GenerateDataKey"])
def rotate(system: System, name: str, via: str, expected_current: str) -> tuple[str, str]:
    """Start the rotation; returns (new or pending version id, detail without any value)."""
    c = aws.client("secretsmanager", system.region)
    state = describe_secret(system, name)
    if state.current_version != expected_current:  # changed since the drift check: do not rotate blind
        raise SecurityError(f"AWSCURRENT is now {state.current_version}, not {expected_current}; run again to plan afresh")
    if via == VIA_ROTATE:
        out = c.rotate_secret(SecretId=name, RotateImmediately=True)
        return out["VersionId"], f"RotateSecret started ({state.rotation_lambda or 'managed rotation'}); pending version {out['VersionId']}"
    text, blob = _value(c, name, VersionStage="AWSCURRENT")
    token = str(uuid.uuid4())
    if text is not None:
        new, replaced, kept = new_secret_string(text)
        out = c.put_secret_value(SecretId=name, SecretString=new, ClientRequestToken=token)
        shape = f"new random values for {', '.join(replaced)}" + (f"; kept {', '.join(kept)}" if kept else "")
    else:
        out = c.put_secret_value(SecretId=name, SecretBinary=new_secret_binary(blob or b""), ClientRequestToken=token)
        shape = "new random binary value"
    del text, blob  # the old and new values go out of scope here; nothing else holds them
    return out["VersionId"], f"PutSecretValue: {shape}"


@declares(["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:UpdateSecretVersionStage", "kms:Decrypt"])
def complete_rotation(system: System, name: str, old: str, new: str, timeout_s: float,
                      on_wait: Callable[[float, str], None] | None = None, poll_s: float = 1.0) -> tuple[bool, str, str]:
    """Wait (bounded) until AWSCURRENT is on a new version, check the value changed, take AWSPREVIOUS off the
    old version. Returns (done, the value now as the applier reads it, detail)."""
    c = aws.client("secretsmanager", system.region)
    started = time.monotonic()
    while True:
        state = describe_secret(system, name)
        moved = state.current_version not in (None, old) and state.pending_version is None
        waited = time.monotonic() - started
        if moved or waited >= timeout_s:
            break
        if on_wait:
            on_wait(waited, f"AWSCURRENT still {state.current_version}, AWSPENDING {state.pending_version or new}")
        time.sleep(min(poll_s, max(0.0, timeout_s - waited)))
    if not moved:
        return False, state.value, (f"AWSCURRENT still on {state.current_version} after {timeout_s:g} s"
                                    + (f", AWSPENDING on {state.pending_version}" if state.pending_version else "")
                                    + ": the rotation did not finish; the old credential is still current. Read the rotation "
                                      "function's log, fix it and run again (CancelRotateSecret clears a stuck AWSPENDING)")
    notes = [f"AWSCURRENT moved from {old} to {state.current_version}" + ("" if state.current_version == new else f" (asked for {new})")]
    new_text, new_blob = _value(c, name, VersionStage="AWSCURRENT")
    old_text, old_blob = _value(c, name, VersionId=old)
    differs = (new_text, new_blob) != (old_text, old_blob)
    del new_text, new_blob, old_text, old_blob
    if not differs:
        return False, state.value, "; ".join(notes + ["the new AWSCURRENT value is the SAME as the old one: the credential did not change"])
    notes.append("the new value differs from the old")
    if state.previous_version == old:
        c.update_secret_version_stage(SecretId=name, VersionStage="AWSPREVIOUS", RemoveFromVersionId=old)
        after = describe_secret(system, name)
        if after.previous_version == old:
            return False, after.value, "; ".join(notes + [f"AWSPREVIOUS is still on {old} after removing it"])
        notes.append(f"AWSPREVIOUS removed from {old}: no label can fetch the old value; Secrets Manager keeps the unlabelled "
                     "version (readable by its version id with secretsmanager:GetSecretValue) until it deletes deprecated versions")
    return True, state.value, "; ".join(notes)


@aws_task(iam=["secretsmanager:DescribeSecret"], name="read-secrets", cache_policy=NO_CACHE)
def read_secrets(system: System, wanted: list[tuple[str, str]], deadline: aws.Deadline) -> list[SecretState]:
    """DescribeSecret for each (requested id, inventory entry): versions and rotation, never the value."""

    def one(item: tuple[str, str]) -> SecretState:
        s = describe_secret(system, item[0])
        return s.model_copy(update={"entry": item[1]})

    return [s if err is None else SecretState(requested=item[0], entry=item[1], error=aws.describe_error(err))
            for item, s, err in aws.parallel(one, wanted, deadline=deadline)]


# --- rotation settings and dates (maintenance-audit) ----------------------------------------------


class SecretRotation(BaseModel):
    secret: str
    rotation_enabled: bool = False
    last_rotated: datetime | None = None
    created: datetime | None = None
    error: str | None = None


@aws_task(iam=["secretsmanager:DescribeSecret"], name="read-secret-rotation", cache_policy=NO_CACHE)
def read_secret_rotation(system: System, deadline: aws.Deadline) -> list[SecretRotation]:
    c = aws.client("secretsmanager", system.region)

    def one(name: str) -> SecretRotation:
        d = c.describe_secret(SecretId=name)
        return SecretRotation(secret=name, rotation_enabled=bool(d.get("RotationEnabled")), last_rotated=aws.utc(d.get("LastRotatedDate")),
                              created=aws.utc(d.get("CreatedDate")))

    return [s if err is None else SecretRotation(secret=n, error=aws.describe_error(err))
            for n, s, err in aws.parallel(one, system.audit.secrets, deadline=deadline)]
