"""S3: buckets present and storage used, from the daily storage metrics (never by listing objects)."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from botocore.exceptions import ClientError
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.components import judge_bucket_absent, judge_storage
from opsbook.findings import Finding
from opsbook.iam import aws_task, declares
from opsbook.inventory import S3Bucket, System
from opsbook.resources import Discovered
from tasks.cloudwatch import get_metric_data, utcnow


def buckets(system: System, found: Discovered) -> list[S3Bucket]:
    out = list(system.s3_buckets)
    names = {b.name for b in out}
    return out + [S3Bucket(name=n) for n in found.s3_buckets if n not in names]


def storage_queries(names: list[str]) -> list[dict[str, Any]]:
    qs = []
    for i, n in enumerate(names):
        for mid, metric, stype in (("size", "BucketSizeBytes", "StandardStorage"), ("objects", "NumberOfObjects", "AllStorageTypes")):
            qs.append({"Id": f"{mid}{i}", "MetricStat": {"Metric": {"Namespace": "AWS/S3", "MetricName": metric,
                       "Dimensions": [{"Name": "BucketName", "Value": n}, {"Name": "StorageType", "Value": stype}]},
                       "Period": 86400, "Stat": "Average"}, "ReturnData": True})
    return qs


@aws_task(iam=["s3:ListBucket", "cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def check_buckets(system: System, found: Discovered, deadline: aws.Deadline) -> list[Finding]:
    bs = buckets(system, found)
    if not bs:
        return []
    named = {b.name for b in system.s3_buckets}
    c = aws.client("s3", system.region)
    findings: list[Finding] = []
    present = []
    for b, _, err in aws.parallel(lambda b: c.head_bucket(Bucket=b.name), bs, deadline=deadline):
        if err is None:
            present.append(b)
        else:
            findings.append(judge_bucket_absent(b.name, b.name in named, aws.unreadable(err)))
    if not present:
        return findings
    end = utcnow()
    try:
        data = get_metric_data(system.region, storage_queries([b.name for b in present]), end - timedelta(days=3), end)
    except Exception as exc:  # every bucket's storage is then UNKNOWN with the reason
        return findings + [judge_storage(b, None, None, aws.describe_error(exc)) for b in present]
    for i, b in enumerate(present):
        size = data[f"size{i}"][0][1] if data[f"size{i}"] else None
        objs = data[f"objects{i}"][0][1] if data[f"objects{i}"] else None
        findings.append(judge_storage(b, size, objs))
    return findings


@aws_task(iam=["s3:PutObject", "s3:GetObject"], cache_policy=NO_CACHE)
def store_html(system: System, key: str, page: str) -> dict[str, str]:
    """Put the page in the report bucket; a presigned GET (7 days) links it (s3:GetObject: the link's reader acts as us)."""
    bucket = system.reporting.report_bucket
    assert bucket
    c = aws.client("s3", system.region)
    c.put_object(Bucket=bucket, Key=key, Body=page.encode("utf-8"), ContentType="text/html; charset=utf-8")
    url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=7 * 86400)
    return {"uri": f"s3://{bucket}/{key}", "url": url}


# --- tmp/ lifecycle, versioning and replication, previous versions ------------------------------

NEVER_ENABLED = "never-enabled"  # GetBucketVersioning has no Status until versioning was first enabled


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


class BucketProtection(BaseModel):
    bucket: str
    versioning_required: bool
    replication_required: bool
    named: bool = True
    versioning: str | None = None  # Enabled | Suspended | never-enabled
    replication_role: str | None = None
    replication_rules: list[dict[str, Any]] | None = None  # None: not read; []: no configuration
    missing: bool = False
    error: str | None = None
    replication_error: str | None = None

    @property
    def needs_versioning(self) -> bool:
        """Replication works only on a versioned bucket, so it needs versioning too."""
        return self.versioning_required or self.replication_required


def lifecycle_rule(rules: list[dict[str, Any]], prefix: str) -> tuple[str | None, int | None]:
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


def read_tmp(system: System, bucket: str, prefix: str, now: datetime) -> TmpPrefix:
    c = aws.client("s3", system.region)
    s = TmpPrefix(bucket=bucket, prefix=prefix, limit_days=system.audit.tmp_max_age_days)
    try:
        rules = c.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
        s.rule_id, s.rule_days = lifecycle_rule(rules, prefix)
    except ClientError as exc:
        if aws.error_code(exc) != "NoSuchLifecycleConfiguration":
            s.lifecycle_error = aws.describe_error(exc)
    # expiry runs once a day: a day's grace on top of the rule's own days
    s.limit_days = s.rule_days + 1 if s.rule_days else system.audit.tmp_max_age_days
    cutoff = now - timedelta(days=s.limit_days)
    for o in aws.paginate(c, "list_objects_v2", "Contents", Bucket=bucket, Prefix=prefix):
        s.objects += 1
        modified = aws.utc(o["LastModified"])
        age = (now - modified).total_seconds() / 86400
        s.oldest_days = max(s.oldest_days or 0.0, age)
        if modified < cutoff:
            s.old_objects += 1
            s.old_bytes += o.get("Size", 0)
    return s


