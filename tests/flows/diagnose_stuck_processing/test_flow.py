"""diagnose-stuck-processing on the sandbox: seeded once, healthy first, then the seed's causes planted one after the
other (each later one outranks the ones before it in the verdict's order), the cause named each time."""

from __future__ import annotations

import pytest

from flows.diagnose_stuck_processing.flow import TASKS, diagnose_stuck_processing
from flows.diagnose_stuck_processing.judge import VERDICT
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.mutation.core import ShellApproval, shell_approval
from opsbook.report import RunReport
from sandbox.faults import apply_fault
from sandbox.lambda_timeouts import backdate
from sandbox.server import sandbox_client

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(system: str = "leh", approval: ShellApproval | None = None, **params) -> tuple[RunReport, str]:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = diagnose_stuck_processing(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    assert report.findings[0].check == VERDICT
    return report, report.findings[0].details["cause"]


def test_each_cause_is_named_with_its_next_action_and_the_healthy_twin_is_nothing_stuck(seeded, sandbox):
    leh = seeded("leh")
    report, cause = run()
    assert (cause, report.status) == ("none", Status.OK) and report.undeclared_iam_actions == []
    policy = set(policy_for(TASKS)["Statement"][0]["Action"])
    assert {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None} <= policy

    apply_fault(sandbox, leh, "leh-uploads-unprocessed")
    report, cause = run()
    assert cause == "not-enqueued" and report.findings[0].value == 5

    apply_fault(sandbox, leh, "leh-queue-stalled")
    report, cause = run()
    assert (cause, report.status) == ("stalled", Status.CRIT)

    lam = sandbox_client(sandbox, "lambda", leh.region)
    lam.put_function_concurrency(FunctionName="leh-ai-worker", ReservedConcurrentExecutions=0)
    report, cause = run()
    assert cause == "throttled" and "delete-function-concurrency --function-name leh-ai-worker" in report.findings[0].details["next"][0]
    lam.delete_function_concurrency(FunctionName="leh-ai-worker")

    backdate(sandbox, leh, "leh-ai-worker", days=2)  # the worker's code is older than its first failure
    apply_fault(sandbox, leh, "log-errors", group="/aws/lambda/leh-ai-worker")
    report, cause = run()
    nxt = report.findings[0].details["next"]
    assert cause == "code-bug" and nxt[0].startswith("deploy the fix first (the worker last changed at ") and "ev-stuck-00000" in nxt[1]

    apply_fault(sandbox, leh, "leh-openai-outage")
    report, cause = run()
    assert cause == "external-outage" and "OpenAI reports major" in report.findings[0].summary

    apply_fault(sandbox, leh, "leh-trigger-off")
    report, cause = run()
    assert (cause, report.status) == ("trigger-off", Status.CRIT)
    assert "aws lambda update-event-source-mapping --uuid " in report.findings[0].details["next"][0]


def test_a_fixed_code_bug_reprocesses_each_stuck_evidence_once_through_the_admin_api_verified_by_its_result(seeded, sandbox, monkeypatch):
    monkeypatch.setenv("LEH_ADMIN_TOKEN", "sandbox-admin-token")
    leh = seeded("leh")
    stuck = apply_fault(sandbox, leh, "leh-uploads-unprocessed", count=3)
    backdate(sandbox, leh, "leh-ai-worker", days=2)
    apply_fault(sandbox, leh, "log-errors", group="/aws/lambda/leh-ai-worker")
    report, cause = run()
    assert cause == "code-bug" and report.plan["actions"] == [] and "no reprocess-evidence step: deploy the fix first" in report.plan["notes"][0]

    backdate(sandbox, leh, "leh-ai-worker", days=0)  # the hot-fix: deployed now, after the first failure
    report, cause = run()  # a dry run: the plan, nothing asked
    assert cause == "code-bug" and sorted(a["resource"] for a in report.plan["actions"]) == [f"case-stuck-0{i}/ev-stuck-0000{i}" for i in range(3)]
    assert {a["kind"] for a in report.plan["actions"]} == {"reprocess-evidence"}
    assert sandbox.endpoints.posts == []

    report, _ = run(dry_run=False, approval="yes", approver="tech-lead", settle_timeout_s=10)
    assert sorted((r["resource"], r["status"]) for r in report.records) == [(f"case-stuck-0{i}/ev-stuck-0000{i}", "verified") for i in range(3)]
    posts = sandbox.endpoints.posts
    assert sorted(p["body"] for p in posts) == sorted(f'{{"evidence_id":"ev-stuck-0000{i}"}}' for i in range(3))
    assert {p["key"] for p in posts} == {"api.leh.example.com/admin/reprocess-evidence"} and {p["authorization"] for p in posts} == {"Bearer sandbox-admin-token"}
    assert report.undeclared_iam_actions == [] and len(stuck["keys"]) == 3

    again, _ = run(dry_run=False, approval="yes")  # every result is there: nothing stuck, nothing asked twice
    assert again.plan["actions"] == [] and len(sandbox.endpoints.posts) == 3


def test_without_an_admin_api_the_step_sends_the_job_again_in_the_inventorys_shape_once(seeded, sandbox, tmp_path):
    import json
    from pathlib import Path

    import yaml

    from flows.diagnose_stuck_processing.flow import appliers
    from flows.diagnose_stuck_processing.judge import REPROCESS
    from opsbook.inventory import load_system
    from sandbox import leh_queues

    raw = yaml.safe_load((Path(__file__).resolve().parents[3] / "systems" / "leh.yaml").read_text(encoding="utf-8"))
    del raw["stuck_processing"]["reprocess"]["admin_api_url"]
    (tmp_path / "leh.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    leh = load_system(str(tmp_path / "leh.yaml"))
    seeded("leh")
    key = apply_fault(sandbox, leh, "leh-uploads-unprocessed", count=1)["keys"][0]
    step = appliers({"items": {"case-stuck-00/ev-stuck-00000": {"key": key, "uploaded_at": "2026-12-04T10:00:00+00:00"}}})[REPROCESS]
    assert step.read(leh, "case-stuck-00/ev-stuck-00000") == "no result"
    step.apply(leh, "case-stuck-00/ev-stuck-00000", "result")
    sent = leh_queues.read_all(sandbox, leh, "leh-ai-jobs")
    assert [json.loads(m["body"]) for m in sent] == [{"evidence_id": "ev-stuck-00000", "case_id": "case-stuck-00", "s3_key": key,
                                                     "task": "summarize-evidence", "reprocess": "true"}]
    sandbox_ddb = sandbox_client(sandbox, "dynamodb", leh.region)
    sandbox_ddb.put_item(TableName="leh-evidence", Item={"case_id": {"S": "case-stuck-00"}, "evidence_id": {"S": "ev-stuck-00000"}})  # the worker did it
    assert step.read(leh, "case-stuck-00/ev-stuck-00000") == "result"
    step.apply(leh, "case-stuck-00/ev-stuck-00000", "result")  # its result is there: nothing is sent again
    assert leh_queues.depth(sandbox, leh, "leh-ai-jobs") == {"visible": 0, "in_flight": 1}
