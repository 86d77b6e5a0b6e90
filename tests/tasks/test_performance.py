"""The performance reads (tasks/ecs.py check_utilisation, tasks/cloudwatch.py check_target_metrics, tasks/logs.py
check_agent_times) against in-process moto: what they cannot find or read is UNKNOWN with the reason, never OK."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3

from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.inventory import load_system
from tasks.ecs import check_utilisation
from tasks.cloudwatch import check_target_metrics
from tasks.elb import alb_targets
from tasks.logs import check_agent_times

SVC = "t-developer-cluster-production/t-developer-service-production"


def running(n: int | None) -> Finding:
    details = {} if n is None else {"running": n, "desired": 2}
    return Finding(check="ecs-service", resource=SVC, status=Status.OK if n else Status.UNKNOWN, summary="x", details=details)


def test_utilisation_one_call_for_every_service_no_datapoint_while_running_is_unknown(aws_mock):
    td = load_system("t-developer")
    calls = aws.start_call_log()
    missing = Finding(check="ecs-service", resource="c/gone", status=Status.CRIT, summary="named in the inventory but does not exist")
    out = check_utilisation.fn(td, [running(2), missing])
    assert [(f.check, f.resource, f.status) for f in out] == [("ecs-cpu", SVC, Status.UNKNOWN), ("ecs-memory", SVC, Status.UNKNOWN)]
    assert "although 2 task(s) run" in out[0].summary and calls.by_operation() == {"cloudwatch:GetMetricData": 1}
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    dims = [{"Name": "ClusterName", "Value": "t-developer-cluster-production"}, {"Name": "ServiceName", "Value": "t-developer-service-production"}]
    now = datetime.now(timezone.utc)
    cw.put_metric_data(Namespace="AWS/ECS", MetricData=[{"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": now - timedelta(minutes=m),
                                                         "Value": v, "Unit": "Percent"} for m, v in ((30, 71.0), (90, 99.0))])  # 90 min ago: outside
    cpu, mem = check_utilisation.fn(td, [running(2)])
    assert (cpu.status, cpu.value) == (Status.WARN, 71.0) and mem.status is Status.UNKNOWN
    assert check_utilisation.fn(td, []) == []


def test_target_group_missing_or_behind_no_load_balancer_is_unknown_naming_it(aws_mock):
    td = load_system("t-developer")
    out = check_target_metrics.fn(td, alb_targets(td))
    assert [f.check for f in out] == ["alb-latency", "alb-5xx", "alb-unhealthy"] and all(f.status is Status.UNKNOWN for f in out)
    assert "target group t-developer-tg-production not found in us-east-1" in out[0].summary
    vpc = boto3.client("ec2", region_name="us-east-1").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    boto3.client("elbv2", region_name="us-east-1").create_target_group(Name="t-developer-tg-production", Protocol="HTTP", Port=80, VpcId=vpc)
    calls = aws.start_call_log()
    out = check_target_metrics.fn(td, alb_targets(td))
    assert all(f.status is Status.UNKNOWN and "no load balancer forwards to target group" in f.summary for f in out)
    assert calls.by_operation() == {"elbv2:DescribeTargetGroups": 1}  # nothing to ask CloudWatch


def test_agent_times_of_a_missing_log_group_are_unknown_and_lines_are_judged(aws_mock):
    td = load_system("t-developer")
    [f] = check_agent_times.fn(td, [running(2)], aws.Deadline(10))
    assert f.status is Status.UNKNOWN and "log group /ecs/t-developer-production" in f.summary and "ResourceNotFound" in f.summary
    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName="/ecs/t-developer-production")
    logs.create_log_stream(logGroupName="/ecs/t-developer-production", logStreamName="s")
    [f] = check_agent_times.fn(td, [running(2)], aws.Deadline(10))
    assert f.status is Status.UNKNOWN and "no line with agent and execution_time" in f.summary
    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    logs.put_log_events(logGroupName="/ecs/t-developer-production", logStreamName="s", logEvents=[
        {"timestamp": now - 2 * 3600_000, "message": "agent=parser execution_time=99"},  # outside the hour
        {"timestamp": now - 60_000, "message": '{"agent": "search", "execution_time": 12.5}'},
        {"timestamp": now - 50_000, "message": "agent=parser execution_time=1.5"}])
    out = check_agent_times.fn(td, [running(2)], aws.Deadline(10))
    assert [(f.resource, f.status, f.value) for f in out] == [("search", Status.WARN, 12.5), (SVC, Status.OK, 1)]