@aws_task(iam=["s3:GetLifecycleConfiguration", "s3:ListBucket"], name="read-tmp-prefixes", cache_policy=NO_CACHE)
def read_tmp_prefixes(system: System, deadline: aws.Deadline) -> list[TmpPrefix]:
    now = datetime.now(timezone.utc)
    bs = [b for b in system.s3_buckets if b.tmp_prefix]
    return [s if err is None else TmpPrefix(bucket=b.name, prefix=b.tmp_prefix or "", error=aws.describe_error(err))
            for b, s, err in aws.parallel(lambda b: read_tmp(system, b.name, b.tmp_prefix, now), bs, deadline=deadline)]


def read_bucket(system: System, b: S3Bucket, named: bool) -> BucketProtection:
    c = aws.client("s3", system.region)
    s = BucketProtection(bucket=b.name, versioning_required=b.versioning_required, replication_required=b.replication_required, named=named)
    try:
        s.versioning = c.get_bucket_versioning(Bucket=b.name).get("Status") or NEVER_ENABLED
    except ClientError as exc:
        s.missing, s.error = aws.is_not_found(exc), aws.describe_error(exc)
        return s
    if b.replication_required:
        try:
            cfg = c.get_bucket_replication(Bucket=b.name)["ReplicationConfiguration"]
            s.replication_role, s.replication_rules = cfg.get("Role"), cfg.get("Rules", [])
        except ClientError as exc:
            if aws.error_code(exc) == "ReplicationConfigurationNotFoundError":
                s.replication_rules = []
            else:
                s.replication_error = aws.describe_error(exc)
    return s


@aws_task(iam=["s3:GetBucketVersioning", "s3:GetReplicationConfiguration"], name="read-bucket-protection", cache_policy=NO_CACHE)
def read_bucket_protection(system: System, found: Discovered, deadline: aws.Deadline, only: list[str] | None = None) -> list[BucketProtection]:
    named = {b.name for b in system.s3_buckets}
    bs = [b for b in buckets(system, found) if only is None or b.name in only]
    out = []
    for b, s, err in aws.parallel(lambda b: read_bucket(system, b, b.name in named), bs, deadline=deadline):
        out.append(s if err is None else BucketProtection(bucket=b.name, versioning_required=b.versioning_required,
                                                          replication_required=b.replication_required, named=b.name in named,
                                                          error=aws.describe_error(err)))
    return out


@declares(["s3:GetBucketVersioning"])
def read_versioning(system: System, bucket: str) -> str:
    return aws.client("s3", system.region).get_bucket_versioning(Bucket=bucket).get("Status") or NEVER_ENABLED


@declares(["s3:PutBucketVersioning"])
def set_versioning(system: System, bucket: str, value: str) -> None:
    if value not in ("Enabled", "Suspended"):
        raise ValueError(f"versioning can only be set to Enabled or Suspended, not {value!r}")
    aws.client("s3", system.region).put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": value})


@aws_task(iam=["s3:GetBucketVersioning", "s3:ListBucketVersions"], name="find-object-versions", cache_policy=NO_CACHE)
def find_object_versions(system: System) -> dict[str, Any]:
    """Per versioned bucket: up to sample_objects keys that have a previous version."""
    s3 = aws.client("s3", system.region)
    out: dict[str, Any] = {}
    for b in system.s3_buckets:
        try:
            if s3.get_bucket_versioning(Bucket=b.name).get("Status") != "Enabled":
                out[b.name] = {"versioned": False}
                continue
            seen: dict[str, list[dict]] = {}
            for v in aws.paginate(s3, "list_object_versions", "Versions", Bucket=b.name):
                seen.setdefault(v["Key"], []).append(v)
                if sum(1 for vs in seen.values() if len(vs) > 1) >= system.dr.sample_objects:
                    break
            samples = []
            for key, vs in seen.items():
                older = sorted((v for v in vs if not v.get("IsLatest")), key=lambda v: v["LastModified"], reverse=True)
                if older:
                    samples.append({"key": key, "version": older[0]["VersionId"]})
            out[b.name] = {"versioned": True, "samples": samples[: system.dr.sample_objects]}
        except Exception as exc:  # this bucket's restore is UNKNOWN with the reason
            out[b.name] = {"error": aws.describe_error(exc)}
    return out


