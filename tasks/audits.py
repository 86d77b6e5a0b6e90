"""maintenance-audit: collection (one task a concern, read concurrently) and pure judges.

Sources: 000 데이터 정리 (log retention 30 days) and 보안 운영 (IAM roles,
tags, Lambda runtimes, KMS rotation), 001 월간 유지보수 / 일일 보안 점검
(log cleanup, security groups, secrets rotation), 003 정기 점검 (S3 tmp/
lifecycle, RDS snapshots, audit-log PII sampling).

Collectors return pydantic models (raw API dicts stop here); a failure of one
resource is that model's ``error`` (an UNKNOWN finding), never an empty pass.
Judges are pure functions from those models to findings.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import ClientError
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws, pii
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, name_matches
from opsbook.mutation.core import Applier

RETENTION = "logs-retention"
KMS_ROTATION = "kms-rotation"
NONE = "none"
AUDIT_LOOKBACK_DAYS = 7
AUDIT_MAX_EVENTS_READ = 10_000  # a bound on what one run reads a log group for its sample

# AWS Lambda runtime deprecation dates (docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html, as published by
# 2025-11: python3.9 moved to 2025-12-15, nodejs18.x deprecated 2025-09-01). Inventory `audit.runtime_deprecations` overrides.
RUNTIME_DEPRECATIONS: dict[str, str] = {
    "python2.7": "2021-07-15", "python3.6": "2022-07-18", "python3.7": "2023-12-04", "python3.8": "2024-10-14",
    "python3.9": "2025-12-15", "python3.10": "2026-06-30", "python3.11": "2026-06-30",
    "nodejs12.x": "2023-03-31", "nodejs14.x": "2023-12-04", "nodejs16.x": "2024-06-12", "nodejs18.x": "2025-09-01",
    "java8": "2024-01-08", "go1.x": "2024-01-08", "ruby2.7": "2023-12-07", "dotnet6": "2024-12-20", "dotnetcore3.1": "2023-04-03",
    "provided": "2024-01-08",
}


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# --- models -------------------------------------------------------------------------------


class LogGroupState(BaseModel):
    name: str
    audit: bool = False
    named: bool = True  # listed in the inventory (else a function's default group)
    exists: bool = True
    retention_days: int | None = None
    stored_bytes: int = 0
    error: str | None = None


class TmpPrefix(BaseModel):
    bucket: str
    prefix: str
    rule_id: str | None = None
    rule_days: int | None = None
    lifecycle_error: str | None = None
    objects: int = 0
    old_objects: int = 0
    old_bytes: int = 0
    oldest_days: float | None = None
    limit_days: int = 7
    error: str | None = None


class AuditSample(BaseModel):
    log_group: str
    read: int = 0
    sampled: int = 0
    truncated: bool = False
    hits: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None


class FunctionRuntime(BaseModel):
    function: str
    runtime: str | None = None
    package_type: str | None = None
    error: str | None = None


class RoleUse(BaseModel):
    role: str
    created: datetime | None = None
    last_used: datetime | None = None
    error: str | None = None


class ResourceTags(BaseModel):
    kind: str
    name: str
    tags: dict[str, str] = Field(default_factory=dict)


class KeyRotation(BaseModel):
    alias: str
    key_id: str | None = None
    enabled: bool | None = None
    error: str | None = None


class SecretRotation(BaseModel):
    secret: str
    rotation_enabled: bool = False
    last_rotated: datetime | None = None
    created: datetime | None = None
    error: str | None = None


class OpenGroup(BaseModel):
    group_id: str
    name: str
    open_rules: list[str] = Field(default_factory=list)


class CertificateState(BaseModel):
    domain: str
    arn: str | None = None  # None: no certificate for the domain
    status: str | None = None
    not_after: datetime | None = None
    in_use_by: int = 0
    error: str | None = None


class ImageScan(BaseModel):
    repository: str
    exists: bool = True
    image: str | None = None  # tag or digest of the latest pushed image; None: no image
    pushed: datetime | None = None
    scan_status: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    reason: str | None = None  # why there are no findings (no scan, scan failed)
    error: str | None = None


# --- collect -------------------------------------------------------------------------------


def log_groups_of(system: System) -> list[tuple[str, bool, bool]]:
    """(name, audit, named in the inventory) for every function's group and the inventory's groups."""
    explicit = {g.name for g in system.log_groups}
    return [(g.name, g.audit, g.name in explicit) for g in system.all_log_groups()]


def _read_log_group(system: System, name: str, audit: bool, named: bool) -> LogGroupState:
    c = aws.client("logs", system.region)
    for g in aws.paginate(c, "describe_log_groups", "logGroups", logGroupNamePrefix=name):
        if g["logGroupName"] == name:
            return LogGroupState(name=name, audit=audit, named=named, retention_days=g.get("retentionInDays"), stored_bytes=g.get("storedBytes", 0))
    return LogGroupState(name=name, audit=audit, named=named, exists=False)


@aws_task(iam=["logs:DescribeLogGroups"], name="read-log-retention", cache_policy=NO_CACHE)
def read_log_retention(system: System, deadline: aws.Deadline, only: list[str] | None = None) -> list[LogGroupState]:
    groups = [g for g in log_groups_of(system) if only is None or g[0] in only]
    return [s if err is None else LogGroupState(name=g[0], audit=g[1], named=g[2], error=aws.describe_error(err))
            for g, s, err in aws.parallel(lambda g: _read_log_group(system, *g), groups, deadline=deadline)]


def _lifecycle_rule(rules: list[dict[str, Any]], prefix: str) -> tuple[str | None, int | None]:
    """The enabled rule that expires objects under ``prefix`` (its filter prefix covers it), and its days."""
    for r in rules:
        if r.get("Status") != "Enabled" or not r.get("Expiration", {}).get("Days"):
            continue
        flt = r.get("Filter", {})
        rule_prefix = flt.get("Prefix", flt.get("And", {}).get("Prefix", r.get("Prefix", "")))
        if "Tag" in flt or flt.get("And", {}).get("Tags"):
            continue  # a tag filter does not expire every tmp object
        if prefix.startswith(rule_prefix or ""):
            return r.get("ID"), int(r["Expiration"]["Days"])
    return None, None


def _read_tmp(system: System, bucket: str, prefix: str, now: datetime) -> TmpPrefix:
    c = aws.client("s3", system.region)
    s = TmpPrefix(bucket=bucket, prefix=prefix, limit_days=system.audit.tmp_max_age_days)
    try:
        rules = c.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
        s.rule_id, s.rule_days = _lifecycle_rule(rules, prefix)
    except ClientError as exc:
        if aws.error_code(exc) != "NoSuchLifecycleConfiguration":
            s.lifecycle_error = aws.describe_error(exc)
    # expiry runs once a day: a day's grace on top of the rule's own days
    s.limit_days = s.rule_days + 1 if s.rule_days else system.audit.tmp_max_age_days
    cutoff = now - timedelta(days=s.limit_days)
    for o in aws.paginate(c, "list_objects_v2", "Contents", Bucket=bucket, Prefix=prefix):
        s.objects += 1
        modified = _utc(o["LastModified"])
        age = (now - modified).total_seconds() / 86400
        s.oldest_days = max(s.oldest_days or 0.0, age)
        if modified < cutoff:
            s.old_objects += 1
            s.old_bytes += o.get("Size", 0)
    return s


@aws_task(iam=["s3:GetLifecycleConfiguration", "s3:ListBucket"], name="read-tmp-prefixes", cache_policy=NO_CACHE)
def read_tmp_prefixes(system: System, deadline: aws.Deadline) -> list[TmpPrefix]:
    now = datetime.now(timezone.utc)
    buckets = [b for b in system.s3_buckets if b.tmp_prefix]
    return [s if err is None else TmpPrefix(bucket=b.name, prefix=b.tmp_prefix or "", error=aws.describe_error(err))
            for b, s, err in aws.parallel(lambda b: _read_tmp(system, b.name, b.tmp_prefix, now), buckets, deadline=deadline)]


def _read_audit_events(system: System, group: str, now: datetime) -> AuditSample:
    c = aws.client("logs", system.region)
    start = int((now - timedelta(days=AUDIT_LOOKBACK_DAYS)).timestamp() * 1000)
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start, "endTime": int(now.timestamp() * 1000)}
    truncated = False
    while True:
        page = c.filter_log_events(**kwargs)
        events += [{k: e.get(k) for k in ("logStreamName", "timestamp", "message", "eventId")} for e in page.get("events", [])]
        token = page.get("nextToken")
        if not token:
            break
        if len(events) >= AUDIT_MAX_EVENTS_READ:
            truncated = True
            break
        kwargs["nextToken"] = token
    picked = pii.sample(events, system.audit.audit_sample_size, system.audit.audit_sample_seed)
    return AuditSample(log_group=group, read=len(events), sampled=len(picked), truncated=truncated, hits=pii.hits(group, picked))


@aws_task(iam=["logs:FilterLogEvents"], name="sample-audit-logs", cache_policy=NO_CACHE)
def sample_audit_logs(system: System, deadline: aws.Deadline) -> list[AuditSample]:
    now = datetime.now(timezone.utc)
    groups = [g.name for g in system.log_groups if g.audit]
    return [s if err is None else AuditSample(log_group=g, error=aws.describe_error(err))
            for g, s, err in aws.parallel(lambda g: _read_audit_events(system, g, now), groups, deadline=deadline)]


@aws_task(iam=["lambda:GetFunctionConfiguration"], name="read-runtimes", cache_policy=NO_CACHE)
def read_runtimes(system: System, deadline: aws.Deadline) -> list[FunctionRuntime]:
    c = aws.client("lambda", system.region)

    def one(name: str) -> FunctionRuntime:
        cfg = c.get_function_configuration(FunctionName=name)
        return FunctionRuntime(function=name, runtime=cfg.get("Runtime"), package_type=cfg.get("PackageType"))

    names = [f.name for f in system.lambda_functions]
    return [s if err is None else FunctionRuntime(function=n, error=aws.describe_error(err)) for n, s, err in aws.parallel(one, names, deadline=deadline)]


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
        return RoleUse(role=name, created=_utc(r.get("CreateDate")), last_used=_utc((r.get("RoleLastUsed") or {}).get("LastUsedDate")))

    return [s if err is None else RoleUse(role=n, error=aws.describe_error(err)) for n, s, err in aws.parallel(one, sorted(names), deadline=deadline)]


TAG_TYPES = {"lambda:function": "lambda", "dynamodb:table": "dynamodb", "s3:bucket": "s3", "sqs:queue": "sqs", "logs:log-group": "logs"}


def _name_of(arn: str) -> tuple[str, str] | None:
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return None
    service, res = parts[2], parts[5]
    if service == "lambda" and res.startswith("function:"):
        return "lambda", res.split(":")[1]
    if service == "dynamodb" and res.startswith("table/") and "/" not in res[6:]:
        return "dynamodb", res[6:]
    if service == "s3" and "/" not in res:
        return "s3", res
    if service == "sqs":
        return "sqs", res
    if service == "logs" and res.startswith("log-group:"):
        return "logs", res[len("log-group:"):].removesuffix(":*")
    return None


def system_resources(system: System) -> list[tuple[str, str]]:
    return ([("lambda", f.name) for f in system.lambda_functions] + [("dynamodb", t.name) for t in system.dynamodb_tables]
            + [("s3", b.name) for b in system.s3_buckets] + [("sqs", q.name) for q in system.sqs_queues])


@aws_task(iam=["tag:GetResources"], name="read-resource-tags", cache_policy=NO_CACHE)
def read_resource_tags(system: System) -> list[ResourceTags]:
    """Tags of the system's functions, tables, buckets and queues (one paged GetResources: an untagged resource is absent)."""
    if not system.audit.required_tags:
        return []
    c = aws.client("resourcegroupstaggingapi", system.region)
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for r in aws.paginate(c, "get_resources", "ResourceTagMappingList", ResourceTypeFilters=list(TAG_TYPES)):
        key = _name_of(r["ResourceARN"])
        if key:
            seen[key] = {t["Key"]: t["Value"] for t in r.get("Tags", [])}
    return [ResourceTags(kind=k, name=n, tags=seen.get((k, n), {})) for k, n in system_resources(system)]


