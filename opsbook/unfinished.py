"""Why a step or a run did not finish: the failed step by name and its error, never "Run is in PENDING state".

Prefect leaves a task whose input (an argument that is a future, or ``wait_for`` without ``allow_failure``) failed
PENDING, named "NotReady", its message naming only the upstream task run's id. ``.result()`` of it raises
``UnfinishedRun: Run is in PENDING state, its result is not available``; a flow that lets that escape ends with it, and
an operator learns nothing. ``why_not_run`` (a NotReady state) and ``explain`` (an exception, with the flow run's
failed steps) turn that into a sentence naming the step that failed and why.

Which step failed, and why, is known in this process the moment it fails: Prefect's task engine logs "Finished in state
Failed(...)" with the task run's id, name and flow run id (``prefect.task_runs``). ``FailedSteps`` keeps the last few
of those (no API call, no wait: this works with the Prefect API down, and in a test server that records no task runs);
a task run not seen here is read once from the Prefect API. The pure parts take the reader as an argument.
"""

from __future__ import annotations

import ast
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from prefect.client.schemas.objects import StateType
from prefect.exceptions import UnfinishedRun, UpstreamTaskError
from prefect.logging.configuration import ensure_logging_setup

FINISHED = re.compile(r"Finished in state (?P<name>\w+)\((?P<message>'.*'|\".*\")?(?:, )?(?:type=(?P<type>\w+))?\)$", re.S)
UPSTREAM = re.compile(r"Upstream task run '([0-9a-fA-F-]{36})'")
PREFIX = "Task run encountered an exception "
DEPTH = 5  # NotReady steps followed back to the one that failed


class StepFailed(RuntimeError):
    """A step the run needs failed: the message names it and its error (what an operator reads instead of PENDING)."""


def is_not_ready(state: Any) -> bool:
    """A task Prefect never ran because something it needs failed (PENDING, named NotReady)."""
    return state is not None and state.is_pending() and state.name == "NotReady"


def upstream_id(state: Any) -> str | None:
    """The task run id a NotReady state waits on (Prefect names only that)."""
    m = UPSTREAM.search(str(getattr(state, "message", "") or ""))
    return m.group(1) if m else None


def step_name(run: Any) -> str:
    """A task run's step name: its task's name ("read-consumer"), else the run's name without Prefect's suffix."""
    name = str(getattr(run, "name", "") or "")
    return re.sub(r"-[0-9a-f]{3}$", "", name) or "a step"


def step_error(run: Any) -> str:
    """``step 'NAME' failed: ERROR`` of a task run read back (its state's message, without Prefect's preamble)."""
    state = getattr(run, "state", None)
    message = str(getattr(state, "message", "") or "").removeprefix(PREFIX).strip()
    kind = state.type.value.lower() if state is not None else "failed"
    return f"step '{step_name(run)}' {kind}" + (f": {message}" if message else "")


def why_not_run(state: Any, read: Callable[[str], Any] | None = None) -> str:
    """Why a NotReady task did not run: the step that failed (followed back through NotReady steps) and its error."""
    read = read or read_task_run
    seen: list[str] = []
    for _ in range(DEPTH):
        run_id = upstream_id(state)
        if run_id is None:
            break
        run = read(run_id)
        if run is None:
            return f"a step it needs (task run {run_id}) did not complete; the run's graph in the Prefect UI marks it"
        if not is_not_ready(run.state):
            return step_error(run) + (f" (and {', '.join(seen)} could not run)" if seen else "")
        seen.append(f"'{step_name(run)}'")
        state = run.state
    return "a step it needs did not complete" + (f" ({', '.join(seen)} could not run)" if seen else "")


def explain(exc: BaseException, flow_run_id: Any = None, failed: Callable[[Any], list[Any]] | None = None) -> BaseException:
    """``exc`` as raised, unless it is Prefect's "Run is in PENDING state" (or an upstream error): then a ``StepFailed``
    naming the flow run's failed step(s) and their errors (``failed``: the failed task runs of a flow run)."""
    if not isinstance(exc, (UnfinishedRun, UpstreamTaskError)):
        return exc
    runs = (failed or failed_task_runs)(flow_run_id) if flow_run_id else []
    if runs:
        what = "; ".join(step_error(r) for r in runs)
        return StepFailed(f"{what}; the run could not go on without it (a later step needs what it reads)")
    return StepFailed("a step the run needs did not complete, so a later step could not run (Prefect: "
                      f"{exc}); the failed step is marked in the run's graph in the Prefect UI")


# --- which steps failed: seen in this process, else read once from the Prefect API --------------------------------


class FailedSteps(logging.Handler):
    """The task runs that ended Failed or Crashed in this process (the last ``KEEP``), from the task engine's own
    "Finished in state ..." line: task run id -> (flow run id, run name, message)."""

    KEEP = 256

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.runs: OrderedDict[str, SimpleNamespace] = OrderedDict()
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        run_id = getattr(record, "task_run_id", None)
        m = FINISHED.match(record.getMessage()) if run_id else None
        if not m:
            return
        kind = (m.group("type") or m.group("name")).upper()
        if kind not in ("FAILED", "CRASHED"):
            return
        try:
            message = ast.literal_eval(m.group("message")) if m.group("message") else ""
        except (ValueError, SyntaxError):
            message = m.group("message")
        state = SimpleNamespace(type=StateType(kind), name=m.group("name"), message=message, is_pending=lambda: False)
        run = SimpleNamespace(id=run_id, flow_run_id=str(getattr(record, "flow_run_id", "") or ""),
                              name=str(getattr(record, "task_run_name", "") or ""), state=state)
        with self.guard:
            self.runs[run_id] = run
            while len(self.runs) > self.KEEP:
                self.runs.popitem(last=False)

    def get(self, run_id: str) -> Any:
        with self.guard:
            return self.runs.get(run_id)

    def of_flow_run(self, flow_run_id: Any) -> list[Any]:
        with self.guard:
            return [r for r in self.runs.values() if r.flow_run_id == str(flow_run_id)]


def watch() -> FailedSteps:
    """The process's ``FailedSteps``, on Prefect's task run logger (again, if Prefect's logging set-up replaced it)."""
    logger = logging.getLogger("prefect.task_runs")
    if SEEN not in logger.handlers:
        logger.addHandler(SEEN)
    return SEEN


SEEN = FailedSteps()
ensure_logging_setup()  # Prefect's first logging set-up replaces its loggers' handlers; later ones are incremental (kept)
watch()


def read_task_run(task_run_id: str) -> Any:
    """A failed task run: as seen in this process, else as the Prefect API has it (one try); None when neither has it."""
    run = watch().get(task_run_id)
    if run is not None:
        return run
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:  # no server to ask (Prefect would start an ephemeral one: seconds, for a name)
        return None
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            run = client.read_task_run(task_run_id)
    except Exception:  # noqa: BLE001 - the API down, or the run not recorded (yet): the caller says it is not known
        return None
    return run if run.state is not None else None


def failed_task_runs(flow_run_id: Any) -> list[Any]:
    """The task runs of a flow run that failed or crashed, as seen in this process."""
    return watch().of_flow_run(flow_run_id)
