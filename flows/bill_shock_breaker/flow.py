"""bill-shock-breaker: stop runaway OpenAI spend (seed 003, scenario C).

Every 5 minutes (and on the spend alarm): read token usage per case and per
user over a sliding window (CloudWatch custom metrics, GetMetricData in
batches of 500), judge it against budgets and each case's own baseline, and:

- trip a case's breaker (OPEN in the breaker table) — automatic: that is the
  breaker's purpose; tripping twice is harmless (conditional writes);
- half-open a case whose usage has stayed under budget for the cooldown, and
  close a half-open case that stayed under budget (automatic);
- block an account suspected of a mass-upload attack (Cognito
  AdminDisableUser) and pause the whole service (disable the worker's SQS
  event source mapping: messages wait in the queue, nothing is dropped) —
  these need approval unless the inventory allows them: the evaluation never
  waits; it starts the ``bill-shock-breaker-escalate-SYSTEM`` deployment
  (mode=escalate), which re-reads usage, plans them and waits for approval.

``mode=reset`` closes one case (``case_id``) or resumes the service by hand,
behind approval. The report lists tokens, the cost estimate, top cases and
users, and API calls.

API calls per evaluation (C active cases, U active users):
ceil(C/500) + ceil(U/500) ListMetrics pages + ceil(C/500) + ceil(U/500)
GetMetricData calls + ceil(K/100) BatchGetItem for K candidate cases + 1 scan
of open breakers + 2 (event source mapping, queue attributes) + uploads
listing for the top users only. 10,000 cases and 2,000 users: about 55 calls.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.bill_shock_breaker.judge import (
    CLOSED,
    RUNBOOK,
    candidates,
    escalation_finding,
    evaluation_news,
    findings_for,
    judge,
    needs_approval,
    plan_for,
    report_markdown,
    reset_plan,
    top_users,
)
from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Plan, Record, Refused
from opsbook.mutation.session import SESSION_TASKS, MutationSession
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SystemName
from tasks.awslambda import read_worker
from tasks.cloudwatch import read_token_usage
from tasks.dynamodb import read_breaker_states, read_breakers, set_breaker_state
from tasks.s3 import count_uploads

# --- act -------------------------------------------------------------------------------------


def _user_pool_id(system: System) -> str:
    cfg = system.bill_shock
    c = aws.client("cognito-idp", system.region)
    for p in aws.paginate(c, "list_user_pools", "UserPools", MaxResults=60):
        if p["Name"] == cfg.cognito_user_pool:
            return p["Id"]
    raise Refused(f"Cognito user pool {cfg.cognito_user_pool!r} not found in {system.region}")


def _apply_one(system: System, a: Any, consumer: dict | None, approver: str, run_id: str) -> tuple[str, str]:
    """Do one action; (status, detail)."""
    if a.kind == "breaker":
        changed = set_breaker_state(system, a.resource, a.target, reason=a.evidence, by=approver, run=run_id, only_if=(a.current,))
        return ("applied", "") if changed else ("applied", "already in that state (no write)")
    if a.kind == "block-user":
        c = aws.client("cognito-idp", system.region)
        if a.target == "disabled":
            c.admin_disable_user(UserPoolId=_user_pool_id(system), Username=a.resource)
        else:
            c.admin_enable_user(UserPoolId=_user_pool_id(system), Username=a.resource)
        return "applied", ""
    if a.kind == "pause-service":
        aws.client("lambda", system.region).update_event_source_mapping(UUID=consumer["mapping_uuid"], Enabled=a.target == "Enabled")
        return "applied", "messages wait in the queue"
    raise ValueError(f"unknown action kind {a.kind}")


@aws_task(iam=["dynamodb:UpdateItem", "cognito-idp:ListUserPools", "cognito-idp:AdminDisableUser", "cognito-idp:AdminEnableUser",
               "lambda:UpdateEventSourceMapping"], name="apply-breaker-actions", cache_policy=NO_CACHE, read_only=False)
def apply_actions(system: System, plan: Plan, consumer: dict | None, approver: str, via: str, run_id: str, caller: str) -> list[Record]:
    records = []
    base = dict(runbook=RUNBOOK, system=system.name, flow_run_id=run_id, approver=approver, approved_via=via, caller_arn=caller,
                plan_fingerprint=plan.fingerprint)
    for a in plan.actions:
        try:
            status, detail = _apply_one(system, a, consumer, approver, run_id)
            records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=a.target, status=status, detail=detail))
        except Refused:
            raise
        except Exception as exc:  # recorded, and the remaining actions still run: each is independent
            records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=None, status="failed", detail=aws.describe_error(exc)))
    return records


@task(name="hand-off-escalation", cache_policy=NO_CACHE)
def hand_off(system: System, plan: Plan) -> dict[str, Any]:
    """Start the escalate deployment (it waits for approval); never wait for it here."""
    from prefect.deployments import run_deployment

    name = f"{RUNBOOK}/{RUNBOOK}-escalate-{system.name}"
    try:
        fr = run_deployment(name, parameters={"system": system.name, "mode": "escalate", "dry_run": False}, timeout=0)
        return {"started": str(fr.id), "deployment": name}
    except Exception as exc:  # reported: someone must run it by hand
        return {"started": None, "deployment": name, "error": f"{type(exc).__name__}: {exc}",
                "by_hand": f"opsbook run {RUNBOOK} --system {system.name} --param mode=escalate --execute"}


def _act(session: MutationSession, inv: System, plan: Plan, consumer: dict | None) -> list[Record]:
    """Apply the approved plan, record it and close the session's outcome."""
    a = session.approval
    records = apply_actions.submit(inv, plan, consumer, a.approver, a.via, session.run_id, session.identity_.arn).result()
    session.record(records)
    session.done(all(r.status == "applied" for r in records))
    return records


