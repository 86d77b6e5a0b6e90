"""diagnose-bedrock-throttling's judgement (pure: no AWS, no Prefect, no clock).

From the ThrottlingException lines per function, the invocations and Bedrock's own metrics, and the quotas in
force: a finding per function (``throttle_finding``: share of invocations affected, peak minute), the quotas in
force per model named (``match_quotas``: the quota codes are read, never guessed: AWS does not publish Bedrock's
and they differ by model), the increase to request computed from the observed peak (``increase``: the exact
command, never sent), what to do (``recommendations``) and the verdict (``verdict``). ``judge_throttling`` puts
them together.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import System
from opsbook.masking import mask
from tasks.cloudwatch import UsageMetrics
from tasks.logs import BEDROCK_PROVIDERS, LogTarget, ThrottleStats
from tasks.servicequotas import Quota, QuotaSet

VERDICT = "bedrock-throttling-verdict"


def judge_throttling(system: System, targets: list[LogTarget], how: str, stats: dict[str, ThrottleStats], usage: UsageMetrics, quotas: QuotaSet,
                     minutes: int, headroom: float, crit_share_pct: float) -> tuple[Finding, list[Finding]]:
    """(the verdict, the other findings: per function, the quotas in force, the recommendation)."""
    findings = [throttle_finding(stats[t.function], usage, minutes, crit_share_pct) for t in targets]
    throttled = [s for s in stats.values() if not s.error and s.count]
    unreadable = [s for s in stats.values() if s.error]
    models: Counter[str] = Counter()
    for s in throttled:
        models.update(s.models)
    qa = assess_quotas(system.region, quotas, list(models) or [None], throttled, usage, headroom)
    findings += qa.findings
    if throttled:
        recs = recommendations(throttled, (list(models) or [None])[0], qa.increases, "; ".join(qa.notes) or None)
        findings.append(Finding(check="bedrock-recommendation", resource=system.name, status=Status.WARN, value=len(qa.increases),
                                summary=mask(" | ".join(recs[:2]))[:900],
                                details={"recommendations": recs, "commands": [i.command for i in qa.increases],
                                         "increases": [i.model_dump() for i in qa.increases], "read_only": "nothing was requested"}))
    return verdict(system, targets, how, throttled, unreadable, findings, usage, qa.summary, qa.increases, minutes), findings


# --- per function ---------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return f"{x:.1f}%" if x is not None else "n/a"


def affected_share(s: ThrottleStats, usage: UsageMetrics) -> float | None:
    """Percent of the function's invocations with a throttled request (distinct request ids when the lines carry them)."""
    inv = usage.invocations.get(s.function)
    if not inv:
        return None
    return min(100.0, 100.0 * (s.requests or s.count) / inv)


def peak_share(stats: list[ThrottleStats], usage: UsageMetrics) -> float | None:
    """Refused calls / Lambda invocations in the peak minute of these functions together."""
    per_minute: Counter[str] = Counter()
    for s in stats:
        per_minute.update(s.per_minute)
    if not per_minute:
        return None
    minute, n = max(per_minute.items(), key=lambda kv: (kv[1], kv[0]))
    inv = sum(usage.invocations_per_minute.get(s.function, {}).get(minute, 0.0) for s in stats)
    return n / inv if inv else None


