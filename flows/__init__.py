"""The runbooks: one folder each (flow.py reads as the procedure, judge.py judges), and the catalogue.

``CATALOGUE`` is the list ``opsbook list`` prints and the CLI, deployments and alarm bridge look names up in
(through ``opsbook.registry``). Adding a runbook: a folder here and one entry below (docs/add-a-runbook.md).
"""

from __future__ import annotations

from opsbook.registry import Runbook, needs

CATALOGUE: list[Runbook] = [
    Runbook("daily-health", "flows.daily_health.flow", "daily_health", False,
            "morning check of every component (read-only); daily 09:00 in the system's time zone", discovers_first=True),
    Runbook("weekly-report", "flows.weekly_report.flow", "weekly_report", False,
            "last 7 days against the 7 before: pipeline SLOs, Lambda, API Gateway, DynamoDB, S3, users, cost; HTML charts", discovers_first=True),
    Runbook("emergency-check", "flows.emergency_check.flow", "emergency_check", False,
            "first minutes of a P0/P1: every component at once, errors of the last hour, the priority and escalation it implies", discovers_first=True),
    Runbook("emergency-rollback", "flows.emergency_rollback.flow", "emergency_rollback", True,
            "roll ECS services / Lambda aliases back to the last known-good release (plan, approve, act, verify, record)",
            needs("ECS service or Lambda alias", lambda s: s.ecs_services or any(f.aliases for f in s.lambda_functions))),
    Runbook("bill-shock-breaker", "flows.bill_shock_breaker.flow", "bill_shock_breaker", True,
            "token spend per case/user/service: trip case breakers, pause the worker, block accounts (approval), reset",
            needs("bill_shock section", lambda s: s.bill_shock)),
    Runbook("dlq-redrive", "flows.dlq_redrive.flow", "dlq_redrive", True,
            "move dead-lettered messages back to their source queue, in batches, at a bounded rate, losing none",
            needs("SQS queue with a dead-letter queue", lambda s: any(q.dlq for q in s.sqs_queues))),
    Runbook("backup-verify", "flows.backup_verify.flow", "backup_verify", True,
            "weekly: PITR, on-demand backups, S3 versioning/replication, OpenSearch snapshots, RDS snapshots; fixes behind approval",
            needs("table, bucket, OpenSearch domain or RDS instance", lambda s: s.dynamodb_tables or s.s3_buckets or s.opensearch_domains
                   or s.rds_instances or s.discovery.tags), discovers_first=True),
    Runbook("dr-test", "flows.dr_test.flow", "dr_test", True,
            "restore copies of tables, objects and indices, prove them right against the RTO, always remove them",
            needs("table, bucket or OpenSearch domain", lambda s: s.dynamodb_tables or s.s3_buckets or s.opensearch_domains or s.discovery.tags)),
    Runbook("maintenance-audit", "flows.maintenance_audit.flow", "maintenance_audit", True,
            "log retention, tmp/ lifecycle, audit-log PII sample, runtimes, Lambda memory/timeout drift, IAM roles, tags, KMS, secrets, security groups, RDS", discovers_first=True),
    Runbook("reindex-case", "flows.reindex_case.flow", "reindex_case", True,
            "restore a soft-deleted case in its SQL database (PostgreSQL/RDS) and rebuild its search index from DynamoDB with the product's mapping",
            needs("case_store section", lambda s: s.case_store)),
    Runbook("restore-index", "flows.restore_index.flow", "restore_index", True,
            "bring an OpenSearch index back from a snapshot (named or latest): restored copy behind its alias, or in place; verified, undoable",
            needs("OpenSearch domain", lambda s: s.opensearch_domains)),
    Runbook("restore-table", "flows.restore_table.flow", "restore_table", True,
            "bring a DynamoDB table's data back from a backup or a point in time: a tagged copy, then the lost items written back "
            "(never a newer one) or the consumers switched to it; verified, undoable",
            needs("DynamoDB table", lambda s: s.dynamodb_tables)),
    Runbook("remediate-dynamodb-throttling", "flows.remediate_dynamodb_throttling.flow", "remediate_dynamodb_throttling", True,
            "throttled tables: throttle events, consumed vs provisioned, auto scaling; on-demand, capacity or bounds behind approval",
            needs("DynamoDB table", lambda s: s.dynamodb_tables or s.discovery.tags)),
    Runbook("scale-service", "flows.scale_service.flow", "scale_service", True,
            "ECS desired count (absolute or +N) within its auto scaling bounds, and provisioned table capacity, behind approval",
            needs("ECS service or DynamoDB table", lambda s: s.ecs_services or s.dynamodb_tables)),
    Runbook("restart-service", "flows.restart_service.flow", "restart_service", True,
            "restart an ECS service's tasks (forced new deployment), the failing agent's own service where mapped; once, verified healthy",
            needs("ECS service", lambda s: s.ecs_services)),
    Runbook("remediate-opensearch-red", "flows.remediate_opensearch_red.flow", "remediate_opensearch_red", True,
            "red/yellow cluster: explain unassigned shards, retry failed allocations behind approval; disk, lost primaries as exact advice",
            needs("OpenSearch domain", lambda s: s.opensearch_domains)),
    Runbook("security-incident", "flows.security_incident.flow", "security_incident", True,
            "contain a breach: rotate secrets, lock buckets deny-all except break-glass roles, disable Cognito users; undo puts locks/users back, never rotations",
            needs("secret, bucket or Cognito pool", lambda s: s.security.secrets or s.audit.secrets or s.s3_buckets or s.security.buckets or s.cognito)),
    Runbook("diagnose-api-5xx", "flows.diagnose_api_5xx.flow", "diagnose_api_5xx", False,
            "why an API answers 5XX: rate and latency, the integrated functions' errors by type, timeouts, role policies; ranked causes",
            needs("API Gateway API", lambda s: s.api_gateway_apis)),
    Runbook("diagnose-bedrock-throttling", "flows.diagnose_bedrock_throttling.flow", "diagnose_bedrock_throttling", False,
            "ThrottlingException by Bedrock-calling function: peak minute, share of invocations, quota in force, the increase to request",
            needs("Bedrock-calling function (lambda_functions[].bedrock)", lambda s: any(f.bedrock for f in s.lambda_functions))),
    Runbook("diagnose-stuck-processing", "flows.diagnose_stuck_processing.flow", "diagnose_stuck_processing", True,
            "queue-fed work stuck 'processing': the worker's trigger, queue age, uploads without a result, provider vs own errors; the cause, "
            "the next action; a fixed code bug: reprocess each stuck evidence behind approval (dry run by default)",
            needs("SQS queue with a consumer_function", lambda s: any(q.consumer_function for q in s.sqs_queues)
                  or any(f.sqs_source for f in s.lambda_functions))),
    Runbook("alarm-bridge", "flows.alarm_bridge.flow", "alarm_bridge", False,
            "every minute, all systems: alarms going into ALARM start their runbooks (Prefect events + triggers); missed scheduled runs are CRIT",
            needs("alarm routed to a runbook (alarms.runbooks)", lambda s: s.alarms.runbooks)),
    Runbook("remediate-lambda-timeout", "flows.remediate_lambda_timeout.flow", "remediate_lambda_timeout", True,
            "Lambda timeouts: count them, size a longer timeout or more memory within API/SQS/policy bounds, apply behind approval, watch new invocations",
            needs("Lambda function", lambda s: s.lambda_functions)),
    Runbook("fleet", "flows.fleet.flow", "fleet", False,
            "fan a read-only runbook over many accounts/regions/systems (STS AssumeRole), a flow run per target on a work pool, shared per-API rate limits",
            lambda s: "runs over a targets file (fleet/*.yaml), not one system"),
]
