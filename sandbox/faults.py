"""Named fault scenarios, applied to a seeded system in the sandbox.

Each returns what it did (the resource and the numbers a test asserts on).
A fault that needs a resource the inventory lacks raises ValueError saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.components import declared_names
from opsbook.inventory import System
from opsbook.resources import Discovered
from sandbox.alb import target_group_missing
from sandbox.seed import sample_alarm_names
from sandbox.server import Sandbox, sandbox_client


def _need(items: list[Any], what: str, fault: str, system: System) -> Any:
    if not items:
        raise ValueError(f"fault {fault!r} needs {what} in the inventory of {system.name}")
    return items[0]


def _put(sb: Sandbox, system: System, group: str, stream: str, messages: list[tuple[datetime, str]], create_group: bool = False) -> None:
    """Write log lines as a function would (the one place the sandbox writes CloudWatch Logs)."""
    logs = sandbox_client(sb, "logs", system.region)
    if create_group and not any(g["logGroupName"] == group for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]):
        logs.create_log_group(logGroupName=group)
    try:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass  # the stream is reused on purpose
    events = sorted(({"timestamp": int(t.timestamp() * 1000), "message": m} for t, m in messages), key=lambda e: e["timestamp"])
    for i in range(0, len(events), 1000):  # PutLogEvents takes at most 10,000 events / 1 MB a call
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events[i : i + 1000])


def table_missing(sb: Sandbox, system: System, table: str | None = None) -> dict[str, Any]:
    name = table or _need([t.name for t in system.dynamodb_tables], "a DynamoDB table", "table-missing", system)
    sandbox_client(sb, "dynamodb", system.region).delete_table(TableName=name)
    return {"resource": name}


def alarm_firing(sb: Sandbox, system: System, alarm: str | None = None) -> dict[str, Any]:
    name = alarm or _need(sample_alarm_names(system), "an alarm name filter", "alarm-firing", system)
    sandbox_client(sb, "cloudwatch", system.region).set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="Threshold Crossed: 1 datapoint [12.0] > 5.0 (sandbox fault)")
    return {"resource": name}


def _declared(system: System, fault: str, alarm: str | None, index: int = 0) -> str:
    names = [n for n, d, _ in declared_names(system, Discovered()) if not d.is_pattern]
    return alarm or _need(names[index:], "a declared alarm", fault, system)


def alarm_missing(sb: Sandbox, system: System, alarm: str | None = None) -> dict[str, Any]:
    """A declared alarm that was deleted (or never created)."""
    name = _declared(system, "alarm-missing", alarm)
    sandbox_client(sb, "cloudwatch", system.region).delete_alarms(AlarmNames=[name])
    return {"resource": name}


def alarm_no_actions(sb: Sandbox, system: System, alarm: str | None = None) -> dict[str, Any]:
    """A declared alarm re-created without actions: it fires and nobody is told."""
    name = _declared(system, "alarm-no-actions", alarm, 1)
    sandbox_client(sb, "cloudwatch", system.region).put_metric_alarm(
        AlarmName=name, MetricName="Errors", Namespace="AWS/Lambda", Statistic="Sum", Period=300, EvaluationPeriods=1, Threshold=5,
        ComparisonOperator="GreaterThanThreshold", AlarmActions=[])
    return {"resource": name}


def alarm_insufficient_data(sb: Sandbox, system: System, alarm: str | None = None, minutes: int = 180) -> dict[str, Any]:
    """A declared alarm whose metric stopped ``minutes`` ago (INSUFFICIENT_DATA since then)."""
    from moto.core.utils import utcnow

    name = _declared(system, "alarm-insufficient-data", alarm, 2)
    sandbox_client(sb, "cloudwatch", system.region).set_alarm_state(AlarmName=name, StateValue="INSUFFICIENT_DATA", StateReason="no datapoints (sandbox fault)")
    sb.backend("cloudwatch", system.region).alarms[name].state_updated_timestamp = utcnow() - timedelta(minutes=minutes)
    return {"resource": name, "minutes": minutes}


def alarm_topic_deleted(sb: Sandbox, system: System) -> dict[str, Any]:
    """The SNS topic the alarms notify, deleted: every alarm's action goes nowhere."""
    sns = sandbox_client(sb, "sns", system.region)
    topic = _need([system.notifications.sns_topic] if system.notifications.sns_topic else [], "an SNS topic", "alarm-topic-deleted", system)
    arn = next(t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].split(":")[-1] == topic.split(":")[-1])
    sns.delete_topic(TopicArn=arn)
    return {"resource": arn}


def log_errors(sb: Sandbox, system: System, group: str | None = None, inside: int = 7, outside: int = 4) -> dict[str, Any]:
    """ERROR lines inside the last 24 h (counted) and 30-40 h ago (not counted)."""
    name = group or _need([g.name for g in system.all_log_groups()], "a function or log group", "log-errors", system)
    now = datetime.now(timezone.utc)
    msg = "ERROR Failed to process request for kim.minsu@example.com token=sk-abcdefghijklmnopqrstu: Task timed out after 30.00 seconds"
    step = 22 * 60 / max(inside, 1)  # spread over the last 22 h
    _put(sb, system, name, "fault-recent", [(now - timedelta(minutes=30 + i * step), f"{msg} #{i}") for i in range(inside)])
    if outside:
        _put(sb, system, name, "fault-old", [(now - timedelta(hours=30 + i), f"{msg} old #{i}") for i in range(outside)])
    return {"resource": name, "inside": inside, "outside": outside}


