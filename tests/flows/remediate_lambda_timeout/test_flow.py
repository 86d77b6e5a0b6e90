"""remediate-lambda-timeout against the sandbox (its judging and sizing rules: test_judge.py)."""

from __future__ import annotations

import uuid

import boto3
import pytest

from flows.remediate_lambda_timeout import flow as rlt
from flows.remediate_lambda_timeout.flow import remediate_lambda_timeout
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.mutation import statestore
from opsbook.mutation.core import ShellApproval, shell_approval
from opsbook.report import RunReport
from sandbox import lambda_timeouts as sc

pytestmark = pytest.mark.usefixtures("prefect_harness")
HR, PRE, DAE = "hr-resource-optimization", "ProjectRecommendationEngine", "DomainAnalysisEngine"


def tight(sandbox, hr, *functions):
    """Deployed at 30 s / 512 MB, below the inventory's expected_* (the seed's values): the sizes these scenarios start from."""
    for fn in functions:
        sc.configure(sandbox, hr, fn, timeout_s=30, memory_mb=512)


def run(system: str, approval: ShellApproval | None = None, **params) -> RunReport:  # noqa
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = remediate_lambda_timeout(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def config(sandbox, region, fn):
    c = boto3.client("lambda", region_name=region, endpoint_url=sandbox.endpoint).get_function_configuration(FunctionName=fn)
    return c["Timeout"], c["MemorySize"]


def visibility(sandbox, region, queue):
    sqs = boto3.client("sqs", region_name=region, endpoint_url=sandbox.endpoint)
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]["VisibilityTimeout"])


def finding(report, resource, check="lambda-timeouts"):
    return next(f for f in report.findings if f.check == check and f.resource == resource)


def actions(report):
    return [(a["kind"], a["resource"], a["current"], a["target"]) for a in report.plan["actions"]]


# --- the scenarios ---------------------------------------------------------------------------------


@pytest.fixture
def after_change(sandbox):
    """Invocations that keep coming once a function's configuration changed; stopped before the next test resets the sandbox."""
    started = []

    def start(system, fn, **kw):
        started.append(sc.traffic_after_change(sandbox, system, fn, **kw))
        return started[-1]

    yield start
    for w in started:
        w["stop"].set()
        w["thread"].join(10)



def test_hr_fix_is_sized_applied_verified_recorded_and_not_planned_again(seeded, sandbox, after_change):
    hr = seeded(HR)
    tight(sandbox, hr, PRE, DAE)
    sc.healthy_lambdas(sandbox, hr, skip=(PRE, DAE))
    slow = sc.lambda_timeouts(sandbox, hr, PRE, others_healthy=False)
    sc.lambda_timeouts(sandbox, hr, DAE, others_healthy=False)

    dry = run(HR)
    assert dry.outcome == "planned" and dry.status is Status.WARN
    # DAE: 30.03 s x 1.5 = 46 s. PRE sits behind the API (29 s): a longer timeout cannot help, so more CPU instead,
    # and its timeout is aligned below the API's.
    assert actions(dry) == [("lambda-timeout", DAE, "30", "46"), ("lambda-memory", PRE, "512", "896"), ("lambda-timeout", PRE, "30", "28")]
    pre = finding(dry, PRE)
    assert pre.status is Status.WARN and pre.value == slow["timeouts"] == 60 and "cannot help" in pre.summary
    assert f"{slow['invocations']} invocation(s)" in pre.summary and "max 30.03 s" in pre.summary
    assert all(f.status is Status.OK for f in dry.findings if f.resource not in (PRE, DAE))
    assert len([u for u in dry.plan["unchanged"] if "no timeout" in u]) == 6
    assert config(sandbox, hr.region, PRE) == (30, 512) and dry.records == []

    watch = [after_change(hr, fn) for fn in (PRE, DAE)]
    report = run(HR, dry_run=False, approval="yes", approver="oncall-kim", observe_s=3)
    assert report.outcome == "done" and report.status is Status.OK, [f.summary for f in report.findings if f.status is not Status.OK]
    assert all(w["changed"].is_set() and w["written"] for w in watch)
    assert config(sandbox, hr.region, PRE) == (28, 896) and config(sandbox, hr.region, DAE) == (46, 512)
    assert [(r["resource"], r["kind"], r["before"], r["after"], r["status"]) for r in report.records] == [
        (DAE, "lambda-timeout", "30", "46", "verified"), (PRE, "lambda-memory", "512", "896", "verified"),
        (PRE, "lambda-timeout", "30", "28", "verified")]
    assert all(r["approver"] == "oncall-kim" and "LastUpdateStatus Successful" in r["detail"] for r in report.records)
    after = finding(report, PRE)
    assert after.status is Status.OK and "none timed out" in after.summary and "Before: 60 timeout(s)" in after.summary
    durable = statestore.read_records(hr)
    assert {(r["resource"], r["kind"], r["status"]) for r in durable} >= {(PRE, "lambda-memory", "verified"), (DAE, "lambda-timeout", "verified")}
    assert report.undeclared_iam_actions == []

    again = run(HR, dry_run=False, approval="yes", observe_s=2)
    assert again.outcome == "nothing-to-do" and again.records == [] and again.plan["actions"] == []
    assert config(sandbox, hr.region, PRE) == (28, 896)
    # the hour's timeouts happened before the change: reported as earlier, not counted
    assert "earlier timeout(s)" in finding(again, PRE).summary and finding(again, PRE).value == 0


