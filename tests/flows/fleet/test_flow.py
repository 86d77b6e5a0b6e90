"""fleet end to end: the in-process fleet over three sandbox targets in three accounts (STS AssumeRole in
moto), a mutating runbook refused before any target, a role that cannot be assumed. Targets validation and
the refusals are tests/flows/fleet/test_judge.py, the shared rate limits test_ratelimits.py, assumed-role
clients tests/opsbook/test_aws.py. The work-pool mode over 50 targets and two workers is tests/e2e/test_fleet_postgres.py."""

from __future__ import annotations

import boto3
import pytest
import yaml

from flows.fleet.flow import TASKS, fleet, fleet_target
from flows.fleet.targets import Target, TargetResult
from opsbook import aws
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.report import RunReport

A, B, C = "111111111111", "222222222222", "333333333333"


def write(tmp_path, data) -> str:
    p = tmp_path / "targets.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(p)


# --- flows ---------------------------------------------------------------------------------------


@pytest.fixture
def harness(prefect_harness):
    return prefect_harness


def seed_table(sandbox, account: str, region: str) -> None:
    """todo-app's table, in one account and region only (created with that account's credentials)."""
    creds = boto3.client("sts", region_name=region, endpoint_url=sandbox.endpoint).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/seed", RoleSessionName="seed")["Credentials"]
    boto3.client("dynamodb", region_name=region, endpoint_url=sandbox.endpoint, aws_access_key_id=creds["AccessKeyId"],
                 aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"]).create_table(
        TableName="todos", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")


def test_in_process_fleet_runs_each_target_in_its_account_and_region(harness, sandbox, tmp_path):
    seed_table(sandbox, A, "ap-northeast-2")
    targets = [{"account_id": A, "region": "ap-northeast-2", "system": "todo-app"},   # the inventory's own region
               {"account_id": B, "region": "us-west-2", "system": "todo-app"},        # the inventory re-pointed to another region
               {"account_id": C, "region": "us-east-1", "system": "t-developer"}]      # the inventory pins no account: run in C
    path = write(tmp_path, {"role_name": "opsbook-readonly", "targets": targets})
    state = fleet(targets_file=path, params={"notify": False}, return_state=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    per = {f.resource: f for f in report.findings if f.check == "daily-health"}
    assert set(per) == {f"todo-app@{A}/ap-northeast-2", f"todo-app@{B}/us-west-2", f"t-developer@{C}/us-east-1"}
    for key, f in per.items():
        acct = key.split("@")[1].split("/")[0]
        assert f.details["identity"].startswith(f"arn:aws:sts::{acct}:assumed-role/opsbook-readonly/opsbook-fleet-{report.flow_run_id}")
        assert f.details["worker"] == "in-process" and f.details["calls"]["sts:AssumeRole"] == 1
        assert f.status is Status.CRIT, (f.summary, f.details.get("error"))  # most of each system is absent from these accounts
    a, b = per[f"todo-app@{A}/ap-northeast-2"], per[f"todo-app@{B}/us-west-2"]
    # A's table exists only in A/ap-northeast-2: A found it (and read its backups), B in us-west-2 did not
    assert a.details["calls"].get("dynamodb:DescribeContinuousBackups") == 1, a.details["calls"]
    assert "dynamodb:DescribeContinuousBackups" not in b.details["calls"]
    assert a.details["counts"]["OK"] > b.details["counts"]["OK"]
    # calls went through the shared limits named for each target's region
    assert "aws-cloudwatch-DescribeAlarms-us-west-2" in b.details["rate_limits"]
    assert "aws-cloudwatch-DescribeAlarms-us-east-1" in per[f"t-developer@{C}/us-east-1"].details["rate_limits"]
    # the default account saw nothing of it
    assert boto3.client("dynamodb", region_name="ap-northeast-2", endpoint_url=sandbox.endpoint).list_tables()["TableNames"] == []
    # CRIT targets end the fleet Failed, with the total
    assert report.status is Status.CRIT and state.type.value == "FAILED"
    assert report.api_calls == sum(f.value for f in per.values()) > 3
    limits = next(f for f in report.findings if f.check == "rate-limits")
    assert limits.status is Status.OK and "aws-logs-FilterLogEvents-us-west-2" in limits.details["limits"]
    # least privilege: the fleet's own policy covers its own calls; the targets' calls are daily-health's
    from flows.daily_health.flow import TASKS as DH

    used = {iam_action(*op.split(":")) for f in per.values() for op in f.details["calls"]} - {None}
    assert used <= set(policy_for(TASKS + DH)["Statement"][0]["Action"]), used
    assert policy_for(TASKS)["Statement"][0]["Action"] == ["sts:AssumeRole"]
    # the table artifact: target, status, calls, worker, and the total
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        art = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fleet-daily-health-targets"])))
    rows = yaml.safe_load(art[0].data)  # JSON is YAML
    assert [r["target"] for r in rows[:3]] == list(per) and rows[-1]["calls"] == report.api_calls
    assert set(rows[0]) == {"target", "status", "calls", "worker"}


def test_mutating_runbook_fleet_fails_before_any_target(harness, sandbox, tmp_path):
    path = write(tmp_path, {"role_name": "r", "targets": [{"account_id": A, "region": "us-east-2", "system": "todo-app"}]})
    state = fleet(runbook="emergency-rollback", targets_file=path, return_state=True)
    assert state.type.value == "FAILED" and "refusing to fan out 'emergency-rollback'" in state.message
    state = fleet_target(runbook="dlq-redrive", target=Target(account_id=A, role_arn=f"arn:aws:iam::{A}:role/r", region="us-east-2",
                                                             system="todo-app"), return_state=True)
    assert state.type.value == "FAILED" and "refusing" in state.message


def test_target_whose_role_cannot_be_assumed_is_unknown_with_the_reason(harness, sandbox, monkeypatch, closed_port):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("OPSBOOK_MAX_ATTEMPTS", "1")
    aws.reset_clients()
    t = Target(account_id=A, role_arn=f"arn:aws:iam::{A}:role/opsbook-readonly", region="us-east-2", system="todo-app")
    result = fleet_target(runbook="daily-health", target=t, params={"notify": False}, rate_limits=False)
    assert isinstance(result, TargetResult) and result.status is Status.UNKNOWN
    assert f"could not assume arn:aws:iam::{A}:role/opsbook-readonly" in result.headline
    assert "cannot reach AWS endpoint" in result.error and result.identity is None
