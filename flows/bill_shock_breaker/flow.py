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
    OPEN,
    RUNBOOK,
    SERVICE,
    candidates,
    consumer_unread,
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
from opsbook.collect import error_text, future_value
from opsbook.iam import aws_task, declares
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Applier, Identity, Plan, Record, Refused
from opsbook.mutation.session import SESSION_TASKS, MutationSession, steps_policy
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SystemName
from opsbook.unfinished import StepFailed
from tasks.awslambda import event_source_mappings, read_worker
from tasks.cloudwatch import read_token_usage
from tasks.cognito import account_state, find_user_pool, set_user
from tasks.dynamodb import read_breaker_states, read_breakers, set_breaker_state
from tasks.s3 import count_uploads

# --- the steps: a case's breaker, a user's account, the worker's event source mapping ---------------------------


def _mapping(system: System) -> dict[str, Any]:
    cfg = system.bill_shock
    sqs = aws.client("sqs", system.region)
    arn = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=cfg.source_queue)["QueueUrl"],
                                   AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    maps = event_source_mappings(system.region, cfg.worker_function, arn)
    if not maps:
        raise Refused(f"no event source mapping from {cfg.source_queue} to {cfg.worker_function}")
    return maps[0]


TURNING = {"Disabled": "Disabling", "Enabled": "Enabling"}  # an event source mapping on its way to the state


def appliers(ctx: dict[str, Any]) -> dict[str, Applier]:
    """bill-shock's three kinds of step. ``ctx`` (filled once approved): ``why`` and ``was``, resource -> the plan's evidence
    (a breaker's reason) and current; ``by``, ``run``: who approved, which run. A breaker is written only if it still is
    what the plan read (a conditional write: tripping twice is harmless); a paused worker is reached while Disabling."""

    @declares(["dynamodb:BatchGetItem"])
    def read_breaker(system: System, case: str) -> str:
        return read_breakers(system, [case]).get(case, {}).get("state", CLOSED)

    @declares(["dynamodb:UpdateItem"])
    def set_breaker(system: System, case: str, state: str) -> None:
        was = ctx.get("was", {}).get(case)
        set_breaker_state(system, case, state, reason=ctx.get("why", {}).get(case, RUNBOOK), by=ctx.get("by", ""), run=ctx.get("run", ""),
                          only_if=(was,) if was else None)

    @declares(["cognito-idp:ListUserPools", "cognito-idp:AdminGetUser"])
    def read_account(system: System, user: str) -> str:
        return account_state(system, find_user_pool(system)[0], user)

    @declares(["cognito-idp:ListUserPools", "cognito-idp:AdminDisableUser", "cognito-idp:AdminEnableUser"])
    def set_account(system: System, user: str, state: str) -> None:
        set_user(system, find_user_pool(system)[0], user, enabled=state == "enabled")

    @declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "lambda:ListEventSourceMappings"])
    def read_worker_state(system: System, resource: str) -> str:
        return str(_mapping(system).get("State"))

    @declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "lambda:ListEventSourceMappings", "lambda:UpdateEventSourceMapping",
               "dynamodb:UpdateItem"])
    def set_worker_state(system: System, resource: str, state: str) -> None:
        """The mapping's state, and the breaker table's service item saying why, by whom (the health checks read it to tell
        this pause from a trigger switched off by mistake)."""
        aws.client("lambda", system.region).update_event_source_mapping(UUID=_mapping(system)["UUID"], Enabled=state == "Enabled")
        set_breaker_state(system, SERVICE, OPEN if state == "Disabled" else CLOSED, reason=ctx.get("why", {}).get(resource, RUNBOOK),
                          by=ctx.get("by", ""), run=ctx.get("run", ""))

    def worker_reached(system: System, resource: str, before: str, target: str) -> bool:
        return read_worker_state(system, resource) in (target, TURNING[target])  # Disabling: messages already wait

    return {"breaker": Applier(read=read_breaker, apply=set_breaker),
            "block-user": Applier(read=read_account, apply=set_account),
            "pause-service": Applier(read=read_worker_state, apply=set_worker_state, reached=worker_reached)}


@aws_task(iam=["cognito-idp:ListUserPools", "cognito-idp:AdminGetUser"], name="read-accounts", cache_policy=NO_CACHE)
def read_accounts(system: System, users: list[str]) -> dict[str, str]:
    """enabled / disabled, of each user a block is judged for (one already disabled needs no step); what could not be read
    says why ("unreadable: ..."): such a block is not planned (it could not be checked after approval either)."""
    if not users:
        return {}
    try:
        pool = find_user_pool(system)[0]
    except Exception as exc:
        return {u: f"unreadable: {aws.describe_error(exc)}" for u in users}
    out = {}
    for u in users:
        try:
            out[u] = account_state(system, pool, u)
        except Exception as exc:  # this user only: the others, and the breakers, go on
            out[u] = f"unreadable: {aws.describe_error(exc)}"
    return out