@aws_task(iam=["s3:CreateBucket", "s3:PutBucketTagging", "s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:ListBucket"],
          name="restore-objects", cache_policy=NO_CACHE, read_only=False)
def restore_objects(system: System, bucket: str, samples: list[dict[str, Any]], target: str, prefix: str, tags: dict[str, str]) -> dict[str, Any]:
    """Copy each sampled previous version into ``target`` under ``prefix`` (the bucket created and tagged if need be) and
    compare the copy with the version by SHA-256: the keys that differ, and the time it took."""
    s3 = aws.client("s3", system.region)
    t0 = time.monotonic()
    try:
        kw = {} if system.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": system.region}}
        s3.create_bucket(Bucket=target, **kw)
        s3.put_bucket_tagging(Bucket=target, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
    except Exception as exc:
        if aws.error_code(exc) not in ("BucketAlreadyOwnedByYou",):
            raise
    differ = []
    for s in samples:
        dest = f"{prefix}{bucket}/{s['key']}"
        s3.copy_object(Bucket=target, Key=dest, CopySource={"Bucket": bucket, "Key": s["key"], "VersionId": s["version"]})
        a = hashlib.sha256(s3.get_object(Bucket=bucket, Key=s["key"], VersionId=s["version"])["Body"].read()).hexdigest()
        b = hashlib.sha256(s3.get_object(Bucket=target, Key=dest)["Body"].read()).hexdigest()
        if a != b:
            differ.append(s["key"])
    return {"seconds": time.monotonic() - t0, "checked": len(samples), "differ": differ}


def remove_prefix(system: System, bucket: str, prefix: str, delete_bucket: bool) -> list[str]:
    """Delete every object under ``prefix`` (then the bucket, if asked); what was removed. A missing bucket removes nothing."""
    s3 = aws.client("s3", system.region)
    removed: list[str] = []
    try:
        keys = [o["Key"] for o in aws.paginate(s3, "list_objects_v2", "Contents", Bucket=bucket, Prefix=prefix)]
        for i in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True})
        removed += [f"object s3://{bucket}/{k}" for k in keys]
        if delete_bucket:
            s3.delete_bucket(Bucket=bucket)
            removed.append(f"bucket {bucket}")
    except Exception as exc:
        if not aws.is_not_found(exc):
            raise
    return removed


# --- bucket policy: read exactly as S3 returns it, put or delete ---------------------------------------

NO_POLICY = "(no bucket policy)"


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


class BucketState(BaseModel):
    bucket: str
    policy: str | None = None
    error: str | None = None


@aws_task(iam=["s3:GetBucketPolicy"], name="read-bucket-policies", cache_policy=NO_CACHE)
def read_bucket_policies(system: System, buckets: list[str], deadline: aws.Deadline) -> list[BucketState]:
    return [BucketState(bucket=b, policy=p) if err is None else BucketState(bucket=b, error=aws.describe_error(err))
            for b, p, err in aws.parallel(lambda b: read_policy(system, b), buckets, deadline=deadline)]


# --- uploads per user (bill-shock-breaker) ------------------------------------------------------------



@aws_task(iam=["s3:ListBucket"], name="count-uploads", cache_policy=NO_CACHE)
def count_uploads(system: System, users: list[str], now: datetime | None = None) -> dict[str, int]:
    """Uploads per user in the window, for the given (top) users only (keys: <prefix><user>/...)."""
    cfg = system.bill_shock
    if not cfg.uploads_bucket or not users:
        return {}
    since = (now or datetime.now(timezone.utc)) - timedelta(minutes=cfg.window_minutes)
    s3 = aws.client("s3", system.region)
    out = {}
    for u, n, err in aws.parallel(lambda u: sum(1 for o in aws.paginate(s3, "list_objects_v2", "Contents", Bucket=cfg.uploads_bucket,
                                                                         Prefix=f"{cfg.uploads_prefix}{u}/") if o["LastModified"] >= since), users):
        if err is not None:
            raise err
        out[u] = n
    return out


# --- uploads without a result (daily-health, emergency-check, diagnose-stuck-processing) ---------------------------

from opsbook.processing import (  # noqa: E402  (this section is appended)
    UploadsRead,
    consumer_queues,
    judge_uploads,
    map_key,
    results_key,
    settings,
    split_uploads,
    uploads_target,
)


