"""maintenance-audit scenarios in the sandbox.

Each helper sets up one thing maintenance-audit judges and returns what it
made. Where moto cannot produce a signal the sandbox sets it through moto's
own state, and says so: S3 stamps an object's LastModified with the time of
the PUT (``old_tmp_objects`` moves it back), and IAM's RoleLastUsed is only
set by moto's own STS AssumeRole bookkeeping (``role``, ``used_days_ago``
sets it directly). ACM refuses to import an expired certificate
(``certificate``, ``days_left`` <= 0, swaps it in after the import), and ECR
scan findings come from moto's configurable results (``ecr_image``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.inventory import System
from sandbox.seed import _zip
from sandbox.server import Sandbox, sandbox_client

# Audit events: flagged ones and look-alikes that must not be flagged. The RRN 900101-1234568 has a valid date, gender
# digit 1 and a matching check digit; 901332-1234567 has no 32nd of month 13. 4111 1111 1111 1111 passes Luhn; ...1112 does not.
AUDIT_EVENTS = {
    "rrn": "user registered rrn=900101-1234568 name=kim",
    "rrn-bad-date": "lookup ref 901332-1234567 not found",
    "card": "payment card 4111 1111 1111 1111 accepted",
    "card-bad-luhn": "order number 4111 1111 1111 1112 shipped",
    "password": "login attempt user=lee password=hunter2secret",
    "clean": "case 42 opened by user-7",
}


def log_group(sb: Sandbox, system: System, name: str, retention_days: int | None = None, events: list[str] | None = None,
              hours_ago: float = 1) -> dict[str, Any]:
    """A log group (created when missing) with this retention (None: delete any) and events (stored bytes follow them)."""
    logs = sandbox_client(sb, "logs", system.region)
    if not logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]:
        logs.create_log_group(logGroupName=name)
    if retention_days is None:
        logs.delete_retention_policy(logGroupName=name)
    else:
        logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days)
    if events:
        stream = f"audit-{len(events)}-{int(hours_ago * 60)}"
        logs.create_log_stream(logGroupName=name, logStreamName=stream)
        t0 = int((datetime.now(timezone.utc) - timedelta(hours=hours_ago)).timestamp() * 1000)
        logs.put_log_events(logGroupName=name, logStreamName=stream,
                            logEvents=[{"timestamp": t0 + i, "message": m} for i, m in enumerate(events)])
    return {"resource": name, "retention_days": retention_days}


def audit_events(sb: Sandbox, system: System, kinds: list[str], group: str | None = None) -> dict[str, Any]:
    """Events of ``AUDIT_EVENTS`` kinds in the system's audit log group."""
    g = group or next(x.name for x in system.log_groups if x.audit)
    logs = sandbox_client(sb, "logs", system.region)
    stream = "audit-" + "-".join(kinds)
    logs.create_log_stream(logGroupName=g, logStreamName=stream)
    t0 = int((datetime.now(timezone.utc) - timedelta(hours=2)).timestamp() * 1000)
    logs.put_log_events(logGroupName=g, logStreamName=stream, logEvents=[{"timestamp": t0 + i, "message": AUDIT_EVENTS[k]} for i, k in enumerate(kinds)])
    return {"resource": g, "stream": stream}


def tmp_rule(sb: Sandbox, system: System, days: int = 7, bucket: str | None = None) -> dict[str, Any]:
    b = next(x for x in system.s3_buckets if x.tmp_prefix and (bucket is None or x.name == bucket))
    sandbox_client(sb, "s3", system.region).put_bucket_lifecycle_configuration(Bucket=b.name, LifecycleConfiguration={"Rules": [
        {"ID": "expire-tmp", "Status": "Enabled", "Filter": {"Prefix": b.tmp_prefix}, "Expiration": {"Days": days}}]})
    return {"resource": b.name, "days": days}


def tmp_objects(sb: Sandbox, system: System, count: int = 3, days_old: float = 0, bucket: str | None = None, name: str = "obj") -> dict[str, Any]:
    """Objects under the bucket's tmp prefix, their LastModified moved back ``days_old`` days (moto's state)."""
    b = next(x for x in system.s3_buckets if x.tmp_prefix and (bucket is None or x.name == bucket))
    s3 = sandbox_client(sb, "s3", system.region)
    keys = [f"{b.tmp_prefix}{name}-{i}.bin" for i in range(count)]
    for k in keys:
        s3.put_object(Bucket=b.name, Key=k, Body=b"x" * 100)
    if days_old:
        store = sb.backend("s3", "global").buckets[b.name].keys
        for k in keys:
            key = store[k]
            key.last_modified = key.last_modified - timedelta(days=days_old)
    s3.put_object(Bucket=b.name, Key="uploads/keep.bin", Body=b"y")  # outside the prefix: never listed
    return {"resource": b.name, "keys": keys}


