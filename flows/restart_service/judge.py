"""restart-service, choosing the service and planning the restart (pure: no AWS, no clock; tests/flows/restart_service/test_judge.py).

``pick_service`` finds the ECS service to restart: the one the inventory maps the agent to (``ecs_services[].agents``),
else the one named, else the system's only one; ``plan_restart`` plans one forced new deployment of it, or says why
not (no tasks, a deployment already under way, restarted a moment ago). See flow.py's docstring for the rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from opsbook.findings import Finding, Status
from opsbook.inventory import EcsService, System
from opsbook.mutation.core import Action, Identity, Plan, Refused
from opsbook.resources import Discovered
from tasks.ecs import RESTART_IAM, RESTART_KIND, RestartState, restart_target, services

RUNBOOK = "restart-service"
IAM = {RESTART_KIND: RESTART_IAM}


def spec_of(inv: System, resource: str) -> EcsService | None:
    return next((s for s in inv.ecs_services if f"{s.cluster}/{s.service}" == resource), None)


def _named(known: list[str], service: str) -> list[str]:
    return [k for k in known if k == service or k.split("/", 1)[1] == service]


def pick_service(inv: System, found: Discovered, service: str | None, agent: str | None) -> tuple[str, str]:
    """(cluster/service to restart, what restarting it means for the agent asked about: "" when none was).

    An agent the inventory maps to a service restarts that service; an agent no service lists restarts the service named,
    or the system's only one, as a whole (ECS restarts whole tasks, never one container inside one)."""
    known = [f"{c}/{s}" for c, s in services(inv, found)]
    mapped = [f"{s.cluster}/{s.service}" for s in inv.ecs_services if agent and any(a.lower() == agent.lower() for a in s.agents)]
    if mapped:
        if service:
            hits = [m for m in mapped if m in _named(mapped, service)]
            if not hits:
                raise Refused(f"agent {agent!r} runs on {', '.join(mapped)} (the inventory's ecs_services[].agents), not on {service!r}; "
                              "give that service, or no service")
            mapped = hits
        if len(mapped) > 1:
            raise Refused(f"agent {agent!r} runs on {len(mapped)} services ({', '.join(mapped)}): say which with service=cluster/service")
        resource = mapped[0]
        spec = spec_of(inv, resource)
        others = [a for a in (spec.agents if spec else []) if a.lower() != (agent or "").lower()]
        what = (f"agent {agent} has a service of its own ({resource}): only it restarts" if not others else
                f"agent {agent} runs on {resource} with {', '.join(others)}: restarting it restarts them too "
                "(ECS restarts whole tasks, never one container)")
        return resource, what
    if service:
        hits = _named(known, service)
        if len(hits) != 1:
            raise Refused(f"{service!r} is not an ECS service of {inv.name}" + (f" (ambiguous: {', '.join(hits)})" if hits else "")
                          + f"; its services: {', '.join(known) or 'none'}")
        resource = hits[0]
    elif len(known) == 1:
        resource = known[0]
    elif not known:
        raise Refused(f"{inv.name} has no ECS service (inventory or tag discovery): nothing to restart")
    else:
        raise Refused(f"{inv.name} has {len(known)} ECS services ({', '.join(known)}): say which with service=cluster/service"
                      + (f" (no service lists agent {agent!r} in the inventory's ecs_services[].agents)" if agent else ""))
    if not agent:
        return resource, ""
    spec = spec_of(inv, resource)
    listed = [a for s in inv.ecs_services for a in s.agents]
    return resource, (f"agent {agent} has no service of its own in the inventory (ecs_services[].agents"
                      + (f" lists {', '.join(listed)}" if listed else ": none listed") + "): ECS cannot restart one container inside a "
                      f"task, so the WHOLE service {resource} restarts, all its agents"
                      + (f" ({', '.join(spec.agents)})" if spec and spec.agents else ""))


