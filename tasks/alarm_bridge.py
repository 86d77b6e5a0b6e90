"""The alarm bridge's units of work: CloudWatch alarm transitions -> Prefect events ->
runbook deployments, and scheduled runs that did not happen.

The self-hosted Prefect server has no incoming webhooks, so an alarm reaches a
runbook through three steps:

1. ``read_alarms`` (one paginated DescribeAlarms StateValue=ALARM per region,
   shared by the systems of that region) -> ``Alarm`` models.
2. ``fire_transitions`` per system: the alarms its ``alarms.name_filters``
   match AND whose name matches a glob of ``alarms.runbooks``; a transition is
   new when its transition time differs from the one remembered for that alarm
   (``BridgeMemory``, a Prefect Variable per system). Each new transition is
   sent as the Prefect event ``opsbook.alarm.firing`` (resource
   ``opsbook.alarm.<system>.<alarm>``, labels ``opsbook.system`` and
   ``opsbook.runbook``, payload = the alarm's details).
3. The runbook's deployment carries ``triggers_for(system, runbook)``: a
   ``DeploymentEventTrigger`` on that event, whose parameters are templated from
   the payload, so Prefect's trigger service creates the run.

Once per transition, never per poll: an alarm that stays in ALARM keeps its
transition time, so it is not sent again; OK then ALARM again is a new time,
so it is. The event id is a UUID5 of (system, alarm, transition time): if the
memory could not be saved and the next poll sends the same transition again,
Prefect's trigger service drops the duplicate id.

Why DescribeAlarms and not DescribeAlarmHistory: moto has no
DescribeAlarmHistory, and history needs a second call for each alarm's metric
and threshold; the list of alarms currently in ALARM is one call per region
(usually one page) and is right even after the bridge was stopped for a while.

Why a Prefect Variable and not the opsbook state table: the bridge is a
read-only role (DescribeAlarms and sns:Publish only) polling every minute; the
state table would add DynamoDB writes (and table creation) in every system's
account each minute. The memory belongs with the Prefect server anyway: it
holds the triggers and deployments that the events start, so losing one means
losing the other. What a Variable costs: 5000 characters. Only the alarms that
route to a runbook are remembered (alarm name -> transition time) and when the
memory is lost (first poll, new server) a transition older than
``max_age_minutes`` is listed as a WARN finding instead of starting a runbook
late (and not flooding runbooks for alarms that fired days ago).

Why events are sent with a POST to ``/api/events`` and not ``emit_event``:
``prefect.events.emit_event`` queues the event for a background websocket
sender and only logs a failure (``Error emitting event``), so the bridge could
not know that a transition was lost and would remember it as sent. The POST
goes to the same server endpoint and returns only once the server accepted the
event; on an error the transition is not remembered and the next poll sends it
again. The Event model is Prefect's own (``prefect.events.Event``).

Missed scheduled runs (``read_schedules``, ``judge_schedules``,
``notify_missed``): see the function docstrings and ``ensure_missed_run_automation``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import types
import typing
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, known_systems, load_system, name_matches
from opsbook.masking import mask, mask_obj
from tasks.cloudwatch import alarm_priority

EVENT = "opsbook.alarm.firing"
RUNBOOK = "alarm-bridge"
NAMESPACE = uuid.UUID("6f1d5a52-4c7e-4b8e-9a51-0b5d2c1e7a10")  # event ids: uuid5(NAMESPACE, system/alarm/time)
MAX_VARIABLE_CHARS = 4900  # Prefect's limit is 5000 (prefect.types.MAX_VARIABLE_VALUE_LENGTH)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def variable_name(kind: str, system: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", f"opsbook_bridge_{kind}_{system}".lower())


# --- alarms ----------------------------------------------------------------------------------


class Alarm(BaseModel):
    name: str
    region: str
    kind: str = "MetricAlarm"
    state: str = "ALARM"
    state_time: datetime  # when it went into its state (StateTransitionedTimestamp, else StateUpdatedTimestamp)
    reason: str = ""
    namespace: str | None = None
    metric: str | None = None
    dimensions: dict[str, str] = Field(default_factory=dict)
    statistic: str | None = None
    threshold: float | None = None
    comparison: str | None = None


def _alarm(raw: dict[str, Any], region: str, kind: str) -> Alarm:
    ts = raw.get("StateTransitionedTimestamp") or raw.get("StateUpdatedTimestamp")
    if ts is None:
        raise ValueError(f"alarm {raw.get('AlarmName')!r} has no state timestamp")
    metric = raw.get("MetricName")
    namespace = raw.get("Namespace")
    dims = {d["Name"]: d["Value"] for d in raw.get("Dimensions", []) or []}
    if not metric and raw.get("Metrics"):  # a metric-math alarm: name the first metric it reads
        for q in raw["Metrics"]:
            m = (q.get("MetricStat") or {}).get("Metric")
            if m:
                metric, namespace = m.get("MetricName"), m.get("Namespace")
                dims = {d["Name"]: d["Value"] for d in m.get("Dimensions", []) or []}
                break
    return Alarm(name=raw["AlarmName"], region=region, kind=kind, state=raw.get("StateValue", "ALARM"),
                 state_time=ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc), reason=raw.get("StateReason", "") or "",
                 namespace=namespace, metric=metric, dimensions=dims, statistic=raw.get("Statistic") or raw.get("ExtendedStatistic"),
                 threshold=raw.get("Threshold"), comparison=raw.get("ComparisonOperator"))


@aws_task(iam=["cloudwatch:DescribeAlarms"], cache_policy=NO_CACHE)
def read_alarms(region: str) -> list[Alarm]:
    """Every metric and composite alarm in ALARM in one region (every page)."""
    c = aws.client("cloudwatch", region)
    out: list[Alarm] = []
    for page in c.get_paginator("describe_alarms").paginate(StateValue="ALARM", AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
        out += [_alarm(a, region, "MetricAlarm") for a in page.get("MetricAlarms", []) or []]
        out += [_alarm(a, region, "CompositeAlarm") for a in page.get("CompositeAlarms", []) or []]
    return out


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


def payload(system: System, alarm: Alarm, runbook: str) -> dict[str, Any]:
    """The event's payload: everything a runbook may want to know about the alarm (masked)."""
    return mask_obj({
        "system": system.name, "alarm": alarm.name, "runbook": runbook, "state": alarm.state,
        "state_time": alarm.state_time.isoformat(), "reason": alarm.reason[:1000], "region": alarm.region,
        "kind": alarm.kind, "namespace": alarm.namespace, "metric": alarm.metric, "dimensions": alarm.dimensions,
        "statistic": alarm.statistic, "threshold": alarm.threshold, "comparison": alarm.comparison,
        "priority": alarm_priority(system, alarm.name), "tables": table_names(system, alarm),
    })


