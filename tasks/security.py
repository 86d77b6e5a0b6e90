"""Security-incident containment: rotate a secret, lock a bucket, disable a Cognito user.

Sources: 001 보안 인시던트 대응 (``aws secretsmanager rotate-secret``, the
emergency deny-all bucket policy), 002 Cognito 사용자 관리
(``admin-get-user`` / ``admin-disable-user``).

Pure helpers (unit-tested without AWS) decide what is allowed and build the
deny policy and the replacement secret value; the AWS helpers read and set
one resource each and declare their IAM actions. The read tasks at the end
feed ``flows/security_incident/flow.py``.

Three rules hold everywhere here:

- a secret's value never leaves the function that reads it: tasks return
  version ids and yes/no answers only, and nothing logs a value;
- a Cognito username is personal data: everything the run shows (plan,
  records, findings, messages) names a user by a pseudonym
  ``<pool>/<first letter>***#<hash>``; only the durable record keeps the
  username (the undo needs it), in a separate ``security-incident:subjects``
  item of the state table;
- a bucket's previous policy is kept exactly as S3 returned it (the action's
  ``current`` and the record's ``before``), so the undo puts back the same bytes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import secrets
import string
import time
import uuid
from collections.abc import Callable
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.iam import aws_task, declares
from opsbook.inventory import EscalationLevel, System
from opsbook.mutation.core import Applier

RUNBOOK = "security-incident"
ROTATE, LOCK, DISABLE, SIGN_OUT = "secret-rotation", "bucket-lock", "cognito-user-disabled", "cognito-sign-out"
SUBJECTS = f"{RUNBOOK}:subjects"  # durable items mapping a user's pseudonym to the username (for the undo)
NO_POLICY = "(no bucket policy)"
DENY_SID = "OpsbookEmergencyDenyAll"
VIA_ROTATE, VIA_PUT = "RotateSecret", "PutSecretValue"

# Keys of a JSON secret that hold connection settings, not credentials: kept as they are.
CONNECTION_KEYS = frozenset({"host", "hostname", "port", "engine", "dbname", "database", "dbinstanceidentifier",
                             "dbclusteridentifier", "username", "user", "url", "endpoint", "region", "masterarn"})
TOKEN_ALPHABET = string.ascii_letters + string.digits


class SecurityError(RuntimeError):
    """A containment step could not be done; the message says why and what to do."""


# --- pure: what is allowed ------------------------------------------------------------------


def allowed_secrets(system: System) -> list[str]:
    return list(system.security.secrets or system.audit.secrets)


def allowed_buckets(system: System) -> list[str]:
    return list(system.security.buckets or [b.name for b in system.s3_buckets])


def match_secret(requested: str, allowed: list[str]) -> str | None:
    """The inventory entry a requested secret name or ARN stands for, or None.

    An ARN matches an entry by its name part (Secrets Manager appends ``-`` and
    6 random characters to the name in the ARN)."""
    for entry in allowed:
        if requested == entry:
            return entry
        if requested.startswith("arn:") and ":secret:" in requested:
            tail = requested.split(":secret:", 1)[1]
            if tail == entry or re.fullmatch(re.escape(entry) + r"-[A-Za-z0-9]{6}", tail):
                return entry
    return None


def match_bucket(requested: str, allowed: list[str]) -> str | None:
    name = requested.removeprefix("arn:aws:s3:::").removeprefix("s3://").rstrip("/")
    return name if name in allowed else None


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


def security_escalation(system: System) -> tuple[EscalationLevel | None, str]:
    """The inventory's escalation entry for a security incident, and the line to send."""
    for e in system.escalation:
        text = f"{e.level} {e.when}".lower()
        if "security" in text or "보안" in text:
            return e, f"escalate to {e.level}: {e.who} (respond within {e.respond_within_minutes} min)"
    if system.escalation:
        first = min(system.escalation, key=lambda e: e.respond_within_minutes)
        return None, (f"the inventory has no escalation level for security incidents (a level named 'security' or with "
                      f"'security' in `when`); its most urgent is {first.level}: {first.who} "
                      f"({first.respond_within_minutes} min): escalate there and add a security level")
    return None, "the inventory names no escalation levels: add one for security incidents"


