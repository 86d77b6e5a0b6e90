"""emergency-rollback's decisions (pure): which resources may be rolled back, to which release, on what
evidence, and the plan that follows. A target without evidence is a GUESS, and running it twice rolls back once:
a release that is already an earlier rollback's target is left alone unless ``force``.
"""

from __future__ import annotations

from typing import Any

from opsbook.components import td_revision
from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import System
from opsbook.mutation.core import Action, Identity, Plan, Record, Refused

RUNBOOK = "emergency-rollback"
ECS_KIND, ALIAS_KIND = "ecs-task-definition", "lambda-alias"


def targets(system: System, only: str | None) -> list[tuple[str, str]]:
    out = [(ECS_KIND, f"{s.cluster}/{s.service}") for s in system.ecs_services]
    out += [(ALIAS_KIND, f"{f.name}:{a}") for f in system.lambda_functions for a in f.aliases]
    return [t for t in out if not only or only in t[1]]


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


def plan_rollback(system: System, identity: Identity, states: dict[str, Any], records: list[dict[str, Any]],
                  to_revision: int | None, force: bool) -> Plan:
    """``states``: "kind|resource" -> what was read, or why it could not be (left out of the plan, with a note)."""
    plan = Plan(runbook=RUNBOOK, system=system.name, identity=identity, override="to_revision")
    for key, st in states.items():
        kind, resource = key.split("|", 1)
        if isinstance(st, str):
            plan.notes.append(f"{resource}: could not read its state ({st}); left out of the plan")
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


# --- verify (after acting) ---------------------------------------------------------------


def unread_findings(plan: Plan) -> list[Finding]:
    """A resource whose state could not be read is left out of the plan and is UNKNOWN, never silently OK."""
    return [unknown("rollback-plan", n.split(":")[0], n) for n in plan.notes if "could not read" in n]


def settled_findings(done: list[Record]) -> list[Finding]:
    """One rollback-settled finding per step taken: OK once it settled (verified), WARN while it has not (still applied)."""
    return [Finding(check="rollback-settled", resource=r.resource, status=Status.OK if r.status == "verified" else Status.WARN, summary=r.detail)
            for r in done if r.status in ("verified", "applied")]


def failed_actions(done: list[Record]) -> list[Finding]:
    """A step that failed, or whose undo failed, is CRIT."""
    return [Finding(check="rollback-action", resource=r.resource, status=Status.CRIT, summary=f"{r.status}: {r.detail}")
            for r in done if r.status in ("failed", "undo-failed")]
