"""diagnose-api-5xx against the sandbox: the likely cause ranked first with the next runbook
(KeyError, timeouts behind the 29 s integration timeout, AccessDenied against the role's policies),
a healthy API left OK, a missing API CRIT, unreadable metrics UNKNOWN, IAM covered, nothing mutated."""

from __future__ import annotations

import json

import pytest

from flows.diagnose_api_5xx import TASKS, api_markdown, diagnose_api_5xx
from sandbox import diagnosis as sc
from tasks.api_diagnosis import classify, error_type, function_from_uri, statements_of
from tasks.findings import Finding, Status
from tasks.iam import iam_action, policy_for
from tasks.report import RunReport

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
    assert api_markdown(report).index("KeyError") < api_markdown(report).index("| ✅ OK |")
    assert report.api_calls_by_operation["apigateway:GetIntegration"] == 3
    assert report.api_calls_by_operation["cloudwatch:GetMetricData"] == 2  # one batch for the APIs, one for the functions
