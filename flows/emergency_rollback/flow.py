"""emergency-rollback: put a system back on its last known-good release.

Sources: 001 긴급 롤백 스크립트 (ECS task definition) and P0 대응, 000 롤백 절차
(Lambda alias), 002 롤백 절차 (alias LIVE). Unlike 001's script it does not
compute "current revision - 1" (which rolls back twice when run twice): the
target is the last known-good release from evidence (the service's previous
deployment, opsbook's own records), else the newest earlier release, and the
plan says when that is a guess. Running it twice rolls back once.

Steps: confirm identity -> read state -> plan -> (dry run ends here) ->
approve -> leases -> drift check -> act -> settle (bounded, with progress) ->
record -> emergency health checks -> notify.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from flows.emergency_rollback.judge import ALIAS_KIND, ECS_KIND, RUNBOOK, failed_actions, plan_rollback, targets, unread_findings, verified
from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Applier, Identity, Plan, Refused
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records, steps_policy
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SettleTimeout, SystemName
from tasks.awslambda import read_alias, read_alias_history, set_alias
from tasks.ecs import read_service_history, read_task_definition, set_task_definition, settle_state, split_resource
from tasks.health import CHECKS as HEALTH_TASKS
from tasks.health import health_after

APPLIERS = {
    ECS_KIND: Applier(read=read_task_definition, apply=set_task_definition),
    ALIAS_KIND: Applier(read=read_alias, apply=set_alias),
}


# --- tasks -------------------------------------------------------------------------------


@task(name="make-plan", cache_policy=NO_CACHE)
def make_plan(system: System, identity: Identity, states: dict[str, Any], records: list[dict[str, Any]],
              to_revision: int | None, force: bool) -> Plan:
    return plan_rollback(system, identity, states, records, to_revision, force)




@aws_task(iam=["ecs:DescribeServices", "lambda:GetAlias", "lambda:GetFunctionConfiguration"], name="wait-settled", cache_policy=NO_CACHE)
def wait_settled(system: System, plan: Plan, timeout_s: int, poll_s: float = 2.0) -> list[Finding]:
    """Bounded wait, with a progress artifact and a progress line on the shell; never hangs."""
    pending = {a.resource: a for a in plan.actions}
    findings: dict[str, Finding] = {}
    why: dict[str, str] = {}
    started = time.monotonic()
    progress = create_progress_artifact(progress=0.0, description=f"{RUNBOOK}: waiting for {len(pending)} resource(s) to settle")
    ecs = aws.client("ecs", system.region)
    lam = aws.client("lambda", system.region)
    while pending:
        for res, a in list(pending.items()):
            if a.kind == ECS_KIND:
                cluster, service = split_resource(res)
                svc = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
                ok, why[res] = settle_state(svc, a.target)
            else:
                ok = read_alias(system, res) == a.target
                fn = res.rsplit(":", 1)[0]
                cfg = lam.get_function_configuration(FunctionName=fn, Qualifier=a.target.split("+")[0]) if ok else {}
                ok = ok and cfg.get("State", "Active") == "Active"
                why[res] = f"alias resolves to {a.target}" + (f", version {cfg.get('State')}" if cfg else "")
            if ok:
                findings[res] = Finding(check="rollback-settled", resource=res, status=Status.OK, summary=why[res],
                                        value=round(time.monotonic() - started, 1))
                del pending[res]
        elapsed = time.monotonic() - started
        done = len(plan.actions) - len(pending)
        update_progress_artifact(progress, progress=100.0 * min(1.0, max(done / max(len(plan.actions), 1), elapsed / timeout_s)))
        if pending:
            print(f"opsbook: {RUNBOOK}: {done}/{len(plan.actions)} settled after {elapsed:.0f}/{timeout_s} s; "
                  + "; ".join(f"{r}: {why.get(r, '...')}" for r in pending), file=sys.stderr)
        if not pending or elapsed >= timeout_s:
            break
        time.sleep(min(poll_s, max(0.0, timeout_s - elapsed)))
    for res in pending:
        findings[res] = Finding(check="rollback-settled", resource=res, status=Status.WARN, value=timeout_s,
                                summary=f"not stable after {timeout_s} s: {why.get(res, 'no answer')}")
    update_progress_artifact(progress, progress=100.0)
    return list(findings.values())


# --- the runbook --------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def emergency_rollback(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    to_revision: Annotated[int, Param("Roll back to this ECS task definition revision / Lambda version instead of the last "
                                      "known-good one; 0: the last known-good release (a guess when nothing records it)", ge=0)] = 0,
    only: Annotated[str, Param("Only the ECS services / Lambda aliases whose name contains this; empty: all of the system's")] = "",
    force: Annotated[bool, Param("Roll back further when the current release is already the target of an earlier rollback")] = False,
    accept_guess: Annotated[bool, Param("Apply a target marked guess (no record of the last known-good release) once approved; "
                                        "without it a plan with a guess is refused, whatever the approval")] = False,
    settle_timeout_s: SettleTimeout = 0,
    approval_timeout_s: ApprovalTimeout = 0,
) -> Any:
    """Roll the system's ECS services / Lambda aliases back to the last known-good release.

    dry_run (default) ends after the plan. Otherwise the run asks for approval
    (a form on the paused run in the UI, announced on the system's channels;
    the shell's prompt or --yes), then acts, waits for the service to settle,
    records, re-checks the system and notifies. A target without evidence is
    marked guess and needs accept_guess on top of the approval.
    """
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s, appliers=APPLIERS,
                              accept_guess=accept_guess)
    with session:
        identity = session.identity()
        records = read_records.submit(inv)
        wanted = targets(inv, only)
        if not wanted:
            raise Refused(f"{inv.name} has nothing to roll back (no ECS service or Lambda alias in its inventory"
                          + (f" matching {only!r})" if only else ")"))
        reads = {f"{k}|{r}": (read_service_history if k == ECS_KIND else read_alias_history).submit(inv, r) for k, r in wanted}
        states = {key: future_value(fut) for key, fut in reads.items()}
        states = {key: aws.describe_error(st) if isinstance(st, BaseException) else st for key, st in states.items()}
        plan = make_plan.submit(inv, identity, states, records, to_revision or None, force).result()
        session.report.findings += unread_findings(plan)
        if session.gate(plan):
            settle = settle_timeout_s or inv.mutations.settle_timeout_s
            done, ok = session.act(identity)
            if ok:  # say so at once; the final notice follows once it settled (or not)
                session.notify("rolled back, settling", [f"{r.resource}: {r.before} -> {r.after}" for r in done])
            settled = wait_settled.submit(inv, plan, settle).result() if ok else []
            done = verified(done, settled)
            session.record(done)
            session.report.findings += settled + failed_actions(done)
            session.report.findings += health_after(inv)
            session.done(ok)
            session.notify(session.report.outcome, [f"{r.resource}: {r.status} {r.before} -> {r.after} {r.detail}".strip() for r in done])
    return session.finish()


TASKS = [read_service_history, read_alias_history, wait_settled, steps_policy(APPLIERS)] + SESSION_TASKS + list(HEALTH_TASKS)
