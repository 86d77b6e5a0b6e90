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


# --- throttling (sandbox.server._Throttle) ----------------------------------------------------------------------------

def _signed(service: str, **extra: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential=AKID/20260101/{REGION}/{service}/aws4_request, "
                                  "SignedHeaders=host, Signature=0", **extra}


def _call(mw, environ: dict) -> tuple[str, dict, bytes]:
    got = {}

    def start_response(status, headers):
        got["status"], got["headers"] = status, dict(headers)

    body = b"".join(mw(environ, start_response))
    return got["status"], got["headers"], body


def _moto(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"{}"]


def test_a_seeded_share_of_signed_calls_is_throttled_the_same_way_each_time():
    from sandbox.server import _Throttle

    def statuses(seed: int) -> list[str]:
        mw = _Throttle(_moto, 20, seed)
        return [_call(mw, _signed("dynamodb", HTTP_X_AMZ_TARGET="DynamoDB_20120810.ListTables"))[0] for _ in range(500)]

    first = statuses(7)
    assert first == statuses(7) and first != statuses(8)  # the seed fixes the decisions
    assert 70 <= sum(s.startswith("400") for s in first) <= 130  # about a fifth of 500
    mw = _Throttle(_moto, 20, 7)
    for _ in range(50):
        _call(mw, {"PATH_INFO": "/moto-api/reset"})  # moto's own API, unsigned: never throttled nor counted
    assert sum(mw.seen.values()) == 0


def test_no_call_is_throttled_at_zero_percent_healthy_twin():
    from sandbox.server import _Throttle

    mw = _Throttle(_moto, 0, 7)
    assert {_call(mw, _signed("dynamodb", HTTP_X_AMZ_TARGET="DynamoDB_20120810.ListTables"))[0] for _ in range(200)} == {"200 OK"}
    with pytest.raises(ValueError, match="between 0 and 100"):
        mw.set(120)


@pytest.mark.parametrize(("service", "environ", "status", "code"), [
    ("dynamodb", {"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.ListTables", "CONTENT_TYPE": "application/x-amz-json-1.0"}, "400", "ThrottlingException"),
    ("monitoring", {"HTTP_X_AMZ_TARGET": "GraniteServiceVersion20100801.DescribeAlarms"}, "400", "Throttling"),
    ("sqs", {"HTTP_X_AMZ_TARGET": "AmazonSQS.ListQueues"}, "400", "RequestThrottled"),
    ("sts", {"CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8"}, "400", "Throttling"),
    ("ec2", {"CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8"}, "503", "RequestLimitExceeded"),
    ("s3", {}, "503", "SlowDown"),
    ("lambda", {}, "429", "TooManyRequestsException"),
    ("apigateway", {}, "429", "TooManyRequestsException"),
])
def test_a_throttled_call_is_answered_as_its_service_answers_and_botocore_retries_it(service, environ, status, code):
    """Parsed by botocore's own parser for the protocol, the code is one its retries treat as throttling."""
    import botocore.parsers
    from botocore.retries.standard import ThrottledRetryableChecker

    from sandbox.server import _Throttle

    got_status, headers, body = _call(_Throttle(_moto, 100), _signed(service, **environ))
    assert got_status.startswith(status)
    protocol = ("json" if "HTTP_X_AMZ_TARGET" in environ else "ec2" if service == "ec2" else "query" if environ
                else "rest-xml" if service == "s3" else "rest-json")
    parsed = botocore.parsers.create_parser(protocol).parse(
        {"status_code": int(status), "headers": {k.lower(): v for k, v in headers.items()}, "body": body}, None)
    assert parsed["Error"]["Code"] == code and code in ThrottledRetryableChecker._THROTTLED_ERROR_CODES


# --- DescribeLogGroups' logGroupIdentifiers (moto ignores it) ----------------------------------------------------


def test_describe_log_groups_by_identifiers_answers_only_the_named_groups_that_exist(sandbox) -> None:
    logs = boto3.client("logs", region_name=REGION)
    for i in range(60):
        logs.create_log_group(logGroupName=f"/aws/lambda/fn-{i:02d}")
    logs.put_retention_policy(logGroupName="/aws/lambda/fn-03", retentionInDays=30)
    arn = f"arn:aws:logs:{REGION}:123456789012:log-group:/aws/lambda/fn-07:*"
    got = logs.describe_log_groups(logGroupIdentifiers=["/aws/lambda/fn-03", "/aws/lambda/fn-59", "/aws/lambda/nope", arn])
    assert [(g["logGroupName"], g.get("retentionInDays")) for g in got["logGroups"]] == [
        ("/aws/lambda/fn-03", 30), ("/aws/lambda/fn-07", None), ("/aws/lambda/fn-59", None)]
    assert "nextToken" not in got or not got["nextToken"]
    # the healthy twin: without identifiers, moto's own listing (a page of 50, then the rest)
    page = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/fn-")
    assert len(page["logGroups"]) == 50 and page["nextToken"]


@pytest.mark.parametrize("kwargs, message", [
    ({"logGroupIdentifiers": [f"g{i}" for i in range(51)]}, "less than or equal to 50"),
    ({"logGroupIdentifiers": ["g1"], "logGroupNamePrefix": "/aws"}, "only other filter"),
])
def test_describe_log_groups_refuses_what_aws_refuses(sandbox, kwargs, message) -> None:
    logs = boto3.client("logs", region_name=REGION)
    with pytest.raises(logs.exceptions.InvalidParameterException, match=message):
        logs.describe_log_groups(**kwargs)
