"""diagnose-api-5xx against the sandbox: the likely cause ranked first with the next runbook
(KeyError, timeouts behind the 29 s integration timeout, AccessDenied against the role's policies),
a healthy API left OK, a missing API CRIT, unreadable metrics UNKNOWN, IAM covered, nothing mutated."""

from __future__ import annotations

import json

import pytest

from flows.diagnose_api_5xx.flow import TASKS, api_markdown, diagnose_api_5xx
from opsbook.findings import Finding, Status
from opsbook.iam import iam_action, policy_for
from opsbook.report import RunReport
from sandbox import diagnosis as sc
from tasks.apigateway import function_from_uri
from tasks.iam_roles import statements_of
from tasks.logs import classify, error_type

pytestmark = pytest.mark.usefixtures("prefect_harness")

HR, TODO = "hr-resource-optimization", "todo-app"
HR_GROUP = "/aws/lambda/ProjectRecommendationEngine"


def run(system: str, expect: str = "COMPLETED", **params) -> RunReport:
    state = diagnose_api_5xx(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    assert state.type.value == expect, (state.type, report.headline())
    assert report.undeclared_iam_actions == []
    allowed = set(policy_for(TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":", 1)) for op in report.api_calls_by_operation}
    assert used - {None} <= allowed, used - allowed
    # read-only: no call that changes anything
    assert not [op for op in report.api_calls_by_operation if op.split(":")[1].startswith(("Put", "Update", "Create", "Delete", "Attach"))]
    return report


def only(report: RunReport, check: str, resource: str) -> Finding:
    hits = [f for f in report.findings if f.check == check and f.resource == resource]
    assert len(hits) == 1, (check, resource, [(f.check, f.resource) for f in report.findings])
    return hits[0]


def test_hr_5xx_keyerror_is_ranked_first_with_masked_samples(seeded, sandbox):
    hr = seeded(HR)
    sc.hr_5xx_keyerror(sandbox, hr, requests=200, errors=24)
    report = run(HR, expect="FAILED")  # 12% 5XX >= 5%: CRIT
    v = report.findings[0]
    assert v.check == "api-5xx-verdict" and v.resource == sc.HR_API and v.status is Status.CRIT
    assert v.value == 12.0 and "24 5XX / 200 requests (12.0%)" in v.summary
    first = v.details["causes"][0]
    assert first["cause"] == "function errors of type KeyError" and first["function"] == "ProjectRecommendationEngine"
    assert "emergency-rollback" in first["next"] and first["weight"] == 24  # the 5 older lines are outside the hour
    errs = only(report, "lambda-errors-by-type", HR_GROUP)
    assert errs.value == 24 and errs.details["types"][0]["type"] == "KeyError"
    assert "[EMAIL]" in errs.details["types"][0]["samples"][0]
    integ = only(report, "api-integrations", sc.HR_API)
    assert integ.details["functions"] == ["ProjectRecommendationEngine", "AffinityScoreCalculator"]  # inventory + integrations
    role = only(report, "lambda-role", "ProjectRecommendationEngine")
    assert role.details["role"] == "LambdaExecutionRole-Team2" and any("Team2-DynamoDB-Access" in s for s in role.details["statements"])
    metrics = only(report, "api-metrics", sc.HR_API)
    assert metrics.details["errors_4xx"] == 3 and metrics.details["latency_max_ms"] == 650.0 and metrics.details["latency_p95_ms"] == 650.0
    text = json.dumps(report.public()) + api_markdown(report)
    assert "kim.minsu@example.com" not in text
    assert api_markdown(report).index("KeyError") < api_markdown(report).index("- ✅ **OK**: ")
    assert report.api_calls_by_operation["apigateway:GetIntegration"] == 3
    assert report.api_calls_by_operation["cloudwatch:GetMetricData"] == 2  # one batch for the APIs, one for the functions