def test_undo_restores_the_previous_configuration(seeded, sandbox):
    hr = seeded(HR)
    tight(sandbox, hr, DAE)
    sc.lambda_timeouts(sandbox, hr, DAE)
    fixed = run(HR, dry_run=False, approval="yes", observe_s=1)
    assert fixed.outcome == "done-with-warnings" and config(sandbox, hr.region, DAE) == (46, 512)
    # nobody called it in the second watched: not confirmed, and said so
    watched = finding(fixed, DAE)
    assert watched.status is Status.UNKNOWN and "no new invocation" in watched.summary and "run the runbook again" in watched.summary

    dry = run(HR, undo_run=fixed.flow_run_id)
    assert actions(dry) == [("lambda-timeout", DAE, "46", "30")] and config(sandbox, hr.region, DAE) == (46, 512)
    undone = run(HR, dry_run=False, approval="yes", undo_run=fixed.flow_run_id)
    assert undone.outcome == "done" and config(sandbox, hr.region, DAE) == (30, 512)
    assert [(r["kind"], r["before"], r["after"], r["status"]) for r in undone.records] == [("lambda-timeout", "46", "30", "verified")]
    twice = run(HR, dry_run=False, approval="yes", undo_run=fixed.flow_run_id)
    assert twice.outcome == "nothing-to-do" and "already back at 30" in twice.plan["unchanged"][0]
    unknown_run = run(HR, undo_run=str(uuid.uuid4()))  # a run id with no record of this runbook
    assert unknown_run.plan["actions"] == [] and "no remediate-lambda-timeout record of this run" in unknown_run.plan["cannot"][0]


def test_todo_api_behind_the_api_gets_memory_a_dry_run_changes_nothing_and_updates_are_waited_for(seeded, sandbox, capfd):
    todo = seeded("todo-app")
    sc.lambda_timeouts(sandbox, todo, "todo-api")
    report = run("todo-app")  # dry run by default
    assert report.outcome == "planned" and report.dry_run
    assert actions(report) == [("lambda-memory", "todo-api", "512", "896"), ("lambda-timeout", "todo-api", "30", "28")]
    mem = report.plan["actions"][0]
    assert "cannot help" in mem["evidence"] and "integration timeout 29 s" in mem["evidence"]
    assert config(sandbox, todo.region, "todo-api") == (30, 512) and report.records == []
    assert report.undeclared_iam_actions == []

    sc.slow_update(sandbox, todo, "todo-api", polls=2)  # LastUpdateStatus InProgress for two reads after each update
    report = run("todo-app", dry_run=False, approval="yes", observe_s=1)
    assert [r["status"] for r in report.records] == ["verified", "verified"] and config(sandbox, todo.region, "todo-api") == (28, 896)
    assert "LastUpdateStatus InProgress" in capfd.readouterr().err


