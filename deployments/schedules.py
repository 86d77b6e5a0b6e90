"""Deployments: one per (runbook, system) schedule in the inventories.

Each inventory's ``schedules:`` maps a runbook to a cron in the system's time
zone (Asia/Seoul unless it says otherwise). ``build()`` turns them into
Prefect deployments; ``opsbook serve`` serves them from one long-lived process
(the scheduler creates the runs; the UI's "Run" button triggers one by hand,
with the runbook's parameters as a form). For a work pool instead, see
``prefect.yaml`` at the top level and README.
"""

from __future__ import annotations

from typing import Any

from flows import registry
from tasks.inventory import known_systems, load_system


def deployment_specs() -> list[dict[str, Any]]:
    """Plain data (tested without Prefect): name, runbook, system, cron, timezone, parameters."""
    specs = []
    for name in known_systems():
        system = load_system(name)
        for key, sched in sorted(system.schedules.items()):
            runbook = sched.runbook or key
            if runbook not in registry.RUNBOOKS:
                continue  # scheduled in the inventory, not built yet: listed by `opsbook list`
            specs.append({
                "name": f"{key}-{name}",
                "runbook": runbook,
                "system": name,
                "cron": sched.cron,
                "timezone": sched.timezone or system.timezone,
                "parameters": {"system": name, **sched.parameters},
                "tags": ["opsbook", runbook, name],
            })
    return specs


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
            concurrency_limit=1,  # a scheduled run never overlaps the previous one of the same system
            description=f"{spec['runbook']} for {spec['system']} ({spec['cron']} {spec['timezone']})",
        ))
    return out


def serve() -> None:
    from prefect import serve as prefect_serve

    deployments = build()
    prefect_serve(*deployments, pause_on_shutdown=False)


def deploy_to_work_pool(pool: str = "opsbook") -> list[str]:
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
    for spec in deployment_specs():
        rb = registry.get(spec["runbook"])
        entry = f"{rb.module.replace('.', '/')}.py:{rb.attr}"
        flow = registry.get(spec["runbook"]).load().from_source(source=str(root), entrypoint=entry)
        ids.append(str(flow.deploy(
            name=spec["name"], work_pool_name=pool, schedules=[Cron(spec["cron"], timezone=spec["timezone"])] if spec["cron"] else [],
            parameters=spec["parameters"], tags=spec["tags"], concurrency_limit=1, print_next_steps=False,
        )))
    return ids