def _news(records: list[Record]) -> list[str]:
    return [f"{r.resource}: {r.before} -> {r.after} {r.detail}" for r in records]


# --- the steps of each mode --------------------------------------------------------------------


def _reset(session: MutationSession, inv: System, consumer: dict[str, Any], case_id: str, resume_service: bool) -> None:
    """mode=reset: close a case's breaker and/or resume the worker, behind approval."""
    current = read_breakers(inv, [case_id]).get(case_id, {}).get("state", CLOSED) if case_id else CLOSED
    plan = reset_plan(inv, session.identity_, case_id, current, resume_service, consumer)
    if not case_id and not resume_service:
        raise Refused("mode=reset needs case_id=... and/or resume_service=true")
    if session.gate(plan):
        records = _act(session, inv, plan, consumer)
        session.notify(f"reset: {session.report.outcome}", _news(records))


def _escalate(session: MutationSession, inv: System, plan: Plan, consumer: dict | None) -> None:
    """mode=escalate: act on what needs approval (``plan``: the automatic plan carrying the gated actions)."""
    if session.gate(plan):
        session.lease()
        records = _act(session, inv, plan, consumer)
        session.notify(f"escalation: {session.report.outcome}", _news(records))


def _evaluate(session: MutationSession, inv: System, verdict: Any, auto: Plan, gated: Plan, consumer: dict | None,
              dry_run: bool) -> None:
    """mode=evaluate: the automatic actions now; what needs approval is handed to an escalate run (never waited for)."""
    cfg = inv.bill_shock
    acted = session.gate(auto, policy="tripping a case's breaker, half-opening and closing are automatic (the breaker's purpose)"
                         + ("; the inventory allows blocking accounts / pausing the service without approval"
                            if cfg.auto_block_accounts or cfg.auto_pause_service else ""))
    if acted:
        _act(session, inv, auto, consumer)
    if gated.actions:
        session.report.findings.append(needs_approval(inv.name, gated))
        if not dry_run:
            session.report.findings.append(escalation_finding(hand_off.submit(inv, gated).result()))
    if acted or (gated.actions and not dry_run):
        session.notify(*evaluation_news(verdict, gated))


# --- the runbook --------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=86400)
def bill_shock_breaker(
    system: SystemName,
    mode: Annotated[Literal["evaluate", "escalate", "reset"], Param(
        "evaluate: read token spend and trip case breakers (the 5-minute schedule); escalate: act on what needs approval "
        "(block accounts, pause the worker); reset: close a case's breaker and/or resume the worker by hand")] = "evaluate",
    dry_run: DryRun = True,
    approver: Approver = "",
    case_id: Annotated[str, Param("mode=reset: the case whose breaker to close; empty: none")] = "",
    resume_service: Annotated[bool, Param("mode=reset: let the paused worker consume its queue again")] = False,
    approval_timeout_s: ApprovalTimeout = 0,
) -> Any:
    """Evaluate token spend and trip breakers (mode=evaluate), act on what needs approval (escalate), or close by hand (reset).

    Tripping and closing breakers is automatic (the breaker's purpose); blocking
    accounts and pausing the worker need approval unless the inventory allows
    them (a form on the paused escalate run in the UI; the shell's prompt or --yes)."""
    inv = load_system(system)
    if inv.bill_shock is None:
        raise ValueError(f"{inv.name} has no bill_shock section in its inventory")
    cfg = inv.bill_shock
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
    now = datetime.now(timezone.utc)
    with session:
        identity = session.identity()
        consumer_f = read_worker.submit(inv, cfg.source_queue, cfg.worker_function)
        if mode == "reset":
            _reset(session, inv, consumer_f.result(), case_id, resume_service)
            return session.finish()
        usage = read_token_usage.submit(inv, now).result()
        states = read_breaker_states.submit(inv, candidates(cfg, usage)).result()
        consumer = consumer_f.result()
        uploads = count_uploads.submit(inv, top_users(cfg, usage), now).result()
        verdict = judge(cfg, usage, states, uploads, consumer, now)
        create_markdown_artifact(key=f"{RUNBOOK}-{inv.name}-usage", markdown=report_markdown(cfg, verdict, usage),
                                 description=f"{verdict.tokens_hour:,.0f} tokens in the last hour")
        session.report.findings += findings_for(cfg, verdict, consumer, now)
        auto, gated = plan_for(inv, identity, verdict, states, consumer)
        if mode == "escalate":
            auto.actions = gated.actions  # this run exists to act on what needs approval
            _escalate(session, inv, auto, consumer)
            return session.finish()
        _evaluate(session, inv, verdict, auto, gated, consumer, dry_run)
    return session.finish()


TASKS = [read_token_usage, read_breaker_states, read_worker, count_uploads, apply_actions] + SESSION_TASKS
