"""emergency-check's own judging (pure): the errors of the last hour, the incident priority the findings
imply and whom to escalate to. The component rules are opsbook.components'.

Priority (002: P0 전체 서비스 중단, P1 주요 기능 장애, P2 부분 기능 장애, P3 개선 사항):

- P0: the front door is down: an ECS service with 0 running tasks (or missing,
  or its cluster missing), an ALB target group with 0 healthy targets, every
  Lambda function failing (state Failed/missing, or its errors of the last hour
  at the CRIT threshold), a REST API named in the inventory missing, an
  endpoint users reach unreachable or answering a wrong status (the inventory's
  ``endpoints``: 002's ``curl -f https://api.todo-app.com/health``).
- P1: a data component is down: a DynamoDB table missing or not ACTIVE, an
  OpenSearch cluster red or its domain missing; some (not all) Lambda functions
  failing; an ECS deployment FAILED with tasks still running; an endpoint
  slower than its CRIT latency (001 P1: 서비스 성능 저하).
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

from typing import Any

from opsbook.components import log_group_unread
from opsbook.findings import Finding, Status, by_threshold
from opsbook.inventory import EscalationLevel, System, Thresholds
from opsbook.masking import mask

PRIORITIES = ("P0", "P1", "P2", "P3")
RECENT_CHECK = "log-errors-1h"
VERDICT = "incident-priority"
_PRIO_STATUS = {"P0": Status.CRIT, "P1": Status.CRIT, "P2": Status.WARN, "P3": Status.OK}
_COMPONENT_CHECKS = {"ecs-service", "alb-targets", "lambda-state", "dynamodb-status", "opensearch-domain", "opensearch-health"}
_CLASSIFIED = {"ecs-service", "alb-targets", "apigateway-present", "lambda-state", "dynamodb-status", "opensearch-health", "opensearch-domain",
               "alarms", "endpoint"}


# --- errors of the last hour ----------------------------------------------------------------


def judge_recent(group: str, res: dict[str, Any] | None, unreadable: str | None, warn: int, crit: int, minutes: int) -> Finding:
    """ERROR lines of the last ``minutes`` in one log group against the daily thresholds, with the top messages."""
    if res is None:
        return log_group_unread(RECENT_CHECK, group, unreadable)
    n, top = res["count"], res["top"]
    summary = f"{n} ERROR lines in the last {minutes} min"
    if top:
        summary += "; top: " + "; ".join(f"{t['message']} (×{t['count']})" for t in top)
    return Finding(check=RECENT_CHECK, resource=group, status=by_threshold(n, warn, crit), value=n, summary=mask(summary)[:400],
                   details={"top_messages": top, "samples": res["samples"], "sampled": len(res["samples"]),
                            "window_minutes": minutes, "warn": warn, "crit": crit})


def judge_recent_errors(reads: list[dict[str, Any]], th: Thresholds, minutes: int) -> list[Finding]:
    """Every log group read by tasks.logs.count_recent_errors."""
    return [judge_recent(r["group"], r["result"], r["unreadable"], th.log_errors_warn, th.log_errors_crit, minutes) for r in reads]


# --- verdict -------------------------------------------------------------------------------------


def _lambda_reasons(by_check: dict[str, list[Finding]], reasons: dict[str, list[str]]) -> set[str]:
    """All functions failing (state or errors of the last hour at CRIT) is P0; some down is P1. Returns those down."""
    functions = [f.resource for f in by_check.get("lambda-state", [])]
    state_crit = {f.resource for f in by_check.get("lambda-state", []) if f.status is Status.CRIT}
    errors_crit = {f.resource.removeprefix("/aws/lambda/") for f in by_check.get(RECENT_CHECK, [])
                   if f.status is Status.CRIT and f.resource.startswith("/aws/lambda/")}
    failing = [fn for fn in functions if fn in state_crit or fn in errors_crit]
    if functions and len(failing) == len(functions):
        reasons["P0"].append(f"all {len(functions)} Lambda functions failing")
    elif state_crit:
        reasons["P1"].append(f"Lambda function(s) down: {', '.join(sorted(state_crit))}")
    return state_crit


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
    for f in by_check.get("endpoint", []):
        if f.status is Status.CRIT:
            reasons["P1" if f.details.get("failure") == "latency" else "P0"].append(f"endpoint {f.resource}: {f.summary}")
    state_crit = _lambda_reasons(by_check, reasons)
    for check, what in (("dynamodb-status", "DynamoDB"), ("opensearch-health", "OpenSearch"), ("opensearch-domain", "OpenSearch")):
        for f in by_check.get(check, []):
            if f.status is Status.CRIT:
                reasons["P1"].append(f"{what} {f.resource}: {f.summary}")
    for f in by_check.get("alarms", []):
        if f.status in (Status.CRIT, Status.WARN) and f.value:
            prio = f.details.get("priority") or "P2"
            reasons[prio].append(f"alarm {f.resource} firing ({f.details.get('priority') or 'no priority in the inventory: P2'})")

    for f in findings:
        if f.check in _CLASSIFIED and f.status is Status.CRIT:
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
    """The incident-priority finding: the priority, whom to escalate to, why, and the blind spots (UNKNOWN)."""
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
