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