def ecs_degraded(sb: Sandbox, system: System, running: int = 1) -> dict[str, Any]:
    s = _need(system.ecs_services, "an ECS service", "ecs-degraded", system)
    desired = s.min_tasks or 2
    sb.set_ecs_running(system.region, s.cluster, s.service, min(running, desired - 1))
    return {"resource": f"{s.cluster}/{s.service}", "running": min(running, desired - 1), "desired": desired}


def opensearch_red(sb: Sandbox, system: System) -> dict[str, Any]:
    d = _need(system.opensearch_domains, "an OpenSearch domain", "opensearch-red", system)
    index = (d.indices or ["default"])[0]
    sb.opensearch.make_red(d.name, index, reason="NODE_LEFT")
    return {"resource": d.name, "index": index}


def opensearch_unreachable(sb: Sandbox, system: System) -> dict[str, Any]:
    d = _need(system.opensearch_domains, "an OpenSearch domain", "opensearch-unreachable", system)
    sb.opensearch.set_unreachable(d.name, True)
    return {"resource": d.name}


def dlq_messages(sb: Sandbox, system: System, count: int = 5) -> dict[str, Any]:
    q = _need([q for q in system.sqs_queues if q.dlq], "an SQS queue with a DLQ", "dlq-messages", system)
    sqs = sandbox_client(sb, "sqs", system.region)
    url = sqs.get_queue_url(QueueName=q.dlq)["QueueUrl"]
    for i in range(count):
        sqs.send_message(QueueUrl=url, MessageBody=f'{{"evidence_id": "ev-{i}", "case_id": "case-{i % 2}"}}')
    return {"resource": q.dlq, "count": count}


def security_events(sb: Sandbox, system: System, failed_logins: int = 25, rate_limited: int = 3) -> dict[str, Any]:
    sec = system.security_logs
    if sec is None:
        raise ValueError(f"fault 'security-events' needs security_logs in the inventory of {system.name}")
    now = datetime.now(timezone.utc)
    lines = [(now - timedelta(minutes=10 + i), f"WARN authentication failed for user lee@example.com from 203.0.113.{i % 250}") for i in range(failed_logins)]
    lines += [(now - timedelta(minutes=5 + i), f"WARN rate_limit_exceeded api_key=AKIAABCDEFGHIJKLMNOP #{i}") for i in range(rate_limited)]
    _put(sb, system, sec.log_group, "fault-security", lines)
    return {"resource": sec.log_group, "failed_logins": failed_logins, "rate_limited": rate_limited}


def backup_missing(sb: Sandbox, system: System) -> dict[str, Any]:
    t = _need([t for t in system.dynamodb_tables if t.backup_required], "a table with backup_required", "backup-missing", system)
    ddb = sandbox_client(sb, "dynamodb", system.region)
    for b in ddb.list_backups(TableName=t.name)["BackupSummaries"]:
        ddb.delete_backup(BackupArn=b["BackupArn"])
    ddb.update_continuous_backups(TableName=t.name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False})
    return {"resource": t.name}


