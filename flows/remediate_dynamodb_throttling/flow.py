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

from flows.remediate_dynamodb_throttling import judge as j
from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Applier, Identity, Plan, Refused
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records, steps_policy
from opsbook.mutation.verify import change_findings
from opsbook.params import ApprovalTimeout, Approver, DryRun, Names, Param, SettleTimeout, SystemName, UndoRun
from opsbook.resources import discover, discovered_or_inventory
from tasks.autoscaling import BOUNDS_KIND, bounds_settled, read_bounds, read_table_targets, set_bounds
from tasks.cloudwatch import read_table_usage, read_usage
from tasks.dynamodb import CAPACITY_KIND, TableCapacity, capacity_settled, read_capacities, read_capacity, set_capacity, table_names, undo_capacity_plan

RUNBOOK = j.RUNBOOK
CHECK = j.CHECK
READ_DEADLINE_S = 60.0
APPLIERS = {CAPACITY_KIND: Applier(read=read_capacity, apply=set_capacity, settled=capacity_settled),
            BOUNDS_KIND: Applier(read=read_bounds, apply=set_bounds, settled=bounds_settled)}


# --- collecting, judging, planning --------------------------------------------------------------


@task(name="plan-throttling-fixes", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, caps: dict[str, Any], facts: dict[str, dict[str, Any]],
              targets: Any, prefer: str, now: datetime) -> Plan:
    return j.decide(inv, identity, caps, facts, targets, prefer, now)


@aws_task(iam=["dynamodb:DescribeTable", "application-autoscaling:DescribeScalableTargets"], name="plan-undo", cache_policy=NO_CACHE)
def plan_undo(inv: System, identity: Identity, records: list[dict[str, Any]], run_id: str) -> Plan:
    return undo_capacity_plan(inv, RUNBOOK, identity, records, run_id, APPLIERS, j.IAM)


def plan_tables(inv: System, session: MutationSession, identity: Identity, tables: list[str], prefer: str, window_minutes: int) -> Plan:
    """The system's tables (``tables``: only these) -> capacity, auto scaling targets and usage, concurrently -> findings -> plan."""
    found, gaps = discovered_or_inventory(inv, future_value(discover.submit(inv)), "only the inventory's tables were checked")
    session.report.findings += gaps
    names, strangers = j.wanted_tables(inv, found, tables)
    if strangers:
        raise Refused(f"not tables of {inv.name}: {', '.join(strangers)} (its tables: {', '.join(table_names(inv, found)) or 'none'})")
    now = datetime.now(timezone.utc)
    start = now - timedelta(minutes=window_minutes)
    caps = read_capacities.submit(inv, names, aws.Deadline(READ_DEADLINE_S)).result()
    indexes = {n: [i.name for i in c.indexes] for n, c in caps.items() if isinstance(c, TableCapacity)}
    targets_f = read_table_targets.submit(inv, indexes)
    usage_f = read_table_usage.submit(inv, j.usage_entities(names, caps), start, now)
    targets, usage = future_value(targets_f), future_value(usage_f)
    findings, facts = j.judge_tables(inv.name, names, caps, _error(usage), start, window_minutes)
    session.report.findings += findings
    if isinstance(targets, BaseException):
        session.report.findings.append(unknown("autoscaling-targets", inv.name, aws.describe_error(targets)))
    return make_plan.submit(inv, identity, caps, facts, _error(targets), prefer, now).result()


def _error(value: Any) -> Any:
    """A read that failed as a whole as its error text (the judge's input), else the value."""
    return aws.describe_error(value) if isinstance(value, BaseException) else value


# --- acting and verifying ---------------------------------------------------------------------






@aws_task(iam=["cloudwatch:GetMetricData"], name="throttling-after", cache_policy=NO_CACHE)
def throttling_after(system: System, tables: list[str], changed_at: datetime) -> list:
    """Throttle events since the change (CloudWatch publishes DynamoDB metrics a minute or more late)."""
    end = datetime.now(timezone.utc) + timedelta(seconds=1)
    return j.after_change(read_usage(system, [(t, None) for t in tables], changed_at, end), (end - changed_at).total_seconds() / 60)


def act(inv: System, session: MutationSession, identity: Identity, plan: Plan, settle_timeout_s: int) -> None:
    """Leases, drift check, apply, wait until ACTIVE with the new capacity, throttles since, record, notify."""
    settle = settle_timeout_s or inv.mutations.settle_timeout_s
    changed_at = datetime.now(timezone.utc)
    done, ok = session.act(identity)
    if ok:
        done = session.settle(done, settle, "not confirmed after {timeout} s: {what}; the next run checks it again")
        tables_changed = j.changed_tables(plan)
        after = future_value(throttling_after.submit(inv, tables_changed, changed_at))
        session.report.findings += (after if isinstance(after, list)
                                    else [unknown("throttling-after-change", t, aws.describe_error(after)) for t in tables_changed])
    session.record(done)
    session.report.findings = j.resolved(session.report.findings, done)
    session.report.findings += change_findings("capacity-change", done)
    session.conclude(done, ok and all(r.status in ("verified", "applied") for r in done))


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
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s, appliers=APPLIERS)
    choice = inv.remediation.dynamodb_prefer if prefer == "inventory" else prefer
    with session:
        identity = session.identity()
        if undo_run:
            plan = plan_undo.submit(inv, identity, read_records.submit(inv).result(), undo_run).result()
        else:
            plan = plan_tables(inv, session, identity, tables, choice, window_minutes)
        if session.gate(plan):
            act(inv, session, identity, plan, settle_timeout_s)
    return session.finish()


TASKS = [discover, read_capacities, read_table_targets, read_table_usage, plan_undo, steps_policy(APPLIERS),
         throttling_after] + SESSION_TASKS
