"""diagnose-stuck-processing on the sandbox: seeded once, healthy first, then the seed's causes planted one after the
other (each later one outranks the ones before it in the verdict's order), the cause named each time."""

from __future__ import annotations

import pytest

from flows.diagnose_stuck_processing.flow import TASKS, diagnose_stuck_processing
from flows.diagnose_stuck_processing.judge import VERDICT
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.report import RunReport
from sandbox.faults import apply_fault
from sandbox.lambda_timeouts import backdate

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(system: str = "leh") -> tuple[RunReport, str]:
    state = diagnose_stuck_processing(system=system, return_state=True)
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
