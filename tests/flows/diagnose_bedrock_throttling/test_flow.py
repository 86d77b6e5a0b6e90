"""diagnose-bedrock-throttling against the sandbox: HR QualitativeAnalysis throttled (peak minute, share,
quota in force, the exact increase command from the peak), its healthy twin OK, no Bedrock function in
the inventory a clear finding, quotas and a log group unreadable UNKNOWN without a made-up value, IAM covered,
read-only. The judging's edge cases (share threshold, quota matching, the increase's formulas) are test_judge.py's."""

from __future__ import annotations

import json

import pytest

from flows.diagnose_bedrock_throttling.flow import TASKS, bedrock_markdown, bedrock_targets, diagnose_bedrock_throttling
from opsbook.findings import Finding, Status
from opsbook.iam import iam_action, policy_for
from opsbook.inventory import load_system
from opsbook.report import RunReport
from sandbox import diagnosis as sc

pytestmark = pytest.mark.usefixtures("prefect_harness")

HR = "hr-resource-optimization"
SONNET = "Anthropic Claude 3 Sonnet"
TPM = f"On-demand InvokeModel tokens per minute for {SONNET}"
RPM = f"On-demand InvokeModel requests per minute for {SONNET}"


def run(system: str, expect: str = "COMPLETED", **params) -> RunReport:
    state = diagnose_bedrock_throttling(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    assert state.type.value == expect, (state.type, report.headline())
    assert report.undeclared_iam_actions == []
    allowed = set(policy_for(TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":", 1)) for op in report.api_calls_by_operation}
    assert used - {None} <= allowed, used - allowed
    assert not [op for op in report.api_calls_by_operation if "RequestServiceQuotaIncrease" in op or op.split(":")[1].startswith(("Put", "Update"))]
    return report


def only(report: RunReport, check: str, resource: str) -> Finding:
    hits = [f for f in report.findings if f.check == check and f.resource == resource]
    assert len(hits) == 1, (check, resource, [(f.check, f.resource) for f in report.findings])
    return hits[0]


def test_hr_qualitative_analysis_throttled_gives_peak_share_quota_and_the_increase_command(seeded, sandbox):
    hr = seeded(HR)
    case = sc.bedrock_throttled(sandbox, hr, throttles=30, peak=12, invocations=200)
    sc.bedrock_quota_values(sandbox, hr, {TPM: 150_000})  # in force below AWS's default 200000
    report = run(HR, expect="FAILED")  # 15% of invocations >= 5%
    v = report.findings[0]
    assert v.check == "bedrock-throttling-verdict" and v.status is Status.CRIT and v.value == 30
    peak_minute = case["peak_minute"].strftime("%Y-%m-%dT%H:%MZ")
    assert f"worst QualitativeAnalysis: 30 (15.0% of invocations), peak 12 in minute {peak_minute}" in v.summary
    f = only(report, "bedrock-throttles", "QualitativeAnalysis")
    assert f.status is Status.CRIT and f.details["peak_count"] == 12 and f.details["peak_minute"] == peak_minute
    assert f.details["requests"] == 30 and f.details["share_pct"] == 15.0 and f.details["max_retries_seen"] == 4  # the 4 older lines are outside
    assert sum(f.details["per_minute"].values()) == 30 and f.details["models"] == {case["model"]: 30}
    assert only(report, "bedrock-throttles", "VectorEmbeddingGenerator").status is Status.OK
    q = only(report, "bedrock-quotas", case["model"])
    assert {r["name"]: (r["value"], r["default"]) for r in q.details["quotas"]} == {RPM: (100.0, 100.0), TPM: (150_000.0, 200_000.0)}
    rec = only(report, "bedrock-recommendation", HR)
    # tokens: 150000 x (100 + 12) / 100 x 1.2 = 201600 -> 210000; requests: (100 + 12) x 1.2 = 134.4 -> 140
    assert rec.details["commands"] == [
        f"aws service-quotas request-service-quota-increase --service-code bedrock --quota-code {sc.quota_code(TPM)} --desired-value 210000 --region us-east-2",
        f"aws service-quotas request-service-quota-increase --service-code bedrock --quota-code {sc.quota_code(RPM)} --desired-value 140 --region us-east-2"]
    recs = " ".join(rec.details["recommendations"])
    assert "botocore gave up after 4 retries" in recs and "cross-Region inference" in recs and "cache responses" in recs
    assert rec.details["commands"][0] in v.summary
    md = bedrock_markdown(report)
    assert "```sh" in md and f"| {peak_minute} | 12 |" in md
    text = json.dumps(report.public()) + md
    assert "lee.jiwon@example.com" not in text
    # every page of the quotas (the sandbox serves 5 a page)
    assert report.api_calls_by_operation["service-quotas:ListServiceQuotas"] == 5
    assert report.api_calls_by_operation["cloudwatch:GetMetricData"] == 1


