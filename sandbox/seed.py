"""Seed the sandbox with the resources an inventory names, healthy by default.

Every resource gets the system's discovery tags (and ``opsbook:system``), so
tag discovery sees what a real tagged deployment would. ``extra`` adds
tag-only resources (found by discovery, not named), used for the union test
and the 10x benchmark; they stay idle (no metrics). The named resources get
two weeks of metrics (``sandbox.metrics.seed_weekly_metrics``).
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.components import declared_names
from opsbook.inventory import System, name_matches
from opsbook.resources import Discovered
from sandbox.alb import seed_load_balancers
from sandbox.server import ACCOUNT_ID, Sandbox, sandbox_client


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("handler.py", "def handler(event, context):\n    return {'ok': True}\n")
    return buf.getvalue()


def sample_alarm_names(system: System) -> list[str]:
    """Alarm names that the system's filters match (globs get 'sandbox' for '*')."""
    names = []
    for f in system.alarms.name_filters:
        if any(c in f for c in "*?["):
            names.append(f.replace("*", "sandbox").replace("?", "x"))
        else:
            names += [f"{f}-high-error-rate", f"{f}-high-latency"]
    subs = [f for f in system.alarms.name_filters if not any(c in f for c in "*?[")]
    for pattern in system.alarms.priorities:  # the seed's alarm response table names real alarms
        if not any(c in pattern for c in "*?["):
            names.append(pattern)
        elif subs:
            names.append((pattern.rstrip("*").rstrip("-") + "-" + subs[0]).replace("*", "x").replace("?", "x"))
    for fn in system.lambda_functions[:3]:
        subs = [f for f in system.alarms.name_filters if not any(c in f for c in "*?[")]
        if subs:
            names.append(f"lambda-errors-{fn.name}-{subs[0]}")
    out = []
    for n in names:
        if n not in out and system.alarms.matches(n):
            out.append(n)
    return out


def function_sizes(system: System, name: str) -> dict[str, int]:
    """Timeout and memory as the inventory expects them (``expected_*``: a healthy function has not drifted); 30 s and
    512 MB where it names none."""
    spec = next((f for f in system.lambda_functions if f.name == name), None)
    return {"Timeout": (spec and spec.expected_timeout_s) or 30, "MemorySize": (spec and spec.expected_memory_mb) or 512}


