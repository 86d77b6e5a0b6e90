"""diagnose-bedrock-throttling's judge, fed directly (no sandbox, no Prefect): the share of invocations at and around
crit_share_pct, the quotas in force per model, the increase computed from the peak (never made up), what to do,
and every piece that could not be read UNKNOWN, never OK."""

from __future__ import annotations

from flows.diagnose_bedrock_throttling.judge import (
    VERDICT,
    affected_share,
    increase,
    judge_throttling,
    match_quotas,
    model_key,
    nice_ceil,
    parse_quota_name,
    peak_share,
    recommendations,
)
from opsbook.findings import Finding, Status
from opsbook.inventory import LambdaFunction, System
from tasks.cloudwatch import UsageMetrics
from tasks.logs import LogTarget, ThrottleStats
from tasks.servicequotas import Quota, QuotaSet

SYSTEM = System(name="hr", region="us-east-2", lambda_functions=[LambdaFunction(name="Qual", bedrock=True), LambdaFunction(name="Vec", bedrock=True)])
TARGETS = [LogTarget(function="Qual", group="/aws/lambda/Qual"), LogTarget(function="Vec", group="/aws/lambda/Vec")]
HOW = "LambdaFunction.bedrock in the inventory"
SONNET = "anthropic.claude-3-sonnet-20240229-v1:0"
TPM = "On-demand InvokeModel tokens per minute for Anthropic Claude 3 Sonnet"
RPM = "On-demand InvokeModel requests per minute for Anthropic Claude 3 Sonnet"
QUOTAS = [Quota(code="L-RPM", name=RPM, value=100, default=100), Quota(code="L-TPM", name=TPM, value=150_000, default=200_000),
          Quota(code="L-35T", name="On-demand InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet", value=400_000),
          Quota(code="L-35V2", name="On-demand InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet V2", value=400_000),
          Quota(code="L-X35", name="Cross-Region InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet", value=800_000),
          Quota(code="L-TE2", name="On-demand InvokeModel tokens per minute for Amazon Titan Text Embeddings V2", value=300_000),
          Quota(code="L-L3", name="On-demand InvokeModel requests per minute for Meta Llama 3 70B Instruct", value=400),
          Quota(code="L-BAT", name="Batch inference job size (in GB)", value=1)]
PEAK = "2026-01-05T09:12Z"


def throttled(count: int = 30, peak: int = 12, fn: str = "Qual", model: str | None = SONNET, **kw) -> ThrottleStats:
    per_minute, rest, m = {PEAK: peak}, count - peak, 0
    while rest > 0:  # the other minutes, none above the peak (earlier: a tie goes to the peak minute)
        per_minute[f"2026-01-05T08:{m:02d}Z"] = min(peak, rest)
        rest, m = rest - peak, m + 1
    return ThrottleStats(**{"function": fn, "group": f"/aws/lambda/{fn}", "count": count, "requests": count, "per_minute": per_minute,
                            "peak_minute": PEAK, "peak_count": peak, "models": {model: count} if model else {}, "max_retries_seen": 4,
                            "samples": ["[ERROR] ThrottlingException modelId=" + (model or "?")], **kw})


def quiet(fn: str = "Vec") -> ThrottleStats:
    return ThrottleStats(function=fn, group=f"/aws/lambda/{fn}")


def usage(qual: float | None = 200, vec: float | None = 80, **kw) -> UsageMetrics:
    return UsageMetrics(**{"invocations": {"Qual": qual, "Vec": vec}, "invocations_per_minute": {"Qual": {PEAK: 40.0}}, **kw})


def judge(qual: ThrottleStats | None = None, vec: ThrottleStats | None = None, use: UsageMetrics | None = None, quotas: QuotaSet | None = None,
          crit_share_pct: float = 5.0) -> tuple[Finding, list[Finding]]:
    stats = {"Qual": qual or quiet("Qual"), "Vec": vec or quiet("Vec")}
    v, findings = judge_throttling(SYSTEM, TARGETS, HOW, stats, use or usage(), quotas or QuotaSet(quotas=QUOTAS), 60, 1.2, crit_share_pct)
    assert v.check == VERDICT and VERDICT not in {f.check for f in findings}
    return v, findings


def one(findings: list[Finding], check: str, resource: str) -> Finding:
    hits = [f for f in findings if f.check == check and f.resource == resource]
    assert len(hits) == 1, (check, resource, [(f.check, f.resource) for f in findings])
    return hits[0]


