"""remediate-dynamodb-throttling, judging and sizing (pure: no AWS, no clock; tests/flows/remediate_dynamodb_throttling/test_judge.py).

``judge_table``: a finding per table (throttle events since its last capacity
change, peak consumed units a second) and, when throttled, the facts the plan
needs. ``decide``: the plan for the throttled tables (on-demand, more
provisioned units, or auto scaling bounds), within AWS's limits and the
inventory's ``remediation`` policy. See flow.py's docstring for the rules.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import System
from opsbook.mutation.core import Action, Identity, Plan, Record
from opsbook.resources import Discovered
from tasks.autoscaling import BOUNDS_IAM, BOUNDS_KIND, ScalableTarget, bounds_value, table_of, table_resource_ids, table_target_key
from tasks.cloudwatch import Usage
from tasks.dynamodb import CAPACITY_IAM, CAPACITY_KIND, ON_DEMAND, PROVISIONED, TableCapacity, capacity_value, switch_blocked_until, table_names

RUNBOOK = "remediate-dynamodb-throttling"
CHECK = "dynamodb-throttling"
DIMS = ("read", "write")
HOT_PARTITION_ADVICE = ("find the hot keys (CloudWatch Contributor Insights on the table), spread them (write sharding, a better "
                        "partition key), smooth batch jobs over time (000 예방 조치)")
IAM = {CAPACITY_KIND: CAPACITY_IAM, BOUNDS_KIND: BOUNDS_IAM}


def wanted_tables(inv: System, found: Discovered, only: list[str] | None) -> tuple[list[str], list[str]]:
    """(tables to check, names asked for that are not the system's)."""
    names = table_names(inv, found)
    names = [n for n in names if n != inv.mutations.state_table]  # opsbook's own state table is not the system's
    if not only:
        return names, []
    return [n for n in names if n in only], [n for n in only if n not in names]


def usage_entities(names: list[str], caps: dict[str, TableCapacity | str]) -> list[tuple[str, str | None]]:
    """(table, None) for every table, then (table, GSI) for each GSI of the tables that could be read."""
    out: list[tuple[str, str | None]] = []
    for name in names:
        cap = caps[name]
        out += [(name, None)] + ([(name, i.name) for i in cap.indexes] if isinstance(cap, TableCapacity) else [])
    return out


def ceil_units(x: float) -> int:
    return max(1, math.ceil(x - 1e-9))


# --- judging ----------------------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    return "no data" if x is None else f"{x:.1f}"


def throttle_since(cap: TableCapacity | None, start: datetime) -> tuple[datetime, str]:
    """Throttles before the table's last capacity change are history (the change answered them)."""
    since, why = start, ""
    if cap is not None:
        for when, what in ((cap.last_increase, "capacity increase"), (cap.last_to_on_demand, "switch to on-demand")):
            if when and when > since and (what != "switch to on-demand" or cap.mode == ON_DEMAND):
                since, why = when, f"the last {what} at {when.isoformat(timespec='seconds')}"
    return since, why


def judge_table(name: str, cap: TableCapacity | str, usage: list[Usage] | str, start: datetime, minutes: int) -> tuple[Finding, dict[str, Any]]:
    """The table's finding and, when it is throttled, the facts the plan needs.

    ``cap``: the table's capacity or why it could not be read (``missing: ...``: it does not exist, CRIT);
    ``usage``: every table's CloudWatch usage, or why it could not be read."""
    if not isinstance(cap, TableCapacity):
        status = Status.CRIT if str(cap).startswith("missing:") else Status.UNKNOWN
        summary = str(cap).removeprefix("missing: ") if status is Status.CRIT else f"could not be read: {cap}"
        return Finding(check=CHECK, resource=name, status=status, summary=summary), {}
    if isinstance(usage, str):
        return unknown(CHECK, name, f"CloudWatch metrics: {usage}; throttling not judged, nothing planned"), {}
    mine = [u for u in usage if u.table == name]
    since, why = throttle_since(cap, start)
    throttled = {(u.index, d): u.throttles(d, since) for u in mine for d in DIMS if u.throttles(d, since) > 0}
    history = sum(u.throttles(d) for u in mine for d in DIMS) - sum(throttled.values())
    peaks = {(u.index, d): u.peak_units_per_s(d) for u in mine for d in DIMS}
    details = {"mode": cap.mode, "status": cap.status, "capacity": cap.value,
               "throttle_events": {f"{u.label} {d}": u.throttles(d) for u in mine for d in DIMS if u.throttles(d)},
               "peak_consumed_per_s": {f"{u.label} {d}": peaks[(u.index, d)] for u in mine for d in DIMS}}
    if not throttled:
        extra = f"; {history:g} earlier event(s) before {why}" if history else ""
        return Finding(check=CHECK, resource=name, status=Status.OK, value=0, details=details,
                       summary=f"no throttle events in the last {minutes} min{extra} ({cap.mode})"), {}
    parts = []
    for (index, d), n in sorted(throttled.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        label = f"GSI {index} " if index else ""
        prov = "" if cap.mode == ON_DEMAND else f" vs {cap.units(index, d)} provisioned"
        parts.append(f"{label}{d}: {n:g} throttle events, peak {_fmt(peaks[(index, d)])} units/s consumed{prov}")
    summary = f"THROTTLED ({cap.mode}) in the last {minutes} min: " + "; ".join(parts)
    if cap.mode == ON_DEMAND:
        bound = [f"the table's on-demand maximum ({d} {v} units/s)" for d, v in (("read", cap.on_demand_max_read), ("write", cap.on_demand_max_write)) if v]
        summary += (". An on-demand table throttles on a hot partition (3,000 RCU / 1,000 WCU per partition), traffic above twice its "
                    "previous peak, the table quota (40,000 units/s unless raised)" + (f" or {bound[0]}" if bound else "")
                    + f": {HOT_PARTITION_ADVICE}; raise the on-demand maximum or request a quota increase if that is the limit. "
                    "Nothing to change in capacity.")
    return Finding(check=CHECK, resource=name, status=Status.WARN, value=sum(throttled.values()), details=details, summary=summary), \
        {"throttled": throttled, "peaks": peaks}


def judge_tables(system: str, names: list[str], caps: dict[str, TableCapacity | str], usage: list[Usage] | str, start: datetime,
                 minutes: int) -> tuple[list[Finding], dict[str, dict[str, Any]]]:
    """Every table's finding, and the facts of the throttled ones (table -> facts); a system without tables is OK."""
    findings, facts = [], {}
    for name in names:
        finding, fact = judge_table(name, caps[name], usage, start, minutes)
        findings.append(finding)
        if fact:
            facts[name] = fact
    if not names:
        findings.append(Finding(check=CHECK, resource=system, status=Status.OK, value=0,
                                summary="no DynamoDB table in the inventory or found by tag: nothing to check"))
    return findings, facts


# --- the plan ------------------------------------------------------------------------------------------


def decide(inv: System, identity: Identity, caps: dict[str, Any], facts: dict[str, dict[str, Any]],
           targets: dict[str, ScalableTarget] | str, prefer: str, now: datetime) -> Plan:
    """The plan for throttled tables (``facts``: judge_table's, only for throttled ones; ``targets``: the auto scaling
    targets, or why they could not be read)."""
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    known = {} if isinstance(targets, str) else targets
    for name, f in sorted(facts.items()):
        cap: TableCapacity = caps[name]
        if cap.mode == ON_DEMAND:
            plan.unchanged.append(f"{name}: on-demand and throttled: no capacity to add (see its finding for what to do)")
            continue
        if not cap.active:
            plan.cannot.append(f"{name}: table or a GSI is not ACTIVE ({cap.status}); run again when it is")
            continue
        if prefer == "on-demand" and _switch(plan, cap, known, now):
            continue
        if isinstance(targets, str):
            plan.cannot.append(f"{name}: auto scaling targets could not be read ({targets}); a capacity set by hand could be "
                               "overwritten by auto scaling, so nothing is planned; grant application-autoscaling:DescribeScalableTargets")
            continue
        _provision(inv, plan, cap, f, known, prefer)
    return plan


def _switch(plan: Plan, cap: TableCapacity, known: dict[str, ScalableTarget], now: datetime) -> bool:
    """Switch the table to on-demand (True), or note why not within AWS's 24 h limit (False: more provisioned capacity instead)."""
    name = cap.table
    blocked = switch_blocked_until(cap, now)
    if blocked is None:
        managed = [t for t in known.values() if t.resource_id in table_resource_ids(name, [i.name for i in cap.indexes])]
        note = (f"; auto scaling targets stay registered ({', '.join(t.key for t in managed)}) and apply again if the table "
                "goes back to provisioned" if managed else "")
        plan.actions.append(Action(kind=CAPACITY_KIND, resource=name, current=cap.value, target=ON_DEMAND, iam_action=CAPACITY_IAM,
                                   evidence=f"throttled; policy dynamodb_prefer=on-demand: table and its {len(cap.indexes)} GSI(s) "
                                            f"switch together{note}; undo: back to {PROVISIONED} with these capacities (allowed any time)"))
        return True
    plan.notes.append(f"{name}: not switched to on-demand: it last switched at {cap.last_to_on_demand.isoformat(timespec='seconds')}"  # type: ignore[union-attr]
                      f" and AWS allows at most 4 switches to on-demand in 24 h (DescribeTable shows only the last); possible again "
                      f"at {blocked.isoformat(timespec='minutes')}. Planned more provisioned capacity instead")
    return False


def _provision(inv: System, plan: Plan, cap: TableCapacity, f: dict[str, Any], known: dict[str, ScalableTarget], prefer: str) -> None:
    """Each throttled dimension: auto scaling bounds where it manages it, else provisioned units = peak x headroom."""
    name = cap.table
    units = {(None, d): cap.units(None, d) for d in DIMS} | {(i.name, d): cap.units(i.name, d) for i in cap.indexes for d in DIMS}
    new_units = dict(units)
    for (index, d), events in sorted(f["throttled"].items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        needed = _dimension(inv, plan, cap, index, d, events, f["peaks"].get((index, d)), known)
        if needed is not None:
            new_units[(index, d)] = needed
    if new_units != units:
        target = capacity_value(PROVISIONED, new_units[(None, "read")], new_units[(None, "write")],
                                {i.name: (new_units[(i.name, "read")], new_units[(i.name, "write")]) for i in cap.indexes})
        plan.actions.append(Action(kind=CAPACITY_KIND, resource=name, current=cap.value, target=target, iam_action=CAPACITY_IAM,
                                   evidence="throttled: provisioned capacity = peak consumed x headroom for each throttled dimension "
                                            f"(policy dynamodb_prefer={prefer}); undo lowers it again, which AWS allows "
                                            f"{4} times a UTC day and then once an hour"))


def _dimension(inv: System, plan: Plan, cap: TableCapacity, index: str | None, d: str, events: float, peak: float | None,
               known: dict[str, ScalableTarget]) -> int | None:
    """One throttled dimension of the table or a GSI: the units it needs (None: no unit change; the plan says why or has the bounds)."""
    pol, name = inv.remediation, cap.table
    label = f"{name}" + (f" GSI {index}" if index else "") + f" {d}"
    if peak is None:
        plan.cannot.append(f"{label}: throttled but CloudWatch has no Consumed{d.title()}CapacityUnits in the window; cannot size "
                           f"the capacity (set it by hand, or use prefer=on-demand)")
        return None
    needed_raw = ceil_units(peak * pol.dynamodb_capacity_headroom)
    needed = min(needed_raw, pol.dynamodb_max_capacity_units)
    capped = f" (capped from {needed_raw} by remediation.dynamodb_max_capacity_units)" if needed < needed_raw else ""
    why = (f"{events:g} throttle events; peak {peak:.1f} units/s consumed x headroom {pol.dynamodb_capacity_headroom:g} = "
           f"{needed}{capped}")
    current = cap.units(index, d)
    st = known.get(table_target_key(name, index, d))
    if st is not None:
        _bounds(plan, st, (name, d, label), current, needed, why)
        return None
    if needed <= current:
        if current >= pol.dynamodb_max_capacity_units:
            plan.cannot.append(f"{label}: already at the policy's maximum {pol.dynamodb_max_capacity_units} units; {HOT_PARTITION_ADVICE}")
        else:
            plan.unchanged.append(f"{label}: {current} provisioned already covers {needed} ({why}): a hot partition or sub-minute "
                                  f"bursts, not capacity: {HOT_PARTITION_ADVICE}")
        return None
    plan.notes.append(f"{label}: {current} -> {needed} units ({why})")
    return needed


def _bounds(plan: Plan, st: ScalableTarget, what: tuple[str, str, str], current: int, needed: int, why: str) -> None:
    """A dimension auto scaling manages (``what``: table, dimension, label): its max goes up when the capacity sits at it;
    otherwise the bounds are not the cause. (``needed`` is at most the policy's maximum, so a max above it already covers it.)"""
    name, d, label = what
    if current < st.max:
        plan.unchanged.append(f"{label}: auto scaling manages it and had room ({current} provisioned, max {st.max}): the "
                              f"bounds are not what throttled ({why}); bursts faster than auto scaling reacts (it needs "
                              f"minutes of sustained load) or a hot partition: pre-provision with scale-service "
                              f"(table={name} {d}_units=N raises the min), or prefer=on-demand; {HOT_PARTITION_ADVICE}")
    elif needed <= st.max:
        plan.unchanged.append(f"{label}: auto scaling max {st.max} already covers the {needed} needed ({why}): "
                              f"a hot partition or sub-minute bursts: {HOT_PARTITION_ADVICE}")
    else:
        susp = "; NOTE scale-out is SUSPENDED on this target: auto scaling will not use the new max" if st.scale_out_suspended else ""
        plan.actions.append(Action(kind=BOUNDS_KIND, resource=st.key, current=st.bounds, target=bounds_value(min(st.min, needed), needed),
                                   iam_action=BOUNDS_IAM, evidence=f"{why}; {current} provisioned = the auto scaling max: auto "
                                   f"scaling manages it, so its max goes up (a capacity set by hand would be overwritten){susp}"))


# --- after the change ------------------------------------------------------------------------------------


def changed_tables(plan: Plan) -> list[str]:
    return sorted({a.resource for a in plan.actions if a.kind == CAPACITY_KIND} | {table_of(a.resource) for a in plan.actions if a.kind == BOUNDS_KIND})


def after_change(usage: list[Usage], minutes: float) -> list[Finding]:
    """Throttle events in the ``minutes`` since the change (CloudWatch publishes DynamoDB metrics a minute or more late)."""
    out = []
    for u in usage:
        n = u.throttles("read") + u.throttles("write")
        if n:
            out.append(Finding(check="throttling-after-change", resource=u.table, status=Status.WARN, value=n,
                               summary=f"{n:g} throttle events in the {minutes:.1f} min since the change: look again, run this runbook again"))
        else:
            out.append(Finding(check="throttling-after-change", resource=u.table, status=Status.OK, value=0,
                               summary=f"no throttle events in the {minutes:.1f} min since the change (metrics arrive 1-3 min late: "
                                       "run again in a few minutes to confirm)"))
    return out


def resolved(findings: list[Finding], records: list[Record]) -> list[Finding]:
    """A throttled table whose every change was verified is no longer a warning: its finding says what was done."""
    by_table: dict[str, list[Record]] = {}
    for r in records:
        by_table.setdefault(r.resource if r.kind == CAPACITY_KIND else table_of(r.resource), []).append(r)
    out = []
    for f in findings:
        recs = by_table.get(f.resource, [])
        if f.check == CHECK and f.status is Status.WARN and recs and all(r.status == "verified" for r in recs):
            f = f.model_copy(update={"status": Status.OK, "summary": "fixed by this run (verified: "
                                     + "; ".join(f"{r.before} -> {r.after}" for r in recs) + "); was " + f.summary})
        out.append(f)
    return out
