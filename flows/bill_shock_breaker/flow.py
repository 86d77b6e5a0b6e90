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

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task
from opsbook.inventory import BillShock, System, load_system
from opsbook.masking import mask
from opsbook.mutation.core import Action, Plan, Record, Refused
from opsbook.mutation.session import SESSION_TASKS, MutationSession
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SystemName
from tasks import breaker
from tasks.cloudwatch import get_metric_data

RUNBOOK = "bill-shock-breaker"
SERVICE = "__service__"


class Usage(BaseModel):
    """Tokens per window, newest window first, for every active case and user."""

    window_minutes: int
    cases: dict[str, list[float]] = Field(default_factory=dict)
    users: dict[str, list[float]] = Field(default_factory=dict)
    calls: int = 0


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


# --- collect -------------------------------------------------------------------------------


def _dimension_values(system: System, cfg: BillShock, dimension: str) -> list[str]:
    c = aws.client("cloudwatch", system.region)
    values = set()
    for m in aws.paginate(c, "list_metrics", "Metrics", Namespace=cfg.namespace, MetricName=cfg.metric, RecentlyActive="PT3H",
                          Dimensions=[{"Name": dimension}]):
        dims = {d["Name"]: d["Value"] for d in m.get("Dimensions", [])}
        if set(dims) == {dimension}:
            values.add(dims[dimension])
    return sorted(values)


def _series(system: System, cfg: BillShock, dimension: str, values: list[str], end: datetime) -> dict[str, list[float]]:
    start = end - timedelta(hours=cfg.baseline_hours)
    queries = [{"Id": f"q{i}", "MetricStat": {"Metric": {"Namespace": cfg.namespace, "MetricName": cfg.metric,
                "Dimensions": [{"Name": dimension, "Value": v}]}, "Period": cfg.window_minutes * 60, "Stat": cfg.statistic},
                "ReturnData": True} for i, v in enumerate(values)]
    data = get_metric_data(system.region, queries, start, end) if queries else {}
    out = {}
    n_windows = cfg.baseline_hours * 60 // cfg.window_minutes
    first_window = start
    for i, v in enumerate(values):
        buckets = [0.0] * n_windows  # newest first; a window without data used no tokens
        for ts, val in data.get(f"q{i}", []):
            idx = n_windows - 1 - int((ts - first_window).total_seconds() // (cfg.window_minutes * 60))
            if 0 <= idx < n_windows:
                buckets[idx] += val
        out[v] = buckets
    return out


@aws_task(iam=["cloudwatch:ListMetrics", "cloudwatch:GetMetricData"], name="read-token-usage", cache_policy=NO_CACHE)
def read_usage(system: System, now: datetime | None = None) -> Usage:
    cfg = system.bill_shock
    assert cfg is not None
    end = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
    log = aws.current_call_log()
    before = log.total if log else 0
    cases = _dimension_values(system, cfg, cfg.case_dimension)
    users = _dimension_values(system, cfg, cfg.user_dimension)
    usage = Usage(window_minutes=cfg.window_minutes, cases=_series(system, cfg, cfg.case_dimension, cases, end),
                  users=_series(system, cfg, cfg.user_dimension, users, end))
    usage.calls = (log.total - before) if log else 0
    return usage


@aws_task(iam=["dynamodb:BatchGetItem", "dynamodb:Scan"], name="read-breakers", cache_policy=NO_CACHE)
def read_breaker_states(system: System, usage: Usage) -> dict[str, dict[str, Any]]:
    """Breakers of the cases over budget plus every OPEN / HALF_OPEN one."""
    cfg = system.bill_shock
    candidates = [c for c, s in usage.cases.items() if s and s[0] > min(cfg.case_budget_tokens, cfg.spike_min_tokens)]
    states = breaker.read_breakers(system, candidates + [SERVICE]) if candidates else breaker.read_breakers(system, [SERVICE])
    states.update(breaker.open_cases(system))
    return states


@aws_task(iam=["lambda:ListEventSourceMappings", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="read-consumer", cache_policy=NO_CACHE)
def read_consumer(system: System) -> dict[str, Any]:
    cfg = system.bill_shock
    sqs = aws.client("sqs", system.region)
    url = sqs.get_queue_url(QueueName=cfg.source_queue)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "MessageRetentionPeriod", "ApproximateNumberOfMessages"])["Attributes"]
    maps = list(aws.paginate(aws.client("lambda", system.region), "list_event_source_mappings", "EventSourceMappings",
                             FunctionName=cfg.worker_function, EventSourceArn=attrs["QueueArn"]))
    m = maps[0] if maps else None
    return {"mapping_uuid": m["UUID"] if m else None, "state": m.get("State") if m else None,
            "last_modified": m.get("LastModified") if m else None, "retention_s": int(attrs.get("MessageRetentionPeriod", 345600)),
            "queued": int(attrs.get("ApproximateNumberOfMessages", 0))}