def test_todo_timeouts_behind_the_29s_integration_timeout_point_to_remediate_lambda_timeout(seeded, sandbox):
    todo = seeded(TODO)
    sc.todo_timeouts(sandbox, todo, requests=150, timeouts=9)
    report = run(TODO, expect="FAILED")  # 6% >= 5%
    v = report.findings[0]
    assert v.resource == "todo-api" and v.status is Status.CRIT and v.value == 6.0
    first = v.details["causes"][0]
    assert first["kind"] == "timeout" and first["function"] == "todo-api" and first["weight"] == 9
    assert "29 s integration timeout ends requests before the function's own 30 s timeout" in first["cause"]
    assert first["next"].startswith("remediate-lambda-timeout")
    assert "Duration max 30000 ms" in first["evidence"]
    # the integrations name the function with its alias: one function, read once
    integ = only(report, "api-integrations", "todo-api")
    assert integ.details["functions"] == ["todo-api"] and integ.value == 2
    assert "(at the timeout)" in only(report, "lambda-metrics", "todo-api").summary
    assert only(report, "lambda-errors-by-type", "/aws/lambda/todo-api").details["types"][0]["timeout_after_s"] == 30.03


def test_access_denied_is_checked_against_the_roles_policies(seeded, sandbox):
    hr = seeded(HR)
    case = sc.hr_access_denied(sandbox, hr, requests=120, errors=15)
    report = run(HR, expect="FAILED")  # 12.5%
    first = report.findings[0].details["causes"][0]
    assert first["kind"] == "permissions" and first["cause"] == "permissions: AccessDeniedException"
    assert f"dynamodb:Query on {case['resource']}: no statement of role LambdaExecutionRole-Team2" in first["evidence"]
    assert "Team2-DynamoDB-Access" in first["evidence"] and "LambdaExecutionRole-Team2" in first["next"]
    role = only(report, "lambda-role", "ProjectRecommendationEngine")
    assert role.status is Status.WARN and role.details["denied"][0]["count"] == 15
    assert role.summary.startswith("AccessDenied in the logs for dynamodb:Query")
    ops = report.api_calls_by_operation
    assert ops["iam:GetRolePolicy"] == 1 and ops["iam:GetPolicyVersion"] == 1  # one inline, one attached policy (one role for both functions)


@pytest.mark.parametrize("name", [HR, TODO])
def test_healthy_api_is_left_ok(seeded, sandbox, name):
    system = seeded(name)
    sc.healthy_api(sandbox, system)
    report = run(name)
    v = report.findings[0]
    assert v.check == "api-5xx-verdict" and v.status is Status.OK and v.details["causes"] == []
    assert v.summary.startswith("OK: 0 5XX / 300 requests (0.0%)")
    assert report.status is Status.OK, [(f.check, f.resource, f.status.value, f.summary) for f in report.findings if f.status is not Status.OK]


@pytest.mark.parametrize("name", ["t-developer", "leh"])
def test_a_system_without_apis_has_nothing_to_check(sandbox, name):
    report = run(name)
    assert len(report.findings) == 1 and report.findings[0].summary.startswith("nothing to check") and report.api_calls == 0


def test_missing_api_is_crit(seeded, sandbox):
    todo = seeded(TODO)
    sc.delete_api(sandbox, todo)
    report = run(TODO, expect="FAILED", api="todo-api")
    v = report.findings[0]
    assert v.status is Status.CRIT and "no REST API has that name" in v.summary
    assert report.findings[0].check == "api-5xx-verdict" and "api-integrations" not in {f.check for f in report.findings[1:]}
    assert only(report, "lambda-config", "todo-api").status is Status.OK  # the inventory's function is still examined


def test_unknown_api_parameter_is_refused_with_the_known_names(seeded):
    seeded(TODO)
    state = diagnose_api_5xx(system=TODO, api="nope", return_state=True)
    assert state.is_failed() and "its APIs: todo-api" in str(state.result(raise_on_failure=False))


def test_unreadable_metrics_are_unknown_not_ok(seeded, sandbox):
    hr = seeded(HR)
    sc.hr_api(sandbox, hr)
    sc.metrics_unreadable(sandbox, hr)
    report = run(HR)
    v = report.findings[0]
    assert v.status is Status.UNKNOWN and report.status is Status.UNKNOWN
    assert "API metrics unavailable: GetMetricData: access denied" in v.summary
    assert only(report, "api-metrics", sc.HR_API).status is Status.UNKNOWN
    assert only(report, "lambda-metrics", "ProjectRecommendationEngine").status is Status.UNKNOWN
    assert "api-metrics" in " ".join(v.details["blind_spots"])


