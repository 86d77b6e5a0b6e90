"""Whether named resources exist (moto): the idle ones weekly-report cannot prove by tag discovery."""

from __future__ import annotations

import boto3

from opsbook.inventory import load_system
from opsbook.resources import confirm_idle

HR = load_system("hr-resource-optimization")


def test_confirm_idle_reports_missing_resources_and_not_existing_ones(aws_mock):
    region = HR.region
    ddb = boto3.client("dynamodb", region_name=region)
    ddb.create_table(TableName="here", BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    boto3.client("apigateway", region_name=region).create_rest_api(name="api-here")
    out = confirm_idle.fn(HR, {"dynamodb": ["here", "gone"], "lambda": ["no-fn"], "s3": ["no-bucket"], "apigateway": ["api-here", "api-gone"]})
    assert {(u.kind, u.resource) for u in out} == {("dynamodb", "gone"), ("lambda", "no-fn"), ("s3", "no-bucket"), ("apigateway", "api-gone")}
    assert all(u.not_found for u in out), [u.reason for u in out]