def event_id(system: str, alarm: str, state_time: datetime) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{system}/{alarm}/{state_time.astimezone(timezone.utc).isoformat()}")


class BridgeMemory(BaseModel):
    """What the bridge remembers per system: alarm name -> transition time already sent (or judged too old)."""

    alarms: dict[str, str] = Field(default_factory=dict)
    polled_at: str | None = None


def load_memory(system: str) -> tuple[BridgeMemory, bool]:
    """(memory, existed). A missing Variable is an empty memory; an unreadable one raises."""
    from prefect.variables import Variable

    raw = Variable.get(variable_name("alarms", system), default=None)
    if raw is None:
        return BridgeMemory(), False
    return BridgeMemory.model_validate(raw if isinstance(raw, dict) else json.loads(raw)), True


def save_memory(system: str, memory: BridgeMemory) -> None:
    from prefect.variables import Variable

    data = memory.model_dump()
    while len(json.dumps(data)) > MAX_VARIABLE_CHARS and data["alarms"]:
        oldest = min(data["alarms"], key=data["alarms"].get)  # keep the newest transitions
        del data["alarms"][oldest]
    Variable.set(variable_name("alarms", system), data, overwrite=True)


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


def send_event(name: str, resource: dict[str, str], body: dict[str, Any], eid: uuid.UUID, occurred: datetime) -> None:
    """POST one event to the Prefect API; raises unless the server accepted it (see the module docstring)."""
    from prefect.client.orchestration import get_client
    from prefect.events import Event

    ev = Event(event=name, resource=resource, payload=body, id=eid, occurred=occurred)
    with get_client(sync_client=True) as client:
        r = client._client.post("/events", json=[ev.model_dump(mode="json")])
        r.raise_for_status()