def test_logs_with_errors_but_unreadable_metrics_still_name_the_cause(seeded, sandbox):
    hr = seeded(HR)
    sc.hr_api(sandbox, hr)
    sc.function_logs(sandbox, hr, "ProjectRecommendationEngine", "ddb_throttle", 6)
    sc.metrics_unreadable(sandbox, hr)
    v = run(HR).findings[0]
    assert v.status is Status.WARN and v.details["causes"][0]["next"] == "remediate-dynamodb-throttling"


# --- pure parts ------------------------------------------------------------------------------------------


def test_function_from_uri():
    assert function_from_uri(sc.lambda_uri("us-east-2", "todo-api", "LIVE")) == ("todo-api", "LIVE", None)
    assert function_from_uri(sc.lambda_uri("us-east-2", "ResumeParser")) == ("ResumeParser", None, None)
    fn, _, problem = function_from_uri("arn:aws:apigateway:us-east-2:lambda:path/2015-03-31/functions/"
                                       "arn:aws:lambda:us-east-2:1:function:${stageVariables.fn}/invocations")
    assert fn is None and "stage variable" in problem
    assert function_from_uri("http://example.com/x") == (None, None, None)


@pytest.mark.parametrize("line,kind", [
    ("[ERROR]\tt\tid\tKeyError: 'x'", "KeyError"),
    ("2024 abc Task timed out after 30.03 seconds", "Task timed out"),
    ("[ERROR] ClientError: An error occurred (AccessDeniedException) when calling the Query operation", "AccessDeniedException"),
    ("Error: Runtime exited with error: signal: killed Runtime.ExitError", "Runtime.ExitError"),
    ("[ERROR] failed to process order", "ERROR (no exception type)"),
    ("[INFO] all fine", None),
])
def test_error_type(line, kind):
    assert error_type(line) == kind


def test_classify_counts_types_and_denied_actions():
    lines = ["[ERROR] x KeyError: 'a' kim@example.com"] * 3 + [
        "An error occurred (AccessDeniedException) ... is not authorized to perform: s3:GetObject on resource: arn:aws:s3:::b/k because"] * 2 + ["INFO ok"]
    fe = classify("f", "/aws/lambda/f", lines, len(lines), False)
    assert fe.total == 5 and [(t.type, t.count) for t in fe.types] == [("KeyError", 3), ("AccessDeniedException", 2)]
    assert fe.types[1].denied == [{"action": "s3:GetObject", "resource": "arn:aws:s3:::b/k", "count": 2}]
    assert "kim@example.com" not in json.dumps(fe.model_dump())


def test_policy_statements_cover_wildcards_and_denies():
    st = statements_of("p", json.dumps({"Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "arn:aws:dynamodb:*:*:table/A*"},
                                                      {"Effect": "Deny", "Action": ["dynamodb:DeleteItem"], "Resource": "*"}]}))
    assert st[0].covers("dynamodb:Query", "arn:aws:dynamodb:r:1:table/Abc") and not st[0].covers("dynamodb:Query", "arn:aws:dynamodb:r:1:table/B")
    assert st[1].covers("dynamodb:DeleteItem", "x") and not st[1].covers("s3:GetObject", "x")


def test_a_read_task_that_fails_outright_is_a_blind_spot_not_ok(seeded, sandbox, monkeypatch):
    todo = seeded(TODO)
    sc.healthy_api(sandbox, todo)
    import tasks.logs as ad

    def broken(*a, **k):
        raise RuntimeError("simulated crash in the log reader")

    monkeypatch.setattr(ad, "read_events", broken)  # every log group read raises inside the task
    report = run(TODO)
    v = report.findings[0]
    assert v.status is Status.UNKNOWN and "lambda-errors-by-type /aws/lambda/todo-api" in v.details["blind_spots"]
    assert "simulated crash" in only(report, "lambda-errors-by-type", "/aws/lambda/todo-api").summary


def test_metrics_published_by_stage_only_are_read(seeded, sandbox):
    from tasks.cloudwatch import read_api_metrics

    todo = seeded(TODO)
    sc.api_metrics(sandbox, todo, "todo-api", requests=100, errors_5xx=2, stage="prod")
    m = read_api_metrics.fn(todo, todo.api_gateway_apis)["todo-api"]
    assert (m.requests, m.errors_5xx, m.dimensions) == (100, 2, "ApiName+Stage=prod") and m.rate_5xx_pct == 2.0
