"""Benchmark: how long a CloudWatch alarm takes to start its runbook through the alarm bridge.

  cd /work/main && .venv/bin/python -m bench.alarm_latency --interval 5 --trials 5 [--runner-poll 10]

Set up (all on 127.0.0.1, all stopped in a finally block):
- a real local Prefect server (opsbook/server.py) with a temporary OPSBOOK_HOME on a free port;
- the sandbox (moto in this process), seeded with the system (default hr-resource-optimization);
- a subprocess serving the runbook's deployment (``flow.to_deployment(triggers=triggers_for(system, runbook))``
  + ``prefect.serve``), like ``opsbook serve`` does; its runner polls for runs every ``--runner-poll`` s
  (PREFECT_RUNNER_POLL_FREQUENCY, Prefect's default 10);
- the bridge flow run in this process every ``--interval`` s (the deployment's cron is every minute:
  the smallest a cron can do).

Each trial sets the alarm to ALARM at a random moment of the bridge's cycle (``set_alarm_state``, t0) and
measures from t0: the Prefect API accepting the bridge's event (sent), the runbook's flow run being created
by the trigger (created, the server's timestamp), and it entering Running (started); it then waits for the
run to finish and sets the alarm back to OK. Writes bench/results/alarm_latency.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

SERVE = """
import sys
from prefect import serve
from opsbook import registry
from flows.alarm_bridge.triggers import triggers_for
system, runbook, name = sys.argv[1:4]
flow = registry.get(runbook).load()
triggers = triggers_for(system, runbook)
assert triggers, f"{system} routes no alarm to {runbook}"
serve(flow.to_deployment(name=name, parameters={"system": system}, triggers=triggers), pause_on_shutdown=False, print_starting_message=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[alarm-latency] {msg}", file=sys.stderr, flush=True)


def pick_alarm(system: Any, runbook: str) -> str:
    from flows.alarm_bridge.judge import routed_runbook
    from sandbox.seed import sample_alarm_names

    for name in sample_alarm_names(system):
        if routed_runbook(system, name) == runbook:
            return name
    raise SystemExit(f"no seeded alarm of {system.name} routes to {runbook}")


def stats(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", default="hr-resource-optimization")
    ap.add_argument("--runbook", default="emergency-check")
    ap.add_argument("--interval", type=float, default=5.0, help="bridge poll interval, seconds")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--runner-poll", type=float, default=10.0, help="PREFECT_RUNNER_POLL_FREQUENCY of the serving process")
    ap.add_argument("--timeout", type=float, default=120.0, help="per trial")
    ap.add_argument("--out", default=str(RESULTS / "alarm_latency.md"))
    args = ap.parse_args(argv)

    home = tempfile.mkdtemp(prefix="opsbook-alarm-latency-")
    port = free_port()
    os.environ.update({"OPSBOOK_HOME": home, "OPSBOOK_PREFECT_PORT": str(port), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    os.environ.pop("PREFECT_API_URL", None)
    sys.path.insert(0, str(ROOT))
    from opsbook import server

    serve_proc: subprocess.Popen[bytes] | None = None
    sb = None
    rows: list[dict[str, Any]] = []
    try:
        target = server.configure()
        url = target.api_url
        _, took = server.ensure(target, quiet=True)
        log(f"Prefect server {url} healthy after {took:.1f} s")
        os.environ["PREFECT_API_URL"] = url
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        from sandbox.seed import seed_system
        from sandbox.server import Sandbox

        sb = Sandbox().start()
        for k, v in sb.env().items():
            os.environ[k] = v
        from opsbook import aws

        aws.require_loopback_endpoint()
        aws.reset_clients()
        from opsbook.inventory import load_system

        system = load_system(args.system)
        seed_system(sb, system, None)
        alarm = pick_alarm(system, args.runbook)
        cw = aws.client("cloudwatch", system.region)

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterExpectedStartTime

        from flows.alarm_bridge.flow import alarm_bridge

        dep_name = f"alarm-latency-{system.name}"
        env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": str(args.runner_poll), "PYTHONPATH": str(ROOT)}
        serve_log = open(Path(home) / "serve.log", "wb")
        serve_proc = subprocess.Popen([sys.executable, "-c", SERVE, system.name, args.runbook, dep_name], cwd=ROOT, env=env,
                                      stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True)
        from opsbook import registry

        flow_name = registry.get(args.runbook).load().name
        dep_id = None
        deadline = time.monotonic() + 90
        with get_client(sync_client=True) as c:
            while dep_id is None:
                try:
                    dep_id = c.read_deployment_by_name(f"{flow_name}/{dep_name}").id
                except Exception:
                    if serve_proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the serving process did not register {dep_name}; see {home}/serve.log") from None
                    time.sleep(0.5)
        log(f"deployment {flow_name}/{dep_name} served (runner poll {args.runner_poll:g} s); alarm {alarm} -> {args.runbook}")
        time.sleep(2.0)  # the trigger service loads new automations about every second

        def bridge() -> list[dict[str, Any]]:
            st = alarm_bridge(systems=[system.name], check_schedules=False, return_state=True)
            rep = st.result(raise_on_failure=False)
            return [f.model_dump() for f in rep.findings if f.check == "alarm-transition" and f.value == 1]

        bridge()  # warm: the first flow run of a process costs imports and connections
        for i in range(args.trials):
            cw.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="bench: reset")
            bridge()  # the bridge forgets the alarm once it is no longer in ALARM
            next_tick = time.monotonic() + args.interval
            alarm_at = time.monotonic() + random.uniform(0.05, 0.95) * args.interval
            t0_wall = None
            row: dict[str, Any] = {"trial": i + 1}
            polls = 0
            end = time.monotonic() + args.timeout
            while time.monotonic() < end:
                now = time.monotonic()
                if t0_wall is None and now >= alarm_at:
                    t0_wall = datetime.now(timezone.utc)
                    cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason=f"bench trial {i + 1}")
                if now >= next_tick:
                    next_tick += args.interval
                    sent = bridge()
                    polls += 1
                    if sent and t0_wall is not None and "sent_s" not in row:
                        row["sent_s"] = (datetime.fromisoformat(sent[0]["details"]["sent_at"]) - t0_wall).total_seconds()
                        row["bridge_polls"] = polls
                if t0_wall is not None:
                    with get_client(sync_client=True) as c:
                        runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep_id])),
                                                flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=t0_wall)))
                    if len(runs) > 1:
                        row["duplicates"] = len(runs) - 1
                    if runs:
                        r = runs[0]
                        row["created_s"] = (r.created - t0_wall).total_seconds()
                        if r.start_time:
                            row["started_s"] = (r.start_time - t0_wall).total_seconds()
                        if r.state and r.state.is_final():
                            row["state"] = r.state.name
                            row["finished_s"] = (r.end_time - t0_wall).total_seconds() if r.end_time else None
                            row["parameters"] = r.parameters
                            break
                time.sleep(0.2)
            else:
                row["state"] = "TIMEOUT"
            rows.append(row)
            log(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items() if k != "parameters"}))
        md = report(rows, args, alarm)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md, encoding="utf-8")
        print(md)
        return 0 if all(r.get("state") == "Completed" for r in rows) else 1
    finally:
        if serve_proc is not None and serve_proc.poll() is None:
            os.killpg(serve_proc.pid, 2)
            try:
                serve_proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(serve_proc.pid, 9)
        if sb is not None:
            sb.stop()
        server.stop(server.target())