def throttle_finding(s: ThrottleStats, usage: UsageMetrics, minutes: int, crit_share_pct: float) -> Finding:
    if s.error:
        return unknown("bedrock-throttles", s.function, f"{s.group}: {s.error}")
    share = affected_share(s, usage)
    inv = usage.invocations.get(s.function)
    if s.count == 0:
        return Finding(check="bedrock-throttles", resource=s.function, status=Status.OK, value=0,
                       summary=f"no ThrottlingException in the last {minutes} min ({'no invocations' if not inv else f'{inv:g} invocations'})",
                       details=s.model_dump())
    status = Status.CRIT if share is not None and share >= crit_share_pct else Status.WARN
    retries = (f"botocore retried up to {s.max_retries_seen} times" if s.max_retries_seen else "no retries visible") + (
        f", {s.app_retries} application retries" if s.app_retries else "")
    inv_txt = (f"{_pct(share)} of {inv:g} invocations affected" if share is not None
               else f"share unknown ({usage.error or 'no AWS/Lambda Invocations datapoints'})")
    summary = (f"{s.count} ThrottlingException lines ({s.requests or s.count} requests) in the last {minutes} min; {inv_txt}; "
               f"peak {s.peak_count} in minute {s.peak_minute}; models: {', '.join(s.models) or 'not named in the lines'}; {retries}")
    if s.samples:
        summary += f"; e.g. {s.samples[0][:200]}"
    if s.truncated:
        summary += " (first lines only: a lower bound)"
    return Finding(check="bedrock-throttles", resource=s.function, status=status, value=s.count, summary=mask(summary)[:900],
                   details={**s.model_dump(), "share_pct": share, "invocations": inv})


# --- the quotas in force and the increases to request -----------------------------------------------------------