# --- no throttling, empty, unreadable -------------------------------------------------------------------------------


def test_no_throttling_is_ok_with_the_on_demand_quotas():
    v, findings = judge()
    assert v.status is Status.OK and v.value == 0
    assert v.summary == f"OK: no ThrottlingException in the last 60 min in Qual, Vec ({HOW})"
    f = one(findings, "bedrock-throttles", "Qual")
    assert f.status is Status.OK and f.summary == "no ThrottlingException in the last 60 min (200 invocations)"
    assert one(findings, "bedrock-throttles", "Vec").status is Status.OK
    q = one(findings, "bedrock-quotas", "on-demand (no model named in the lines)")
    assert q.status is Status.OK and q.value == 6 and all(r["name"].startswith("On-demand") for r in q.details["quotas"])
    assert "bedrock-recommendation" not in {f.check for f in findings}


def test_no_invocations_and_no_throttle_is_ok():
    f = one(judge(use=usage(qual=None))[1], "bedrock-throttles", "Qual")
    assert f.status is Status.OK and f.summary == "no ThrottlingException in the last 60 min (no invocations)"


def test_no_quota_listed_is_unknown_never_ok():
    v, findings = judge(quotas=QuotaSet(quotas=[]))
    q = one(findings, "bedrock-quotas", "on-demand (no model named in the lines)")
    assert q.status is Status.UNKNOWN and q.summary == "could not be read: no per-minute Bedrock quota in us-east-2 (0 quotas listed)"
    assert v.status is Status.OK and ". 1 blind spot(s): bedrock-quotas on-demand" in v.summary


def test_unreadable_log_groups_are_unknown_not_ok():
    gone = ThrottleStats(function="Qual", group="/aws/lambda/Qual", error="log group does not exist (never invoked, or logs elsewhere)")
    v, findings = judge(qual=gone)
    assert one(findings, "bedrock-throttles", "Qual").summary == "could not be read: /aws/lambda/Qual: log group does not exist (never invoked, or logs elsewhere)"
    assert v.status is Status.UNKNOWN and v.summary == "UNKNOWN: no ThrottlingException in 1 function(s), but Qual could not be read"
    v, _ = judge(qual=gone, vec=gone.model_copy(update={"function": "Vec", "group": "/aws/lambda/Vec"}))
    assert v.status is Status.UNKNOWN and v.summary.startswith("UNKNOWN: no log group of 2 function(s) could be read (log group does not exist")


# --- the share of invocations against crit_share_pct ------------------------------------------------------------------


def test_share_at_the_crit_threshold_is_crit_just_below_warn():
    at, below, above = (judge(qual=throttled(count=n, peak=min(n, 3)), use=usage(qual=100))[0] for n in (5, 4, 6))
    assert (at.status, below.status, above.status) == (Status.CRIT, Status.WARN, Status.CRIT)
    assert "worst Qual: 5 (5.0% of invocations)" in at.summary
    assert judge(qual=throttled(count=5, peak=3), use=usage(qual=100), crit_share_pct=6.0)[0].status is Status.WARN


def test_throttled_function_gives_peak_share_quota_and_the_increase_command():
    v, findings = judge(qual=throttled())
    f = one(findings, "bedrock-throttles", "Qual")
    assert f.status is Status.CRIT and f.value == 30 and f.details["share_pct"] == 15.0 and f.details["invocations"] == 200
    assert f.summary.startswith(f"30 ThrottlingException lines (30 requests) in the last 60 min; 15.0% of 200 invocations affected; peak 12 in minute {PEAK}; "
                                f"models: {SONNET}; botocore retried up to 4 times")
    q = one(findings, "bedrock-quotas", SONNET)
    assert [r["name"] for r in q.details["quotas"]] == [RPM, TPM] and q.summary.startswith(f"{RPM}: 100 (AWS default 100) [L-RPM]; {TPM}: 150000")
    rec = one(findings, "bedrock-recommendation", "hr")
    # tokens (no tokens a call): 150000 x (100 + 12) / 100 x 1.2 = 201600 -> 210000; requests: (100 + 12) x 1.2 = 134.4 -> 140
    assert rec.details["commands"] == [
        "aws service-quotas request-service-quota-increase --service-code bedrock --quota-code L-TPM --desired-value 210000 --region us-east-2",
        "aws service-quotas request-service-quota-increase --service-code bedrock --quota-code L-RPM --desired-value 140 --region us-east-2"]
    assert rec.status is Status.WARN and rec.details["read_only"] == "nothing was requested"
    assert v.status is Status.CRIT and v.value == 30
    assert v.summary == (f"CRIT: 30 ThrottlingException lines in the last 60 min in Qual; worst Qual: 30 (15.0% of invocations), peak 12 in minute {PEAK}; "
                         f"quota in force: '{TPM}' 150000. Next: `{rec.details['commands'][0]}`; backoff with jitter")


