"""daily-health on LEH's queue-fed AI worker (seed 003 시나리오 A, "uploads succeed, the UI shows 'processing' forever"):
each named fault next to its healthy twin (seed once, run healthy, plant the fault, run again)."""

from __future__ import annotations

import pytest

from flows.daily_health.flow import daily_health
from opsbook.findings import Status
from opsbook.report import RunReport
from sandbox.faults import apply_fault
from sandbox.leh_queues import set_breaker

pytestmark = pytest.mark.usefixtures("prefect_harness")
TRIGGER = "leh-ai-worker<-leh-ai-jobs"
UPLOADS = "s3://leh-evidence-uploads/uploads/"
STATUS_PAGE = "https://status.openai.com/api/v2/status.json"


def run(system: str = "leh") -> RunReport:
    report = daily_health(system=system, notify=False, return_state=True).result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def only(report: RunReport, check: str, resource: str | None = None):
    hits = [f for f in report.findings if f.check == check and (resource is None or f.resource == resource)]
    assert len(hits) == 1, (check, resource, hits)
    return hits[0]


def not_ok(report: RunReport):
    return sorted((f.check, f.resource, f.status.value) for f in report.findings if f.status is not Status.OK)


def healthy_twin(seeded) -> object:
    leh = seeded("leh")
    report = run()
    assert not_ok(report) == [] and report.status is Status.OK
    assert only(report, "worker-trigger", TRIGGER).summary == "Enabled from leh-ai-jobs; last processing result: OK"
    assert only(report, "queue-backlog", "leh-ai-jobs").summary == "leh-ai-jobs: empty"
    assert only(report, "uploads-unprocessed", UPLOADS).details["checked"] == 3
    assert only(report, "worker-errors", "leh-ai-worker").value == 0
    assert only(report, "provider-status", STATUS_PAGE).status is Status.OK
    return leh


def test_trigger_off_is_crit_and_a_breaker_pause_is_the_warning_it_is(seeded, sandbox):
    leh = healthy_twin(seeded)
    apply_fault(sandbox, leh, "leh-trigger-off")
    report = run()
    f = only(report, "worker-trigger", TRIGGER)
    assert f.status is Status.CRIT and "leh-ai-worker's trigger from leh-ai-jobs is Disabled" in f.summary
    assert "no circuit-breaker record explains it" in f.summary
    assert only(report, "queue-backlog", "leh-ai-jobs").status is Status.WARN  # 40 min old
    set_breaker(sandbox, leh, "__service__", "OPEN")
    paused = only(run(), "worker-trigger", TRIGGER)
    assert paused.status is Status.WARN and "paused by the circuit breaker (sandbox: over budget; by sandbox at " in paused.summary


def test_queue_stalled_with_nothing_erroring_is_crit_naming_the_queue(seeded, sandbox):
    leh = healthy_twin(seeded)
    apply_fault(sandbox, leh, "leh-queue-stalled")
    report = run()
    assert not_ok(report) == [("queue-backlog", "leh-ai-jobs", "CRIT")]
    f = only(report, "queue-backlog", "leh-ai-jobs")
    assert f.value == 90 and f.summary.startswith("leh-ai-jobs: oldest message 90 min old (CRIT from 60 min)") and "40 waiting" in f.summary


def test_uploads_without_a_result_are_counted_with_a_few_keys(seeded, sandbox):
    leh = healthy_twin(seeded)
    fault = apply_fault(sandbox, leh, "leh-uploads-unprocessed")
    report = run()
    assert not_ok(report) == [("uploads-unprocessed", UPLOADS, "WARN")]
    f = only(report, "uploads-unprocessed", UPLOADS)
    assert (f.value, f.details["checked"]) == (5, 8) and set(f.details["missing_keys"]) == set(fault["keys"])
    assert f.summary.startswith("5 of 8 uploads of the last 24 h have no result in leh-evidence")


def test_openai_outage_is_told_apart_from_the_workers_own_errors(seeded, sandbox):
    leh = healthy_twin(seeded)
    apply_fault(sandbox, leh, "leh-openai-outage")
    report = run()
    f = only(report, "worker-errors", "leh-ai-worker")
    assert f.status is Status.WARN and (f.details["external"], f.details["internal"]) == (12, 0) and "12 from OpenAI" in f.summary
    p = only(report, "provider-status", STATUS_PAGE)
    assert p.status is Status.WARN and "OpenAI reports major: Elevated error rates" in p.summary