def role(sb: Sandbox, system: System, name: str, used_days_ago: float | None = None, created_days_ago: float = 400) -> dict[str, Any]:
    """An IAM role; its RoleLastUsed and CreateDate set through moto's state."""
    iam = sandbox_client(sb, "iam", system.region)
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    r = next(r for r in sb.backend("iam", "global").roles.values() if r.name == name)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    r.create_date = now - timedelta(days=created_days_ago)
    if used_days_ago is not None:
        r.last_used = now - timedelta(days=used_days_ago)
        r.last_used_region = system.region
    return {"resource": name}


def function_runtime(sb: Sandbox, system: System, function: str, runtime: str = "python3.8") -> dict[str, Any]:
    lam = sandbox_client(sb, "lambda", system.region)
    lam.update_function_configuration(FunctionName=function, Runtime=runtime)
    return {"resource": function, "runtime": runtime}


def function_config(sb: Sandbox, system: System, function: str | None = None, memory_mb: int | None = None,
                    timeout_s: int | None = None) -> dict[str, Any]:
    """A function's memory and/or timeout changed by hand (drifted from the inventory's ``expected_*``). Default: the
    inventory's first function with expected values, its memory a quarter and its timeout a tenth of them."""
    declared = [f for f in system.lambda_functions if f.expected_memory_mb or f.expected_timeout_s]
    spec = next((f for f in system.lambda_functions if f.name == function), None) if function else (declared or [None])[0]
    if spec is None:
        raise ValueError(f"fault 'lambda-config-drift' needs a Lambda function with expected_memory_mb/expected_timeout_s in {system.name}")
    if memory_mb is None and timeout_s is None:
        memory_mb = max(128, spec.expected_memory_mb // 4) if spec.expected_memory_mb else None
        timeout_s = max(1, spec.expected_timeout_s // 10) if spec.expected_timeout_s else None
    change = {k: v for k, v in (("MemorySize", memory_mb), ("Timeout", timeout_s)) if v is not None}
    sandbox_client(sb, "lambda", system.region).update_function_configuration(FunctionName=spec.name, **change)
    return {"resource": spec.name, "memory_mb": memory_mb, "timeout_s": timeout_s}


def kms_key(sb: Sandbox, system: System, alias: str, rotation: bool) -> dict[str, Any]:
    kms = sandbox_client(sb, "kms", system.region)
    key = kms.create_key(Description=f"{system.name} {alias}")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=alias if alias.startswith("alias/") else f"alias/{alias}", TargetKeyId=key)
    if rotation:
        kms.enable_key_rotation(KeyId=key)
    return {"resource": alias, "key_id": key}


def secret(sb: Sandbox, system: System, name: str, created_days_ago: float = 0) -> dict[str, Any]:
    """A secret; its creation date moved back through moto's state (moto stamps the call's time)."""
    sandbox_client(sb, "secretsmanager", system.region).create_secret(Name=name, SecretString="sandbox")
    if created_days_ago:
        backend = sb.backend("secretsmanager", system.region)
        s = backend.secrets[name]
        s.created_date = s.created_date - created_days_ago * 86400
    return {"resource": name}


def security_group(sb: Sandbox, system: System, name: str, open_port: int | None) -> dict[str, Any]:
    ec2 = sandbox_client(sb, "ec2", system.region)
    gid = ec2.create_security_group(GroupName=name, Description="sandbox")["GroupId"]
    if open_port is not None:
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": open_port, "ToPort": open_port, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    else:
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}])
    return {"resource": name, "group_id": gid}


def _self_signed(domain: str, not_before: datetime, not_after: datetime) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False).sign(key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def certificate(sb: Sandbox, system: System, domain: str, days_left: float) -> dict[str, Any]:
    """An imported self-signed certificate for ``domain`` whose NotAfter is ``days_left`` days away (<= 0: expired, set in moto's state)."""
    import cryptography.x509

    now = datetime.now(timezone.utc)
    valid_after = now + timedelta(days=days_left)
    pem, key = _self_signed(domain, now - timedelta(days=400), valid_after if days_left > 0 else now + timedelta(days=1))
    arn = sandbox_client(sb, "acm", system.region).import_certificate(Certificate=pem, PrivateKey=key)["CertificateArn"]
    if days_left <= 0:
        expired, _ = _self_signed(domain, now - timedelta(days=400), valid_after)
        bundle = sb.backend("acm", system.region)._certificates[arn]
        bundle.cert = expired
        bundle._cert = cryptography.x509.load_pem_x509_certificate(expired)
    return {"resource": domain, "arn": arn, "not_after": valid_after}


def ecr_image(sb: Sandbox, system: System, repository: str, tag: str = "latest", counts: dict[str, int] | None = None,
              scan: bool = True) -> dict[str, Any]:
    """A repository (created when missing) with an image; scanned (moto's result set to these severity counts) unless ``scan`` is False."""
    ecr = sandbox_client(sb, "ecr", system.region)
    try:
        ecr.create_repository(repositoryName=repository)
    except ecr.exceptions.RepositoryAlreadyExistsException:
        pass
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7, "digest": "sha256:" + "a" * 64},
                           "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(tag),
                                       "digest": "sha256:" + tag.encode().hex().ljust(64, "0")[:64]}]})
    image = ecr.put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag)["image"]["imageId"]
    if scan:
        ecr.start_image_scan(repositoryName=repository, imageId={"imageDigest": image["imageDigest"]})
        sb.backend("ecr", system.region).scan_finding_results.append({
            "registryId": image.get("registryId", ""), "repositoryName": repository, "imageId": {"imageDigest": image["imageDigest"]},
            "imageScanStatus": {"status": "COMPLETE", "description": "The scan was completed successfully."},
            "imageScanFindings": {"findings": [], "findingSeverityCounts": dict(counts or {})}})
    return {"resource": repository, "image_digest": image["imageDigest"], "counts": counts or {}}