def report(rows: list[dict[str, Any]], args: argparse.Namespace, alarm: str) -> str:
    import platform
    from importlib.metadata import version

    def col(key: str) -> list[float]:
        return [r[key] for r in rows if isinstance(r.get(key), (int, float))]

    lines = [
        "# Alarm -> runbook latency through the alarm bridge", "",
        f"{datetime.now(timezone.utc).isoformat(timespec='minutes')}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"prefect {version('prefect')}, moto {version('moto')}; local Prefect server (SQLite) on 127.0.0.1, sandbox in-process; "
        f"load average {os.getloadavg()[0]:.1f} at the end (other work shared the machine).", "",
        f"Command: `.venv/bin/python -m bench.alarm_latency --system {args.system} --runbook {args.runbook} --interval {args.interval:g} "
        f"--trials {args.trials} --runner-poll {args.runner_poll:g}`", "",
        f"Alarm `{alarm}` -> `{args.runbook}`; the bridge polls every {args.interval:g} s; the serving process "
        f"(`prefect.serve`) polls for runs every {args.runner_poll:g} s. Seconds from `set_alarm_state(ALARM)` (t0), "
        "set at a random moment of the bridge's cycle:", "",
        "| trial | bridge sent the event | flow run created (trigger) | flow run Running | finished | final state | duplicates |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = lambda k: f"{r[k]:.1f}" if isinstance(r.get(k), (int, float)) else "-"  # noqa: E731
        lines.append(f"| {r['trial']} | {f('sent_s')} | {f('created_s')} | {f('started_s')} | {f('finished_s')} | {r.get('state', '-')} | {r.get('duplicates', 0)} |")
    created_after_sent = [r["created_s"] - r["sent_s"] for r in rows if "created_s" in r and "sent_s" in r]
    running_after_created = [r["started_s"] - r["created_s"] for r in rows if "started_s" in r and "created_s" in r]
    lines += [
        "", "Median (min, max), seconds:", "",
        f"- alarm -> event sent: {stats(col('sent_s'))} (waiting for the next poll: uniform in 0..{args.interval:g} s, plus one bridge run)",
        f"- event sent -> flow run created by the trigger: {stats(created_after_sent)}",
        f"- flow run created -> Running: {stats(running_after_created)} (the runner's poll, up to {args.runner_poll:g} s, plus starting "
        "the run's process)",
        f"- **alarm -> runbook created: {stats(col('created_s'))}; alarm -> runbook Running: {stats(col('started_s'))}**", "",
        "With the bridge's deployment as shipped (cron every minute: `tasks.alarm_bridge.bridge_deployment()`), add the wait for "
        "the next minute instead of the poll interval above: 30 s on average, 60 s at worst. The runner's poll is the other large "
        "term: PREFECT_RUNNER_POLL_FREQUENCY (default 10 s) on the serving process or worker shortens it.",
    ]
    if rows and "parameters" in rows[0]:
        lines += ["", f"Parameters the triggered run received: `{json.dumps(rows[0]['parameters'])}`"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
