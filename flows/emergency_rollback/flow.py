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
from prefect.runtime import flow_run

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import (
    Action,
    Applier,
    Approval,
    Identity,
    Plan,
    Refused,
    apply_plan,
    drift,
)
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records
from opsbook.params import (
    ApprovalTimeout,
    Approver,
    DryRun,
    Param,
    SettleTimeout,
    SystemName,
)
from tasks.awslambda import read_alias, read_alias_history, set_alias
from tasks.ecs import (
    read_service_history,
    read_task_definition,
    set_task_definition,
    settle_state,
    split_resource,
    td_revision,
)
from tasks.health import CHECKS as HEALTH_TASKS
from tasks.health import health_after

RUNBOOK = "emergency-rollback"
ECS_KIND, ALIAS_KIND = "ecs-task-definition", "lambda-alias"

APPLIERS = {
    ECS_KIND: Applier(read=read_task_definition, apply=set_task_definition),
    ALIAS_KIND: Applier(read=read_alias, apply=set_alias),
}


# --- deciding the target (pure: unit-tested without AWS) ---------------------------------


def last_rollback(records: list[dict[str, Any]], resource: str) -> dict[str, Any] | None:
    for r in records:  # newest first
        if r.get("resource") == resource and r.get("status") in ("applied", "verified", "undone"):
            return r
    return None


def ecs_target(resource: str, state: dict[str, Any], records: list[dict[str, Any]], to_revision: int | None,
               force: bool) -> tuple[str | None, str, bool]:
    """(target task definition or None, evidence, is_guess)."""
    current = state["task_definition"]
    family, rev = td_revision(current)
    by_rev = {td_revision(r)[1]: r for r in state["revisions"]}
    if to_revision is not None:
        if to_revision not in by_rev:
            raise Refused(f"{family}:{to_revision} is not an ACTIVE revision of {family} (ACTIVE: {sorted(by_rev)})")
        return by_rev[to_revision], f"asked for revision {to_revision}", False
    last = last_rollback(records, resource)
    if last and last.get("after") == current and last.get("runbook") == RUNBOOK and not force:
        return None, (f"already runs the rollback target {current.rsplit('/', 1)[-1]} (rolled back from "
                      f"{str(last.get('before')).rsplit('/', 1)[-1]} at {last.get('at')} by {last.get('approver')}); "
                      "set force=true to roll back further"), False
    if last and last.get("after") == current and last.get("runbook") != RUNBOOK and last.get("before"):
        return last["before"], f"opsbook record: {last.get('runbook')} changed it from this at {last.get('at')}", False
    previous = [d for d in state["deployments"] if d.get("status") != "PRIMARY" and d.get("taskDefinition") != current]
    if previous:
        best = sorted(previous, key=lambda d: d.get("rolloutState") != "COMPLETED")[0]
        return best["taskDefinition"], f"the deployment the service ran before the current one ({best.get('status')}, rollout {best.get('rolloutState')})", False
    earlier = sorted((r for r in by_rev if r < rev), reverse=True)
    if force and last and last.get("after") == current:
        earlier = [r for r in earlier if by_rev[r] != last.get("before")]
    if earlier:
        return by_rev[earlier[0]], f"GUESS: no record of the last known-good revision; the newest earlier ACTIVE revision ({earlier[0]})", True
    return None, f"no earlier ACTIVE revision of {family} to roll back to", False


def alias_target(resource: str, state: dict[str, Any], records: list[dict[str, Any]], to_version: int | None,
                 force: bool) -> tuple[str | None, str, bool]:
    current, version, versions = state["value"], state["version"], state["versions"]
    if to_version is not None:
        if to_version not in versions:
            raise Refused(f"version {to_version} of {resource.rsplit(':', 1)[0]} is not published (published: {versions})")
        return str(to_version), f"asked for version {to_version}", False
    if "+" in current:
        return version, f"the alias is shifting weight to another version ({current}); back to {version} alone", False
    last = last_rollback(records, resource)
    if last and last.get("after") == current and last.get("runbook") == RUNBOOK and not force:
        return None, (f"already points at the rollback target {current} (rolled back from {last.get('before')} "
                      f"at {last.get('at')} by {last.get('approver')}); set force=true to roll back further"), False
    if last and last.get("after") == current and last.get("runbook") != RUNBOOK and last.get("before"):
        return str(last["before"]), f"opsbook record: {last.get('runbook')} changed it from this at {last.get('at')}", False
    earlier = sorted((v for v in versions if v < int(version)), reverse=True)
    if force and last and last.get("after") == current:
        earlier = [v for v in earlier if str(v) != str(last.get("before"))]
    if earlier:
        return str(earlier[0]), f"GUESS: Lambda keeps no alias history and opsbook has no record; the newest earlier published version ({earlier[0]})", True
    return None, f"no earlier published version than {version}", False


