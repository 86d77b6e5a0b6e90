"""Benchmark: emergency-check on each seed system at 1x and 10x, 30 ms per AWS call.

  cd /work/main && .venv/bin/python -m bench.emergency --scales 1 10 --latency-ms 30 --repeat 3

For each scale: start `opsbook sandbox` with all four seed systems (10x adds
tag-only functions, tables and alarms, see sandbox/cli.py extra_for) and the
demo faults (so the check has something to find), then run
`opsbook run emergency-check --system S --json` once untimed (the first run
may start the local Prefect server) and ``--repeat`` times timed. Reports the
median wall clock of the whole process, the time inside the flow, the API
calls, and the verdict (priority). The issue's target: under 10 s per system.
Writes bench/results/emergency.md (raw numbers in emergency.json). Everything
started here is stopped in a finally block.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from typing import Any

from bench.harness import OPSBOOK, RESULTS, ROOT, T_OPSBOOK, T_SERVER_STOP, SandboxProc, free_port, last_json, log, machine, timed

SYSTEMS = ["hr-resource-optimization", "t-developer", "todo-app", "leh"]
TARGET_S = 10.0


def run_check(system: str, env: dict[str, str]) -> dict[str, Any]:
    wall, cp = timed([OPSBOOK, "run", "emergency-check", "--system", system, "--json"], env, T_OPSBOOK)
    try:
        d = last_json(cp.stdout)
    except ValueError as exc:
        raise RuntimeError(f"opsbook run exited {cp.returncode}: {exc}; stderr: {cp.stderr[-1500:]}") from None
    if "error" in d:
        raise RuntimeError(f"opsbook run could not finish: {d['error']}; stderr: {cp.stderr[-1500:]}")
    verdict = next((f for f in d.get("findings", []) if f["check"] == "incident-priority"), {})
    t = d.get("timing", {})
    return {"wall_s": wall, "in_run_s": d.get("duration_s"), "api_calls": d["api_calls"], "status": d["status"],
            "priority": (verdict.get("details") or {}).get("priority") or verdict.get("summary", "?")[:40],
            "findings": len(d.get("findings", [])), "server_started": t.get("server_started"), "server_start_s": t.get("server_start_s")}


def write_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# emergency-check benchmark", "",
        f"{meta['date']}, {meta['machine']['nproc']} cores, Python {meta['machine']['python']}, {meta['machine']['versions']}; "
        f"sandbox latency {meta['latency_ms']:g} ms per AWS call; median of {meta['repeat']} warm runs.", "",
        f"Command: `{meta['command']}`", "",
        "| scale | system | wall (whole process) | inside the flow | API calls | verdict | status | under 10 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['scale']}x | {r['system']} | {r['wall_s']:.2f} s | {r['in_run_s']} s | {r['api_calls']:g} | {r['priority']} | "
                     f"{r['status']} | {'yes' if r['wall_s'] < TARGET_S else '**no**'} |")
    lines += ["", "10x adds tag-only resources; only systems whose inventory discovers by tag (HR: `Team=Team2`) see them, so the "
              "other systems' 10x rows measure the same resources as 1x.",
              "", "Wall includes the interpreter, `import prefect` and talking to the local Prefect server (about 2 s, see "
              "bench/results/latest.md); the flow's own time is the column after it."]
    for n in meta.get("notes", []):
        lines.append(f"- {n}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.emergency", description="benchmark emergency-check on every seed system")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--latency-ms", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    from opsbook.inventory import load_system
    from sandbox.faults import DEMO_FAULTS

    command = "cd /work/main && .venv/bin/python -m bench.emergency " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    home = tempfile.mkdtemp(prefix="opsbook-bench-emergency-")
    base_env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "PREFECT_API_URL", "AWS_DEFAULT_PROFILE")}
    base_env.update({"OPSBOOK_HOME": home, "OPSBOOK_PREFECT_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"})
    regions = {s: load_system(s).region for s in SYSTEMS}
    faults = [f"{s}:{f}" for s in SYSTEMS for f in DEMO_FAULTS.get(s, [])]
    meta: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "command": command,
                            "latency_ms": args.latency_ms, "repeat": args.repeat, "faults": faults, "notes": []}
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    server_used = False
    try:
        for scale in args.scales:
            sandbox = SandboxProc(SYSTEMS[0], scale, args.latency_ms, home, faults)
            sandbox.cmd = [OPSBOOK, "sandbox", "--systems", *SYSTEMS, "--scale", str(scale), "--latency-ms", str(args.latency_ms)] + \
                [a for f in faults for a in ("--fault", f)]
            try:
                log(f"{scale}x: starting the sandbox (4 systems, faults {faults})")
                exports = sandbox.start()
                log(f"{scale}x: sandbox at {exports['AWS_ENDPOINT_URL']} after {sandbox.seed_s:.1f} s")
                for s in SYSTEMS:
                    env = {**base_env, **exports, "AWS_REGION": regions[s], "AWS_DEFAULT_REGION": regions[s]}
                    server_used = True
                    w = run_check(s, env)  # untimed warm-up
                    if w.get("server_started"):
                        meta["notes"].append(f"cold start (first run, starts the Prefect server): {w['wall_s']:.1f} s, "
                                             f"of which server start {w['server_start_s']} s")
                    runs = [run_check(s, env) for _ in range(args.repeat)]
                    for i, r in enumerate(runs):
                        log(f"{scale}x {s} {i + 1}/{args.repeat}: {r['wall_s']:.2f} s wall, {r['in_run_s']} s in flow, "
                            f"{r['api_calls']} calls, {r['priority']}")
                    rows.append({"scale": scale, "system": s, "wall_s": statistics.median(r["wall_s"] for r in runs),
                                 "in_run_s": statistics.median(r["in_run_s"] for r in runs),
                                 "api_calls": statistics.median(r["api_calls"] for r in runs),
                                 "priority": runs[-1]["priority"], "status": runs[-1]["status"]})
                    raw[f"{scale}x/{s}"] = runs
            finally:
                sandbox.stop()
    finally:
        if server_used:
            subprocess.run([OPSBOOK, "server", "stop"], env=base_env, capture_output=True, text=True, timeout=T_SERVER_STOP, cwd=ROOT)
    md = write_markdown(rows, meta)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "emergency.md").write_text(md)
    (RESULTS / "emergency.json").write_text(json.dumps({"meta": meta, "rows": rows, "raw": raw}, indent=2))
    print(md)
    return 0 if all(r["wall_s"] < TARGET_S for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