def test_share_unknown_without_invocations_is_warn_not_crit():
    f = one(judge(qual=throttled(), use=usage(qual=None))[1], "bedrock-throttles", "Qual")
    assert f.status is Status.WARN and "share unknown (no AWS/Lambda Invocations datapoints)" in f.summary
    f = one(judge(qual=throttled(), use=UsageMetrics(error="GetMetricData: access denied"))[1], "bedrock-throttles", "Qual")
    assert f.status is Status.WARN and "share unknown (GetMetricData: access denied)" in f.summary


def test_truncated_lines_and_retries_are_said():
    f = one(judge(qual=throttled(truncated=True, max_retries_seen=None, app_retries=2))[1], "bedrock-throttles", "Qual")
    assert f.summary.endswith(" (first lines only: a lower bound)") and "no retries visible, 2 application retries" in f.summary


# --- quotas ---------------------------------------------------------------------------------------------------------


def test_quotas_unreadable_is_unknown_and_no_value_is_made_up():
    v, findings = judge(qual=throttled(count=10, peak=4), use=usage(qual=1000), quotas=QuotaSet(error="ListServiceQuotas: access denied"))
    q = one(findings, "bedrock-quotas", "us-east-2")
    assert q.status is Status.UNKNOWN and q.summary == "could not be read: Service Quotas ListServiceQuotas (bedrock): ListServiceQuotas: access denied"
    rec = one(findings, "bedrock-recommendation", "hr")
    assert rec.details["commands"] == [] and any("could not be read" in r and "no desired value computed" in r for r in rec.details["recommendations"])
    assert v.status is Status.WARN and "quota in force UNKNOWN" in v.summary and "1 blind spot(s): bedrock-quotas us-east-2" in v.summary


def test_defaults_unreadable_still_shows_the_quotas_in_force():
    q = one(judge(quotas=QuotaSet(quotas=QUOTAS, defaults_error="access denied"))[1], "bedrock-quotas", "on-demand (no model named in the lines)")
    assert q.status is Status.OK and q.summary.endswith("(defaults unreadable: access denied)")


def test_lines_naming_no_model_give_a_note_not_a_value():
    rec = one(judge(qual=throttled(model=None))[1], "bedrock-recommendation", "hr")
    assert rec.details["commands"] == [] and any(r.startswith("the lines name no model: pick the model's quota code") for r in rec.details["recommendations"])


def test_a_model_no_quota_names_falls_back_to_the_on_demand_quotas():
    model = "cohere.command-r-v1:0"
    v, findings = judge(qual=throttled(model=model))
    q = one(findings, "bedrock-quotas", model)
    assert q.details["fallback"] is True and q.summary.startswith(f"no quota names {model}; every on-demand per-minute quota: ")
    rec = one(findings, "bedrock-recommendation", "hr")
    assert rec.details["commands"] == [] and any(f"the lines name {model}, which no quota names" in r for r in rec.details["recommendations"])


def test_a_cross_region_profile_uses_its_cross_region_quota():
    model = "us.anthropic.claude-3-5-sonnet-20240620-v1:0"
    findings = judge(qual=throttled(count=4, peak=2, model=model, max_retries_seen=None), use=usage(qual=400))[1]
    assert [r["name"] for r in one(findings, "bedrock-quotas", model).details["quotas"]] == [
        "Cross-Region InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet"]
    recs = one(findings, "bedrock-recommendation", "hr").details["recommendations"]
    assert recs[0].startswith("no retries visible in the log lines: add exponential backoff with full jitter")
    assert not any("use cross-Region inference" in r for r in recs)


