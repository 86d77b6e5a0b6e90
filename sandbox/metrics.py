"""Two weeks of daily metrics for a seeded system, for the weekly report.

moto accepts PutMetricData with past timestamps (AWS/ namespaces too), so the
sandbox publishes what Lambda, API Gateway, DynamoDB, S3 and the system's own
code would have published: one day at local noon, 14 local days ending
yesterday. ``change`` scales this week against last week; ``pipeline_p95_s``
sets T-Developer's last-week p95 pipeline time (above 45 s: an SLO breach).

moto computes no percentiles (p95 comes back empty), so ``enable_percentiles``
teaches its in-process backend nearest-rank percentiles over raw values, the
way CloudWatch computes them from values published one by one.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, time, timedelta
from typing import Any

from sandbox.seed import _client
from sandbox.server import Sandbox
from tasks.inventory import System

_PCT = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")


def enable_percentiles() -> None:
    """Patch moto's Statistics (in this process) to answer pNN statistics. Idempotent."""
    from moto.cloudwatch.models import Statistics

    if getattr(Statistics, "_opsbook_percentiles", False):
        return
    original = Statistics.get_statistics_for_type

    def get_statistics_for_type(self: Any, stat: str) -> Any:
        m = _PCT.match(stat)
        if not m:
            return original(self, stat)
        values = sorted(self.metric_single_values_list)
        if not values:
            return None
        rank = max(1, math.ceil(float(m.group(1)) / 100 * len(values)))
        return values[rank - 1]

    Statistics.get_statistics_for_type = get_statistics_for_type
    Statistics._opsbook_percentiles = True


def day_noons(system: System, now: datetime | None = None) -> list[datetime]:
    """Local noon of each of the 14 days before today, oldest first."""
    now = (now or datetime.now(system.tz)).astimezone(system.tz)
    today = datetime.combine(now.date(), time(0), tzinfo=system.tz)
    return [today - timedelta(days=14 - i) + timedelta(hours=12) for i in range(14)]


def _put(cw: Any, namespace: str, data: list[dict[str, Any]]) -> None:
    for i in range(0, len(data), 500):
        cw.put_metric_data(Namespace=namespace, MetricData=data[i : i + 500])


def _dims(**kw: str) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in kw.items()]


def publish_weekly_metrics(sb: Sandbox, system: System, *, change: float = 0.5, pipeline_p95_s: float = 60.0,
                           failures_last_week: int = 3, users: int = 17, skip: tuple[str, ...] = ("apigateway",),
                           now: datetime | None = None) -> dict[str, Any]:
    """Publish 14 days of the report's metrics; returns the expected figures for assertions.

    Last week's values are ``base``; this week's are ``base * (1 + change)``.
    ``skip`` names kinds left without data (default: API Gateway, for the no-data case).
    """
    enable_percentiles()
    cw = _client(sb, "cloudwatch", system.region)
    days = day_noons(system, now)
    expected: dict[str, Any] = {"change_pct": round(change * 100, 1)}

    def f(i: int) -> float:
        return 1.0 + change if i >= 7 else 1.0

    # T-Developer's pipeline metrics (seed 001), whatever namespace the inventory names
    for m in system.custom_metrics:
        data = []
        for i, ts in enumerate(days):
            if m.name == "PipelineExecutionTime":
                # 20 runs a day: 20..39 s before, scaled so that this week's p95 is pipeline_p95_s
                base = [20.0 + k for k in range(20)]
                scale = pipeline_p95_s / 38.0 if i >= 7 else 1.0
                data.append({"MetricName": m.name, "Timestamp": ts, "Values": [round(v * scale, 3) for v in base], "Unit": "Seconds",
                             "Dimensions": _dims(**m.dimensions)})
            elif m.name.endswith("Success"):
                fails = failures_last_week if i >= 7 else 1
                data.append({"MetricName": m.name, "Timestamp": ts, "Values": [1.0, 0.0], "Counts": [100.0 - fails, float(fails)],
                             "Dimensions": _dims(**m.dimensions)})
        if data:
            _put(cw, m.namespace, data)
    expected["success_rate_pct"] = round(100 - failures_last_week, 2)
    expected["pipeline_p95_s"] = pipeline_p95_s

    if "lambda" not in skip:
        data = []
        for fn in [x.name for x in system.lambda_functions]:
            d = _dims(FunctionName=fn)
            for i, ts in enumerate(days):
                data += [
                    {"MetricName": "Invocations", "Dimensions": d, "Timestamp": ts, "Value": 1000 * f(i), "Unit": "Count"},
                    {"MetricName": "Errors", "Dimensions": d, "Timestamp": ts, "Value": 10 * f(i), "Unit": "Count"},
                    {"MetricName": "Duration", "Dimensions": d, "Timestamp": ts, "Values": [v * f(i) for v in (100.0, 200.0, 300.0, 400.0)], "Unit": "Milliseconds"},
                ]
        _put(cw, "AWS/Lambda", data)
        expected["lambda_invocations_this_week"] = 7 * 1000 * (1 + change)
        expected["lambda_invocations_last_week"] = 7000

    if "dynamodb" not in skip:
        data = []
        for t in [x.name for x in system.dynamodb_tables]:
            d = _dims(TableName=t)
            for i, ts in enumerate(days):
                data += [
                    {"MetricName": "ConsumedReadCapacityUnits", "Dimensions": d, "Timestamp": ts, "Values": [v * f(i) for v in (10.0, 20.0, 30.0)], "Unit": "Count"},
                    {"MetricName": "ConsumedWriteCapacityUnits", "Dimensions": d, "Timestamp": ts, "Values": [5.0 * f(i)], "Unit": "Count"},
                ]
        _put(cw, "AWS/DynamoDB", data)

    if "apigateway" not in skip:
        data = []
        for a in system.api_gateway_apis:
            d = _dims(ApiName=a.name)
            for i, ts in enumerate(days):
                data += [{"MetricName": "Count", "Dimensions": d, "Timestamp": ts, "Value": 5000 * f(i), "Unit": "Count"},
                         {"MetricName": "Latency", "Dimensions": d, "Timestamp": ts, "Values": [50.0 * f(i), 80.0 * f(i)], "Unit": "Milliseconds"}]
        _put(cw, "AWS/ApiGateway", data)

    if "s3" not in skip:
        data = []
        for b in system.s3_buckets:
            for i, ts in enumerate(days):
                data += [{"MetricName": "BucketSizeBytes", "Dimensions": _dims(BucketName=b.name, StorageType="StandardStorage"),
                          "Timestamp": ts, "Value": float(2 * 1024**3 * f(i)), "Unit": "Bytes"},
                         {"MetricName": "NumberOfObjects", "Dimensions": _dims(BucketName=b.name, StorageType="AllStorageTypes"),
                          "Timestamp": ts, "Value": 1000.0 * f(i), "Unit": "Count"}]
        _put(cw, "AWS/S3", data)

    # users in the metadata table(s) that name a user attribute (seed 001 사용자 수)
    ddb = _client(sb, "dynamodb", system.region)
    for t in system.dynamodb_tables:
        if not t.user_attribute:
            continue
        for k in range(users * 3):  # three projects a user
            item = {t.partition_key: {"S": f"weekly-project-{k}"}, t.user_attribute: {"S": f"weekly-user-{k % users}"}}
            if t.sort_key:
                item[t.sort_key] = {"S": "p"}
            ddb.put_item(TableName=t.name, Item=item)
    return expected
