"""Deployments: one per (runbook, system) schedule in the inventories.

Each inventory's ``schedules:`` maps a runbook to a cron in the system's time
zone (Asia/Seoul unless it says otherwise). ``build()`` turns them into
Prefect deployments; ``opsbook serve`` serves them from one long-lived process
(the scheduler creates the runs; the UI's "Run" button triggers one by hand,
with the runbook's parameters as a form). For a work pool instead, see
``prefect.yaml`` at the top level and README.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from opsbook import registry

BRIDGE = "alarm-bridge"
from opsbook.inventory import known_systems, load_system


def deployment_specs() -> list[dict[str, Any]]:
    """Plain data (tested without Prefect): every runbook for every system it applies to.

    A schedule in the inventory gives its deployment a cron (``schedules.KEY``;
    KEY is the runbook unless the entry says ``runbook:``); every other runbook
    that has something to work on in the system (``Runbook.why_not``) gets an
    unscheduled deployment: the UI's Run button and alarm-driven runs start it.
    Name: ``KEY-SYSTEM`` (``prefect deployment run RUNBOOK/KEY-SYSTEM``)."""
    specs = []
    for name in known_systems():
        system = load_system(name)
        covered: set[str] = set()
        for key, sched in sorted(system.schedules.items()):
            runbook = sched.runbook or key
            if runbook not in registry.RUNBOOKS:
                continue  # scheduled in the inventory, not built yet: listed by `opsbook list`
            covered.add(runbook)
            specs.append(_spec(name, key, runbook, sched.cron, sched.timezone or system.timezone, sched.parameters))
        for rb in registry.RUNBOOKS.values():
            if rb.name not in covered and rb.name != BRIDGE and rb.why_not(system) is None:
                specs.append(_spec(name, rb.name, rb.name, None, system.timezone, {}))
    from flows.alarm_bridge.triggers import bridge_deployment

    bridge = bridge_deployment()  # one run a minute covers every system
    specs.append({**bridge, "tags": [*bridge["tags"], "read-only", "scheduled"], "summary": registry.get(BRIDGE).summary})
    return specs


def _spec(system: str, key: str, runbook: str, cron: str | None, tz: str, parameters: dict[str, Any]) -> dict[str, Any]:
    rb = registry.get(runbook)
    return {
        "name": f"{key}-{system}",
        "runbook": runbook,
        "system": system,
        "cron": cron,
        "timezone": tz,
        "parameters": {"system": system, **parameters},
        "tags": ["opsbook", runbook, system, "mutating" if rb.mutating else "read-only", "scheduled" if cron else "on-demand"],
        "summary": rb.summary,
    }


DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]  # cron: 0 and 7 are Sunday
MONTHS = ["", "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]


def _listed(field: str, names: list[str]) -> str | None:
    """A cron list of numbers ("1,4") in words ("Monday and Thursday"); None for ranges, steps or names."""
    if not all(p.isdigit() and int(p) < len(names) and names[int(p)] for p in field.split(",")):
        return None
    words = [names[int(p)] for p in field.split(",")]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def cron_words(cron: str) -> str | None:
    """The crons the inventories use, in words ("09:00 every Monday"); None for any other (then only the cron is shown)."""
    fields = cron.split()
    if len(fields) != 5:
        return None
    minute, hour, dom, month, dow = fields
    if fields == ["*"] * 5:
        return "every minute"
    if minute.startswith("*/") and minute[2:].isdigit() and fields[1:] == ["*"] * 4:
        return f"every {int(minute[2:])} minutes"
    if not (minute.isdigit() and hour.isdigit()):
        return None
    at = f"{int(hour):02d}:{int(minute):02d}"
    if dom == "*" and month == "*":
        days = "day" if dow == "*" else _listed(dow, DAYS)
        return f"{at} every {days}" if days else None
    if dow == "*" and dom.isdigit():
        months = "every month" if month == "*" else _listed(month, MONTHS)
        return f"{at} on day {int(dom)} of {months}" if months else None
    return None


def describe(spec: dict[str, Any], flow: Any) -> str:
    """The deployment's description in the UI: when it runs, in which time zone, and what it does (the runbook's docstring).

    The UI's schedule card shows the cron in words without its time zone (the zone is in the card's tooltip and its
    edit form): the description says it."""
    target = f"**{spec['system']}**" if spec["system"] else "every system"
    if spec["cron"]:
        words = cron_words(spec["cron"])
        when = (f"Scheduled: {words}, {spec['timezone']} time (`{spec['cron']}`)." if words
                else f"Scheduled: `{spec['cron']}`, {spec['timezone']} time.")
    else:
        when = "No schedule: run it from the UI's Run button, the shell or an alarm."
    mode = ("Mutating: dry run by default; set dry_run=false to act after approval (a form on the paused run)."
            if "mutating" in spec["tags"] else "Read-only.")
    doc = (flow.description or "").strip()
    return f"**{spec['runbook']}** for {target}: {spec['summary']}.\n\n{when} {mode}\n\n{doc}"


def build() -> list[Any]:
    from prefect.schedules import Cron

    out = []
    for spec in deployment_specs():
        flow = registry.get(spec["runbook"]).load()
        out.append(flow.to_deployment(
            name=spec["name"],
            schedules=[Cron(spec["cron"], timezone=spec["timezone"])] if spec["cron"] else [],
            parameters=spec["parameters"],
            tags=spec["tags"],
            concurrency_limit=1,  # a run never overlaps the previous one of the same runbook and system
            description=describe(spec, flow),
            triggers=triggers(spec),
        ))
    return out


def triggers(spec: dict[str, Any]) -> list[Any]:
    """Alarm-driven runs: the alarm bridge's events start this deployment (see flows/alarm_bridge/flow.py)."""
    from flows.alarm_bridge.triggers import triggers_for

    if not spec["system"] or spec["name"] != f"{spec['runbook']}-{spec['system']}":
        return []  # the bridge itself, and second deployments of a runbook (e.g. bill-shock-breaker-escalate)
    return triggers_for(spec["system"], spec["runbook"])


