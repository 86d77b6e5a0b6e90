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
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.diagnose_bedrock_throttling.judge import VERDICT, judge_throttling
from opsbook import aws
from opsbook.collect import settled
from opsbook.findings import Finding, Status
from opsbook.inventory import System, load_system
from opsbook.masking import mask
from opsbook.params import Deadline, Names, Param, SystemName
from opsbook.report import ICON, RunReport, findings_section, finish_read_only, publish_artifacts, sort_findings
from tasks.cloudwatch import UsageMetrics, read_invocations
from tasks.logs import LogTarget, ThrottleStats, read_throttles
from tasks.servicequotas import QuotaSet, read_quotas

RUNBOOK = "diagnose-bedrock-throttling"


def bedrock_targets(system: System, functions: list[str] | None) -> tuple[list[LogTarget], str]:
    """(functions to read, how they were chosen)."""
    groups = {f.name: f.log_group_name for f in system.lambda_functions}
    if functions:
        return [LogTarget(function=f, group=groups.get(f, f"/aws/lambda/{f}")) for f in functions], "the functions parameter"
    flagged = [f for f in system.lambda_functions if f.bedrock]
    return [LogTarget(function=f.name, group=f.log_group_name) for f in flagged], "LambdaFunction.bedrock in the inventory"


@task(name="judge-bedrock-throttling", cache_policy=NO_CACHE)
def diagnose(system: System, targets: list[LogTarget], how: str, stats: dict[str, ThrottleStats], usage: UsageMetrics, quotas: QuotaSet,
             minutes: int, headroom: float, crit_share_pct: float) -> list[Finding]:
    """The verdict first, then the findings per function, the quotas in force and the recommendation."""
    verdict, findings = judge_throttling(system, targets, how, stats, usage, quotas, minutes, headroom, crit_share_pct)
    return [verdict] + sort_findings(findings)


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

    # collect: the throttle lines and the quotas at once; then the invocations and the metrics of the models the lines name
    with aws.bounded(deadline):  # no read starts after the deadline; each attempt times out within the time left
        lost: list[Finding] = []
        stats_f = read_throttles.submit(inv, targets, deadline, minutes)
        quotas_f = read_quotas.submit(inv, "bedrock")
        stats = settled(stats_f, "read-throttles", {t.function: ThrottleStats(function=t.function, group=t.group, error="the read task failed")
                                                    for t in targets}, lost)
        models = sorted({m for s in stats.values() for m in s.models})
        usage_f = read_invocations.submit(inv, [t.function for t in targets], models, minutes)
        usage = settled(usage_f, "read-invocations", UsageMetrics(error="the read task failed"), lost)
        quotas = settled(quotas_f, "read-quotas", QuotaSet(error="the read task failed"), lost)

    # judge, then report: the verdict first, then the reads that failed, then the rest
    findings = diagnose.submit(inv, targets, how, stats, usage, quotas, minutes, headroom, crit_share_pct).result()
    findings = findings[:1] + lost + findings[1:]
    return _finish(inv, findings, calls, started, logger)


def _finish(inv: System, findings: list[Finding], calls: aws.CallLog, started: float, logger: Any) -> Any:
    return finish_read_only(RUNBOOK, inv, findings, calls, started, publish, logger)


TASKS = [read_throttles, read_invocations, read_quotas]
