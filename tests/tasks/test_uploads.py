"""tasks/s3.py's uploads reconciliation on in-process moto: the listing pages to its bound, the lookups go 100 keys a
BatchGetItem, the newest due uploads are sampled, keys that do not map are counted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3

from opsbook import aws
from opsbook.inventory import System
from tasks.s3 import read_uploads

REGION = "us-east-1"


def system(**stuck) -> System:
    return System(name="x", region=REGION, sqs_queues=[{"name": "jobs", "consumer_function": "worker"}],
                  dynamodb_tables=[{"name": "results", "partition_key": "case_id", "sort_key": "evidence_id"}],
                  stuck_processing={"uploads_bucket": "uploads-bucket", "uploads_prefix": "uploads/", "results_table": "results", **stuck})


def setup(n: int, processed: set[int]) -> None:
    s3, ddb = boto3.client("s3", region_name=REGION), boto3.client("dynamodb", region_name=REGION)
    s3.create_bucket(Bucket="uploads-bucket")
    ddb.create_table(TableName="results", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "case_id", "KeyType": "HASH"}, {"AttributeName": "evidence_id", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "case_id", "AttributeType": "S"}, {"AttributeName": "evidence_id", "AttributeType": "S"}])
    for i in range(n):
        s3.put_object(Bucket="uploads-bucket", Key=f"uploads/u/case-{i % 4}/ev-{i:05d}.pdf", Body=b"x")
        if i in processed:
            ddb.put_item(TableName="results", Item={"case_id": {"S": f"case-{i % 4}"}, "evidence_id": {"S": f"ev-{i:05d}"}})
    s3.put_object(Bucket="uploads-bucket", Key="uploads/readme.txt", Body=b"x")


def test_sampled_lookups_go_100_a_call_and_count_what_is_missing(aws_mock):
    setup(250, processed=set(range(0, 250, 2)))
    calls = aws.start_call_log()
    r = read_uploads(system(reconcile_sample=150), datetime.now(timezone.utc) + timedelta(hours=1))
    assert (r.listed, r.list_cut, r.in_window, r.pending) == (251, False, 251, 0)
    assert len(r.checked) == 150 and r.unmapped == ["uploads/readme.txt"]  # counted, never sampled nor judged
    assert len(r.missing) == sum(1 for c in r.checked if int(c["evidence_id"][3:]) % 2)
    assert calls.by_operation().get("dynamodb:BatchGetItem") == 2


def test_the_listing_stops_at_its_bound_and_says_so_and_young_uploads_are_not_due(aws_mock):
    setup(120, processed=set())
    calls = aws.start_call_log()
    r = read_uploads(system(reconcile_list_max=100), datetime.now(timezone.utc) + timedelta(hours=1))
    assert (r.listed, r.list_cut, len(r.missing), r.unmapped) == (100, True, 99, ["uploads/readme.txt"])  # keys in order: readme first
    young = read_uploads(system(), datetime.now(timezone.utc))
    assert (young.pending, young.checked, young.missing) == (121, [], [])
    assert calls.by_operation().get("s3:ListObjectsV2") >= 1
