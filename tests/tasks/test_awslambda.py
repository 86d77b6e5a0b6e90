"""check_durations reads every function's Duration p99 in one batched GetMetricData, against the timeouts check_functions
read (no second read); a function that is gone is the state check's finding, not a duration one; one whose configuration
could not be read is UNKNOWN."""

from __future__ import annotations

import boto3

from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.resources import Discovered
from sandbox.lambda_timeouts import slow_durations
from tasks.awslambda import check_durations, check_functions


def test_one_batched_metric_read_for_named_and_discovered_functions_and_a_missing_one_skipped(seeded, sandbox):
    hr = seeded("hr-resource-optimization", extra={"functions": 2})
    slow_durations(sandbox, hr, "TechTrendCollector", share=0.9)  # 180 s timeout
    boto3.client("lambda", region_name=hr.region, endpoint_url=sandbox.endpoint).delete_function(FunctionName="ResumeParser")
    found = Discovered(lambda_functions=["hr-resource-optimization-extra-fn-0", "hr-resource-optimization-extra-fn-1"], enabled=True)
    states = check_functions.fn(hr, found, aws.Deadline(30))
    log = aws.start_call_log()
    findings = {f.resource: f for f in check_durations.fn(hr, states)}
    assert log.by_operation() == {"cloudwatch:GetMetricData": 1}
    assert len(findings) == 9 and "ResumeParser" not in findings  # lambda-state says it is gone (CRIT)
    slow = findings["TechTrendCollector"]
    assert slow.status is Status.WARN and slow.value == 90.0 and slow.details["p99_ms"] == 162000.0 and slow.details["window_hours"] == 24
    assert findings["hr-resource-optimization-extra-fn-1"].status is Status.OK and "no invocations" in findings["hr-resource-optimization-extra-fn-1"].summary
    assert check_durations.fn(hr, []) == []


def test_a_function_whose_configuration_could_not_be_read_is_unknown_with_the_reason(seeded):
    hr = seeded("hr-resource-optimization")
    denied = Finding(check="lambda-state", resource="ResumeParser", status=Status.UNKNOWN, summary="could not be read: access denied")
    [f] = check_durations.fn(hr, [denied])
    assert f.status is Status.UNKNOWN and "access denied" in f.summary and f.check == "lambda-duration"


def test_an_alias_of_a_function_that_could_not_be_read_is_unknown_not_left_out(monkeypatch):
    """A throttled GetFunctionConfiguration: the function and its declared alias are both UNKNOWN with the reason; a
    missing function's alias is not looked up (its CRIT says it all); a read one's alias is read (the healthy twin)."""
    from botocore.exceptions import ClientError

    from opsbook.inventory import load_system

    todo = load_system("todo-app")

    class Lambda:
        def __init__(self, code: str | None) -> None:
            self.code = code

        def get_function_configuration(self, FunctionName):
            if self.code:
                raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "GetFunctionConfiguration")
            return {"FunctionName": FunctionName, "State": "Active", "LastUpdateStatus": "Successful", "MemorySize": 512, "Timeout": 30}

        def get_alias(self, FunctionName, Name):
            return {"FunctionVersion": "3"}

    for code, alias in (("TooManyRequestsException", Status.UNKNOWN), ("ResourceNotFoundException", None), (None, Status.OK)):
        monkeypatch.setattr(aws, "client", lambda *a, _c=Lambda(code), **k: _c)
        findings = check_functions.fn(todo, Discovered(), aws.Deadline(30))
        got = [f for f in findings if f.check == "lambda-alias"]
        assert [f.status for f in got] == ([alias] if alias else []), findings
        if alias is Status.UNKNOWN:
            assert "the function could not be read (GetFunctionConfiguration: TooManyRequestsException" in got[0].summary
