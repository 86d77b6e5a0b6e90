import threading
import time

import pytest

from opsbook import aws
from opsbook.iam import UndeclaredAction, declares, iam_action, policy_for


def test_one_client_per_service_and_region_shared_across_threads(aws_mock):
    got = []
    threads = [threading.Thread(target=lambda: got.append(aws.client("dynamodb", "us-east-2"))) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len({id(c) for c in got}) == 1
    assert aws.client("dynamodb", "us-east-1") is not got[0]
    cfg = got[0].meta.config
    assert cfg.retries["mode"] in ("standard", "adaptive") and cfg.connect_timeout and cfg.read_timeout


def test_a_client_is_kept_until_the_environment_that_made_it_changes(aws_mock, monkeypatch):
    first = aws.client("dynamodb", "us-east-1")
    assert aws.client("dynamodb", "us-east-1") is first
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "another-key")
    other = aws.client("dynamodb", "us-east-1")
    assert other is not first and other._request_signer._credentials.access_key == "another-key"
    monkeypatch.setenv("OPSBOOK_MAX_ATTEMPTS", "1")
    assert aws.client("dynamodb", "us-east-1").meta.config.retries["total_max_attempts"] == 2  # a try and a retry
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert aws.client("dynamodb", "us-east-1").meta.endpoint_url == "http://127.0.0.1:9"
    monkeypatch.undo()
    assert aws.client("dynamodb", "us-east-1") is first  # the first environment again: its client


def test_paginate_reads_every_page_and_calls_are_counted(aws_mock):
    c = aws.client("logs", "us-east-2")
    for i in range(120):
        c.create_log_group(logGroupName=f"/g/{i:03d}")
    log = aws.start_call_log()

    @declares(["logs:DescribeLogGroups"])
    def read():
        return [g["logGroupName"] for g in aws.paginate(c, "describe_log_groups", "logGroups", PaginationConfig={"PageSize": 50})]

    names = read()
    assert len(names) == 120
    assert log.by_operation() == {"logs:DescribeLogGroups": 3}
    assert log.total == 3


def test_undeclared_call_fails_in_strict_mode(aws_mock):
    c = aws.client("sqs", "us-east-2")

    @declares(["sqs:ListQueues"])
    def sneaky():
        c.create_queue(QueueName="q")

    with pytest.raises(UndeclaredAction, match="sqs:CreateQueue"):
        sneaky()


def test_iam_action_mapping():
    assert iam_action("opensearch", "DescribeDomains") == "es:DescribeDomains"
    assert iam_action("resourcegroupstaggingapi", "GetResources") == "tag:GetResources"
    assert iam_action("apigateway", "GetRestApis") == "apigateway:GET"
    assert iam_action("s3", "HeadBucket") == "s3:ListBucket"
    assert iam_action("sts", "GetCallerIdentity") is None


def test_policy_for_daily_health_lists_its_actions():
    from flows.daily_health.flow import TASKS

    actions = policy_for(TASKS)["Statement"][0]["Action"]
    for a in ("lambda:GetFunctionConfiguration", "dynamodb:DescribeTable", "logs:FilterLogEvents", "tag:GetResources",
              "cloudwatch:DescribeAlarms", "es:ESHttpGet", "sns:Publish"):
        assert a in actions
    assert not any(a.endswith(("Delete*", "*")) for a in actions)


def test_unreachable_endpoint_fails_in_seconds(monkeypatch, closed_port):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    aws.reset_clients()
    c = aws.client("dynamodb", "us-east-1")
    # what bounds the wait, rather than a wall-clock figure: a short connect timeout and few attempts
    assert c.meta.config.connect_timeout <= 3 and c.meta.config.retries["total_max_attempts"] <= 4
    monkeypatch.setenv("OPSBOOK_MAX_ATTEMPTS", "1")  # the message, without the retries' backoff (~5 s)
    aws.reset_clients()
    c = aws.client("dynamodb", "us-east-1")
    with pytest.raises(Exception) as exc:
        c.list_tables()
    assert "cannot reach AWS endpoint" in aws.describe_error(exc.value)
    aws.reset_clients()


