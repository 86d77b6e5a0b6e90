"""scale-service, checking the request and planning within the bounds (pure: no AWS, no clock; tests/flows/scale_service/test_judge.py).

``Request`` is what the operator asked (the form's "not given" values as None)
and refuses what cannot be planned; ``plan_scaling`` plans the service's desired
count within its bounds (the auto scaling target's, else the inventory's) and
the table's provisioned units or auto scaling bounds within AWS's limits. See
flow.py's docstring for the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import System
from opsbook.mutation.core import Action, Identity, Plan, Refused
from opsbook.resources import Discovered
from tasks.autoscaling import BOUNDS_IAM, BOUNDS_KIND, bounds_value, table_target_key
from tasks.dynamodb import CAPACITY_IAM, CAPACITY_KIND, ON_DEMAND, PROVISIONED, TableState, capacity_value, decrease_blocked_until
from tasks.ecs import DESIRED_IAM, DESIRED_KIND, ServiceState, services

RUNBOOK = "scale-service"
RECENT = timedelta(minutes=30)
IAM = {CAPACITY_KIND: CAPACITY_IAM, BOUNDS_KIND: BOUNDS_IAM, DESIRED_KIND: DESIRED_IAM}


@dataclass(frozen=True)
class Request:
    """What was asked, "not given" as None."""

    desired: int | None = None
    delta: int | None = None
    hold: bool = False
    service: str | None = None
    table: str | None = None
    read_units: int | None = None
    write_units: int | None = None

    @classmethod
    def from_form(cls, desired: int, delta: int, hold: bool, service: str, table: str, read_units: int, write_units: int) -> Request:
        """The form's "not given" values (-1, 0, "") as None."""
        return cls(desired=desired if desired >= 0 else None, delta=delta or None, hold=hold, service=service or None, table=table or None,
                   read_units=read_units or None, write_units=write_units or None)

    @property
    def wants_service(self) -> bool:
        return self.desired is not None or self.delta is not None or self.service is not None

    def check(self) -> None:
        """Refuse a request that cannot be planned, before anything is read."""
        if self.desired is not None and self.delta is not None:
            raise Refused("give desired=N (absolute) or delta=+N/-N (relative), not both")
        if (self.read_units is not None or self.write_units is not None) and not self.table:
            raise Refused("read_units/write_units need table=NAME")
        if self.table and self.read_units is None and self.write_units is None:
            raise Refused(f"table={self.table} needs read_units=N and/or write_units=N")
        if not self.wants_service and not self.table:
            raise Refused("nothing asked: give desired=N or delta=+N/-N (and service=cluster/service when the system has several), "
                          "and/or table=NAME with read_units/write_units")

    def check_service(self) -> None:
        if self.wants_service and self.desired is None and self.delta is None:
            raise Refused(f"service={self.service} needs desired=N or delta=+N/-N")


def pick_service(inv: System, found: Discovered, service: str | None) -> str:
    """cluster/service of the request: the one named (``cluster/service`` or the service's name), else the system's only one."""
    known = [f"{c}/{s}" for c, s in services(inv, found)]
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


# --- the service's desired count -------------------------------------------------------------------


def service_bounds(inv: System, st: ServiceState) -> tuple[int | None, int | None, str]:
    if st.target is not None:
        return st.target.min, st.target.max, f"the auto scaling target of {st.resource} (MinCapacity {st.target.min}, MaxCapacity {st.target.max})"
    spec = next((s for s in inv.ecs_services if f"{s.cluster}/{s.service}" == st.resource), None)
    if spec and (spec.min_tasks is not None or spec.max_tasks is not None):
        return spec.min_tasks, spec.max_tasks, f"the inventory of {inv.name} (ecs_services min_tasks {spec.min_tasks}, max_tasks {spec.max_tasks})"
    return None, None, "no bounds (no auto scaling target, no min_tasks/max_tasks in the inventory)"


def service_target(inv: System, st: ServiceState, desired: int | None, delta: int | None) -> tuple[int, str, int | None, int | None, str]:
    """(the count asked for, how it was asked, its bounds and where they come from); refused outside the bounds, never clamped."""
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
    return target, how, lo, hi, source


