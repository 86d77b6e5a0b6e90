"""The alarm bridge's Prefect side: its memory (Prefect Variables), the event it sends per ALARM transition,
the deployments and runs it watches for missed scheduled runs, and the automation that watches the bridge.

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

The event is sent with ``opsbook.events.send_event`` (a confirmed POST, see there).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from flows.alarm_bridge.judge import BridgeMemory, ScheduleSpec, SeenRun, WatchedDeployment, table_names
from opsbook.components import alarm_priority
from opsbook.inventory import System, known_systems
from opsbook.masking import mask_obj
from tasks.cloudwatch import Alarm

NAMESPACE = uuid.UUID("6f1d5a52-4c7e-4b8e-9a51-0b5d2c1e7a10")  # event ids: uuid5(NAMESPACE, system/alarm/time)
MAX_VARIABLE_CHARS = 4900  # Prefect's limit is 5000 (prefect.types.MAX_VARIABLE_VALUE_LENGTH)


def variable_name(kind: str, system: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", f"opsbook_bridge_{kind}_{system}".lower())


# --- the alarm memory and the event ---------------------------------------------------------------


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


# --- missed scheduled runs: the schedule memory, deployments and runs, fire times -------------------------


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
