"""alarm-bridge's judgement (pure: no AWS, no Prefect API, no clock): which alarm transitions of a system start
which runbook and what each poll reports about them; which scheduled runs were missed (CRIT) and the message that
says so. The Prefect side (memory, events, deployments, fire times) is ``prefect_api.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel, Field

from opsbook.findings import Finding, Status
from opsbook.inventory import System, name_matches
from opsbook.masking import mask
from tasks.cloudwatch import Alarm

EVENT = "opsbook.alarm.firing"
RUNBOOK = "alarm-bridge"


# --- alarms -> runbooks -----------------------------------------------------------------------------------


def routed_runbook(system: System, alarm_name: str) -> str | None:
    """The runbook an alarm of the system starts (first matching glob of alarms.runbooks), if any."""
    if not system.alarms.matches(alarm_name):
        return None
    for pattern, runbook in system.alarms.runbooks.items():
        if name_matches(pattern, alarm_name):
            return runbook
    return None


def table_names(system: System, alarm: Alarm) -> list[str]:
    """The DynamoDB tables an alarm is about (its TableName dimension), empty when it names none
    (a runbook's ``tables`` parameter: empty means every table; null would not pass the deployment's schema)."""
    t = alarm.dimensions.get("TableName")
    return [t] if t else []


class BridgeMemory(BaseModel):
    """What the bridge remembers per system: alarm name -> transition time already sent (or judged too old)."""

    alarms: dict[str, str] = Field(default_factory=dict)
    polled_at: str | None = None


class Transition(BaseModel):
    system: str
    alarm: Alarm
    runbook: str
    fate: str  # "send" | "seen" | "stale"


def select_transitions(system: System, alarms: list[Alarm], memory: BridgeMemory, now: datetime,
                       max_age: timedelta) -> tuple[list[Transition], BridgeMemory]:
    """Which of the region's alarms in ALARM are new transitions of this system that start a runbook.

    Returns every routed alarm with its fate and the memory to keep: the routed
    alarms still in ALARM with their transition times (an alarm that left ALARM
    is forgotten, so its next ALARM is new even if the bridge never saw the OK)."""
    out: list[Transition] = []
    keep: dict[str, str] = {}
    for a in sorted(alarms, key=lambda a: a.name):
        rb = routed_runbook(system, a.name)
        if rb is None:
            continue
        stamp = a.state_time.astimezone(timezone.utc).isoformat()
        if memory.alarms.get(a.name) == stamp:
            fate = "seen"
        elif now - a.state_time > max_age:
            fate = "stale"
        else:
            fate = "send"
        out.append(Transition(system=system.name, alarm=a, runbook=rb, fate=fate))
        if fate != "send":
            keep[a.name] = stamp  # "send" is remembered only once the event was accepted
    return out, BridgeMemory(alarms=keep, polled_at=now.isoformat())


def nothing_to_bridge(system: System) -> Finding | None:
    """A clear finding for a system whose inventory routes no alarm (no API call is made for it)."""
    if not system.alarms.runbooks:
        return Finding(check="alarm-transition", resource=system.name, status=Status.OK, value=0,
                       summary="nothing to check: the inventory's alarms.runbooks routes no alarm to a runbook")
    if not system.alarms.name_filters:
        return Finding(check="alarm-transition", resource=system.name, status=Status.OK, value=0,
                       summary="nothing to check: the inventory's alarms.name_filters names none of the system's alarms")
    return None


# --- missed scheduled runs ----------------------------------------------------------------------------------


class ScheduleSpec(BaseModel):
    cron: str
    timezone: str = "UTC"
    active: bool = True
    day_or: bool = True


class WatchedDeployment(BaseModel):
    id: str
    name: str
    flow_name: str = ""
    system: str | None = None
    paused: bool = False
    created: datetime
    schedules: list[ScheduleSpec]


class SeenRun(BaseModel):
    id: str
    name: str
    deployment_id: str
    expected_start: datetime | None
    state_type: str
    state_name: str
    auto_scheduled: bool = False


class MissedRun(BaseModel):
    key: str
    deployment: str
    system: str | None
    kind: str  # "stuck" (run exists, never started) | "missing" (no run for a fire time)
    expected: datetime
    summary: str
    flow_run_id: str | None = None


def _key(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


FireTimes = Callable[[ScheduleSpec, datetime, datetime], list[datetime]]  # (spec, after, until] -> fire times


def judge_schedules(deps: list[WatchedDeployment], runs: list[SeenRun], now: datetime, window_start: datetime,
                    grace: timedelta, fire_times: FireTimes) -> tuple[list[Finding], list[MissedRun]]:
    """Findings per deployment, and the missed runs (stuck or missing).

    - stuck: a run of the deployment still Scheduled/Late/Pending (or waiting for a
      concurrency slot) more than ``grace`` after its expected start.
    - missing: a fire time of an active schedule in (window_start, now - grace],
      after the deployment was created, with no run expected at that time (the
      scheduler creates runs ahead of time with expected_start_time = fire time).
    A paused deployment or an inactive schedule is a WARN (nothing will run),
    not a missed run. ``fire_times`` computes a schedule's fire times (as Prefect's scheduler does)."""
    if not deps:
        return [Finding(check="missed-scheduled-run", resource="(opsbook deployments)", status=Status.OK, value=0,
                        summary="nothing to check: no deployment tagged opsbook has a schedule")], []
    findings: list[Finding] = []
    missed: list[MissedRun] = []
    by_dep: dict[str, list[SeenRun]] = {}
    for r in runs:
        by_dep.setdefault(r.deployment_id, []).append(r)
    for d in sorted(deps, key=lambda d: d.name):
        found, problems = judge_deployment(d, by_dep.get(d.id, []), now, window_start, grace, fire_times)
        findings += found
        missed += problems
    return findings, missed


def _stuck(d: WatchedDeployment, r: SeenRun, now: datetime) -> MissedRun:
    assert r.expected_start is not None
    late = (now - r.expected_start).total_seconds() / 60
    what = "scheduled run" if r.auto_scheduled else "run"
    return MissedRun(key=_key("stuck", r.id), deployment=d.name, system=d.system, kind="stuck", expected=r.expected_start,
                     flow_run_id=r.id, summary=f"{what} {r.name} ({r.id}) is still {r.state_name or r.state_type} "
                     f"{late:.0f} min after its expected start {r.expected_start.isoformat(timespec='minutes')}: "
                     "no worker or `opsbook serve` picked it up")


def judge_deployment(d: WatchedDeployment, mine: list[SeenRun], now: datetime, window_start: datetime, grace: timedelta,
                     fire_times: FireTimes) -> tuple[list[Finding], list[MissedRun]]:
    """One deployment's findings (paused / inactive WARN, each missed run CRIT, else on time OK) and missed runs."""
    cutoff = now - grace
    findings: list[Finding] = []
    problems = [_stuck(d, r, now) for r in mine
                if r.state_type in ("SCHEDULED", "PENDING") and r.expected_start and r.expected_start <= cutoff]
    if d.paused:
        findings.append(Finding(check="missed-scheduled-run", resource=d.name, status=Status.WARN, value=0,
                                summary="the deployment is paused: its schedule creates no runs (resume it in the UI, or "
                                        "`prefect deployment resume`; `prefect.serve` pauses deployments when it stops unless pause_on_shutdown=False)"))
    expected = 0
    for spec in d.schedules:
        if not spec.active:
            findings.append(Finding(check="missed-scheduled-run", resource=d.name, status=Status.WARN, value=0,
                                    summary=f"schedule {spec.cron} ({spec.timezone}) is inactive: it creates no runs"))
            continue
        if d.paused:
            continue
        for t in fire_times(spec, max(window_start, d.created), cutoff):
            expected += 1
            if not any(r.expected_start and abs((r.expected_start - t).total_seconds()) < 1 for r in mine):
                problems.append(MissedRun(key=_key("missing", d.id, t.isoformat()), deployment=d.name, system=d.system, kind="missing",
                                          expected=t, summary=f"no run was created for the {t.isoformat(timespec='minutes')} fire time of "
                                          f"{spec.cron} ({spec.timezone}): the Prefect scheduler did not run or the schedule was changed"))
    for p in problems:
        findings.append(Finding(check="missed-scheduled-run", resource=d.name, status=Status.CRIT, value=1, summary=p.summary,
                                details={"kind": p.kind, "expected": p.expected.isoformat(), "flow_run_id": p.flow_run_id,
                                         "system": d.system, "key": p.key}))
    if not problems and not d.paused:
        findings.append(Finding(check="missed-scheduled-run", resource=d.name, status=Status.OK, value=0,
                                summary=f"on time: {expected} fire time(s) since {max(window_start, d.created).isoformat(timespec='minutes')} "
                                        f"each have a run, none waiting more than {grace.total_seconds() / 60:g} min"))
    return findings, problems


