"""The runbook catalogue: name -> flow module, and whether it mutates."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.inventory import System


def _always(system: System) -> str | None:
    return None


def _needs(what: str, test: Callable[[System], Any]) -> Callable[[System], str | None]:
    """An applicability rule: None when the runbook applies to the system, else why not."""
    return lambda system: None if test(system) else f"the inventory names no {what}"


@dataclass(frozen=True)
class Runbook:
    name: str
    module: str
    attr: str
    mutating: bool
    summary: str
    applies: Callable[[System], str | None] = _always

    def why_not(self, system: System) -> str | None:
        """None when the runbook has something to work on in this system (a deployment is built), else the reason."""
        return self.applies(system)

    def load(self) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)

    def tasks(self) -> list[Any]:
        return list(getattr(importlib.import_module(self.module), "TASKS", []))


RUNBOOKS: dict[str, Runbook] = {
    rb.name: rb
    for rb in [
        Runbook("daily-health", "flows.daily_health", "daily_health", False,
                "morning check of every component (read-only); daily 09:00 in the system's time zone"),
        Runbook("weekly-report", "flows.weekly_report", "weekly_report", False,
                "last 7 days against the 7 before: pipeline SLOs, Lambda, API Gateway, DynamoDB, S3, users, cost; HTML charts"),
        Runbook("emergency-check", "flows.emergency_check", "emergency_check", False,
                "first minutes of a P0/P1: every component at once, errors of the last hour, the priority and escalation it implies"),
        Runbook("emergency-rollback", "flows.emergency_rollback", "emergency_rollback", True,
                "roll ECS services / Lambda aliases back to the last known-good release (plan, approve, act, verify, record)",
                _needs("ECS service or Lambda alias", lambda s: s.ecs_services or any(f.aliases for f in s.lambda_functions))),
        Runbook("bill-shock-breaker", "flows.bill_shock_breaker", "bill_shock_breaker", True,
                "token spend per case/user/service: trip case breakers, pause the worker, block accounts (approval), reset",
                _needs("bill_shock section", lambda s: s.bill_shock)),
        Runbook("dlq-redrive", "flows.dlq_redrive", "dlq_redrive", True,
                "move dead-lettered messages back to their source queue, in batches, at a bounded rate, losing none",
                _needs("SQS queue with a dead-letter queue", lambda s: any(q.dlq for q in s.sqs_queues))),
        Runbook("backup-verify", "flows.backup_verify", "backup_verify", True,
                "weekly: PITR, on-demand backups, S3 versioning/replication, OpenSearch snapshots, RDS snapshots; fixes behind approval",
                _needs("table, bucket, OpenSearch domain or RDS instance", lambda s: s.dynamodb_tables or s.s3_buckets or s.opensearch_domains
                       or s.rds_instances or s.discovery.tags)),
        Runbook("dr-test", "flows.dr_test", "dr_test", True,
                "restore copies of tables, objects and indices, prove them right against the RTO, always remove them",
                _needs("table, bucket or OpenSearch domain", lambda s: s.dynamodb_tables or s.s3_buckets or s.opensearch_domains or s.discovery.tags)),
        Runbook("maintenance-audit", "flows.maintenance_audit", "maintenance_audit", True,
                "log retention, tmp/ lifecycle, audit-log PII sample, runtimes, IAM roles, tags, KMS, secrets, security groups, RDS"),
        Runbook("reindex-case", "flows.reindex_case", "reindex_case", True,
                "restore a soft-deleted case and rebuild its search index from DynamoDB",
                _needs("case_store section", lambda s: s.case_store)),
        Runbook("remediate-dynamodb-throttling", "flows.remediate_dynamodb_throttling", "remediate_dynamodb_throttling", True,
                "throttled tables: throttle events, consumed vs provisioned, auto scaling; on-demand, capacity or bounds behind approval",
                _needs("DynamoDB table", lambda s: s.dynamodb_tables or s.discovery.tags)),
        Runbook("scale-service", "flows.scale_service", "scale_service", True,
                "ECS desired count (absolute or +N) within its auto scaling bounds, and provisioned table capacity, behind approval",
                _needs("ECS service or DynamoDB table", lambda s: s.ecs_services or s.dynamodb_tables)),
        Runbook("remediate-opensearch-red", "flows.remediate_opensearch_red", "remediate_opensearch_red", True,
                "red/yellow cluster: explain unassigned shards, retry failed allocations behind approval; disk, lost primaries as exact advice",
                _needs("OpenSearch domain", lambda s: s.opensearch_domains)),
        Runbook("security-incident", "flows.security_incident", "security_incident", True,
                "contain a breach: rotate secrets, lock buckets deny-all except break-glass roles, disable Cognito users; undo puts locks/users back, never rotations",
                _needs("secret, bucket or Cognito pool", lambda s: s.security.secrets or s.audit.secrets or s.s3_buckets or s.security.buckets or s.cognito)),
        Runbook("diagnose-api-5xx", "flows.diagnose_api_5xx", "diagnose_api_5xx", False,
                "why an API answers 5XX: rate and latency, the integrated functions' errors by type, timeouts, role policies; ranked causes",
                _needs("API Gateway API", lambda s: s.api_gateway_apis)),
        Runbook("diagnose-bedrock-throttling", "flows.diagnose_bedrock_throttling", "diagnose_bedrock_throttling", False,
                "ThrottlingException by Bedrock-calling function: peak minute, share of invocations, quota in force, the increase to request",
                _needs("Bedrock-calling function (lambda_functions[].bedrock)", lambda s: any(f.bedrock for f in s.lambda_functions))),
        Runbook("alarm-bridge", "flows.alarm_bridge", "alarm_bridge", False,
                "every minute, all systems: alarms going into ALARM start their runbooks (Prefect events + triggers); missed scheduled runs are CRIT",
                _needs("alarm routed to a runbook (alarms.runbooks)", lambda s: s.alarms.runbooks)),
        Runbook("remediate-lambda-timeout", "flows.remediate_lambda_timeout", "remediate_lambda_timeout", True,
                "Lambda timeouts: count them, size a longer timeout or more memory within API/SQS/policy bounds, apply behind approval, watch new invocations",
                _needs("Lambda function", lambda s: s.lambda_functions)),
        Runbook("fleet", "flows.fleet", "fleet", False,
                "fan a read-only runbook over many accounts/regions/systems (STS AssumeRole), a flow run per target on a work pool, shared per-API rate limits",
                lambda s: "runs over a targets file (fleet/*.yaml), not one system"),
    ]
}


def get(name: str) -> Runbook:
    if name not in RUNBOOKS:
        raise KeyError(f"unknown runbook {name!r}; known runbooks: {', '.join(sorted(RUNBOOKS))}")
    return RUNBOOKS[name]