def watch_the_bridge(bridge_deployment_id: Any) -> None:
    """The bridge watches every schedule; a Prefect automation watches the bridge (starts it if no run finished for 5 min)."""
    from flows.alarm_bridge.prefect_api import ensure_missed_run_automation

    ensure_missed_run_automation(bridge_deployment_id)


def serve(announce: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
    """Register every deployment on the configured Prefect server, read them back from it
    (``announce`` is called only then, with the specs), then run the scheduled and UI-started runs."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    specs = deployment_specs()
    deployments = build()
    bridge = next(d for d in deployments if d.name == f"{BRIDGE}-all")
    watch_the_bridge(bridge.apply())
    runner = Runner(pause_on_shutdown=False, query_seconds=poll_seconds())
    ids = [runner.add_deployment(d) for d in deployments]
    read_back(ids, {s["name"] for s in specs})
    if announce:
        announce(specs)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as exc:  # Ctrl-C or SIGTERM: deployments stay registered
        logging.getLogger("opsbook.serve").info("stopped serving (%s)", type(exc).__name__)


def poll_seconds() -> float:
    """How often the serving process asks the server for runs to start: a UI click or an alarm's run waits for it.
    Prefect's default is 10 s (PREFECT_RUNNER_POLL_FREQUENCY, honoured when set); opsbook serves at 2 s
    (OPSBOOK_RUNNER_POLL_S), one small query each: bench/results/alarm_latency.md measures both."""
    raw = os.environ.get("OPSBOOK_RUNNER_POLL_S") or os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY") or "2"
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeError(f"OPSBOOK_RUNNER_POLL_S={raw!r} is not a number of seconds; set it like 2") from None
    if not 0.5 <= value <= 60:
        raise RuntimeError(f"OPSBOOK_RUNNER_POLL_S={raw!r}: between 0.5 and 60 seconds")
    return value


def read_back(ids: list[Any], expected: set[str]) -> set[str]:
    """The deployments as the server has them: every expected name, or RuntimeError naming what is missing."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        found = client.read_deployments(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(ids))), limit=len(ids) + 1)
        api = client.api_url
    names = {d.name for d in found}
    if expected - names:
        raise RuntimeError(f"{len(expected - names)} of {len(expected)} deployments are not on the Prefect server at {api} after "
                           f"registering them (e.g. {sorted(expected - names)[:3]}); check PREFECT_API_URL")
    return names


def deploy_to_work_pool(pool: str = "opsbook", only: list[str] | None = None) -> list[str]:
    """Register the same deployments on a process work pool (created if missing),
    for teams that run `prefect worker start --pool opsbook` instead of `opsbook serve`."""
    from pathlib import Path

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.schedules import Cron

    root = Path(__file__).resolve().parent.parent
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass  # re-running is safe: the pool is reused
    ids = []
    bridge_id = None
    specs = [s for s in deployment_specs() if only is None or s["name"] in only]
    for spec in specs:
        rb = registry.get(spec["runbook"])
        entry = f"{rb.module.replace('.', '/')}.py:{rb.attr}"
        flow = registry.get(spec["runbook"]).load().from_source(source=str(root), entrypoint=entry)
        ids.append(str(flow.deploy(
            name=spec["name"], work_pool_name=pool, schedules=[Cron(spec["cron"], timezone=spec["timezone"])] if spec["cron"] else [],
            parameters=spec["parameters"], tags=spec["tags"], concurrency_limit=1, print_next_steps=False,
            description=describe(spec, flow), triggers=triggers(spec),
        )))
        if spec["runbook"] == BRIDGE:
            bridge_id = ids[-1]
    if bridge_id:
        watch_the_bridge(bridge_id)
    read_back(ids, {s["name"] for s in specs})
    return ids
