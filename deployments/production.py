"""prefect.yaml for production: the same deployments on a Kubernetes or an ECS work pool.

    .venv/bin/python -m deployments.production > prefect.yaml            # regenerate (tests check it is current)
    prefect deploy --all                                                 # against your Prefect server

Locally, `make serve` serves every deployment from one process against a
SQLite-backed server. A team moves past one machine by:

1. a Prefect server on PostgreSQL (``PREFECT_API_DATABASE_CONNECTION_URL=
   postgresql+asyncpg://prefect:...@db:5432/prefect``; see README);
2. a work pool: ``opsbook-k8s`` (type kubernetes, prefect-kubernetes) or
   ``opsbook-ecs`` (type ecs, prefect-aws), with a worker in the cluster
   (both plugins: the ``production`` extra, pinned in requirements.lock);
3. ``prefect deploy --all`` with this file. Each deployment names its pool
   through ``&default_pool`` (ECS; switch to ``*k8s`` for Kubernetes).

Credentials, least privilege first: flow runs use the standard AWS
credential chain, i.e. the ECS task role (``task_role_arn``) or the Kubernetes
service account's IAM role (IRSA / EKS Pod Identity); print each runbook's
policy with ``opsbook policy RUNBOOK``. The ECS worker itself needs only
``ecs:RunTask``-class permissions: its own role, or a prefect-aws
``AwsCredentials`` block (``opsbook-ecs-worker``) referenced below. No
static keys go into this file.

No cluster or Docker engine is reachable where this was written: the pools are
validated statically (tests/deployments/test_production.py checks every job
variable against the variables the prefect-aws and prefect-kubernetes workers
accept, every entrypoint, cron and time zone, and that the file matches the
deployments `make serve` registers).
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from deployments.schedules import deployment_specs
from opsbook import registry

IMAGE = "{{ $OPSBOOK_IMAGE }}"  # a build of the Dockerfile: pip install -c requirements.lock '.[production]'
# Variables the workers accept (prefect-aws ECSVariables, prefect-kubernetes KubernetesWorkerVariables,
# both on top of prefect's BaseVariables: name, env, labels, command).
BASE_VARIABLES = {"name", "env", "labels", "command"}
ECS_VARIABLES = BASE_VARIABLES | {
    "task_definition_arn", "aws_credentials", "cluster", "family", "launch_type", "capacity_provider_strategy", "image", "cpu",
    "memory", "container_name", "prefect_api_key_secret_arn", "prefect_api_auth_string_secret_arn", "task_role_arn",
    "execution_role_arn", "vpc_id", "configure_cloudwatch_logs", "cloudwatch_logs_options", "cloudwatch_logs_prefix",
    "network_configuration", "auto_deregister_task_definition", "match_latest_revision_in_family",
}
KUBERNETES_VARIABLES = BASE_VARIABLES | {
    "namespace", "image", "service_account_name", "image_pull_policy", "finished_job_ttl", "job_watch_timeout_seconds",
    "pod_watch_timeout_seconds", "stream_output", "cluster_config", "backoff_limit",
}
ENV = {"OPSBOOK_HOME": "/tmp/opsbook", "PREFECT_LOGGING_LEVEL": "INFO"}


def work_pools() -> dict[str, Any]:
    return {
        "ecs": {
            "name": "opsbook-ecs",
            "work_queue_name": "default",
            "job_variables": {
                "image": IMAGE,
                "cluster": "{{ $OPSBOOK_ECS_CLUSTER }}",
                "launch_type": "FARGATE",
                "cpu": 512,
                "memory": 1024,
                "task_role_arn": "{{ $OPSBOOK_TASK_ROLE_ARN }}",  # the runbooks' permissions (opsbook policy RUNBOOK)
                "execution_role_arn": "{{ $OPSBOOK_EXECUTION_ROLE_ARN }}",  # pulls the image, writes the container logs
                "vpc_id": "{{ $OPSBOOK_VPC_ID }}",
                "configure_cloudwatch_logs": True,
                "aws_credentials": "{{ prefect.blocks.aws-credentials.opsbook-ecs-worker }}",
                "env": dict(ENV),
            },
        },
        "k8s": {
            "name": "opsbook-k8s",
            "work_queue_name": "default",
            "job_variables": {
                "image": IMAGE,
                "namespace": "opsbook",
                "service_account_name": "opsbook-runner",  # bound to the runbooks' IAM role (IRSA / Pod Identity)
                "image_pull_policy": "IfNotPresent",
                "finished_job_ttl": 3600,
                "env": dict(ENV),
            },
        },
    }


def document() -> dict[str, Any]:
    deployments = []
    for spec in deployment_specs():
        rb = registry.get(spec["runbook"])
        d: dict[str, Any] = {
            "name": spec["name"],
            "description": f"{spec['runbook']} for {spec['system'] or 'every system'}: {spec['summary']}",
            "entrypoint": f"{rb.module.replace('.', '/')}.py:{rb.attr}",
            "parameters": spec["parameters"],
            "tags": spec["tags"],
            "concurrency_limit": 1,
            "schedules": [{"cron": spec["cron"], "timezone": spec["timezone"], "active": True}] if spec["cron"] else [],
            "work_pool": "POOL",
        }
        deployments.append(d)
    return {
        "name": "opsbook",
        "prefect-version": "3.8.8",
        "build": None,
        "push": None,
        # the image already holds the code (pip install of this repository); runs start in its working directory
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/opsbook"}}],
        "definitions": {"work_pools": work_pools()},
        "deployments": deployments,
    }


def render() -> str:
    """YAML with anchors: the pools once, each deployment pointing at the default pool."""
    doc = document()
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=140)
    text = text.replace("    ecs:\n      name: opsbook-ecs", "    ecs: &default_pool\n      name: opsbook-ecs", 1)
    text = text.replace("    k8s:\n      name: opsbook-k8s", "    k8s: &k8s\n      name: opsbook-k8s", 1)
    text = text.replace("  work_pool: POOL", "  work_pool: *default_pool")
    header = ("# Generated by `python -m deployments.production > prefect.yaml` from systems/*.yaml; do not edit by hand.\n"
              "# Every runbook for every system, on the ECS work pool (&default_pool). For Kubernetes, point\n"
              "# &default_pool at the k8s pool instead. See deployments/production.py and README (Past one machine).\n")
    return header + text


if __name__ == "__main__":
    sys.stdout.write(render())
