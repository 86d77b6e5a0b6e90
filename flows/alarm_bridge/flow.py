"""alarm-bridge: CloudWatch alarms start their runbooks; scheduled runs that did not happen are alerts.

A frequent, cheap, read-only flow (its deployment: ``flows.alarm_bridge.triggers.bridge_deployment()``,
every minute). One run covers every system in ``systems/`` (or ``systems`` /
``system``) concurrently:

1. Alarms -> runbooks. One paginated DescribeAlarms(StateValue=ALARM) per
   region, shared by the systems of that region, then per system: the alarms its
   ``alarms.name_filters`` match whose name matches a glob of ``alarms.runbooks``.
   A new ALARM transition (its time differs from the one the bridge remembers
   in the Prefect Variable ``opsbook_bridge_alarms_<system>``) is sent once as the
   Prefect event ``opsbook.alarm.firing``; the runbook's deployment carries
   ``triggers_for(system, runbook)`` and Prefect's trigger service starts it with
   the alarm's details as parameters. An alarm that stays in ALARM is not sent
   again; OK then ALARM again is. A transition older than ``max_age_minutes``
   that the bridge never saw (first poll, lost memory, bridge down) is a WARN
   finding with the command to start the runbook by hand, not a late start.
   Details, and why a Variable and DescribeAlarms: ``prefect_api.py``; why a
   confirmed POST of the event: ``opsbook/events.py``; the triggers: ``triggers.py``.

2. Missed scheduled runs. The deployments tagged ``opsbook`` that have cron
   schedules, and their runs: a run still Scheduled/Late/Pending more than
   ``grace_minutes`` after its expected start, or a fire time of the schedule
   (cron + time zone, computed like Prefect's scheduler) since the previous
   check with no run at all, is a CRIT finding "missed scheduled run", notified
   once to the system's SNS topic (the keys notified are kept in the Variable
   ``opsbook_bridge_schedules_all``). A paused deployment or inactive schedule
   is a WARN. Why a check here rather than a Prefect automation, and the
   automation that watches the bridge itself: ``prefect_api.ensure_missed_run_automation``.

Findings: ``alarm-transition`` (OK sent/already sent, WARN too old or no such
runbook, CRIT the event was refused), ``alarm-memory``, ``alarms-read``
(UNKNOWN when a region could not be read), ``missed-scheduled-run``. A CRIT
finding ends the run Failed.

API calls a poll: 1 DescribeAlarms a region (+ pages), none for a system that
routes no alarm; 1 SNS Publish a system with newly missed runs. Prefect API: a
Variable read a system, one deployments read and two small flow-run reads.

What a poll writes to the Prefect server, kept small because the bridge runs
every minute on the same server (often SQLite) the UI reads from during an
incident (``python -m bench.bridge_ui`` measures it): 3 task runs (read-alarms
for every region, fire-transitions for every system, publish-report), 4 with
the schedule check, whatever the number of systems, regions and alarms (plus
one notify-missed-runs a system with newly missed runs); one POST for all of
the poll's events; a system's memory Variable only when what it remembers
changed (a transition sent, an alarm that left ALARM), the schedule memory only
when it notified someone or every ``CHECKED_UNTIL_EVERY``; the report's two
artifacts.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Failed

from flows.alarm_bridge.judge import (
    EVENT,
    RUNBOOK,
    BridgeMemory,
    MissedRun,
    Transition,
    held_finding,
    judge_schedules,
    missed_message,
    none_routed,
    nothing_to_bridge,
    refused_finding,
    select_transitions,
    sent_finding,
)
from flows.alarm_bridge.prefect_api import (
    ScheduleMemory,
    event_id,
    fire_times,
    load_memory,
    load_schedule_memory,
    payload,
    read_schedules,
    save_memory,
    save_schedule_memory,
    variable_name,
)
from opsbook import aws
from opsbook.events import send_events
from opsbook.findings import Finding, Status, overall, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, known_systems, load_system
from opsbook.params import Names, Param
from opsbook.report import RunReport, publish_report, run_url
from tasks.cloudwatch import Alarm, read_alarms


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _registered(runbook: str) -> bool:
    from opsbook import registry

    return runbook in registry.RUNBOOKS


@aws_task(iam=["cloudwatch:DescribeAlarms"], name="read-alarms", cache_policy=NO_CACHE, retries=0)
def read_regions(regions: list[str]) -> dict[str, list[Alarm] | str]:
    """Every region's alarms in ALARM, read concurrently in ONE task (one task run a poll, not one a region: each task
    run is a row and three states in the Prefect server's database, every minute): region -> its alarms, or why they
    could not be read (after one more try on a transient error, as a read task's retry would)."""
    out: dict[str, list[Alarm] | str] = {}
    for region, alarms, err in aws.parallel(_read_region, regions):
        out[region] = alarms if err is None else aws.describe_error(err)
    return out


TRANSIENT = {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"}


def _read_region(region: str) -> list[Alarm]:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import ReadTimeoutError

    try:
        return read_alarms.fn(region)
    except (BotoConnectionError, ReadTimeoutError):
        pass
    except Exception as exc:
        if aws.error_code(exc) not in TRANSIENT:
            raise
    return read_alarms.fn(region)


def _event(system: System, t: Transition) -> tuple[str, dict[str, str], dict[str, Any], Any, datetime]:
    a = t.alarm
    resource = {"prefect.resource.id": f"opsbook.alarm.{system.name}.{a.name}", "prefect.resource.name": a.name,
                "opsbook.system": system.name, "opsbook.runbook": t.runbook}
    return EVENT, resource, payload(system, a, t.runbook), event_id(system.name, a.name, a.state_time), a.state_time


def _send_all(events: list[tuple[str, dict[str, str], dict[str, Any], Any, datetime]]) -> str | None:
    """Send every new transition's event in one request: None when the API accepted them, else why not."""
    try:
        send_events(events)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@task(name="fire-transitions", cache_policy=NO_CACHE, retries=0)
def fire_transitions(batch: list[tuple[System, list[Alarm]]], max_age_minutes: float, now: datetime | None = None) -> dict[str, Any]:
    """For every system of the batch (one task run a poll): one event per new ALARM transition (all in one request),
    remembered; findings for each routed alarm. A system's memory is written only when it changed."""
    now = now or utcnow()
    findings: list[Finding] = []
    plans: list[tuple[System, BridgeMemory, bool, list[Transition], BridgeMemory]] = []
    for system, alarms in batch:
        try:
            memory, existed = load_memory(system.name)
        except Exception as exc:  # without the memory every poll would start the runbooks again: refuse to send
            findings.append(unknown("alarm-memory", system.name, f"Prefect Variable {variable_name('alarms', system.name)} could not be "
                                    f"read ({type(exc).__name__}: {exc}); no event sent until it can (check the Prefect API)"))
            continue
        transitions, keep = select_transitions(system, alarms, memory, now, timedelta(minutes=max_age_minutes))
        plans.append((system, memory, existed, transitions, keep))
    events = {(p[0].name, t.alarm.name): _event(p[0], t) for p in plans for t in p[3] if t.fate == "send"}
    refused = _send_all(list(events.values())) if events else None
    sent_at = utcnow()
    sent: list[dict[str, Any]] = []
    for system, memory, existed, transitions, keep in plans:
        for t in transitions:
            if t.fate != "send":
                findings.append(held_finding(t, now, existed, max_age_minutes, system.name))
            elif refused is not None:
                findings.append(refused_finding(t, refused))
            else:
                eid = str(events[(system.name, t.alarm.name)][3])
                findings.append(sent_finding(t, eid, events[(system.name, t.alarm.name)][2]["priority"], _registered(t.runbook), sent_at))
                keep.alarms[t.alarm.name] = t.alarm.state_time.astimezone(timezone.utc).isoformat()
                sent.append({"system": system.name, "alarm": t.alarm.name, "runbook": t.runbook, "event_id": eid,
                             "state_time": t.alarm.state_time.isoformat()})
        findings += _remember(system, memory, existed, keep)
        if not transitions:
            findings.append(none_routed(system))
    return {"sent": sent, "findings": findings}


def _remember(system: System, memory: BridgeMemory, existed: bool, keep: BridgeMemory) -> list[Finding]:
    """Save the system's memory when what it remembers changed (or it had none): no write on a quiet poll."""
    if existed and keep.alarms == memory.alarms:
        return []
    try:
        save_memory(system.name, keep)
    except Exception as exc:
        return [Finding(check="alarm-memory", resource=system.name, status=Status.WARN,
                        summary=f"could not save {variable_name('alarms', system.name)} ({type(exc).__name__}: {exc}); "
                                "the next poll sends these transitions again with the same event ids, which Prefect drops")]
    return []


@aws_task(iam=["sns:Publish"], name="notify-missed-runs", cache_policy=NO_CACHE, read_only=False)
def notify_missed(system: System, missed: list[MissedRun]) -> dict[str, Any]:
    """One SNS message for the system listing its newly missed runs."""
    from opsbook.notify import publish

    return publish(system, *missed_message(system.name, missed))


def _failure(fut: PrefectFuture) -> str:
    exc = fut.state.result(raise_on_failure=False)
    return aws.describe_error(exc) if isinstance(exc, BaseException) else str(fut.state.message)


def bridge_alarms(invs: list[System], max_age_minutes: float) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Read every region once (one task), then every system's transitions (one task): the DAG's alarm branch."""
    findings: list[Finding] = []
    routed: list[System] = []
    for s in invs:
        nothing = nothing_to_bridge(s)
        if nothing is not None:
            findings.append(nothing)
        else:
            routed.append(s)
    if not routed:
        return findings, []
    read = read_regions.submit(sorted({s.region for s in routed}))
    read.wait()
    regions: dict[str, list[Alarm] | str] = read.result() if read.state.is_completed() else {}
    batch: list[tuple[System, list[Alarm]]] = []
    for s in routed:
        got = regions.get(s.region, _failure(read) if not read.state.is_completed() else "not read")
        if isinstance(got, str):
            findings.append(unknown("alarms-read", s.name, f"DescribeAlarms in {s.region}: {got}; no alarm could start a runbook"))
        else:
            batch.append((s, got))
    if not batch:
        return findings, []
    fired = fire_transitions.submit(batch, max_age_minutes)
    fired.wait()
    if not fired.state.is_completed():
        return findings + [unknown("alarm-transition", s.name, _failure(fired)) for s, _ in batch], []
    out = fired.result()
    return findings + out["findings"], out["sent"]


def judge_and_remember(scheduled: dict[str, Any], memory: ScheduleMemory, now: datetime, window_start: datetime,
                       grace_minutes: float) -> dict[str, Any]:
    """The schedules' findings, the missed runs and those not notified yet (pure computing: in the flow, no task run)."""
    findings, missed = judge_schedules(scheduled["deployments"], scheduled["runs"], now, window_start,
                                       timedelta(minutes=grace_minutes), fire_times)
    fresh = [m for m in missed if m.key not in memory.notified]
    return {"findings": findings, "missed": missed, "fresh": fresh}


# The schedule memory's "checked until" is written at most this often when nothing else in it changed: a poll that
# notified nobody re-judges at most this much more of the window next time (idempotent: notified keys are kept),
# instead of writing the Variable every minute.
CHECKED_UNTIL_EVERY = timedelta(minutes=15)


def memory_changed(memory: ScheduleMemory, notified_before: dict[str, int], cutoff: datetime) -> bool:
    """Whether the schedule memory must be written this poll: something was notified, or "checked until" lags behind."""
    if memory.notified != notified_before or not memory.checked_until:
        return True
    return cutoff - datetime.fromisoformat(memory.checked_until) >= CHECKED_UNTIL_EVERY


def watch_schedules(systems: list[str] | None, grace_minutes: float, lookback_hours: float, notify: bool) -> tuple[list[Finding], dict[str, Any]]:
    """Missed scheduled runs: read, judge, notify each new one once, remember (the DAG's schedule branch)."""
    now = utcnow()
    lookback = timedelta(hours=lookback_hours)
    cutoff = now - timedelta(minutes=grace_minutes)
    try:
        memory = load_schedule_memory()
    except Exception as exc:
        return [unknown("missed-scheduled-run", "(opsbook deployments)", f"Prefect Variable could not be read ({type(exc).__name__}: {exc})")], {}
    window_start = cutoff - lookback
    if memory.checked_until:
        window_start = max(window_start, min(datetime.fromisoformat(memory.checked_until), cutoff))
    read = read_schedules.submit(window_start, now - lookback, systems)
    read.wait()
    if not read.state.is_completed():
        return [unknown("missed-scheduled-run", "(opsbook deployments)", f"the Prefect API could not be read: {_failure(read)}")], {}
    out = judge_and_remember(read.result(), memory, now, window_start, grace_minutes)
    notified_before = dict(memory.notified)
    findings: list[Finding] = out["findings"]
    fresh: list[MissedRun] = out["fresh"]
    notification: dict[str, Any] = {"kind": None, "sent": [], "errors": []}
    by_system: dict[str | None, list[MissedRun]] = {}
    for m in fresh:
        by_system.setdefault(m.system, []).append(m)
    notes = {}
    if notify:
        for name, items in by_system.items():
            if name is None:
                notification["errors"].append(f"{len(items)} missed run(s) of deployments with no known system: nobody to notify "
                                              "(give the deployment a `system` parameter or tag)")
                continue
            notes[name] = (items, notify_missed.submit(load_system(name), items))
    for name, (items, fut) in notes.items():
        fut.wait()
        res = fut.result() if fut.state.is_completed() else {"sent": [], "errors": [_failure(fut)]}
        notification["sent"] += res["sent"]
        notification["errors"] += [f"{name}: {e}" for e in res["errors"]]
        if res["sent"] and not res["errors"]:
            notification["kind"] = "alert"
            for m in items:
                memory.notified[m.key] = int(now.timestamp())
    notification["missed"] = [m.model_dump(mode="json") for m in fresh]
    if not memory_changed(memory, notified_before, cutoff):
        return findings, notification
    memory.checked_until = cutoff.isoformat()
    try:
        save_schedule_memory(memory, keep_after=now - 2 * lookback)
    except Exception as exc:
        findings.append(Finding(check="missed-scheduled-run", resource="(bridge memory)", status=Status.WARN,
                                summary=f"could not save the bridge's schedule memory ({type(exc).__name__}: {exc}); "
                                        "the next poll checks the same window again and may notify again"))
    return findings, notification


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=300)
def alarm_bridge(
    systems: Annotated[Names, Param("Only these systems (inventory names); empty: every system in systems/")] = [],  # noqa: B006
    system: Annotated[str, Param("Only this one system; empty: see systems")] = "",
    max_age_minutes: Annotated[float, Param("An ALARM transition older than this that the bridge never saw is reported, not "
                                            "acted on (no late start), in minutes", ge=0, le=1440)] = 30.0,
    check_schedules: Annotated[bool, Param("Also check that the scheduled runs of the opsbook deployments happened")] = True,
    grace_minutes: Annotated[float, Param("A scheduled run not started this long after its time is missed, in minutes",
                                          gt=0, le=1440)] = 10.0,
    lookback_hours: Annotated[float, Param("How far back missed scheduled runs are looked for on the first check, in hours",
                                           gt=0, le=24 * 14)] = 24.0,
    notify: Annotated[bool, Param("Alert the system's channels once per newly missed scheduled run")] = True,
) -> Any:
    """Send one Prefect event per new ALARM transition routed to a runbook, and alert on missed scheduled runs. Never mutates AWS."""
    started = time.monotonic()
    logger = get_run_logger()
    names = [system] if system else (systems or known_systems())
    invs = [load_system(n) for n in names]
    calls = aws.start_call_log()

    findings, sent = bridge_alarms(invs, max_age_minutes)
    notification = None
    if check_schedules:
        more, notification = watch_schedules(None if not (system or systems) else [s.name for s in invs], grace_minutes,
                                             lookback_hours, notify)
        findings += more

    report = RunReport(
        runbook=RUNBOOK, system=names[0] if len(names) == 1 else ("all" if not systems else f"{len(names)}-systems"), status=overall(findings), findings=findings,
        region=",".join(sorted({s.region for s in invs})), api_calls=calls.total, api_calls_by_operation=calls.by_operation(),
        api_retries=calls.retries_total, api_retries_by_operation=calls.retries_by_operation(),
        duration_s=round(time.monotonic() - started, 2), flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None,
        flow_run_url=run_url(), notification=(notification or None), undeclared_iam_actions=sorted(calls.undeclared),
    )
    for e in sent:
        logger.info("alarm %s of %s -> %s (event %s)", e["alarm"], e["system"], e["runbook"], e["event_id"])
    publish_report.submit(report).result()
    logger.info(report.headline())
    if report.status is Status.CRIT:
        return Failed(message=report.headline(), data=report)
    return report


TASKS = [read_regions, fire_transitions, read_schedules, notify_missed]
