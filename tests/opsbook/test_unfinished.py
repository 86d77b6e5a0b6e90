"""A step left PENDING by a failed one names the failed step and its error (issue 19 item 5), never Prefect's
"Run is in PENDING state"."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from prefect import flow, task
from prefect.exceptions import UnfinishedRun
from prefect.states import Completed, Failed, Pending

from opsbook import unfinished as u
from opsbook.collect import failure_reason, gather
from opsbook.findings import Status
from opsbook.report import result_of

A = "11111111-1111-1111-1111-111111111111"
B = "22222222-2222-2222-2222-222222222222"


def not_ready(upstream: str):
    return Pending(name="NotReady", message=f"Upstream task run '{upstream}' did not reach a 'COMPLETED' state.")


def run(name: str, state, flow_run_id: str = "f") -> SimpleNamespace:
    return SimpleNamespace(id=name, name=name, state=state, flow_run_id=flow_run_id)


def test_a_not_ready_step_names_the_failed_step_it_waited_on_through_a_chain():
    runs = {A: run("read-records-1a2", Failed(message="Task run encountered an exception QueueDoesNotExist: gone")),
            B: run("make-plan-3c4", not_ready(A))}
    why = u.why_not_run(not_ready(B), runs.get)
    assert why == "step 'read-records' failed: QueueDoesNotExist: gone (and 'make-plan' could not run)"
    assert u.why_not_run(not_ready(A), runs.get) == "step 'read-records' failed: QueueDoesNotExist: gone"
    unknown_run = u.why_not_run(not_ready("33333333-3333-3333-3333-333333333333"), {}.get)
    assert "33333333" in unknown_run and "PENDING" not in unknown_run


def test_explain_names_the_flow_runs_failed_steps_and_leaves_other_errors_alone():
    failed = {"f": [run("read-consumer-508", Failed(message="Task run encountered an exception QueueDoesNotExist: gone"))]}
    exc = u.explain(UnfinishedRun("Run is in PENDING state, its result is not available."), "f", lambda f: failed.get(f, []))
    assert isinstance(exc, u.StepFailed) and str(exc).startswith("step 'read-consumer' failed: QueueDoesNotExist: gone")
    nothing_known = u.explain(UnfinishedRun("Run is in PENDING state, its result is not available."), "g", lambda f: [])
    assert isinstance(nothing_known, u.StepFailed) and "a step the run needs did not complete" in str(nothing_known)
    other = ValueError("bad")  # the healthy twin: any other error is itself
    assert u.explain(other, "f", lambda f: failed["f"]) is other


def test_the_engines_failed_line_is_remembered_and_a_completed_one_is_not():
    seen = u.FailedSteps()
    logger = logging.getLogger("test-unfinished")
    for state, run_id in ((Failed(message="Task run encountered an exception KeyError: 'x'"), A), (Completed(), B)):
        record = logger.makeRecord("prefect.task_runs", logging.ERROR, __file__, 1, f"Finished in state {state}", None, None,
                                   extra={"task_run_id": run_id, "flow_run_id": "f", "task_run_name": "read-x-9f0"})
        seen.emit(record)
    assert seen.get(B) is None and u.step_error(seen.get(A)) == "step 'read-x' failed: KeyError: 'x'"
    assert [r.id for r in seen.of_flow_run("f")] == [A]


def test_failure_reason_of_a_not_ready_state():
    assert failure_reason(Failed(data=ValueError("boom"))) == "ValueError: boom"
    assert failure_reason(not_ready("44444444-4444-4444-4444-444444444444")).startswith("did not run: a step it needs (task run 4444")


@task(name="boom-read", retries=0)
def boom() -> int:
    raise LookupError("the queue is gone")


@task(name="uses-it")
def uses(x: int) -> int:
    return x + 1


@flow(name="unfinished-demo")
def demo(via_gather: bool) -> object:
    later = uses.submit(boom.submit())
    if via_gather:
        return gather({"uses-it": later})
    return later.result()  # Prefect: UnfinishedRun: Run is in PENDING state


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_left_pending_by_a_failed_step_names_it():
    findings = demo(via_gather=True)
    assert [f.status for f in findings] == [Status.UNKNOWN]
    assert findings[0].summary == "could not be read: did not run: step 'boom-read' failed: LookupError: the queue is gone"
    state = demo(via_gather=False, return_state=True)
    result = result_of(state)
    assert isinstance(result, u.StepFailed), result
    assert str(result).startswith("step 'boom-read' failed: LookupError: the queue is gone") and "PENDING" not in str(result)


@flow(name="unfinished-session-demo")
def session_demo() -> object:
    from opsbook.inventory import System
    from opsbook.mutation.session import MutationSession

    session = MutationSession("unfinished-session-demo", System(name="x", region="us-east-1"), dry_run=True)
    with session:
        uses.submit(boom.submit()).result()
    return session.finish()


@pytest.mark.usefixtures("prefect_harness")
def test_a_mutating_run_left_pending_names_the_failed_step_in_its_report():
    report = result_of(session_demo(return_state=True))
    error = [f for f in report.findings if f.check == "error"][0]
    assert report.outcome == "failed" and error.summary.startswith("StepFailed: step 'boom-read' failed: LookupError: the queue is gone")
    assert "PENDING" not in error.summary
