"""A service's target group resolved to the CloudWatch dimensions of its ALB metrics (tasks/elb.py), and the counts the
availability reads from them (tasks/cloudwatch.py): pure, then against in-process moto."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest

from opsbook.inventory import EcsService, load_system
from tasks.cloudwatch import alb_traffic, api_traffic, read_traffic
from tasks.elb import alb_target, alb_targets, dimension_of

SVC = EcsService(cluster="c", service="s", target_group="tg-a")
TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg-a/0123456789abcdef"
LB_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/lb-a/fedcba9876543210"


def test_arn_dimensions_and_a_target_group_behind_no_load_balancer():
    assert dimension_of(TG_ARN) == "targetgroup/tg-a/0123456789abcdef"
    assert dimension_of(LB_ARN) == "app/lb-a/fedcba9876543210"
    t = alb_target(SVC, {"TargetGroupArn": TG_ARN, "LoadBalancerArns": [LB_ARN]})
    assert t.error is None and t.target_group_dim == "targetgroup/tg-a/0123456789abcdef" and t.load_balancer_dims == ["app/lb-a/fedcba9876543210"]
    alone = alb_target(SVC, {"TargetGroupArn": TG_ARN, "LoadBalancerArns": []})
    assert alone.error.startswith("no load balancer forwards to target group tg-a (service c/s)")
    assert alb_target(SVC, None, "AccessDenied").error == "AccessDenied"


def test_the_subjects_metrics():
    sub = alb_traffic(alb_target(SVC, {"TargetGroupArn": TG_ARN, "LoadBalancerArns": [LB_ARN]}))
    assert sub.subject == "tg-a" and sub.service == "c/s" and [s.metric for s in sub.series] == [
        "RequestCount", "HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count"]
    by_arn = alb_traffic(alb_target(EcsService(cluster="c", service="s", target_group=TG_ARN), None, "gone"))
    assert by_arn.subject == "tg-a" and by_arn.error == "gone" and by_arn.series == []
    assert [s.metric for s in api_traffic("todo-api").series] == ["Count", "5XXError"]


@pytest.mark.usefixtures("aws_mock")
def test_resolved_against_moto_and_counted_in_one_batch(monkeypatch):
    td = load_system("t-developer")
    ec2, elb = boto3.client("ec2", region_name=td.region), boto3.client("elbv2", region_name=td.region)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{td.region}{z}")["Subnet"]["SubnetId"]
               for i, z in enumerate("ab")]
    lb = elb.create_load_balancer(Name="lb-a", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elb.create_target_group(Name="t-developer-tg-production", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip")["TargetGroups"][0]
    elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80, DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
    [t] = alb_targets(td)
    assert t.error is None and t.load_balancer_dims == [dimension_of(lb)] and t.service == "t-developer-cluster-production/t-developer-service-production"

    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    cw = boto3.client("cloudwatch", region_name=td.region)
    pair = [{"Name": "LoadBalancer", "Value": t.load_balancer_dims[0]}, {"Name": "TargetGroup", "Value": t.target_group_dim}]
    cw.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[
        {"MetricName": "RequestCount", "Dimensions": pair, "Timestamp": now - timedelta(hours=2), "Value": 4000.0},
        {"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": pair, "Timestamp": now - timedelta(hours=2), "Value": 6.0},
        {"MetricName": "HTTPCode_ELB_5XX_Count", "Dimensions": pair[:1], "Timestamp": now - timedelta(hours=3), "Value": 4.0},
        {"MetricName": "RequestCount", "Dimensions": pair, "Timestamp": now - timedelta(hours=30), "Value": 9999.0}])  # before the window
    gone = alb_target(SVC, None, "target group tg-a not found")
    [got, missing, quiet] = read_traffic(td.region, [alb_traffic(t), alb_traffic(gone), api_traffic("todo-api")], now - timedelta(hours=24), now)
    assert (got.requests, got.errors, got.error) == (4004.0, 10.0, None)
    assert missing.error == "target group tg-a not found" and (quiet.requests, quiet.errors, quiet.error) == (None, None, None)
