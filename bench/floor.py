"""The floor: the reads opsbook's daily-health makes, and nothing else.

A minimal boto3 script: no Prefect, no findings, no reports, one
ThreadPoolExecutor(32). It makes the same AWS calls as `opsbook run
daily-health` (mirrored from its ``api_calls_by_operation``):

  resourcegroupstaggingapi:GetResources   tag discovery, every page
  lambda:GetFunctionConfiguration         per function (named + tagged)
  lambda:GetAlias                         per alias named in the inventory
  dynamodb:DescribeTable                  per table (named + tagged)
  dynamodb:DescribeContinuousBackups      per backup_required table
  dynamodb:ListBackups                    per backup_required table, every page
  opensearch:DescribeDomains              per 5 domains
  (HTTP) GET {domain}/_cluster/health     per domain, to OPSBOOK_OPENSEARCH_URL_TEMPLATE
  apigateway:GetRestApis                  every page
  cloudwatch:DescribeAlarms               StateValue=ALARM, every page
  logs:FilterLogEvents                    per log group, every page
  s3:HeadBucket                           per bucket (named + tagged)
  cloudwatch:GetMetricData                per 500 queries (2 per bucket)

Calls are counted with a botocore ``before-call`` handler (as opsbook counts
them). ``--quotas`` spaces FilterLogEvents at 5 calls/s, the published
CloudWatch Logs quota, like OPSBOOK_QUOTAS=on does for opsbook.

Prints one JSON object: wall_s, api_calls, api_calls_by_operation,
http_calls, covered (functions/tables/log_groups/buckets), errors.

  python bench/floor.py --system hr-resource-optimization [--quotas]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESOURCE_TYPES = ["lambda:function", "dynamodb:table", "es:domain", "apigateway:restapis", "s3:bucket",
                  "sqs:queue", "ecs:service", "logs:log-group"]  # as opsbook/resources.py

_lock = threading.Lock()
CALLS: Counter[str] = Counter()


def count_call(model: Any = None, **_: Any) -> None:
    with _lock:
        CALLS[f"{model.service_model.service_name}:{model.name}"] += 1


class Spacing:
    """At most ``rate`` calls a second (0: unlimited)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            slot = max(time.monotonic(), self.next)
            self.next = slot + self.interval
        time.sleep(max(0.0, slot - time.monotonic()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", default="hr-resource-optimization")
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--quotas", action="store_true", help="FilterLogEvents at 5 calls/s (the published quota)")
    args = ap.parse_args()

    t0 = time.monotonic()
    inv = yaml.safe_load((ROOT / "systems" / f"{args.system}.yaml").read_text())
    region = inv["region"]
    tags = (inv.get("discovery") or {}).get("tags") or {}

    session = boto3.Session()
    session.events.register("before-call", count_call)
    cfg = botocore.config.Config(retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=args.workers,
                                 connect_timeout=3, read_timeout=15)
    clients: dict[str, Any] = {}
    for svc in ("resourcegroupstaggingapi", "lambda", "dynamodb", "opensearch", "apigateway", "cloudwatch", "logs", "s3"):
        clients[svc] = session.client(svc, region_name=region, config=cfg)
    c = clients.__getitem__
    logs_rate = Spacing(5.0 if args.quotas else 0.0)
    os_template = os.environ.get("OPSBOOK_OPENSEARCH_URL_TEMPLATE")
    http_calls = Counter()
    errors: list[str] = []
    end = datetime.now(timezone.utc)

    def pages(svc: str, op: str, key: str, **kw: Any) -> list[Any]:
        out: list[Any] = []
        for page in c(svc).get_paginator(op).paginate(**kw):
            out += page.get(key, []) or []
        return out

    def filter_count(group: str) -> int:
        kw: dict[str, Any] = dict(logGroupName=group, filterPattern="ERROR",
                                  startTime=int((end - timedelta(hours=24)).timestamp() * 1000), endTime=int(end.timestamp() * 1000) - 1)
        n = 0
        while True:
            logs_rate.wait()
            page = c("logs").filter_log_events(**kw)
            n += len(page.get("events", []))
            tok = page.get("nextToken")
            if not tok or tok == kw.get("nextToken"):
                return n
            kw["nextToken"] = tok

    def cluster_health(domain: str) -> str:
        with _lock:
            http_calls["opensearch:_cluster/health"] += 1
        url = os_template.format(domain=domain).rstrip("/") + "/_cluster/health"  # type: ignore[union-attr]
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)["status"]

    def domains_and_health(names: list[str]) -> dict[str, Any]:
        st = c("opensearch").describe_domains(DomainNames=names)["DomainStatusList"]
        return {d["DomainName"]: (d.get("Processing"), cluster_health(d["DomainName"]) if os_template else None) for d in st}

    def s3_storage(buckets: list[str]) -> int:
        qs = []
        for i, b in enumerate(buckets):
            for mid, metric, stype in (("size", "BucketSizeBytes", "StandardStorage"), ("objects", "NumberOfObjects", "AllStorageTypes")):
                qs.append({"Id": f"{mid}{i}", "MetricStat": {"Metric": {"Namespace": "AWS/S3", "MetricName": metric,
                           "Dimensions": [{"Name": "BucketName", "Value": b}, {"Name": "StorageType", "Value": stype}]},
                           "Period": 86400, "Stat": "Average"}, "ReturnData": True})
        n = 0
        for i in range(0, len(qs), 500):
            n += len(pages("cloudwatch", "get_metric_data", "MetricDataResults", MetricDataQueries=qs[i:i + 500],
                           StartTime=end - timedelta(days=3), EndTime=end, ScanBy="TimestampDescending"))
        return n

    named_fns = [f["name"] for f in inv.get("lambda_functions", [])]
    named_tables = [t["name"] for t in inv.get("dynamodb_tables", [])]
    named_buckets = [b["name"] for b in inv.get("s3_buckets", [])]
    domain_names = [d["name"] for d in inv.get("opensearch_domains", [])]
    aliases = [(f["name"], a) for f in inv.get("lambda_functions", []) for a in f.get("aliases", [])]
    backed = [t["name"] for t in inv.get("dynamodb_tables", []) if t.get("backup_required")]

    futures: list[Future] = []
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        def submit(fn: Any, *a: Any, **kw: Any) -> Future:
            f = pool.submit(fn, *a, **kw)
            futures.append(f)
            return f

        # what does not depend on discovery starts at once
        disc = submit(pages, "resourcegroupstaggingapi", "get_resources", "ResourceTagMappingList",
                      TagFilters=[{"Key": k, "Values": [v]} for k, v in tags.items()], ResourceTypeFilters=RESOURCE_TYPES) if tags else None
        for i in range(0, len(domain_names), 5):
            submit(domains_and_health, domain_names[i:i + 5])
        submit(pages, "apigateway", "get_rest_apis", "items")
        submit(pages, "cloudwatch", "describe_alarms", "MetricAlarms", StateValue="ALARM", AlarmTypes=["MetricAlarm", "CompositeAlarm"])
        for fn, alias in aliases:
            submit(c("lambda").get_alias, FunctionName=fn, Name=alias)
        for t in backed:
            submit(c("dynamodb").describe_continuous_backups, TableName=t)
            submit(pages, "dynamodb", "list_backups", "BackupSummaries", TableName=t,
                   TimeRangeLowerBound=end - timedelta(days=35), BackupType="ALL")

        # discovery, then one read per resource
        arns = [r["ResourceARN"] for r in disc.result()] if disc else []
        fns, tables, buckets, groups = list(named_fns), list(named_tables), list(named_buckets), []
        for arn in arns:
            service, resource = arn.split(":", 5)[2], arn.split(":", 5)[5]
            if service == "lambda" and resource.startswith("function:"):
                fns.append(resource.split(":")[1])
            elif service == "dynamodb" and resource.startswith("table/"):
                tables.append(resource[6:])
            elif service == "s3":
                buckets.append(resource)
            elif service == "logs" and resource.startswith("log-group:"):
                groups.append(resource[len("log-group:"):].removesuffix(":*"))
        fns, tables, buckets = (list(dict.fromkeys(x)) for x in (fns, tables, buckets))
        groups = list(dict.fromkeys([f"/aws/lambda/{f}" for f in fns] + groups))
        for f in fns:
            submit(c("lambda").get_function_configuration, FunctionName=f)
        for t in tables:
            submit(c("dynamodb").describe_table, TableName=t)
        for g in groups:
            submit(filter_count, g)
        for b in buckets:
            submit(c("s3").head_bucket, Bucket=b)
        submit(s3_storage, buckets)
    for f in futures:
        if f.exception() is not None:
            errors.append(f"{type(f.exception()).__name__}: {f.exception()}"[:200])
    wall = time.monotonic() - t0
    print(json.dumps({
        "tool": "floor", "wall_s": round(wall, 3), "api_calls": sum(CALLS.values()),
        "api_calls_by_operation": dict(sorted(CALLS.items())), "http_calls": dict(http_calls),
        "covered": {"functions": len(fns), "tables": len(tables), "log_groups": len(groups), "buckets": len(buckets)},
        "quotas": args.quotas, "workers": args.workers, "errors": errors,
    }))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
