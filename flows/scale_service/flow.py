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

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel

from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import (
    Action,
    Approval,
    Identity,
    Plan,
    Record,
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
    UndoRun,
)
from opsbook.resources import Discovered, discover
from tasks.capacity import (
    APPLIERS,
    BOUNDS,
    CAPACITY,
    DESIRED,
    IAM,
    ON_DEMAND,
    PROVISIONED,
    ScalableTarget,
    TableCapacity,
    bounds_value,
    capacity_value,
    decrease_blocked_until,
    describe_capacity,
    describe_service,
    describe_targets,
    dimension_for,
    table_resource_ids,
    undo_with_limits,
    wait_until,
)
from tasks.dynamodb import table_names
from tasks.ecs import services as ecs_services

RUNBOOK = "scale-service"
RECENT = timedelta(minutes=30)


class ServiceState(BaseModel):
    resource: str
    desired: int
    running: int
    pending: int = 0
    target: ScalableTarget | None = None
    target_error: str | None = None


class TableState(BaseModel):
    table: str
    capacity: TableCapacity
    targets: dict[str, ScalableTarget]


# --- reading ---------------------------------------------------------------------------------


def pick_service(inv: System, found: Discovered, service: str | None) -> str:
    """cluster/service of the request: the one named (``cluster/service`` or the service's name), else the system's only one."""
    known = [f"{c}/{s}" for c, s in ecs_services(inv, found)]
    if service:
        hits = [k for k in known if k == service or k.split("/", 1)[1] == service]
        if len(hits) == 1:
            return hits[0]
        raise Refused(f"{service!r} is not an ECS service of {inv.name}" + (f" (ambiguous: {', '.join(hits)})" if hits else "")
                      + f"; its services: {', '.join(known) or 'none'}")
    if len(known) == 1:
        return known[0]
    if not known:
        raise Refused(f"{inv.name} has no ECS service (inventory or tag discovery): nothing to scale; give table= to change DynamoDB capacity")
    raise Refused(f"{inv.name} has {len(known)} ECS services ({', '.join(known)}): say which with service=cluster/service")


@aws_task(iam=["ecs:DescribeServices", "application-autoscaling:DescribeScalableTargets"], name="read-service-scaling", cache_policy=NO_CACHE)
def read_service(system: System, resource: str) -> ServiceState:
    svc = describe_service(system, resource)
    state = ServiceState(resource=resource, desired=svc["desiredCount"], running=svc.get("runningCount", 0), pending=svc.get("pendingCount", 0))
    rid = f"service/{resource}"
    try:
        state.target = describe_targets(system, "ecs", [rid]).get(f"{rid} ecs:service:DesiredCount")
    except Exception as exc:  # the bounds fall back to the inventory's, and the report says why
        state.target_error = aws.describe_error(exc)
    return state


@aws_task(iam=["dynamodb:DescribeTable", "application-autoscaling:DescribeScalableTargets"], name="read-table-scaling", cache_policy=NO_CACHE)
def read_table(system: System, table: str) -> TableState:
    cap = describe_capacity(system, table)
    return TableState(table=table, capacity=cap,
                      targets=describe_targets(system, "dynamodb", table_resource_ids(table, [i.name for i in cap.indexes])))


# --- deciding (pure: unit-tested without AWS) --------------------------------------------------


def service_bounds(inv: System, st: ServiceState) -> tuple[int | None, int | None, str]:
    if st.target is not None:
        return st.target.min, st.target.max, f"the auto scaling target of {st.resource} (MinCapacity {st.target.min}, MaxCapacity {st.target.max})"
    spec = next((s for s in inv.ecs_services if f"{s.cluster}/{s.service}" == st.resource), None)
    if spec and (spec.min_tasks is not None or spec.max_tasks is not None):
        return spec.min_tasks, spec.max_tasks, f"the inventory of {inv.name} (ecs_services min_tasks {spec.min_tasks}, max_tasks {spec.max_tasks})"
    return None, None, "no bounds (no auto scaling target, no min_tasks/max_tasks in the inventory)"


