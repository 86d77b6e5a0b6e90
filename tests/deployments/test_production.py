"""prefect.yaml (production work pools) checked statically: no cluster or Docker engine is reachable here."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from deployments.production import ECS_VARIABLES, KUBERNETES_VARIABLES, render
from deployments.schedules import deployment_specs

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT_KEYS = {"name", "version", "tags", "description", "schedules", "entrypoint", "parameters", "work_pool",
                   "concurrency_limit", "enforce_parameter_schema", "triggers", "pull", "build", "push"}


def load() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_prefect_yaml_is_current_with_the_inventories():
    assert (ROOT / "prefect.yaml").read_text() == render(), "regenerate: .venv/bin/python -m deployments.production > prefect.yaml"


def test_work_pools_use_only_variables_their_workers_accept_and_no_static_keys():
    pools = load()["definitions"]["work_pools"]
    assert set(pools) == {"ecs", "k8s"}
    assert set(pools["ecs"]["job_variables"]) <= ECS_VARIABLES
    assert set(pools["k8s"]["job_variables"]) <= KUBERNETES_VARIABLES
    text = (ROOT / "prefect.yaml").read_text()
    for secret_word in ("aws_secret_access_key", "AKIA", "password"):
        assert secret_word not in text
    assert pools["ecs"]["job_variables"]["aws_credentials"] == "{{ prefect.blocks.aws-credentials.opsbook-ecs-worker }}"


def test_every_deployment_is_valid_and_matches_what_make_serve_registers():
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import Flow

    doc = load()
    deps = doc["deployments"]
    assert [d["name"] for d in deps] == [s["name"] for s in deployment_specs()]
    for d in deps:
        assert set(d) <= DEPLOYMENT_KEYS, d["name"]
        assert d["work_pool"]["name"] == "opsbook-ecs"  # the anchor resolved
        path, attr = d["entrypoint"].split(":")
        assert (ROOT / path).exists(), d["entrypoint"]
        assert isinstance(getattr(importlib.import_module(path[:-3].replace("/", ".")), attr), Flow)
        for s in d["schedules"]:
            CronSchedule(cron=s["cron"], timezone=s["timezone"])  # raises on a bad cron or zone
        assert d["parameters"].get("system") in d["tags"] or d["name"] == "alarm-bridge-all"
