"""The call-count guard (issue 20): each read-only runbook's AWS calls on a fixed sandbox scenario (the healthy seed
systems) may not grow. The budget, per runbook, system and operation, is tests/flows/call_budget.json; a run that
makes more calls of an operation than its budget fails, naming it. Fewer is fine (the test says so: tighten the budget
with OPSBOOK_WRITE_CALL_BUDGET=1).

Calls are counted as runs report them (every attempt); the sandbox does not throttle here, so there are no retries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from opsbook import registry
from opsbook.report import RunReport

BUDGET = Path(__file__).with_name("call_budget.json")
SCENARIO = {  # runbook -> systems (healthy seeds); parameters as a user would leave them
    "daily-health": ["todo-app", "hr-resource-optimization"],
    "emergency-check": ["todo-app", "hr-resource-optimization"],
    "maintenance-audit": ["todo-app", "hr-resource-optimization"],
    "backup-verify": ["todo-app", "hr-resource-optimization"],
}
PARAMS = {"emergency-check": {"deadline_seconds": 120.0}, "daily-health": {"notify": False}}  # no deadline cut-off here


def counts(runbook: str, system: str) -> dict[str, int]:
    state = registry.get(runbook).load()(system=system, return_state=True, **PARAMS.get(runbook, {}))
    report = state.result(raise_on_failure=False)
    report = getattr(report, "data", report) if not isinstance(report, RunReport) else report
    assert isinstance(report, RunReport), report
    assert report.api_retries == 0, report.api_retries_by_operation  # a retry is noise here, not a call the runbook needs
    return dict(report.api_calls_by_operation)


@pytest.mark.usefixtures("prefect_harness")
def test_no_runbooks_call_count_grows_on_the_fixed_scenario(seeded):
    for system in {s for systems in SCENARIO.values() for s in systems}:
        seeded(system)
    measured = {rb: {s: counts(rb, s) for s in systems} for rb, systems in SCENARIO.items()}
    if os.environ.get("OPSBOOK_WRITE_CALL_BUDGET") == "1":
        BUDGET.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    budget = json.loads(BUDGET.read_text())
    grown = [f"{rb} {s} {op}: {n} calls, budget {budget.get(rb, {}).get(s, {}).get(op, 0)}"
             for rb, by_system in measured.items() for s, ops in by_system.items() for op, n in ops.items()
             if n > budget.get(rb, {}).get(s, {}).get(op, 0)]
    assert not grown, "calls grew (batch, reuse what the run holds, or raise the budget with a reason):\n" + "\n".join(grown)
    total = {rb: sum(sum(ops.values()) for ops in by.values()) for rb, by in measured.items()}
    assert all(n > 0 for n in total.values()), total  # each runbook really read the scenario
