"""S3: buckets present and storage used, from the daily storage metrics (never by listing objects)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.components import judge_bucket_absent, judge_storage
from opsbook.findings import Finding
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
