"""Benchmark: the seed's shell health check (extended), opsbook daily-health
and the boto3 floor, against the sandbox at 1x and 10x the HR system.
(`--rollback`: the emergency-rollback benchmark instead, see bench/rollback.py;
`--dr`: the DR test benchmark, see bench/dr.py.)

  cd /work/main && .venv/bin/python -m bench.run --scales 1 10 --latency-ms 30 --repeat 3

For each scale: start `opsbook sandbox` (moto on 127.0.0.1, seeded, with a
per-call latency), then time (wall clock of the whole process, median of the
repeats) and count the AWS API calls of
  - bench/daily_health_check_extended.sh (aws CLI v1 from bench/.venv-awscli),
  - `opsbook run daily-health --json`, warm (after one untimed run; the very
    first run starts the local Prefect server and is reported as cold start),
  - bench/floor.py (boto3, 32 threads, the same reads),
  - at scale >= 10 also both with the FilterLogEvents quota honoured
    (OPSBOOK_QUOTAS=on / floor --quotas).
Prints a table and writes it to bench/results/latest.md (raw numbers in
latest.json). Everything started here is stopped in a finally block.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.harness import (
    BENCH,
    OPSBOOK,
    RESULTS,
    ROOT,
    T_FLOOR,
    T_OPSBOOK,
    T_SEED,
    T_SERVER_STOP,
    SandboxProc,
    aws_cli,
    free_port,
    last_json,
    log,
    machine,
    timed,
)

SEED_SCRIPT = BENCH / "daily_health_check_extended.sh"
FLOOR = BENCH / "floor.py"

# --- the aws CLI venv -------------------------------------------------------------------


# --- the sandbox ----------------------------------------------------------------------------


# --- one timed process -------------------------------------------------------------------------


def run_opsbook(system: str, env: dict[str, str]) -> dict[str, Any]:
    wall, cp = timed([OPSBOOK, "run", "daily-health", "--system", system, "--json"], env, T_OPSBOOK)
    try:
        d = last_json(cp.stdout)
    except ValueError as exc:
        raise RuntimeError(f"opsbook run exited {cp.returncode}: {exc}; stderr: {cp.stderr[-1500:]}") from None
    if "error" in d:
        raise RuntimeError(f"opsbook run could not finish: {d['error']}; stderr: {cp.stderr[-1500:]}")
    checks: dict[str, int] = {}
    for f in d.get("findings", []):
        checks[f["check"]] = checks.get(f["check"], 0) + 1
    t = d.get("timing", {})
    return {
        "wall_s": wall, "api_calls": d["api_calls"], "by_operation": d["api_calls_by_operation"], "status": d["status"],
        "exit_code": cp.returncode, "in_run_s": d.get("duration_s"), "flow_wall_s": t.get("wall_s"), "total_s": t.get("total_s"),
        "server_started": t.get("server_started"), "server_start_s": t.get("server_start_s"),
        "covered": {"functions": checks.get("lambda-state", 0), "tables": checks.get("dynamodb-status", 0),
                    "log_groups": checks.get("log-errors", 0), "buckets": checks.get("s3-storage", 0)},
        "not_ok": [f"{f['status']} {f['check']} {f['resource']}: {f['summary']}" for f in d.get("findings", []) if f["status"] != "OK"][:10],
        "stderr_tail": cp.stderr.strip()[-600:],
    }


def run_floor(env: dict[str, str], system: str, quotas: bool) -> dict[str, Any]:
    wall, cp = timed([sys.executable, str(FLOOR), "--system", system] + (["--quotas"] if quotas else []), env, T_FLOOR)
    try:
        d = last_json(cp.stdout)
    except ValueError as exc:
        raise RuntimeError(f"floor.py exited {cp.returncode}: {exc}; stderr: {cp.stderr[-1500:]}") from None
    return {"wall_s": wall, "api_calls": d["api_calls"], "by_operation": d["api_calls_by_operation"], "in_run_s": d["wall_s"],
            "covered": d["covered"], "http_calls": d["http_calls"], "errors": d["errors"], "exit_code": cp.returncode}


def run_seed_script(env: dict[str, str], aws: str) -> dict[str, Any]:
    wall, cp = timed(["bash", str(SEED_SCRIPT)], {**env, "AWS": aws}, T_SEED)
    m = re.search(r"^API calls: (\d+)", cp.stdout, re.M)
    c = re.search(r"^Covered: (\d+) functions, (\d+) tables, (\d+) log groups, (\d+) buckets", cp.stdout, re.M)
    if not m or not c:
        raise RuntimeError(f"seed script exited {cp.returncode} without its summary; stdout: {cp.stdout[-800:]}; stderr: {cp.stderr[-800:]}")
    by_cmd = {f"{a} {b}": int(n) for n, a, b in re.findall(r"^\s+(\d+) (\S+) (\S+)$", cp.stdout.split("API calls by command:")[-1], re.M)}
    problems = [ln.strip() for ln in cp.stdout.splitlines() if re.search(r"NOT_FOUND|MISSING|Could not|error occurred", ln)]
    return {"wall_s": wall, "api_calls": int(m.group(1)), "by_operation": by_cmd, "exit_code": cp.returncode,
            "covered": dict(zip(("functions", "tables", "log_groups", "buckets"), map(int, c.groups()))), "problems": problems[:10],
            "stdout": cp.stdout}


# --- summary -------------------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    out = {"n": len(runs), "wall_s": statistics.median(walls), "wall_min": min(walls), "wall_max": max(walls),
           "api_calls": statistics.median([r["api_calls"] for r in runs]), "covered": runs[-1].get("covered"),
           "by_operation": runs[-1].get("by_operation")}
    inr = [r["in_run_s"] for r in runs if r.get("in_run_s") is not None]
    if inr:
        out["in_run_s"] = statistics.median(inr)
    return out


def fmt_cov(c: dict[str, int] | None) -> str:
    return "{functions}/{tables}/{log_groups}/{buckets}".format(**c) if c else "-"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "-"


TOOLS = [
    ("seed", "seed script, extended (aws CLI, sequential)"),
    ("opsbook", "opsbook run daily-health (warm)"),
    ("floor", "floor (boto3, 32 threads)"),
    ("opsbook_quotas", "opsbook, OPSBOOK_QUOTAS=on (5 FilterLogEvents/s)"),
    ("floor_quotas", "floor --quotas (5 FilterLogEvents/s)"),
]


def tables(results: dict[int, dict[str, Any]]) -> tuple[list[str], list[str]]:
    rows = ["| scale | tool | wall s (median) | min-max s | in-run s | API calls | covered F/T/L/B | runs |",
            "|---:|---|---:|---:|---:|---:|---|---:|"]
    ratios = ["| scale | seed/opsbook wall | seed/opsbook calls | opsbook/floor wall | opsbook/floor calls | opsbook/floor wall, quotas on | opsbook in-run/floor in-run |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for scale, res in results.items():
        s = res["summary"]
        for key, label in TOOLS:
            if key not in s:
                continue
            x = s[key]
            in_run = f"{x['in_run_s']:.2f}" if x.get("in_run_s") is not None else "-"
            rows.append(f"| {scale}x | {label} | {x['wall_s']:.2f} | {x['wall_min']:.2f}-{x['wall_max']:.2f} | {in_run} | "
                        f"{x['api_calls']:g} | {fmt_cov(x['covered'])} | {x['n']} |")
        g = lambda k, f: s.get(k, {}).get(f)  # noqa: E731
        ratios.append(f"| {scale}x | {ratio(g('seed', 'wall_s'), g('opsbook', 'wall_s'))} | {ratio(g('seed', 'api_calls'), g('opsbook', 'api_calls'))} | "
                      f"{ratio(g('opsbook', 'wall_s'), g('floor', 'wall_s'))} | {ratio(g('opsbook', 'api_calls'), g('floor', 'api_calls'))} | "
                      f"{ratio(g('opsbook_quotas', 'wall_s'), g('floor_quotas', 'wall_s'))} | {ratio(g('opsbook', 'in_run_s'), g('floor', 'in_run_s'))} |")
    return rows, ratios


def write_markdown(path: Path, results: dict[int, dict[str, Any]], meta: dict[str, Any]) -> str:
    rows, ratios = tables(results)
    m = meta["machine"]
    lines = [
        "# opsbook benchmark: daily-health, HR system (hr-resource-optimization)",
        "",
        f"- date: {meta['date']}",
        f"- machine: {m['nproc']} CPUs (nproc), Python {m['python']}, {m['platform']}",
        f"- versions: {m['versions']}; {meta.get('awscli', 'aws CLI not used')}",
        f"- command: `{meta['command']}`",
        f"- sandbox: moto on 127.0.0.1 with {meta['latency_ms']:g} ms per call (also on the OpenSearch double); "
        "everything (sandbox, Prefect server, clients) shares this machine",
        "",
        "Wall s is the wall clock of the whole process (what the operator waits for: interpreter start, imports, "
        "Prefect client for opsbook). In-run s is opsbook's own `duration_s` (flow start to report) and floor.py's "
        "time after imports. API calls are AWS API calls (HTTP to the OpenSearch cluster API is not counted); the "
        "seed script counts one per `aws` invocation (the CLI's auto-paginated pages are not visible from the shell). "
        "Covered F/T/L/B: functions, tables, log groups, buckets checked.",
        "",
        *rows,
        "",
        "Ratios (medians):",
        "",
        *ratios,
        "",
    ]
    if meta.get("cold_start"):
        c = meta["cold_start"]
        lines += [f"Cold start (first `opsbook run`, starts the local Prefect server): {c['wall_s']:.2f} s wall, "
                  f"of which {c['server_start_s']:.2f} s starting the server (not in the table).", ""]
    for scale, res in results.items():
        lines.append(f"Sandbox {scale}x: seeded and serving in {res['sandbox_start_s']:.1f} s.")
        for key, _ in TOOLS:
            x = res["summary"].get(key)
            if x and x.get("by_operation"):
                lines.append(f"- {scale}x {key} calls: " + ", ".join(f"{k} {v}" for k, v in x["by_operation"].items()))
        for note in res.get("notes", []):
            lines.append(f"- note: {note}")
        lines.append("")
    if (path.parent / "rollback.md").exists():
        lines += ["Rollback benchmark (emergency-rollback vs the seed's emergency_rollback.sh): [rollback.md](rollback.md).", ""]
    if (path.parent / "dr.md").exists():
        lines += ["DR benchmark (dr-test vs the seed's disaster_recovery_test.sh): [dr.md](dr.md).", ""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


# --- main ------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description="benchmark daily-health: seed script vs opsbook vs floor")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--latency-ms", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed-repeat", type=int, default=None, help="repeats of the seed script (default: --repeat at 1x, 1 above)")
    ap.add_argument("--skip-seed-script", action="store_true")
    ap.add_argument("--system", default="hr-resource-optimization")
    ap.add_argument("--out", default=str(RESULTS / "latest.md"))
    rb = ap.add_argument_group("rollback", "--rollback: instead of daily-health, time the seed's emergency_rollback.sh against "
                               "`opsbook run emergency-rollback` on a bad ECS deploy (bench/rollback.py; writes rollback.md next to --out)")
    rb.add_argument("--rollback", action="store_true", help="run the emergency-rollback benchmark (uses --repeat, --latency-ms)")
    rb.add_argument("--settle-s", type=int, default=5, help="opsbook's settle_timeout_s (default 5, its minimum)")
    rb.add_argument("--wait-timeout-s", type=int, default=20, help="bound on the seed script's services-stable waiter (default 20)")
    rb.add_argument("--no-table-variant", action="store_true", help="skip the opsbook runs with its state table already created")
    rb.add_argument("--live-code", action="store_true", help="run opsbook from the live tree (default: a snapshot taken at the start)")
    dr = ap.add_argument_group("dr", "--dr: instead of daily-health, time the seed's disaster_recovery_test.sh against "
                               "`opsbook run dr-test --execute --yes` on HR (bench/dr.py; writes dr.md next to --out)")
    dr.add_argument("--dr", action="store_true", help="run the DR benchmark (uses --repeat, --latency-ms, --no-table-variant, --live-code)")
    dr.add_argument("--dr-items", type=int, default=200, help="items put in Employees-Team2 (and documents in employee_profiles) before the backups")
    dr.add_argument("--no-probes", action="store_true", help="skip the DR probes (the seed script's second run, opsbook after writes since the backup)")
    args = ap.parse_args()
    if args.dr:
        from bench import dr as dr_bench

        return dr_bench.main(args.repeat, args.latency_ms, items=args.dr_items, table_variant=not args.no_table_variant,
                             probes=not args.no_probes, out=Path(args.out).parent / "dr.md", live_code=args.live_code)
    if args.rollback:
        from bench import rollback

        return rollback.main(args.repeat, args.latency_ms, settle_s=args.settle_s, wait_timeout_s=args.wait_timeout_s,
                             table_variant=not args.no_table_variant, out=Path(args.out).parent / "rollback.md", live_code=args.live_code)

    t_start = time.monotonic()
    command = "cd /work/main && .venv/bin/python -m bench.run " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    aws = None if args.skip_seed_script else aws_cli()
    awscli_version = None
    if aws:
        awscli_version = subprocess.run([aws, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()

    home = tempfile.mkdtemp(prefix="opsbook-bench-")
    port = free_port()
    base_env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "PREFECT_API_URL", "AWS_DEFAULT_PROFILE")}
    base_env.update({"OPSBOOK_HOME": home, "OPSBOOK_PREFECT_PORT": str(port), "OPSBOOK_QUOTAS": "off", "PYTHONUNBUFFERED": "1"})
    region = "us-east-2"
    results: dict[int, dict[str, Any]] = {}
    meta: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "command": command,
                            "latency_ms": args.latency_ms, "awscli": awscli_version, "prefect_port": port, "home": home}
    server_used = False
    sandbox: SandboxProc | None = None
    log(f"OPSBOOK_HOME={home}, Prefect server port {port}")
    try:
        for scale in args.scales:
            sandbox = SandboxProc(args.system, scale, args.latency_ms, home)
            log(f"{scale}x: starting the sandbox ({' '.join(sandbox.cmd[1:])})")
            exports = sandbox.start()
            log(f"{scale}x: sandbox at {exports['AWS_ENDPOINT_URL']} after {sandbox.seed_s:.1f} s")
            env = {**base_env, **exports, "AWS_REGION": region, "AWS_DEFAULT_REGION": region}
            res: dict[str, Any] = {"sandbox_start_s": sandbox.seed_s, "runs": {}, "summary": {}, "notes": []}
            runs = res["runs"]

            # untimed opsbook run: the first one starts the Prefect server (cold start)
            server_used = True
            w = run_opsbook(args.system, env)
            if w.get("server_started"):
                meta["cold_start"] = {"wall_s": w["wall_s"], "server_start_s": w["server_start_s"], "scale": scale}
                log(f"{scale}x: cold start {w['wall_s']:.2f} s (Prefect server {w['server_start_s']} s)")
            log(f"{scale}x: opsbook warm-up: {w['status']}, {w['api_calls']} calls, {w['wall_s']:.2f} s")
            if w["status"] != "OK":
                res["notes"].append(f"opsbook status {w['status']}: " + "; ".join(w["not_ok"]))
            run_floor(env, args.system, False)  # untimed warm-up (bytecode, page cache)

            if aws:
                n = args.seed_repeat if args.seed_repeat is not None else (args.repeat if scale <= 1 else 1)
                runs["seed"] = []
                for i in range(n):
                    r = run_seed_script(env, aws)
                    (RESULTS / f"seed-script-{scale}x.log.tmp").write_text(r.pop("stdout"))
                    runs["seed"].append(r)
                    log(f"{scale}x: seed script {i + 1}/{n}: {r['wall_s']:.2f} s, {r['api_calls']} calls")
                    if r["problems"]:
                        res["notes"].append("seed script reported: " + "; ".join(r["problems"]))

            for key, quotas in (("opsbook", False), ("floor", False)) + ((("opsbook_quotas", True), ("floor_quotas", True)) if scale >= 10 else ()):
                runs[key] = []
                for i in range(args.repeat):
                    if key.startswith("opsbook"):
                        r = run_opsbook(args.system, {**env, "OPSBOOK_QUOTAS": "on" if quotas else "off"})
                        if r["status"] != "OK":
                            res["notes"].append(f"{key} run {i + 1}: status {r['status']}: " + "; ".join(r["not_ok"]))
                    else:
                        r = run_floor(env, args.system, quotas)
                        if r["errors"]:
                            res["notes"].append(f"{key} run {i + 1}: errors: " + "; ".join(r["errors"][:3]))
                    runs[key].append(r)
                    log(f"{scale}x: {key} {i + 1}/{args.repeat}: {r['wall_s']:.2f} s wall, {r.get('in_run_s')} s in-run, {r['api_calls']} calls")

            res["summary"] = {k: summarize(v) for k, v in runs.items() if v}
            results[scale] = res
            sandbox.stop()
            sandbox = None
    finally:
        if sandbox is not None:
            log("stopping the sandbox")
            sandbox.stop()
        if server_used:
            try:
                cp = subprocess.run([OPSBOOK, "server", "stop"], env=base_env, capture_output=True, text=True, timeout=T_SERVER_STOP, cwd=ROOT)
                log(f"opsbook server stop: {cp.stdout.strip() or cp.stderr.strip()}")
            except subprocess.TimeoutExpired:
                log("`opsbook server stop` timed out")
        if results:
            meta["total_s"] = round(time.monotonic() - t_start, 1)
            text = write_markdown(Path(args.out), results, meta)
            raw = {"meta": meta, "results": {str(k): {kk: vv for kk, vv in v.items()} for k, v in results.items()}}
            Path(args.out).with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
            print(text)
            log(f"wrote {args.out} (total {meta['total_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