def plan_service(inv: System, plan: Plan, st: ServiceState, desired: int | None, delta: int | None, hold: bool,
                 records: list[dict[str, Any]], now: datetime) -> None:
    target = desired if desired is not None else st.desired + (delta or 0)
    how = f"desired={desired}" if desired is not None else f"delta={delta:+d} on the current {st.desired}"
    lo, hi, source = service_bounds(inv, st)
    if target < 0:
        raise Refused(f"{st.resource}: {how} gives {target} tasks; nothing was changed")
    if hi is not None and target > hi:
        raise Refused(f"{st.resource}: {how} gives {target} tasks, above the maximum {hi} set by {source}; nothing was changed. "
                      f"Ask for at most {hi}, or raise the maximum first")
    if lo is not None and target < lo:
        raise Refused(f"{st.resource}: {how} gives {target} tasks, below the minimum {lo} set by {source}"
                      + ("; auto scaling would scale it back up" if st.target else "") + f"; nothing was changed. Ask for at least {lo}")
    if lo is None and hi is None:
        plan.notes.append(f"{st.resource}: {source}: the count is not bounded; check it")
    recent = [r for r in records if r.get("resource") == st.resource and r.get("kind") == DESIRED and r.get("status") in ("applied", "verified")
              and now - datetime.fromisoformat(r["at"]) < RECENT]
    if recent and delta is not None:
        r = recent[0]
        plan.notes.append(f"{st.resource}: already scaled {r['before']} -> {r['after']} at {r['at']} by {r.get('approver') or '?'} "
                          f"({r.get('runbook')}); delta={delta:+d} applies on top of the current {st.desired} (use desired=N for an absolute count)")
    if target == st.desired:
        plan.unchanged.append(f"{st.resource}: desired count already {target} ({st.running} running)")
    else:
        plan.actions.append(Action(kind=DESIRED, resource=st.resource, current=str(st.desired), target=str(target), iam_action=IAM[DESIRED],
                                   evidence=f"{how}; within [{lo if lo is not None else '-'}, {hi if hi is not None else '-'}] from {source}; "
                                            f"{st.running} running now"))
    if hold and st.target is not None and target > st.target.min:
        plan.actions.append(Action(kind=BOUNDS, resource=st.target.key, current=st.target.bounds, target=bounds_value(target, st.target.max),
                                   iam_action=IAM[BOUNDS], evidence=f"hold=true: auto scaling keeps at least {target} tasks until undone"))
    elif hold and st.target is None:
        plan.notes.append(f"{st.resource}: hold=true but the service has no auto scaling target: nothing scales it in anyway")


def plan_table(inv: System, plan: Plan, ts: TableState, read_units: int | None, write_units: int | None, now: datetime) -> None:
    cap, name, limit = ts.capacity, ts.table, inv.remediation.dynamodb_max_capacity_units
    asked = {d: u for d, u in (("read", read_units), ("write", write_units)) if u is not None}
    for d, u in asked.items():
        if u < 1 or u > limit:
            raise Refused(f"{name}: {d}_units={u} is outside [1, {limit}] (remediation.dynamodb_max_capacity_units of {inv.name}); nothing was changed")
    if cap.mode == ON_DEMAND:
        plan.cannot.append(f"{name}: on-demand (PAY_PER_REQUEST): it has no provisioned capacity to set; it scales by itself "
                           "(to change that, switch it to provisioned by hand or with remediate-dynamodb-throttling prefer=provisioned)")
        return
    if not cap.active:
        plan.cannot.append(f"{name}: not ACTIVE ({cap.status}); run again when it is")
        return
    new = {"read": cap.read, "write": cap.write}
    for d, u in asked.items():
        key = f"table/{name} {dimension_for(None, d)}"
        st = ts.targets.get(key)
        if st is not None:
            bounds = bounds_value(u, max(st.max, u))
            if bounds == st.bounds:
                plan.unchanged.append(f"{name} {d}: auto scaling bounds already {bounds}")
            else:
                plan.actions.append(Action(kind=BOUNDS, resource=key, current=st.bounds, target=bounds, iam_action=IAM[BOUNDS],
                                           evidence=f"{d}_units={u}; auto scaling manages {d} capacity ({cap.units(None, d)} now): "
                                                    "its min becomes the units asked for (a capacity set by hand would be overwritten)"))
            continue
        new[d] = u
    if (new["read"], new["write"]) == (cap.read, cap.write):
        if any(f"table/{name} {dimension_for(None, d)}" not in ts.targets for d in asked):
            plan.unchanged.append(f"{name}: capacity already {cap.value}")
        return
    target = capacity_value(PROVISIONED, new["read"], new["write"], {i.name: (i.read, i.write) for i in cap.indexes})
    lower = new["read"] < cap.read or new["write"] < cap.write
    if lower:
        when = decrease_blocked_until(cap, now)
        if when is not None:
            plan.cannot.append(f"{name}: lowering capacity is not possible now: {cap.decreases_today} decrease(s) today (AWS: 4 a UTC day, "
                               f"then one an hour); possible at {when.isoformat(timespec='minutes')}")
            return
    plan.actions.append(Action(kind=CAPACITY, resource=name, current=cap.value, target=target, iam_action=IAM[CAPACITY],
                               evidence=f"asked {', '.join(f'{d}_units={u}' for d, u in asked.items())}"
                                        + ("; a DECREASE: AWS allows 4 a UTC day, then one an hour" if lower else "")))