@aws_task(iam=["s3:ListBucket"], name="count-uploads", cache_policy=NO_CACHE)
def count_uploads(system: System, users: list[str], now: datetime | None = None) -> dict[str, int]:
    """Uploads per user in the window, for the top users only (keys: <prefix><user>/...)."""
    cfg = system.bill_shock
    if not cfg.uploads_bucket or not users:
        return {}
    since = (now or datetime.now(timezone.utc)) - timedelta(minutes=cfg.window_minutes)
    s3 = aws.client("s3", system.region)
    out = {}
    for u, n, err in aws.parallel(lambda u: sum(1 for o in aws.paginate(s3, "list_objects_v2", "Contents", Bucket=cfg.uploads_bucket,
                                                                         Prefix=f"{cfg.uploads_prefix}{u}/") if o["LastModified"] >= since), users):
        if err is not None:
            raise err
        out[u] = n
    return out


# --- judge (pure) ---------------------------------------------------------------------------


def judge(cfg: BillShock, usage: Usage, states: dict[str, dict[str, Any]], uploads: dict[str, int],
          consumer: dict[str, Any] | None, now: datetime) -> Verdict:
    v = Verdict()
    per_hour = max(1, 60 // cfg.window_minutes)
    for case, s in usage.cases.items():
        window = s[0] if s else 0.0
        baseline_windows = s[1:]
        baseline = sum(baseline_windows) / len(baseline_windows) if baseline_windows else 0.0
        v.tokens_window += window
        v.tokens_hour += sum(s[:per_hour])
        state = states.get(case, {}).get("state", breaker.CLOSED)
        reason = None
        if window > cfg.case_budget_tokens:
            reason = f"{window:,.0f} tokens in {cfg.window_minutes} min > budget {cfg.case_budget_tokens:,}"
        elif window >= cfg.spike_min_tokens and baseline > 0 and window > cfg.spike_factor * baseline:
            reason = f"{window:,.0f} tokens in {cfg.window_minutes} min = {window / baseline:.1f}x its {cfg.baseline_hours} h baseline ({baseline:,.0f})"
        if reason and state != breaker.OPEN:
            v.trip[case] = reason
        elif not reason and state == breaker.HALF_OPEN:
            v.close[case] = f"under budget since half-open ({window:,.0f} tokens this window)"
    for case, item in states.items():
        if case == SERVICE or item.get("state") != breaker.OPEN or case in v.trip:
            continue
        s = usage.cases.get(case, [])
        window = s[0] if s else 0.0
        opened = datetime.fromisoformat(item.get("changed_at", now.isoformat()))
        if window <= cfg.case_budget_tokens and now - opened >= timedelta(minutes=cfg.cooldown_minutes):
            v.half_open[case] = f"OPEN for {(now - opened).total_seconds() / 60:.0f} min and back under budget"
    for user, s in usage.users.items():
        if s and s[0] > cfg.user_budget_tokens:
            v.users_over[user] = s[0]
    for user, n in uploads.items():
        if n >= cfg.mass_upload_threshold:
            v.block[user] = f"{n} uploads in {cfg.window_minutes} min (threshold {cfg.mass_upload_threshold}): suspected mass-upload attack"
    if v.tokens_hour > cfg.global_budget_tokens_per_hour and (consumer or {}).get("state") not in ("Disabled", "Disabling"):
        v.pause_service = f"{v.tokens_hour:,.0f} tokens in the last hour > global budget {cfg.global_budget_tokens_per_hour:,}"
    v.cost_window_usd = round(v.tokens_window / 1000 * cfg.price_per_1k_tokens, 2)
    v.cost_hour_usd = round(v.tokens_hour / 1000 * cfg.price_per_1k_tokens, 2)
    v.top_cases = sorted(((c, s[0]) for c, s in usage.cases.items() if s), key=lambda x: -x[1])[: cfg.top_n]
    v.top_users = sorted(((u, s[0]) for u, s in usage.users.items() if s), key=lambda x: -x[1])[: cfg.top_n]
    return v


def findings_for(cfg: BillShock, v: Verdict, consumer: dict[str, Any] | None, now: datetime) -> list[Finding]:
    out = [Finding(check="token-spend", resource="service", value=round(v.tokens_hour),
                   status=Status.CRIT if v.pause_service else Status.OK,
                   summary=f"{v.tokens_hour:,.0f} tokens (~${v.cost_hour_usd:,.2f}) in the last hour; budget {cfg.global_budget_tokens_per_hour:,}")]
    out += [Finding(check="case-breaker", resource=c, status=Status.WARN, summary=f"trip: {r}") for c, r in v.trip.items()]
    out += [Finding(check="user-spend", resource=u, status=Status.WARN, value=round(t),
                    summary=f"{t:,.0f} tokens in {cfg.window_minutes} min > user budget {cfg.user_budget_tokens:,}") for u, t in v.users_over.items()]
    out += [Finding(check="mass-upload", resource=u, status=Status.CRIT, summary=r) for u, r in v.block.items()]
    if consumer and consumer.get("state") in ("Disabled", "Disabling"):
        paused_s = (now - consumer["last_modified"]).total_seconds() if consumer.get("last_modified") else 0
        share = paused_s / consumer["retention_s"]
        status = Status.CRIT if share >= cfg.retention_warn_fraction else Status.WARN
        out.append(Finding(check="service-paused", resource=cfg.source_queue, status=status, value=round(paused_s),
                           summary=(f"the AI worker is paused: {consumer['queued']} messages waiting; paused {paused_s / 3600:.1f} h of the queue's "
                                    f"{consumer['retention_s'] / 3600:.0f} h retention" + (" — MESSAGES WILL EXPIRE: resume or extend retention"
                                                                                           if status is Status.CRIT else ""))))
    return out


def report_markdown(cfg: BillShock, v: Verdict, usage: Usage) -> str:
    lines = [f"# bill-shock-breaker: last {cfg.window_minutes} min", "",
             f"Tokens: {v.tokens_window:,.0f} this window (~${v.cost_window_usd:,.2f}), {v.tokens_hour:,.0f} in the last hour "
             f"(~${v.cost_hour_usd:,.2f}); {len(usage.cases)} active cases, {len(usage.users)} active users.", "",
             "| top cases | tokens | | top users | tokens |", "|---|---|---|---|---|"]
    for i in range(max(len(v.top_cases), len(v.top_users))):
        c = v.top_cases[i] if i < len(v.top_cases) else ("", 0)
        u = v.top_users[i] if i < len(v.top_users) else ("", 0)
        lines.append(f"| {c[0]} | {c[1]:,.0f} | | {mask(u[0])} | {u[1]:,.0f} |")
    return mask("\n".join(lines))


# --- act -------------------------------------------------------------------------------------


def plan_for(system: System, identity: Any, v: Verdict, states: dict, consumer: dict | None, mode: str) -> tuple[Plan, Plan]:
    """(automatic plan, plan that needs approval)."""
    cfg = system.bill_shock
    auto = Plan(runbook=RUNBOOK, system=system.name, identity=identity)
    gated = Plan(runbook=RUNBOOK, system=system.name, identity=identity)
    for c, r in v.trip.items():
        auto.actions.append(Action(kind="breaker", resource=c, current=states.get(c, {}).get("state", breaker.CLOSED), target=breaker.OPEN,
                                   iam_action="dynamodb:UpdateItem", evidence=r))
    for c, r in v.half_open.items():
        auto.actions.append(Action(kind="breaker", resource=c, current=breaker.OPEN, target=breaker.HALF_OPEN, iam_action="dynamodb:UpdateItem", evidence=r))
    for c, r in v.close.items():
        auto.actions.append(Action(kind="breaker", resource=c, current=breaker.HALF_OPEN, target=breaker.CLOSED, iam_action="dynamodb:UpdateItem", evidence=r))
    for u, r in v.block.items():
        (auto if cfg.auto_block_accounts else gated).actions.append(
            Action(kind="block-user", resource=u, current="enabled", target="disabled", iam_action="cognito-idp:AdminDisableUser", evidence=r))
    if v.pause_service and consumer and consumer.get("mapping_uuid"):
        (auto if cfg.auto_pause_service else gated).actions.append(
            Action(kind="pause-service", resource=f"{cfg.worker_function}<-{cfg.source_queue}", current="Enabled", target="Disabled",
                   iam_action="lambda:UpdateEventSourceMapping", evidence=v.pause_service + "; messages wait in the queue, nothing is dropped"))
    elif v.pause_service:
        auto.cannot.append(f"service: {v.pause_service}, but no event source mapping from {cfg.source_queue} to {cfg.worker_function} to pause")
    return auto, gated


def _user_pool_id(system: System) -> str:
    cfg = system.bill_shock
    c = aws.client("cognito-idp", system.region)
    for p in aws.paginate(c, "list_user_pools", "UserPools", MaxResults=60):
        if p["Name"] == cfg.cognito_user_pool:
            return p["Id"]
    raise Refused(f"Cognito user pool {cfg.cognito_user_pool!r} not found in {system.region}")


@aws_task(iam=["dynamodb:UpdateItem", "cognito-idp:ListUserPools", "cognito-idp:AdminDisableUser", "cognito-idp:AdminEnableUser",
               "lambda:UpdateEventSourceMapping"], name="apply-breaker-actions", cache_policy=NO_CACHE, read_only=False)
def apply_actions(system: System, plan: Plan, consumer: dict | None, approver: str, via: str, run_id: str, caller: str) -> list[Record]:
    records = []
    base = dict(runbook=RUNBOOK, system=system.name, flow_run_id=run_id, approver=approver, approved_via=via, caller_arn=caller,
                plan_fingerprint=plan.fingerprint)
    for a in plan.actions:
        try:
            if a.kind == "breaker":
                changed = breaker.set_state(system, a.resource, a.target, reason=a.evidence, by=approver, run=run_id, only_if=(a.current,))
                status, detail = ("applied", "") if changed else ("applied", "already in that state (no write)")
            elif a.kind == "block-user":
                c = aws.client("cognito-idp", system.region)
                if a.target == "disabled":
                    c.admin_disable_user(UserPoolId=_user_pool_id(system), Username=a.resource)
                else:
                    c.admin_enable_user(UserPoolId=_user_pool_id(system), Username=a.resource)
                status, detail = "applied", ""
            elif a.kind == "pause-service":
                aws.client("lambda", system.region).update_event_source_mapping(UUID=consumer["mapping_uuid"], Enabled=a.target == "Enabled")
                status, detail = "applied", "messages wait in the queue"
            else:
                raise ValueError(f"unknown action kind {a.kind}")
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
        consumer_f = read_consumer.submit(inv)
        if mode == "reset":
            plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
            consumer = consumer_f.result()
            if case_id:
                current = breaker.read_breakers(inv, [case_id]).get(case_id, {}).get("state", breaker.CLOSED)
                if current != breaker.CLOSED:
                    plan.actions.append(Action(kind="breaker", resource=case_id, current=current, target=breaker.CLOSED,
                                               iam_action="dynamodb:UpdateItem", evidence="closed by hand"))
                else:
                    plan.unchanged.append(f"{case_id}: already CLOSED")
            if resume_service:
                if consumer.get("state") in ("Disabled", "Disabling"):
                    plan.actions.append(Action(kind="pause-service", resource=f"{cfg.worker_function}<-{cfg.source_queue}", current="Disabled",
                                               target="Enabled", iam_action="lambda:UpdateEventSourceMapping", evidence="resumed by hand"))
                else:
                    plan.unchanged.append("service: the worker is consuming")
            if not case_id and not resume_service:
                raise Refused("mode=reset needs case_id=... and/or resume_service=true")
            if session.gate(plan):
                records = apply_actions.submit(inv, plan, consumer, session.approval.approver, session.approval.via, session.run_id, identity.arn).result()
                session.record(records)
                session.done(all(r.status == "applied" for r in records))
                session.notify(f"reset: {session.report.outcome}", [f"{r.resource}: {r.before} -> {r.after} {r.detail}" for r in records])
            return session.finish()

        usage_f = read_usage.submit(inv, now)
        states = read_breaker_states.submit(inv, usage_f).result()
        usage, consumer = usage_f.result(), consumer_f.result()
        top_users = [u for u, _ in sorted(((u, s[0]) for u, s in usage.users.items() if s), key=lambda x: -x[1])[: cfg.top_n]]
        uploads = count_uploads.submit(inv, top_users, now).result()
        verdict = judge(cfg, usage, states, uploads, consumer, now)
        create_markdown_artifact(key=f"{RUNBOOK}-{inv.name}-usage", markdown=report_markdown(cfg, verdict, usage),
                                 description=f"{verdict.tokens_hour:,.0f} tokens in the last hour")
        session.report.findings += findings_for(cfg, verdict, consumer, now)
        auto, gated = plan_for(inv, identity, verdict, states, consumer, mode)
        if mode == "escalate":
            auto.actions, gated = gated.actions, auto  # this run exists to act on what needs approval
            if session.gate(auto):
                session.lease()
                records = apply_actions.submit(inv, auto, consumer, session.approval.approver, session.approval.via, session.run_id, identity.arn).result()
                session.record(records)
                session.done(all(r.status == "applied" for r in records))
                session.notify(f"escalation: {session.report.outcome}", [f"{r.resource}: {r.before} -> {r.after} {r.detail}" for r in records])
            return session.finish()
        acted = session.gate(auto, policy="tripping a case's breaker, half-opening and closing are automatic (the breaker's purpose)"
                             + ("; the inventory allows blocking accounts / pausing the service without approval"
                                if cfg.auto_block_accounts or cfg.auto_pause_service else ""))
        if acted:
            records = apply_actions.submit(inv, auto, consumer, session.approval.approver, session.approval.via, session.run_id, identity.arn).result()
            session.record(records)
            session.done(all(r.status == "applied" for r in records))
        if gated.actions:
            session.report.findings.append(Finding(check="needs-approval", resource=inv.name, status=Status.WARN,
                                                   summary="needs approval: " + "; ".join(f"{a.kind} {a.resource}" for a in gated.actions)))
            if not dry_run:
                handed = hand_off.submit(inv, gated).result()
                session.report.findings.append(Finding(
                    check="escalation", resource=handed["deployment"], status=Status.OK if handed.get("started") else Status.WARN,
                    summary=(f"approval run {handed['started']} started" if handed.get("started")
                             else f"could not start the approval run ({handed.get('error')}); run: {handed['by_hand']}")))
        if acted or (gated.actions and not dry_run):
            lines = [f"case {c}: OPEN ({r})" for c, r in verdict.trip.items()] + [f"needs approval: {a.kind} {a.resource}: {a.evidence}" for a in gated.actions]
            session.notify(f"{len(verdict.trip)} case(s) tripped, {len(gated.actions)} action(s) awaiting approval; "
                           f"{verdict.tokens_hour:,.0f} tokens/h", lines)
    return session.finish()


TASKS = [read_usage, read_breaker_states, read_consumer, count_uploads, apply_actions] + SESSION_TASKS