def bad_deploy(sb: Sandbox, system: System, in_progress: bool = True) -> dict[str, Any]:
    """A new ECS release that is going wrong: a new task definition revision, the service updated to it."""
    s = _need(system.ecs_services, "an ECS service", "bad-deploy", system)
    ecs = sandbox_client(sb, "ecs", system.region)
    before = ecs.describe_services(cluster=s.cluster, services=[s.service])["services"][0]["taskDefinition"]
    td = ecs.register_task_definition(family=s.service, containerDefinitions=[{"name": "app", "image": "app:bad", "memory": 512}])["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster=s.cluster, service=s.service, taskDefinition=td)
    if in_progress:
        sb.start_ecs_deployment(system.region, s.cluster, s.service, before)
    else:
        sb.complete_ecs_rollout(system.region, s.cluster, s.service)
    return {"resource": f"{s.cluster}/{s.service}", "from": before, "to": td}


def bad_release(sb: Sandbox, system: System) -> dict[str, Any]:
    """A new Lambda version published and the alias moved to it."""
    f = _need([f for f in system.lambda_functions if f.aliases], "a Lambda function with an alias", "bad-release", system)
    lam = sandbox_client(sb, "lambda", system.region)
    before = lam.get_alias(FunctionName=f.name, Name=f.aliases[0])["FunctionVersion"]
    lam.update_function_configuration(FunctionName=f.name, Description=f"bad release {datetime.now(timezone.utc).isoformat()}")
    version = lam.publish_version(FunctionName=f.name)["Version"]
    lam.update_alias(FunctionName=f.name, Name=f.aliases[0], FunctionVersion=version)
    return {"resource": f"{f.name}:{f.aliases[0]}", "from": before, "to": version}


def slo_breach(sb: Sandbox, system: System, requests: int = 10_000, errors_pct: float = 2.0, hours_ago: float = 0.5) -> dict[str, Any]:
    """A burst of 5XX ``hours_ago`` (inside daily-health's 24 h; ``hours_ago`` past local midnight puts it in weekly-report's
    week): ``errors_pct`` % of ``requests`` on every API and seeded target group, far below any availability SLO."""
    from sandbox.metrics import recent_traffic

    if system.thresholds.availability_slo_pct is None:
        raise ValueError(f"fault 'slo-breach' needs thresholds.availability_slo_pct in the inventory of {system.name}")
    errors = round(requests * errors_pct / 100)
    subjects = recent_traffic(sb, system, requests, errors, hours_ago)
    if not subjects:
        raise ValueError(f"fault 'slo-breach' needs an API Gateway API or an ECS service with a target_group in the inventory of {system.name}")
    return {"resource": subjects[0], "subjects": subjects, "requests": requests, "errors": errors}


FAULTS: dict[str, Callable[..., dict[str, Any]]] = {
    "bad-deploy": bad_deploy,
    "bad-release": bad_release,
    "table-missing": table_missing,
    "alarm-firing": alarm_firing,
    "alarm-missing": alarm_missing,
    "alarm-no-actions": alarm_no_actions,
    "alarm-insufficient-data": alarm_insufficient_data,
    "alarm-topic-deleted": alarm_topic_deleted,
    "log-errors": log_errors,
    "ecs-degraded": ecs_degraded,
    "opensearch-red": opensearch_red,
    "opensearch-unreachable": opensearch_unreachable,
    "dlq-messages": dlq_messages,
    "security-events": security_events,
    "backup-missing": backup_missing,
    "slo-breach": slo_breach,
    "alb-target-group-missing": target_group_missing,
}


def _register_scenarios() -> None:
    """The remediation runbooks' scenarios (each module owns its own) under their fault names."""
    from sandbox import capacity, endpoint_double, opensearch_faults, restarts

    FAULTS.update(capacity.SCENARIOS)
    FAULTS.update(restarts.SCENARIOS)
    FAULTS.update(endpoint_double.SCENARIOS)
    FAULTS.update({f"opensearch-{name}": fn for name, fn in opensearch_faults.SCENARIOS.items()})


_register_scenarios()


def _register_lambda_faults() -> None:
    """A function whose Duration p99 nears its timeout (daily-health) and one whose memory/timeout drifted from the
    inventory's expected_* (maintenance-audit); their modules own them."""
    from sandbox import audits, lambda_timeouts

    FAULTS.update({"lambda-slow": lambda_timeouts.slow_durations, "lambda-config-drift": audits.function_config})


_register_lambda_faults()


def _register_service_performance() -> None:
    """An ECS service's last hour gone wrong (001 P1 서비스 성능 저하): CPU or memory over its target, an agent slower
    than its target, target 5XX over the error SLO, responses past 60 s, unhealthy hosts; sandbox.ecs_performance owns them."""
    from sandbox import ecs_performance

    FAULTS.update(ecs_performance.SCENARIOS)


_register_service_performance()


def _register_processing_faults() -> None:
    """LEH's AI worker stuck (003 시나리오 A): trigger off, queue stalled, uploads without a result, OpenAI outage; and
    bill-shock-breaker's (시나리오 C): a case's spend spiking, the worker's source queue gone."""
    from sandbox import leh_processing, leh_spend

    FAULTS.update(leh_processing.SCENARIOS)
    FAULTS.update(leh_spend.SCENARIOS)


_register_processing_faults()


def _register_table_restore() -> None:
    """Items lost after a backup, and a function reading a table (restore-table); sandbox.table_restore owns them."""
    from sandbox import table_restore

    FAULTS.update(table_restore.SCENARIOS)


_register_table_restore()


def _register_case_faults() -> None:
    """A LEH case closed by mistake, its index dropped (003 시나리오 B; starts the sandbox's PostgreSQL); sandbox.leh_cases owns it."""
    from sandbox import leh_cases

    FAULTS.update(leh_cases.SCENARIOS)


_register_case_faults()


def _register_index_restore() -> None:
    """An OpenSearch index deleted behind its alias, or damaged where read by its name, with a snapshot holding it
    (restore-index); sandbox.index_restore owns them."""
    from sandbox import index_restore

    FAULTS.update(index_restore.SCENARIOS)


_register_index_restore()


# What `opsbook demo` injects into each seed system.
DEMO_FAULTS: dict[str, list[str]] = {
    "hr-resource-optimization": ["alarm-firing", "log-errors", "opensearch-red"],
    "t-developer": ["ecs-degraded", "security-events", "tdev-slow-agent"],
    "todo-app": ["backup-missing"],
    "leh": ["dlq-messages", "log-errors", "leh-queue-stalled"],
}


def apply_fault(sb: Sandbox, system: System, name: str, **params: Any) -> dict[str, Any]:
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; known faults: {', '.join(sorted(FAULTS))}")
    return {"fault": name, **FAULTS[name](sb, system, **params)}