@task(name="plan-scaling", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, st: ServiceState | None, ts: TableState | None, desired: int | None, delta: int | None,
              hold: bool, read_units: int | None, write_units: int | None, records: list[dict[str, Any]], now: datetime) -> Plan:
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    if st is not None:
        plan_service(inv, plan, st, desired, delta, hold, records, now)
    if ts is not None:
        plan_table(inv, plan, ts, read_units, write_units, now)
    return plan


@aws_task(iam=["ecs:DescribeServices", "dynamodb:DescribeTable", "application-autoscaling:DescribeScalableTargets"], name="plan-undo",
          cache_policy=NO_CACHE)
def plan_undo(inv: System, identity: Identity, records: list[dict[str, Any]], run_id: str) -> Plan:
    return undo_with_limits(inv, RUNBOOK, identity, records, run_id)


# --- acting and verifying ----------------------------------------------------------------------


@aws_task(iam=["ecs:DescribeServices", "dynamodb:DescribeTable", "application-autoscaling:DescribeScalableTargets"], name="check-scaling-drift",
          cache_policy=NO_CACHE)
def check_drift(system: System, plan: Plan) -> None:
    drifted = drift(system, plan, APPLIERS)
    if drifted:
        raise Refused("the state changed since the plan was made; nothing was changed (run again to plan afresh): " + "; ".join(drifted))


@aws_task(iam=["ecs:DescribeServices", "ecs:UpdateService", "dynamodb:DescribeTable", "dynamodb:UpdateTable",
               "application-autoscaling:DescribeScalableTargets", "application-autoscaling:RegisterScalableTarget"],
          name="apply-scaling", cache_policy=NO_CACHE, read_only=False)
def apply_changes(system: System, plan: Plan, approval: Approval, identity: Identity) -> tuple[list[Record], bool]:
    return apply_plan(system, plan, APPLIERS, approval, str(flow_run.get_id()) if flow_run.get_id() else None, identity)


def _check(system: System, r: Record) -> Any:
    target = r.after or ""

    def check() -> tuple[bool, str]:
        if r.kind == DESIRED:
            svc = describe_service(system, r.resource)
            desired, running = svc["desiredCount"], svc.get("runningCount", 0)
            return desired == int(target) and running == desired, f"desired {desired}, running {running}, pending {svc.get('pendingCount', 0)}"
        if r.kind == CAPACITY:
            cap = describe_capacity(system, r.resource)
            return cap.active and cap.value == target, f"{cap.status}: {cap.value}"
        now = APPLIERS[r.kind].read(system, r.resource)
        return now == target, f"bounds {now}"
    return check


@aws_task(iam=["ecs:DescribeServices", "dynamodb:DescribeTable", "application-autoscaling:DescribeScalableTargets"], name="wait-scaled",
          cache_policy=NO_CACHE)
def verify_changes(system: System, records: list[Record], timeout_s: float) -> list[Record]:
    """Bounded wait with progress: desiredCount read back and running = desired; tables ACTIVE with the capacity; bounds read back."""
    applied = [r for r in records if r.status == "applied"]
    seen = wait_until(RUNBOOK, {r.resource: _check(system, r) for r in applied}, timeout_s)
    out = []
    for r in records:
        if r.status != "applied":
            out.append(r)
            continue
        ok, what, secs = seen[r.resource]
        out.append(r.model_copy(update={"status": "verified" if ok else "applied",
                                        "detail": f"read back after {secs:g} s: {what}" if ok else
                                                  f"not there after {timeout_s:g} s: {what}; the change is made, the service is still converging "
                                                  "(check its events: capacity, image pulls, health checks)"}))
    return out


def record_findings(records: list[Record]) -> list[Finding]:
    status = {"verified": Status.OK, "applied": Status.WARN}
    return [Finding(check="scaling-change", resource=r.resource, status=status.get(r.status, Status.CRIT),
                    summary=f"{r.kind} {r.before} -> {r.after}: {r.status}; {r.detail}".rstrip("; ")) for r in records]


