"""`opsbook sandbox` (serve the embedded AWS in the foreground) and `opsbook demo`."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from opsbook.inventory import System, known_systems, load_system
from sandbox.faults import DEMO_FAULTS, apply_fault
from sandbox.seed import seed_system
from sandbox.server import Sandbox


def extra_for(system: System, scale: int) -> dict[str, int]:
    """Tag-only resources that bring a system to ``scale`` times its seed size
    (HR at 10x: 80 functions, 60 tables, 30 alarms, 80 log groups)."""
    if scale <= 1:
        return {}
    from sandbox.seed import sample_alarm_names

    return {
        "functions": len(system.lambda_functions) * (scale - 1),
        "tables": len(system.dynamodb_tables) * (scale - 1),
        "alarms": max(0, 3 * scale - len(sample_alarm_names(system))),
    }


def start_seeded(systems: list[str], faults: list[str], latency_ms: float = 0.0, scale: int = 1,
                 throttle: tuple[float, int] = (0.0, 0)) -> tuple[Sandbox, list[dict[str, Any]]]:
    sb = Sandbox(latency_ms=0.0).start()
    sb.apply_env()
    applied = []
    for name in systems:
        s = load_system(name)
        seed_system(sb, s, extra_for(s, scale))
    for spec in faults:
        sys_name, _, fault = spec.partition(":")
        applied.append({"system": sys_name, **apply_fault(sb, load_system(sys_name), fault)})
    # latency and throttling (percent, seed) apply to the runs, not to seeding
    sb.set_latency_ms(latency_ms)
    sb.set_throttle_pct(*throttle)
    return sb, applied


def serve(systems: list[str] | None, faults: list[str], latency_ms: float, scale: int, throttle: tuple[float, int] = (0.0, 0)) -> int:
    names = systems or known_systems()
    sb, applied = start_seeded(names, faults, latency_ms, scale, throttle)
    env_file = os.path.join(os.environ.get("OPSBOOK_HOME", os.path.expanduser("~/.opsbook")), "sandbox.env")
    os.makedirs(os.path.dirname(env_file), exist_ok=True)
    with open(env_file, "w") as f:
        f.writelines(f"export {k}={v}\n" for k, v in sb.env().items())
    for a in applied:
        print(f"fault applied: {a}", file=sys.stderr)
    print(f"sandbox: moto on {sb.endpoint}, OpenSearch test double on 127.0.0.1:{sb.opensearch.port}; seeded {', '.join(names)}"
          + (f"; {throttle[0]:g} % of AWS calls throttled (seed {throttle[1]})" if throttle[0] else ""), file=sys.stderr)
    print(f"# use it from another shell:  source {env_file}", file=sys.stderr)
    for k, v in sb.env().items():
        print(f"export {k}={v}")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sb.stop()
    return 0


CASE_FAULT = "leh-case-deleted"


def _demo_case(applied: list[dict[str, Any]], no_postgres: str | None) -> int:
    """reindex-case's plan (a dry run) for the LEH case the demo closed: the case's row read from PostgreSQL."""
    from opsbook import runner
    from opsbook.report import RunReport

    case = next((a for a in applied if a["fault"] == CASE_FAULT), None)
    if case is None:
        print(f"reindex-case leh: not shown: the sandbox's case store needs a local PostgreSQL: {no_postgres}")
        return 0
    report, _ = runner.run_runbook("reindex-case", "leh", {"case_id": case["case_id"]})
    if not isinstance(report, RunReport):
        print(f"reindex-case leh: could not finish: {report}")
        return 3
    print(report.headline())
    for a in (report.plan or {}).get("actions", []):
        print(f"    PLAN    {a['kind']:20} {a['resource']:36} {a['current']} -> {a['target']}")
    return 0


def demo(keep_server: bool = False, verbose: bool = False) -> int:
    from opsbook import aws, runner, server
    from opsbook.report import RunReport
    from sandbox.postgres import missing_postgres

    t0 = time.monotonic()
    names = known_systems()
    faults = [f"{n}:{f}" for n in names for f in DEMO_FAULTS.get(n, [])]
    no_postgres = missing_postgres() if "leh" in names else "no leh inventory"
    if not no_postgres:  # 003 시나리오 B: a case closed by mistake, in the sandbox's local PostgreSQL (started for it)
        faults.append(f"leh:{CASE_FAULT}")
    print(f"opsbook demo: starting the embedded AWS sandbox (moto on 127.0.0.1) and seeding {len(names)} systems...", file=sys.stderr)
    sb, applied = start_seeded(names, faults)
    aws.require_loopback_endpoint()
    worst = 0
    started_server = False
    try:
        for a in applied:
            print(f"  fault injected into {a['system']}: {a['fault']} ({a['resource']})", file=sys.stderr)
        meta = runner.prepare_prefect(verbose)
        started_server = meta["server_started"]
        print(f"opsbook demo: Prefect API {meta['api_url']}" + (f" (started in {meta['server_start_s']} s)" if meta["server_started"] else ""), file=sys.stderr)
        print()
        for name in names:
            report, m = runner.run_runbook("daily-health", name, {})
            if not isinstance(report, RunReport):
                print(f"{name}: could not finish: {report}")
                worst = 3
                continue
            print(report.headline())
            for f in report.findings:
                if f.status.value != "OK":
                    print(f"    {f.status.value:7} {f.check:20} {f.resource:36} {f.summary[:110]}")
        worst = max(worst, _demo_case(applied, no_postgres))
        print()
        print(f"Demo done in {time.monotonic() - t0:.0f} s. The runs are kept by the Prefect server at {meta['ui_url']}.")
        if keep_server:
            print(f"Look at them now: {meta['ui_url']}/runs  (stop the server with `.venv/bin/opsbook server stop`)")
        else:
            print(f"Look at them: `.venv/bin/opsbook server start`, then open {meta['ui_url']}/runs (flow daily-health, artifacts tab).")
    finally:
        sb.stop()
        if started_server:
            runner.flush_prefect()
        if started_server and not keep_server:
            server.stop(server.configure())
    return worst
