"""diagnose-bedrock-throttling's reads and judgements (seed 000 문제 3).

- ``bedrock_targets``: the functions to read: those the inventory flags
  ``bedrock: true`` (or the ``functions`` parameter), with their log groups;
- ``read_throttles``: ThrottlingException lines of the window per function
  (every page): count, per-minute buckets, distinct requests, models named in
  the lines, retries visible (botocore's "reached max retries: N", several
  lines for one request, "retry" in the line), masked samples;
- ``read_invocations``: AWS/Lambda Invocations per function and minute, and
  AWS/Bedrock Invocations/InvocationThrottles/Input+OutputTokenCount per model
  named in the lines, in one batched GetMetricData;
- ``read_quotas``: the Bedrock quotas in force (ListServiceQuotas) and AWS's
  defaults (ListAWSDefaultServiceQuotas), every page;
- ``match_quotas`` / ``increase`` / ``recommendations``: pure judgement. The
  quota codes are read, never guessed: AWS does not publish Bedrock's and they
  differ by model. The desired value is computed from the observed peak.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System
from opsbook.pii import mask_log
from tasks.api_diagnosis import read_events, run_metric_queries, total, window

THROTTLE_PATTERN = "ThrottlingException"
SAMPLES = 3
_PROVIDERS = "anthropic|amazon|meta|cohere|ai21|mistral|stability|deepseek|writer|openai|qwen"
_MODEL_RE = re.compile(rf"\b(?:(?P<geo>us|eu|apac|global|us-gov)\.)?(?P<id>(?:{_PROVIDERS})\.[a-z0-9][a-z0-9.\-]*(?::\d+)?)", re.I)
_MAX_RETRIES_RE = re.compile(r"reached max retries: (\d+)")
_RETRY_WORD_RE = re.compile(r"\b(retry|retrying|retried|backing off|backoff|attempt \d+)\b", re.I)
_REQUEST_ID_RE = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)


class Target(BaseModel):
    function: str
    group: str


def bedrock_targets(system: System, functions: list[str] | None) -> tuple[list[Target], str]:
    """(functions to read, how they were chosen)."""
    groups = {f.name: f.log_group_name for f in system.lambda_functions}
    if functions:
        return [Target(function=f, group=groups.get(f, f"/aws/lambda/{f}")) for f in functions], "the functions parameter"
    flagged = [f for f in system.lambda_functions if f.bedrock]
    return [Target(function=f.name, group=f.log_group_name) for f in flagged], "LambdaFunction.bedrock in the inventory"


# --- log lines ---------------------------------------------------------------------------------------------


def model_of(line: str) -> str | None:
    """The Bedrock model or inference profile id a line names (e.g. us.anthropic.claude-3-5-sonnet-20240620-v1:0)."""
    m = _MODEL_RE.search(line)
    if not m:
        return None
    mid = m.group("id").rstrip(".-")
    return f"{m.group('geo')}.{mid}" if m.group("geo") else mid


class ThrottleStats(BaseModel):
    function: str
    group: str
    error: str | None = None
    count: int = 0
    requests: int = 0  # distinct request ids among the lines (0: the lines carry none)
    per_minute: dict[str, int] = Field(default_factory=dict)  # "YYYY-MM-DDTHH:MMZ" -> lines
    peak_minute: str | None = None
    peak_count: int = 0
    models: dict[str, int] = Field(default_factory=dict)
    max_retries_seen: int | None = None  # botocore's "reached max retries: N"
    app_retries: int = 0  # requests with more than one throttle line, or lines saying retry
    samples: list[str] = Field(default_factory=list)
    truncated: bool = False

    @property
    def retries_visible(self) -> bool:
        return bool(self.max_retries_seen) or self.app_retries > 0


def minute_of(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def summarize_throttles(t: Target, events: list[dict[str, Any]], truncated: bool = False) -> ThrottleStats:
    lines = [e for e in events if THROTTLE_PATTERN in e["message"]]
    per_minute = Counter(minute_of(e["timestamp"]) for e in lines)
    rids = Counter(m.group(0).lower() for e in lines for m in [_REQUEST_ID_RE.search(e["message"])] if m)
    retries = [int(m.group(1)) for e in lines for m in [_MAX_RETRIES_RE.search(e["message"])] if m]
    models = Counter(x for e in lines for x in [model_of(e["message"])] if x)
    worded = sum(1 for e in lines if _RETRY_WORD_RE.search(e["message"]))
    pk = max(per_minute.items(), key=lambda kv: (kv[1], kv[0])) if per_minute else (None, 0)
    return ThrottleStats(function=t.function, group=t.group, count=len(lines), requests=len(rids), per_minute=dict(sorted(per_minute.items())),
                         peak_minute=pk[0], peak_count=pk[1], models=dict(models.most_common()), max_retries_seen=max(retries) if retries else None,
                         app_retries=sum(1 for n in rids.values() if n > 1) + worded, samples=[mask_log(e["message"].strip())[:300] for e in lines[:SAMPLES]],
                         truncated=truncated)


@aws_task(iam=["logs:FilterLogEvents"], cache_policy=NO_CACHE)
def read_throttles(system: System, targets: list[Target], deadline: aws.Deadline, minutes: int = 60) -> dict[str, ThrottleStats]:
    """ThrottlingException lines of the window per function, every page."""
    start, end = window(minutes)

    def one(t: Target) -> ThrottleStats:
        events, truncated = read_events(system.region, t.group, THROTTLE_PATTERN, start, end)
        return summarize_throttles(t, events, truncated)

    out = {}
    for t, res, err in aws.parallel(one, targets, deadline=deadline, max_workers=8):
        if err is None:
            out[t.function] = res
        elif aws.is_not_found(err):
            out[t.function] = ThrottleStats(function=t.function, group=t.group, error="log group does not exist (never invoked, or logs elsewhere)")
        else:
            out[t.function] = ThrottleStats(function=t.function, group=t.group, error=aws.describe_error(err))
    return out


# --- metrics -----------------------------------------------------------------------------------------------


class UsageMetrics(BaseModel):
    error: str | None = None
    invocations: dict[str, float | None] = Field(default_factory=dict)  # function -> sum in the window
    invocations_per_minute: dict[str, dict[str, float]] = Field(default_factory=dict)
    model_invocations: dict[str, float | None] = Field(default_factory=dict)
    model_throttles: dict[str, float | None] = Field(default_factory=dict)
    model_tokens: dict[str, float | None] = Field(default_factory=dict)  # input + output

    def tokens_per_call(self, model: str) -> float | None:
        n, tok = self.model_invocations.get(model), self.model_tokens.get(model)
        return tok / n if n and tok else None


@aws_task(iam=["cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def read_invocations(system: System, functions: list[str], throttles: dict[str, ThrottleStats], minutes: int = 60) -> UsageMetrics:
    """Lambda Invocations per function and minute; Bedrock's own metrics per model named in the throttle lines."""
    models = sorted({m for s in throttles.values() for m in s.models})
    specs: dict[str, tuple[str, str, dict[str, str], str, int]] = {}
    for i, fn in enumerate(functions):
        specs[f"f{i}"] = ("AWS/Lambda", "Invocations", {"FunctionName": fn}, "Sum", 60)
    for j, model in enumerate(models):
        for metric in ("Invocations", "InvocationThrottles", "InputTokenCount", "OutputTokenCount"):
            specs[f"m{j}.{metric}"] = ("AWS/Bedrock", metric, {"ModelId": model}, "Sum", 60)
    if not specs:
        return UsageMetrics()
    start, end = window(minutes)
    try:
        res = run_metric_queries(system.region, specs, start, end)
    except Exception as exc:
        return UsageMetrics(error=aws.describe_error(exc))
    out = UsageMetrics()
    for i, fn in enumerate(functions):
        out.invocations[fn] = total(res[f"f{i}"])
        out.invocations_per_minute[fn] = {ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"): v for ts, v in res[f"f{i}"]}
    for j, model in enumerate(models):
        out.model_invocations[model] = total(res[f"m{j}.Invocations"])
        out.model_throttles[model] = total(res[f"m{j}.InvocationThrottles"])
        inp, outp = total(res[f"m{j}.InputTokenCount"]), total(res[f"m{j}.OutputTokenCount"])
        out.model_tokens[model] = (inp or 0) + (outp or 0) if inp is not None or outp is not None else None
    return out


# --- quotas --------------------------------------------------------------------------------------------------


class Quota(BaseModel):
    code: str
    name: str
    value: float
    default: float | None = None
    adjustable: bool | None = None
    unit: str | None = None


class QuotaSet(BaseModel):
    error: str | None = None
    defaults_error: str | None = None
    quotas: list[Quota] = Field(default_factory=list)


@aws_task(iam=["servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas"], cache_policy=NO_CACHE)
def read_quotas(system: System) -> QuotaSet:
    """The Bedrock quotas in force in the region (every page) and, for comparison, AWS's defaults."""
    c = aws.client("service-quotas", system.region)
    try:
        applied = list(aws.paginate(c, "list_service_quotas", "Quotas", ServiceCode="bedrock"))
    except Exception as exc:
        return QuotaSet(error=aws.describe_error(exc))
    out = QuotaSet()
    defaults: dict[str, float] = {}
    try:
        defaults = {q["QuotaCode"]: q["Value"] for q in aws.paginate(c, "list_aws_default_service_quotas", "Quotas", ServiceCode="bedrock")}
    except Exception as exc:  # only a comparison: the quotas in force stand without it
        out.defaults_error = aws.describe_error(exc)
    out.quotas = [Quota(code=q["QuotaCode"], name=q["QuotaName"], value=q["Value"], default=defaults.get(q["QuotaCode"]),
                        adjustable=q.get("Adjustable"), unit=q.get("Unit")) for q in applied]
    return out


# --- matching quotas to models -------------------------------------------------------------------------------

_QUOTA_RE = re.compile(r"^(?P<scope>on-demand|cross-region|global cross-region)\b.*?\b(?P<kind>requests|tokens) per minute for (?P<model>.+)$", re.I)
_DROP = set(_PROVIDERS.split("|")) | {"labs", "ai"}
_SYN = {"embed": "embeddings", "embedding": "embeddings", "instruct": "instruct"}


def _tokens(text: str) -> list[str]:
    return sorted(_SYN.get(t, t) for t in re.findall(r"[a-z]+|\d+", text.lower()) if t not in _DROP)


def model_key(model_id: str) -> tuple[list[str], bool]:
    """(normalised tokens, cross-Region profile?) of a model id: anthropic.claude-3-5-sonnet-20240620-v1:0 -> [3, 5, claude, sonnet]."""
    geo = re.match(r"^(us|eu|apac|global|us-gov)\.", model_id)
    mid = model_id[geo.end():] if geo else model_id
    mid = mid.split(".", 1)[1] if "." in mid else mid  # provider
    mid = re.sub(r":\d+$", "", mid)
    mid = re.sub(r"-\d{8}", "", mid)
    mid = re.sub(r"-v1$", "", mid)
    return _tokens(mid), bool(geo)


def parse_quota_name(name: str) -> tuple[str, str, list[str]] | None:
    """(scope, kind, model tokens) of a per-model per-minute quota name, else None."""
    m = _QUOTA_RE.match(name.strip())
    if not m:
        return None
    scope = "on-demand" if m.group("scope").lower() == "on-demand" else "cross-region"
    return scope, m.group("kind").lower(), _tokens(m.group("model"))


def match_quotas(quotas: list[Quota], model: str | None) -> list[Quota]:
    """The per-minute quotas for a model (its scope: on-demand, or cross-Region for a geo profile); without a model, every on-demand one."""
    out = []
    key, cross = model_key(model) if model else ([], False)
    for q in quotas:
        p = parse_quota_name(q.name)
        if p is None:
            continue
        scope, _, tokens = p
        if model is None:
            if scope == "on-demand":
                out.append(q)
        elif tokens == key and scope == ("cross-region" if cross else "on-demand"):
            out.append(q)
    return sorted(out, key=lambda q: q.name)


def nice_ceil(x: float) -> int:
    """Round up to two significant digits (1234 -> 1300, 96 -> 96)."""
    if x <= 0:
        return 0
    exp = max(0, int(math.floor(math.log10(x))) - 1)
    step = 10**exp
    return int(math.ceil(x / step) * step)


class Increase(BaseModel):
    quota: Quota
    desired: int
    basis: str
    command: str


def increase(region: str, q: Quota, peak_unserved: int, headroom: float, tokens_per_call: float | None, rpm: Quota | None,
             peak_share: float | None) -> Increase | None:
    """The desired value for a quota from the observed peak minute, with the formula used."""
    p = parse_quota_name(q.name)
    if p is None or peak_unserved <= 0:
        return None
    kind = p[1]
    if kind == "requests":
        need = q.value + peak_unserved
        basis = f"({q.value:g} in force + {peak_unserved} requests refused in the peak minute) × {headroom:g}"
    elif tokens_per_call:
        need = q.value + peak_unserved * tokens_per_call
        basis = (f"({q.value:g} in force + {peak_unserved} refused requests in the peak minute × {tokens_per_call:.0f} tokens a call "
                 f"(AWS/Bedrock InputTokenCount+OutputTokenCount / Invocations)) × {headroom:g}")
    elif rpm is not None and rpm.value > 0:
        need = q.value * (rpm.value + peak_unserved) / rpm.value
        basis = f"{q.value:g} in force × ({rpm.value:g} + {peak_unserved}) / {rpm.value:g} (the requests quota's ratio; tokens a call unknown) × {headroom:g}"
    elif peak_share is not None:
        need = q.value * (1 + peak_share)
        basis = f"{q.value:g} in force × (1 + {peak_share:.0%} of the peak minute's invocations refused) × {headroom:g}"
    else:
        return None
    desired = max(nice_ceil(need * headroom), int(q.value) + 1)
    cmd = (f"aws service-quotas request-service-quota-increase --service-code bedrock --quota-code {q.code} "
           f"--desired-value {desired} --region {region}")
    return Increase(quota=q, desired=desired, basis=basis, command=cmd)


def recommendations(stats: list[ThrottleStats], model: str | None, increases: list[Increase], quota_note: str | None) -> list[str]:
    """What to do, most direct first (seed 000 문제 3: retries with backoff, a quota increase, caching; batching, rate limits, a fallback model)."""
    recs = []
    retried = [s for s in stats if s.retries_visible]
    if retried:
        n = max((s.max_retries_seen or 0) for s in retried)
        recs.append(f"retries are visible ({', '.join(s.function for s in retried)}"
                    + (f"; botocore gave up after {n} retries" if n else "") + "): keep exponential backoff with full jitter "
                    "(botocore retry mode 'adaptive'), but retries cannot lift a quota ceiling: the refused calls still fail")
    else:
        recs.append("no retries visible in the log lines: add exponential backoff with full jitter (e.g. botocore Config(retries="
                    "{'mode': 'adaptive', 'max_attempts': 8})) and cap the function's concurrency so bursts queue instead of failing")
    for inc in increases:
        recs.append(f"request a quota increase for '{inc.quota.name}' ({inc.quota.value:g} -> {inc.desired}; {inc.basis}): `{inc.command}`")
    if quota_note:
        recs.append(quota_note)
    if model and not re.match(r"^(us|eu|apac|global)\.", model):
        recs.append(f"use cross-Region inference (the inference profile us.{model} or your geography's) to spread load over Regions "
                    "with their own, usually higher, quotas")
    recs.append("cache responses for identical inputs (DynamoDB or ElastiCache), set maxTokens explicitly (TPM is reserved for it "
                "up front), and move non-interactive work to Bedrock batch inference; keep a fallback model ready")
    return recs