def _consumer(cfg: Any, fut: Any, needed: bool) -> tuple[dict[str, Any] | None, str | None]:
    """The worker's consumer (its event source mapping and queue) as read, or None and why not. Only pausing and resuming
    the worker need it: a failed read is a finding and the case breakers go on, unless ``needed`` (then the run stops,
    naming the step)."""
    got = future_value(fut)
    if not isinstance(got, BaseException):
        return got, None
    reason = f"the source queue {cfg.source_queue} does not exist" if aws.is_not_found(got) else error_text(got)
    if needed:
        raise StepFailed(f"step 'read-consumer' failed: {reason}; resuming the worker needs its event source mapping")
    return None, reason


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


def _act(session: MutationSession, identity: Identity, plan: Plan, ctx: dict[str, Any]) -> list[Record]:
    """The approved plan through the mechanism (each step independent: a failed one does not stop the others), recorded."""
    ctx.update(why={a.resource: a.evidence for a in plan.actions}, was={a.resource: a.current for a in plan.actions},
               by=session.approval.approver, run=session.run_id)
    records, ok = session.act(identity, undo_on_failure=False)
    session.record(records)
    session.done(ok)
    return records


def _news(records: list[Record]) -> list[str]:
    return [f"{r.resource}: {r.before} -> {r.after} {r.detail}" for r in records]


# --- the steps of each mode --------------------------------------------------------------------


def _reset(session: MutationSession, inv: System, identity: Identity, ctx: dict[str, Any], consumer: dict[str, Any], case_id: str,
           resume_service: bool) -> None:
    """mode=reset: close a case's breaker and/or resume the worker, behind approval."""
    current = read_breakers(inv, [case_id]).get(case_id, {}).get("state", CLOSED) if case_id else CLOSED
    plan = reset_plan(inv, session.identity_, case_id, current, resume_service, consumer)
    if not case_id and not resume_service:
        raise Refused("mode=reset needs case_id=... and/or resume_service=true")
    if session.gate(plan):
        records = _act(session, identity, plan, ctx)
        session.notify(f"reset: {session.report.outcome}", _news(records))


def _escalate(session: MutationSession, identity: Identity, ctx: dict[str, Any], plan: Plan) -> None:
    """mode=escalate: act on what needs approval (``plan``: the automatic plan carrying the gated actions)."""
    if session.gate(plan):
        records = _act(session, identity, plan, ctx)
        session.notify(f"escalation: {session.report.outcome}", _news(records))


def _evaluate(session: MutationSession, inv: System, identity: Identity, ctx: dict[str, Any], verdict: Any, auto: Plan, gated: Plan,
              dry_run: bool) -> None:
    """mode=evaluate: the automatic actions now; what needs approval is handed to an escalate run (never waited for)."""
    cfg = inv.bill_shock
    acted = session.gate(auto, policy="tripping a case's breaker, half-opening and closing are automatic (the breaker's purpose)"
                         + ("; the inventory allows blocking accounts / pausing the service without approval"
                            if cfg.auto_block_accounts or cfg.auto_pause_service else ""))
    if acted:
        _act(session, identity, auto, ctx)
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
    ctx: dict[str, Any] = {}
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s,
                              appliers=appliers(ctx))
    now = datetime.now(timezone.utc)
    with session:
        identity = session.identity()
        consumer_f = read_worker.submit(inv, cfg.source_queue, cfg.worker_function)
        if mode == "reset":
            consumer, consumer_error = _consumer(cfg, consumer_f, needed=resume_service)
            session.report.findings += [consumer_unread(cfg, consumer_error)] if consumer_error else []
            _reset(session, inv, identity, ctx, consumer or {}, case_id, resume_service)
            return session.finish()
        usage = read_token_usage.submit(inv, now).result()
        states = read_breaker_states.submit(inv, candidates(cfg, usage)).result()
        consumer, consumer_error = _consumer(cfg, consumer_f, needed=False)
        uploads = count_uploads.submit(inv, top_users(cfg, usage), now).result()
        verdict = judge(cfg, usage, states, uploads, consumer, now)
        create_markdown_artifact(key=f"{RUNBOOK}-{inv.name}-usage", markdown=report_markdown(cfg, verdict, usage),
                                 description=f"{verdict.tokens_hour:,.0f} tokens in the last hour")
        session.report.findings += findings_for(cfg, verdict, consumer, now)
        if consumer_error:  # a per-case trip does not need the consumer: said, and the breakers go on
            session.report.findings.append(consumer_unread(cfg, consumer_error))
        auto, gated = plan_for(inv, identity, verdict, states, consumer, read_accounts.submit(inv, sorted(verdict.block)).result(),
                               consumer_error=consumer_error)
        if mode == "escalate":
            auto.actions = gated.actions  # this run exists to act on what needs approval
            _escalate(session, identity, ctx, auto)
            return session.finish()
        _evaluate(session, inv, identity, ctx, verdict, auto, gated, dry_run)
    return session.finish()


TASKS = [read_token_usage, read_breaker_states, read_worker, count_uploads, read_accounts, steps_policy(appliers({}))] + SESSION_TASKS
