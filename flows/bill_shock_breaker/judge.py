"""bill-shock-breaker's decisions (pure: no AWS, no Prefect, no clock: ``now`` is passed in).

Token spend per case, user and service against the budgets and each case's own baseline; the breaker state
transitions it implies (trip OPEN, half-open after the cooldown, close a half-open case back under budget);
which actions are automatic and which need approval; the findings and the usage table.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from opsbook.findings import Finding, Status
from opsbook.inventory import BillShock, System
from opsbook.masking import mask
from opsbook.mutation.core import Action, Plan

if TYPE_CHECKING:
    from tasks.cloudwatch import TokenUsage

RUNBOOK = "bill-shock-breaker"
SERVICE = "__service__"
OPEN, HALF_OPEN, CLOSED = "OPEN", "HALF_OPEN", "CLOSED"  # the breaker table's states (tasks/dynamodb.py)
PAUSED = ("Disabled", "Disabling")  # event source mapping states: the worker does not consume


class Verdict(BaseModel):
    trip: dict[str, str] = Field(default_factory=dict)        # case -> reason
    half_open: dict[str, str] = Field(default_factory=dict)
    close: dict[str, str] = Field(default_factory=dict)
    users_over: dict[str, float] = Field(default_factory=dict)
    block: dict[str, str] = Field(default_factory=dict)       # user -> reason (needs approval)
    pause_service: str | None = None                          # reason (needs approval)
    tokens_window: float = 0
    tokens_hour: float = 0
    cost_window_usd: float = 0
    cost_hour_usd: float = 0
    top_cases: list[tuple[str, float]] = Field(default_factory=list)
    top_users: list[tuple[str, float]] = Field(default_factory=list)


def _top(series: dict[str, list[float]], n: int) -> list[tuple[str, float]]:
    return sorted(((k, s[0]) for k, s in series.items() if s), key=lambda x: -x[1])[:n]


def candidates(cfg: BillShock, usage: TokenUsage) -> list[str]:
    """Cases whose breaker must be read: over the budget or the spike floor this window, and the service's."""
    return [c for c, s in usage.cases.items() if s and s[0] > min(cfg.case_budget_tokens, cfg.spike_min_tokens)] + [SERVICE]


def top_users(cfg: BillShock, usage: TokenUsage) -> list[str]:
    """The users whose uploads are counted (the top spenders only)."""
    return [u for u, _ in _top(usage.users, cfg.top_n)]


def over_budget(cfg: BillShock, window: float, baseline: float) -> str | None:
    """Why a case's spend this window trips its breaker (over budget, or a spike over its baseline); None: it does not."""
    if window > cfg.case_budget_tokens:
        return f"{window:,.0f} tokens in {cfg.window_minutes} min > budget {cfg.case_budget_tokens:,}"
    if window >= cfg.spike_min_tokens and baseline > 0 and window > cfg.spike_factor * baseline:
        return f"{window:,.0f} tokens in {cfg.window_minutes} min = {window / baseline:.1f}x its {cfg.baseline_hours} h baseline ({baseline:,.0f})"
    return None