def test_loopback_guard(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://dynamodb.us-east-1.amazonaws.com")
    with pytest.raises(RuntimeError, match="not a loopback address"):
        aws.require_loopback_endpoint()
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(RuntimeError):
        aws.require_loopback_endpoint()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    assert aws.require_loopback_endpoint() == "http://127.0.0.1:5000"


def test_parallel_returns_errors_and_respects_the_deadline():
    release = threading.Event()

    def work(x):
        if x == 2:
            raise ValueError("boom")
        if x == 3:
            release.wait(60)  # still running when parallel returns: it returned at the deadline, not when work ended
        return x * 10

    result: list = []
    caller = threading.Thread(target=lambda: result.append(aws.parallel(work, [1, 2, 3], deadline=aws.Deadline(0.5))))
    caller.start()
    caller.join(30)  # a hang guard only; the assertion is that it returned while item 3 was still blocked
    returned_first = bool(result) and not release.is_set()
    release.set()
    assert returned_first, "parallel waited for a task past its deadline"
    out = result[0]
    assert out[0] == (1, 10, None)
    assert isinstance(out[1][2], ValueError)
    assert isinstance(out[2][2], aws.DeadlineExceeded)


def test_rate_limiter_spaces_calls():
    lim = aws.RateLimiter(20)
    t0 = time.monotonic()
    for _ in range(6):
        lim.acquire()
    assert time.monotonic() - t0 >= 0.24


# --- assumed-role clients and the call gate (fleet) ---------------------------------------------------

FLEET_B = "222222222222"


def test_assumed_role_clients_are_separate_and_reach_threads(aws_mock):
    @declares(["sts:AssumeRole"])
    def assume():
        return aws.assume_role(f"arn:aws:iam::{FLEET_B}:role/opsbook-readonly", "opsbook-fleet-test", "us-east-2")

    base = aws.client("sts", "us-east-2")
    role = assume()
    assert role.account == FLEET_B and role.arn.endswith(":assumed-role/opsbook-readonly/opsbook-fleet-test")
    assert role.secret_access_key not in repr(role) and role.session_token not in repr(role)
    with aws.assumed(role):
        inside = aws.client("sts", "us-east-2")
        assert inside is not base and inside is aws.client("sts", "us-east-2")  # cached per role
        in_thread = aws.parallel(lambda _: aws.client("sts", "us-east-2").get_caller_identity()["Account"], [1, 2])
        assert [r for _, r, _ in in_thread] == [FLEET_B, FLEET_B]
        assert inside.get_caller_identity()["Account"] == FLEET_B
    assert aws.client("sts", "us-east-2") is base  # outside: the old client, the old credentials
    assert base.get_caller_identity()["Account"] == "123456789012"


def test_gate_sees_each_call_with_its_region(aws_mock):
    seen = []
    c = aws.client("cloudwatch", "eu-west-1")
    describe = declares(["cloudwatch:DescribeAlarms"])(lambda: c.describe_alarms())
    with aws.gated(lambda s, o, r: seen.append((s, o, r))):
        describe()
    describe()  # outside the context: no gate
    assert seen == [("cloudwatch", "DescribeAlarms", "eu-west-1")]


def test_sessions_share_one_model_loader_and_its_search_path_stays_put(aws_mock):
    first = aws.client("dynamodb", "us-east-1")
    paths = list(aws._loader.search_paths)
    for _ in range(3):
        aws.reset_clients()
        again = aws.client("dynamodb", "us-east-1")
        assert again is not first and again._loader is first._loader  # a new client, the same parsed models
    assert aws._loader.search_paths == paths  # boto3 adds its data path once, not once per session


def test_requests_opsbook_signs_itself_use_the_assumed_roles_credentials(aws_mock, monkeypatch):
    from tasks.opensearch import os_client

    monkeypatch.delenv("OPSBOOK_LOOPBACK_ONLY")  # a real account's cluster (the suite's loopback-only rule refuses it)

    mine = aws.credentials().access_key
    role = aws.assume_role("arn:aws:iam::210987654321:role/opsbook-read", "fleet", "us-east-1")
    with aws.assumed(role):
        assert aws.credentials().access_key == role.access_key_id != mine
        signed = os_client("https://search-leh.ap-northeast-2.es.amazonaws.com", "ap-northeast-2")  # made, not called
        assert signed.transport.kwargs["http_auth"].signer.credentials.access_key == role.access_key_id
    assert aws.credentials().access_key == mine


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_bounded_run_starts_no_call_after_its_deadline_and_caps_each_attempt(aws_mock, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(aws.time, "monotonic", clock)
    deadline = aws.Deadline(12.0, started=clock.now)
    with aws.bounded(deadline):
        c = aws.client("dynamodb", "us-east-1")
        assert c.meta.config.read_timeout == 3.0 and c.meta.config.connect_timeout == 3.0  # 12 s / 3 attempts: the 3 s step
        c.list_tables()  # within the deadline: called
        clock.now += 13
        with pytest.raises(aws.DeadlineExceeded, match=r"dynamodb:ListTables not called: the run's deadline \(12 s\) had passed"):
            c.list_tables()
    # the healthy twin: outside the bound, the same call is made, with the configured timeouts
    plain = aws.client("dynamodb", "us-east-1")
    plain.list_tables()
    assert plain.meta.config.read_timeout == 15.0 and plain is not c


def test_parallel_bounds_the_calls_of_its_items_by_its_deadline(aws_mock):
    assert aws._bound.get() is None
    seen = aws.parallel(lambda _: aws._bound.get(), [1, 2], deadline=aws.Deadline(30))
    assert all(isinstance(bound, aws.Deadline) for _, bound, _ in seen)
    assert aws._bound.get() is None  # not left behind in the caller


class Raw:
    """A response's raw body, as botocore reads it (``stream``)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs):
        yield self.body


def _answers(*statuses_bodies):
    """A before-send handler answering each attempt in turn (no network), and the attempts it saw."""
    from botocore.awsrequest import AWSResponse

    seen = []

    def handler(request, **kwargs):
        status, body = statuses_bodies[min(len(seen), len(statuses_bodies) - 1)]
        seen.append(request.url)
        return AWSResponse(request.url, status, {"Content-Type": "application/x-amz-json-1.0"}, Raw(body))

    return handler, seen


THROTTLED = (400, b'{"__type": "ThrottlingException", "message": "Rate exceeded"}')
TABLES = (200, b'{"TableNames": ["t"]}')


def test_a_call_throttled_once_then_answered_is_one_call_two_attempts_one_retry(monkeypatch):
    import botocore.endpoint

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: the handler answers every attempt
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda s: None)  # botocore's backoff, not waited for here
    aws.reset_clients()
    c = aws.client("dynamodb", "us-east-1")
    handler, seen = _answers(THROTTLED, TABLES)
    c.meta.events.register_first("before-send.dynamodb.ListTables", handler)
    checked = []
    monkeypatch.setattr(aws, "check_call", lambda s, o: checked.append((s, o)))
    log = aws.start_call_log()
    assert c.list_tables()["TableNames"] == ["t"]
    assert len(seen) == 2 and log.total == 2 and log.retries_total == 1
    assert log.by_operation() == {"dynamodb:ListTables": 2} and log.retries_by_operation() == {"dynamodb:ListTables": 1}
    assert log.calls[("dynamodb", "ListTables")] == 1
    assert checked == [("dynamodb", "ListTables")]  # the IAM check sees the call once, not each attempt
    aws.reset_clients()


def test_a_call_answered_at_once_has_no_retry_healthy_twin(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    aws.reset_clients()
    c = aws.client("dynamodb", "us-east-1")
    handler, seen = _answers(TABLES)
    c.meta.events.register_first("before-send.dynamodb.ListTables", handler)
    monkeypatch.setattr(aws, "check_call", lambda s, o: None)
    log = aws.start_call_log()
    c.list_tables()
    assert len(seen) == 1 and log.total == 1 and log.retries_total == 0 and log.retries_by_operation() == {}
    aws.reset_clients()


UNAVAILABLE = (500, b'{"__type": "InternalServerError", "message": "try again"}')


SLOW_DOWN_HEAD = (503, b"")  # S3's SlowDown to a HEAD: no body, no code


@pytest.mark.parametrize(("answer", "attempts"), [(THROTTLED, 10), (SLOW_DOWN_HEAD, 10), (UNAVAILABLE, 4)])
def test_throttling_is_retried_nine_times_with_a_short_backoff_other_errors_three(monkeypatch, answer, attempts):
    """A throttled call (a throttling code, or a 503 without one) gets 10 attempts, each wait at most 5 s (botocore's cap
    is 20 s); a 500 keeps botocore's 4
    (a hung or failing endpoint is not waited for ten times)."""
    import botocore.endpoint
    from botocore.exceptions import ClientError

    slept = []
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setattr(botocore.endpoint.time, "sleep", slept.append)
    monkeypatch.setattr(aws, "check_call", lambda s, o: None)
    aws.reset_clients()
    c = aws.client("dynamodb", "us-east-1")
    handler, seen = _answers(answer)
    c.meta.events.register_first("before-send.dynamodb.ListTables", handler)
    log = aws.start_call_log()
    with pytest.raises(ClientError):
        c.list_tables()
    assert len(seen) == attempts and log.total == attempts and log.retries_total == attempts - 1
    assert len(slept) == attempts - 1 and max(slept) <= 5.0
    aws.reset_clients()


def test_a_call_throttled_five_times_then_answered_succeeds(monkeypatch):
    import botocore.endpoint

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda s: None)
    monkeypatch.setattr(aws, "check_call", lambda s, o: None)
    aws.reset_clients()
    c = aws.client("dynamodb", "us-east-1")
    handler, seen = _answers(*[THROTTLED] * 5, TABLES)
    c.meta.events.register_first("before-send.dynamodb.ListTables", handler)
    log = aws.start_call_log()
    assert c.list_tables()["TableNames"] == ["t"] and log.retries_total == 5 and len(seen) == 6
    aws.reset_clients()


def test_a_burst_of_an_api_with_a_low_quota_waits_its_turn_against_aws(aws_mock, monkeypatch):
    """DescribeLogGroups (5/s) in parallel: each call takes a slot of its API's limiter first; other APIs do not."""
    taken = []

    class Recorder:
        def __init__(self, api, tps):
            self.api, self.tps = api, tps

        def acquire(self):
            taken.append((self.api, self.tps))

    monkeypatch.setattr(aws, "limiter", Recorder)
    c = aws.client("logs", "us-east-2")

    @declares(["logs:DescribeLogGroups", "logs:CreateLogGroup"])
    def burst():
        c.create_log_group(logGroupName="/g")
        return aws.parallel(lambda i: c.describe_log_groups(logGroupNamePrefix="/g"), range(8))

    assert all(err is None for _, _, err in burst())
    assert taken == [("describe_log_groups", 5.0)] * 8


def test_the_limiter_spaces_calls_only_when_quotas_are_on(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")  # the sandbox: quotas off (auto)
    assert aws.limiter("describe_log_groups", 5.0).interval == 0
    monkeypatch.setenv("OPSBOOK_QUOTAS", "on")
    assert aws.limiter("describe_log_groups", 5.0).interval == pytest.approx(0.2)


def _cycling(*answers):
    from itertools import cycle

    from botocore.awsrequest import AWSResponse

    it, seen = cycle(answers), []

    def handler(request, **kwargs):
        status, body = next(it)
        seen.append(status)
        return AWSResponse(request.url, status, {"Content-Type": "application/x-amz-json-1.0"}, Raw(body))

    return handler, seen


@pytest.mark.parametrize(("answers", "calls", "ok"), [
    ((THROTTLED, THROTTLED, TABLES), 200, True),  # 400 throttled retries: botocore's quota (500 tokens, 5 each) would run dry
    ((UNAVAILABLE,), 40, False),  # failures still spend it: once dry, a failing call is not retried
])
def test_throttled_retries_do_not_spend_the_retry_quota_failures_do(monkeypatch, answers, calls, ok):
    import botocore.endpoint
    from botocore.exceptions import ClientError

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda s: None)
    monkeypatch.setattr(aws, "check_call", lambda s, o: None)
    aws.reset_clients()
    c = aws.client("dynamodb", "us-east-1")
    handler, seen = _cycling(*answers)
    c.meta.events.register_first("before-send.dynamodb.ListTables", handler)
    outcomes = []
    for _ in range(calls):
        try:
            outcomes.append(c.list_tables()["ResponseMetadata"]["RetryAttempts"])
        except ClientError as exc:
            outcomes.append(("failed", exc.response["ResponseMetadata"].get("RetryQuotaReached", False)))
    if ok:
        assert outcomes == [2] * calls
    else:
        assert outcomes[0] == ("failed", False) and outcomes[-1] == ("failed", True)
    aws.reset_clients()
