"""check_durations reads every function's Duration p99 in one batched GetMetricData, next to the timeouts (one read a
function); a function that is gone is the state check's finding, not a duration one."""

from __future__ import annotations

import boto3

from opsbook import aws
from opsbook.findings import Status
from opsbook.resources import Discovered
from sandbox.lambda_timeouts import slow_durations
from tasks.awslambda import check_durations


def test_one_batched_metric_read_for_named_and_discovered_functions_and_a_missing_one_skipped(seeded, sandbox):
    hr = seeded("hr-resource-optimization", extra={"functions": 2})
    slow_durations(sandbox, hr, "TechTrendCollector", share=0.9)  # 180 s timeout
    boto3.client("lambda", region_name=hr.region, endpoint_url=sandbox.endpoint).delete_function(FunctionName="ResumeParser")
    found = Discovered(lambda_functions=["hr-resource-optimization-extra-fn-0", "hr-resource-optimization-extra-fn-1"], enabled=True)
    log = aws.start_call_log()
    findings = {f.resource: f for f in check_durations.fn(hr, found, aws.Deadline(30))}
    assert log.by_operation()["cloudwatch:GetMetricData"] == 1 and log.by_operation()["lambda:GetFunctionConfiguration"] == 10
    assert len(findings) == 9 and "ResumeParser" not in findings  # lambda-state says it is gone (CRIT)
    slow = findings["TechTrendCollector"]
    assert slow.status is Status.WARN and slow.value == 90.0 and slow.details["p99_ms"] == 162000.0 and slow.details["window_hours"] == 24
    assert findings["hr-resource-optimization-extra-fn-1"].status is Status.OK and "no invocations" in findings["hr-resource-optimization-extra-fn-1"].summary
    assert check_durations.fn(hr.model_copy(update={"lambda_functions": []}), Discovered(), aws.Deadline(30)) == []