def list_uploads(system: System, bucket: str, prefix: str, max_keys: int) -> tuple[list[tuple[str, datetime]], bool]:
    """(key, LastModified) under the prefix, every page up to ``max_keys``; True when the listing was cut there."""
    s3 = aws.client("s3", system.region)
    out: list[tuple[str, datetime]] = []
    for o in aws.paginate(s3, "list_objects_v2", "Contents", Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}):
        if len(out) >= max_keys:
            return out, True
        out.append((o["Key"], aws.utc(o["LastModified"])))
    return out, False


def present_keys(system: System, table: str, keys: list[dict[str, str]]) -> set[tuple[str, ...]]:
    """Which of ``keys`` have an item (BatchGetItem, 100 keys a call, the key attributes only, unprocessed keys asked again)."""
    c = aws.client("dynamodb", system.region)
    names = list(keys[0]) if keys else []
    found: set[tuple[str, ...]] = set()
    uniq = [dict(t) for t in dict.fromkeys(tuple(k.items()) for k in keys)]
    for i in range(0, len(uniq), 100):
        request: dict[str, Any] = {table: {"Keys": [{a: {"S": v} for a, v in k.items()} for k in uniq[i : i + 100]],
                                           "ProjectionExpression": ", ".join(f"#k{n}" for n in range(len(names))),
                                           "ExpressionAttributeNames": {f"#k{n}": a for n, a in enumerate(names)}}}
        for _ in range(8):
            res = c.batch_get_item(RequestItems=request)
            for item in res.get("Responses", {}).get(table, []):
                found.add(tuple(item[a]["S"] for a in names))
            request = res.get("UnprocessedKeys") or {}
            if not request:
                break
        if request:
            raise RuntimeError(f"BatchGetItem left {len(request[table]['Keys'])} keys of {table} unprocessed after 8 tries (throttled)")
    return found


def read_uploads(system: System, now: datetime) -> UploadsRead | None:
    """The uploads of the window (newest first, up to the sample, none younger than the queue-age WARN) and which have no
    result item. None when the inventory names no uploads bucket or results table."""
    bucket, prefix, table = uploads_target(system)
    if not bucket or not table:
        return None
    cfg = settings(system)
    r = UploadsRead(bucket=bucket, prefix=prefix, table=table)
    try:
        objects, r.list_cut = list_uploads(system, bucket, prefix, cfg.reconcile_list_max)
    except Exception as exc:
        r.missing_bucket = aws.error_code(exc) == "NoSuchBucket"
        r.error = None if r.missing_bucket else f"ListObjectsV2 s3://{bucket}/{prefix}: {aws.describe_error(exc)}"
        return r
    r.listed = len(objects)
    due, r.in_window, r.pending = split_uploads(objects, now, cfg.reconcile_hours, system.thresholds.queue_age_warn_minutes)
    pk, sk = results_key(system, table)
    for key, at in due:  # newest first: the sample is the newest due uploads that map to a result key
        ids = map_key(key, cfg.upload_key_pattern, pk, sk)
        if ids is None:
            r.unmapped.append(key)
        elif len(r.checked) < cfg.reconcile_sample:
            r.checked.append({"key": key, "uploaded_at": at.isoformat(), **ids})
    if not r.checked:
        return r
    try:
        have = present_keys(system, table, [{a: c[a] for a in ([pk, sk] if sk else [pk])} for c in r.checked])
    except Exception as exc:
        r.error = f"BatchGetItem {table}: {aws.describe_error(exc)}"
        return r
    r.missing = [c for c in r.checked if tuple(c[a] for a in ([pk, sk] if sk else [pk])) not in have]
    return r


@aws_task(iam=["s3:ListBucket", "dynamodb:BatchGetItem"], name="check-unprocessed-uploads", cache_policy=NO_CACHE)
def check_uploads(system: System, deadline: aws.Deadline, now: datetime | None = None) -> list[Finding]:
    """Uploads of the last stuck_processing.reconcile_hours (older than the queue-age WARN) without their result item:
    sample-bounded and paginated; counts checked/missing and a few keys. Nothing when no uploads bucket/results table is known
    or no queue-fed worker is declared."""
    if not consumer_queues(system):
        return []
    now = now or datetime.now(timezone.utc)
    cfg = settings(system)
    try:
        r = read_uploads(system, now)
    except Exception as exc:
        bucket, prefix, _ = uploads_target(system)
        return [judge_uploads(UploadsRead(bucket=bucket or "?", prefix=prefix, table="?"), cfg.reconcile_hours,
                              system.thresholds.queue_age_warn_minutes, cfg.unprocessed_warn, cfg.unprocessed_crit, aws.describe_error(exc))]
    if r is None:
        return []
    return [judge_uploads(r, cfg.reconcile_hours, system.thresholds.queue_age_warn_minutes, cfg.unprocessed_warn, cfg.unprocessed_crit)]