def _registered(runbook: str) -> bool:
    from opsbook import registry

    return runbook in registry.RUNBOOKS


@task(name="fire-transitions", cache_policy=NO_CACHE, retries=0)
def fire_transitions(system: System, alarms: list[Alarm], max_age_minutes: float, now: datetime | None = None) -> dict[str, Any]:
    """Send one event per new ALARM transition of the system and remember it; findings for each routed alarm."""
    now = now or utcnow()
    findings: list[Finding] = []
    try:
        memory, existed = load_memory(system.name)
    except Exception as exc:  # without the memory every poll would start the runbooks again: refuse to send
        return {"sent": [], "findings": [unknown("alarm-memory", system.name,
                                                 f"Prefect Variable {variable_name('alarms', system.name)} could not be read "
                                                 f"({type(exc).__name__}: {exc}); no event sent until it can (check the Prefect API)")]}
    transitions, keep = select_transitions(system, alarms, memory, now, timedelta(minutes=max_age_minutes))
    sent: list[dict[str, Any]] = []
    for t in transitions:
        a = t.alarm
        where = f"{a.name} (in ALARM since {a.state_time.isoformat(timespec='seconds')})"
        if t.fate == "seen":
            findings.append(Finding(check="alarm-transition", resource=a.name, status=Status.OK, value=0,
                                    summary=f"still in ALARM since {a.state_time.isoformat(timespec='seconds')}: "
                                            f"{t.runbook} was already started for this transition"))
            continue
        if t.fate == "stale":
            age = (now - a.state_time).total_seconds() / 60
            findings.append(Finding(check="alarm-transition", resource=a.name, status=Status.WARN, value=0,
                                    summary=mask(f"{where} went into ALARM {age:.0f} min ago, before the bridge "
                                                 f"{'last remembered it' if existed else 'had any memory (first poll or new server)'}; "
                                                 f"older than {max_age_minutes:g} min, so {t.runbook} was NOT started. "
                                                 f"Start it by hand: opsbook run {t.runbook} --system {system.name}")[:500]))
            continue
        body = payload(system, a, t.runbook)
        resource = {"prefect.resource.id": f"opsbook.alarm.{system.name}.{a.name}", "prefect.resource.name": a.name,
                    "opsbook.system": system.name, "opsbook.runbook": t.runbook}
        eid = event_id(system.name, a.name, a.state_time)
        try:
            send_event(EVENT, resource, body, eid, a.state_time)
        except Exception as exc:
            findings.append(Finding(check="alarm-transition", resource=a.name, status=Status.CRIT, value=0,
                                    summary=mask(f"{where}: the event that starts {t.runbook} was not accepted by the Prefect API "
                                                 f"({type(exc).__name__}: {exc}); the next poll sends it again")[:500]))
            continue
        keep.alarms[a.name] = a.state_time.astimezone(timezone.utc).isoformat()
        note = "" if _registered(t.runbook) else f" (no runbook named {t.runbook!r} is registered: no deployment can be listening)"
        findings.append(Finding(check="alarm-transition", resource=a.name, status=Status.WARN if note else Status.OK, value=1,
                                summary=mask(f"{where}: event {EVENT} sent -> {t.runbook}{note}")[:500],
                                details={"event_id": str(eid), "runbook": t.runbook, "priority": body["priority"],
                                         "sent_at": utcnow().isoformat()}))
        sent.append({"alarm": a.name, "runbook": t.runbook, "event_id": str(eid), "state_time": a.state_time.isoformat()})
    try:
        save_memory(system.name, keep)
    except Exception as exc:
        findings.append(Finding(check="alarm-memory", resource=system.name, status=Status.WARN,
                                summary=f"could not save {variable_name('alarms', system.name)} ({type(exc).__name__}: {exc}); "
                                        "the next poll sends these transitions again with the same event ids, which Prefect drops"))
    if not transitions:
        findings.append(Finding(check="alarm-transition", resource=system.name, status=Status.OK, value=0,
                                summary=f"no alarm in ALARM routes to a runbook (alarms.runbooks: {sorted(system.alarms.runbooks)})"))
    return {"sent": sent, "findings": findings}


