"""diagnose-bedrock-throttling: who is throttled by Bedrock, how badly, under which quota (read-only).

Source: seed 000 일반적인 문제 3 "Bedrock API 스로틀링": ThrottlingException in
/aws/lambda/QualitativeAnalysis (filter-log-events over the last hour), then
the fixes: retry logic with exponential backoff, a quota increase
(``aws service-quotas request-service-quota-increase --service-code bedrock``),
caching; prevention: batching, rate limits, a fallback model.

Over the last ``minutes`` (60), for the functions the inventory flags
``bedrock: true`` (or the ``functions`` parameter; none flagged is a finding,
not a guess):

1. ThrottlingException lines per function (every page): count, per-minute
   buckets and the peak minute, distinct requests, the models the lines name,
   retries visible (botocore's "reached max retries: N", repeated request ids);
2. the share of invocations affected (AWS/Lambda Invocations), and Bedrock's
   own per-model metrics (tokens a call) in one GetMetricData batch;
3. the quotas in force (Service Quotas ListServiceQuotas, ServiceCode
   bedrock, every page) for the models named, else every on-demand per-minute
   quota, against AWS's defaults (ListAWSDefaultServiceQuotas);
4. the verdict first, then the recommendation: backoff with jitter, the exact
   quota-increase command with a desired value computed from the observed
   peak (never sent: this runbook changes nothing), cross-Region inference,
   caching, batching.

Status: CRIT when a function's affected share reaches ``crit_share_pct`` (5%),
WARN for any throttling, OK for none, UNKNOWN when nothing could be read; a
quota that cannot be read is UNKNOWN and no desired value is made up. A CRIT
run ends Failed in Prefect, with its report.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from opsbook import aws
from opsbook.collect import settled
from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import System, load_system
from opsbook.masking import mask
from opsbook.params import Deadline, Names, Param, SystemName
from opsbook.report import (
    ICON,
    RunReport,
    findings_section,
    judge,
    publish_artifacts,
    sort_findings,
)
from tasks.bedrock import (
    Increase,
    QuotaSet,
    Target,
    ThrottleStats,
    UsageMetrics,
    bedrock_targets,
    increase,
    match_quotas,
    parse_quota_name,
    read_invocations,
    read_quotas,
    read_throttles,
    recommendations,
)

RUNBOOK = "diagnose-bedrock-throttling"
VERDICT = "bedrock-throttling-verdict"


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


@task(name="judge-bedrock-throttling", cache_policy=NO_CACHE)
def diagnose(system: System, targets: list[Target], how: str, stats: dict[str, ThrottleStats], usage: UsageMetrics, quotas: QuotaSet,
             minutes: int, headroom: float, crit_share_pct: float) -> list[Finding]:
    findings = [throttle_finding(stats[t.function], usage, minutes, crit_share_pct) for t in targets]
    throttled = [s for s in stats.values() if not s.error and s.count]
    unreadable = [s for s in stats.values() if s.error]
    models = Counter()
    for s in throttled:
        models.update(s.models)
    wanted: list[str | None] = list(models) or [None]

    # the quotas in force, per model named (else every on-demand per-minute quota)
    increases: list[Increase] = []
    notes: list[str] = []
    quota_summary = ""
    if quotas.error:
        findings.append(unknown("bedrock-quotas", system.region, f"Service Quotas ListServiceQuotas (bedrock): {quotas.error}"))
        notes.append(f"the quota in force could not be read ({quotas.error}): no desired value computed; read it with "
                     f"`aws service-quotas list-service-quotas --service-code bedrock --region {system.region}`")
        quota_summary = "quota in force UNKNOWN"
    else:
        for model in wanted:
            matched = match_quotas(quotas.quotas, model)
            label = model or "on-demand (no model named in the lines)"
            fallback = False
            if model is not None and not matched:
                matched, fallback = match_quotas(quotas.quotas, None), True
            rows = [{"code": q.code, "name": q.name, "value": q.value, "default": q.default, "adjustable": q.adjustable} for q in matched]
            if not matched:
                findings.append(Finding(check="bedrock-quotas", resource=label, status=Status.UNKNOWN,
                                        summary=f"could not be read: no per-minute Bedrock quota in {system.region} ({len(quotas.quotas)} quotas listed)"))
                continue
            lines = [f"{q.name}: {q.value:g}" + (f" (AWS default {q.default:g})" if q.default is not None else "") + f" [{q.code}]" for q in matched[:8]]
            summary = ("; ".join(lines) + (f" (+{len(matched) - 8} more)" if len(matched) > 8 else ""))
            if fallback:
                summary = f"no quota names {model}; every on-demand per-minute quota: " + summary
            if quotas.defaults_error:
                summary += f" (defaults unreadable: {quotas.defaults_error})"
            findings.append(Finding(check="bedrock-quotas", resource=label, status=Status.OK, value=len(matched), summary=summary[:900],
                                    details={"quotas": rows, "model": model, "fallback": fallback}))
            if not throttled:
                continue
            if model is None or fallback:
                notes.append(f"the lines name {'no model' if model is None else f'{model}, which no quota names'}: pick the model's quota code "
                             f"from the bedrock-quotas finding and request (value in force + peak refused per minute) × {headroom:g}")
                continue
            users = [s for s in throttled if model in s.models]
            per_minute: Counter[str] = Counter()
            for s in users:
                per_minute.update(s.per_minute)
            peak_unserved = max(per_minute.values()) if per_minute else 0
            rpm = next((q for q in matched if (parse_quota_name(q.name) or ("", "", []))[1] == "requests"), None)
            share = peak_share(users, usage)
            for q in sorted(matched, key=lambda q: (parse_quota_name(q.name) or ("", "", []))[1] != "tokens"):  # tokens first: the enforced one
                inc = increase(system.region, q, peak_unserved, headroom, usage.tokens_per_call(model), rpm, share)
                if inc is not None:
                    increases.append(inc)
            tpm = next((q for q in matched if (parse_quota_name(q.name) or ("", "", []))[1] == "tokens"), None)
            quota_summary = quota_summary or (f"quota in force: '{(tpm or matched[0]).name}' {(tpm or matched[0]).value:g}")

    if throttled:
        recs = recommendations(throttled, (list(models) or [None])[0], increases, "; ".join(notes) or None)
        findings.append(Finding(check="bedrock-recommendation", resource=system.name, status=Status.WARN, value=len(increases),
                                summary=mask(" | ".join(recs[:2]))[:900],
                                details={"recommendations": recs, "commands": [i.command for i in increases],
                                         "increases": [i.model_dump() for i in increases], "read_only": "nothing was requested"}))
    findings.append(verdict(system, targets, how, throttled, unreadable, findings, usage, quota_summary, increases, minutes))
    return [f for f in findings if f.check == VERDICT] + sort_findings([f for f in findings if f.check != VERDICT])


def verdict(system: System, targets: list[Target], how: str, throttled: list[ThrottleStats], unreadable: list[ThrottleStats],
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


def bedrock_markdown(report: RunReport) -> str:
    lines = [f"# {ICON[report.status]} {report.runbook} · {report.system}: **{report.status.value}**", ""]
    v = next((f for f in report.findings if f.check == VERDICT), None)
    if v is not None:
        lines += [f"**{mask(v.summary)}**", ""]
    rec = next((f for f in report.findings if f.check == "bedrock-recommendation"), None)
    if rec is not None:
        lines += ["## What to do (nothing was requested: this runbook is read-only)", ""]
        lines += [f"{i}. {mask(r)}" for i, r in enumerate(rec.details["recommendations"], 1)]
        if rec.details["commands"]:
            lines += ["", "```sh", *rec.details["commands"], "```"]
        lines.append("")
    for f in report.findings:
        if f.check == "bedrock-throttles" and f.details.get("per_minute"):
            lines += [f"### `{f.resource}`: throttled lines per minute", "", "| minute (UTC) | lines |", "|---|---|"]
            lines += [f"| {m} | {n} |" for m, n in f.details["per_minute"].items()]
            lines.append("")
    lines += findings_section(report, skip=(VERDICT,))
    return "\n".join(lines)


@task(name="publish-bedrock-report", cache_policy=NO_CACHE)
def publish(report: RunReport) -> RunReport:
    return publish_artifacts(report, bedrock_markdown(report))


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=600)
def diagnose_bedrock_throttling(
    system: SystemName,
    functions: Annotated[Names, Param("Only these Lambda functions (a comma-separated string on the shell); empty: the "
                                      "inventory's functions marked bedrock: true")] = [],  # noqa: B006 (validated into a new list)
    minutes: Annotated[int, Param("How far back ThrottlingException lines and invocations are read, in minutes", ge=5, le=1440)] = 60,
    headroom: Annotated[float, Param("The quota increase to request: (quota in force + peak refused per minute) × this", ge=1, le=10)] = 1.2,
    crit_share_pct: Annotated[float, Param("A function's share of throttled invocations (%) from which it is CRIT", gt=0, le=100)] = 5.0,
    deadline_seconds: Deadline = 120.0,
) -> Any:
    """ThrottlingException by function, the quota in force, and what to do. Never mutates (prints the increase command)."""
    started = time.monotonic()
    logger = get_run_logger()
    inv = load_system(system)
    calls = aws.start_call_log()
    deadline = aws.Deadline(deadline_seconds)
    targets, how = bedrock_targets(inv, functions)
    if not targets:
        findings = [Finding(check=VERDICT, resource=inv.name, status=Status.OK, value=0,
                            summary=(f"nothing to check: the inventory of {inv.name} names no Bedrock-calling function (no lambda_functions "
                                     f"entry has bedrock: true); flag them in systems/{inv.name}.yaml or pass functions=[...]"),
                            details={"functions": [], "chosen_by": how})]
        return _finish(inv, findings, calls, started, logger)

    lost: list[Finding] = []
    stats_f = read_throttles.submit(inv, targets, deadline, minutes)
    quotas_f = read_quotas.submit(inv)
    stats = settled(stats_f, "read-throttles", {t.function: ThrottleStats(function=t.function, group=t.group, error="the read task failed")
                                                for t in targets}, lost)
    usage_f = read_invocations.submit(inv, [t.function for t in targets], stats, minutes)
    usage = settled(usage_f, "read-invocations", UsageMetrics(error="the read task failed"), lost)
    quotas = settled(quotas_f, "read-quotas", QuotaSet(error="the read task failed"), lost)
    findings = diagnose.submit(inv, targets, how, stats, usage, quotas, minutes, headroom, crit_share_pct).result()
    findings = findings[:1] + lost + findings[1:]
    return _finish(inv, findings, calls, started, logger)


def _finish(inv: System, findings: list[Finding], calls: aws.CallLog, started: float, logger: Any) -> Any:
    report = judge.submit(RUNBOOK, inv, findings, calls, started).result()
    report.runbook = RUNBOOK
    report.count_calls(calls, started)
    publish.submit(report).result()
    logger.info("%s | %s", report.headline(), mask(report.findings[0].summary))
    if report.status is Status.CRIT:
        return Failed(message=report.headline(), data=report)
    return report


TASKS = [read_throttles, read_invocations, read_quotas]