def plan_service(inv: System, plan: Plan, st: ServiceState, desired: int | None, delta: int | None, hold: bool,
                 records: list[dict[str, Any]], now: datetime) -> None:
    target, how, lo, hi, source = service_target(inv, st, desired, delta)
    if lo is None and hi is None:
        plan.notes.append(f"{st.resource}: {source}: the count is not bounded; check it")
    recent = [r for r in records if r.get("resource") == st.resource and r.get("kind") == DESIRED_KIND and r.get("status") in ("applied", "verified")
              and now - datetime.fromisoformat(r["at"]) < RECENT]
    if recent and delta is not None:
        r = recent[0]
        plan.notes.append(f"{st.resource}: already scaled {r['before']} -> {r['after']} at {r['at']} by {r.get('approver') or '?'} "
                          f"({r.get('runbook')}); delta={delta:+d} applies on top of the current {st.desired} (use desired=N for an absolute count)")
    if target == st.desired:
        plan.unchanged.append(f"{st.resource}: desired count already {target} ({st.running} running)")
    else:
        plan.actions.append(Action(kind=DESIRED_KIND, resource=st.resource, current=str(st.desired), target=str(target), iam_action=DESIRED_IAM,
                                   evidence=f"{how}; within [{lo if lo is not None else '-'}, {hi if hi is not None else '-'}] from {source}; "
                                            f"{st.running} running now"))
    if hold and st.target is not None and target > st.target.min:
        plan.actions.append(Action(kind=BOUNDS_KIND, resource=st.target.key, current=st.target.bounds, target=bounds_value(target, st.target.max),
                                   iam_action=BOUNDS_IAM, evidence=f"hold=true: auto scaling keeps at least {target} tasks until undone"))
    elif hold and st.target is None:
        plan.notes.append(f"{st.resource}: hold=true but the service has no auto scaling target: nothing scales it in anyway")


# --- the table's capacity --------------------------------------------------------------------------


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
        key = table_target_key(name, None, d)
        st = ts.targets.get(key)
        if st is None:
            new[d] = u
            continue
        bounds = bounds_value(u, max(st.max, u))
        if bounds == st.bounds:
            plan.unchanged.append(f"{name} {d}: auto scaling bounds already {bounds}")
        else:
            plan.actions.append(Action(kind=BOUNDS_KIND, resource=key, current=st.bounds, target=bounds, iam_action=BOUNDS_IAM,
                                       evidence=f"{d}_units={u}; auto scaling manages {d} capacity ({cap.units(None, d)} now): "
                                                "its min becomes the units asked for (a capacity set by hand would be overwritten)"))
    if (new["read"], new["write"]) == (cap.read, cap.write):
        if any(table_target_key(name, None, d) not in ts.targets for d in asked):
            plan.unchanged.append(f"{name}: capacity already {cap.value}")
        return
    target = capacity_value(PROVISIONED, new["read"], new["write"], {i.name: (i.read, i.write) for i in cap.indexes})
    lower = new["read"] < cap.read or new["write"] < cap.write
    when = decrease_blocked_until(cap, now) if lower else None
    if when is not None:
        plan.cannot.append(f"{name}: lowering capacity is not possible now: {cap.decreases_today} decrease(s) today (AWS: 4 a UTC day, "
                           f"then one an hour); possible at {when.isoformat(timespec='minutes')}")
        return
    plan.actions.append(Action(kind=CAPACITY_KIND, resource=name, current=cap.value, target=target, iam_action=CAPACITY_IAM,
                               evidence=f"asked {', '.join(f'{d}_units={u}' for d, u in asked.items())}"
                                        + ("; a DECREASE: AWS allows 4 a UTC day, then one an hour" if lower else "")))


def plan_scaling(inv: System, identity: Identity, st: ServiceState | None, ts: TableState | None, req: Request,
                 records: list[dict[str, Any]], now: datetime) -> Plan:
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    if st is not None:
        plan_service(inv, plan, st, req.desired, req.delta, req.hold, records, now)
    if ts is not None:
        plan_table(inv, plan, ts, req.read_units, req.write_units, now)
    return plan


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
