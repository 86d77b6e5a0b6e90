"""emergency-rollback: put a system back on its last known-good release.

Sources: 001 긴급 롤백 스크립트 (ECS task definition) and P0 대응, 000 롤백 절차
(Lambda alias), 002 롤백 절차 (alias LIVE). Unlike 001's script it does not
compute "current revision - 1" (which rolls back twice when run twice): the
target is the last known-good release from evidence (the service's previous
deployment, opsbook's own records), else the newest earlier release, and the
plan says when that is a guess. Running it twice rolls back once.

Steps: confirm identity -> read state -> plan -> (dry run ends here) ->
approve -> the mechanism (leases, drift check, each step intent -> act -> outcome) -> settle (bounded, with
progress) -> record -> emergency health checks -> notify. The folder keeps its Steps (APPLIERS) and its judge.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.emergency_rollback.judge import ALIAS_KIND, ECS_KIND, RUNBOOK, failed_actions, plan_rollback, settled_findings, targets, unread_findings
from opsbook import aws
from opsbook.collect import future_value
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Applier, Identity, Plan, Refused
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records, steps_policy
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SettleTimeout, SystemName
from tasks.awslambda import alias_settled, read_alias, read_alias_history, set_alias
from tasks.ecs import read_service_history, read_task_definition, set_task_definition, task_definition_settled
from tasks.health import CHECKS as HEALTH_TASKS
from tasks.health import health_after

APPLIERS = {
    ECS_KIND: Applier(read=read_task_definition, apply=set_task_definition, settled=task_definition_settled),
    ALIAS_KIND: Applier(read=read_alias, apply=set_alias, settled=alias_settled),
}


# --- tasks -------------------------------------------------------------------------------


@task(name="make-plan", cache_policy=NO_CACHE)
def make_plan(system: System, identity: Identity, states: dict[str, Any], records: list[dict[str, Any]],
              to_revision: int | None, force: bool) -> Plan:
    return plan_rollback(system, identity, states, records, to_revision, force)




# --- the runbook --------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def emergency_rollback(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    to_revision: Annotated[int, Param("Roll back to this ECS task definition revision / Lambda version instead of the last "
                                      "known-good one; 0: the last known-good release (a guess when nothing records it)", ge=0,
                                      le=2**31 - 1)] = 0,
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
            done = session.settle(done, settle) if ok else done
            session.record(done)
            session.report.findings += settled_findings(done) + failed_actions(done)
            session.report.findings += health_after(inv)
            session.conclude(done, ok, lambda r: f"{r.resource}: {r.status} {r.before} -> {r.after} {r.detail}".strip())
    return session.finish()


TASKS = [read_service_history, read_alias_history, steps_policy(APPLIERS)] + SESSION_TASKS + list(HEALTH_TASKS)
