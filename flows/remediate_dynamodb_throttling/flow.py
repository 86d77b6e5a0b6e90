"""remediate-dynamodb-throttling: diagnose throttled DynamoDB tables and give them the capacity they need.

Sources: 000 일반적인 문제 2 "DynamoDB 스로틀링" (alarm ``dynamodb-*-throttle-*``,
P2, 30 min: ReadThrottleEvents of the last hour, BillingModeSummary; fixes:
on-demand (recommended), more provisioned capacity, auto scaling) and 002 문제 1
(auto scaling on ``todos``).

Steps: confirm identity -> the system's tables (inventory + tag discovery,
``tables`` restricts) -> read concurrently: DescribeTable (mode, units, GSIs,
``LastUpdateToPayPerRequestDateTime``, decreases today), the Application Auto
Scaling targets of the tables and their GSIs, and one batched GetMetricData of
the window (Read/WriteThrottleEvents and Consumed*CapacityUnits per minute, for
each table and each GSI) -> judge (a finding per table) -> plan, for THROTTLED
tables only -> (dry run ends here) -> approve -> leases -> drift check -> act
(undone in reverse if one fails) -> wait until ACTIVE with the new capacity
read back (bounded, with progress) -> throttle events since the change ->
record -> notify.

What it plans (policy: the inventory's ``remediation``; ``prefer`` overrides
``dynamodb_prefer`` for one run):

- on-demand (``dynamodb_prefer: on-demand``): the whole table and its GSIs
  switch with one UpdateTable. Auto scaling targets are left registered (the
  SDK keeps them; they apply again if the table goes back to provisioned).
  AWS allows at most 4 switches to on-demand in a rolling 24 h (it was once a
  day) and DescribeTable shows only the last: within 24 h of that switch the
  run does not switch again, says when it becomes possible, and plans the
  provisioned increase below instead.
- provisioned: for the table and each throttled GSI, each throttled dimension
  goes to ``ceil(peak consumed units/s x dynamodb_capacity_headroom)``, at most
  ``dynamodb_max_capacity_units``. Where auto scaling manages that dimension
  the scalable target's bounds change instead (auto scaling would overwrite a
  capacity set by hand): when the capacity sits at the target's max, the max
  goes up to that figure (min stays, lowered only if it were above the new
  max). When auto scaling still had room (capacity below its max), the bounds
  are not the cause: nothing is planned and the finding says to pre-provision
  (scale-service raises the min) or to go on-demand.
  A throttled dimension whose peak consumption is already covered (peak x
  headroom <= provisioned) gets no change: throttling there comes from a hot
  partition or sub-minute bursts, and the finding says so.
- an on-demand table throttled after its switch: a finding with what to do
  (hot keys, the table's on-demand maximum, the account quota), nothing changed.

Throttle events before the table's last capacity change (an increase or the
switch to on-demand) are history: they are shown, not acted on. So a re-run
right after a fix plans nothing. ``undo_run=<flow run id>`` plans the inverse
of that run from its durable records (a switch to on-demand goes back to
PROVISIONED with the capacities it had, which AWS allows at any time; a
capacity increase is undone by a decrease, which AWS limits per UTC day: the
plan says when the next one is possible when the limit is reached).

API calls (a system of T tables with G GSIs): T DescribeTable, 1 tag lookup,
1 DescribeScalableTargets page per 50 tables+GSIs, 1 GetMetricData page per 500
series (4 a table or GSI), plus the session's; acting adds per table 1-2
DescribeTable + 1 UpdateTable + 1 a poll, per target 2 + 1 Register.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

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
    Names,
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
    IAM,
    ON_DEMAND,
    PROVISIONED,
    ScalableTarget,
    TableCapacity,
    Usage,
    bounds_value,
    capacity_value,
    ceil_units,
    describe_capacity,
    describe_targets,
    dimension_for,
    read_usage,
    switch_blocked_until,
    table_resource_ids,
    undo_with_limits,
    wait_until,
)
from tasks.dynamodb import table_names

RUNBOOK = "remediate-dynamodb-throttling"
CHECK = "dynamodb-throttling"
READ_DEADLINE_S = 60.0
DIMS = ("read", "write")
HOT_PARTITION_ADVICE = ("find the hot keys (CloudWatch Contributor Insights on the table), spread them (write sharding, a better "
                        "partition key), smooth batch jobs over time (000 예방 조치)")


# --- reading ---------------------------------------------------------------------------------


def wanted_tables(inv: System, found: Discovered, only: list[str] | None) -> tuple[list[str], list[str]]:
    """(tables to check, names asked for that are not the system's)."""
    names = table_names(inv, found)
    names = [n for n in names if n != inv.mutations.state_table]  # opsbook's own state table is not the system's
    if not only:
        return names, []
    return [n for n in names if n in only], [n for n in only if n not in names]


@aws_task(iam=["dynamodb:DescribeTable"], name="read-table-capacity", cache_policy=NO_CACHE)
def read_tables(system: System, names: list[str]) -> dict[str, Any]:
    """Table -> TableCapacity, or the error (text) that prevented reading it."""
    out: dict[str, Any] = {}
    for name, cap, err in aws.parallel(lambda n: describe_capacity(system, n), names, deadline=aws.Deadline(READ_DEADLINE_S)):
        if err is None:
            out[name] = cap
        elif aws.is_not_found(err):
            out[name] = f"missing: {name} does not exist in {system.region}" + (" (named in the inventory)" if any(t.name == name for t in system.dynamodb_tables) else "")
        else:
            out[name] = aws.describe_error(err)
    return out


@aws_task(iam=["application-autoscaling:DescribeScalableTargets"], name="read-table-scalable-targets", cache_policy=NO_CACHE)
def read_targets(system: System, caps: dict[str, Any]) -> dict[str, ScalableTarget]:
    ids = [rid for name, cap in caps.items() if isinstance(cap, TableCapacity) for rid in table_resource_ids(name, [i.name for i in cap.indexes])]
    return describe_targets(system, "dynamodb", ids) if ids else {}


@aws_task(iam=["cloudwatch:GetMetricData"], name="read-table-usage", cache_policy=NO_CACHE)
def read_table_usage(system: System, caps: dict[str, Any], start: datetime, end: datetime) -> list[Usage]:
    entities: list[tuple[str, str | None]] = []
    for name, cap in caps.items():
        entities.append((name, None))
        if isinstance(cap, TableCapacity):
            entities += [(name, i.name) for i in cap.indexes]
    return read_usage(system, entities, start, end)


# --- deciding (pure: unit-tested without AWS) --------------------------------------------------


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


def judge_table(name: str, cap: Any, usage: list[Usage] | BaseException, start: datetime, minutes: int) -> tuple[Finding, dict[str, Any]]:
    """The table's finding and, when it is throttled, the facts the plan needs."""
    if not isinstance(cap, TableCapacity):
        status = Status.CRIT if str(cap).startswith("missing:") else Status.UNKNOWN
        summary = str(cap).removeprefix("missing: ") if status is Status.CRIT else f"could not be read: {cap}"
        return Finding(check=CHECK, resource=name, status=status, summary=summary), {}
    if isinstance(usage, BaseException):
        return unknown(CHECK, name, f"CloudWatch metrics: {aws.describe_error(usage)}; throttling not judged, nothing planned"), {}
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


def decide(inv: System, identity: Identity, caps: dict[str, Any], facts: dict[str, dict[str, Any]],
           targets: dict[str, ScalableTarget] | BaseException, prefer: str, now: datetime) -> Plan:
    """The plan for throttled tables (``facts``: judge_table's, only for throttled ones)."""
    pol = inv.remediation
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    targets_error = aws.describe_error(targets) if isinstance(targets, BaseException) else None
    known = {} if isinstance(targets, BaseException) else targets
    for name, f in sorted(facts.items()):
        cap: TableCapacity = caps[name]
        if cap.mode == ON_DEMAND:
            plan.unchanged.append(f"{name}: on-demand and throttled: no capacity to add (see its finding for what to do)")
            continue
        if not cap.active:
            plan.cannot.append(f"{name}: table or a GSI is not ACTIVE ({cap.status}); run again when it is")
            continue
        managed = [t for t in known.values() if t.resource_id in table_resource_ids(name, [i.name for i in cap.indexes])]
        if prefer == "on-demand":
            blocked = switch_blocked_until(cap, now)
            if blocked is None:
                note = (f"; auto scaling targets stay registered ({', '.join(t.key for t in managed)}) and apply again if the table "
                        "goes back to provisioned" if managed else "")
                plan.actions.append(Action(kind=CAPACITY, resource=name, current=cap.value, target=ON_DEMAND, iam_action=IAM[CAPACITY],
                                           evidence=f"throttled; policy dynamodb_prefer=on-demand: table and its {len(cap.indexes)} GSI(s) "
                                                    f"switch together{note}; undo: back to {PROVISIONED} with these capacities (allowed any time)"))
                continue
            plan.notes.append(f"{name}: not switched to on-demand: it last switched at {cap.last_to_on_demand.isoformat(timespec='seconds')}"  # type: ignore[union-attr]
                              f" and AWS allows at most 4 switches to on-demand in 24 h (DescribeTable shows only the last); possible again "
                              f"at {blocked.isoformat(timespec='minutes')}. Planned more provisioned capacity instead")
        if targets_error is not None:
            plan.cannot.append(f"{name}: auto scaling targets could not be read ({targets_error}); a capacity set by hand could be "
                               "overwritten by auto scaling, so nothing is planned; grant application-autoscaling:DescribeScalableTargets")
            continue
        units = {(None, d): cap.units(None, d) for d in DIMS} | {(i.name, d): cap.units(i.name, d) for i in cap.indexes for d in DIMS}
        new_units = dict(units)
        for (index, d), events in sorted(f["throttled"].items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
            label = f"{name}" + (f" GSI {index}" if index else "") + f" {d}"
            peak = f["peaks"].get((index, d))
            if peak is None:
                plan.cannot.append(f"{label}: throttled but CloudWatch has no Consumed{d.title()}CapacityUnits in the window; cannot size "
                                   f"the capacity (set it by hand, or use prefer=on-demand)")
                continue
            needed_raw = ceil_units(peak * pol.dynamodb_capacity_headroom)
            needed = min(needed_raw, pol.dynamodb_max_capacity_units)
            capped = f" (capped from {needed_raw} by remediation.dynamodb_max_capacity_units)" if needed < needed_raw else ""
            why = (f"{events:g} throttle events; peak {peak:.1f} units/s consumed x headroom {pol.dynamodb_capacity_headroom:g} = "
                   f"{needed}{capped}")
            key = f"{'table/' + name + ('/index/' + index if index else '')} {dimension_for(index, d)}"
            st = known.get(key)
            current = units[(index, d)]
            if st is not None:
                if current < st.max:
                    plan.unchanged.append(f"{label}: auto scaling manages it and had room ({current} provisioned, max {st.max}): the "
                                          f"bounds are not what throttled ({why}); bursts faster than auto scaling reacts (it needs "
                                          f"minutes of sustained load) or a hot partition: pre-provision with scale-service "
                                          f"(table={name} {d}_units=N raises the min), or prefer=on-demand; {HOT_PARTITION_ADVICE}")
                    continue
                if needed <= st.max:
                    plan.unchanged.append(f"{label}: auto scaling max {st.max} already covers the {needed} needed ({why}): "
                                          f"a hot partition or sub-minute bursts: {HOT_PARTITION_ADVICE}")
                    continue
                if st.max >= pol.dynamodb_max_capacity_units:
                    plan.cannot.append(f"{label}: auto scaling max {st.max} is already at the policy's maximum "
                                       f"{pol.dynamodb_max_capacity_units}; {HOT_PARTITION_ADVICE}")
                    continue
                susp = "; NOTE scale-out is SUSPENDED on this target: auto scaling will not use the new max" if st.scale_out_suspended else ""
                plan.actions.append(Action(kind=BOUNDS, resource=key, current=st.bounds, target=bounds_value(min(st.min, needed), needed),
                                           iam_action=IAM[BOUNDS], evidence=f"{why}; {current} provisioned = the auto scaling max: auto "
                                           f"scaling manages it, so its max goes up (a capacity set by hand would be overwritten){susp}"))
                continue
            if needed <= current:
                if current >= pol.dynamodb_max_capacity_units:
                    plan.cannot.append(f"{label}: already at the policy's maximum {pol.dynamodb_max_capacity_units} units; {HOT_PARTITION_ADVICE}")
                else:
                    plan.unchanged.append(f"{label}: {current} provisioned already covers {needed} ({why}): a hot partition or sub-minute "
                                          f"bursts, not capacity: {HOT_PARTITION_ADVICE}")
                continue
            new_units[(index, d)] = needed
            plan.notes.append(f"{label}: {current} -> {needed} units ({why})")
        if new_units != units:
            target = capacity_value(PROVISIONED, new_units[(None, "read")], new_units[(None, "write")],
                                    {i.name: (new_units[(i.name, "read")], new_units[(i.name, "write")]) for i in cap.indexes})
            plan.actions.append(Action(kind=CAPACITY, resource=name, current=cap.value, target=target, iam_action=IAM[CAPACITY],
                                       evidence="throttled: provisioned capacity = peak consumed x headroom for each throttled dimension "
                                                f"(policy dynamodb_prefer={prefer}); undo lowers it again, which AWS allows "
                                                f"{4} times a UTC day and then once an hour"))
    return plan


@task(name="plan-throttling-fixes", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, caps: dict[str, Any], facts: dict[str, dict[str, Any]],
              targets: Any, prefer: str, now: datetime) -> Plan:
    return decide(inv, identity, caps, facts, targets, prefer, now)


@aws_task(iam=["dynamodb:DescribeTable", "application-autoscaling:DescribeScalableTargets"], name="plan-undo", cache_policy=NO_CACHE)
def plan_undo(inv: System, identity: Identity, records: list[dict[str, Any]], run_id: str) -> Plan:
    return undo_with_limits(inv, RUNBOOK, identity, records, run_id)


# --- acting and verifying ---------------------------------------------------------------------


@aws_task(iam=["dynamodb:DescribeTable", "application-autoscaling:DescribeScalableTargets"], name="check-capacity-drift", cache_policy=NO_CACHE)
def check_drift(system: System, plan: Plan) -> None:
    drifted = drift(system, plan, APPLIERS)
    if drifted:
        raise Refused("the state changed since the plan was made; nothing was changed (run again to plan afresh): " + "; ".join(drifted))


@aws_task(iam=["dynamodb:DescribeTable", "dynamodb:UpdateTable", "application-autoscaling:DescribeScalableTargets",
               "application-autoscaling:RegisterScalableTarget"], name="apply-capacity", cache_policy=NO_CACHE, read_only=False)
def apply_changes(system: System, plan: Plan, approval: Approval, identity: Identity) -> tuple[list[Record], bool]:
    return apply_plan(system, plan, APPLIERS, approval, str(flow_run.get_id()) if flow_run.get_id() else None, identity)


def capacity_check(system: System, kind: str, resource: str, target: str) -> Any:
    def check() -> tuple[bool, str]:
        if kind == CAPACITY:
            cap = describe_capacity(system, resource)
            ok = cap.active and cap.value == target
            gsis = ", ".join(f"{i.name} {i.status}" for i in cap.indexes)
            return ok, f"{cap.status}{' (GSIs ' + gsis + ')' if gsis else ''}: {cap.value}"
        now = APPLIERS[kind].read(system, resource)
        return now == target, f"bounds {now}"
    return check


@aws_task(iam=["dynamodb:DescribeTable", "application-autoscaling:DescribeScalableTargets"], name="wait-capacity", cache_policy=NO_CACHE)
def verify_changes(system: System, records: list[Record], timeout_s: float) -> list[Record]:
    """Wait (bounded, with progress) until each table is ACTIVE with the new capacity, and each target has its bounds."""
    applied = [r for r in records if r.status == "applied"]
    seen = wait_until(RUNBOOK, {r.resource: capacity_check(system, r.kind, r.resource, r.after or "") for r in applied}, timeout_s)
    out = []
    for r in records:
        if r.status != "applied":
            out.append(r)
            continue
        ok, what, secs = seen[r.resource]
        out.append(r.model_copy(update={"status": "verified" if ok else "applied",
                                        "detail": f"read back after {secs:g} s: {what}" if ok else f"not confirmed after {timeout_s:g} s: {what}; "
                                                  "the next run checks it again"}))
    return out


@aws_task(iam=["cloudwatch:GetMetricData"], name="throttling-after", cache_policy=NO_CACHE)
def throttling_after(system: System, tables: list[str], changed_at: datetime) -> list[Finding]:
    """Throttle events since the change (CloudWatch publishes DynamoDB metrics a minute or more late)."""
    end = datetime.now(timezone.utc) + timedelta(seconds=1)
    usage = read_usage(system, [(t, None) for t in tables], changed_at, end)
    out = []
    for u in usage:
        n = u.throttles("read") + u.throttles("write")
        mins = (end - changed_at).total_seconds() / 60
        if n:
            out.append(Finding(check="throttling-after-change", resource=u.table, status=Status.WARN, value=n,
                               summary=f"{n:g} throttle events in the {mins:.1f} min since the change: look again, run this runbook again"))
        else:
            out.append(Finding(check="throttling-after-change", resource=u.table, status=Status.OK, value=0,
                               summary=f"no throttle events in the {mins:.1f} min since the change (metrics arrive 1-3 min late: "
                                       "run again in a few minutes to confirm)"))
    return out


def resolved(findings: list[Finding], records: list[Record]) -> list[Finding]:
    """A throttled table whose every change was verified is no longer a warning: its finding says what was done."""
    def table_of(r: Record) -> str:
        return r.resource if r.kind == CAPACITY else r.resource.split(" ")[0].split("/")[1]

    by_table: dict[str, list[Record]] = {}
    for r in records:
        by_table.setdefault(table_of(r), []).append(r)
    out = []
    for f in findings:
        recs = by_table.get(f.resource, [])
        if f.check == CHECK and f.status is Status.WARN and recs and all(r.status == "verified" for r in recs):
            f = f.model_copy(update={"status": Status.OK, "summary": "fixed by this run (verified: "
                                     + "; ".join(f"{r.before} -> {r.after}" for r in recs) + "); was " + f.summary})
        out.append(f)
    return out


def record_findings(records: list[Record]) -> list[Finding]:
    status = {"verified": Status.OK, "applied": Status.WARN}
    return [Finding(check="capacity-change", resource=r.resource, status=status.get(r.status, Status.CRIT),
                    summary=f"{r.kind} {r.before} -> {r.after}: {r.status}; {r.detail}".rstrip("; ")) for r in records]


# --- the runbook ----------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def remediate_dynamodb_throttling(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    tables: Annotated[Names, Param("Only these tables of the system (a list; a comma-separated string on the shell); "
                                   "empty: every table")] = [],  # noqa: B006 (validated into a new list)
    prefer: Annotated[Literal["inventory", "on-demand", "provisioned"], Param(
        "What a throttled provisioned table is moved to: on-demand, or more provisioned units; inventory: the inventory's "
        "remediation.dynamodb_prefer")] = "inventory",
    window_minutes: Annotated[int, Param("How far back throttle events and consumed capacity are read, in minutes", ge=5, le=1440)] = 60,
    settle_timeout_s: SettleTimeout = 0,
    undo_run: UndoRun = "",
) -> Any:
    """Find the system's throttled DynamoDB tables and plan the capacity they need (on-demand, or more units/auto scaling bounds).

    dry_run (default) ends after the plan. Otherwise the run asks for approval
    (a form on the paused run in the UI; the shell's prompt or --yes), then changes the tables,
    waits until they are ACTIVE with the new capacity, reads throttle events
    since the change, records and notifies. ``tables``: only these. ``prefer``: overrides the inventory's
    ``remediation.dynamodb_prefer`` for this run. ``undo_run``: put back what
    that earlier run of this runbook changed.
    """
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
    choice = inv.remediation.dynamodb_prefer if prefer == "inventory" else prefer
    with session:
        identity = session.identity()
        if undo_run:
            plan = plan_undo.submit(inv, identity, read_records.submit(inv).result(), undo_run).result()
        else:
            found = future_value(discover.submit(inv))
            if isinstance(found, BaseException) or found.error:
                reason = aws.describe_error(found) if isinstance(found, BaseException) else found.error
                session.report.findings.append(unknown("discovery", f"tags {inv.discovery.tags}", f"{reason}; only the inventory's tables were checked"))
                found = Discovered()
            names, strangers = wanted_tables(inv, found, tables)
            if strangers:
                raise Refused(f"not tables of {inv.name}: {', '.join(strangers)} (its tables: {', '.join(table_names(inv, found)) or 'none'})")
            now = datetime.now(timezone.utc)
            start = now - timedelta(minutes=window_minutes)
            caps_f = read_tables.submit(inv, names)
            targets_f = read_targets.submit(inv, caps_f)
            usage_f = read_table_usage.submit(inv, caps_f, start, now)
            caps, targets, usage = future_value(caps_f), future_value(targets_f), future_value(usage_f)
            if isinstance(caps, BaseException):
                raise caps
            facts: dict[str, dict[str, Any]] = {}
            for name in names:
                finding, fact = judge_table(name, caps[name], usage, start, window_minutes)
                session.report.findings.append(finding)
                if fact:
                    facts[name] = fact
            if not names:
                session.report.findings.append(Finding(check=CHECK, resource=inv.name, status=Status.OK, value=0,
                                                       summary="no DynamoDB table in the inventory or found by tag: nothing to check"))
            if isinstance(targets, BaseException):
                session.report.findings.append(unknown("autoscaling-targets", inv.name, aws.describe_error(targets)))
            plan = make_plan.submit(inv, identity, caps, facts, targets, choice, now).result()
        if session.gate(plan):
            settle = settle_timeout_s or inv.mutations.settle_timeout_s
            session.lease(inv.mutations.lease_ttl_s + settle)
            check_drift.submit(inv, plan).result()
            changed_at = datetime.now(timezone.utc)
            done, ok = apply_changes.submit(inv, plan, session.approval, identity).result()
            if ok:
                done = verify_changes.submit(inv, done, settle).result()
                tables_changed = sorted({a.resource for a in plan.actions if a.kind == CAPACITY} |
                                        {a.resource.split(" ")[0].split("/")[1] for a in plan.actions if a.kind == BOUNDS})
                after = future_value(throttling_after.submit(inv, tables_changed, changed_at))
                session.report.findings += (after if isinstance(after, list)
                                            else [unknown("throttling-after-change", t, aws.describe_error(after)) for t in tables_changed])
            session.record(done)
            session.report.findings = resolved(session.report.findings, done)
            session.report.findings += record_findings(done)
            session.done(ok and all(r.status in ("verified", "applied") for r in done))
            session.notify(session.report.outcome, [f"{r.resource}: {r.kind} {r.before} -> {r.after}: {r.status} {r.detail}".strip() for r in done])
    return session.finish()


TASKS = [discover, read_tables, read_targets, read_table_usage, plan_undo, check_drift, apply_changes, verify_changes,
         throttling_after] + SESSION_TASKS