def test_no_throttling_is_ok_and_shows_the_on_demand_quotas(seeded, sandbox):
    hr = seeded(HR)
    sc.enable_bedrock_quotas()
    sc.function_logs(sandbox, hr, "QualitativeAnalysis", "info", 5)
    sc.function_metrics(sandbox, hr, "QualitativeAnalysis", invocations=80)
    report = run(HR)
    v = report.findings[0]
    assert v.status is Status.OK and report.status is Status.OK and v.value == 0
    assert "QualitativeAnalysis, VectorEmbeddingGenerator (LambdaFunction.bedrock in the inventory)" in v.summary
    assert not [f for f in report.findings if f.check == "bedrock-recommendation"]
    q = only(report, "bedrock-quotas", "on-demand (no model named in the lines)")
    assert q.value == 12 and all(r["name"].startswith("On-demand") for r in q.details["quotas"])


def test_no_bedrock_function_in_the_inventory_is_a_clear_finding(sandbox):
    name = "todo-app"
    report = run(name)
    assert len(report.findings) == 1 and report.api_calls == 0
    assert report.findings[0].summary.startswith(f"nothing to check: the inventory of {name} names no Bedrock-calling function")


def test_functions_parameter_overrides_the_inventory():
    hr = load_system(HR)
    targets, how = bedrock_targets(hr, [])
    assert [t.function for t in targets] == ["QualitativeAnalysis", "VectorEmbeddingGenerator"] and how == "LambdaFunction.bedrock in the inventory"
    targets, how = bedrock_targets(hr, ["QualitativeAnalysis", "NoSuchFunction"])
    assert [(t.function, t.group) for t in targets] == [("QualitativeAnalysis", "/aws/lambda/QualitativeAnalysis"), ("NoSuchFunction", "/aws/lambda/NoSuchFunction")]
    assert how == "the functions parameter"


@pytest.mark.outside_scoped_iam("logs:FilterLogEvents on *:log-group:/aws/lambda/NoSuchFunction",
                                reason="the functions parameter names a function the inventory does not: on AWS its read is refused, "
                                       "UNKNOWN all the same")
def test_quotas_and_a_log_group_unreadable_are_unknown_and_no_value_is_made_up(seeded, sandbox):
    hr = seeded(HR)
    sc.bedrock_throttled(sandbox, hr, throttles=10, peak=4, invocations=1000)  # 1%: WARN
    sc.quotas_unreadable(sandbox, hr)
    report = run(HR, functions=["QualitativeAnalysis", "NoSuchFunction"])
    q = only(report, "bedrock-quotas", "us-east-2")
    assert q.status is Status.UNKNOWN and "ListServiceQuotas: access denied" in q.summary
    gone = only(report, "bedrock-throttles", "NoSuchFunction")
    assert gone.status is Status.UNKNOWN and "log group does not exist" in gone.summary
    rec = only(report, "bedrock-recommendation", HR)
    assert rec.details["commands"] == [] and any("could not be read" in r and "no desired value computed" in r for r in rec.details["recommendations"])
    v = report.findings[0]
    assert v.status is Status.WARN and "quota in force UNKNOWN" in v.summary and "2 blind spot(s)" in v.summary
    assert v.details["chosen_by"] == "the functions parameter"
