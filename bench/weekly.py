"""Benchmark: the seed's weekly report script (seeds/001 주간 리포트, bench/weekly_report.sh)
vs `opsbook run weekly-report`, for HR at 10x and T-Developer, in one sandbox.

  cd /work/main && .venv/bin/python -m bench.weekly --scale 10 --latency-ms 30

One sandbox (this module with --serve, in its own process): HR seeded at
``--scale`` (sandbox.cli.extra_for: 10x = 80 functions, 60 tables) and
T-Developer at 1x, each with 14 days of metrics (seeded with the resources:
sandbox.metrics.seed_weekly_metrics, before the latency is switched on; the
tag-only extras stay idle), then ``--latency-ms`` per call. Timed
(wall clock of the whole process) and counted:
  - bench/weekly_report.sh: SYSTEM=hr-resource-optimization (extended to every
    tagged function and table, this week and last week) and SYSTEM=t-developer
    (the seed's script as written); API calls = aws invocations;
  - `opsbook run weekly-report --system ... --json`, warm (after one untimed run
    each, which also starts the local Prefect server); API calls from its JSON.
Prints a table and writes bench/results/weekly.md (raw numbers in weekly.json).
Everything started here (sandbox, Prefect server) is stopped in a finally block.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.harness import BENCH, OPSBOOK, RESULTS, ROOT, T_SERVER_STOP, SandboxProc, aws_cli, free_port, last_json, log, machine, timed

HR = "hr-resource-optimization"
TD = "t-developer"
SYSTEMS = (HR, TD)
SEED_SCRIPT = BENCH / "weekly_report.sh"
T_OPSBOOK = 240
T_SEED = 900


# --- the sandbox process ---------------------------------------------------------------------


def serve(scale: int, latency_ms: float) -> int:
    """Seed HR at ``scale`` and T-Developer at 1x (with 14 days of metrics), print the exports, wait for SIGTERM."""
    from opsbook.inventory import load_system
    from sandbox.cli import extra_for
    from sandbox.seed import seed_system
    from sandbox.server import Sandbox

    t0 = time.monotonic()
    sb = Sandbox(latency_ms=0.0).start()
    try:
        sb.apply_env()
        hr, td = load_system(HR), load_system(TD)
        # T-Developer's seeded pipeline p95 breaches its SLO by 15 %: a WARN (a CRIT would end the run Failed, not what is timed here)
        metrics = {s.name: seed_system(sb, s, extra_for(s, scale) if s is hr else {})["metrics"] for s in (hr, td)}
        t1 = time.monotonic()
        sb.set_latency_ms(latency_ms)
        print(f"weekly sandbox: seeded in {t1 - t0:.1f} s; metrics {metrics}", file=sys.stderr, flush=True)
        for k, v in sb.env().items():
            print(f"export {k}={shlex.quote(v)}")
        print(f"export BENCH_SEED_S={t1 - t0:.2f}")
        sys.stdout.flush()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        stop.wait()
    finally:
        sb.stop()
    return 0


# --- the timed runs ------------------------------------------------------------------------------


def run_opsbook(system: str, env: dict[str, str]) -> dict[str, Any]:
    wall, cp = timed([OPSBOOK, "run", "weekly-report", "--system", system, "--json"], env, T_OPSBOOK)
    try:
        d = last_json(cp.stdout)
    except ValueError as exc:
        raise RuntimeError(f"opsbook run exited {cp.returncode}: {exc}; stderr: {cp.stderr[-1500:]}") from None
    if "error" in d:
        raise RuntimeError(f"opsbook run could not finish: {d['error']}; stderr: {cp.stderr[-1500:]}")
    t = d.get("timing", {})
    return {"wall_s": wall, "api_calls": d["api_calls"], "by_operation": d.get("api_calls_by_operation"), "status": d.get("status"),
            "exit_code": cp.returncode, "in_run_s": d.get("duration_s"), "server_started": t.get("server_started"),
            "server_start_s": t.get("server_start_s"),
            "findings": len(d.get("findings", [])), "not_ok_count": sum(1 for f in d.get("findings", []) if f["status"] != "OK"),
            "not_ok": [f"{f['status']} {f['check']} {f['resource']}: {f['summary']}" for f in d.get("findings", []) if f["status"] != "OK"][:8]}


def run_seed_script(system: str, env: dict[str, str], aws: str) -> dict[str, Any]:
    region = env["AWS_REGION"]
    wall, cp = timed(["bash", str(SEED_SCRIPT)], {**env, "AWS": aws, "SYSTEM": system, "AWS_DEFAULT_REGION": region}, T_SEED)
    m = re.search(r"^API calls: (\d+)", cp.stdout, re.M)
    c = re.search(r"^Covered: (\d+) functions, (\d+) tables", cp.stdout, re.M)
    if not m or not c:
        raise RuntimeError(f"weekly_report.sh ({system}) exited {cp.returncode} without its summary; stdout: {cp.stdout[-800:]}; stderr: {cp.stderr[-800:]}")
    by_cmd = {f"{a} {b}": int(n) for n, a, b in re.findall(r"^\s+(\d+) (\S+) (\S+)$", cp.stdout.split("API calls by command:")[-1], re.M)}
    problems = [ln.strip() for ln in cp.stdout.splitlines() if re.search(r"no data|error|Could not", ln)]
    return {"wall_s": wall, "api_calls": int(m.group(1)), "by_operation": by_cmd, "exit_code": cp.returncode,
            "covered": {"functions": int(c.group(1)), "tables": int(c.group(2))}, "problems": problems, "stdout": cp.stdout,
            "stderr_tail": cp.stderr.strip()[-400:]}


def write_markdown(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [
        "# opsbook benchmark: weekly-report (seed 001 주간 리포트 vs opsbook)",
        "",
        f"- date: {meta['date']}",
        f"- machine: {m['nproc']} CPUs (nproc), Python {m['python']}, {m['platform']}",
        f"- versions: {m['versions']}; {meta.get('awscli')}",
        f"- command: `{meta['command']}`",
        f"- sandbox: one moto on 127.0.0.1, {meta['latency_ms']:g} ms per call; HR at {meta['scale']}x "
        f"({meta['scale_note']}), T-Developer at 1x; 14 days of metrics for the named resources (sandbox/metrics.py, the "
        f"extras idle), before the latency was switched on. Seeded in {meta['seed_s']} s, "
        f"serving after {meta['sandbox_start_s']:.1f} s.",
        "",
        "Wall s: the whole process (median of the repeats). API calls: the seed script counts one per `aws` invocation; "
        "opsbook's `api_calls` from its JSON (GetMetricData batches, pages of discovery, etc.). opsbook runs are warm "
        "(one untimed run per system before, the local Prefect server already up).",
        "",
        "| system | tool | wall s | API calls | runs | notes |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['system']} | {r['tool']} | {r['wall_s']:.2f} | {r['api_calls']:g} | {r['n']} | {r.get('note', '')} |")
    lines.append("")
    for r in rows:
        if r.get("by_operation"):
            lines.append(f"- {r['system']} / {r['tool']} calls: " + ", ".join(f"{k} {v}" for k, v in r["by_operation"].items()))
    for n in meta.get("notes", []):
        lines.append(f"- note: {n}")
    lines.append("")
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.weekly", description="benchmark weekly-report: seed script vs opsbook")
    ap.add_argument("--scale", type=int, default=10, help="HR scale (T-Developer stays 1x)")
    ap.add_argument("--latency-ms", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "weekly.md"))
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # internal: be the sandbox process
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.scale, args.latency_ms)

    t_start = time.monotonic()
    command = "cd /work/main && .venv/bin/python -m bench.weekly " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    aws = aws_cli()
    awscli_version = subprocess.run([aws, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    home = tempfile.mkdtemp(prefix="opsbook-bench-weekly-")
    port = free_port()
    base_env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "PREFECT_API_URL", "AWS_DEFAULT_PROFILE")}
    base_env.update({"OPSBOOK_HOME": home, "OPSBOOK_PREFECT_PORT": str(port), "OPSBOOK_QUOTAS": "off", "PYTHONUNBUFFERED": "1"})
    from opsbook.inventory import load_system

    regions = {s: load_system(s).region for s in SYSTEMS}
    meta: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "command": command,
                            "latency_ms": args.latency_ms, "awscli": awscli_version, "scale": args.scale, "notes": [],
                            "scale_note": "80 functions, 60 tables" if args.scale == 10 else f"scale {args.scale}, not the 10x asked for"}
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    server_used = False
    sandbox = SandboxProc(HR, args.scale, args.latency_ms, home)
    sandbox.cmd = [sys.executable, "-m", "bench.weekly", "--serve", "--scale", str(args.scale), "--latency-ms", str(args.latency_ms)]
    log(f"OPSBOOK_HOME={home}, Prefect server port {port}")
    try:
        log(f"starting the sandbox (HR {args.scale}x + T-Developer, 14 days of metrics)")
        exports = sandbox.start()
        meta.update(sandbox_start_s=sandbox.seed_s, seed_s=exports.pop("BENCH_SEED_S", "?"))
        log(f"sandbox at {exports['AWS_ENDPOINT_URL']} after {sandbox.seed_s:.1f} s")
        env_of = {s: {**base_env, **exports, "AWS_REGION": regions[s], "AWS_DEFAULT_REGION": regions[s]} for s in SYSTEMS}

        for s in SYSTEMS:  # untimed: the first starts the Prefect server
            server_used = True
            w = run_opsbook(s, env_of[s])
            if w.get("server_started"):
                meta["cold_start"] = {"wall_s": w["wall_s"], "server_start_s": w["server_start_s"]}
            log(f"{s}: opsbook warm-up {w['status']}, {w['api_calls']} calls, {w['wall_s']:.2f} s")

        for s in SYSTEMS:
            for tool, fn in (("seed script" + (" (extended)" if s == HR else " (as written)"), lambda: run_seed_script(s, env_of[s], aws)),
                             ("opsbook run weekly-report (warm)", lambda: run_opsbook(s, env_of[s]))):
                runs = []
                for i in range(args.repeat):
                    r = fn()
                    if "stdout" in r:
                        (RESULTS / f"weekly-seed-{s}.log.tmp").write_text(r.pop("stdout"))
                    runs.append(r)
                    log(f"{s}: {tool} {i + 1}/{args.repeat}: {r['wall_s']:.2f} s, {r['api_calls']} calls")
                last = runs[-1]
                note = ""
                if "covered" in last and s == HR:
                    note = f"covered {last['covered']['functions']} functions, {last['covered']['tables']} tables"
                if last.get("status"):
                    note = f"status {last['status']}, {last['findings']} findings ({last['not_ok_count']} not OK), in-run {last.get('in_run_s')} s"
                rows.append({"system": s, "tool": tool, "n": len(runs), "wall_s": statistics.median(r["wall_s"] for r in runs),
                             "api_calls": statistics.median(r["api_calls"] for r in runs), "by_operation": last.get("by_operation"), "note": note})
                raw[f"{s}/{tool}"] = runs
                if last.get("not_ok"):
                    meta["notes"].append(f"{s} opsbook not OK: " + "; ".join(last["not_ok"]))
                if last.get("exit_code") and "covered" in last:
                    meta["notes"].append(f"{s} seed script exit {last['exit_code']}: {last.get('stderr_tail', '')[-200:]}")
                if last.get("problems"):
                    meta["notes"].append(f"{s} seed script printed {len(last['problems'])} 'no data'/error lines, e.g. {last['problems'][0]}")
    finally:
        sandbox.stop()
        if server_used:
            try:
                cp = subprocess.run([OPSBOOK, "server", "stop"], env=base_env, capture_output=True, text=True, timeout=T_SERVER_STOP, cwd=ROOT)
                log(f"opsbook server stop: {cp.stdout.strip() or cp.stderr.strip()}")
            except subprocess.TimeoutExpired:
                log("`opsbook server stop` timed out")
    if meta.get("cold_start"):
        c = meta["cold_start"]
        meta["notes"].append(f"cold start (first opsbook run, starts the Prefect server): {c['wall_s']:.2f} s wall, {c['server_start_s']} s server start (not in the table)")
    meta["total_s"] = round(time.monotonic() - t_start, 1)
    print("| system | tool | wall s | API calls |")
    for r in rows:
        print(f"| {r['system']} | {r['tool']} | {r['wall_s']:.2f} | {r['api_calls']:g} |")
    text = write_markdown(Path(args.out), rows, meta)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "runs": raw}, indent=1, default=str))
    log(f"wrote {args.out} (total {meta['total_s']} s)")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
