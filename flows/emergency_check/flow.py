"""emergency-check: the first two minutes of a P0/P1 (read-only).

Sources: 000 장애 대응 2. 초기 평가 (emergency_check.sh) and 알람별 대응 가이드,
001 장애 대응 가이드 P0 즉시 대응 1-2 (ECS service, ALB target health), 002
장애 대응 절차 P0-P3. Every component at once, within a hard deadline: the
daily-health component checks (without their 24 h log scans), the errors of the
LAST HOUR with their top messages, ALB target health, the alarms firing with
their priority. Then the verdict: the incident priority implied and whom to
escalate to, shown first, followed by the findings by severity.

Priority (002: P0 전체 서비스 중단, P1 주요 기능 장애, P2 부분 기능 장애, P3 개선 사항):

- P0: the front door is down: an ECS service with 0 running tasks (or missing,
  or its cluster missing), an ALB target group with 0 healthy targets, every
  Lambda function failing (state Failed/missing, or its errors of the last hour
  at the CRIT threshold), a REST API named in the inventory missing.
- P1: a data component is down: a DynamoDB table missing or not ACTIVE, an
  OpenSearch cluster red or its domain missing; some (not all) Lambda functions
  failing; an ECS deployment FAILED with tasks still running.
- Firing alarms: their priority from ``alarms.priorities`` (an alarm without
  one counts as P2).
- P2: any other CRIT finding, or a component degraded (WARN on ECS, ALB,
  Lambda state, DynamoDB status, OpenSearch).
- P3: nothing of the above (no incident; backlog).

The incident's priority is the highest implied. UNKNOWN findings do not raise
it; they are listed as blind spots.

Escalation (``System.escalation``): an entry whose ``level`` is the priority's
name (todo-app, t-developer: ``P0``, ``P1``...) is used; otherwise P0 and P1 go
to the first entry (the first responder: hr ``L1``, leh ``Lv1``) with the next
entry named as the step if unresolved after its ``respond_within_minutes``; P2
goes to the first entry without paging; P3 escalates to nobody.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from prefect import allow_failure, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from opsbook import aws
from opsbook.collect import gather
from opsbook.findings import Finding, Status, by_threshold, unknown
from opsbook.iam import aws_task
from opsbook.inventory import EscalationLevel, System, load_system
from opsbook.masking import mask
from opsbook.params import Param, SystemName
from opsbook.report import (
    ICON,
    RunReport,
    artifact_key,
    finding_lines,
    finding_rows,
    judge,
    sort_findings,
)
from opsbook.resources import Discovered, coverage, discover
from tasks.apigateway import check_apis
from tasks.awslambda import check_functions
from tasks.cloudwatch import check_alarms
from tasks.dynamodb import check_tables
from tasks.ecs import check_services
from tasks.elb import check_target_health
from tasks.health import submit_checks
from tasks.logs import count_matches, log_groups, top_messages
from tasks.opensearch import check_domains
from tasks.s3 import check_buckets
from tasks.sqs import check_dlqs

RUNBOOK = "emergency-check"
TASKS = [discover, check_functions, check_tables, check_domains, check_apis, check_services, check_buckets,
         check_alarms, check_dlqs]  # plus the two defined below (see TASKS += at the end)
PRIORITIES = ("P0", "P1", "P2", "P3")
SAMPLES = 20  # masked sample lines kept per log group to find the top messages
RECENT_CHECK = "log-errors-1h"
VERDICT = "incident-priority"
_PRIO_STATUS = {"P0": Status.CRIT, "P1": Status.CRIT, "P2": Status.WARN, "P3": Status.OK}
_COMPONENT_CHECKS = {"ecs-service", "alb-targets", "lambda-state", "dynamodb-status", "opensearch-domain", "opensearch-health"}


# --- errors of the last hour ----------------------------------------------------------------


def judge_recent(check: str, group: str, res: dict[str, Any] | None, err: BaseException | None, warn: int, crit: int, minutes: int) -> Finding:
    if err is not None:
        if aws.is_not_found(err):
            return unknown(check, group, "log group does not exist (never written to, or wrong name)")
        return unknown(check, group, aws.describe_error(err))
    assert res is not None
    n = res["count"]
    top = top_messages(res["samples"])
    summary = f"{n} ERROR lines in the last {minutes} min"
    if top:
        summary += "; top: " + "; ".join(f"{t['message']} (×{t['count']})" for t in top)
    return Finding(check=check, resource=group, status=by_threshold(n, warn, crit), value=n, summary=mask(summary)[:400],
                   details={"top_messages": top, "samples": res["samples"], "sampled": len(res["samples"]),
                            "window_minutes": minutes, "warn": warn, "crit": crit})


@aws_task(iam=["logs:FilterLogEvents"], name="recent-errors", cache_policy=NO_CACHE)
def check_recent_errors(system: System, found: Discovered, deadline: aws.Deadline, minutes: int = 60) -> list[Finding]:
    """ERROR lines of the last hour per function/log group (the daily thresholds, applied to one hour)."""
    end = datetime.now(timezone.utc)
    start = end - timedelta(minutes=minutes)
    th = system.thresholds
    groups = log_groups(system, found)
    res = aws.parallel(lambda g: count_matches(system.region, g.name, g.error_pattern, start, end, samples=SAMPLES), groups, deadline=deadline)
    return [judge_recent(RECENT_CHECK, g.name, r, e, th.log_errors_warn, th.log_errors_crit, minutes) for g, r, e in res]


# --- verdict -------------------------------------------------------------------------------------


def implied_priority(findings: list[Finding]) -> tuple[str, list[str]]:
    """(priority, reasons): the highest priority the findings imply (see the module docstring)."""
    reasons: dict[str, list[str]] = {p: [] for p in PRIORITIES}
    by_check: dict[str, list[Finding]] = {}
    for f in findings:
        by_check.setdefault(f.check, []).append(f)

    for f in by_check.get("ecs-service", []):
        if f.status is Status.CRIT:
            down = not f.value  # 0 running, missing, or cluster missing
            reasons["P0" if down else "P1"].append(f"ECS {f.resource}: {f.summary}")
    for f in by_check.get("alb-targets", []):
        if f.status is Status.CRIT:
            reasons["P0"].append(f"ALB {f.resource}: {f.summary}")
    for f in by_check.get("apigateway-present", []):
        if f.status is Status.CRIT:
            reasons["P0"].append(f"API {f.resource}: {f.summary}")

    functions = [f.resource for f in by_check.get("lambda-state", [])]
    state_crit = {f.resource for f in by_check.get("lambda-state", []) if f.status is Status.CRIT}
    errors_crit = {f.resource.removeprefix("/aws/lambda/") for f in by_check.get(RECENT_CHECK, [])
                   if f.status is Status.CRIT and f.resource.startswith("/aws/lambda/")}
    failing = [fn for fn in functions if fn in state_crit or fn in errors_crit]
    if functions and len(failing) == len(functions):
        reasons["P0"].append(f"all {len(functions)} Lambda functions failing")
    elif state_crit:
        reasons["P1"].append(f"Lambda function(s) down: {', '.join(sorted(state_crit))}")

    for check, what in (("dynamodb-status", "DynamoDB"), ("opensearch-health", "OpenSearch"), ("opensearch-domain", "OpenSearch")):
        for f in by_check.get(check, []):
            if f.status is Status.CRIT:
                reasons["P1"].append(f"{what} {f.resource}: {f.summary}")

    for f in by_check.get("alarms", []):
        if f.status in (Status.CRIT, Status.WARN) and f.value:
            prio = f.details.get("priority") or "P2"
            reasons[prio].append(f"alarm {f.resource} firing ({f.details.get('priority') or 'no priority in the inventory: P2'})")

    classified = {"ecs-service", "alb-targets", "apigateway-present", "lambda-state", "dynamodb-status", "opensearch-health", "opensearch-domain", "alarms"}
    for f in findings:
        if f.check in classified and f.status is Status.CRIT:
            continue
        if f.status is Status.CRIT or (f.status is Status.WARN and f.check in _COMPONENT_CHECKS):
            if not (f.check == "lambda-state" and f.resource in state_crit):
                reasons["P2"].append(f"{f.check} {f.resource}: {f.summary}")
    for p in PRIORITIES:
        if reasons[p]:
            return p, reasons[p]
    return "P3", []


def escalation_for(system: System, prio: str) -> tuple[EscalationLevel | None, EscalationLevel | None, str]:
    """(who to call now, the next step if unresolved, how it was chosen)."""
    levels = system.escalation
    named = next((i for i, e in enumerate(levels) if e.level.upper() == prio), None)
    if named is not None:
        return levels[named], None, f"the escalation entry named {prio}"
    if not levels:
        return None, None, "the inventory lists no escalation"
    if prio in ("P0", "P1"):
        return levels[0], (levels[1] if len(levels) > 1 else None), f"{prio}: the first escalation entry"
    if prio == "P2":
        return levels[0], None, "P2: the first escalation entry, without paging (within 1 h)"
    return None, None, "P3: no escalation (backlog)"


def verdict(system: System, findings: list[Finding]) -> Finding:
    prio, reasons = implied_priority(findings)
    now, nxt, how = escalation_for(system, prio)
    if now is not None:
        esc = f"escalate to {now.level}: {now.who} (respond within {now.respond_within_minutes} min)"
        if nxt is not None:
            esc += f"; if unresolved after {nxt.respond_within_minutes} min: {nxt.level} {nxt.who}"
    else:
        esc = "no escalation" + (" (backlog)" if prio == "P3" else "")
    blind = [f"{f.check} {f.resource}" for f in findings if f.status is Status.UNKNOWN]
    summary = f"{prio}; {esc}"
    if reasons:
        summary += f". Because: {reasons[0]}" + (f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else "")
    if blind:
        summary += f". {len(blind)} blind spot(s) (UNKNOWN)"
    return Finding(check=VERDICT, resource=system.name, status=_PRIO_STATUS[prio], value=int(prio[1]), summary=mask(summary)[:600],
                   details={"priority": prio, "reasons": reasons, "escalation": now.model_dump() if now else None,
                            "next_escalation": nxt.model_dump() if nxt else None, "escalation_rule": how, "blind_spots": blind})


# --- report ----------------------------------------------------------------------------------------


def ordered(findings: list[Finding]) -> list[Finding]:
    """The verdict first, then the findings by severity (CRIT, WARN, UNKNOWN, OK)."""
    return [f for f in findings if f.check == VERDICT] + sort_findings([f for f in findings if f.check != VERDICT])


def emergency_markdown(report: RunReport) -> str:
    v = next((f for f in report.findings if f.check == VERDICT), None)
    c = report.counts()
    lines = [f"# {ICON[report.status]} {report.runbook} · {report.system}: **{v.details['priority'] if v else '?'}**", ""]
    if v is not None:
        lines += [f"**Incident priority {v.details['priority']}** — {mask(v.summary)}", ""]
        for r in v.details["reasons"][:10]:
            lines.append(f"- {mask(r)}")
        lines.append("")
    lines += [f"{c['CRIT']} CRIT · {c['WARN']} WARN · {c['UNKNOWN']} UNKNOWN · {c['OK']} OK — {len(report.findings)} findings, "
              f"{report.api_calls} AWS API calls, {report.duration_s:.1f} s, region {report.region}", ""]
    bad = [f for f in ordered(report.findings) if f.status is not Status.OK and f.check != VERDICT]
    lines += finding_lines(bad) if bad else ["Everything checked is OK."]
    checks = Counter(f.check for f in report.findings)
    lines += ["", "Checks run: " + ", ".join(f"{k} ({n})" for k, n in sorted(checks.items()))]
    return "\n".join(lines)


@task(name="publish-emergency-report", cache_policy=NO_CACHE)
def publish(report: RunReport) -> RunReport:
    key = artifact_key(report.runbook, report.system)
    create_markdown_artifact(key=key, markdown=emergency_markdown(report), description=mask(report.headline()))
    rows = finding_rows(ordered(report.findings))
    create_table_artifact(key=f"{key}-findings", table=rows, description=f"{len(rows)} findings; each summary whole in {key}")
    return report


def gather_by(futures: dict[str, PrefectFuture], deadline: aws.Deadline, grace: float) -> list[Finding]:
    """gather(), but a check not finished at the deadline is UNKNOWN instead of waited for."""
    until = time.monotonic() + deadline.remaining + grace  # one bound for all, not one per check
    done: dict[str, PrefectFuture] = {}
    late: list[Finding] = []
    for name, fut in futures.items():
        fut.wait(timeout=max(0.0, until - time.monotonic()))
        if fut.state.is_final():
            done[name] = fut
        else:
            late.append(unknown(name, "(whole check)", f"not finished within the run's deadline ({deadline.seconds:.1f} s)"))
    return gather(done) + late


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=300)
def emergency_check(
    system: SystemName,
    deadline_seconds: Annotated[float, Param("Seconds for the whole check (the first minutes of an incident): what is not read "
                                             "by then is UNKNOWN", gt=0, le=300)] = 10.0,
) -> RunReport:
    """Every component at once, then the incident priority and whom to escalate to. Never mutates."""
    started = time.monotonic()
    logger = get_run_logger()
    inv = load_system(system)
    calls = aws.start_call_log()
    # The checks get the deadline minus a reserve for judging and publishing.
    reserve = min(2.0, deadline_seconds * 0.25)
    deadline = aws.Deadline(max(0.5, deadline_seconds - reserve))
    grace = reserve / 2

    found = discover.submit(inv)
    checks = submit_checks(inv, found, deadline, logs=False)
    checks[RECENT_CHECK] = check_recent_errors.submit(inv, found, deadline)
    checks["alb-targets"] = check_target_health.submit(inv, deadline)

    findings = gather_by(checks, deadline, grace)
    found.wait(timeout=deadline.remaining + grace)
    disc: Discovered | None = None
    if found.state.is_completed():
        disc = found.result()
        findings += coverage(inv, disc)
    else:
        findings += gather_by({"discovery": found}, deadline, 0)
    findings.append(verdict(inv, findings))

    report = judge.submit(RUNBOOK, inv, findings, calls, started, wait_for=[allow_failure(f) for f in checks.values() if f.state.is_final()]).result()
    report.runbook = RUNBOOK
    report.findings = ordered(report.findings)
    report.count_calls(calls, started)
    publish.submit(report).result()
    logger.info("%s | %s", report.headline(), report.findings[0].summary)
    return report


TASKS += [check_recent_errors, check_target_health]
