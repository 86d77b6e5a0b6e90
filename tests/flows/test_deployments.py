import pytest

from deployments.schedules import build, deployment_specs


def test_every_seed_system_has_its_daily_health_schedule_in_its_time_zone():
    specs = {s["name"]: s for s in deployment_specs()}
    for system in ("hr-resource-optimization", "t-developer", "todo-app", "leh"):
        s = specs[f"daily-health-{system}"]
        assert s["cron"] == "0 9 * * *" and s["timezone"] == "Asia/Seoul" and s["parameters"] == {"system": system}


@pytest.mark.usefixtures("prefect_harness")
def test_deployments_register_with_their_schedules():
    from prefect.client.orchestration import get_client

    deps = build()
    d = next(d for d in deps if d.name == "daily-health-todo-app")
    dep_id = d.apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(dep_id)
    sched = stored.schedules[0].schedule
    assert sched.cron == "0 9 * * *" and sched.timezone == "Asia/Seoul"
    assert stored.parameters == {"system": "todo-app"}


@pytest.mark.usefixtures("prefect_harness")
def test_work_pool_deployments_are_idempotent():
    from prefect.client.orchestration import get_client

    from deployments.schedules import deploy_to_work_pool, deployment_specs

    first = deploy_to_work_pool("opsbook-test")
    second = deploy_to_work_pool("opsbook-test")
    assert first == second and len(first) == len(deployment_specs())
    with get_client(sync_client=True) as client:
        deps = [client.read_deployment(i) for i in first]
    assert {d.work_pool_name for d in deps} == {"opsbook-test"}
    assert "flows/daily_health.py:daily_health" in {d.entrypoint for d in deps}
