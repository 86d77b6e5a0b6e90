"""fleet: targets validation, refusal of mutating runbooks, assumed-role clients,
the shared rate limits, and the in-process fleet over three sandbox targets in
three accounts (STS AssumeRole in moto). The work-pool mode over 50 targets and
two workers is tests/e2e/test_fleet_postgres.py."""

from __future__ import annotations

import boto3
import pytest
import yaml

from flows.fleet.flow import TASKS, fleet, fleet_target, refuse_mutating
from opsbook import aws
from opsbook.findings import Status
from opsbook.iam import declares, iam_action, policy_for
from opsbook.report import RunReport
from tasks.fleet import (
    QUOTAS,
    FleetError,
    Quota,
    QuotaGate,
    Target,
    TargetResult,
    ensure_limits,
    limit_name,
    load_targets,
)

A, B, C = "111111111111", "222222222222", "333333333333"


def write(tmp_path, data) -> str:
    p = tmp_path / "targets.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(p)


# --- targets -------------------------------------------------------------------------------


def test_example_targets_file_is_valid_and_role_name_fills_role_arns():
    f = load_targets("fleet/example.yaml")
    assert len(f.targets) >= 3 and len({t.key for t in f.targets}) == len(f.targets)
    first = f.targets[0]
    assert first.role_arn == f"arn:aws:iam::{first.account_id}:role/opsbook-readonly"
    assert any(t.external_id for t in f.targets)  # an explicit role_arn + external id entry is kept as written
    assert [t.system for t in load_targets("fleet/example.yaml", system="todo-app").targets] == ["todo-app", "todo-app"]


@pytest.mark.parametrize("targets,where,msg", [
    ([{"account_id": "1234", "region": "us-east-2", "system": "todo-app"}], "targets[0].account_id", "pattern"),
    ([{"account_id": A, "region": "us-east-2", "system": "todo-app", "role_arn": f"arn:aws:iam::{B}:role/x"}],
     "targets[0]", f"in account {B}, not the target's account {A}"),
    ([{"account_id": A, "region": "us-east-2", "system": "todo-app", "role_arn": "arn:aws:iam::oops"}], "targets[0]", "not an IAM role ARN"),
    ([{"account_id": A, "region": "Seoul", "system": "todo-app"}], "targets[0].region", "not an AWS region name"),
    ([{"account_id": A, "region": "us-east-2", "system": "no-such-system"}], "targets[0].system", "known systems: hr-resource-optimization"),
    ([{"account_id": A, "region": "us-east-2", "system": "todo-app", "colour": "red"}], "targets[0].colour", "Extra inputs"),
    ([{"account_id": A, "region": "us-east-2", "system": "todo-app"}] * 2, "(top level)", f"repeated: todo-app@{A}/us-east-2"),
    ([], "targets", "at least 1 item"),
])
def test_bad_targets_are_refused_naming_entry_and_field(tmp_path, targets, where, msg):
    with pytest.raises(FleetError) as exc:
        load_targets(write(tmp_path, {"role_name": "opsbook-readonly", "targets": targets}))
    text = str(exc.value)
    assert where in text and msg in text, text


def test_targets_file_problems_say_what_to_do(tmp_path):
    with pytest.raises(FleetError, match="not found .*fleet/example.yaml"):
        load_targets(tmp_path / "missing.yaml")
    with pytest.raises(FleetError, match="not valid YAML"):
        load_targets(write(tmp_path, "targets: [unclosed"))
    with pytest.raises(FleetError, match="role_arn"):  # no role_name and no role_arn: nothing to assume
        load_targets(write(tmp_path, {"targets": [{"account_id": A, "region": "us-east-2", "system": "todo-app"}]}))
    with pytest.raises(FleetError, match="no target runs system 'leh'"):
        load_targets(write(tmp_path, {"role_name": "r", "targets": [{"account_id": A, "region": "us-east-2", "system": "todo-app"}]}), system="leh")


# --- refusal ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["emergency-rollback", "dlq-redrive", "backup-verify", "maintenance-audit"])
def test_mutating_runbooks_are_refused(name):
    with pytest.raises(FleetError, match=f"refusing to fan out '{name}': it changes resources"):
        refuse_mutating(name)


def test_unknown_or_recursive_runbooks_and_system_param_are_refused():
    with pytest.raises(FleetError, match="unknown runbook 'nope'"):
        refuse_mutating("nope")
    with pytest.raises(FleetError, match="over itself"):
        refuse_mutating("fleet")
    with pytest.raises(FleetError, match="must not set `system`"):
        refuse_mutating("daily-health", {"system": "leh"})
    assert refuse_mutating("daily-health").name == "daily-health"


# --- assumed-role clients (opsbook/aws.py) -----------------------------------------------------------


