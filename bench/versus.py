"""Side by side, in one run, on one sandbox at one latency: the bare boto3 floor, opsbook cold, warm and served, and
Cloud Custodian on the audit checks it can express; prints the ratios (issue 20's targets).

    cd /work/main && .venv/bin/python -m bench.versus --scale 10 --latency-ms 30 --repeat 5

One `opsbook sandbox` (the system at --scale, every AWS call delayed --latency-ms), then, round after round in the same
order (so that a slow minute of the shared machine hits every tool alike), each as a whole process (interpreter start
and imports included: what the operator waits for):

  floor           bench/floor.py: daily-health's reads in plain boto3, 32 threads, nothing else
  daily-health    `opsbook run daily-health --json`, warm: the local Prefect server already up
  c7n: 1 check    `custodian run` of one policy: log groups whose retention is not the inventory's
  opsbook: 1 check `opsbook run maintenance-audit --param checks=logs-retention --json` (the same check)
  c7n: audits     `custodian run` of the policies below, one invocation
  opsbook: audits `opsbook run daily-health maintenance-audit backup-verify --json`, one invocation

and, once each:
  cold            the first `opsbook run daily-health` of the machine: it starts the local Prefect server
  served          daily-health as a deployment of a served process (`prefect.serve`, runner poll 2 s as `opsbook serve`):
                  a flow run created through the API (what the UI's button and an alarm's trigger do) until Completed;
                  --served N of them

Custodian (c7n, pinned below) lives in its own venv, bench/.venv-c7n, made on first use, never a project dependency;
its calls are counted at botocore's _make_api_call (bench/c7n_run.py), opsbook's are its own count, the floor's its own.
Custodian's resource cache is off (--cache-period 0): each run reads, as each opsbook run does.

Writes bench/results/versus.md and versus.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from bench.harness import BENCH, OPSBOOK, RESULTS, ROOT, SandboxProc, api, free_port, last_json, log, machine

C7N_VENV = BENCH / ".venv-c7n"
C7N_VERSION = "0.9.53"
SERVE = """
import sys
from prefect import serve
from opsbook import registry
system, runbook, name = sys.argv[1:4]
flow = registry.get(runbook).load()
serve(flow.to_deployment(name=name, parameters={"system": system}), pause_on_shutdown=False, print_starting_message=False)
"""
T_RUN = 300


# --- Cloud Custodian ----------------------------------------------------------------------------------------------


def custodian_python() -> str:
    """bench/.venv-c7n/bin/python with c7n installed (made on first use)."""
    py = C7N_VENV / "bin" / "python"
    if not (C7N_VENV / "bin" / "custodian").exists():
        log(f"creating {C7N_VENV} and installing c7n=={C7N_VERSION} into it")
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(C7N_VENV)], check=True, timeout=120)
        subprocess.run([str(C7N_VENV / "bin" / "pip"), "install", "-q", f"c7n=={C7N_VERSION}"], check=True, timeout=900)
    return str(py)


def custodian_policies(system: Any, today: date) -> dict[str, list[dict[str, Any]]]:
    """The audit checks Custodian can express, from the inventory: {"single": [...], "audits": [...]}. Each policy's
    ``opsbook`` entry (dropped before Custodian sees it) names the runbook check it stands for."""
    from flows.maintenance_audit.judge import deprecations

    tags = [{f"tag:{k}": v} for k, v in system.discovery.tags.items()]
    required = [{f"tag:{k}": "absent"} for k in system.audit.required_tags]
    limit = today + timedelta(days=system.audit.runtime_warn_days)
    old = sorted(r for r, day in deprecations(system).items() if day <= limit)  # what lambda-runtime warns about
    retention = {"name": "log-retention", "resource": "aws.log-group", "opsbook": "maintenance-audit logs-retention",
                 "filters": [{"type": "value", "key": "logGroupName", "op": "glob", "value": "/aws/lambda/*"},
                             {"or": [{"retentionInDays": "absent"},
                                     {"type": "value", "key": "retentionInDays", "op": "ne", "value": system.audit.log_retention_days}]}]}
    audits = [retention,
              {"name": "lambda-runtime-deprecated", "resource": "aws.lambda", "opsbook": "maintenance-audit lambda-runtime",
               "filters": tags + [{"type": "value", "key": "Runtime", "op": "in", "value": old}]}]
    if required:
        audits += [{"name": f"{kind}-required-tags", "resource": res, "opsbook": "maintenance-audit required-tags", "filters": required}
                   for kind, res in (("lambda", "aws.lambda"), ("table", "aws.dynamodb-table"), ("bucket", "aws.s3"))]
    if system.audit.kms_key_aliases:
        audits.append({"name": "kms-rotation-off", "resource": "aws.kms-key", "opsbook": "maintenance-audit kms-rotation",
                       "filters": [{"type": "key-rotation-status", "key": "KeyRotationEnabled", "value": False}]})
    audits += [
        {"name": "table-pitr-off", "resource": "aws.dynamodb-table", "opsbook": "backup-verify dynamodb-pitr",
         "filters": tags + [{"type": "continuous-backup", "key": "PointInTimeRecoveryDescription.PointInTimeRecoveryStatus",
                             "value": "DISABLED"}]},
        {"name": "table-not-active", "resource": "aws.dynamodb-table", "opsbook": "daily-health dynamodb-status",
         "filters": tags + [{"type": "value", "key": "TableStatus", "op": "ne", "value": "ACTIVE"}]},
        {"name": "bucket-versioning-off", "resource": "aws.s3", "opsbook": "backup-verify s3-versioning",
         "filters": tags + [{"type": "value", "key": "Versioning.Status", "op": "ne", "value": "Enabled"}]},
        {"name": "alarms-firing", "resource": "aws.alarm", "opsbook": "daily-health alarms", "filters": [{"StateValue": "ALARM"}]},
        {"name": "opensearch-processing", "resource": "aws.elasticsearch", "opsbook": "daily-health opensearch-domain",
         "filters": [{"Processing": True}]},
    ]
    return {"single": [retention], "audits": audits}


def write_policies(policies: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(yaml.safe_dump({"policies": [{k: v for k, v in p.items() if k != "opsbook"} for p in policies]}, sort_keys=False))
    return path


# --- one measured process -----------------------------------------------------------------------------------------


def measure(name: str, cmd: list[str], env: dict[str, str], parse: Any) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    cp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=T_RUN, stdin=subprocess.DEVNULL, cwd=ROOT)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {"tool": name, "wall_s": round(wall, 3), "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3),
           "exit": cp.returncode}
    try:
        row.update(parse(cp))
    except Exception as exc:  # a tool that failed is a row saying so, never a missing row
        row["error"] = f"{type(exc).__name__}: {exc}; stderr: {cp.stderr[-600:]}"
    return row


def opsbook_answer(cp: subprocess.CompletedProcess) -> dict[str, Any]:
    out = last_json(cp.stdout)
    runs = out.get("runs") or [out]
    findings = [f for r in runs for f in r.get("findings", [])]
    return {"status": out["status"], "api_calls": sum(r.get("api_calls", 0) for r in runs),
            "flagged": sum(1 for f in findings if f["status"] != "OK"), "findings": len(findings),
            "by_check": {c: sum(1 for f in findings if f["check"] == c and f["status"] != "OK") for c in sorted({f["check"] for f in findings})}}


def floor_answer(cp: subprocess.CompletedProcess) -> dict[str, Any]:
    out = last_json(cp.stdout)
    return {"api_calls": out["api_calls"] + sum(out.get("http_calls", {}).values()), "errors": len(out["errors"])}


def custodian_answer(counts: Path, out_dir: Path, policies: list[dict[str, Any]]):
    def parse(cp: subprocess.CompletedProcess) -> dict[str, Any]:
        if cp.returncode != 0:
            raise RuntimeError(f"custodian exited {cp.returncode}")
        calls = json.loads(counts.read_text())
        matched = {p["name"]: len(json.loads((out_dir / p["name"] / "resources.json").read_text())) for p in policies}
        return {"api_calls": sum(calls.values()), "api_calls_by_operation": calls, "by_policy": matched, "flagged": sum(matched.values())}
    return parse


# --- served: a deployment run of a serving process ----------------------------------------------------------------


def ts(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s.replace("Z", "+00:00")) if s else None


def served_runs(port: int, system: str, env: dict[str, str], trials: int, home: Path) -> list[dict[str, Any]]:
    name = "bench-versus"
    serve_env = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PYTHONPATH": str(ROOT)}
    with open(home / "serve.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVE, system, "daily-health", name], cwd=ROOT, env=serve_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    rows: list[dict[str, Any]] = []
    try:
        dep = None
        until = time.monotonic() + 120
        while dep is None:
            try:
                dep = api(port, f"/deployments/name/daily-health/{name}")
            except Exception:
                if proc.poll() is not None or time.monotonic() > until:
                    raise RuntimeError(f"the serving process did not register its deployment; see {home / 'serve.log'}") from None
                time.sleep(0.5)
        for i in range(trials + 1):  # the first is a warm-up (the runner's first run), reported apart
            t0 = time.monotonic()
            fr = api(port, f"/deployments/{dep['id']}/create_flow_run", {})
            while True:
                cur = api(port, f"/flow_runs/{fr['id']}")
                if cur["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
                if time.monotonic() - t0 > T_RUN:
                    raise RuntimeError(f"served run {fr['id']} not final after {T_RUN} s")
                time.sleep(0.1)
            created, start, end = ts(cur["created"]), ts(cur["start_time"]), ts(cur["end_time"])
            rows.append({"tool": "served", "trial": i, "state": cur["state_type"], "wall_s": round(time.monotonic() - t0, 3),
                         "to_running_s": round((start - created).total_seconds(), 3) if start and created else None,
                         "to_completed_s": round((end - created).total_seconds(), 3) if end and created else None,
                         "run_s": round((end - start).total_seconds(), 3) if end and start else None})
            log(f"served trial {i}: {rows[-1]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 2)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
    return rows


# --- report -------------------------------------------------------------------------------------------------------


def med(rows: list[dict[str, Any]], key: str = "wall_s") -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and "error" not in r]
    return statistics.median(vals) if vals else None


def spread(rows: list[dict[str, Any]], key: str = "wall_s") -> str:
    vals = [r[key] for r in rows if r.get(key) is not None and "error" not in r]
    return f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})" if vals else "-"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def paired(by: dict[str, list[dict[str, Any]]], a: str, b: str) -> str:
    """The ratio round by round (the two runs of a round are a minute apart at most): median (min-max)."""
    rounds = {r["round"]: r["wall_s"] for r in by.get(b, []) if "error" not in r and "round" in r}
    vals = [r["wall_s"] / rounds[r["round"]] for r in by.get(a, []) if "error" not in r and r.get("round") in rounds]
    return f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})" if vals else "-"


def report(rows: list[dict[str, Any]], policies: dict[str, list[dict[str, Any]]], args: argparse.Namespace, started: str,
           loads: list[float]) -> str:
    by = {t: [r for r in rows if r["tool"] == t] for t in dict.fromkeys(r["tool"] for r in rows)}
    served = [r for r in by.get("served", []) if r.get("trial")]
    out = [f"# Side by side: floor, opsbook (cold, warm, served), Cloud Custodian {C7N_VERSION}", "",
           f"{started}; {args.system} at {args.scale}x, {args.latency_ms:g} ms a call; {args.repeat} rounds; machine: "
           f"{json.dumps(machine())}; 1-min load {min(loads):.1f}-{max(loads):.1f}", "",
           f"`{' '.join(['python -m bench.versus'] + sys.argv[1:])}`" + (f" (opsbook from {args.code})" if args.code else ""), "",
           "| tool | whole process, s: median (min-max) | CPU s (median) | API calls | answer |", "|---|---:|---:|---:|---|"]
    answers = {
        "floor": lambda r: f"{r.get('errors', '?')} errors",
        "c7n: 1 check": lambda r: f"{r.get('flagged')} log groups flagged",
        "c7n: audits": lambda r: f"{r.get('flagged')} resources flagged over {len(r.get('by_policy', {}))} policies",
    }
    for tool, rs in by.items():
        if tool == "served":
            continue
        last = next((r for r in reversed(rs) if "error" not in r), rs[-1])
        ans = answers.get(tool, lambda r: f"{r.get('status')}: {r.get('flagged')} of {r.get('findings')} findings not OK")(last)
        if "error" in last:
            ans = "FAILED: " + last["error"][:200]
        out.append(f"| {tool} | {spread(rs)} | {med(rs, 'cpu_s') or '-'} | {last.get('api_calls', '-')} | {ans} |")
    if served:
        out.append(f"| served: created -> Running | {spread(served, 'to_running_s')} | - | - | runner poll 2 s |")
        out.append(f"| served: created -> Completed | {spread(served, 'to_completed_s')} | - | - | {served[-1]['state']} |")
        out.append(f"| served: the run itself (Running -> Completed) | {spread(served, 'run_s')} | - | - | |")
    floor = med(by.get("floor", []))
    out += ["", "| ratio (whole process) | of the medians | round by round: median (min-max) | target |", "|---|---:|---:|---|",
            f"| daily-health warm / floor | {ratio(med(by.get('daily-health (warm)', [])), floor)} | "
            f"{paired(by, 'daily-health (warm)', 'floor')} | <= 2 |",
            f"| daily-health cold (starts the Prefect server) / floor | {ratio(med(by.get('daily-health (cold)', [])), floor)} | - | |",
            f"| served, created -> Completed / floor | {ratio(med(served, 'to_completed_s'), floor)} | - | |",
            f"| opsbook 1 check / Custodian 1 check | {ratio(med(by.get('opsbook: 1 check', [])), med(by.get('c7n: 1 check', [])))} | "
            f"{paired(by, 'opsbook: 1 check', 'c7n: 1 check')} | < 1 |",
            f"| opsbook 3 audits / Custodian's audit policies | {ratio(med(by.get('opsbook: audits', [])), med(by.get('c7n: audits', [])))} | "
            f"{paired(by, 'opsbook: audits', 'c7n: audits')} | < 1 |",
            "", "Custodian's policies and the opsbook check each stands for:", "",
            "| policy | resource | opsbook check | matched (last run) |", "|---|---|---|---:|"]
    last_c7n = next((r for r in reversed(by.get("c7n: audits", [])) if "by_policy" in r), {})
    for p in policies["audits"]:
        out.append(f"| {p['name']} | {p['resource']} | {p['opsbook']} | {last_c7n.get('by_policy', {}).get(p['name'], '-')} |")
    last_ops = next((r for r in reversed(by.get("opsbook: audits", [])) if "by_check" in r), {})
    if last_ops:
        out += ["", "opsbook's three audits, findings not OK by check (last run): "
                + ", ".join(f"{c} {n}" for c, n in last_ops["by_check"].items())]
    return "\n".join(out) + "\n"


# --- main ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", default="hr-resource-optimization")
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--latency-ms", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--served", type=int, default=3, help="deployment runs of the serving process (0: none)")
    ap.add_argument("--out", default=str(RESULTS / "versus.md"))
    ap.add_argument("--code", help="run opsbook from this checkout instead (a `git worktree` of an older commit: the 'before' "
                                   "figures); its maintenance-audit without checks=... runs whole for the one-check row")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from opsbook.inventory import load_system

    system = load_system(args.system)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    home = Path(tempfile.mkdtemp(prefix="opsbook-versus-"))
    c7n_py = custodian_python()
    policies = custodian_policies(system, date.today())
    single_yml = write_policies(policies["single"], home / "single.yml")
    audits_yml = write_policies(policies["audits"], home / "audits.yml")
    port = free_port()
    sb = SandboxProc(args.system, args.scale, args.latency_ms, str(home))
    rows: list[dict[str, Any]] = []
    loads: list[float] = []
    env: dict[str, str] = {}
    try:
        exports = sb.start()
        log(f"sandbox up ({sb.seed_s:.0f} s): {exports.get('AWS_ENDPOINT_URL')}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPSBOOK_", "AWS_"))}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as an operator's shell: compiled modules are kept
        env.update(exports, OPSBOOK_HOME=str(home), OPSBOOK_PREFECT_PORT=str(port))
        run = [OPSBOOK, "run"]
        sysarg = ["--system", args.system, "--json"]
        one_check = ["--param", "checks=logs-retention"]
        if args.code:
            code = Path(args.code).resolve()
            env["PYTHONPATH"] = str(code)  # before the editable install's finder: that checkout's opsbook runs
            run = [sys.executable, "-m", "opsbook.cli", "run"]
            if "checks:" not in (code / "flows" / "maintenance_audit" / "flow.py").read_text():
                one_check = []
                log(f"{code}: maintenance-audit has no checks=...: the one-check row runs the whole audit")
        c7n = [c7n_py, str(BENCH / "c7n_run.py")]
        counts = home / "c7n-calls.json"
        tools = [
            ("floor", [sys.executable, str(BENCH / "floor.py"), "--system", args.system], floor_answer),
            ("daily-health (warm)", run + ["daily-health"] + sysarg, opsbook_answer),
            ("c7n: 1 check", c7n + [str(counts), "run", "--cache-period", "0", "-s", str(home / "c7n-single"), "--region", system.region,
                                   str(single_yml)], custodian_answer(counts, home / "c7n-single", policies["single"])),
            ("opsbook: 1 check", run + ["maintenance-audit"] + sysarg + one_check, opsbook_answer),
            ("c7n: audits", c7n + [str(counts), "run", "--cache-period", "0", "-s", str(home / "c7n-audits"), "--region", system.region,
                                  str(audits_yml)], custodian_answer(counts, home / "c7n-audits", policies["audits"])),
            ("opsbook: audits", run + ["daily-health", "maintenance-audit", "backup-verify"] + sysarg, opsbook_answer),
        ]
        log("cold: the first opsbook run, which starts the local Prefect server")
        rows.append(measure("daily-health (cold)", run + ["daily-health"] + sysarg, env, opsbook_answer))
        log(f"  {rows[-1]['wall_s']} s")
        for name, cmd, parse in tools:  # one untimed run each: bytecode written, the OS's caches warm, as on a used machine
            measure(name, cmd, env, parse)
        for i in range(args.repeat):
            for name, cmd, parse in tools:
                rows.append({**measure(name, cmd, env, parse), "round": i})
                loads.append(os.getloadavg()[0])
            log(f"round {i + 1}/{args.repeat}: " + ", ".join(f"{r['tool']} {r['wall_s']:.2f}" for r in rows[-len(tools):]))
        if args.served:
            rows += served_runs(port, args.system, env, args.served, home)
    finally:
        sb.stop()
        if env:
            subprocess.run([OPSBOOK, "server", "stop"], env=env, capture_output=True, timeout=60)
    md = report(rows, policies, args, started, loads or [os.getloadavg()[0]])
    Path(args.out).write_text(md, encoding="utf-8")
    Path(args.out).with_suffix(".json").write_text(json.dumps({"started": started, "args": vars(args), "machine": machine(),
                                                               "policies": policies, "rows": rows}, indent=1, default=str))
    print(md)
    return 0 if not any("error" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
