"""diagnose-bedrock-throttling against the sandbox: HR QualitativeAnalysis throttled (peak minute, share,
quota in force, the exact increase command from the peak), no throttling OK, no Bedrock function in
the inventory a clear finding, quotas unreadable UNKNOWN without a made-up value, IAM covered, read-only."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from flows.diagnose_bedrock_throttling.flow import (
    TASKS,
    bedrock_markdown,
    diagnose_bedrock_throttling,
)
from opsbook.findings import Finding, Status
from opsbook.iam import iam_action, policy_for
from opsbook.report import RunReport
from sandbox import diagnosis as sc
from flows.diagnose_bedrock_throttling.judge import increase, match_quotas, model_key, nice_ceil
from tasks.logs import LogTarget as Target
from tasks.logs import model_of, summarize_throttles
from tasks.servicequotas import Quota

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


@pytest.mark.parametrize("name", ["todo-app", "leh", "t-developer"])
def test_no_bedrock_function_in_the_inventory_is_a_clear_finding(sandbox, name):
    report = run(name)
    assert len(report.findings) == 1 and report.api_calls == 0
    assert report.findings[0].summary.startswith(f"nothing to check: the inventory of {name} names no Bedrock-calling function")


def test_functions_parameter_overrides_the_inventory(seeded, sandbox):
    todo = seeded("todo-app")
    sc.enable_bedrock_quotas()
    case = sc.bedrock_throttled(sandbox, todo, function="todo-api", throttles=4, peak=2, invocations=400, retries=0,
                                model="us.anthropic.claude-3-5-sonnet-20240620-v1:0")
    report = run("todo-app", functions=["todo-api"])
    f = only(report, "bedrock-throttles", "todo-api")
    assert f.status is Status.WARN and f.value == 4 and f.details["share_pct"] == 1.0 and f.details["max_retries_seen"] is None
    # a cross-Region profile: its cross-Region tokens quota (no requests quota for cross-Region in the sandbox)
    q = only(report, "bedrock-quotas", case["model"])
    assert [r["name"] for r in q.details["quotas"]] == ["Cross-Region InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet"]
    rec = only(report, "bedrock-recommendation", "todo-app")
    assert rec.details["recommendations"][0].startswith("no retries visible in the log lines: add exponential backoff with full jitter")
    assert not any("use cross-Region inference" in r for r in rec.details["recommendations"])  # already on a profile


def test_quotas_unreadable_is_unknown_and_no_value_is_made_up(seeded, sandbox):
    hr = seeded(HR)
    sc.bedrock_throttled(sandbox, hr, throttles=10, peak=4, invocations=1000)  # 1%: WARN
    sc.quotas_unreadable(sandbox, hr)
    report = run(HR)
    q = only(report, "bedrock-quotas", "us-east-2")
    assert q.status is Status.UNKNOWN and "ListServiceQuotas: access denied" in q.summary
    rec = only(report, "bedrock-recommendation", HR)
    assert rec.details["commands"] == [] and any("could not be read" in r and "no desired value computed" in r for r in rec.details["recommendations"])
    v = report.findings[0]
    assert v.status is Status.WARN and "quota in force UNKNOWN" in v.summary and "blind spot" in v.summary


def test_unreadable_log_groups_are_unknown_not_ok(seeded, sandbox):
    hr = seeded(HR)
    sc.enable_bedrock_quotas()
    report = run(HR, functions=["NoSuchFunction"])
    assert report.findings[0].status is Status.UNKNOWN and report.status is Status.UNKNOWN
    assert "log group does not exist" in only(report, "bedrock-throttles", "NoSuchFunction").summary


# --- pure parts --------------------------------------------------------------------------------------------


def test_model_ids_match_their_quota_names():
    assert model_of("call modelId=anthropic.claude-3-5-sonnet-20240620-v1:0 failed") == "anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert model_of("profile us.anthropic.claude-3-haiku-20240307-v1:0.") == "us.anthropic.claude-3-haiku-20240307-v1:0"
    assert model_of("no model here") is None
    assert model_key("anthropic.claude-3-sonnet-20240229-v1:0") == (["3", "claude", "sonnet"], False)
    quotas = [Quota(code=sc.quota_code(q["QuotaName"]), name=q["QuotaName"], value=q["Value"]) for q in sc.bedrock_quotas("us-east-2")]
    names = lambda m: [q.name for q in match_quotas(quotas, m)]  # noqa: E731
    assert names("anthropic.claude-3-sonnet-20240229-v1:0") == [RPM, TPM]  # not 3.5 Sonnet
    assert names("anthropic.claude-3-5-sonnet-20241022-v2:0") == [
        "On-demand InvokeModel requests per minute for Anthropic Claude 3.5 Sonnet V2", "On-demand InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet V2"]
    assert names("amazon.titan-embed-text-v2:0")[1] == "On-demand InvokeModel tokens per minute for Amazon Titan Text Embeddings V2"
    assert names("meta.llama3-70b-instruct-v1:0")[0] == "On-demand InvokeModel requests per minute for Meta Llama 3 70B Instruct"


def test_desired_values_from_the_peak():
    assert [nice_ceil(x) for x in (96, 134.4, 201600, 1001)] == [96, 140, 210000, 1100]
    tpm = Quota(code="L-1", name=TPM, value=200_000)
    inc = increase("us-east-2", tpm, peak_unserved=10, headroom=1.2, tokens_per_call=1500, rpm=None, peak_share=None)
    assert inc.desired == 260000 and "1500 tokens a call" in inc.basis  # (200000 + 15000) x 1.2 = 258000
    assert increase("us-east-2", tpm, 10, 1.2, None, None, None) is None  # nothing to base it on: no made-up value
    assert increase("us-east-2", tpm, 0, 1.2, 1500, None, None) is None


def test_summarize_throttles_sees_application_retries():
    now = datetime.now(timezone.utc)
    rid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    events = [{"timestamp": int((now - timedelta(seconds=i)).timestamp() * 1000), "message": f"[ERROR] {rid} ThrottlingException, retrying"} for i in range(3)]
    s = summarize_throttles(Target(function="f", group="/aws/lambda/f"), events + [{"timestamp": 0, "message": "INFO fine"}])
    assert s.count == 3 and s.requests == 1 and s.retries_visible and s.app_retries >= 1