def nothing_to_bridge(system: System) -> Finding | None:
    """A clear finding for a system whose inventory routes no alarm (no API call is made for it)."""
    if not system.alarms.runbooks:
        return Finding(check="alarm-transition", resource=system.name, status=Status.OK, value=0,
                       summary="nothing to check: the inventory's alarms.runbooks routes no alarm to a runbook")
    if not system.alarms.name_filters:
        return Finding(check="alarm-transition", resource=system.name, status=Status.OK, value=0,
                       summary="nothing to check: the inventory's alarms.name_filters names none of the system's alarms")
    return None


# --- triggers for the runbooks' deployments ------------------------------------------------------

# Flow parameter -> the payload field it is given from (only where the runbook's flow has the parameter).
ALARM_PARAMETERS = {
    "alarm_name": "alarm",
    "alarm_reason": "reason",
    "priority": "priority",
    "tables": "tables",  # remediate-dynamodb-throttling: restrict to the throttled table (empty: all the system's tables)
}


def _accepts_mapping(annotation: Any) -> bool:
    if annotation is inspect.Parameter.empty:
        return False
    if isinstance(annotation, str):
        return "dict" in annotation.lower() or "alarm" in annotation.lower()
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_mapping(a) for a in typing.get_args(annotation))
    if annotation is dict or origin is dict:
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def trigger_parameters(system_name: str, runbook: str, flow: Any = None) -> dict[str, Any]:
    """The parameters a run started by an alarm gets: only those the runbook's flow accepts.

    - ``system``: the system.
    - ``alarm``: the whole payload when the flow's ``alarm`` parameter takes a
      mapping/model, else the alarm's name. ``alarm_name``, ``alarm_reason``,
      ``priority``, ``tables``: the matching payload field.
    - ``dry_run`` is never set to False by an alarm, with one exception: when the
      inventory already runs this runbook unattended on a clock (a ``schedules``
      entry with a cron for it), the alarm run gets that schedule's parameters
      (bill-shock-breaker's evaluation: ``dry_run: false, approver: schedule``,
      whose automatic actions are the breaker's purpose and whose risky ones are
      handed to an approval run anyway). An alarm does no more than the clock does.
      A mutating runbook started by an alarm otherwise makes its dry run: the
      diagnosis and the plan are ready in the UI when the on-call opens it, and
      applying it is a deliberate second run. We do not pass dry_run=False with
      approval='ui': an alarm that flaps would leave a paused run per
      transition, each holding its worker slot up to approval_timeout_s and an
      approval form for a plan made at alarm time, possibly stale when approved.
    """
    if flow is None:
        from opsbook import registry

        flow = registry.get(runbook).load()
    params = inspect.signature(getattr(flow, "fn", flow)).parameters
    system = load_system(system_name)
    out: dict[str, Any] = {}
    if "system" in params:
        out["system"] = system_name
    for key, sched in sorted(system.schedules.items()):
        if (sched.runbook or key) == runbook and sched.cron:
            out.update({k: v for k, v in sched.parameters.items() if k in params})
            if "approver" in out:
                out["approver"] = "alarm-bridge"
            break
    if "alarm" in params:
        out["alarm"] = "{{ event.payload }}" if _accepts_mapping(params["alarm"].annotation) else "{{ event.payload.alarm }}"
    for param, field in ALARM_PARAMETERS.items():
        if param in params:
            out[param] = "{{ event.payload.%s }}" % field
    return out


