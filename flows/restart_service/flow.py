"""restart-service: restart an ECS service's tasks (a forced new deployment), the service an agent runs on.

Sources: 001 P2 특정 기능 오류 (2. 개별 에이전트 재시작) and P1 서비스 성능 저하 (the step before
scaling: restart, then scale with scale-service).

Steps: confirm identity -> the service (the agent's own one where the inventory maps it, else the one named, else
the system's only one) -> read its deployments -> plan -> (dry run ends here) -> approve -> the mechanism (lease,
drift check, the step as intent -> UpdateService forceNewDeployment=true -> outcome) -> verify: a new PRIMARY
deployment with every desired task RUNNING, its rollout COMPLETED, the old deployment's tasks gone and, where the
inventory names the service's target group, every target healthy, within ``mutations.settle_timeout_s`` (progress
artifact and stderr) -> record -> notify.

One agent. ECS restarts whole tasks, never one container inside one: where the inventory maps the agent to a service
(``ecs_services[].agents``), that service restarts (with the other agents it lists, named in the plan); an agent no
service lists restarts the service named (or the system's only one) as a whole, and the plan says so plainly.

Once, not twice. The step's effect is "the deployment PRIMARY when planned is PRIMARY no more" (``restart_reached``):
a run killed after its UpdateService call is closed as applied by the next run, which does not restart again; and a
restart recorded as made less than ``not_within_min`` minutes ago (30) is not planned again (the plan says when and
by whom; ``not_within_min=0`` restarts anyway). Nothing is planned while a deployment is under way (it would stack a
third one on it), nor for a service that runs no tasks. A restart cannot be undone (there is no undo_run): the plan
marks it not reversible. Not settling in time is a WARN with the counts; ECS goes on rolling.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.restart_service import judge as j
from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import unknown
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Applier, Identity, Plan, Refused
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records, steps_policy
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SettleTimeout, SystemName
from opsbook.resources import discover, discovered_or_inventory
from tasks.ecs import RESTART_KIND, RestartState, force_new_deployment, read_primary, read_restart_state, restart_reached, restart_settled

RUNBOOK = j.RUNBOOK
APPLIERS = {RESTART_KIND: Applier(read=read_primary, apply=force_new_deployment, reached=restart_reached, settled=restart_settled)}


# --- reading and planning ---------------------------------------------------------------------


@task(name="plan-restart", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, st: RestartState, agent_note: str, records: list[dict[str, Any]], now: datetime,
              not_within_min: int) -> Plan:
    return j.plan_restart(inv, identity, st, agent_note, records, now, not_within_min)


def plan_request(inv: System, session: MutationSession, identity: Identity, service: str, agent: str, not_within_min: int,
                 records_f: Any) -> Plan:
    """The service (the agent's, the one named, the only one) -> its deployments -> the plan."""
    found, gaps = discovered_or_inventory(inv, future_value(discover.submit(inv)), "only the inventory's ECS services were considered")
    session.report.findings += gaps
    resource, agent_note = j.pick_service(inv, found, service or None, agent or None)
    st = future_value(read_restart_state.submit(inv, resource))
    if isinstance(st, BaseException):
        raise Refused(f"{resource}: could not be read ({aws.describe_error(st)}); nothing was planned or changed")
    records = future_value(records_f)
    if isinstance(records, BaseException):
        session.report.findings.append(unknown("records", inv.mutations.state_table, f"{aws.describe_error(records)}; earlier restarts not seen"))
        records = []
    session.report.findings += j.state_findings(st)
    return make_plan.submit(inv, identity, st, agent_note, records, datetime.now(timezone.utc), not_within_min).result()


# --- acting and verifying ----------------------------------------------------------------------


# --- the runbook ------------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def restart_service(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    service: Annotated[str, Param("The ECS service as cluster/service (or its name); empty: the agent's service, else the "
                                  "system's only service")] = "",
    agent: Annotated[str, Param("The failing agent: restart the service the inventory maps it to (ecs_services[].agents); "
                                "an agent no service lists restarts the whole service; empty: none named")] = "",
    not_within_min: Annotated[int, Param("A restart of the same service recorded less than this many minutes ago is not "
                                         "repeated (a re-run after a kill, two people at once); 0: restart anyway", ge=0, le=1440)] = 30,
    settle_timeout_s: SettleTimeout = 0,
) -> Any:
    """Restart an ECS service's tasks (a forced new deployment, rolling), the service the failing ``agent`` runs on.

    dry_run (default) ends after the plan. Otherwise the run asks for approval (a form on the paused run in the
    UI; the shell's prompt or --yes), forces the new deployment once, waits (bounded, with progress) until the new
    tasks run and are healthy and the old ones are gone, records and notifies.
    """
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s, appliers=APPLIERS)
    with session:
        identity = session.identity()
        records_f = read_records.submit(inv)
        plan = plan_request(inv, session, identity, service, agent, not_within_min, records_f)
        if session.gate(plan):
            # force the new deployment, wait until it is done (new tasks running and healthy, old ones gone), record, notify
            session.act_and_settle(identity, settle_timeout_s, "restart", "restarting, rolling", lambda r: f"{r.resource}: {r.after}",
                                   "the new deployment is not done after {timeout} s: {what}; ECS goes on rolling "
                                   "(check the service's events: image pulls, health checks, capacity)")
    return session.finish()


TASKS = [discover, read_restart_state, steps_policy(APPLIERS)] + SESSION_TASKS