def test_assumed_role_clients_are_separate_and_reach_threads(aws_mock):
    @declares(["sts:AssumeRole"])
    def assume():
        return aws.assume_role(f"arn:aws:iam::{B}:role/opsbook-readonly", "opsbook-fleet-test", "us-east-2")

    base = aws.client("sts", "us-east-2")
    role = assume()
    assert role.account == B and role.arn.endswith(":assumed-role/opsbook-readonly/opsbook-fleet-test")
    assert role.secret_access_key not in repr(role) and role.session_token not in repr(role)
    with aws.assumed(role):
        inside = aws.client("sts", "us-east-2")
        assert inside is not base and inside is aws.client("sts", "us-east-2")  # cached per role
        in_thread = aws.parallel(lambda _: aws.client("sts", "us-east-2").get_caller_identity()["Account"], [1, 2])
        assert [r for _, r, _ in in_thread] == [B, B]
        assert inside.get_caller_identity()["Account"] == B
    assert aws.client("sts", "us-east-2") is base  # outside: the old client, the old credentials
    assert base.get_caller_identity()["Account"] == "123456789012"


def test_gate_sees_each_call_with_its_region(aws_mock):
    seen = []
    c = aws.client("cloudwatch", "eu-west-1")
    describe = declares(["cloudwatch:DescribeAlarms"])(lambda: c.describe_alarms())
    with aws.gated(lambda s, o, r: seen.append((s, o, r))):
        describe()
    describe()  # outside the context: no gate
    assert seen == [("cloudwatch", "DescribeAlarms", "eu-west-1")]


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
               {"account_id": C, "region": "us-east-1", "system": "t-developer"}]      # inventory pins 123456789012: re-pointed to C
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
        assert f.status is Status.CRIT, f  # most of each system is absent from these accounts
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


# --- shared rate limits --------------------------------------------------------------------------


def test_rate_limits_are_created_once_kept_and_repaired(harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    q = QUOTAS[("logs", "FilterLogEvents")]
    names = {limit_name("logs", "FilterLogEvents", "eu-north-1"): q, limit_name("cloudwatch", "GetMetricData", "eu-north-1"): QUOTAS[("cloudwatch", "GetMetricData")]}
    assert set(ensure_limits(names).values()) == {"created"}
    assert set(ensure_limits(names).values()) == {"kept"}
    with get_client(sync_client=True) as client:
        got = client.read_global_concurrency_limit_by_name("aws-logs-FilterLogEvents-eu-north-1")
        assert (got.limit, got.slot_decay_per_second) == (5, 5.0)
        client.update_global_concurrency_limit("aws-logs-FilterLogEvents-eu-north-1", GlobalConcurrencyLimitUpdate(limit=20))  # quota raised
        client.update_global_concurrency_limit("aws-cloudwatch-GetMetricData-eu-north-1", GlobalConcurrencyLimitUpdate(slot_decay_per_second=0))
    assert ensure_limits(names) == {"aws-logs-FilterLogEvents-eu-north-1": "kept", "aws-cloudwatch-GetMetricData-eu-north-1": "repaired"}
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("aws-logs-FilterLogEvents-eu-north-1").limit == 20  # the operator's value stays
        assert client.read_global_concurrency_limit_by_name("aws-cloudwatch-GetMetricData-eu-north-1").slot_decay_per_second == 50.0


def test_gate_leases_tokens_in_growing_batches_and_names_the_scope(harness):
    gate = QuotaGate(account=A, scope="account")
    for _ in range(20):
        gate("cloudwatch", "GetMetricData", "eu-central-1")
    gate("dynamodb", "DescribeTable", "eu-central-1")  # no published per-second quota to share: not gated
    name = f"aws-cloudwatch-GetMetricData-eu-central-1-{A}"
    assert gate.stats() == {name: {"calls": 20, "leases": 5}}  # 1+2+4+8+16 tokens, not 20 round trips
    assert limit_name("logs", "FilterLogEvents", "eu-west-1") == "aws-logs-FilterLogEvents-eu-west-1"
    slow = Quota("logs", "FilterLogEvents", 5.0, "")
    assert (slow.batch, slow.burst) == (3, 5)


def test_gate_enforces_the_rate_across_gates(harness):
    import time

    tiny = {("logs", "FilterLogEvents"): Quota("logs", "FilterLogEvents", 2.0, "test quota: 2/s")}
    gates = [QuotaGate(quotas=tiny), QuotaGate(quotas=tiny)]  # two runs sharing one limit
    t0 = time.monotonic()
    for i in range(8):
        gates[i % 2]("logs", "FilterLogEvents", "sa-east-1")
    elapsed = time.monotonic() - t0
    assert elapsed >= 2.0, f"8 calls at 2/s (burst 2) took {elapsed:.1f} s"  # (8 - burst 2) / 2 per s = 3 s, leases of 1