def missed_message(system: str, missed: list[MissedRun]) -> tuple[str, str]:
    """(subject, body) of the one message a system gets for its newly missed runs."""
    subject = f"[opsbook CRIT] {len(missed)} missed scheduled run(s) of {system}"
    body = "\n".join(f"- {m.deployment}: {m.summary}" for m in missed)
    return subject, body + "\n\nSee the alarm-bridge run's report in the Prefect UI."


# --- what a poll says about each routed alarm --------------------------------------------------------------


def _since(a: Alarm) -> str:
    return f"{a.name} (in ALARM since {a.state_time.isoformat(timespec='seconds')})"


def held_finding(t: Transition, now: datetime, existed: bool, max_age_minutes: float, system: str) -> Finding:
    """A routed alarm not sent this poll: already sent for this transition (OK), or too old to start late (WARN)."""
    a = t.alarm
    if t.fate == "seen":
        return Finding(check="alarm-transition", resource=a.name, status=Status.OK, value=0,
                       summary=f"still in ALARM since {a.state_time.isoformat(timespec='seconds')}: "
                               f"{t.runbook} was already started for this transition")
    age = (now - a.state_time).total_seconds() / 60
    return Finding(check="alarm-transition", resource=a.name, status=Status.WARN, value=0,
                   summary=mask(f"{_since(a)} went into ALARM {age:.0f} min ago, before the bridge "
                                f"{'last remembered it' if existed else 'had any memory (first poll or new server)'}; "
                                f"older than {max_age_minutes:g} min, so {t.runbook} was NOT started. "
                                f"Start it by hand: opsbook run {t.runbook} --system {system}")[:500])


def refused_finding(t: Transition, error: str) -> Finding:
    return Finding(check="alarm-transition", resource=t.alarm.name, status=Status.CRIT, value=0,
                   summary=mask(f"{_since(t.alarm)}: the event that starts {t.runbook} was not accepted by the Prefect API "
                                f"({error}); the next poll sends it again")[:500])


def sent_finding(t: Transition, event_id: str, priority: str | None, registered: bool, sent_at: datetime) -> Finding:
    """Sent: OK, or WARN when no runbook of that name is registered (no deployment can be listening)."""
    note = "" if registered else f" (no runbook named {t.runbook!r} is registered: no deployment can be listening)"
    return Finding(check="alarm-transition", resource=t.alarm.name, status=Status.WARN if note else Status.OK, value=1,
                   summary=mask(f"{_since(t.alarm)}: event {EVENT} sent -> {t.runbook}{note}")[:500],
                   details={"event_id": event_id, "runbook": t.runbook, "priority": priority, "sent_at": sent_at.isoformat()})


def none_routed(system: System) -> Finding:
    return Finding(check="alarm-transition", resource=system.name, status=Status.OK, value=0,
                   summary=f"no alarm in ALARM routes to a runbook (alarms.runbooks: {sorted(system.alarms.runbooks)})")
