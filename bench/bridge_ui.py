"""Benchmark: does the Prefect UI's API still answer while the alarm bridge writes?

  cd /work/main && .venv/bin/python -m bench.bridge_ui [--seconds 90] [--interval 0] [--flaps 2] [--postgres]

Set up (all on 127.0.0.1, everything stopped in a finally block, and killed with this process):
- a local Prefect server started the way ``opsbook serve``/``opsbook run`` start it (opsbook/server.py: SQLite in a
  temporary OPSBOOK_HOME, every server service on), or on a throwaway PostgreSQL (``--postgres``, sandbox/postgres.py);
- a child process holding the sandbox (moto), seeded with every system in systems/, every routed alarm in ALARM,
  which runs the alarm bridge flow (every system, its deployment's parameters) again and again for ``--seconds``,
  ``--interval`` s apart (0: back to back, the worst case; served, it runs once a minute). Before each run it sets
  ``--flaps`` routed alarms OK then ALARM again, so each run has new transitions to send (an incident night);
- threads in this process calling what the UI's dashboard and runs pages call (flow runs, task runs, artifacts,
  logs, events, history, counts, health), ``--pollers`` at a time, first for ``--baseline`` s with the bridge idle,
  then while it runs.

Prints: the bridge's runs and their duration; the rows its runs wrote to the server's database per run (flow and task
runs and their states, logs, artifacts, events, variables); and per phase the UI calls, the 503s among them, other
errors, and latency p50/p95/max.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TABLES = ["flow_run", "flow_run_state", "task_run", "task_run_state", "log", "artifact", "artifact_collection", "events",
          "event_resources", "variable"]


def log(msg: str) -> None:
    print(f"[bridge-ui] {msg}", file=sys.stderr, flush=True)


# --- the child: sandbox + the bridge in a loop ---------------------------------------------------------------


def bridge_loop(seconds: float, interval: float, flaps: int, deployments: bool, bridges: int) -> int:
    """Seed, print READY, wait for a line on stdin, run the bridge for ``seconds``, print a JSON summary."""
    from sandbox.seed import sample_alarm_names, seed_system
    from sandbox.server import Sandbox, sandbox_client

    sb = Sandbox().start()
    try:
        os.environ.update(sb.env())
        from flows.alarm_bridge.flow import alarm_bridge
        from flows.alarm_bridge.judge import routed_runbook
        from opsbook import aws
        from opsbook.inventory import known_systems, load_system

        aws.require_loopback_endpoint()
        aws.reset_clients()
        routed: list[tuple[Any, str]] = []
        for name in known_systems():
            system = load_system(name)
            seed_system(sb, system, None)
            routed += [(system, a) for a in sample_alarm_names(system) if routed_runbook(system, a)]
        for system, alarm in routed:
            sandbox_client(sb, "cloudwatch", system.region).set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="bench")
        if deployments:  # what `opsbook serve` registers: each routed runbook's trigger, the automation watching the bridge
            from deployments.schedules import build, watch_the_bridge

            for d in build():
                dep_id = d.apply()
                if d.name == "alarm-bridge-all":
                    watch_the_bridge(dep_id)
        alarm_bridge(return_state=True)  # the first poll: remembers every alarm (and warms the process up)
        print(json.dumps({"ready": True, "routed_alarms": len(routed)}), flush=True)
        sys.stdin.readline()
        durations: list[float] = []
        sent = 0
        states: Counter[str] = Counter()
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            for k in range(flaps):
                system, alarm = routed[(i * flaps + k) % len(routed)]
                cw = sandbox_client(sb, "cloudwatch", system.region)
                cw.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="bench flap")
                time.sleep(0.002)  # a new state time (moto's has microseconds)
                cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="bench flap")
            i += 1
            t0 = time.monotonic()
            with ThreadPoolExecutor(bridges) as pool:  # more than one: a stress multiplier (served, one runs at a time)
                for st in pool.map(lambda _: alarm_bridge(return_state=True), range(bridges)):
                    states[st.type.value] += 1
                    rep = st.result(raise_on_failure=False)
                    sent += sum(1 for f in getattr(rep, "findings", []) if f.check == "alarm-transition" and f.value == 1)
            durations.append(time.monotonic() - t0)
            if interval:
                time.sleep(max(0.0, interval - (time.monotonic() - t0)))
        print(json.dumps({"runs": len(durations), "durations": durations, "events_sent": sent, "states": dict(states)}), flush=True)
        return 0
    finally:
        sb.stop()


# --- the UI's calls ------------------------------------------------------------------------------------


def ui_calls() -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, body) of what the UI's dashboard and runs pages ask (Prefect 3's UI, as seen in its network tab)."""
    since = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
    until = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    return [
        ("POST", "/flow_runs/filter", {"limit": 50, "sort": "START_TIME_DESC"}),
        ("POST", "/task_runs/filter", {"limit": 50, "sort": "EXPECTED_START_TIME_DESC"}),
        ("POST", "/artifacts/filter", {"limit": 50}),
        ("POST", "/artifacts/latest/filter", {"limit": 50}),
        ("POST", "/logs/filter", {"limit": 100, "sort": "TIMESTAMP_DESC"}),
        ("POST", "/ui/flow_runs/history", {"limit": 500, "sort": "EXPECTED_START_TIME_DESC"}),
        ("POST", "/ui/task_runs/dashboard/counts", {"task_runs": {"start_time": {"after_": since}}}),
        ("POST", "/flow_runs/count", {}),
        ("POST", "/events/filter", {"filter": {"occurred": {"since": since, "until": until}}, "limit": 50}),
        ("POST", "/variables/filter", {"limit": 50}),
        ("GET", "/health", None),
    ]


