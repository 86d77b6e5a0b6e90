"""restart-service against the sandbox: t-developer's ECS service, restarted as ECS rolls it (sandbox/restarts.py;
its rules: test_judge.py)."""

from __future__ import annotations

import boto3
import pytest
import yaml

from flows.restart_service import flow as rs
from flows.restart_service.flow import restart_service
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.inventory import SYSTEMS_DIR, load_system
from opsbook.mutation import statestore, steps
from opsbook.mutation.core import Record, ShellApproval, shell_approval
from opsbook.report import RunReport
from sandbox.faults import apply_fault
from sandbox.seed import seed_system
from tasks.ecs import RESTART_KIND, force_new_deployment, read_primary, restart_reached, restart_target

pytestmark = pytest.mark.usefixtures("prefect_harness")
TD = "t-developer"
CLUSTER, SERVICE = "t-developer-cluster-production", "t-developer-service-production"
SVC = f"{CLUSTER}/{SERVICE}"
REGION = "us-east-1"


def run(system: str, approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = restart_service(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def deployments(sandbox, service: str = SERVICE) -> list[tuple[str, str, str]]:
    svc = boto3.client("ecs", region_name=REGION, endpoint_url=sandbox.endpoint).describe_services(cluster=CLUSTER, services=[service])["services"][0]
    return [(d["id"], d["status"], d.get("rolloutState", "")) for d in svc["deployments"]]


def test_dry_run_changes_nothing_execute_restarts_once_verifies_records_and_a_rerun_does_not_restart_again(seeded, sandbox):
    td = seeded(TD)
    apply_fault(sandbox, td, "ecs-rolling-restart", settle_after_s=0.5)  # ECS rolls the new tasks in half a second
    [(first, _, _)] = start = deployments(sandbox)
    dry = run(TD, agent="parser")
    assert dry.outcome == "planned" and dry.status is Status.OK and dry.records == []
    [action] = dry.plan["actions"]
    assert (action["kind"], action["resource"], action["current"], action["target"]) == (RESTART_KIND, SVC, first, restart_target(first))
    assert action["reversible"] is False and action["iam_action"] == "ecs:UpdateService"
    assert "the WHOLE service" in action["evidence"] and "all its agents" in action["evidence"]  # t-developer maps no agent
    assert deployments(sandbox) == start and "ecs:UpdateService" not in dry.api_calls_by_operation

    report = run(TD, dry_run=False, approval="yes", approver="devops-lead", settle_timeout_s=20)
    assert report.outcome == "done" and report.status is Status.OK, report.findings
    [rec] = report.records
    assert (rec["status"], rec["before"], rec["approver"]) == ("verified", first, "devops-lead")
    assert "rollout COMPLETED; old tasks gone; target group t-developer-tg-production: 2/2 healthy" in rec["detail"]
    assert report.api_calls_by_operation["ecs:UpdateService"] == 1
    [(second, status, rollout)] = deployments(sandbox)
    assert (status, rollout) == ("PRIMARY", "COMPLETED") and second != first
    policy = set(policy_for(rs.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert {"ecs:UpdateService", "elasticloadbalancing:DescribeTargetHealth"} <= used and used <= policy, used - policy
    assert report.undeclared_iam_actions == []

    again = run(TD, dry_run=False, approval="yes")  # e.g. the same command again after the first was thought lost
    assert again.outcome == "nothing-to-do" and "already restarted at" in again.plan["unchanged"][0]
    assert deployments(sandbox) == [(second, "PRIMARY", "COMPLETED")]
    # the step itself: made once, recognised as made (a re-run after a kill closes it as applied), never made twice
    assert restart_reached(td, SVC, first, restart_target(first))
    force_new_deployment(td, SVC, restart_target(first))
    assert read_primary(td, SVC) == second
    assert [r["status"] for r in statestore.read_records(load_system(TD)) if r["kind"] == RESTART_KIND] == ["verified"]


def test_a_run_killed_after_its_restart_call_is_closed_as_applied_and_the_rerun_restarts_nothing(seeded, sandbox):
    td = seeded(TD)
    apply_fault(sandbox, td, "ecs-rolling-restart", settle_after_s=0.2)
    first = read_primary(td, SVC)
    # a run killed between its UpdateService call and its outcome: the intent stays open (its lease lapsed since)
    journal = steps.Journal(td, rs.RUNBOOK, "killed-run")
    journal.take([SVC])
    steps.intend(journal, Record(runbook=rs.RUNBOOK, system=TD, resource=SVC, kind=RESTART_KIND, before=first, after=restart_target(first),
                                 status="applied", flow_run_id="killed-run", approver="kim"), "applied")
    force_new_deployment(td, SVC, restart_target(first))
    journal.release()
    restarted = read_primary(td, SVC)
    assert restarted != first and len(statestore.open_intents(td)) == 1
    again = run(TD, dry_run=False, approval="yes", settle_timeout_s=10)
    assert again.outcome == "nothing-to-do" and "ecs:UpdateService" not in again.api_calls_by_operation, again.findings
    closed = next(f for f in again.findings if f.check == "open-intent")
    assert closed.status is Status.OK and "applied: run killed-run (kim) took this step" in closed.summary
    assert "already restarted at" in again.plan["unchanged"][0] and statestore.open_intents(td) == []
    assert read_primary(td, SVC) == restarted


def test_not_settling_is_a_warning_with_the_counts(seeded, sandbox):
    td = seeded(TD)
    apply_fault(sandbox, td, "ecs-rolling-restart", settle_after_s=None)  # the new tasks never come up
    report = run(TD, dry_run=False, approval="yes", settle_timeout_s=2)
    assert report.outcome == "done-with-warnings" and report.status is Status.WARN
    [rec] = report.records
    assert rec["status"] == "applied" and "the new deployment is not done after 2 s" in rec["detail"]
    assert "0 of 2 tasks running, rollout IN_PROGRESS; old deployment(s)" in rec["detail"] and "still running 2 task(s)" in rec["detail"]
    busy = run(TD, not_within_min=0)  # a deployment under way: nothing more is stacked on it
    assert busy.plan["actions"] == [] and "a deployment is under way" in busy.plan["cannot"][0]


def test_an_agent_mapped_to_its_own_service_restarts_that_one_an_unmapped_one_the_whole_service(sandbox, tmp_path):
    data = yaml.safe_load((SYSTEMS_DIR / f"{TD}.yaml").read_text())
    main = data["ecs_services"][0]
    main["agents"] = ["nl-input", "ui-selection", "generation"]
    data["ecs_services"].append({"cluster": CLUSTER, "service": "t-developer-parser", "agents": ["parser"], "min_tasks": 1})
    path = tmp_path / f"{TD}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    seed_system(sandbox, load_system(str(path)), weeks_of_metrics=False)
    mapped = run(str(path), agent="parser")
    [action] = mapped.plan["actions"]
    assert action["resource"] == f"{CLUSTER}/t-developer-parser" and "only it restarts" in action["evidence"]
    unmapped = run(str(path), agent="download", service=SERVICE)
    [action] = unmapped.plan["actions"]
    assert action["resource"] == SVC
    assert "agent download has no service of its own" in action["evidence"]
    assert f"the WHOLE service {SVC} restarts, all its agents (nl-input, ui-selection, generation)" in action["evidence"]
    refused = run(str(path), agent="download")
    assert refused.outcome == "refused" and "say which with service=" in refused.findings[-1].summary
