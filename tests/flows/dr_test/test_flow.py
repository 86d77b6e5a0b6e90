"""dr-test against the sandbox: pass, corrupted restore, no backup, leftovers of a killed run."""

from __future__ import annotations

import boto3
import pytest

from flows.dr_test import flow as drt
from flows.dr_test.flow import dr_test
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.report import RunReport

pytestmark = pytest.mark.usefixtures("prefect_harness")
REGION = "ap-northeast-2"


def run(system="todo-app", **params) -> RunReport:
    report = dr_test(system=system, return_state=True, **params).result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def ddb(sandbox, region=REGION):
    return boto3.client("dynamodb", region_name=region, endpoint_url=sandbox.endpoint)


def drtest_tables(sandbox, region=REGION):
    return [t for t in ddb(sandbox, region).list_tables()["TableNames"] if "-drtest-" in t]


@pytest.fixture
def todo(seeded, sandbox):
    inv = seeded("todo-app")
    c = ddb(sandbox)
    for i in range(25):
        c.put_item(TableName="todos", Item={"id": {"S": f"todo-{i}"}, "title": {"S": f"task {i}"}})
    c.create_backup(TableName="todos", BackupName="todos-nightly")
    return inv


def test_dry_run_then_good_restores_pass_are_removed_kept_in_history_and_covered_by_the_policy(todo, sandbox):
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    dry = run()
    assert dry.outcome == "planned"
    [a] = dry.plan["actions"]
    assert a["kind"] == "restore-table" and a["resource"] == "todos" and "-drtest-" in a["target"]
    assert drtest_tables(sandbox) == []  # a dry run touches nothing

    report = run(dry_run=False)
    f = [f for f in report.findings if f.check == "dr-dynamodb" and f.resource == "todos"][0]
    assert f.status is Status.OK and "PASS: 25 items restored, 25 in the backup" in f.summary and "RTO 30 min" in f.summary
    assert report.outcome == "done" and report.approval["via"] == "policy"
    assert drtest_tables(sandbox) == []
    cleanup = [r for r in report.records if r["kind"] == "cleanup"][0]
    assert "table todos-drtest-" in cleanup["detail"]
    policy = set(policy_for(drt.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert "dynamodb:RestoreTableFromBackup" in used and used <= policy, used - policy
    assert report.undeclared_iam_actions == []

    c = ddb(sandbox)  # writes since the backup do not fail a good restore
    c.put_item(TableName="todos", Item={"id": {"S": "todo-0"}, "title": {"S": "edited after the backup"}})
    c.put_item(TableName="todos", Item={"id": {"S": "todo-new"}, "title": {"S": "added after the backup"}})
    again = run(dry_run=False)
    f = [f for f in again.findings if f.check == "dr-dynamodb" and f.resource == "todos"][0]
    assert f.status is Status.OK and "25 items restored, 25 in the backup" in f.summary

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["dr-test-todo-app-history"])))
    rows = json.loads(max(arts, key=lambda a: a.created).data)
    todos = [r for r in rows if r["component"] == "dr-dynamodb todos"]
    assert len(todos) >= 2 and all(r["result"] == "PASS" and r["rto_s"] == 1800 for r in todos[:2])  # newest first


def test_leftovers_are_removed_and_a_corrupted_restore_is_detected(todo, sandbox):
    c = ddb(sandbox)
    c.create_table(TableName="todos-drtest-deadbeef", BillingMode="PAY_PER_REQUEST",
                   KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}], AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=sandbox.endpoint)
    s3.create_bucket(Bucket="todo-app-drtest-123456789012", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="todo-app-drtest-123456789012", Key="drtest/todo-app/deadbeef/x", Body=b"left")
    sandbox.corrupt_next_restore(REGION)
    report = run(dry_run=False)
    left = [f for f in report.findings if f.check == "dr-leftovers"][0]
    assert left.value == 2
    assert "todo-app-drtest-123456789012" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    f = [f for f in report.findings if f.check == "dr-dynamodb" and f.resource == "todos"][0]
    assert f.status is Status.CRIT and "FAIL: 24 items restored, 25 in the backup" in f.summary
    assert report.status is Status.CRIT and report.outcome == "failed"
    assert drtest_tables(sandbox) == []  # removed even though it failed


def test_no_backup_is_crit_with_the_reason(seeded, sandbox):
    seeded("todo-app")
    c = ddb(sandbox)
    for b in c.list_backups(TableName="todos")["BackupSummaries"]:
        c.delete_backup(BackupArn=b["BackupArn"])
    c.update_continuous_backups(TableName="todos", PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False})
    report = run(dry_run=False)
    f = [f for f in report.findings if f.check == "dr-dynamodb"][0]
    assert f.status is Status.CRIT and "no on-demand backup and PITR disabled" in f.summary


def test_s3_versions_and_opensearch_snapshot(seeded, sandbox):
    hr = seeded("hr-resource-optimization")
    s3 = boto3.client("s3", region_name="us-east-2", endpoint_url=sandbox.endpoint)
    s3.put_bucket_versioning(Bucket="hr-resumes-bucket-team2", VersioningConfiguration={"Status": "Enabled"})
    for v in ("first", "second"):
        s3.put_object(Bucket="hr-resumes-bucket-team2", Key="cv/kim.pdf", Body=v.encode())
    sandbox.opensearch.add_snapshot(hr.opensearch_domains[0].name, "backup_repo", "nightly", ["employee_profiles", "project_requirements"])
    report = run("hr-resource-optimization", dry_run=False, components=["s3", "opensearch"])
    s3f = [f for f in report.findings if f.check == "dr-s3"][0]
    osf = [f for f in report.findings if f.check == "dr-opensearch"][0]
    assert s3f.status is Status.OK and "1/1 previous versions restored with identical SHA-256" in s3f.summary
    assert osf.status is Status.OK and "2 indices restored" in osf.summary and "document counts equal" in osf.summary
    from opensearchpy import OpenSearch

    assert OpenSearch(sandbox.opensearch.url_for(hr.opensearch_domains[0].name)).cat.indices(index="drtest_*", format="json") == []
