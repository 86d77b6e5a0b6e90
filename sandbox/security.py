"""Security-incident scenarios in the sandbox: secrets, bucket policies, Cognito users.

``incident(sb, system)`` builds what security-incident is asked to contain on
a seeded system (``seed_system`` makes the buckets and the Cognito pool, not
secrets, policies or users): each allowed secret with a JSON value of API
keys, a previous bucket policy on the first allowed bucket (none on the
others), and Cognito users. The pieces can be used one by one.

Where moto lacks something the sandbox says so and writes moto's state:

- moto runs no Lambda code, so a rotation Lambda cannot run there.
  ``rotation_lambda`` marks a secret as rotated by a Lambda (RotationEnabled,
  RotationLambdaARN, through moto's backend) and puts a stand-in for that
  Lambda in front of moto's RotateSecret for this secret only: it does what
  a rotation function does (createSecret: a new random value under
  AWSPENDING; a moment later finishSecret: AWSCURRENT moved to it, AWSPREVIOUS
  on the old version), or with ``fail=True`` never finishes (a broken
  rotation function: AWSPENDING stays, AWSCURRENT does not move).
- moto does not evaluate bucket policies, so a locked bucket stays readable
  to the caller in the sandbox (in AWS a caller outside the break-glass
  roles is denied; the runbook says so and reads the policy back where it can).
"""

from __future__ import annotations

import json
import secrets as pysecrets
import threading
import time
import uuid
from typing import Any

from flows.security_incident.judge import allowed_buckets, allowed_secrets, pool_of
from opsbook.inventory import System
from sandbox.server import ACCOUNT_ID, Sandbox, sandbox_client

# A previous policy as a person wrote it: unusual spacing and key order, so
# only a byte-exact restore gives the same text back.
PREVIOUS_POLICY = ('{"Version": "2012-10-17",  "Id": "ProjectsReadOnly", "Statement": [ {"Sid":"AppRead", "Effect":"Allow", '
                   '"Principal": {"AWS": "arn:aws:iam::123456789012:role/{system}-app"}, "Action": ["s3:GetObject"], '
                   '"Resource": "arn:aws:s3:::{bucket}/*"} ]}')
USERS = ["suspicious-user@example.com", "kim.minsu@example.com", "lee-ops"]


def api_keys_value() -> str:
    return json.dumps({"openai_api_key": "sk-" + pysecrets.token_hex(20), "github_token": "ghp_" + pysecrets.token_hex(18),
                       "host": "api.example.com", "port": 443})


def secret(sb: Sandbox, system: System, name: str, value: str | None = None, binary: bytes | None = None) -> dict[str, Any]:
    c = sandbox_client(sb, "secretsmanager", system.region)
    kw: dict[str, Any] = {"SecretBinary": binary} if binary is not None else {"SecretString": value if value is not None else api_keys_value()}
    out = c.create_secret(Name=name, **kw)
    return {"resource": name, "arn": out["ARN"], "version": out["VersionId"]}


def rotation_lambda(sb: Sandbox, system: System, name: str, fail: bool = False, finish_after_s: float = 0.3) -> dict[str, Any]:
    """Mark ``name`` as rotated by a Lambda and stand in for that Lambda (see the module's docstring)."""
    from moto.secretsmanager.exceptions import InvalidRequestException

    backend = sb.backend("secretsmanager", system.region)
    arn = f"arn:aws:lambda:{system.region}:{ACCOUNT_ID}:function:{system.name}-secret-rotator"
    s = backend.secrets[name]
    s.rotation_enabled, s.rotation_lambda_arn, s.auto_rotate_after_days = True, arn, 30
    s.rotation_requested, s.last_rotation_date = True, s.last_rotation_date or s.created_date  # DescribeSecret shows rotation only then
    rotators: dict[str, dict[str, Any]] = backend.__dict__.setdefault("_opsbook_rotators", {})
    rotators[s.name] = {"fail": fail, "finish_after_s": finish_after_s, "calls": 0}
    if "_opsbook_real_rotate" not in backend.__dict__:
        backend._opsbook_real_rotate = backend.rotate_secret

        def rotate_secret(secret_id: str, client_request_token: str | None = None, rotation_lambda_arn: str | None = None,
                          rotation_rules: dict[str, Any] | None = None, rotate_immediately: bool = True) -> str:
            sec = backend.secrets[secret_id] if secret_id in backend.secrets else None
            cfg = rotators.get(sec.name) if sec is not None else None
            if cfg is None:
                return backend._opsbook_real_rotate(secret_id, client_request_token, rotation_lambda_arn, rotation_rules, rotate_immediately)
            current = next(v for v, d in sec.versions.items() if "AWSCURRENT" in d["version_stages"])
            if any("AWSPENDING" in d["version_stages"] and v != current for v, d in sec.versions.items()):
                raise InvalidRequestException("A previous rotation isn't complete. That rotation will be reattempted.")
            cfg["calls"] += 1
            token = client_request_token or str(uuid.uuid4())
            old = sec.versions[current].get("secret_string")
            try:
                doc = json.loads(old) if old else None
            except ValueError:
                doc = None
            new = json.dumps({k: f"rotated-{pysecrets.token_hex(16)}" for k in doc}) if isinstance(doc, dict) else pysecrets.token_hex(24)
            backend.put_secret_value(sec.name, new, None, token, ["AWSPENDING"])  # createSecret

            def finish_secret() -> None:
                backend.update_secret_version_stage(sec.name, "AWSCURRENT", current, token)
                sec.versions[token]["version_stages"] = [st for st in sec.versions[token]["version_stages"] if st != "AWSPENDING"]
                sec.default_version_id, sec.secret_string = token, new
                sec.last_rotation_date = int(time.time())

            if not cfg["fail"]:
                t = threading.Timer(cfg["finish_after_s"], finish_secret)
                t.daemon = True
                t.start()
            return json.dumps({"ARN": sec.arn, "Name": sec.name, "VersionId": token})

        backend.rotate_secret = rotate_secret
    return {"resource": name, "rotation_lambda": arn, "fail": fail}


