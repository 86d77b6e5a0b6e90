"""diagnose-api-5xx against the sandbox: the reads end to end and the likely cause ranked first with the next runbook
(KeyError, then AccessDenied against the role's policies), its healthy twin OK, unreadable metrics and a read task
that fails UNKNOWN, IAM covered, nothing mutated. The judging's edge cases (thresholds, timeouts against the
integration timeout, a missing API or function, every blind spot) are test_judge.py's."""

from __future__ import annotations

import json

import pytest

from flows.diagnose_api_5xx.flow import TASKS, api_markdown, diagnose_api_5xx, select_apis
from opsbook.findings import Finding, Status
from opsbook.iam import iam_action, policy_for
from opsbook.inventory import load_system
from opsbook.report import RunReport
from sandbox import diagnosis as sc

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


def test_hr_5xx_keyerror_is_ranked_first_then_access_denied_against_the_roles_policies(seeded, sandbox):
    hr = seeded(HR)
    sc.hr_5xx_keyerror(sandbox, hr, requests=200, errors=24)
    resource = f"arn:aws:dynamodb:{hr.region}:{sc.ACCOUNT_ID}:table/EmployeeAffinity-Team2"  # not covered by the role's policies
    sc.function_logs(sandbox, hr, sc.HR_FUNCTION, "access_denied", 6, role=sc.HR_ROLE, action="dynamodb:Query", resource=resource)
    report = run(HR, expect="FAILED")  # 12% 5XX >= 5%: CRIT
    v = report.findings[0]
    assert v.check == "api-5xx-verdict" and v.resource == sc.HR_API and v.status is Status.CRIT
    assert v.value == 12.0 and "24 5XX / 200 requests (12.0%)" in v.summary
    first, second = v.details["causes"][:2]
    assert first["cause"] == "function errors of type KeyError" and first["function"] == "ProjectRecommendationEngine"
    assert "emergency-rollback" in first["next"] and first["weight"] == 24  # the 5 older lines are outside the hour
    assert second["kind"] == "permissions" and second["cause"] == "permissions: AccessDeniedException" and second["weight"] == 6
    assert f"dynamodb:Query on {resource}: no statement of role LambdaExecutionRole-Team2" in second["evidence"]
    assert "Team2-DynamoDB-Access" in second["evidence"] and "LambdaExecutionRole-Team2" in second["next"]
    errs = only(report, "lambda-errors-by-type", HR_GROUP)
    assert errs.value == 30 and errs.details["types"][0]["type"] == "KeyError"
    assert "[EMAIL]" in errs.details["types"][0]["samples"][0]
    integ = only(report, "api-integrations", sc.HR_API)
    assert integ.details["functions"] == ["ProjectRecommendationEngine", "AffinityScoreCalculator"]  # inventory + integrations
    role = only(report, "lambda-role", "ProjectRecommendationEngine")
    assert role.details["role"] == "LambdaExecutionRole-Team2" and any("Team2-DynamoDB-Access" in s for s in role.details["statements"])
    assert role.status is Status.WARN and role.details["denied"][0]["count"] == 6
    assert role.summary.startswith("AccessDenied in the logs for dynamodb:Query")
    metrics = only(report, "api-metrics", sc.HR_API)
    assert metrics.details["errors_4xx"] == 3 and metrics.details["latency_max_ms"] == 650.0 and metrics.details["latency_p95_ms"] == 650.0
    assert only(report, "lambda-metrics", "ProjectRecommendationEngine").details["duration_max_ms"] == 610.0
    text = json.dumps(report.public()) + api_markdown(report)
    assert "kim.minsu@example.com" not in text
    assert api_markdown(report).index("KeyError") < api_markdown(report).index("- ✅ **OK**: ")
    ops = report.api_calls_by_operation
    assert ops["apigateway:GetIntegration"] == 3
    assert ops["cloudwatch:GetMetricData"] == 2  # one batch for the APIs, one for the functions
    assert ops["iam:GetRolePolicy"] == 1 and ops["iam:GetPolicyVersion"] == 1  # one inline, one attached policy (one role for both functions)


def test_healthy_api_is_left_ok(seeded, sandbox):
    system = seeded(HR)
    sc.healthy_api(sandbox, system)
    report = run(HR)
    v = report.findings[0]
    assert v.check == "api-5xx-verdict" and v.status is Status.OK and v.details["causes"] == []
    assert v.summary.startswith("OK: 0 5XX / 300 requests (0.0%)")
    assert report.status is Status.OK, [(f.check, f.resource, f.status.value, f.summary) for f in report.findings if f.status is not Status.OK]


def test_a_system_without_apis_has_nothing_to_check(sandbox):
    report = run("t-developer")
    assert len(report.findings) == 1 and report.findings[0].summary.startswith("nothing to check") and report.api_calls == 0


def test_the_api_parameter_selects_one_api_and_an_unknown_name_is_refused_with_the_known_names():
    todo = load_system(TODO)
    assert select_apis(todo, "todo-api") == todo.api_gateway_apis and select_apis(todo, None) == todo.api_gateway_apis
    with pytest.raises(ValueError, match=r"todo-app names no API 'nope' \(its APIs: todo-api\)"):
        select_apis(todo, "nope")


def test_unreadable_metrics_are_unknown_and_the_cause_in_the_logs_still_named(seeded, sandbox):
    hr = seeded(HR)
    sc.hr_api(sandbox, hr)
    sc.function_logs(sandbox, hr, "ProjectRecommendationEngine", "ddb_throttle", 6)
    sc.metrics_unreadable(sandbox, hr)
    report = run(HR)
    v = report.findings[0]
    assert v.status is Status.WARN and v.details["causes"][0]["next"] == "remediate-dynamodb-throttling"
    assert "API metrics unavailable: GetMetricData: access denied" in v.summary
    assert only(report, "api-metrics", sc.HR_API).status is Status.UNKNOWN
    assert only(report, "lambda-metrics", "ProjectRecommendationEngine").status is Status.UNKNOWN
    assert "api-metrics" in " ".join(v.details["blind_spots"])


def test_a_read_task_that_fails_outright_is_a_blind_spot_not_ok(seeded, sandbox, monkeypatch):
    todo = seeded(TODO)
    sc.healthy_api(sandbox, todo)
    import tasks.logs as logs

    def broken(*a, **k):
        raise RuntimeError("simulated crash in the log reader")

    monkeypatch.setattr(logs, "read_events", broken)  # every log group read raises inside the task
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