def _alias_targets(system: System) -> dict[str, str]:
    c = aws.client("kms", system.region)
    return {a["AliasName"]: a["TargetKeyId"] for a in aws.paginate(c, "list_aliases", "Aliases") if a.get("TargetKeyId")}


def _alias_name(alias: str) -> str:
    return alias if alias.startswith("alias/") else f"alias/{alias}"


@aws_task(iam=["kms:ListAliases", "kms:GetKeyRotationStatus"], name="read-kms-rotation", cache_policy=NO_CACHE)
def read_kms_rotation(system: System, deadline: aws.Deadline, only: list[str] | None = None) -> list[KeyRotation]:
    aliases = [a for a in system.audit.kms_key_aliases if only is None or _alias_name(a) in only]
    if not aliases:
        return []
    targets = _alias_targets(system)
    c = aws.client("kms", system.region)

    def one(alias: str) -> KeyRotation:
        key = targets.get(_alias_name(alias))
        if key is None:
            return KeyRotation(alias=_alias_name(alias), error="alias not found (ListAliases); check the name in the inventory")
        return KeyRotation(alias=_alias_name(alias), key_id=key, enabled=c.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"])

    return [s if err is None else KeyRotation(alias=_alias_name(a), error=aws.describe_error(err)) for a, s, err in aws.parallel(one, aliases, deadline=deadline)]


@aws_task(iam=["secretsmanager:DescribeSecret"], name="read-secret-rotation", cache_policy=NO_CACHE)
def read_secret_rotation(system: System, deadline: aws.Deadline) -> list[SecretRotation]:
    c = aws.client("secretsmanager", system.region)

    def one(name: str) -> SecretRotation:
        d = c.describe_secret(SecretId=name)
        return SecretRotation(secret=name, rotation_enabled=bool(d.get("RotationEnabled")), last_rotated=_utc(d.get("LastRotatedDate")),
                              created=_utc(d.get("CreatedDate")))

    return [s if err is None else SecretRotation(secret=n, error=aws.describe_error(err))
            for n, s, err in aws.parallel(one, system.audit.secrets, deadline=deadline)]


WORLD_V4, WORLD_V6 = "0.0.0.0/0", "::/0"  # data compared against rule CIDRs; nothing binds them


@aws_task(iam=["ec2:DescribeSecurityGroups"], name="read-security-groups", cache_policy=NO_CACHE)
def read_security_groups(system: System) -> list[OpenGroup]:
    if not system.audit.security_group_patterns:
        return []
    c = aws.client("ec2", system.region)
    out = []
    for g in aws.paginate(c, "describe_security_groups", "SecurityGroups"):
        if not any(name_matches(p, g.get("GroupName", "")) for p in system.audit.security_group_patterns):
            continue
        rules = []
        for p in g.get("IpPermissions", []):
            cidrs = [r.get("CidrIp") for r in p.get("IpRanges", [])] + [r.get("CidrIpv6") for r in p.get("Ipv6Ranges", [])]
            for cidr in cidrs:
                if cidr in (WORLD_V4, WORLD_V6):
                    proto = p.get("IpProtocol", "-1")
                    ports = "all" if proto == "-1" else f"{p.get('FromPort')}-{p.get('ToPort')}" if p.get("FromPort") != p.get("ToPort") else str(p.get("FromPort"))
                    rules.append(f"{'all traffic' if proto == '-1' else proto + '/' + ports} from {cidr}")
        out.append(OpenGroup(group_id=g["GroupId"], name=g.get("GroupName", ""), open_rules=rules))
    return out


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _cert_domains(c: dict[str, Any]) -> set[str]:
    return {c.get("DomainName", ""), *c.get("SubjectAlternativeNameSummaries", [])}


@aws_task(iam=["acm:ListCertificates", "acm:DescribeCertificate"], name="read-certificates", cache_policy=NO_CACHE)
def read_certificates(system: System, deadline: aws.Deadline) -> list[CertificateState]:
    """Per ``audit.certificate_domains``: the certificate covering it that expires last (a renewal supersedes the old one)."""
    domains = system.audit.certificate_domains
    if not domains:
        return []
    c = aws.client("acm", system.region)
    summaries = list(aws.paginate(c, "list_certificates", "CertificateSummaryList"))

    def one(domain: str) -> CertificateState:
        arns = [x["CertificateArn"] for x in summaries if domain in _cert_domains(x)]
        found = []
        for arn in arns:
            d = c.describe_certificate(CertificateArn=arn)["Certificate"]
            found.append(CertificateState(domain=domain, arn=arn, status=d.get("Status"), not_after=_utc(d.get("NotAfter")),
                                          in_use_by=len(d.get("InUseBy", []))))
        return max(found, key=lambda x: x.not_after or EPOCH) if found else CertificateState(domain=domain)

    return [s if err is None else CertificateState(domain=d, error=aws.describe_error(err)) for d, s, err in aws.parallel(one, domains, deadline=deadline)]


def _read_image_scan(system: System, repo: str) -> ImageScan:
    c = aws.client("ecr", system.region)
    try:
        images = list(aws.paginate(c, "describe_images", "imageDetails", repositoryName=repo))
    except ClientError as exc:
        if aws.error_code(exc) == "RepositoryNotFoundException":
            return ImageScan(repository=repo, exists=False)
        raise
    if not images:
        return ImageScan(repository=repo, reason="the repository has no image")
    latest = max(images, key=lambda i: _utc(i.get("imagePushedAt")) or EPOCH)
    tags = latest.get("imageTags") or []
    s = ImageScan(repository=repo, image=tags[0] if tags else latest["imageDigest"], pushed=_utc(latest.get("imagePushedAt")))
    try:
        r = c.describe_image_scan_findings(repositoryName=repo, imageId={"imageDigest": latest["imageDigest"]}, maxResults=1)
    except ClientError as exc:
        if aws.error_code(exc) == "ScanNotFoundException":
            s.reason = "the latest image has never been scanned (enable scan on push, or aws ecr start-image-scan)"
            return s
        raise
    status = r.get("imageScanStatus", {})
    s.scan_status = status.get("status")
    if s.scan_status != "COMPLETE":
        s.reason = f"scan {s.scan_status or 'status unknown'}: {status.get('description', '')}".rstrip(": ")
        return s
    findings = r.get("imageScanFindings")
    if findings is None or "findingSeverityCounts" not in findings:
        s.reason = "the scan returned no severity counts"
        return s
    s.counts = {k: int(v) for k, v in findings["findingSeverityCounts"].items()}
    return s


@aws_task(iam=["ecr:DescribeImages", "ecr:DescribeImageScanFindings"], name="read-image-scans", cache_policy=NO_CACHE)
def read_image_scans(system: System, deadline: aws.Deadline) -> list[ImageScan]:
    repos = system.audit.ecr_repositories
    return [s if err is None else ImageScan(repository=r, error=aws.describe_error(err))
            for r, s, err in aws.parallel(lambda r: _read_image_scan(system, r), repos, deadline=deadline)]


# --- judge (pure) ----------------------------------------------------------------------------


def judge_log_retention(s: LogGroupState, target_days: int) -> Finding:
    check = "logs-retention"
    if s.error:
        return unknown(check, s.name, s.error)
    if not s.exists:
        if s.named:
            return Finding(check=check, resource=s.name, status=Status.WARN,
                           summary="the log group named in the inventory does not exist; check the name (nothing to set)")
        return Finding(check=check, resource=s.name, status=Status.OK,
                       summary="not created yet (Lambda creates it on the first invocation, with no retention: the next run sets it)")
    details = {"retention_days": s.retention_days, "stored_bytes": s.stored_bytes, "target_days": target_days, "audit": s.audit}
    if s.retention_days is None:
        return Finding(check=check, resource=s.name, status=Status.WARN, details=details, value=s.stored_bytes,
                       summary=f"no retention: logs are kept (and billed) forever, {human_bytes(s.stored_bytes)} stored; "
                               f"fix: set retention to {target_days} days (planned; undo: delete the retention policy)")
    if s.retention_days > target_days:
        if s.audit:
            return Finding(check=check, resource=s.name, status=Status.OK, details=details, value=s.retention_days,
                           summary=f"audit log group keeps {s.retention_days} days (policy {target_days} days for other logs); "
                                   "never shortened by this runbook")
        share = 1 - target_days / s.retention_days
        return Finding(check=check, resource=s.name, status=Status.WARN, details=details, value=s.retention_days,
                       summary=f"retention {s.retention_days} days exceeds the policy's {target_days}: shortening it would delete every event "
                               f"older than {target_days} days, up to about {human_bytes(s.stored_bytes * share)} of the "
                               f"{human_bytes(s.stored_bytes)} stored (estimate, if evenly spread); not automatic: confirm nobody needs "
                               f"them, then aws logs put-retention-policy --log-group-name {s.name} --retention-in-days {target_days}")
    return Finding(check=check, resource=s.name, status=Status.OK, details=details, value=s.retention_days,
                   summary=f"retention {s.retention_days} days (policy {target_days})")


def lifecycle_instructions(s: TmpPrefix, days: int) -> str:
    return ("aws s3api put-bucket-lifecycle-configuration --bucket " + s.bucket + " --lifecycle-configuration "
            "'{\"Rules\":[{\"ID\":\"expire-tmp\",\"Status\":\"Enabled\",\"Filter\":{\"Prefix\":\"" + s.prefix + "\"},"
            "\"Expiration\":{\"Days\":" + str(days) + "}}]}' (this REPLACES the bucket's lifecycle rules: merge with the existing ones)")


def judge_tmp(s: TmpPrefix) -> list[Finding]:
    res = f"{s.bucket}/{s.prefix}"
    if s.error:
        return [unknown("s3-tmp-lifecycle", res, s.error)]
    out = []
    if s.lifecycle_error:
        out.append(unknown("s3-tmp-lifecycle", res, s.lifecycle_error))
    elif s.rule_days is None:
        out.append(Finding(check="s3-tmp-lifecycle", resource=res, status=Status.WARN,
                           summary=f"no enabled lifecycle rule expires {s.prefix}: temporary objects are never deleted; fix: "
                                   + lifecycle_instructions(s, s.limit_days)))
    else:
        out.append(Finding(check="s3-tmp-lifecycle", resource=res, status=Status.OK, value=s.rule_days,
                           summary=f"lifecycle rule {s.rule_id or '(no id)'} expires {s.prefix} after {s.rule_days} days"))
    details = {"objects": s.objects, "old_objects": s.old_objects, "old_bytes": s.old_bytes, "limit_days": s.limit_days}
    if s.old_objects:
        why = ("the lifecycle rule is not expiring them: check its filter and status" if s.rule_days else "no rule expires them")
        out.append(Finding(check="s3-tmp-age", resource=res, status=Status.WARN, value=s.old_objects, details=details,
                           summary=f"{s.old_objects} of {s.objects} objects older than {s.limit_days} days ({human_bytes(s.old_bytes)}, oldest "
                                   f"{s.oldest_days:.0f} days); {why}; delete them after checking nothing still reads them"))
    else:
        out.append(Finding(check="s3-tmp-age", resource=res, status=Status.OK, value=0, details=details,
                           summary=f"no object under {s.prefix} older than {s.limit_days} days ({s.objects} objects)"))
    return out


def judge_audit_sample(s: AuditSample) -> Finding:
    check = "audit-log-pii"
    if s.error:
        return unknown(check, s.log_group, s.error)
    window = f"{s.sampled} of {s.read} events of the last {AUDIT_LOOKBACK_DAYS} days" + (" (read stopped at the cap)" if s.truncated else "")
    if not s.hits:
        return Finding(check=check, resource=s.log_group, status=Status.OK, value=0, details={"read": s.read, "sampled": s.sampled},
                       summary=f"no personal data or secret in a sample of {window}")
    kinds = sorted({k for h in s.hits for k in h["kinds"]})
    where = "; ".join(f"{h['stream']} @{datetime.fromtimestamp(h['timestamp'] / 1000, timezone.utc).isoformat(timespec='seconds')} "
                      f"{'+'.join(h['kinds'])}: {h['excerpt']}" for h in s.hits[:5])
    return Finding(check=check, resource=s.log_group, status=Status.CRIT, value=len(s.hits),
                   details={"read": s.read, "sampled": s.sampled, "hits": s.hits},
                   summary=f"{len(s.hits)} event(s) with {', '.join(kinds)} in a sample of {window}: {where}"
                           f"{' …' if len(s.hits) > 5 else ''}; stop logging them at the source, then treat it as a possible leak (Lv3)")


def deprecations(system: System) -> dict[str, date]:
    merged = {**RUNTIME_DEPRECATIONS, **system.audit.runtime_deprecations}
    return {k: date.fromisoformat(v) for k, v in merged.items()}


def judge_runtime(s: FunctionRuntime, table: dict[str, date], warn_days: int, today: date) -> Finding:
    check = "lambda-runtime"
    if s.error:
        return unknown(check, s.function, s.error)
    if s.runtime is None:
        return Finding(check=check, resource=s.function, status=Status.OK, summary=f"{s.package_type or 'Image'} package: runtime is in the image")
    when = table.get(s.runtime)
    if when is None:
        return Finding(check=check, resource=s.function, status=Status.OK, summary=f"{s.runtime}: no deprecation date known")
    days = (when - today).days
    if days <= 0:
        return Finding(check=check, resource=s.function, status=Status.CRIT, value=days,
                       summary=f"{s.runtime} was deprecated on {when} ({-days} days ago): no security patches; upgrade the runtime")
    if days <= warn_days:
        return Finding(check=check, resource=s.function, status=Status.WARN, value=days,
                       summary=f"{s.runtime} is deprecated on {when} (in {days} days, warn at {warn_days}); plan the upgrade")
    return Finding(check=check, resource=s.function, status=Status.OK, value=days, summary=f"{s.runtime}: deprecated on {when} ({days} days)")


def judge_role(s: RoleUse, unused_days: int, now: datetime) -> Finding:
    check = "iam-role-unused"
    if s.error:
        return unknown(check, s.role, s.error)
    if s.last_used is not None:
        age = (now - s.last_used).days
        if age >= unused_days:
            return Finding(check=check, resource=s.role, status=Status.WARN, value=age,
                           summary=f"last used {age} days ago ({s.last_used.date()}; limit {unused_days}): remove it or its permissions if nothing needs it")
        return Finding(check=check, resource=s.role, status=Status.OK, value=age, summary=f"last used {age} days ago")
    created = (now - s.created).days if s.created else None
    if created is not None and created < unused_days:
        return Finding(check=check, resource=s.role, status=Status.OK, summary=f"never used; created {created} days ago (limit {unused_days})")
    return Finding(check=check, resource=s.role, status=Status.WARN,
                   summary=f"never used (created {created if created is not None else '?'} days ago; limit {unused_days}): "
                           "remove it if nothing needs it (IAM records use from 2020-04 in most regions)")


def judge_tags(s: ResourceTags, required: list[str]) -> Finding:
    missing = [t for t in required if t not in s.tags]
    res = f"{s.kind}:{s.name}"
    if missing:
        return Finding(check="required-tags", resource=res, status=Status.WARN, details={"missing": missing},
                       summary=f"missing tag(s) {', '.join(missing)}" + ("" if s.tags else " (no tags at all, or not found)"))
    return Finding(check="required-tags", resource=res, status=Status.OK, summary=f"carries {', '.join(required)}")


def judge_kms(s: KeyRotation) -> Finding:
    if s.error:
        return unknown("kms-rotation", s.alias, s.error)
    if s.enabled:
        return Finding(check="kms-rotation", resource=s.alias, status=Status.OK, summary=f"automatic rotation enabled ({s.key_id})")
    return Finding(check="kms-rotation", resource=s.alias, status=Status.WARN,
                   summary=f"automatic key rotation disabled ({s.key_id}); fix: enable it (planned; undo: disable it)")


def judge_secret(s: SecretRotation, max_days: int, now: datetime) -> Finding:
    check = "secret-rotation"
    if s.error:
        return unknown(check, s.secret, s.error)
    last = s.last_rotated or s.created
    age = (now - last).days if last else None
    what = f"last rotated {age} days ago" if s.last_rotated else f"never rotated (created {age} days ago)"
    if age is None or age > max_days:
        hint = "" if s.rotation_enabled else "; rotation is not configured: aws secretsmanager rotate-secret --rotation-lambda-arn ..."
        return Finding(check=check, resource=s.secret, status=Status.WARN, value=age, summary=f"{what} (limit {max_days} days){hint}")
    return Finding(check=check, resource=s.secret, status=Status.OK, value=age, summary=f"{what} (limit {max_days} days)")


RISKY = ("all traffic", "tcp/22 ", "tcp/3389 ")


def judge_security_group(s: OpenGroup) -> Finding:
    res = f"{s.name} ({s.group_id})"
    if not s.open_rules:
        return Finding(check="security-group-open", resource=res, status=Status.OK, summary="no inbound rule open to the internet")
    status = Status.CRIT if any(r.startswith(RISKY) for r in s.open_rules) else Status.WARN
    return Finding(check="security-group-open", resource=res, status=status, value=len(s.open_rules),
                   summary="open to the internet: " + "; ".join(s.open_rules) + "; restrict the source (not changed automatically)")


def judge_certificate(s: CertificateState, warn_days: int, now: datetime) -> Finding:
    check = "acm-certificate-expiry"
    if s.error:
        return unknown(check, s.domain, s.error)
    if s.arn is None:
        return Finding(check=check, resource=s.domain, status=Status.WARN,
                       summary="no ACM certificate in this region covers the domain: check the inventory's name, or request one "
                               f"(aws acm request-certificate --domain-name {s.domain} --validation-method DNS) or check where it is served from")
    if s.not_after is None:
        return unknown(check, s.domain, f"{s.arn}: DescribeCertificate returned no NotAfter (status {s.status})")
    days = (s.not_after - now).total_seconds() / 86400
    details = {"arn": s.arn, "status": s.status, "not_after": s.not_after.isoformat(), "in_use_by": s.in_use_by, "warn_days": warn_days}
    when = s.not_after.date().isoformat()
    if days <= 0:
        return Finding(check=check, resource=s.domain, status=Status.CRIT, value=int(days), details=details,
                       summary=f"certificate expired on {when} ({int(-days)} days ago; {s.arn}, used by {s.in_use_by}): "
                               "clients reject it; renew or re-import it now and attach it where it is used")
    if days <= warn_days:
        return Finding(check=check, resource=s.domain, status=Status.WARN, value=int(days), details=details,
                       summary=f"certificate expires on {when} (in {int(days)} days, warn at {warn_days}; {s.arn}): "
                               "check DNS validation for managed renewal, or re-import an imported one")
    return Finding(check=check, resource=s.domain, status=Status.OK, value=int(days), details=details,
                   summary=f"certificate valid until {when} ({int(days)} days)")


def judge_image_scan(s: ImageScan) -> Finding:
    check = "ecr-image-scan"
    if s.error:
        return unknown(check, s.repository, s.error)
    if not s.exists:
        return Finding(check=check, resource=s.repository, status=Status.WARN,
                       summary="the repository named in the inventory does not exist; check the name")
    if s.reason:
        where = f"{s.repository}:{s.image}" if s.image else s.repository
        return unknown(check, s.repository, f"{where}: no scan findings ({s.reason})")
    crit, high = s.counts.get("CRITICAL", 0), s.counts.get("HIGH", 0)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items())) or "no findings"
    details = {"image": s.image, "counts": s.counts}
    if crit:
        return Finding(check=check, resource=s.repository, status=Status.CRIT, value=crit, details=details,
                       summary=f"latest image {s.image}: {counts}; rebuild on patched base images/packages and redeploy")
    if high:
        return Finding(check=check, resource=s.repository, status=Status.WARN, value=high, details=details,
                       summary=f"latest image {s.image}: {counts}; plan the patch and rebuild")
    return Finding(check=check, resource=s.repository, status=Status.OK, value=0, details=details,
                   summary=f"latest image {s.image}: no CRITICAL or HIGH findings ({counts})")