# --- pure: the deny-all policy ---------------------------------------------------------------


def partition_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[1] if len(parts) > 2 and parts[0] == "arn" else "aws"


def role_arn(entry: str, account: str, partition: str = "aws") -> str:
    """A break-glass role as an ARN: a bare name (or path/name) is completed with the caller's account."""
    if entry.startswith("arn:"):
        return entry
    return f"arn:{partition}:iam::{account}:role/{entry.strip('/')}"


def deny_policy(bucket: str, exempt_arns: list[str], partition: str = "aws") -> str:
    """Deny every S3 action on the bucket and its objects to every principal except the break-glass roles."""
    if not exempt_arns:
        raise ValueError("a deny-all policy without a break-glass role would lock everyone out")
    arn = f"arn:{partition}:s3:::{bucket}"
    doc = {"Version": "2012-10-17", "Statement": [{
        "Sid": DENY_SID, "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": [arn, f"{arn}/*"],
        "Condition": {"ArnNotLike": {"aws:PrincipalArn": sorted(exempt_arns)}}}]}
    return json.dumps(doc, separators=(",", ":"))


def same_policy(a: str, b: str) -> bool:
    """Exactly the same text, or the same JSON document (S3 may re-format what it stores)."""
    if a == b:
        return True
    if NO_POLICY in (a, b):
        return False
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


def is_our_lock(policy: str) -> bool:
    try:
        stmts = json.loads(policy).get("Statement", [])
    except (ValueError, AttributeError):
        return False
    return any(isinstance(s, dict) and s.get("Sid") == DENY_SID for s in (stmts if isinstance(stmts, list) else [stmts]))


def caller_exempt(caller_arn: str, exempt_arns: list[str]) -> bool:
    """Does ``aws:PrincipalArn`` of this caller match one of the break-glass ARN patterns (ArnLike)?

    An assumed-role session (``arn:aws:sts::A:assumed-role/NAME/session``) is the
    role ``arn:aws:iam::A:role/[path/]NAME``; STS drops the path, so a pattern
    matches when its account and role name match."""
    parts = caller_arn.split(":", 5)
    if len(parts) < 6:
        return False
    partition, service, account, res = parts[1], parts[2], parts[4], parts[5]
    if service == "sts" and res.startswith("assumed-role/"):
        name = res.split("/")[1]
        principal = f"arn:{partition}:iam::{account}:role/{name}"
        for p in exempt_arns:
            if fnmatch.fnmatchcase(principal, p):
                return True
            pp = p.split(":", 5)
            if len(pp) == 6 and pp[5].startswith("role/") and fnmatch.fnmatchcase(account, pp[4]) \
                    and fnmatch.fnmatchcase(name, pp[5].rsplit("/", 1)[-1]):
                return True
        return False
    return any(fnmatch.fnmatchcase(caller_arn, p) for p in exempt_arns)


# --- pure: a new secret value of the same shape -----------------------------------------------


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


# --- AWS: secrets --------------------------------------------------------------------------------


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


# --- AWS: bucket policy --------------------------------------------------------------------------


@declares(["s3:GetBucketPolicy"])
def read_policy(system: System, bucket: str) -> str:
    """The bucket policy exactly as S3 returns it, or NO_POLICY."""
    try:
        return aws.client("s3", system.region).get_bucket_policy(Bucket=bucket)["Policy"]
    except Exception as exc:
        if aws.error_code(exc) == "NoSuchBucketPolicy":
            return NO_POLICY
        raise