@dataclass
class QuotaAssessment:
    findings: list[Finding] = field(default_factory=list)
    increases: list[Increase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: str = ""


def assess_quotas(region: str, quotas: QuotaSet, wanted: list[str | None], throttled: list[ThrottleStats], usage: UsageMetrics,
                  headroom: float) -> QuotaAssessment:
    """The quotas in force per model named (else every on-demand per-minute quota) and, when throttled, the increases."""
    out = QuotaAssessment()
    if quotas.error:
        out.findings.append(unknown("bedrock-quotas", region, f"Service Quotas ListServiceQuotas (bedrock): {quotas.error}"))
        out.notes.append(f"the quota in force could not be read ({quotas.error}): no desired value computed; read it with "
                         f"`aws service-quotas list-service-quotas --service-code bedrock --region {region}`")
        out.summary = "quota in force UNKNOWN"
        return out
    for model in wanted:
        matched = match_quotas(quotas.quotas, model)
        fallback = False
        if model is not None and not matched:
            matched, fallback = match_quotas(quotas.quotas, None), True
        out.findings.append(quota_finding(region, quotas, model, matched, fallback))
        if not matched or not throttled:
            continue
        if model is None or fallback:
            out.notes.append(f"the lines name {'no model' if model is None else f'{model}, which no quota names'}: pick the model's quota code "
                             f"from the bedrock-quotas finding and request (value in force + peak refused per minute) × {headroom:g}")
            continue
        users = [s for s in throttled if model in s.models]
        out.increases += model_increases(region, model, matched, users, usage, headroom)
        tpm = next((q for q in matched if _kind(q) == "tokens"), None)
        out.summary = out.summary or (f"quota in force: '{(tpm or matched[0]).name}' {(tpm or matched[0]).value:g}")
    return out


def _kind(q: Quota) -> str:
    """requests or tokens ("" for a quota that is not per model and minute)."""
    return (parse_quota_name(q.name) or ("", "", []))[1]


def quota_finding(region: str, quotas: QuotaSet, model: str | None, matched: list[Quota], fallback: bool) -> Finding:
    label = model or "on-demand (no model named in the lines)"
    if not matched:
        return Finding(check="bedrock-quotas", resource=label, status=Status.UNKNOWN,
                       summary=f"could not be read: no per-minute Bedrock quota in {region} ({len(quotas.quotas)} quotas listed)")
    rows = [{"code": q.code, "name": q.name, "value": q.value, "default": q.default, "adjustable": q.adjustable} for q in matched]
    lines = [f"{q.name}: {q.value:g}" + (f" (AWS default {q.default:g})" if q.default is not None else "") + f" [{q.code}]" for q in matched[:8]]
    summary = ("; ".join(lines) + (f" (+{len(matched) - 8} more)" if len(matched) > 8 else ""))
    if fallback:
        summary = f"no quota names {model}; every on-demand per-minute quota: " + summary
    if quotas.defaults_error:
        summary += f" (defaults unreadable: {quotas.defaults_error})"
    return Finding(check="bedrock-quotas", resource=label, status=Status.OK, value=len(matched), summary=summary[:900],
                   details={"quotas": rows, "model": model, "fallback": fallback})


def model_increases(region: str, model: str, matched: list[Quota], users: list[ThrottleStats], usage: UsageMetrics, headroom: float) -> list[Increase]:
    """The increases for one model's quotas from the peak minute of the functions it throttled (tokens first: the enforced one)."""
    per_minute: Counter[str] = Counter()
    for s in users:
        per_minute.update(s.per_minute)
    peak_unserved = max(per_minute.values()) if per_minute else 0
    rpm = next((q for q in matched if _kind(q) == "requests"), None)
    share = peak_share(users, usage)
    out = []
    for q in sorted(matched, key=lambda q: _kind(q) != "tokens"):
        inc = increase(region, q, peak_unserved, headroom, usage.tokens_per_call(model), rpm, share)
        if inc is not None:
            out.append(inc)
    return out


_QUOTA_RE = re.compile(r"^(?P<scope>on-demand|cross-region|global cross-region)\b.*?\b(?P<kind>requests|tokens) per minute for (?P<model>.+)$", re.I)
_DROP = set(BEDROCK_PROVIDERS.split("|")) | {"labs", "ai"}
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


# --- the verdict --------------------------------------------------------------------------------------------------


def verdict(system: System, targets: list[LogTarget], how: str, throttled: list[ThrottleStats], unreadable: list[ThrottleStats],
            findings: list[Finding], usage: UsageMetrics, quota_summary: str, increases: list[Increase], minutes: int) -> Finding:
    blind = [f"{f.check} {f.resource}" for f in findings if f.status is Status.UNKNOWN]
    per_fn = {f.resource: f for f in findings if f.check == "bedrock-throttles"}
    details: dict[str, Any] = {"functions": [t.function for t in targets], "chosen_by": how, "blind_spots": blind,
                               "commands": [i.command for i in increases]}
    if throttled:
        status = Status.CRIT if any(per_fn[s.function].status is Status.CRIT for s in throttled) else Status.WARN
        worst = max(throttled, key=lambda s: s.count)
        share = affected_share(worst, usage)
        summary = (f"{status.value}: {sum(s.count for s in throttled)} ThrottlingException lines in the last {minutes} min in "
                   f"{', '.join(s.function for s in throttled)}; worst {worst.function}: {worst.count} ({_pct(share)} of invocations), "
                   f"peak {worst.peak_count} in minute {worst.peak_minute}")
        if quota_summary:
            summary += f"; {quota_summary}"
        summary += ". Next: " + (f"`{increases[0].command}`" if increases else "see bedrock-recommendation")
        summary += "; backoff with jitter" + ("" if any(s.retries_visible for s in throttled) else " (no retries visible)")
    elif unreadable and len(unreadable) == len(targets):
        status, summary = Status.UNKNOWN, f"UNKNOWN: no log group of {len(targets)} function(s) could be read ({unreadable[0].error})"
    elif unreadable:
        status = Status.UNKNOWN
        summary = (f"UNKNOWN: no ThrottlingException in {len(targets) - len(unreadable)} function(s), but "
                   f"{', '.join(s.function for s in unreadable)} could not be read")
    else:
        status = Status.OK
        summary = f"OK: no ThrottlingException in the last {minutes} min in {', '.join(t.function for t in targets)} ({how})"
    if blind and status is not Status.UNKNOWN:
        summary += f". {len(blind)} blind spot(s): {', '.join(blind[:3])}"
    return Finding(check=VERDICT, resource=system.name, status=status, value=sum(s.count for s in throttled), summary=mask(summary)[:1000], details=details)