class Poller:
    def __init__(self, api_url: str, threads: int) -> None:
        self.api_url, self.threads = api_url, threads
        self.phase = "baseline"
        self.results: list[tuple[str, str, int, float]] = []  # (phase, path, status or 0 for a transport error, seconds)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def _run(self, n: int) -> None:
        import httpx

        calls = ui_calls()
        with httpx.Client(base_url=self.api_url, timeout=120) as c:
            i = n * 3
            while not self.stop.is_set():
                method, path, body = calls[i % len(calls)]
                i += 1
                phase, t0 = self.phase, time.monotonic()
                try:
                    status = c.request(method, path, json=body).status_code
                except httpx.HTTPError:
                    status = 0
                with self._lock:
                    self.results.append((phase, path, status, time.monotonic() - t0))
                self.stop.wait(0.1)  # a browser tab's polling, several tabs at once

    def start(self) -> Poller:
        for w in self._workers:
            w.start()
        return self

    def join(self) -> None:
        self.stop.set()
        for w in self._workers:
            w.join(timeout=150)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def summarize(results: list[tuple[str, str, int, float]], phase: str) -> dict[str, Any]:
    mine = [r for r in results if r[0] == phase]
    lat = [r[3] for r in mine]
    by_503 = Counter(r[1] for r in mine if r[2] == 503)
    return {"calls": len(mine), "503": sum(by_503.values()), "other_errors": sum(1 for r in mine if r[2] not in (200, 201, 503)),
            "slower_than_5s": sum(1 for r in mine if r[3] > 5),
            "p50_ms": round(pct(lat, 0.5) * 1000), "p95_ms": round(pct(lat, 0.95) * 1000), "max_ms": round(max(lat, default=0) * 1000),
            "503_by_path": dict(by_503)}


# --- the database's rows ---------------------------------------------------------------------------------


def count_rows(sqlite_path: Path | None, pg: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    if pg is not None:
        with pg.connect() as con:
            for t in TABLES:
                try:
                    out[t] = con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                except Exception:  # noqa: BLE001 - a table this Prefect version does not have
                    out[t] = -1
        return out
    import sqlite3

    assert sqlite_path is not None
    con = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True, timeout=60)
    try:
        for t in TABLES:
            try:
                out[t] = con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            except sqlite3.OperationalError:
                out[t] = -1
    finally:
        con.close()
    return out