def state_findings(st: ServiceState | None, ts: TableState | None) -> list[Finding]:
    out = []
    if st is not None:
        bound = f"auto scaling [{st.target.min}, {st.target.max}]" if st.target else "no auto scaling target"
        out.append(Finding(check="ecs-scale", resource=st.resource, status=Status.OK, value=st.running,
                           summary=f"desired {st.desired}, running {st.running}, pending {st.pending}; {bound}"))
        if st.target_error:
            out.append(unknown("ecs-autoscaling-target", st.resource, f"{st.target_error}; the inventory's min_tasks/max_tasks bound the count instead"))
    if ts is not None:
        out.append(Finding(check="dynamodb-capacity", resource=ts.table, status=Status.OK,
                           summary=f"{ts.capacity.status}, {ts.capacity.value}" + (f"; auto scaling: {', '.join(f'{k} {t.bounds}' for k, t in ts.targets.items())}"
                                                                                   if ts.targets else "")))
    return out


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
                                     "remediation.dynamodb_max_capacity_units; 0: unchanged", ge=0)] = 0,
    write_units: Annotated[int, Param("The table's provisioned write capacity units, at most the inventory's "
                                      "remediation.dynamodb_max_capacity_units; 0: unchanged", ge=0)] = 0,
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
    # the form's "not given" values (-1, 0, "") as None for the checks below
    desired_n, delta_n = (desired if desired >= 0 else None), (delta or None)
    read_n, write_n, service_n, table_n = read_units or None, write_units or None, service or None, table or None
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
    with session:
        identity = session.identity()
        records_f = read_records.submit(inv)
        if undo_run:
            plan = plan_undo.submit(inv, identity, records_f.result(), undo_run).result()
        else:
            if desired_n is not None and delta_n is not None:
                raise Refused("give desired=N (absolute) or delta=+N/-N (relative), not both")
            if (read_n is not None or write_n is not None) and not table_n:
                raise Refused("read_units/write_units need table=NAME")
            if table_n and read_n is None and write_n is None:
                raise Refused(f"table={table_n} needs read_units=N and/or write_units=N")
            wants_service = desired_n is not None or delta_n is not None or service_n is not None
            if not wants_service and not table_n:
                raise Refused("nothing asked: give desired=N or delta=+N/-N (and service=cluster/service when the system has several), "
                              "and/or table=NAME with read_units/write_units")
            found = future_value(discover.submit(inv))
            if isinstance(found, BaseException) or found.error:
                reason = aws.describe_error(found) if isinstance(found, BaseException) else found.error
                session.report.findings.append(unknown("discovery", f"tags {inv.discovery.tags}", f"{reason}; only the inventory's resources were considered"))
                found = Discovered()
            if wants_service and desired_n is None and delta_n is None:
                raise Refused(f"service={service_n} needs desired=N or delta=+N/-N")
            resource = pick_service(inv, found, service_n) if wants_service else None
            if table_n and table_n not in table_names(inv, found):
                raise Refused(f"{table_n!r} is not a DynamoDB table of {inv.name} (its tables: {', '.join(table_names(inv, found)) or 'none'})")
            svc_f = read_service.submit(inv, resource) if resource else None
            tab_f = read_table.submit(inv, table_n) if table_n else None
            st = future_value(svc_f) if svc_f else None
            ts = future_value(tab_f) if tab_f else None
            for what, value in ((resource, st), (table_n, ts)):
                if isinstance(value, BaseException):
                    raise Refused(f"{what}: could not be read ({aws.describe_error(value)}); nothing was planned or changed")
            records = future_value(records_f)
            if isinstance(records, BaseException):
                session.report.findings.append(unknown("records", inv.mutations.state_table, f"{aws.describe_error(records)}; earlier scaling not shown"))
                records = []
            session.report.findings += state_findings(st, ts)
            plan = make_plan.submit(inv, identity, st, ts, desired_n, delta_n, hold, read_n, write_n, records,
                                    datetime.now(timezone.utc)).result()
        if session.gate(plan):
            settle = settle_timeout_s or inv.mutations.settle_timeout_s
            session.lease(inv.mutations.lease_ttl_s + settle)
            check_drift.submit(inv, plan).result()
            done, ok = apply_changes.submit(inv, plan, session.approval, identity).result()
            if ok:
                session.notify("scaled, converging", [f"{r.resource}: {r.before} -> {r.after}" for r in done])
                done = verify_changes.submit(inv, done, settle).result()
            session.record(done)
            session.report.findings += record_findings(done)
            session.done(ok)
            session.notify(session.report.outcome, [f"{r.resource}: {r.kind} {r.before} -> {r.after}: {r.status} {r.detail}".strip() for r in done])
    return session.finish()


TASKS = [discover, read_service, read_table, plan_undo, check_drift, apply_changes, verify_changes] + SESSION_TASKS