def recent_restart(records: list[dict[str, Any]], resource: str, now: datetime, within: timedelta) -> dict[str, Any] | None:
    """The newest restart of ``resource`` recorded as made (applied, verified) less than ``within`` before ``now``."""
    made = [r for r in records if r.get("resource") == resource and r.get("kind") == RESTART_KIND and r.get("status") in ("applied", "verified")
            and r.get("at") and now - datetime.fromisoformat(r["at"]) < within]
    return max(made, key=lambda r: r["at"]) if made else None


def rolling_note(st: RestartState) -> str:
    """How ECS replaces the tasks, from the service's deploymentConfiguration."""
    if st.min_healthy_pct is None and st.max_pct is None:
        return "rolling, within the service's deployment configuration"
    lo, hi = st.min_healthy_pct if st.min_healthy_pct is not None else 100, st.max_pct if st.max_pct is not None else 200
    if lo == 0:
        return f"minimumHealthyPercent 0: ECS may stop every task before the new ones run, a short outage (maximumPercent {hi})"
    return f"rolling: at least {lo} % of {st.desired} tasks stay in service, at most {hi} % run at once"


def why_not(st: RestartState, records: list[dict[str, Any]], now: datetime, within_min: int) -> tuple[str, str] | None:
    """("unchanged" or "cannot", why) when the service is not to be restarted now; None when it is."""
    recent = recent_restart(records, st.resource, now, timedelta(minutes=within_min)) if within_min else None
    if recent is not None:
        return "unchanged", (f"{st.resource}: already restarted at {recent['at']} by {recent.get('approver') or '?'} (run {recent.get('flow_run_id')}, "
                             f"{recent['status']}), less than {within_min} min ago: not restarted again (a re-run after a kill, or two people "
                             "at once); to restart once more, set not_within_min=0")
    if st.controller != "ECS" or st.primary == "none":
        return "cannot", (f"{st.resource}: deployment controller {st.controller}" + (", no PRIMARY deployment" if st.primary == "none" else "")
                          + ": its tasks are replaced through that controller (CodeDeploy, or the external one), not by a forced ECS deployment")
    if st.desired == 0:
        return "cannot", f"{st.resource}: runs no tasks (desired count 0): nothing to restart; scale it up with scale-service"
    if st.deployments > 1 or st.rollout == "IN_PROGRESS":
        return "cannot", (f"{st.resource}: a deployment is under way ({st.deployments} deployments, rollout {st.rollout or '-'} on "
                          f"{st.primary}): a restart now would start yet another one; wait until it completes, or roll it back "
                          "(emergency-rollback) if it is the fault")
    return None


def plan_restart(inv: System, identity: Identity, st: RestartState, agent_note: str, records: list[dict[str, Any]], now: datetime,
                 within_min: int) -> Plan:
    """One forced new deployment of the service (what it means for the agent asked about in its evidence), or nothing and
    why (the agent's note then among the notes). See flow.py."""
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    skip = why_not(st, records, now, within_min)
    if skip is not None:
        (plan.unchanged if skip[0] == "unchanged" else plan.cannot).append(skip[1])
        plan.notes += [agent_note] if agent_note else []
        return plan
    plan.actions.append(Action(kind=RESTART_KIND, resource=st.resource, current=st.primary, target=restart_target(st.primary),
                               iam_action=RESTART_IAM, reversible=False,
                               evidence=f"forceNewDeployment: {st.desired} new task(s) of {st.task_definition.rsplit('/', 1)[-1] or '?'} replace the "
                                        f"{st.running} running; {rolling_note(st)}" + (f"; {agent_note}" if agent_note else "")))
    return plan


def state_findings(st: RestartState) -> list[Finding]:
    return [Finding(check="ecs-deployments", resource=st.resource, status=Status.OK, value=st.running,
                    summary=f"desired {st.desired}, running {st.running}, pending {st.pending}; PRIMARY deployment {st.primary} "
                            f"({st.rollout or 'no rollout state'}, created {st.primary_created or '?'}); {st.deployments} deployment(s)")]