# --- act: how each fix reads and sets its value (idempotent) ------------------------------------


def read_retention(system: System, group: str) -> str:
    s = _read_log_group(system, group, False, True)
    if not s.exists:
        raise RuntimeError(f"log group {group} does not exist")
    return str(s.retention_days) if s.retention_days is not None else NONE


def set_retention(system: System, group: str, value: str) -> None:
    c = aws.client("logs", system.region)
    if value == NONE:
        c.delete_retention_policy(logGroupName=group)
    else:
        c.put_retention_policy(logGroupName=group, retentionInDays=int(value))


def read_key_rotation(system: System, alias: str) -> str:
    key = _alias_targets(system).get(alias)
    if key is None:
        raise RuntimeError(f"{alias} not found")
    return "ENABLED" if aws.client("kms", system.region).get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] else "DISABLED"


def set_key_rotation(system: System, alias: str, value: str) -> None:
    key = _alias_targets(system)[alias]
    c = aws.client("kms", system.region)
    (c.enable_key_rotation if value == "ENABLED" else c.disable_key_rotation)(KeyId=key)


APPLIERS = {RETENTION: Applier(read=read_retention, apply=set_retention), KMS_ROTATION: Applier(read=read_key_rotation, apply=set_key_rotation)}


def wait_verified(system: System, items: list[tuple[str, str, str]], timeout_s: float, poll_s: float = 1.0) -> dict[tuple[str, str], tuple[bool, str]]:
    """Read each (kind, resource, target) back until it shows the target or ``timeout_s`` passes."""
    started = time.monotonic()
    result: dict[tuple[str, str], tuple[bool, str]] = {}
    pending = list(items)
    while pending:
        for kind, resource, target in list(pending):
            try:
                now = APPLIERS[kind].read(system, resource)
                result[(kind, resource)] = (now == target, f"{kind} {now}")
            except Exception as exc:  # reported on the record; the fix itself was applied
                result[(kind, resource)] = (False, f"could not read it back ({aws.describe_error(exc)})")
            if result[(kind, resource)][0]:
                pending.remove((kind, resource, target))
        if not pending or time.monotonic() - started >= timeout_s:
            break
        time.sleep(poll_s)
    return result