def triggers_for(system_name: str, runbook: str, flow: Any = None) -> list[Any]:
    """The DeploymentEventTrigger(s) the deployment of ``runbook`` for ``system_name`` carries.

    Fresh objects every call (Prefect writes the deployment id into a trigger when applying).
    Empty when the system's inventory routes no alarm to this runbook. The flow's
    parameters come from ``flows.registry`` (KeyError for a runbook not registered) unless
    ``flow`` is given (a deployment of another flow for that runbook, e.g. in a test)."""
    from prefect.events import DeploymentEventTrigger

    system = load_system(system_name)
    if runbook not in set(system.alarms.runbooks.values()):
        return []
    globs = sorted(g for g, rb in system.alarms.runbooks.items() if rb == runbook)
    return [DeploymentEventTrigger(
        name=f"alarm {system_name} -> {runbook}",
        description=f"the alarm bridge saw an alarm of {system_name} matching {globs} go into ALARM",
        expect={EVENT},
        match={"prefect.resource.id": f"opsbook.alarm.{system_name}.*", "opsbook.system": system_name, "opsbook.runbook": runbook},
        posture="Reactive",
        threshold=1,
        within=timedelta(0),
        parameters=trigger_parameters(system_name, runbook, flow),
    )]


def alarm_routes(systems: list[str] | None = None) -> list[tuple[str, str]]:
    """(system, runbook) pairs the inventories route alarms to: each needs a deployment with triggers_for()."""
    out = []
    for name in systems or known_systems():
        for rb in sorted(set(load_system(name).alarms.runbooks.values())):
            out.append((name, rb))
    return out


def bridge_deployment() -> dict[str, Any]:
    """The bridge's own deployment (same shape as deployments.schedules.deployment_specs() entries)."""
    return {
        "name": f"{RUNBOOK}-all",
        "runbook": RUNBOOK,
        "system": None,
        "cron": "* * * * *",  # every minute: the cron's floor; an alarm waits ~30 s for the next poll on average
        "timezone": "UTC",
        "parameters": {"systems": []},  # every system
        "tags": ["opsbook", RUNBOOK],
    }


# --- missed scheduled runs --------------------------------------------------------------------------------


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


def _system_of(dep: Any, known: set[str]) -> str | None:
    sys_param = (dep.parameters or {}).get("system")
    if isinstance(sys_param, str) and sys_param in known:
        return sys_param
    return next((t for t in dep.tags if t in known), None)


def _run_pages(client: Any, flt: Any, dflt: Any) -> list[Any]:
    from prefect.client.schemas.sorting import FlowRunSort

    out: list[Any] = []
    offset = 0
    while True:
        page = client.read_flow_runs(flow_run_filter=flt, deployment_filter=dflt, sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                                     limit=200, offset=offset)
        out += page
        if len(page) < 200:
            return out
        offset += 200


