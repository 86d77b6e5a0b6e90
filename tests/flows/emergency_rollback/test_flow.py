"""emergency-rollback against the sandbox: its steps (an ECS service's task definition, a Lambda alias) and its plan; what
the mutation session gives every runbook (approval, drift, leases, undo) is tested once in tests/opsbook/mutation/test_session.py."""

from __future__ import annotations

import threading
import time

import boto3
import pytest

from flows.emergency_rollback import flow as rb
from flows.emergency_rollback.flow import emergency_rollback
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.mutation import statestore
from opsbook.mutation.core import ShellApproval, shell_approval
from opsbook.report import RunReport
from sandbox.faults import apply_fault
from tests.helpers import inbox

pytestmark = pytest.mark.usefixtures("prefect_harness")
ECS = "t-developer-cluster-production/t-developer-service-production"


def run(system: str, approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = emergency_rollback(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def alias_version(sandbox, fn="todo-api", alias="LIVE", region="ap-northeast-2"):
    return boto3.client("lambda", region_name=region, endpoint_url=sandbox.endpoint).get_alias(FunctionName=fn, Name=alias)["FunctionVersion"]


def service_td(sandbox):
    ecs = boto3.client("ecs", region_name="us-east-1", endpoint_url=sandbox.endpoint)
    return ecs.describe_services(cluster=ECS.split("/")[0], services=[ECS.split("/")[1]])["services"][0]["taskDefinition"]


def test_dry_run_then_yes_alone_then_execute_rolls_back_once_records_and_notifies(seeded, sandbox):
    """The todo-app alias through its whole path: plan (dry run), a guess refused with --yes alone, executed with
    accept_guess (records, notices, settle, health checks, the policy), then a re-run that is a no-op."""
    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")  # Lambda keeps no alias history: the target 1 is a guess
    messages = inbox(sandbox, "ap-northeast-2", ":alerts")
    report = run("todo-app")
    assert report.outcome == "planned" and report.status is Status.OK and report.dry_run
    [action] = report.plan["actions"]
    assert (action["resource"], action["current"], action["target"]) == ("todo-api:LIVE", "2", "1")
    assert action["iam_action"] == "lambda:UpdateAlias" and action["evidence"].startswith("GUESS")
    assert report.plan["identity"]["account"] == "123456789012" and report.plan["identity"]["region"] == "ap-northeast-2"
    assert report.plan["override"] == "to_revision"
    assert alias_version(sandbox) == "2" and report.records == [] and messages() == []

    report = run("todo-app", dry_run=False, approval="yes", settle_timeout_s=10)
    assert report.outcome == "refused" and report.status is Status.UNKNOWN and report.status.exit_code == 3
    why = report.findings[-1].summary
    assert "step 1 (todo-api:LIVE: 2 -> 1" in why and "--param accept_guess=true" in why and "--param to_revision=" in why
    assert alias_version(sandbox) == "2" and report.records == [] and messages() == []  # nothing changed, nobody told

    report = run("todo-app", dry_run=False, approval="yes", accept_guess=True, approver="oncall-kim", settle_timeout_s=10)
    assert report.outcome == "done" and report.status is Status.OK, report.findings
    assert report.plan["actions"][0]["guess"] is True and report.approval["reason"] == "--execute --yes --param accept_guess=true"
    assert alias_version(sandbox) == "1"
    [rec] = report.records
    assert (rec["status"], rec["before"], rec["after"], rec["approver"]) == ("verified", "2", "1", "oncall-kim")
    assert rec["caller_arn"].startswith("arn:aws:sts::123456789012:") and rec["os_user"] and rec["flow_run_id"] == report.flow_run_id
    durable = statestore.read_records(todo)
    assert durable[0]["resource"] == "todo-api:LIVE" and durable[0]["after"] == "1"
    msgs = sorted(messages(), key=lambda m: m["Timestamp"])
    assert len(msgs) == 2 and "rolled back, settling" in msgs[0]["Subject"] and "done" in msgs[1]["Subject"]
    assert all("todo-api:LIVE" in m["Message"] and "2 -> 1" in m["Message"] for m in msgs)
    assert any(f.check == "rollback-settled" and f.status is Status.OK for f in report.findings)
    assert any(f.check == "lambda-state" for f in report.findings)  # health checks after acting
    policy = set(policy_for(rb.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert "lambda:UpdateAlias" in used and used <= policy, used - policy
    assert report.undeclared_iam_actions == []

    again = run("todo-app", dry_run=False, approval="yes", accept_guess=True, settle_timeout_s=10)
    assert again.outcome == "nothing-to-do" and again.records == [] and alias_version(sandbox) == "1"
    assert "already points at the rollback target 1" in again.plan["unchanged"][0]


def test_ecs_uses_the_previous_deployment_and_waits_bounded(seeded, sandbox):
    td = seeded("t-developer")
    fault = apply_fault(sandbox, td, "bad-deploy")
    refused = run("t-developer", to_revision=42)  # the plan step refuses a revision that is not ACTIVE (more: test_judge)
    assert refused.outcome == "refused" and refused.status is Status.UNKNOWN and "not an ACTIVE revision" in refused.findings[-1].summary
    report = run("t-developer", dry_run=False, approval="yes", settle_timeout_s=3)
    [action] = report.plan["actions"]
    assert action["target"] == fault["from"] and "deployment the service ran before" in action["evidence"]
    assert action["guess"] is False  # evidence: --yes alone applies it (the twin of the guess refused in the todo-app test)
    assert service_td(sandbox) == fault["from"]
    settle = [f for f in report.findings if f.check == "rollback-settled"][0]
    assert settle.status is Status.WARN and "not settled after 3 s" in settle.summary  # moto keeps the old deployment
    assert report.outcome == "done-with-warnings" and report.status is Status.WARN
    again = run("t-developer", dry_run=False, approval="yes", settle_timeout_s=3)
    assert again.outcome == "nothing-to-do" and service_td(sandbox) == fault["from"]


def test_ecs_settles_when_the_rollout_completes(seeded, sandbox):
    td = seeded("t-developer")
    fault = apply_fault(sandbox, td, "bad-deploy")
    done = threading.Event()

    def finish_rollout():
        for _ in range(100):
            if service_td(sandbox) == fault["from"]:
                time.sleep(0.5)
                sandbox.complete_ecs_rollout("us-east-1", *ECS.split("/"))
                done.set()
                return
            time.sleep(0.1)

    threading.Thread(target=finish_rollout, daemon=True).start()
    report = run("t-developer", dry_run=False, approval="yes", settle_timeout_s=20)
    assert done.is_set()
    settle = [f for f in report.findings if f.check == "rollback-settled"][0]
    assert settle.status is Status.OK and report.records[0]["status"] == "verified"
    assert report.outcome == "done"
