"""S3: buckets present and storage used, from the daily storage metrics (never by listing objects)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
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


def judge_storage(b: S3Bucket, size: float | None, objects: float | None) -> Finding:
    check = "s3-storage"
    if size is None:
        return unknown(check, b.name, "no BucketSizeBytes datapoint in the last 3 days (S3 publishes storage metrics once a day; a new bucket has none yet)")
    gb = size / 1024**3
    details = {"size_bytes": int(size), "objects": int(objects) if objects is not None else None}
    text = f"{gb:,.2f} GiB" + (f", {int(objects):,} objects" if objects is not None else "")
    if b.size_warn_gb and gb >= b.size_warn_gb:
        return Finding(check=check, resource=b.name, status=Status.WARN, value=int(size), details=details, summary=f"{text}: above {b.size_warn_gb:g} GiB")
    return Finding(check=check, resource=b.name, status=Status.OK, value=int(size), details=details, summary=text)


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
        elif aws.is_not_found(err):
            findings.append(Finding(check="s3-storage", resource=b.name, status=Status.CRIT,
                                    summary="named in the inventory but does not exist" if b.name in named else "not found"))
        else:
            findings.append(unknown("s3-storage", b.name, aws.describe_error(err)))
    if not present:
        return findings
    end = utcnow()
    try:
        data = get_metric_data(system.region, storage_queries([b.name for b in present]), end - timedelta(days=3), end)
    except Exception as exc:  # every bucket's storage is then UNKNOWN with the reason
        return findings + [unknown("s3-storage", b.name, aws.describe_error(exc)) for b in present]
    for i, b in enumerate(present):
        size = data[f"size{i}"][0][1] if data[f"size{i}"] else None
        objs = data[f"objects{i}"][0][1] if data[f"objects{i}"] else None
        findings.append(judge_storage(b, size, objs))
    return findings


# --- uploads per user (bill-shock-breaker) ------------------------------------------------------------

from datetime import datetime, timezone  # noqa: E402  (this section is appended)


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
