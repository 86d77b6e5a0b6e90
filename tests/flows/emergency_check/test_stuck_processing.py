"""emergency-check on LEH's AI worker stuck (seed 003 시나리오 A): the same queue-fed worker checks as daily-health, the
errors of the last hour only. The healthy twin: test_flow.py's healthy seed systems (LEH among them: OK, P3)."""

from __future__ import annotations

import pytest

from flows.emergency_check.flow import TASKS, emergency_check
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from sandbox.faults import apply_fault

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_disabled_trigger_and_openai_429s_of_the_last_hour_are_found_in_the_first_minutes(seeded, sandbox):
    leh = seeded("leh")
    apply_fault(sandbox, leh, "leh-trigger-off")
    apply_fault(sandbox, leh, "leh-openai-outage")
    report = emergency_check(system="leh", deadline_seconds=30, return_state=True).result(raise_on_failure=False)
    by = {(f.check, f.resource): f for f in report.findings}
    assert by[("worker-trigger", "leh-ai-worker<-leh-ai-jobs")].status is Status.CRIT
    errors = by[("worker-errors", "leh-ai-worker")]
    assert errors.status is Status.WARN and errors.details["external"] == 12 and errors.summary.startswith("in the last 1 h: 12 from OpenAI")
    assert by[("provider-status", "https://status.openai.com/api/v2/status.json")].status is Status.WARN
    assert by[("queue-backlog", "leh-ai-jobs")].status is Status.WARN
    policy = set(policy_for(TASKS)["Statement"][0]["Action"])
    assert {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None} <= policy and report.undeclared_iam_actions == []
