"""Running when Prefect's server is what is down (issue 19): the real flow engine, a local journal instead of the API.

An incident tool is used when things are failing, and Prefect's server can be among them. When the configured
server does not answer within ``OPSBOOK_PREFECT_TIMEOUT`` seconds (default 3), ``opsbook run`` says so in one
line and runs the runbook *without orchestration*: the same flow, tasks, retries and states (Prefect's own
engine runs them), but the API the engine talks to is this module's journal, on 127.0.0.1 in this process:

- it answers the few calls a flow run makes (create the flow and the run, set states, read the run, name it,
  artifacts, logs) and nothing else (a call it does not serve answers 503 "not available offline": deployments,
  variables and pauses do not exist without the server; a runbook that needs them says what it could not do);
- it writes every one of those calls, and the run's task events, to a journal file (one JSON line each) in
  ``OPSBOOK_HOME/offline/``; ``opsbook replay`` sends them to the server once it answers, so the runs, their task
  runs, artifacts and logs appear in the UI as if they had been recorded live (ids are the server's; the journal
  is then moved to ``offline/replayed/``).

No ephemeral server is started (it costs 5-7 s of emergency-check's 10 s budget), nothing leaves the machine,
and what a mutating run did is recorded as always in the system's DynamoDB state table as well (leases hold: a
run the server has never heard of is never taken to be finished).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from typing import TYPE_CHECKING, Any

from opsbook import server

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TIMEOUT_ENV = "OPSBOOK_PREFECT_TIMEOUT"


def probe_timeout() -> float:
    """Seconds the configured Prefect server has to answer /health before a run goes ahead without it."""
    raw = os.environ.get(TIMEOUT_ENV, "3")
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds; set it like 3") from None
    if not 0 < value <= 60:
        raise RuntimeError(f"{TIMEOUT_ENV}={raw!r} must be more than 0 and at most 60 seconds")
    return value


def journal_dir() -> Path:
    """Where journals wait: readable by this user only (they hold what the Prefect server would: logs, artifacts)."""
    d = server.home() / "offline"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


def _without_userinfo(url: str | None) -> str | None:
    """A URL without the user:password a proxy address may carry."""
    if not url:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if "@" in parts.netloc else url


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Journal:
    """The calls an offline run made to its API, in order: one JSON object a line, flushed as written. The file stays
    open and locked (flock) for the life of the run: `opsbook replay` leaves a journal still being written alone."""

    path: Path
    reason: str
    _lock: threading.Lock = field(default_factory=threading.Lock)
    lines: int = 0
    _file: Any = None

    def write(self, kind: str, **data: Any) -> None:
        line = json.dumps({"kind": kind, "at": _now(), **data}, default=str)
        with self._lock:
            if self._file is None:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)  # released when the run ends, however it ends
                self._file = open(fd, "a", encoding="utf-8")
            self._file.write(line + "\n")
            self._file.flush()
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class _State:
    """What the journal API holds for this process: flows and runs by id (read back by the engine)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.flows: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()