def rotation_calls(sb: Sandbox, system: System, name: str) -> int:
    return sb.backend("secretsmanager", system.region).__dict__.get("_opsbook_rotators", {}).get(name, {}).get("calls", 0)


def secret_value(sb: Sandbox, system: System, name: str, **which: str) -> str:
    """The value (for the tests' never-shown checks); AWSCURRENT unless a VersionId/VersionStage is given."""
    v = sandbox_client(sb, "secretsmanager", system.region).get_secret_value(SecretId=name, **(which or {"VersionStage": "AWSCURRENT"}))
    return v.get("SecretString") or v["SecretBinary"].hex()


def stages(sb: Sandbox, system: System, name: str) -> dict[str, list[str]]:
    return sandbox_client(sb, "secretsmanager", system.region).describe_secret(SecretId=name)["VersionIdsToStages"]


def bucket_policy(sb: Sandbox, system: System, bucket: str, text: str | None = None) -> dict[str, Any]:
    text = text if text is not None else PREVIOUS_POLICY.replace("{system}", system.name).replace("{bucket}", bucket)
    sandbox_client(sb, "s3", system.region).put_bucket_policy(Bucket=bucket, Policy=text)
    return {"resource": bucket, "policy": text}


def read_bucket_policy(sb: Sandbox, system: System, bucket: str) -> str | None:
    try:
        return sandbox_client(sb, "s3", system.region).get_bucket_policy(Bucket=bucket)["Policy"]
    except Exception as exc:
        if getattr(exc, "response", {}).get("Error", {}).get("Code") == "NoSuchBucketPolicy":
            return None
        raise


def pool_id(sb: Sandbox, system: System) -> str:
    pid, name = pool_of(system)
    if pid:
        return pid
    c = sandbox_client(sb, "cognito-idp", system.region)
    ids = [p["Id"] for p in c.list_user_pools(MaxResults=60)["UserPools"] if p["Name"] == name]
    if not ids:
        raise ValueError(f"{system.name}: no Cognito pool {name!r} in the sandbox (seed the system first)")
    return ids[0]


def cognito_users(sb: Sandbox, system: System, usernames: list[str] | None = None, disabled: tuple[str, ...] = ()) -> dict[str, Any]:
    c = sandbox_client(sb, "cognito-idp", system.region)
    pid = pool_id(sb, system)
    names = usernames or USERS
    for u in names:
        attrs = [{"Name": "email", "Value": u}] if "@" in u else []
        c.admin_create_user(UserPoolId=pid, Username=u, UserAttributes=attrs, MessageAction="SUPPRESS")
        if u in disabled:
            c.admin_disable_user(UserPoolId=pid, Username=u)
    return {"pool_id": pid, "users": names}


def user_enabled(sb: Sandbox, system: System, username: str) -> bool:
    return sandbox_client(sb, "cognito-idp", system.region).admin_get_user(UserPoolId=pool_id(sb, system), Username=username)["Enabled"]


def incident(sb: Sandbox, system: System, rotation: str | None = None) -> dict[str, Any]:
    """Everything security-incident may touch on ``system`` (after ``seed_system``).

    ``rotation``: None (no rotation configured), ``"lambda"`` or ``"lambda-fails"`` for every allowed secret."""
    made: dict[str, Any] = {"secrets": [], "policies": {}, "users": []}
    for name in allowed_secrets(system):
        made["secrets"].append(secret(sb, system, name))
        if rotation:
            rotation_lambda(sb, system, name, fail=rotation == "lambda-fails")
    for i, b in enumerate(allowed_buckets(system)):
        made["policies"][b] = bucket_policy(sb, system, b)["policy"] if i == 0 else None
    if pool_of(system) != (None, None):
        made["users"] = cognito_users(sb, system)["users"]
    return made


def policy_unreadable(sb: Sandbox, system: System, bucket: str) -> dict[str, Any]:
    """GetBucketPolicy on ``bucket`` is denied (AccessDenied), as for a caller without s3:GetBucketPolicy."""
    from moto.s3.exceptions import S3AccessDeniedError

    backend = sb.backend("s3", "aws")  # moto keeps S3 per partition, not per region
    real = backend.get_bucket_policy

    def get_bucket_policy(bucket_name: str) -> Any:
        if bucket_name == bucket:
            raise S3AccessDeniedError()
        return real(bucket_name)

    backend.get_bucket_policy = get_bucket_policy
    return {"resource": bucket}



def secret_writes_fail(sb: Sandbox, system: System, name: str) -> dict[str, Any]:
    """PutSecretValue on ``name`` fails (as with a KMS key the caller may not use): a containment step that fails part-way."""
    from moto.secretsmanager.exceptions import InvalidRequestException

    backend = sb.backend("secretsmanager", system.region)
    real = backend.put_secret_value

    def put_secret_value(secret_id: str, *args: Any, **kwargs: Any) -> Any:
        if secret_id in backend.secrets and backend.secrets[secret_id].name == name:
            raise InvalidRequestException("Access to KMS is not allowed")
        return real(secret_id, *args, **kwargs)

    backend.put_secret_value = put_secret_value
    return {"resource": name}