def test_model_ids_match_their_quota_names():
    assert model_key(SONNET) == (["3", "claude", "sonnet"], False)
    assert model_key("us.anthropic.claude-3-haiku-20240307-v1:0") == (["3", "claude", "haiku"], True)
    names = lambda m: [q.name for q in match_quotas(QUOTAS, m)]  # noqa: E731
    assert names(SONNET) == [RPM, TPM]  # not 3.5 Sonnet
    assert names("anthropic.claude-3-5-sonnet-20241022-v2:0") == ["On-demand InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet V2"]
    assert names("amazon.titan-embed-text-v2:0") == ["On-demand InvokeModel tokens per minute for Amazon Titan Text Embeddings V2"]
    assert names("meta.llama3-70b-instruct-v1:0") == ["On-demand InvokeModel requests per minute for Meta Llama 3 70B Instruct"]
    assert len(names(None)) == 6  # every on-demand per-minute quota; never the batch one
    assert parse_quota_name("Batch inference job size (in GB)") is None
    assert parse_quota_name(RPM) == ("on-demand", "requests", ["3", "claude", "sonnet"])


# --- the increase -------------------------------------------------------------------------------------------------


def test_desired_values_from_the_peak():
    assert [nice_ceil(x) for x in (0, 96, 134.4, 201600, 1001)] == [0, 96, 140, 210000, 1100]
    tpm, rpm = Quota(code="L-1", name=TPM, value=200_000), Quota(code="L-2", name=RPM, value=100)
    inc = increase("us-east-2", tpm, peak_unserved=10, headroom=1.2, tokens_per_call=1500, rpm=None, peak_share=None)
    assert inc.desired == 260000 and "1500 tokens a call" in inc.basis  # (200000 + 15000) x 1.2 = 258000
    assert increase("us-east-2", tpm, 10, 1.2, None, rpm, None).desired == 270000  # 200000 x 110 / 100 x 1.2 = 264000
    assert increase("us-east-2", tpm, 10, 1.2, None, None, 0.25).desired == 300000  # 200000 x 1.25 x 1.2
    assert increase("us-east-2", tpm, 10, 1.2, None, None, None) is None  # nothing to base it on: no made-up value
    assert increase("us-east-2", tpm, 0, 1.2, 1500, None, None) is None
    assert increase("us-east-2", rpm, 1, 1.0, None, None, None).desired == 110  # (100 + 1) x 1.0, two significant digits up
    assert increase("us-east-2", Quota(code="L-B", name="Batch inference job size (in GB)", value=1), 5, 1.2, None, None, None) is None


def test_tokens_a_call_come_from_bedrocks_own_metrics():
    use = usage(model_invocations={SONNET: 100.0}, model_tokens={SONNET: 500_000.0})
    assert use.tokens_per_call(SONNET) == 5000.0 and usage().tokens_per_call(SONNET) is None
    inc = one(judge(qual=throttled(), use=use)[1], "bedrock-recommendation", "hr").details["increases"][0]
    assert inc["desired"] == 260000 and "5000 tokens a call" in inc["basis"]  # (150000 + 12 x 5000) x 1.2 = 252000


def test_shares_of_invocations():
    assert affected_share(throttled(count=30), usage()) == 15.0
    assert affected_share(throttled(count=300), usage()) == 100.0  # capped
    assert affected_share(throttled(requests=3), usage()) == 1.5  # distinct requests when the lines carry them
    assert affected_share(throttled(), usage(qual=0)) is None
    assert peak_share([throttled()], usage()) == 0.3  # 12 refused / 40 invocations in the peak minute
    assert peak_share([throttled()], usage(invocations_per_minute={})) is None and peak_share([quiet("Qual")], usage()) is None


def test_recommendations_most_direct_first():
    recs = recommendations([throttled()], SONNET, [], None)
    assert recs[0].startswith("retries are visible (Qual; botocore gave up after 4 retries): keep exponential backoff with full jitter")
    assert recs[1].startswith(f"use cross-Region inference (the inference profile us.{SONNET}")
    assert recs[-1].startswith("cache responses for identical inputs")
    assert recommendations([throttled(max_retries_seen=None)], None, [], "a note")[0:2] == [
        "no retries visible in the log lines: add exponential backoff with full jitter (e.g. botocore Config(retries="
        "{'mode': 'adaptive', 'max_attempts': 8})) and cap the function's concurrency so bursts queue instead of failing", "a note"]