def seed_system(sb: Sandbox, system: System, extra: dict[str, int] | None = None, weeks_of_metrics: bool = True) -> dict[str, Any]:
    """Create the inventory's resources in the sandbox; returns what was created.

    ``weeks_of_metrics=False`` publishes only the S3 storage metrics of the two weeks (what daily-health reads):
    the test suite's default, since moto scans every stored datapoint for each metric query."""
    r = system.region
    tags = {**system.discovery.tags, "opsbook:system": system.name}
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    extra = extra or {}
    made: dict[str, Any] = {"functions": [], "tables": [], "alarms": [], "log_groups": []}
    now = datetime.now(timezone.utc)

    iam = sandbox_client(sb, "iam", r)
    role = iam.create_role(RoleName=f"{system.name}-lambda-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))["Role"]["Arn"]

    lam = sandbox_client(sb, "lambda", r)
    logs = sandbox_client(sb, "logs", r)
    fn_names = [f.name for f in system.lambda_functions] + [f"{system.name}-extra-fn-{i}" for i in range(extra.get("functions", 0))]
    for name in fn_names:
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=role, Handler="handler.handler",
                            Code={"ZipFile": _zip()}, Tags=tags, **function_sizes(system, name))
        made["functions"].append(name)
    for f in system.lambda_functions:
        if f.aliases:
            v1 = lam.publish_version(FunctionName=f.name)["Version"]
            v2 = lam.publish_version(FunctionName=f.name)["Version"]
            for a in f.aliases:
                lam.create_alias(FunctionName=f.name, Name=a, FunctionVersion=v2 if v2 != v1 else v1)

    groups = [g.name for g in system.all_log_groups()]
    groups += [f"/aws/lambda/{n}" for n in fn_names if f"/aws/lambda/{n}" not in groups]
    groups += [f"/{system.name}/extra-{i}" for i in range(extra.get("log_groups", 0))]
    for g in groups:
        logs.create_log_group(logGroupName=g, tags=tags)
        logs.create_log_stream(logGroupName=g, logStreamName="sandbox")
        logs.put_log_events(logGroupName=g, logStreamName="sandbox", logEvents=[
            {"timestamp": int((now - timedelta(hours=h)).timestamp() * 1000), "message": f"INFO request handled in {100 + h} ms"} for h in (5, 3, 1)])
        made["log_groups"].append(g)

    ddb = sandbox_client(sb, "dynamodb", r)
    table_names = [t.name for t in system.dynamodb_tables] + [f"{system.name}-extra-table-{i}" for i in range(extra.get("tables", 0))]
    for name in table_names:
        spec = next((t for t in system.dynamodb_tables if t.name == name), None)
        keys = [(spec.partition_key if spec else "id", "HASH")] + ([(spec.sort_key, "RANGE")] if spec and spec.sort_key else [])
        ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
                         AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys], Tags=tag_list)
        made["tables"].append(name)
    for t in system.dynamodb_tables:
        if t.created_at_attribute:
            start, _ = system.yesterday()
            for i in range(5):
                ts = start + timedelta(hours=2 + i * 3)
                value: dict[str, str] = ({"S": ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")} if t.created_at_format == "iso8601"
                                         else {"N": str(int(ts.timestamp() * (1000 if t.created_at_format == "epoch_millis" else 1)))})
                item = {t.partition_key: {"S": f"sandbox-{i}"}, t.created_at_attribute: value}
                if t.sort_key:
                    item[t.sort_key] = {"S": f"sandbox-{i}"}
                if t.user_attribute:
                    item[t.user_attribute] = {"S": f"user-{i % 3}"}
                ddb.put_item(TableName=t.name, Item=item)
        if t.backup_required:
            ddb.update_continuous_backups(TableName=t.name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
            ddb.create_backup(TableName=t.name, BackupName=f"{t.name}-sandbox")

    es = sandbox_client(sb, "opensearch", r)
    for d in system.opensearch_domains:
        es.create_domain(DomainName=d.name, EngineVersion="OpenSearch_2.11", TagList=tag_list)
        sb.opensearch.add_domain(d.name)
        for idx in d.indices or ["default"]:
            sb.opensearch.create_index(d.name, idx, shards=1, replicas=1, docs={f"{i}": {"n": i} for i in range(3)})

    apigw = sandbox_client(sb, "apigateway", r)
    for a in system.api_gateway_apis:
        apigw.create_rest_api(name=a.name, tags=tags)

    ecs = sandbox_client(sb, "ecs", r)
    for s in system.ecs_services:
        ecs.create_cluster(clusterName=s.cluster, tags=[{"key": k, "value": v} for k, v in tags.items()])
        for release in (1, 2):  # two releases: the service runs the second
            td = ecs.register_task_definition(family=s.service, containerDefinitions=[{"name": "app", "image": f"app:{release}", "memory": 512}])["taskDefinition"]["taskDefinitionArn"]
        ecs.create_service(cluster=s.cluster, serviceName=s.service, taskDefinition=td, desiredCount=s.min_tasks or 2,
                           tags=[{"key": k, "value": v} for k, v in tags.items()])
        sb.set_ecs_running(r, s.cluster, s.service, s.min_tasks or 2)
    made["target_groups"] = seed_load_balancers(sb, system)  # the ALB in front of them: healthy targets, metric dimensions

    s3 = sandbox_client(sb, "s3", r)
    cw = sandbox_client(sb, "cloudwatch", r)
    for b in system.s3_buckets:
        kw: dict[str, Any] = {} if r == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": r}}
        s3.create_bucket(Bucket=b.name, **kw)
        s3.put_bucket_tagging(Bucket=b.name, Tagging={"TagSet": tag_list})

    sqs = sandbox_client(sb, "sqs", r)
    for q in system.sqs_queues:
        attrs = {}
        if q.dlq:
            dlq_url = sqs.create_queue(QueueName=q.dlq, tags=tags)["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})
        sqs.create_queue(QueueName=q.name, Attributes=attrs, tags=tags)

    topic = system.notifications.sns_topic
    if topic:  # the topic the alarms notify
        made["topic_arn"] = sandbox_client(sb, "sns", r).create_topic(Name=topic.split(":")[-1], Tags=tag_list)["TopicArn"]

    # every alarm the inventory declares (one per seeded function or table for a template), healthy: actions, data
    found = Discovered(lambda_functions=fn_names, dynamodb_tables=table_names)
    declared = [n.replace("*", "sandbox").replace("?", "x") if d.is_pattern else n for n, d, _ in declared_names(system, found)]
    alarm_names = list(dict.fromkeys(declared + sample_alarm_names(system)))
    alarm_names += [f"{system.name}-extra-alarm-{i}-{(system.alarms.name_filters or ['x'])[0].replace('*', 'x')}" for i in range(extra.get("alarms", 0))]
    for n in alarm_names:
        cw.put_metric_alarm(AlarmName=n, MetricName="Errors", Namespace="AWS/Lambda", Statistic="Sum", Period=300, EvaluationPeriods=1,
                            Threshold=5, ComparisonOperator="GreaterThanThreshold", AlarmActions=[made["topic_arn"]] if topic else [])
        made["alarms"].append(n)

    kms = sandbox_client(sb, "kms", r)
    for alias in system.audit.kms_key_aliases:  # the keys whose rotation the audit checks: rotating
        key = kms.create_key(Description=f"{system.name} {alias}", Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()])["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=alias if alias.startswith("alias/") else f"alias/{alias}", TargetKeyId=key)
        kms.enable_key_rotation(KeyId=key)

    if system.cognito and system.cognito.user_pool_name:
        sandbox_client(sb, "cognito-idp", r).create_user_pool(PoolName=system.cognito.user_pool_name, UserPoolTags=tags)

    if system.security_logs and system.security_logs.log_group not in made["log_groups"]:
        logs.create_log_group(logGroupName=system.security_logs.log_group, tags=tags)
        logs.create_log_stream(logGroupName=system.security_logs.log_group, logStreamName="sandbox")
        made["log_groups"].append(system.security_logs.log_group)

    # queue-fed workers consuming (mapping Enabled, LastProcessingResult OK), queues young, uploads processed: what moto lacks
    from sandbox.leh_processing import seed_processing

    made["processing"] = seed_processing(sb, system)

    # two weeks of the metrics AWS and the system's code publish (S3 storage too: moto publishes none)
    from sandbox.ecs_performance import seed_service_performance
    from sandbox.metrics import seed_weekly_metrics

    made["metrics"] = seed_weekly_metrics(sb, system, namespaces=None if weeks_of_metrics else {"AWS/S3"})
    made["performance"] = seed_service_performance(sb, system)  # the ECS services' last hour: ALB, utilisation, agents' lines
    return made


def account_matches(system: System) -> bool:
    return system.account_id in (None, ACCOUNT_ID)


__all__ = ["seed_system", "sample_alarm_names", "name_matches"]