def server_log(path: Path) -> dict[str, int]:
    """What the server's log says about the whole run: 503s answered to anyone (the bridge's own client retries them)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    return {"retryable_errors_answered_503": text.count("Encountered retryable exception"),
            "database_is_locked": text.count("database is locked")}


# --- the parent -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=90.0, help="how long the bridge runs (s)")
    ap.add_argument("--interval", type=float, default=0.0, help="seconds from one bridge run's start to the next (0: back to back)")
    ap.add_argument("--flaps", type=int, default=2, help="alarms set OK then ALARM before each run (new transitions to send)")
    ap.add_argument("--pollers", type=int, default=3, help="UI calls in flight at once")
    ap.add_argument("--baseline", type=float, default=10.0, help="seconds of UI calls before the bridge starts")
    ap.add_argument("--postgres", action="store_true", help="the Prefect server on a throwaway PostgreSQL instead of SQLite")
    ap.add_argument("--bridges", type=int, default=1, help="bridge runs at once (a stress multiplier; served, one at a time)")
    ap.add_argument("--no-deployments", action="store_true", help="do not register the deployments and their triggers first")
    ap.add_argument("--server-log", help="keep a copy of the Prefect server's log here (it logs each 503 with its cause)")
    ap.add_argument("--bridge-loop", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.bridge_loop:
        return bridge_loop(args.seconds, args.interval, args.flaps, not args.no_deployments, args.bridges)

    # what this starts dies with it, even by SIGKILL: the bridge loop (a direct child), the server (detached), PostgreSQL
    from sandbox.procs import die_with_parent, guard, guard_env

    home = tempfile.mkdtemp(prefix="opsbook-bridge-ui-")
    guard_env("OPSBOOK_HOME", home)
    guard(remove=home)
    from sandbox.postgres import free_port

    port = free_port()
    os.environ.update({"OPSBOOK_HOME": home, "OPSBOOK_PREFECT_PORT": str(port), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "PREFECT_API_LOG_RETRYABLE_ERRORS": "true"})  # the server logs each 503 it answers (anyone's) with its cause
    os.environ.pop("PREFECT_API_URL", None)
    from opsbook import server

    pg = None
    child: subprocess.Popen[str] | None = None
    try:
        if args.postgres:
            from sandbox.postgres import Postgres

            pg = Postgres().start()
            os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = pg.url
        target = server.configure()
        _, took = server.ensure(target, quiet=True)
        log(f"Prefect server {target.api_url} ({'PostgreSQL' if pg else 'SQLite'}) healthy after {took:.1f} s")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": target.api_url}
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        child = subprocess.Popen([sys.executable, "-m", "bench.bridge_ui", "--bridge-loop", "--seconds", str(args.seconds),
                                  "--interval", str(args.interval), "--flaps", str(args.flaps), "--bridges", str(args.bridges)] + (["--no-deployments"] if args.no_deployments else []), cwd=ROOT, env=env, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=die_with_parent)
        ready = json.loads(child.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise RuntimeError(f"the bridge loop did not start (exit {child.poll()})")
        log(f"sandbox seeded, {ready['routed_alarms']} routed alarms in ALARM; {args.baseline:g} s of UI calls with the bridge idle")
        db = Path(server.database_dir(target)) / "prefect.db"
        poller = Poller(target.api_url, args.pollers).start()
        time.sleep(args.baseline)
        before = count_rows(None if pg else db, pg)
        poller.phase = "bridge"
        child.stdin.write("go\n")
        child.stdin.flush()
        log(f"the bridge runs for {args.seconds:g} s")
        done = json.loads(child.stdout.readline() or "{}")
        poller.join()
        after = count_rows(None if pg else db, pg)
        runs = max(1, sum(done.get("states", {}).values()))
        figures = {
            "database": "postgresql" if pg else "sqlite",
            "bridge": {"rounds": done.get("runs"), "at_once": args.bridges, "states": done.get("states"), "events_sent": done.get("events_sent"),
                       "run_s_p50": round(statistics.median(done["durations"]), 2) if done.get("durations") else None,
                       "run_s_max": round(max(done["durations"]), 2) if done.get("durations") else None},
            "rows_per_run": {t: round((after[t] - before[t]) / runs, 1) for t in TABLES if after[t] >= 0},
            "ui_idle": summarize(poller.results, "baseline"),
            "ui_under_bridge": summarize(poller.results, "bridge"),
            "server_log": server_log(Path(home) / "prefect-server.log"),
        }
        if args.server_log:
            import shutil

            shutil.copyfile(Path(home) / "prefect-server.log", args.server_log)
        print(json.dumps(figures, indent=2))
        return 0
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        server.stop(server.target())
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    sys.exit(main())