def _flow_run(body: dict[str, Any], flows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from prefect.client.schemas.objects import FlowRun

    run_id = str(uuid.uuid4())
    state = body.get("state") or {"type": "PENDING", "name": "Pending"}
    state = {**state, "id": state.get("id") or str(uuid.uuid4()), "timestamp": state.get("timestamp") or _now(),
             "state_details": {**(state.get("state_details") or {}), "flow_run_id": run_id}}
    known = set(FlowRun.model_fields)
    run = {k: v for k, v in body.items() if k in known}
    run.update(id=run_id, name=body.get("name") or f"offline-{run_id[:8]}", created=_now(), updated=_now(), state=state,
               state_type=state["type"], state_name=state.get("name"))
    run.setdefault("tags", [])
    return FlowRun.model_validate(run).model_dump(mode="json")


def _set_state(run: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    state = dict(body.get("state") or {})
    state.update(id=state.get("id") or str(uuid.uuid4()), timestamp=state.get("timestamp") or _now(),
                 state_details={**(state.get("state_details") or {}), "flow_run_id": run["id"]})
    run.update(state=state, state_type=state.get("type"), state_name=state.get("name"), updated=_now())
    if state.get("type") == "RUNNING" and not run.get("start_time"):
        run["start_time"] = state["timestamp"]
    if state.get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
        run["end_time"] = state["timestamp"]
    return {"status": "ACCEPT", "state": state, "details": {"type": "accept_details"}}


def _answer(st: _State, method: str, path: str, body: Any) -> tuple[int, Any]:
    """(HTTP status, JSON) for one API call; records the writes."""
    parts = [p for p in path.split("?")[0].split("/") if p][1:]  # drop "api"
    j = st.journal
    with st.lock:
        if method == "GET" and parts == ["health"]:
            return 200, True
        if parts and parts[0] == "variables":  # not readable offline; a 404 would read as "not set" (the default)
            return 501, {"detail": f"Prefect variables are not available offline ({j.reason})"}
        if method == "GET" and parts == ["csrf-token"]:
            return 200, {"token": "offline", "client": "opsbook", "expiration": "2999-01-01T00:00:00+00:00"}
        if method == "GET" and parts == ["admin", "version"]:
            from prefect import __version__

            return 200, __version__
        if method == "POST" and parts == ["flows"]:
            flow = st.flows.setdefault(body["name"], {"id": str(uuid.uuid4()), "name": body["name"], "created": _now(),
                                                      "updated": _now(), "tags": []})
            j.write("flow", id=flow["id"], body=body)
            return 201, flow
        if method == "GET" and len(parts) == 2 and parts[0] == "flows":
            flow = next((f for f in st.flows.values() if f["id"] == parts[1]), None)
            if flow is not None:
                return 200, flow
        if method == "POST" and parts == ["flow_runs"]:
            run = _flow_run(body, st.flows)
            st.runs[run["id"]] = run
            j.write("flow_run", id=run["id"], body=body)
            return 201, run
        if len(parts) >= 2 and parts[0] == "flow_runs" and parts[1] in st.runs:
            run = st.runs[parts[1]]
            if method == "GET" and len(parts) == 2:
                return 200, run
            if method == "POST" and parts[2:] == ["set_state"]:
                j.write("set_state", flow_run_id=run["id"], body=body)
                return 201, _set_state(run, body)
            if method == "PATCH" and len(parts) == 2:
                run.update({k: v for k, v in body.items() if k in ("name", "tags", "labels")})
                j.write("update_flow_run", flow_run_id=run["id"], body=body)
                return 204, None
        if method == "POST" and parts == ["artifacts"]:
            art = {**body, "id": str(uuid.uuid4()), "created": _now(), "updated": _now()}
            j.write("artifact", id=art["id"], body=body)
            return 201, art
        if method == "PATCH" and len(parts) == 2 and parts[0] == "artifacts":
            j.write("update_artifact", artifact_id=parts[1], body=body)
            return 204, None
        if method == "POST" and parts == ["logs"]:
            j.write("logs", body=body)
            return 201, None
    # 404 (read_* says ObjectNotFound) or 501; never 503, which Prefect's client retries with back-off
    return (404 if method == "GET" else 501), {"detail": f"not available offline: {method} /{'/'.join(parts)} needs the Prefect server "
                           f"(this run goes on without orchestration: {j.reason})"}


def _handler(st: _State) -> type[BaseHTTPRequestHandler]:
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet: the journal is the record
            pass

        def _do(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            try:
                status, data = _answer(st, self.command, self.path, body)
            except Exception as exc:  # a request it cannot serve must never hang the engine
                status, data = 500, {"detail": f"opsbook offline journal: {type(exc).__name__}: {exc}"}
            out = b"" if data is None else json.dumps(data, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _do

    return Handler


@dataclass
class Offline:
    """An offline run's journal API: where Prefect is pointed, and the journal it writes."""

    reason: str
    journal: Journal
    httpd: ThreadingHTTPServer

    @property
    def api_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/api"

    def point(self, settings: Any) -> None:
        """Prefect's live settings (read once, when Prefect was first imported) to the journal API."""
        settings.api.url = self.api_url
        settings.api.key = None
        settings.ui_url = None
        settings.client.server_version_check_enabled = False
        settings.server.ephemeral.enabled = False

    def record_events(self) -> None:
        """After Prefect is imported: its events (task runs exist as events in Prefect 3) are kept in memory by
        Prefect's own in-memory events client (the only non-network client its emit_event accepts), and written to
        the journal by finish()."""
        from prefect.events.clients import AssertingEventsClient
        from prefect.events.worker import EventsWorker

        AssertingEventsClient.reset()
        EventsWorker.set_client_override(AssertingEventsClient)

    def finish(self) -> int:
        """Write the run's events to the journal and stop the journal API; returns the journal's line count."""
        from prefect.events.clients import AssertingEventsClient
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10)
        for client in AssertingEventsClient.all:
            for event in getattr(client, "events", []):
                self.journal.write("event", body=event.model_dump(mode="json"))
        AssertingEventsClient.reset()
        self.stop()
        self.journal.close()
        return self.journal.lines

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_active: Offline | None = None


def active() -> Offline | None:
    return _active


def start(reason: str, runbook: str, system: str) -> Offline:
    """Point this process's Prefect at a journal API (call before Prefect is imported). Returns what to report."""
    global _active
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = journal_dir() / f"{stamp}-{runbook}-{os.path.basename(system).removesuffix('.yaml')}-{os.getpid()}.jsonl"
    journal = Journal(path, reason)
    journal.write("offline", reason=reason, runbook=runbook, system=system, configured=_without_userinfo(os.environ.get("PREFECT_API_URL")))
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(_State(journal)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="opsbook-offline-api", daemon=True).start()
    _active = Offline(reason, journal, httpd)
    os.environ["PREFECT_API_URL"] = _active.api_url
    os.environ.pop("PREFECT_API_KEY", None)  # never sent to the journal
    os.environ["PREFECT_UI_URL"] = ""  # no UI shows this run until it is replayed: no link to one
    os.environ["PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED"] = "false"
    os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
    server.configure()
    return _active



# --- replay ----------------------------------------------------------------------------------------------------

_SENDS = {  # journal kind -> (method, path template); {id} is the (mapped) object the line is about
    "flow": ("POST", "/flows/"),
    "flow_run": ("POST", "/flow_runs/"),
    "set_state": ("POST", "/flow_runs/{flow_run_id}/set_state"),
    "update_flow_run": ("PATCH", "/flow_runs/{flow_run_id}"),
    "artifact": ("POST", "/artifacts/"),
    "update_artifact": ("PATCH", "/artifacts/{artifact_id}"),
    "logs": ("POST", "/logs/"),
}


def _mapped(text: str, ids: dict[str, str]) -> str:
    for old, new in ids.items():
        text = text.replace(old, new)
    return text


_BUSY = {429, 503}  # the server did not take it (under load: "database is locked"): tried again, as Prefect's client does


def _request(client: Any, method: str, path: str, body: Any, tries: int = 6) -> Any:
    delay = 0.5
    for attempt in range(tries):
        r = client.request(method, path, json=body)
        if r.status_code not in _BUSY or attempt == tries - 1:
            return r
        time.sleep(float(r.headers.get("Retry-After") or delay))
        delay = min(delay * 2, 8)
    return r


def _send(client: Any, path: Path, n: int, item: dict[str, Any], ids: dict[str, str]) -> None:
    method, template = _SENDS[item["kind"]]
    body = item["body"]
    if item["kind"] == "set_state":
        body = {**body, "force": True}  # the states happened; the server records them as they were
    if item["kind"] == "flow_run":  # the UI shows which runs ran without it
        body = {**body, "tags": sorted({*(body.get("tags") or []), "opsbook:offline"})}
    r = _request(client, method, template.format(**item), body)
    if r.status_code >= 400:
        raise RuntimeError(f"{path.name} line {n + 1} ({item['kind']}): the server answered HTTP {r.status_code}: "
                           f"{r.text[:200]}; fix that and run `opsbook replay` again (it resumes at this line)")
    if item["kind"] in ("flow", "flow_run", "artifact") and r.content:
        ids[item["id"]] = r.json()["id"]


class StillWriting(RuntimeError):
    """The journal's run is still going (it holds the journal's lock): replayed once it has ended."""


_FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def replay_file(path: Path, client: Any) -> int:
    """Send one journal's calls to the server in order, the offline ids replaced by the server's; returns lines sent.

    Progress is kept next to the journal (``.progress.json``: lines done and the id map), so a replay that stops
    part-way resumes where it stopped and sends nothing twice; a finished journal moves to ``replayed/``. A journal
    whose run is still going is left alone (``StillWriting``); a run that stopped before its last state (killed)
    is recorded Crashed, saying so."""
    with open(path, encoding="utf-8") as held:
        try:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # also keeps a second replay off this journal
        except BlockingIOError:
            raise StillWriting(f"{path.name}: its run is still going; replayed once it has ended") from None
        sent = _replay_locked(path, held.read().splitlines(), client)
        done = journal_dir() / "replayed"
        done.mkdir(exist_ok=True)
        path.rename(done / path.name)
        path.with_suffix(".progress.json").unlink(missing_ok=True)
    return sent


def _replay_locked(path: Path, lines: list[str], client: Any) -> int:
    progress = path.with_suffix(".progress.json")
    state = json.loads(progress.read_text()) if progress.exists() else {"done": 0, "ids": {}, "events_sent": 0}
    ids: dict[str, str] = state["ids"]
    events: list[dict[str, Any]] = []
    last: dict[str, str] = {}  # server flow run id -> the last state type the journal has for it

    def save(**change: Any) -> None:
        state.update(change)
        progress.write_text(json.dumps(state))

    for n, raw in enumerate(lines):
        if not raw.strip():
            continue
        item = json.loads(_mapped(raw, ids))
        if item["kind"] == "event":
            events.append(item["body"])  # task runs: sent last, once their flow run exists
            continue
        if item["kind"] in _SENDS and n >= state["done"]:
            _send(client, path, n, item, ids)
            save(done=n + 1, ids=ids)
        if item["kind"] == "flow_run":
            last[ids.get(item["id"], item["id"])] = (item["body"].get("state") or {}).get("type", "PENDING")
        elif item["kind"] == "set_state":
            last[item["flow_run_id"]] = (item["body"].get("state") or {}).get("type", "")
    for run_id, kind in last.items():
        if kind not in _FINAL and run_id not in state.get("crashed", []):
            body = {"state": {"type": "CRASHED", "name": "Crashed", "message": f"the offline run stopped before it finished "
                              f"(killed, or its machine went down): its journal {path.name} ends in {kind}"}, "force": True}
            _send(client, path, len(lines), {"kind": "set_state", "flow_run_id": run_id, "body": body}, ids)
            save(crashed=[*state.get("crashed", []), run_id])
    for i in range(state["events_sent"], len(events), 200):  # POST /events records a batch
        r = _request(client, "POST", "/events", events[i:i + 200])
        if r.status_code >= 400:
            raise RuntimeError(f"{path.name}: the server refused its events: HTTP {r.status_code}: {r.text[:200]}")
        save(events_sent=min(i + 200, len(events)))
    return len(lines)


def pending() -> list[Path]:
    return sorted(journal_dir().glob("*.jsonl"))