@task(name="read-schedules", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def read_schedules(window_start: datetime, stuck_since: datetime, systems: list[str] | None = None) -> dict[str, Any]:
    """The deployments tagged opsbook that have cron schedules, and their runs that matter: those expected
    after ``window_start`` (to match fire times) and those not started yet expected after ``stuck_since``.
    Every page; two small queries a poll once the window is a minute wide."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        DeploymentFilterTags,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    known = set(known_systems())
    deps: list[WatchedDeployment] = []
    runs: dict[str, SeenRun] = {}
    with get_client(sync_client=True) as client:
        raw_deps: list[Any] = []
        offset = 0
        while True:
            page = client.read_deployments(deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["opsbook"])),
                                           limit=200, offset=offset)
            raw_deps += page
            if len(page) < 200:
                break
            offset += 200
        for d in raw_deps:
            scheds = []
            for s in d.schedules or []:
                cron = getattr(s.schedule, "cron", None)
                if cron:
                    scheds.append(ScheduleSpec(cron=cron, timezone=getattr(s.schedule, "timezone", None) or "UTC",
                                               active=bool(s.active), day_or=getattr(s.schedule, "day_or", True)))
            system = _system_of(d, known)
            if not scheds or (systems is not None and system not in systems):
                continue
            deps.append(WatchedDeployment(id=str(d.id), name=d.name, system=system, paused=bool(d.paused), created=d.created,
                                          schedules=scheds))
        if deps:
            dflt = DeploymentFilter(id=DeploymentFilterId(any_=[uuid.UUID(d.id) for d in deps]))
            in_window = FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=window_start - timedelta(seconds=1)))
            waiting = FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=stuck_since),
                                    state=dict(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])))
            for r in _run_pages(client, in_window, dflt) + _run_pages(client, waiting, dflt):
                runs[str(r.id)] = SeenRun(id=str(r.id), name=r.name, deployment_id=str(r.deployment_id), expected_start=r.expected_start_time,
                                          state_type=r.state_type.value if r.state_type else "UNKNOWN",
                                          state_name=r.state_name or "", auto_scheduled=bool(r.auto_scheduled))
    return {"deployments": deps, "runs": list(runs.values())}


def fire_times(spec: ScheduleSpec, after: datetime, until: datetime, limit: int = 500) -> list[datetime]:
    """The schedule's fire times t with after < t <= until, computed like Prefect's scheduler does."""
    from prefect.server.schemas.schedules import CronSchedule
    from prefect.utilities.asyncutils import run_coro_as_sync

    if until <= after:
        return []
    sched = CronSchedule(cron=spec.cron, timezone=spec.timezone, day_or=spec.day_or)
    dates = run_coro_as_sync(sched.get_dates(n=limit, start=after + timedelta(seconds=1), end=until))
    return [d for d in dates if after < d <= until]


def _key(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def judge_schedules(deps: list[WatchedDeployment], runs: list[SeenRun], now: datetime, window_start: datetime,
                    grace: timedelta) -> tuple[list[Finding], list[MissedRun]]:
    """Findings per deployment, and the missed runs (stuck or missing).

    - stuck: a run of the deployment still Scheduled/Late/Pending (or waiting for a
      concurrency slot) more than ``grace`` after its expected start.
    - missing: a fire time of an active schedule in (window_start, now - grace],
      after the deployment was created, with no run expected at that time (the
      scheduler creates runs ahead of time with expected_start_time = fire time).
    A paused deployment or an inactive schedule is a WARN (nothing will run),
    not a missed run."""
    findings: list[Finding] = []
    missed: list[MissedRun] = []
    cutoff = now - grace
    by_dep: dict[str, list[SeenRun]] = {}
    for r in runs:
        by_dep.setdefault(r.deployment_id, []).append(r)
    if not deps:
        return [Finding(check="missed-scheduled-run", resource="(opsbook deployments)", status=Status.OK, value=0,
                        summary="nothing to check: no deployment tagged opsbook has a schedule")], []
    for d in sorted(deps, key=lambda d: d.name):
        mine = by_dep.get(d.id, [])
        problems: list[MissedRun] = []
        for r in mine:
            if r.state_type in ("SCHEDULED", "PENDING") and r.expected_start and r.expected_start <= cutoff:
                late = (now - r.expected_start).total_seconds() / 60
                what = "scheduled run" if r.auto_scheduled else "run"
                problems.append(MissedRun(key=_key("stuck", r.id), deployment=d.name, system=d.system, kind="stuck", expected=r.expected_start,
                                          flow_run_id=r.id, summary=f"{what} {r.name} ({r.id}) is still {r.state_name or r.state_type} "
                                          f"{late:.0f} min after its expected start {r.expected_start.isoformat(timespec='minutes')}: "
                                          "no worker or `opsbook serve` picked it up"))
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
        missed += problems
        if not problems and not d.paused:
            findings.append(Finding(check="missed-scheduled-run", resource=d.name, status=Status.OK, value=0,
                                    summary=f"on time: {expected} fire time(s) since {max(window_start, d.created).isoformat(timespec='minutes')} "
                                            f"each have a run, none waiting more than {grace.total_seconds() / 60:g} min"))
    return findings, missed


class ScheduleMemory(BaseModel):
    checked_until: str | None = None  # fire times up to here were judged
    notified: dict[str, int] = Field(default_factory=dict)  # missed-run key -> epoch seconds when notified


def load_schedule_memory() -> ScheduleMemory:
    from prefect.variables import Variable

    raw = Variable.get(variable_name("schedules", "all"), default=None)
    return ScheduleMemory.model_validate(raw) if raw else ScheduleMemory()


def save_schedule_memory(memory: ScheduleMemory, keep_after: datetime) -> None:
    from prefect.variables import Variable

    cut = int(keep_after.timestamp())
    notified = {k: v for k, v in memory.notified.items() if v >= cut}
    data = {"checked_until": memory.checked_until, "notified": notified}
    while len(json.dumps(data)) > MAX_VARIABLE_CHARS and data["notified"]:
        del data["notified"][min(data["notified"], key=data["notified"].get)]
    Variable.set(variable_name("schedules", "all"), data, overwrite=True)


@aws_task(iam=["sns:Publish"], name="notify-missed-runs", cache_policy=NO_CACHE, read_only=False)
def notify_missed(system: System, missed: list[MissedRun]) -> dict[str, Any]:
    """One SNS message for the system listing its newly missed runs."""
    from opsbook.notify import publish

    subject = f"[opsbook CRIT] {len(missed)} missed scheduled run(s) of {system.name}"
    body = "\n".join(f"- {m.deployment}: {m.summary}" for m in missed)
    return publish(system, subject, body + "\n\nSee the alarm-bridge run's report in the Prefect UI.")


# --- a Prefect automation for the bridge itself ------------------------------------------------------------


def ensure_missed_run_automation(bridge_deployment_id: str | uuid.UUID, within_s: int = 300) -> str:
    """A proactive Prefect automation that starts the bridge when no bridge run finished within ``within_s`` (>= 10 s).

    Call it with the id of the bridge's deployment (``bridge_deployment()``) after applying it.

    Why the bridge's check and not one automation per scheduled deployment:
    a proactive trigger fires on the ABSENCE of events within a fixed window
    after its automation starts; a cron such as dr-test's quarterly
    ``0 10 1 1,4,7,10 *`` or ``0 9 * * 1`` in Asia/Seoul has no fixed window,
    and a runs-exist-but-Late state (``prefect.flow-run.Late``) says nothing
    about a run the scheduler never created. Automations notify only through
    Prefect notification blocks, while opsbook's channel is each system's SNS
    topic. So the bridge computes each schedule's fire times and checks them.

    What the bridge cannot watch is itself: its own runs come from the same
    scheduler. This automation closes that gap: the triggers service (which
    also runs in the test server) evaluates it apart from the scheduler, and
    its action creates a bridge run directly (RunDeployment), which checks the
    missed runs of everything else. Idempotent: an automation of the same name
    is replaced.
    """
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger, Posture

    dep_id = uuid.UUID(str(bridge_deployment_id))
    name = f"opsbook: start the alarm bridge when no run of it finished for {within_s} s"
    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(name):
            client.delete_automation(old.id)
    automation = Automation(
        name=name,
        description="the alarm bridge also checks for missed scheduled runs; its own runs depend on the scheduler",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Completed", "prefect.flow-run.Failed"},  # Failed: the bridge ran and found a CRIT
            match_related={"prefect.resource.id": f"prefect.deployment.{dep_id}"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[RunDeployment(source="selected", deployment_id=dep_id, parameters={})],
    ).create()
    return str(automation.id)
