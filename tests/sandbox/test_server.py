"""The sandbox's speed-ups of moto answer exactly what moto answers."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from moto.cloudwatch.models import CloudWatchBackend, cloudwatch_backends

from sandbox.server import fast_moto_metric_data

REGION = "ap-northeast-2"


def _naive(t: datetime) -> datetime:
    return t.astimezone(timezone.utc).replace(tzinfo=None)  # how moto's backend keeps and compares times


def _put_random_datapoints(rng: random.Random, now: datetime) -> None:
    cw = boto3.client("cloudwatch", region_name=REGION)
    for _ in range(40):
        ns = rng.choice(["LEH/Tokens", "LEH/Uploads", "AWS/Lambda"])
        name = rng.choice(["TokensUsed", "Uploads", "Errors"])
        dims = [{"Name": "CaseId", "Value": f"case-{rng.randint(1, 4)}"}] if rng.random() < 0.7 else []
        if dims and rng.random() < 0.3:
            dims.append({"Name": "Model", "Value": rng.choice(["a", "b"])})
        data = [{"MetricName": name, "Dimensions": dims, "Timestamp": now - timedelta(minutes=rng.randint(0, 180)),
                 "Value": float(rng.randint(0, 1000)), "Unit": rng.choice(["Count", "None"])} for _ in range(rng.randint(1, 8))]
        cw.put_metric_data(Namespace=ns, MetricData=data)


def _queries(rng: random.Random) -> list[dict]:
    out = []
    for i in range(12):
        dims = [{"Name": "CaseId", "Value": f"case-{rng.randint(1, 4)}"}] if rng.random() < 0.7 else []
        if dims and rng.random() < 0.3:
            dims.append({"Name": "Model", "Value": rng.choice(["a", "b"])})
        stat = {"Metric": {"Namespace": rng.choice(["LEH/Tokens", "LEH/Uploads", "AWS/Lambda"]),
                           "MetricName": rng.choice(["TokensUsed", "Uploads", "Errors"]), "Dimensions": dims},
                "Period": rng.choice([60, 300, 3600]), "Stat": rng.choice(["Sum", "Maximum", "SampleCount", "Average"])}
        if rng.random() < 0.2:
            stat["Unit"] = "Count"
        rng.shuffle(dims)  # the order a caller lists dimensions in is not the order they were put in
        q = {"Id": f"q{i}", "MetricStat": stat}
        if rng.random() < 0.2:
            q["ReturnData"] = False
        if rng.random() < 0.3:
            q["Label"] = f"label {i}"
        out.append(q)
    return out


def test_get_metric_data_per_query_answers_what_moto_answers(aws_mock):
    fast_moto_metric_data()
    moto_own = CloudWatchBackend._opsbook_moto_get_metric_data
    now = datetime.now(timezone.utc).replace(microsecond=0)
    boto3.client("s3", region_name=REGION).create_bucket(  # moto would add S3 metrics of its own (the sandbox turns them off)
        Bucket="metrics-too", CreateBucketConfiguration={"LocationConstraint": REGION})
    for seed in range(5):
        rng = random.Random(seed)
        _put_random_datapoints(rng, now)
        backend = cloudwatch_backends["123456789012"][REGION]
        queries = _queries(rng)
        start, end = _naive(now - timedelta(hours=3)), _naive(now + timedelta(minutes=1))
        for scan_by in ("TimestampAscending", "TimestampDescending"):
            fast = backend.get_metric_data(queries, start, end, scan_by)
            assert fast == moto_own(backend, queries, start, end, scan_by)
            assert any(r["values"] for r in fast)  # the comparison is not between two empty answers


def test_an_expression_takes_moto_path_unchanged(aws_mock):
    fast_moto_metric_data()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    _put_random_datapoints(random.Random(7), now)
    backend = cloudwatch_backends["123456789012"][REGION]
    queries = [{"Id": "a", "MetricStat": {"Metric": {"Namespace": "LEH/Tokens", "MetricName": "TokensUsed"}, "Period": 3600,
                                          "Stat": "Sum"}, "ReturnData": False},
               {"Id": "total", "Expression": "a * 2"}]
    start, end = _naive(now - timedelta(hours=3)), _naive(now + timedelta(minutes=1))
    assert backend.get_metric_data(queries, start, end) == CloudWatchBackend._opsbook_moto_get_metric_data(backend, queries, start, end)


def test_a_bad_window_is_the_same_error(aws_mock):
    fast_moto_metric_data()
    backend = cloudwatch_backends["123456789012"][REGION]
    queries = _queries(random.Random(3))
    now = _naive(datetime.now(timezone.utc).replace(microsecond=0))
    for start, end in ((now, now), (now + timedelta(hours=1), now)):
        with pytest.raises(Exception) as fast:
            backend.get_metric_data(queries, start, end)
        with pytest.raises(Exception) as moto_own:
            CloudWatchBackend._opsbook_moto_get_metric_data(backend, queries, start, end)
        assert (type(fast.value), str(fast.value)) == (type(moto_own.value), str(moto_own.value))



def test_dimensions_match_in_any_order_as_in_cloudwatch(aws_mock):
    """moto's Dimension ordering compared a value with a name: a metric put as (TargetGroup, LoadBalancer) was never found
    when asked as (LoadBalancer, TargetGroup). CloudWatch treats a dimension set as unordered, and so does the sandbox."""
    fast_moto_metric_data()
    cw = boto3.client("cloudwatch", region_name=REGION)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    put = [{"Name": "TargetGroup", "Value": "targetgroup/tg/1"}, {"Name": "LoadBalancer", "Value": "app/lb/2"}]
    cw.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[{"MetricName": "RequestCount", "Dimensions": put,
                                                                    "Timestamp": now - timedelta(minutes=5), "Value": 7.0}])
    other = [{"Name": "LoadBalancer", "Value": "app/lb/2"}, {"Name": "TargetGroup", "Value": "targetgroup/tg/3"}]  # a twin: no match
    for dims, expected in ((put, [7.0]), (list(reversed(put)), [7.0]), (other, [])):
        q = {"Id": "q", "MetricStat": {"Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": "RequestCount", "Dimensions": dims},
                                       "Period": 3600, "Stat": "Sum"}}
        for queries in ([q], [q, {**q, "Id": "q2"}]):  # moto's own path (one query) and the sandbox's (several)
            res = cw.get_metric_data(MetricDataQueries=queries, StartTime=now - timedelta(hours=1), EndTime=now)["MetricDataResults"]
            assert res[0]["Values"] == expected, (dims, len(queries))