# --- named and tag-discovered resources side by side: what the one resolution must cover ------------------------

DEPRECATED = {"discovered-0": "python3.7", "discovered-1": "nodejs14.x", "discovered-2": "python3.9"}


def audit_hygiene(sb: Sandbox, system: System, faulty: bool = True) -> dict[str, Any]:
    """Tag-only functions and log groups next to the named ones, every log group at the policy's retention; with ``faulty``,
    the planted faults (``planted``: (check, resource) each): deprecated runtimes on a named function, on tag-discovered
    ones and on a named function that lost its discovery tag (still audited: it is named); no retention on a named
    function's group, a tag-discovered function's group and tag-discovered log groups; the ``Team`` tag removed from a
    named function, table and bucket (only a named resource can lack the tag discovery finds them by)."""
    r, tags = system.region, {**system.discovery.tags, "opsbook:system": system.name}
    lam, logs = sandbox_client(sb, "lambda", r), sandbox_client(sb, "logs", r)
    role = sandbox_client(sb, "iam", r).get_role(RoleName=f"{system.name}-lambda-role")["Role"]["Arn"]
    found_fns = [f"{system.name}-{k}" for k in ("discovered-0", "discovered-1", "discovered-2", "discovered-3")]
    found_groups = [f"/{system.name}/discovered-{i}" for i in range(2)]
    for fn in found_fns:
        lam.create_function(FunctionName=fn, Runtime="python3.12", Role=role, Handler="handler.handler", Code={"ZipFile": _zip()}, Tags=tags)
        logs.create_log_group(logGroupName=f"/aws/lambda/{fn}")  # Lambda's own group carries no tag: found through its function
    for g in found_groups:
        logs.create_log_group(logGroupName=g, tags=tags)
    days = system.audit.log_retention_days
    for g in (g for page in logs.get_paginator("describe_log_groups").paginate() for g in page["logGroups"]):
        logs.put_retention_policy(logGroupName=g["logGroupName"], retentionInDays=days)
    if not faulty:
        return {"resource": system.name, "planted": []}
    named = [f.name for f in system.lambda_functions]
    untagged_fn, table, bucket = named[4], system.dynamodb_tables[0].name, system.s3_buckets[2].name
    runtimes = {named[0]: "python3.8", untagged_fn: "nodejs16.x"} | {f"{system.name}-{k}": v for k, v in DEPRECATED.items()}
    for fn, runtime in runtimes.items():
        lam.update_function_configuration(FunctionName=fn, Runtime=runtime)
    no_retention = [f"/aws/lambda/{named[6]}", f"/aws/lambda/{found_fns[3]}", *found_groups]
    for g in no_retention:
        logs.delete_retention_policy(logGroupName=g)
    lam.untag_resource(Resource=lam.get_function(FunctionName=untagged_fn)["Configuration"]["FunctionArn"], TagKeys=list(system.discovery.tags))
    ddb = sandbox_client(sb, "dynamodb", r)
    ddb.untag_resource(ResourceArn=ddb.describe_table(TableName=table)["Table"]["TableArn"], TagKeys=list(system.discovery.tags))
    s3 = sandbox_client(sb, "s3", r)
    kept = [t for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"] if t["Key"] not in system.discovery.tags]
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": kept})
    planted = ([("lambda-runtime", fn) for fn in runtimes] + [("logs-retention", g) for g in no_retention]
               + [("required-tags", f"lambda:{untagged_fn}"), ("required-tags", f"dynamodb:{table}"), ("required-tags", f"s3:{bucket}")])
    return {"resource": system.name, "planted": planted}


__all__ = ["AUDIT_EVENTS", "log_group", "audit_events", "tmp_rule", "tmp_objects", "role", "function_runtime", "kms_key", "secret",
           "security_group", "certificate", "ecr_image", "audit_hygiene", "_zip"]
