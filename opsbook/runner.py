"""Run a runbook in this process against the one Prefect server (shared by the CLI and the demo).

Order matters: ``server.configure()`` (no network) before Prefect is imported,
then the flow's parameters are checked against its signature (no AWS call, no
server needed), then ``server.ensure()``, then the run.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from typing import Any

from opsbook import server


class ParameterError(ValueError):
    """A --param the runbook does not take, or a value of the wrong type (exit 3, nothing ran)."""


def import_prefect(verbose: bool = False) -> server.Target:
    """Configure the server, import Prefect, and check Prefect really reads that server."""
    t = server.configure()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Each try of a Prefect API call waits 10 s, not Prefect's 60 s. A server silent from the start is not used at all
    # (opsbook.offline); one that stops answering mid-run still costs up to ~2 min a call (Prefect's 5 retries).
    os.environ.setdefault("PREFECT_API_REQUEST_TIMEOUT", os.environ.get("OPSBOOK_PREFECT_REQUEST_TIMEOUT", "10"))
    if not verbose:  # Prefect's console chatter and task tracebacks stay in the UI; findings carry the reasons
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    from opsbook import offline

    if offline.active():  # the server does not answer: Prefect talks to this run's journal (it may have been imported)
        offline.active().point(settings)
    if str(settings.api.url or "").rstrip("/") != t.api_url:
        raise RuntimeError(f"internal error: Prefect was imported before opsbook chose its server (Prefect reads "
                           f"{settings.api.url!r}, opsbook chose {t.api_url}); runs would go to a throw-away server")
    # A CLI run is short and watched: no flow heartbeat thread (it costs ~1 s at
    # the end of every sync flow). Set on this process's settings object;
    # temporary_settings() would cost 0.15 s of re-validation.
    settings.flows.heartbeat_frequency = None
    _quiet_prefect_console(verbose)
    return t


def prefect_settings() -> Any:
    from prefect.settings import get_current_settings

    return get_current_settings()


def prepare_prefect(verbose: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Prefect imported and its server up (started when it is on this machine and down)."""
    t = import_prefect(verbose)
    started, took = server.ensure(t, quiet=quiet)
    return {"api_url": t.api_url, "ui_url": t.ui_url, "api_source": t.source, "server_started": started,
            "server_start_s": round(took, 2)}


def _quiet_prefect_console(verbose: bool) -> None:
    """Prefect's own console chatter goes to the log file and the UI, not the user's screen."""
    from prefect.logging.handlers import PrefectConsoleHandler

    level = logging.INFO if verbose else logging.WARNING
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for h in logging.getLogger(name).handlers:
            if isinstance(h, PrefectConsoleHandler):
                h.setLevel(level)


def flush_prefect(timeout: float = 10.0) -> None:
    """Send queued run logs and events to the API before the process (or the server) stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout)


# --- parameters ---------------------------------------------------------------------------------


def parameters(flow: Any) -> dict[str, dict[str, Any]]:
    """The flow's parameters as the UI form sees them: name -> JSON schema (type, default, description, bounds)."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(flow).model_dump()
    required = set(schema.get("required", []))
    return {name: {**prop, "required": name in required} for name, prop in schema["properties"].items()}


def type_name(prop: dict[str, Any]) -> str:
    """A short type for help text: integer, string, boolean, array, one of a|b, ... (optional)."""
    if "enum" in prop:
        return "one of " + "|".join(str(v) for v in prop["enum"])
    if "anyOf" in prop:
        kinds = [type_name(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(kinds) + (" (optional)" if any(p.get("type") == "null" for p in prop["anyOf"]) else "")
    if prop.get("type") == "array" and "items" in prop:
        return f"list of {type_name(prop['items'])}"
    return str(prop.get("type") or prop.get("$ref", "any").rsplit("/", 1)[-1])


def _is_text(prop: dict[str, Any]) -> bool:
    kinds = {p.get("type") for p in prop.get("anyOf", [prop])} - {"null"}
    return kinds == {"string"} and "enum" not in prop


def coerce(flow: Any, raw: dict[str, str]) -> dict[str, Any]:
    """Shell strings to values: as they are for a string parameter (case_id=2024001 stays "2024001"), else JSON
    when they parse (to_revision=41, tables=["a","b"], accept_guess=true), else the string (pydantic judges it)."""
    props = parameters(flow)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in props and _is_text(props[key]):
            out[key] = value
            continue
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def validate(flow: Any, runbook: str, params: dict[str, Any], hidden: set[str] = frozenset()) -> dict[str, Any]:
    """Check ``params`` (the --param values, plus system) against the flow's signature; raise ParameterError.
    ``hidden``: parameters the caller sets itself, not named among the valid ones."""
    from prefect.exceptions import ParameterTypeError

    accepted = inspect.signature(flow.fn).parameters
    unknown = [k for k in params if k not in accepted]
    if unknown:
        valid = ", ".join(k for k in accepted if k not in params and k != "system" and k not in hidden) or "none"
        raise ParameterError(f"--param {unknown[0]}: {runbook} has no such parameter; valid: {valid} "
                             f"(`opsbook run {runbook} --help` describes them)")
    log = logging.getLogger("prefect.flows")
    level = log.level
    log.setLevel(logging.CRITICAL)  # Prefect logs the same error with a traceback-like dump; we say it in one line
    try:
        return flow.validate_parameters(params)
    except ParameterTypeError as exc:
        lines = [ln.strip(" -") for ln in str(exc).splitlines()[1:] if ln.strip()]
        first = lines[0] if lines else str(exc)
        name = first.split(":", 1)[0].split(".", 1)[0]  # "checks.0": the list's first item
        shown = repr(params.get(name)) if name in params else "?"
        expected = type_name(parameters(flow).get(name, {})).replace(" (optional)", "")
        raise ParameterError(f"--param {name}={shown}: {first.split(':', 1)[-1].strip()} (expected {expected})") from None
    finally:
        log.setLevel(level)


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _plain(v) for k, v in value.items())


def plain_parameters(flow: Any) -> Any:
    """The flow, storing parameters that are plain JSON (every runbook's are: strings, numbers, booleans, lists) as they
    are; anything else still goes through Prefect's own serializer. Prefect's imports FastAPI's encoder for it: ~0.1 s of
    every ad hoc run's start, for values that need no encoding."""
    if getattr(flow, "_opsbook_plain", False):
        return flow
    prefect_way = flow.serialize_parameters

    def serialize(parameters: dict[str, Any]) -> dict[str, Any]:
        if all(_plain(v) for v in parameters.values()):
            return json.loads(json.dumps(parameters))
        return prefect_way(parameters)

    flow.serialize_parameters = serialize
    flow._opsbook_plain = True
    return flow


def run_runbook(name: str, system: str, params: dict[str, Any], approval: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Run a runbook as a Prefect flow in this process; returns (report, meta).

    ``approval``: how the shell approves a mutating run ("prompt" or "yes"; None: the pause with a form in the UI)."""
    from opsbook import registry
    from opsbook.mutation.core import shell_approval
    from opsbook.report import result_of

    flow = plain_parameters(registry.get(name).load())
    t0 = time.monotonic()
    with shell_approval(approval):
        state = flow(system=system, **params, return_state=True)
    wall = time.monotonic() - t0
    result = result_of(state)
    return result, {"state": state.type.value, "state_message": state.message, "wall_s": round(wall, 2)}
