"""emergency-check's own judging (pure): the errors of the last hour, the incident priority the findings
imply and whom to escalate to. The component rules are opsbook.components'.

Errors of the last hour: each log group's ERROR lines against the daily thresholds, and
the messages of every line read (numbers and ids folded) ranked by how often they were
seen, with when first and last, over all groups. The lines read are bounded by
``thresholds.error_lines_budget``: when it is reached, the ranking is of the first lines
only and says so (UNKNOWN), and a group cut short has a lower bound for its count.

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
  slower than its CRIT latency, or a service's response time, an agent or the
  pipeline past ``slow_response_crit_s``, or its target 5XX past 5 % (001 P1:
  서비스 성능 저하, 응답시간 > 60초, 일부 요청 실패).
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

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from opsbook.components import log_group_unread
from opsbook.findings import Finding, Status, by_threshold
from opsbook.inventory import EscalationLevel, System, Thresholds
from opsbook.masking import mask
from tasks.logs import message_shape

PRIORITIES = ("P0", "P1", "P2", "P3")
RECENT_CHECK = "log-errors-1h"
TOP_CHECK = "log-errors-1h-top"  # the messages of the window ranked over every log group
TOP_N = 10  # messages the ranking finding lists
GROUP_TOP_N = 3  # messages each log group's finding lists
VERDICT = "incident-priority"
_PRIO_STATUS = {"P0": Status.CRIT, "P1": Status.CRIT, "P2": Status.WARN, "P3": Status.OK}
_COMPONENT_CHECKS = {"ecs-service", "alb-targets", "lambda-state", "dynamodb-status", "opensearch-domain", "opensearch-health"}
_PERFORMANCE_CHECKS = {"alb-latency": "response time", "alb-5xx": "target 5XX", "agent-time": "agent", "pipeline-time": "pipeline"}
_CLASSIFIED = {"ecs-service", "alb-targets", "apigateway-present", "lambda-state", "dynamodb-status", "opensearch-health", "opensearch-domain",
               "alarms", "endpoint", *_PERFORMANCE_CHECKS}


# --- errors of the last hour ----------------------------------------------------------------


def rank_messages(lines: Iterable[tuple[str, int, str]]) -> list[dict[str, Any]]:
    """Every message of ``lines`` ((log group, epoch ms, masked line)) folded by tasks.logs.message_shape (numbers and ids
    folded), counted, with when it was first and last seen and the log groups it came from: most frequent first; a tie
    goes to the message seen first, then the message itself (so the order never depends on the order read)."""
    agg: dict[str, list[Any]] = {}  # shape -> [count, first ms, last ms, groups]
    for group, ms, line in lines:
        a = agg.get(shape := message_shape(line))
        if a is None:
            agg[shape] = [1, ms, ms, {group}]
        else:
            a[0] += 1
            a[1], a[2] = min(a[1], ms), max(a[2], ms)
            a[3].add(group)
    ranked = sorted(agg.items(), key=lambda kv: (-kv[1][0], kv[1][1], kv[0]))
    return [{"message": shape, "count": n, "first_seen": _iso(first), "last_seen": _iso(last), "groups": sorted(groups)}
            for shape, (n, first, last, groups) in ranked]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def judge_recent(group: str, res: dict[str, Any] | None, unreadable: str | None, warn: int, crit: int, minutes: int) -> Finding:
    """ERROR lines of the last ``minutes`` in one log group against the daily thresholds, with the top messages. A group the
    line budget cut ("cut") has a lower bound: its status as far as it reaches, UNKNOWN below the WARN threshold."""
    if res is None:
        return log_group_unread(RECENT_CHECK, group, unreadable)
    n, top, cut = res["count"], res["top"], bool(res.get("cut"))
    status = by_threshold(n, warn, crit)
    summary = f"{n} ERROR lines in the last {minutes} min"
    if cut:
        status = status if n >= warn else Status.UNKNOWN
        summary = (f"≥{n} ERROR lines in the last {minutes} min (the line budget was reached before this group's last line: a lower bound)"
                   if n else "not read: the line budget was spent on the other log groups before this one was read")
    if top:
        summary += "; top: " + "; ".join(f"{t['message']} (×{t['count']})" for t in top)
    return Finding(check=RECENT_CHECK, resource=group, status=status, value=n, summary=mask(summary)[:400],
                   details={"top_messages": top, "samples": res["samples"], "sampled": len(res["samples"]),
                            "window_minutes": minutes, "warn": warn, "crit": crit, "cut": cut, "lines_ranked": len(res.get("lines", ()))})


def judge_recent_errors(reads: list[dict[str, Any]], th: Thresholds, minutes: int) -> list[Finding]:
    """Every log group read by tasks.logs.count_recent_errors, each with its own top messages (over every line read)."""
    return [judge_recent(r["group"], _ranked(r["group"], r["result"]), r["unreadable"], th.log_errors_warn, th.log_errors_crit, minutes)
            for r in reads]


def _ranked(group: str, res: dict[str, Any] | None) -> dict[str, Any] | None:
    if res is None or "lines" not in res:
        return res
    return res | {"top": rank_messages((group, ms, line) for ms, line in res["lines"])[:GROUP_TOP_N]}


def judge_top_errors(reads: list[dict[str, Any]], system: str, minutes: int, budget: int, n: int = TOP_N) -> list[Finding]:
    """The window's error messages over every log group, ranked by how often they were seen (rank_messages): the top
    ``n``. UNKNOWN when the line budget was reached (the ranking is of the first lines only; the finding says which
    groups were cut) or no group could be read; the groups that could not be read are named (each is UNKNOWN in its own
    finding)."""
    if not reads:
        return []
    read = [r for r in reads if r["result"] is not None]
    unread = {r["group"]: r["unreadable"] or "log group does not exist (never written to, or wrong name)" for r in reads if r["result"] is None}
    ranked = rank_messages((r["group"], ms, line) for r in read for ms, line in r["result"].get("lines", ()))
    lines = sum(t["count"] for t in ranked)
    seen = sum(r["result"]["count"] for r in read)
    cut = sorted(r["group"] for r in read if r["result"].get("cut"))
    if ranked:
        summary = (f"{len(ranked)} distinct message(s) in {lines} ERROR lines of the last {minutes} min; top: "
                   + "; ".join(f"{t['message']} (×{t['count']}, {t['first_seen'][11:]}–{t['last_seen'][11:]})" for t in ranked[:3]))
    else:
        summary = f"no ERROR lines in the last {minutes} min in the {len(read)} log group(s) read"
    if cut:
        summary = f"ranked the first {lines} of ≥{seen} lines; the budget ({budget} lines) was reached (cut: {', '.join(cut)}). " + summary
    if unread:
        summary += f". {len(unread)} log group(s) not read (UNKNOWN, see their findings): {', '.join(sorted(unread))}"
    failed = any(r["unreadable"] for r in reads if r["result"] is None)  # not read (denied, throttled), not merely absent
    status = Status.UNKNOWN if cut or not read or failed else Status.OK  # the first lines only, or some or none: not a ranking to trust
    return [Finding(check=TOP_CHECK, resource=system, status=status, value=lines, summary=mask(summary)[:600],
                    details={"top_messages": ranked[:n], "messages": len(ranked), "lines_ranked": lines, "lines_seen": seen,
                             "budget": budget, "budget_reached": bool(cut), "cut_groups": cut, "groups_read": len(read),
                             "unread_groups": unread, "window_minutes": minutes})]


def judge_window_errors(reads: list[dict[str, Any]], system: System, minutes: int) -> list[Finding]:
    """The errors of the window: each log group against the thresholds, then the messages ranked over all of them."""
    th = system.thresholds
    return judge_recent_errors(reads, th, minutes) + judge_top_errors(reads, system.name, minutes, th.error_lines_budget)


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
    for check, what in _PERFORMANCE_CHECKS.items():  # 001 P1 서비스 성능 저하
        for f in by_check.get(check, []):
            if f.status is Status.CRIT:
                reasons["P1"].append(f"{what} {f.resource}: {f.summary}")
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


def _seen_components(findings: list[Finding]) -> tuple[int, int]:
    """(AWS component findings read, component findings UNKNOWN): what the priority could be judged on. The users'
    endpoint answering is not a component read: it says nothing of the data components behind it."""
    judged = [f for f in findings if f.check in _CLASSIFIED or f.check in _PERFORMANCE_CHECKS or f.check == "alarms"
              or (f.resource == "(whole check)")]
    blind = sum(1 for f in judged if f.status is Status.UNKNOWN)
    seen = sum(1 for f in judged if f.status is not Status.UNKNOWN and not f.check.startswith("endpoint"))
    return seen, blind


def verdict(system: System, findings: list[Finding]) -> Finding:
    """The incident-priority finding: the priority, whom to escalate to, why, and the blind spots (UNKNOWN).

    Blind is never P3: when nothing that could show an incident was read (every component check UNKNOWN: AWS
    unreachable, the deadline passed) the priority is UNKNOWN and escalation is as for P1 (an incident cannot be
    ruled out); a P3 with component checks UNKNOWN is UNKNOWN as a finding (only what was seen is fine)."""
    prio, reasons = implied_priority(findings)
    seen, blind_components = _seen_components(findings)
    if prio in ("P2", "P3") and blind_components and not seen:
        return _blind_verdict(system, findings, prio, reasons)
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
    status = _PRIO_STATUS[prio]
    if status is Status.OK and blind_components:
        status = Status.UNKNOWN
        summary += f" ({blind_components} component check(s) not read: P3 only as far as seen)"
    return Finding(check=VERDICT, resource=system.name, status=status, value=int(prio[1]), summary=mask(summary)[:600],
                   details={"priority": prio, "reasons": reasons, "escalation": now.model_dump() if now else None,
                            "next_escalation": nxt.model_dump() if nxt else None, "escalation_rule": how, "blind_spots": blind})


def _blind_verdict(system: System, findings: list[Finding], seen_prio: str, reasons: list[str]) -> Finding:
    now, nxt, how = escalation_for(system, "P1")
    blind = [f"{f.check} {f.resource}" for f in findings if f.status is Status.UNKNOWN]
    esc = (f"escalate as for P1: {now.level}: {now.who} (respond within {now.respond_within_minutes} min)" if now
           else "the inventory lists no escalation: call the system's owner")
    summary = (f"UNKNOWN; no component of {system.name} could be read ({len(blind)} blind spot(s): {', '.join(blind[:3])}"
               f"{', ...' if len(blind) > 3 else ''}), so an incident cannot be ruled out; {esc}")
    if reasons:
        summary += f". Seen: {reasons[0]}"
    return Finding(check=VERDICT, resource=system.name, status=Status.UNKNOWN, value=None, summary=mask(summary)[:600],
                   details={"priority": "UNKNOWN", "seen_priority": seen_prio, "reasons": reasons,
                            "escalation": now.model_dump() if now else None, "next_escalation": nxt.model_dump() if nxt else None,
                            "escalation_rule": f"blind: as for P1 ({how})", "blind_spots": blind})