def _judge_cases(cfg: BillShock, usage: TokenUsage, states: dict[str, dict[str, Any]], v: Verdict) -> None:
    """Trip cases over budget (unless OPEN already); close HALF_OPEN cases back under budget; count tokens."""
    per_hour = max(1, 60 // cfg.window_minutes)
    for case, s in usage.cases.items():
        window = s[0] if s else 0.0
        baseline_windows = s[1:]
        baseline = sum(baseline_windows) / len(baseline_windows) if baseline_windows else 0.0
        v.tokens_window += window
        v.tokens_hour += sum(s[:per_hour])
        state = states.get(case, {}).get("state", CLOSED)
        reason = over_budget(cfg, window, baseline)
        if reason and state != OPEN:
            v.trip[case] = reason
        elif not reason and state == HALF_OPEN:
            v.close[case] = f"under budget since half-open ({window:,.0f} tokens this window)"


def _judge_open(cfg: BillShock, usage: TokenUsage, states: dict[str, dict[str, Any]], now: datetime, v: Verdict) -> None:
    """Half-open an OPEN case back under budget once the cooldown has passed."""
    for case, item in states.items():
        if case == SERVICE or item.get("state") != OPEN or case in v.trip:
            continue
        s = usage.cases.get(case, [])
        window = s[0] if s else 0.0
        opened = datetime.fromisoformat(item.get("changed_at", now.isoformat()))
        if window <= cfg.case_budget_tokens and now - opened >= timedelta(minutes=cfg.cooldown_minutes):
            v.half_open[case] = f"OPEN for {(now - opened).total_seconds() / 60:.0f} min and back under budget"


def judge(cfg: BillShock, usage: TokenUsage, states: dict[str, dict[str, Any]], uploads: dict[str, int],
          consumer: dict[str, Any] | None, now: datetime) -> Verdict:
    v = Verdict()
    _judge_cases(cfg, usage, states, v)
    _judge_open(cfg, usage, states, now, v)
    for user, s in usage.users.items():
        if s and s[0] > cfg.user_budget_tokens:
            v.users_over[user] = s[0]
    for user, n in uploads.items():
        if n >= cfg.mass_upload_threshold:
            v.block[user] = f"{n} uploads in {cfg.window_minutes} min (threshold {cfg.mass_upload_threshold}): suspected mass-upload attack"
    if v.tokens_hour > cfg.global_budget_tokens_per_hour and (consumer or {}).get("state") not in PAUSED:
        v.pause_service = f"{v.tokens_hour:,.0f} tokens in the last hour > global budget {cfg.global_budget_tokens_per_hour:,}"
    v.cost_window_usd = round(v.tokens_window / 1000 * cfg.price_per_1k_tokens, 2)
    v.cost_hour_usd = round(v.tokens_hour / 1000 * cfg.price_per_1k_tokens, 2)
    v.top_cases = _top(usage.cases, cfg.top_n)
    v.top_users = _top(usage.users, cfg.top_n)
    return v


def findings_for(cfg: BillShock, v: Verdict, consumer: dict[str, Any] | None, now: datetime) -> list[Finding]:
    out = [Finding(check="token-spend", resource="service", value=round(v.tokens_hour),
                   status=Status.CRIT if v.pause_service else Status.OK,
                   summary=f"{v.tokens_hour:,.0f} tokens (~${v.cost_hour_usd:,.2f}) in the last hour; budget {cfg.global_budget_tokens_per_hour:,}")]
    out += [Finding(check="case-breaker", resource=c, status=Status.WARN, summary=f"trip: {r}") for c, r in v.trip.items()]
    out += [Finding(check="user-spend", resource=u, status=Status.WARN, value=round(t),
                    summary=f"{t:,.0f} tokens in {cfg.window_minutes} min > user budget {cfg.user_budget_tokens:,}") for u, t in v.users_over.items()]
    out += [Finding(check="mass-upload", resource=u, status=Status.CRIT, summary=r) for u, r in v.block.items()]
    if consumer and consumer.get("state") in PAUSED:
        paused_s = (now - consumer["last_modified"]).total_seconds() if consumer.get("last_modified") else 0
        share = paused_s / consumer["retention_s"]
        status = Status.CRIT if share >= cfg.retention_warn_fraction else Status.WARN
        out.append(Finding(check="service-paused", resource=cfg.source_queue, status=status, value=round(paused_s),
                           summary=(f"the AI worker is paused: {consumer['queued']} messages waiting; paused {paused_s / 3600:.1f} h of the queue's "
                                    f"{consumer['retention_s'] / 3600:.0f} h retention" + (" — MESSAGES WILL EXPIRE: resume or extend retention"
                                                                                           if status is Status.CRIT else ""))))
    return out


def consumer_unread(cfg: BillShock, reason: str) -> Finding:
    """The worker's consumer (source queue, event source mapping) could not be read: whether the service is paused, and
    pausing it, are unknown; a case's breaker needs none of it and is judged all the same."""
    return Finding(check="worker-consumer", resource=cfg.source_queue, status=Status.UNKNOWN,
                   summary=f"step 'read-consumer' failed: {reason}; whether the AI worker is paused is unknown and no pause can be "
                           f"planned; the case breakers were judged without it")


def report_markdown(cfg: BillShock, v: Verdict, usage: TokenUsage) -> str:
    lines = [f"# bill-shock-breaker: last {cfg.window_minutes} min", "",
             f"Tokens: {v.tokens_window:,.0f} this window (~${v.cost_window_usd:,.2f}), {v.tokens_hour:,.0f} in the last hour "
             f"(~${v.cost_hour_usd:,.2f}); {len(usage.cases)} active cases, {len(usage.users)} active users.", "",
             "| top cases | tokens | | top users | tokens |", "|---|---|---|---|---|"]
    for i in range(max(len(v.top_cases), len(v.top_users))):
        c = v.top_cases[i] if i < len(v.top_cases) else ("", 0)
        u = v.top_users[i] if i < len(v.top_users) else ("", 0)
        lines.append(f"| {c[0]} | {c[1]:,.0f} | | {mask(u[0])} | {u[1]:,.0f} |")
    return mask("\n".join(lines))


def _breaker_action(case: str, current: str, target: str, evidence: str) -> Action:
    return Action(kind="breaker", resource=case, current=current, target=target, iam_action="dynamodb:UpdateItem", evidence=evidence)


def _pause_action(cfg: BillShock, current: str, target: str, evidence: str) -> Action:
    return Action(kind="pause-service", resource=f"{cfg.worker_function}<-{cfg.source_queue}", current=current, target=target,
                  iam_action="lambda:UpdateEventSourceMapping", evidence=evidence)


def plan_for(system: System, identity: Any, v: Verdict, states: dict, consumer: dict | None,
             accounts: dict[str, str] | None = None, consumer_error: str | None = None) -> tuple[Plan, Plan]:
    """(automatic plan, plan that needs approval). ``accounts``: user -> enabled / disabled, as read (a user already disabled
    needs no block); ``consumer_error``: why the worker's consumer could not be read (no pause is planned then)."""
    accounts = accounts or {}
    cfg = system.bill_shock
    auto = Plan(runbook=RUNBOOK, system=system.name, identity=identity)
    gated = Plan(runbook=RUNBOOK, system=system.name, identity=identity)
    auto.actions += [_breaker_action(c, states.get(c, {}).get("state", CLOSED), OPEN, r) for c, r in v.trip.items()]
    auto.actions += [_breaker_action(c, OPEN, HALF_OPEN, r) for c, r in v.half_open.items()]
    auto.actions += [_breaker_action(c, HALF_OPEN, CLOSED, r) for c, r in v.close.items()]
    for u, r in v.block.items():
        if accounts.get(u) == "disabled":
            auto.unchanged.append(f"{u}: already disabled")
            continue
        if str(accounts.get(u, "")).startswith("unreadable"):
            auto.cannot.append(f"{u}: suspected mass upload, but the account {accounts[u]}: block it by hand")
            continue
        (auto if cfg.auto_block_accounts else gated).actions.append(
            Action(kind="block-user", resource=u, current="enabled", target="disabled", iam_action="cognito-idp:AdminDisableUser", evidence=r))
    if v.pause_service and consumer and consumer.get("mapping_uuid"):
        (auto if cfg.auto_pause_service else gated).actions.append(
            _pause_action(cfg, str(consumer.get("state")), "Disabled", v.pause_service + "; messages wait in the queue, nothing is dropped"))
    elif v.pause_service and consumer_error:
        auto.cannot.append(f"service: {v.pause_service}, but the worker's trigger could not be read ({consumer_error}): pause it by hand")
    elif v.pause_service:
        auto.cannot.append(f"service: {v.pause_service}, but no event source mapping from {cfg.source_queue} to {cfg.worker_function} to pause")
    return auto, gated


def reset_plan(system: System, identity: Any, case_id: str, current: str, resume_service: bool,
               consumer: dict[str, Any]) -> Plan:
    """mode=reset: close ``case_id``'s breaker (its ``current`` state) and/or resume the paused worker."""
    cfg = system.bill_shock
    plan = Plan(runbook=RUNBOOK, system=system.name, identity=identity)
    if case_id:
        if current != CLOSED:
            plan.actions.append(_breaker_action(case_id, current, CLOSED, "closed by hand"))
        else:
            plan.unchanged.append(f"{case_id}: already CLOSED")
    if resume_service:
        if consumer.get("state") in PAUSED:
            plan.actions.append(_pause_action(cfg, str(consumer.get("state")), "Enabled", "resumed by hand"))
        else:
            plan.unchanged.append("service: the worker is consuming")
    return plan


def needs_approval(name: str, gated: Plan) -> Finding:
    return Finding(check="needs-approval", resource=name, status=Status.WARN,
                   summary="needs approval: " + "; ".join(f"{a.kind} {a.resource}" for a in gated.actions))


def escalation_finding(handed: dict[str, Any]) -> Finding:
    """Whether the approval run (the escalate deployment) was started, or how to run it by hand."""
    return Finding(check="escalation", resource=handed["deployment"], status=Status.OK if handed.get("started") else Status.WARN,
                   summary=(f"approval run {handed['started']} started" if handed.get("started")
                            else f"could not start the approval run ({handed.get('error')}); run: {handed['by_hand']}"))


def evaluation_news(v: Verdict, gated: Plan) -> tuple[str, list[str]]:
    """The notification after an evaluation: headline and lines."""
    lines = [f"case {c}: OPEN ({r})" for c, r in v.trip.items()] + [f"needs approval: {a.kind} {a.resource}: {a.evidence}" for a in gated.actions]
    return (f"{len(v.trip)} case(s) tripped, {len(gated.actions)} action(s) awaiting approval; "
            f"{v.tokens_hour:,.0f} tokens/h", lines)
