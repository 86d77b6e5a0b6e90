"""fleet's judgement and targets, pure (no AWS, no Prefect run): targets files validated naming entry and
field, read-only runbooks only, the assumed account checked, a target's outcome reduced to its result,
and the results combined into findings, one status and the table."""

from __future__ import annotations

import pytest
import yaml

from flows.fleet.judge import calls_by_operation, check_account, judge_targets, outcome_fields, refuse_mutating, target_rows, unknown_result
from flows.fleet.targets import FleetError, Target, TargetResult, load_targets
from opsbook.findings import Finding, Status, overall
from opsbook.report import RunReport

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


# --- the assumed account, a target's outcome, the fleet's status ---------------------------------------


T = Target(account_id=A, role_arn=f"arn:aws:iam::{A}:role/opsbook-readonly", region="us-east-2", system="todo-app")


def test_an_assumed_role_in_another_account_is_refused_and_in_the_target_account_accepted():
    check_account(T, A)  # the healthy twin: no error
    with pytest.raises(FleetError, match=f"returned credentials for account {B}, not {A}; fix the target's role_arn"):
        check_account(T, B)


def test_a_report_becomes_the_targets_status_and_calls_and_no_report_is_unknown_with_the_reason():
    report = RunReport(runbook="daily-health", system="todo-app", status=Status.CRIT, region="us-east-2", flow_run_id="run-1",
                       findings=[Finding(check="x", resource="r", status=Status.CRIT, summary="gone")],
                       api_calls=3, api_calls_by_operation={"lambda:GetFunctionConfiguration": 2, "sts:AssumeRole": 1})
    got = outcome_fields(T, "daily-health", report, {"sts:AssumeRole": 1})
    assert got["status"] is Status.CRIT and got["error"] is None and got["runbook_flow_run_id"] == "run-1"
    assert got["api_calls_by_operation"] == {"sts:AssumeRole": 2, "lambda:GetFunctionConfiguration": 2} and got["api_calls"] == 4
    assert got["counts"] == report.counts() and got["headline"] == report.headline()
    lost = outcome_fields(T, "daily-health", "daily-health did not finish: boom", {"sts:AssumeRole": 1})
    assert lost["status"] is Status.UNKNOWN and lost["counts"] == {} and lost["api_calls"] == 1
    assert lost["headline"] == f"daily-health todo-app@{A}/us-east-2: daily-health did not finish: boom" and lost["error"].endswith("boom")
    gone = unknown_result(T, "daily-health", "still PENDING after 60 s", "run-2")
    assert (gone.status, gone.flow_run_id, gone.target) == (Status.UNKNOWN, "run-2", f"todo-app@{A}/us-east-2") and "PENDING" in gone.headline


def result(key: str, status: Status, calls: dict[str, int], worker: str | None = "w1") -> TargetResult:
    return TargetResult(target=key, account_id=A, region="us-east-2", system="todo-app", runbook="daily-health", status=status,
                        headline=f"{key}: {status.value}", api_calls=sum(calls.values()), api_calls_by_operation=calls, worker=worker)


@pytest.mark.parametrize("statuses,fleet", [([Status.OK, Status.OK], Status.OK), ([Status.OK, Status.WARN], Status.WARN),
                                            ([Status.OK, Status.UNKNOWN], Status.UNKNOWN), ([Status.UNKNOWN, Status.CRIT], Status.CRIT)])
def test_the_fleet_is_its_worst_target_and_an_unknown_target_is_never_ok(statuses, fleet):
    results = [result(f"t{i}", s, {"sts:AssumeRole": 1, "logs:FilterLogEvents": i}) for i, s in enumerate(statuses)]
    findings = judge_targets("daily-health", results, {"aws-logs-FilterLogEvents-us-east-2": "created", "other": "kept"})
    assert [(f.check, f.resource, f.status) for f in findings[:2]] == [("daily-health", "t0", statuses[0]), ("daily-health", "t1", statuses[1])]
    limits = findings[-1]
    assert (limits.check, limits.status, limits.summary) == ("rate-limits", Status.OK, "2 shared rate limits in place (1 created or repaired now)")
    assert overall(findings) is fleet
    rows = target_rows(results, findings)
    assert rows[-1] == {"target": "TOTAL (2 targets)", "status": fleet.value, "calls": 3, "worker": "1 worker(s)"}
    assert calls_by_operation(results) == {"sts:AssumeRole": 2, "logs:FilterLogEvents": 1}


def test_no_targets_is_only_the_rate_limits_line():
    findings = judge_targets("daily-health", [], {})
    assert [f.check for f in findings] == ["rate-limits"] and target_rows([], findings)[-1]["calls"] == 0 and calls_by_operation([]) == {}