def test_leh_worker_raises_its_queue_visibility_first_undo_lowers_it_last(seeded, sandbox):
    leh = seeded("leh")
    sc.connect_queue(sandbox, leh, "leh-ai-worker", "leh-ai-jobs")
    sc.lambda_timeouts(sandbox, leh, "leh-ai-worker")
    report = run("leh", dry_run=False, approval="yes", observe_s=1)
    assert actions(report) == [("sqs-visibility", "leh-ai-jobs", "30", "276"), ("lambda-timeout", "leh-ai-worker", "30", "46")]
    assert "6x the timeout" in report.plan["actions"][0]["evidence"]
    assert visibility(sandbox, leh.region, "leh-ai-jobs") == 276 and config(sandbox, leh.region, "leh-ai-worker") == (46, 512)
    assert [r["status"] for r in report.records] == ["verified", "verified"]
    # least privilege: every call made is in the policy `opsbook policy` prints
    policy = set(policy_for(rlt.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert {"lambda:UpdateFunctionConfiguration", "sqs:SetQueueAttributes", "logs:FilterLogEvents", "cloudwatch:GetMetricData",
            "lambda:ListEventSourceMappings"} <= used <= policy, used - policy
    assert report.undeclared_iam_actions == [] and report.api_calls_by_operation["cloudwatch:GetMetricData"] == 1

    undo = run("leh", dry_run=False, approval="yes", undo_run=report.flow_run_id)
    assert [(r["resource"], r["after"]) for r in undo.records] == [("leh-ai-worker", "30"), ("leh-ai-jobs", "30")]
    assert visibility(sandbox, leh.region, "leh-ai-jobs") == 30 and config(sandbox, leh.region, "leh-ai-worker") == (30, 512)



def test_a_failure_part_way_undoes_the_queue_change(seeded, sandbox):
    leh = seeded("leh")
    sc.lambda_timeouts(sandbox, leh, "leh-ai-worker")  # the inventory's sqs_source alone names the queue
    sc.failing_update(sandbox, leh, "leh-ai-worker")
    failed = run("leh", dry_run=False, approval="yes", observe_s=1)
    assert failed.outcome == "failed" and failed.status is Status.CRIT
    assert [(r["resource"], r["status"]) for r in failed.records] == [
        ("leh-ai-jobs", "applied"), ("leh-ai-worker", "failed"), ("leh-ai-jobs", "undone")]
    assert "no free IP address" in failed.records[1]["detail"]
    assert visibility(sandbox, leh.region, "leh-ai-jobs") == 30 and config(sandbox, leh.region, "leh-ai-worker") == (30, 512)


def test_still_timing_out_after_the_change_is_a_warning(seeded, sandbox, after_change):
    hr = seeded(HR)
    tight(sandbox, hr, DAE)
    sc.lambda_timeouts(sandbox, hr, DAE)
    w = after_change(hr, DAE, timeout_share=0.5)
    report = run(HR, dry_run=False, approval="yes", observe_s=6)
    after = finding(report, DAE)
    assert "timeout" in w["written"]
    assert after.status is Status.WARN and "still timing out" in after.summary and "after 46.03 seconds" in after.summary
    assert report.outcome == "done-with-warnings"


def test_a_healthy_system_is_left_alone(seeded, sandbox):
    hr = seeded(HR)
    sc.healthy_lambdas(sandbox, hr)
    report = run(HR, dry_run=False, approval="yes")
    assert report.outcome == "nothing-to-do" and report.status is Status.OK and report.records == []
    assert len([f for f in report.findings if f.check == "lambda-timeouts" and f.status is Status.OK]) == 8
    assert "max 90.00 s" in finding(report, PRE).summary  # left alone with its numbers (30 % of its 300 s timeout)
    assert all(config(sandbox, hr.region, f.name) == (f.expected_timeout_s, f.expected_memory_mb) for f in hr.lambda_functions)


@pytest.mark.filterwarnings("ignore:Exception\\(AccessDenied\\):UserWarning")  # moto: CloudWatch models no AccessDenied shape
def test_unreadable_metrics_are_unknown_and_only_the_functions_asked_for_are_checked(seeded, sandbox):
    hr = seeded(HR)
    tight(sandbox, hr, PRE)
    sc.lambda_timeouts(sandbox, hr, PRE, others_healthy=False)
    sc.metrics_unreadable(sandbox, hr)
    blind = run(HR, dry_run=False, approval="yes", functions=[PRE, "NoSuchFunction"])
    assert {x.resource for x in blind.findings if x.check == "lambda-timeouts"} == {PRE, "NoSuchFunction"}
    assert finding(blind, "NoSuchFunction").status is Status.UNKNOWN and "not a function of" in finding(blind, "NoSuchFunction").summary
    assert blind.plan["actions"] == [] and blind.outcome == "nothing-to-do" and blind.status is Status.UNKNOWN
    f = finding(blind, PRE)
    assert f.status is Status.UNKNOWN and "access denied" in f.summary and "timeout(s) in the logs" in f.summary
    assert config(sandbox, hr.region, PRE) == (30, 512)


def test_missing_logs_are_unknown_and_no_functions_is_nothing_to_check(seeded, sandbox):
    todo = seeded("todo-app")
    boto3.client("logs", region_name=todo.region, endpoint_url=sandbox.endpoint).delete_log_group(logGroupName="/aws/lambda/todo-api")
    report = run("todo-app")
    f = finding(report, "todo-api")
    assert f.status is Status.UNKNOWN and "log group does not exist" in f.summary and report.plan["actions"] == []

    seeded("t-developer")
    report = run("t-developer")
    assert report.outcome == "nothing-to-do" and report.status is Status.OK and report.api_calls <= 2
    assert report.findings[0].check == "coverage" and "nothing to check" in report.findings[0].summary