@declares(["s3:PutBucketPolicy", "s3:DeleteBucketPolicy"])
def set_policy(system: System, bucket: str, value: str) -> None:
    s3 = aws.client("s3", system.region)
    if value == NO_POLICY:
        s3.delete_bucket_policy(Bucket=bucket)  # no error when there is none: idempotent
    else:
        s3.put_bucket_policy(Bucket=bucket, Policy=value)


# --- AWS: Cognito ------------------------------------------------------------------------------------


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


# --- appliers (drift check, undo) ----------------------------------------------------------------------


def appliers(subjects: dict[str, dict[str, str]], lenient: bool = False) -> dict[str, Applier]:
    """How each kind is read and set. ``subjects``: pseudonym -> {pool_id, username}.

    ``lenient`` (the undo's plan): a read that fails gives ``unreadable (why)``,
    which undo_plan then reports as a resource it cannot put back."""

    def guard(read: Callable[[System, str], str], kind: str) -> Callable[[System, str], str]:
        def wrapped(system: System, resource: str) -> str:
            try:
                return read(system, resource)
            except Exception as exc:
                if not lenient:
                    raise
                why = aws.describe_error(exc) if not isinstance(exc, KeyError) else f"no username recorded for {resource}"
                if kind == LOCK and aws.error_code(exc) in ("AccessDenied", "AccessDeniedException"):
                    why += "; the bucket is locked against this caller: run the undo as a break-glass role"
                return f"unreadable ({why})"
        return wrapped

    def user_read(system: System, resource: str) -> str:
        s = subjects[resource]
        return "enabled" if read_user(system, s["pool_id"], s["username"])[1] else "disabled"

    def user_apply(system: System, resource: str, value: str) -> None:
        s = subjects[resource]
        set_user(system, s["pool_id"], s["username"], value == "enabled")

    def no_apply(system: System, resource: str, value: str) -> None:
        raise SecurityError("a secret rotation is never undone: the old credential must not come back")

    return {ROTATE: Applier(read=guard(read_secret_version, ROTATE), apply=no_apply),
            LOCK: Applier(read=guard(read_policy, LOCK), apply=set_policy),
            DISABLE: Applier(read=guard(user_read, DISABLE), apply=user_apply)}


# --- read tasks -------------------------------------------------------------------------------------------


class BucketState(BaseModel):
    bucket: str
    policy: str | None = None
    error: str | None = None


class UserState(BaseModel):
    index: int
    subject: str = ""
    pool_id: str = ""
    pool_name: str = ""
    username: str = ""  # personal data: never shown; kept for the act and the durable subjects record
    enabled: bool | None = None
    error: str | None = None


@aws_task(iam=["secretsmanager:DescribeSecret"], name="read-secrets", cache_policy=NO_CACHE)
def read_secrets(system: System, wanted: list[tuple[str, str]], deadline: aws.Deadline) -> list[SecretState]:
    """DescribeSecret for each (requested id, inventory entry): versions and rotation, never the value."""

    def one(item: tuple[str, str]) -> SecretState:
        s = describe_secret(system, item[0])
        return s.model_copy(update={"entry": item[1]})

    return [s if err is None else SecretState(requested=item[0], entry=item[1], error=aws.describe_error(err))
            for item, s, err in aws.parallel(one, wanted, deadline=deadline)]


@aws_task(iam=["s3:GetBucketPolicy"], name="read-bucket-policies", cache_policy=NO_CACHE)
def read_bucket_policies(system: System, buckets: list[str], deadline: aws.Deadline) -> list[BucketState]:
    return [BucketState(bucket=b, policy=p) if err is None else BucketState(bucket=b, error=aws.describe_error(err))
            for b, p, err in aws.parallel(lambda b: read_policy(system, b), buckets, deadline=deadline)]


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


def subject_label(index: int, username: str) -> str:
    """How a requested user is named before it is resolved (no username)."""
    return f"disable_users[{index}] ({username[:1]}***)"
