"""scale-service: set an ECS service's task count (and a DynamoDB table's capacity) within its bounds.

Sources: 001 스케일링 가이드 (auto scaling min 2 / max 20; 수동 스케일링: desired
count 10 before a traffic peak) and P1 대응 (desired count + 2), 000 용량 관리 /
문제 2 (DynamoDB provisioned capacity), 002 문제 1 (auto scaling).

Steps: confirm identity -> read the service (desired, running) and its auto
scaling target, and the table's capacity and targets -> plan within the
bounds -> (dry run ends here) -> approve -> leases -> drift check -> act
(undone in reverse if one fails) -> verify: desiredCount read back and the
running count reaching it within ``mutations.settle_timeout_s`` (progress
artifact and stderr), the table ACTIVE with the new capacity -> record -> notify.

Bounds. The service's Application Auto Scaling target (MinCapacity,
MaxCapacity) when it has one, it is what AWS enforces; else the inventory's
``min_tasks``/``max_tasks``. A count outside them is REFUSED naming the bound
and where it comes from, nothing is changed. Refused rather than clamped: the
operator asked for a number; silently doing another one (10 instead of 25)
hides that the request needs a bigger bound, and below the minimum auto
scaling would undo it anyway. ``hold=true`` also raises the scalable target's
min to the new count, so that auto scaling does not scale a pre-scaled service
back in before the peak (undone with the rest).

Absolute or relative, and re-runs. ``desired=10`` is idempotent: once the
service runs 10, a re-run plans nothing. ``delta=+2`` is relative to the count
read when the plan is made (001's ``desiredCount + 2``); the plan shows
``current -> target`` and its fingerprint binds the approval to that pair, and
the drift check refuses when the count moved between plan and approval (auto
scaling, or someone else), so a stale approval never adds 2 to a different
number. A new run of ``+2`` after a successful one does add 2 again: that is
what a relative request means (the plan notes the earlier scaling seen in
opsbook's records so it is not a surprise); ask ``desired=N`` to get a count
whatever happened before.

DynamoDB (``table`` with ``read_units`` and/or ``write_units``): provisioned
tables only (an on-demand table has no capacity to set: the plan says so);
units at most ``remediation.dynamodb_max_capacity_units`` (refused above). A
dimension auto scaling manages gets bounds instead of units (it would
overwrite them): min = the units asked for, max raised to them if needed. A
decrease AWS would refuse now (4 a UTC day, then one an hour) is not planned
and the plan says when it becomes possible.

``undo_run=<flow run id>`` puts back the count / capacity / bounds that run
changed (from its durable records), within the same limits.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.scale_service import judge as j
from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Applier, Identity, Plan, Refused
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records, steps_policy
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SettleTimeout, SystemName, UndoRun
from opsbook.resources import discover, discovered_or_inventory
from tasks.autoscaling import BOUNDS_KIND, bounds_settled, read_bounds, set_bounds
from tasks.dynamodb import CAPACITY_KIND, capacity_settled, read_capacity, read_table_scaling, set_capacity, table_names, undo_capacity_plan
from tasks.ecs import DESIRED_KIND, desired_settled, read_desired, read_service_scaling, set_desired

RUNBOOK = j.RUNBOOK
APPLIERS = {
    CAPACITY_KIND: Applier(read=read_capacity, apply=set_capacity, settled=capacity_settled),
    BOUNDS_KIND: Applier(read=read_bounds, apply=set_bounds, settled=bounds_settled),
    DESIRED_KIND: Applier(read=read_desired, apply=set_desired, settled=desired_settled),
}


# --- reading and planning ---------------------------------------------------------------------


@task(name="plan-scaling", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, st: Any, ts: Any, req: j.Request, records: list[dict[str, Any]], now: datetime) -> Plan:
    return j.plan_scaling(inv, identity, st, ts, req, records, now)


@aws_task(iam=["ecs:DescribeServices", "dynamodb:DescribeTable", "application-autoscaling:DescribeScalableTargets"], name="plan-undo",
          cache_policy=NO_CACHE)
def plan_undo(inv: System, identity: Identity, records: list[dict[str, Any]], run_id: str) -> Plan:
    return undo_capacity_plan(inv, RUNBOOK, identity, records, run_id, APPLIERS, j.IAM)


def plan_request(inv: System, session: MutationSession, identity: Identity, req: j.Request, records_f: Any) -> Plan:
    """Check the request -> the service (and table) it names -> read them -> plan within the bounds."""
    req.check()
    found, gaps = discovered_or_inventory(inv, future_value(discover.submit(inv)), "only the inventory's resources were considered")
    session.report.findings += gaps
    req.check_service()
    resource = j.pick_service(inv, found, req.service) if req.wants_service else None
    if req.table and req.table not in table_names(inv, found):
        raise Refused(f"{req.table!r} is not a DynamoDB table of {inv.name} (its tables: {', '.join(table_names(inv, found)) or 'none'})")
    svc_f = read_service_scaling.submit(inv, resource) if resource else None
    tab_f = read_table_scaling.submit(inv, req.table) if req.table else None
    st = future_value(svc_f) if svc_f else None
    ts = future_value(tab_f) if tab_f else None
    for what, value in ((resource, st), (req.table, ts)):
        if isinstance(value, BaseException):
            raise Refused(f"{what}: could not be read ({aws.describe_error(value)}); nothing was planned or changed")
    records = future_value(records_f)
    if isinstance(records, BaseException):
        session.report.findings.append(unknown("records", inv.mutations.state_table, f"{aws.describe_error(records)}; earlier scaling not shown"))
        records = []
    session.report.findings += j.state_findings(st, ts)
    return make_plan.submit(inv, identity, st, ts, req, records, datetime.now(timezone.utc)).result()


# --- acting and verifying ----------------------------------------------------------------------






# --- the runbook ------------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def scale_service(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    service: Annotated[str, Param("The ECS service as cluster/service; empty: the system's only service")] = "",
    desired: Annotated[int, Param("Scale the service to this many tasks (0 stops it), within its auto scaling bounds; "
                                  "-1: not given (use delta)", ge=-1, le=5000)] = -1,
    delta: Annotated[int, Param("Scale the service by this many tasks (+N or -N) from the count it runs now; 0: not given",
                                ge=-5000, le=5000)] = 0,
    hold: Annotated[bool, Param("Also raise the auto scaling minimum to the new count, so that scaling in does not "
                                "undo it (until undo_run puts the minimum back)")] = False,
    table: Annotated[str, Param("A provisioned DynamoDB table of the system to set read_units/write_units on; empty: none")] = "",
    read_units: Annotated[int, Param("The table's provisioned read capacity units, at most the inventory's "
                                     "remediation.dynamodb_max_capacity_units; 0: unchanged", ge=0, le=10**6)] = 0,
    write_units: Annotated[int, Param("The table's provisioned write capacity units, at most the inventory's "
                                      "remediation.dynamodb_max_capacity_units; 0: unchanged", ge=0, le=10**6)] = 0,
    settle_timeout_s: SettleTimeout = 0,
    undo_run: UndoRun = "",
) -> Any:
    """Scale the system's ECS service to ``desired`` tasks or by ``delta`` (+N/-N), within its auto scaling bounds;
    optionally set a provisioned DynamoDB ``table``'s ``read_units``/``write_units``.

    dry_run (default) ends after the plan. Otherwise the run asks for approval
    (a form on the paused run in the UI; the shell's prompt or --yes), acts, waits (bounded, with
    progress) for the running count to reach the desired count and the table to
    be ACTIVE, records and notifies. ``undo_run``: put back what that run changed.
    """
    inv = load_system(system)
    req = j.Request.from_form(desired, delta, hold, service, table, read_units, write_units)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s, appliers=APPLIERS)
    with session:
        identity = session.identity()
        records_f = read_records.submit(inv)
        if undo_run:
            plan = plan_undo.submit(inv, identity, records_f.result(), undo_run).result()
        else:
            plan = plan_request(inv, session, identity, req, records_f)
        if session.gate(plan):
            # apply, wait until running = desired (and the table ACTIVE), record, notify
            session.act_and_settle(identity, settle_timeout_s, "scaling-change", "scaled, converging", lambda r: f"{r.resource}: {r.before} -> {r.after}",
                                   "not there after {timeout} s: {what}; the change is made, the service is still converging "
                                   "(check its events: capacity, image pulls, health checks)")
    return session.finish()


TASKS = [discover, read_service_scaling, read_table_scaling, plan_undo, steps_policy(APPLIERS)] + SESSION_TASKS
