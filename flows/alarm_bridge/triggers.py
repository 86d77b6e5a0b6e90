"""The alarm bridge's other half: the triggers the runbooks' deployments carry (an ``opsbook.alarm.firing``
event starts the routed runbook with the alarm's details as parameters), and the bridge's own deployment.
Used by ``deployments/schedules.py``."""

from __future__ import annotations

import inspect
import types
import typing
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from flows.alarm_bridge.judge import EVENT, RUNBOOK
from opsbook.inventory import known_systems, load_system

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
