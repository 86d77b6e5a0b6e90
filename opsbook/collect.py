"""Results of submitted tasks: a task that failed is UNKNOWN with its reason, never dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from opsbook import aws
from opsbook.findings import Finding, unknown
from opsbook.unfinished import StepFailed, is_not_ready, why_not_run


def gather(futures: dict[str, PrefectFuture]) -> list[Finding]:
    """Each check's findings; a check task that failed is UNKNOWN with its reason, never dropped."""
    findings: list[Finding] = []
    for name, fut in futures.items():
        fut.wait()
        state = fut.state
        if state.is_completed():
            findings += fut.result()
        else:
            findings.append(unknown(name, "(whole check)", failure_reason(state)))
    return findings


def failure_of(state: Any) -> BaseException:
    """What a task that did not complete ended with: its exception, or (Prefect's NotReady: a step it needs failed, so it
    never ran) a ``StepFailed`` naming that step and its error; never Prefect's "Run is in PENDING state"."""
    if is_not_ready(state):
        return StepFailed(f"did not run: {why_not_run(state)}")
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as unfinished:  # noqa: BLE001 - a state without a result (not final): said with its message
        return StepFailed(f"did not finish ({state.type.value}: {state.message or unfinished})")
    return exc if isinstance(exc, BaseException) else StepFailed(str(state.message))


def failure_reason(state: Any) -> str:
    """``failure_of`` as the reason of an UNKNOWN finding."""
    return error_text(failure_of(state))


def error_text(exc: BaseException) -> str:
    """An exception as a reason: a ``StepFailed`` says it all, anything else as ``aws.describe_error`` says it."""
    return str(exc) if isinstance(exc, StepFailed) else aws.describe_error(exc)


def settled(fut: PrefectFuture, name: str, empty: Any, lost: list[Finding]) -> Any:
    """A read task's result; a task that failed outright leaves ``empty`` and an UNKNOWN finding with its reason."""
    fut.wait()
    if fut.state.is_completed():
        return fut.result()
    lost.append(unknown(name, "(whole check)", failure_reason(fut.state)))
    return empty


def future_value(fut: Any) -> Any:
    """A future's result, or the exception it ended with (made UNKNOWN by the caller, never dropped)."""
    fut.wait()
    return fut.result() if fut.state.is_completed() else failure_of(fut.state)


def gather_by(futures: dict[str, PrefectFuture], deadline: aws.Deadline, grace: float,
              judges: dict[str, Callable[[Any], list[Finding]]] | None = None) -> list[Finding]:
    """gather(), but a check not finished at the deadline (plus ``grace``) is UNKNOWN instead of waited for.
    ``judges`` turn the raw result of the tasks named there into findings (the others return findings)."""
    until = time.monotonic() + deadline.remaining + grace  # one bound for all, not one per check
    judges = judges or {}
    findings: list[Finding] = []
    late: list[Finding] = []
    for name, fut in futures.items():
        fut.wait(timeout=max(0.0, until - time.monotonic()))
        if not fut.state.is_final() and not is_not_ready(fut.state):  # NotReady: it will never run (gather says why)
            late.append(unknown(name, "(whole check)", f"not finished within the run's deadline ({deadline.seconds:.1f} s)"))
        elif name in judges and fut.state.is_completed():
            findings += judges[name](fut.result())
        else:
            findings += gather({name: fut})
    return findings + late


def judge_states(states: dict[str, Any], judges: dict[str, Callable[[Any], list[Finding]]], check: Callable[[str], str]) -> list[Finding]:
    """Each read's items through its judge; a read that failed as a whole (its exception) is UNKNOWN ``check(name)``."""
    out: list[Finding] = []
    for name, value in states.items():
        if isinstance(value, BaseException):
            out.append(unknown(check(name), "(whole check)", aws.describe_error(value)))
            continue
        for s in value:
            out += judges[name](s)
    return out


class DeadlineTaskRunner(ThreadPoolTaskRunner):
    """The task runner of a read-only runbook with a deadline: at the end of the flow, tasks still running (given
    up at the deadline, already UNKNOWN in its report) are abandoned, not waited for; ``abandoned()`` says whether
    any still run, so that the process can end without waiting for them either (opsbook.cli)."""

    _pools: list[Any] = []

    def cancel_all(self) -> None:
        for event in self._cancel_events.values():
            event.set()
        if self._executor is not None:
            DeadlineTaskRunner._pools.append(self._executor)
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.cancel_all()
        TaskRunner.__exit__(self, exc_type, exc_value, traceback)  # not ThreadPoolTaskRunner's: it waits


def abandoned() -> list[threading.Thread]:
    """Threads still blocked in a call that nothing waits for any more: the task threads of finished deadline runs,
    and opsbook's own worker threads (``aws.parallel``: items given up at their deadline)."""
    tasks = {t for pool in DeadlineTaskRunner._pools for t in list(getattr(pool, "_threads", ()))}
    ours = {t for t in threading.enumerate() if t.name.startswith("opsbook") and not t.daemon}
    until = time.monotonic() + 0.2  # an idle pool thread ends as soon as it sees the pool's shutdown: not blocked
    for t in tasks | ours:
        t.join(timeout=max(0.0, until - time.monotonic()))
    return [t for t in tasks | ours if t.is_alive()]