# --- tasks -------------------------------------------------------------------------------


def targets(system: System, only: str | None) -> list[tuple[str, str]]:
    out = [(ECS_KIND, f"{s.cluster}/{s.service}") for s in system.ecs_services]
    out += [(ALIAS_KIND, f"{f.name}:{a}") for f in system.lambda_functions for a in f.aliases]
    return [t for t in out if not only or only in t[1]]


@task(name="make-plan", cache_policy=NO_CACHE)
def make_plan(system: System, identity: Identity, states: dict[str, Any], records: list[dict[str, Any]],
              to_revision: int | None, force: bool) -> Plan:
    plan = Plan(runbook=RUNBOOK, system=system.name, identity=identity, override="to_revision")
    for key, st in states.items():
        kind, resource = key.split("|", 1)
        if isinstance(st, BaseException):
            plan.notes.append(f"{resource}: could not read its state ({aws.describe_error(st)}); left out of the plan")
            continue
        if kind == ECS_KIND:
            target, why, guess = ecs_target(resource, st, records, to_revision, force)
            current, iam = st["task_definition"], "ecs:UpdateService"
        else:
            target, why, guess = alias_target(resource, st, records, to_revision, force)
            current, iam = st["value"], "lambda:UpdateAlias"
        if target is None and not why.startswith("already"):
            plan.cannot.append(f"{resource}: {why}")
            continue
        if target is None or target == current:
            plan.unchanged.append(f"{resource}: {why}")
            continue
        plan.actions.append(Action(kind=kind, resource=resource, current=current, target=target, iam_action=iam, evidence=why, guess=guess))
    return plan


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(system: System, plan: Plan) -> None:
    drifted = drift(system, plan, APPLIERS)
    if drifted:
        raise Refused("the state changed since the plan was approved; nothing was changed: " + "; ".join(drifted))


@aws_task(iam=["ecs:UpdateService", "ecs:DescribeServices", "lambda:UpdateAlias", "lambda:GetAlias"], name="apply-rollback",
          cache_policy=NO_CACHE, read_only=False)
def apply_rollback(system: System, plan: Plan, approval: Approval, identity: Identity) -> tuple[list, bool]:
    return apply_plan(system, plan, APPLIERS, approval, str(flow_run.get_id()) if flow_run.get_id() else None, identity)


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
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s,
                              accept_guess=accept_guess)
    with session:
        identity = session.identity()
        records = read_records.submit(inv)
        wanted = targets(inv, only)
        if not wanted:
            raise Refused(f"{inv.name} has nothing to roll back (no ECS service or Lambda alias in its inventory"
                          + (f" matching {only!r})" if only else ")"))
        reads = {f"{k}|{r}": (read_service_history if k == ECS_KIND else read_alias_history).submit(inv, r) for k, r in wanted}
        states = {}
        for key, fut in reads.items():
            fut.wait()
            states[key] = fut.result() if fut.state.is_completed() else fut.state.result(raise_on_failure=False)
        plan = make_plan.submit(inv, identity, states, records, to_revision or None, force).result()
        session.report.findings += [unknown("rollback-plan", n.split(":")[0], n) for n in plan.notes if "could not read" in n]
        if session.gate(plan):
            settle = settle_timeout_s or inv.mutations.settle_timeout_s
            session.lease(inv.mutations.lease_ttl_s + settle)
            check_drift.submit(inv, plan).result()
            done, ok = apply_rollback.submit(inv, plan, session.approval, identity).result()
            if ok:  # say so at once; the final notice follows once it settled (or not)
                session.notify("rolled back, settling", [f"{r.resource}: {r.before} -> {r.after}" for r in done])
            settled = wait_settled.submit(inv, plan, settle).result() if ok else []
            if ok:
                done = [r.model_copy(update={"status": "verified"})
                        if any(f.resource == r.resource and f.status is Status.OK for f in settled) else r for r in done]
            session.record(done)
            session.report.findings += settled
            session.report.findings += [Finding(check="rollback-action", resource=r.resource, status=Status.CRIT, summary=f"{r.status}: {r.detail}")
                                        for r in done if r.status in ("failed", "undo-failed")]
            session.report.findings += health_after(inv)
            session.done(ok)
            session.notify(session.report.outcome, [f"{r.resource}: {r.status} {r.before} -> {r.after} {r.detail}".strip() for r in done])
    return session.finish()


TASKS = [read_service_history, read_alias_history, apply_rollback, wait_settled] + SESSION_TASKS + \
    list(HEALTH_TASKS)
