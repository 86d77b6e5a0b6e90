"""Benchmark: the seed's emergency_rollback.sh (seeds/001) vs `opsbook run
emergency-rollback`, on a bad ECS deploy of t-developer in the sandbox.

  cd /work/main && .venv/bin/python -m bench.run --rollback --repeat 3 --latency-ms 30

(`bench.run --rollback` calls main() below.) Every timed run gets a fresh
sandbox, `opsbook sandbox --systems t-developer --fault t-developer:bad-deploy
--latency-ms 30` (the service on revision 3, a deployment IN_PROGRESS, the
previous deployment on revision 2 still ACTIVE), so both tools start from the
same state. Measured from outside:

  - time to the rollback call: a harness thread polls DescribeServices every
    20 ms from before the command starts; the call was issued between the last
    poll that saw the old task definition and the first that saw the new one
    (poll send times; both go through the same 30 ms latency), midpoint reported;
  - the seed script's own BENCH_MARK right before `aws ecs update-service`
    (cross-check: the poll time minus the marker is the aws CLI's start-up);
  - time to the notification: an SQS queue subscribed to the alerts topic
    before the run; the message's SentTimestamp is when the sandbox got the
    SNS Publish;
  - total wall clock of the process; API calls as the tool counts them and as
    the sandbox saw them (moto's request recorder, the harness's own calls
    filtered out by user agent).

Writes bench/results/rollback.md and rollback.json; latest.md links to it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from bench.harness import (
    BENCH,
    CODE_DIRS,
    HARNESS_UA,
    OPSBOOK,
    RESULTS,
    ROOT,
    T_SERVER_STOP,
    SandboxProc,
    aws_cli,
    breakdown,
    code_version,
    free_port,
    last_json,
    log,
    machine,
    recorder,
    snapshot_code,
)

SYSTEM = "t-developer"
REGION = "us-east-1"
CLUSTER = "t-developer-cluster-production"  # the seed script hard-codes these three
SERVICE = "t-developer-service-production"
TOPIC = "arn:aws:sns:us-east-1:123456789012:t-developer-alerts-production"
FAULT = f"{SYSTEM}:bad-deploy"
SEED_SCRIPT = BENCH / "emergency_rollback.sh"
POLL_S = 0.02
T_RUN = 180
T_SERVER_START = 120


def opsbook_cmd(settle_s: int) -> list[str]:
    return [OPSBOOK, "run", "emergency-rollback", "--system", SYSTEM, "--execute", "--yes", "--param", f"settle_timeout_s={settle_s}", "--json"]


def rev(td: str | None) -> str:
    return td.rsplit("/", 1)[-1] if td else "-"


# --- the harness's own AWS clients (user agent filtered out of the recording) -------------


def clients(endpoint: str) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    cfg = Config(user_agent_extra=HARNESS_UA, retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=16,
                 connect_timeout=5, read_timeout=10)
    kw = dict(region_name=REGION, endpoint_url=endpoint, aws_access_key_id="sandbox", aws_secret_access_key="sandbox",
              aws_session_token="sandbox", config=cfg)
    return {s: boto3.client(s, **kw) for s in ("ecs", "sqs", "sns", "dynamodb")}


def service_state(ecs: Any) -> dict[str, Any]:
    svc = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
    return {"task_definition": svc["taskDefinition"],
            "deployments": [(d.get("status"), d.get("taskDefinition"), d.get("rolloutState")) for d in svc.get("deployments", [])]}


class TdPoller:
    """DescribeServices every POLL_S s (each call in a pool thread, so the cadence does not wait for
    the 30 ms latency); stops polling once it has seen the task definition change."""

    def __init__(self, ecs: Any, initial: str) -> None:
        self.ecs, self.initial = ecs, initial
        self.samples: list[tuple[float, str | None]] = []  # (send time, task definition seen)
        self.changed = threading.Event()
        self.stop_ev = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="td-poll")
        self.thread = threading.Thread(target=self._loop, daemon=True, name="td-poller")
        self.lock = threading.Lock()

    def _poll(self) -> None:
        t = time.time()
        try:
            td = self.ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]["taskDefinition"]
        except Exception:
            td = None
        with self.lock:
            self.samples.append((t, td))
        if td is not None and td != self.initial:
            self.changed.set()

    def _loop(self) -> None:
        nxt = time.monotonic()
        while not self.stop_ev.is_set() and not self.changed.is_set():
            self.pool.submit(self._poll)
            nxt += POLL_S
            time.sleep(max(0.0, nxt - time.monotonic()))

    def start(self) -> TdPoller:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.samples and time.monotonic() < deadline:  # one answer before the command starts
            time.sleep(0.005)
        if not any(td == self.initial for _, td in self.samples):
            raise RuntimeError(f"poller: no DescribeServices answer with the initial task definition: {self.samples[:3]}")
        return self

    def stop(self) -> None:
        self.stop_ev.set()
        self.thread.join(timeout=5)
        self.pool.shutdown(wait=True)

    def change(self) -> dict[str, Any] | None:
        with self.lock:
            s = sorted((t, td) for t, td in self.samples if td is not None)
        first = next(((t, td) for t, td in s if td != self.initial), None)
        if first is None:
            return None
        before = [t for t, td in s if td == self.initial and t < first[0]]
        lo = before[-1] if before else first[0]
        return {"lo": lo, "hi": first[0], "at": (lo + first[0]) / 2, "to": first[1], "polls": len(s)}


# --- what the sandbox saw (moto's request recorder) ------------------------------------------


def recorded_calls(path: Path) -> dict[str, int]:
    """Operation counts of the recorded requests, without the harness's (user agent)."""
    out: dict[str, int] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        e = json.loads(line)
        h = {k.lower(): v for k, v in e.get("headers", {}).items()}
        if HARNESS_UA in h.get("user-agent", ""):
            continue
        m = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/", h.get("authorization", ""))
        svc = m.group(1) if m else "?"
        op = None
        if h.get("x-amz-target"):
            op = h["x-amz-target"].rsplit(".", 1)[-1]
        elif "/operation/" in e.get("url", ""):
            op = e["url"].rsplit("/operation/", 1)[-1].split("?")[0]
        else:
            body = e.get("body") or ""
            try:
                raw = base64.b64decode(body) if e.get("body_encoded") else body.encode()
                op = parse_qs(raw.decode("utf-8", "replace")).get("Action", [None])[0]
            except Exception:
                op = None
        if not op:
            op = f"{e.get('method')} {e.get('url', '').split('://', 1)[-1].split('/', 1)[-1][:40]}"
        key = f"{svc}:{op}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


# --- one timed run ---------------------------------------------------------------------------


def prepare(c: dict[str, Any], state_table: str | None) -> tuple[dict[str, Any], str]:
    """Check the bad-deploy state, subscribe a queue to the alerts topic (to time the notification),
    optionally create opsbook's state table (the 'opsbook has acted here before' variant)."""
    st = service_state(c["ecs"])
    if not (st["task_definition"].endswith(":3") and [d[:2] for d in st["deployments"]] ==
            [("PRIMARY", st["task_definition"]), ("ACTIVE", st["task_definition"][:-1] + "2")]):
        raise RuntimeError(f"the sandbox is not in the bad-deploy state: {st}")
    q = c["sqs"].create_queue(QueueName="bench-rollback-notifications")["QueueUrl"]
    arn = c["sqs"].get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    c["sns"].subscribe(TopicArn=TOPIC, Protocol="sqs", Endpoint=arn)
    if state_table:  # the schema opsbook's statestore.ensure_table creates
        c["dynamodb"].create_table(
            TableName=state_table, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
            Tags=[{"Key": "opsbook:purpose", "Value": "leases-and-records"}])
    return st, q


def notifications(c: dict[str, Any], q: str) -> list[tuple[float, str]]:
    msgs = c["sqs"].receive_message(QueueUrl=q, MaxNumberOfMessages=10, AttributeNames=["SentTimestamp"], WaitTimeSeconds=0).get("Messages", [])
    out = []
    for m in msgs:
        try:
            text = json.loads(m["Body"]).get("Message", m["Body"])
        except ValueError:
            text = m["Body"]
        out.append((int(m["Attributes"]["SentTimestamp"]) / 1000.0, text))
    return sorted(out)


def run_once(tool: str, cmd: list[str], env: dict[str, str], latency_ms: float, home: str, state_table: str | None,
             cwd: Path = ROOT) -> dict[str, Any]:
    rec = Path(home) / "moto-recording.jsonl"
    sandbox_env = {"MOTO_RECORDER_FILEPATH": str(rec), **({"PYTHONPATH": env["PYTHONPATH"]} if env.get("PYTHONPATH") else {})}
    sandbox = SandboxProc(SYSTEM, 1, latency_ms, home, faults=[FAULT], env=sandbox_env, cwd=cwd)
    poller: TdPoller | None = None
    proc: subprocess.Popen | None = None
    try:
        exports = sandbox.start()
        endpoint = exports["AWS_ENDPOINT_URL"]
        c = clients(endpoint)
        initial, q = prepare(c, state_table)
        recorder(endpoint, "reset-recording")
        recorder(endpoint, "start-recording")
        poller = TdPoller(c["ecs"], initial["task_definition"]).start()
        out, err = Path(home) / f"{tool}.out", Path(home) / f"{tool}.err"
        stamped: list[tuple[float, bytes]] = []  # stdout lines with the time they arrived

        def reader(pipe: Any) -> None:
            with open(out, "wb") as fo:
                for line in pipe:
                    stamped.append((time.time(), line))
                    fo.write(line)

        with open(err, "wb") as fe:
            t0 = time.time()
            proc = subprocess.Popen(cmd, env={**env, **exports}, stdout=subprocess.PIPE, stderr=fe, stdin=subprocess.DEVNULL, cwd=cwd,
                                    start_new_session=True)
            rd = threading.Thread(target=reader, args=(proc.stdout,), daemon=True, name="stdout")
            rd.start()
            try:
                rc = proc.wait(timeout=T_RUN)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{tool} did not finish within {T_RUN} s: {' '.join(cmd)}") from None
            t_end = time.time()
            rd.join(timeout=10)
        poller.stop()
        recorder(endpoint, "stop-recording")
        change = poller.change()
        final = service_state(c["ecs"])
        notes = notifications(c, q)
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        r: dict[str, Any] = {
            "tool": tool, "exit_code": rc, "t0": t0, "wall_s": t_end - t0, "sandbox_start_s": sandbox.seed_s,
            "from": initial["task_definition"], "to": final["task_definition"], "deployments_after": final["deployments"],
            "call_s": change["at"] - t0 if change else None,
            "call_bracket_s": [change["lo"] - t0, change["hi"] - t0] if change else None,
            "polls": change["polls"] if change else len(poller.samples),
            "notify_s": notes[0][0] - t0 if notes else None, "notifications": [n[1] for n in notes],
            "recorded": recorded_calls(rec), "stderr_tail": stderr.strip()[-800:],
            "report_s": next((t - t0 for t, line in stamped if line.startswith(b"{")), None),  # opsbook's JSON line
        }
        r["recorded_total"] = sum(r["recorded"].values())
        if tool == "seed":
            marks = {m.group(1): float(m.group(2)) - t0 for m in re.finditer(r"^BENCH_MARK (\S+) ([\d.]+)$", stderr, re.M)}
            inv = re.search(r"^aws invocations: (\d+)", stdout, re.M)
            target = re.search(r"^Rolling back from (\S+) to (\S+)$", stdout, re.M)
            r.update(marks={k: round(v, 3) for k, v in marks.items()}, marker_s=marks.get("update-service"),
                     api_calls=int(inv.group(1)) if inv else None, planned_target=target.group(2) if target else None)
            if rc not in (0, 124) or "update-service" not in marks:
                raise RuntimeError(f"seed script exited {rc}; stdout: {stdout[-600:]}; stderr: {stderr[-600:]}")
        else:
            d = last_json(stdout)
            if "error" in d:
                raise RuntimeError(f"opsbook could not finish: {d['error']}; stderr: {stderr[-1500:]}")
            r.update(api_calls=d["api_calls"], by_operation=d["api_calls_by_operation"], status=d["status"], outcome=d.get("outcome"),
                     duration_s=d.get("duration_s"), timing=d.get("timing"), flow_run_id=d.get("flow_run_id"),
                     planned_target=(d.get("plan") or {}).get("actions", [{}])[0].get("target") if (d.get("plan") or {}).get("actions") else None,
                     evidence=[a.get("evidence") for a in (d.get("plan") or {}).get("actions", [])],
                     records=[{k: x.get(k) for k in ("status", "before", "after", "detail")} for x in d.get("records", [])],
                     not_ok=[f"{f['status']} {f['check']} {f['resource']}: {f['summary']}" for f in d.get("findings", []) if f["status"] != "OK"])
        return r
    finally:
        if poller is not None:
            poller.stop()
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=20)
        sandbox.stop()


# --- Prefect: where the opsbook run's time went ------------------------------------------------


# --- summary and report ------------------------------------------------------------------------


def med(runs: list[dict[str, Any]], key: str) -> tuple[float, float, float] | None:
    v = [r[key] for r in runs if r.get(key) is not None]
    return (statistics.median(v), min(v), max(v)) if v else None


def fmt(x: tuple[float, float, float] | None, nd: int = 2) -> str:
    return f"{x[0]:.{nd}f} ({x[1]:.{nd}f}-{x[2]:.{nd}f})" if x else "-"


LABELS = {
    "seed": "seed `emergency_rollback.sh` (aws CLI)",
    "opsbook": "`opsbook run emergency-rollback` (warm)",
    "opsbook_table": "opsbook, its state table already exists",
}


def table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = ["| tool | time to rollback call s | seed's marker s | time to notification s | total wall s | API calls (own count) | API calls (sandbox saw) | rolled back | runs |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for key, rs in runs.items():
        if not rs:
            continue
        own = statistics.median([r["api_calls"] for r in rs if r.get("api_calls") is not None])
        seen = statistics.median([r["recorded_total"] for r in rs])
        tos = sorted({f"{rev(r['from'])} -> :{rev(r['to']).rsplit(':', 1)[-1]}" for r in rs})
        how = "current - 1" if key == "seed" else "previous deployment"
        rows.append(f"| {LABELS[key]} | {fmt(med(rs, 'call_s'))} | {fmt(med(rs, 'marker_s'))} | {fmt(med(rs, 'notify_s'))} | "
                    f"{fmt(med(rs, 'wall_s'))} | {own:g} | {seen:g} | {', '.join(tos)} ({how}) | {len(rs)} |")
    return rows


def write_markdown(path: Path, runs: dict[str, list[dict[str, Any]]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [
        "# opsbook benchmark: emergency-rollback, t-developer bad ECS deploy",
        "",
        f"- date: {meta['date']}",
        f"- machine: {m['nproc']} CPUs (nproc), Python {m['python']}, {m['platform']}",
        f"- versions: {m['versions']}; {meta.get('awscli')}",
        f"- command: `{meta['command']}`",
        f"- each run: a fresh `opsbook sandbox --systems {SYSTEM} --fault {FAULT} --latency-ms {meta['latency_ms']:g}` "
        f"(service on revision 3, deployment IN_PROGRESS, revision 2 still ACTIVE); the seed's waiter bounded at "
        f"{meta['wait_timeout_s']} s; opsbook with `--execute --yes --param settle_timeout_s={meta['settle_s']}`, "
        "warm (local Prefect server started once, one untimed run first)",
        "",
        "Medians (min-max) in seconds from the start of the command. Time to rollback call: when the UpdateService "
        "request was sent, from a harness poll of DescribeServices every 20 ms (midpoint between the last poll that "
        "saw the old task definition and the first that saw the new one). Seed's marker: `date` right before "
        "`aws ecs update-service` starts. Time to notification: when the sandbox received the SNS Publish (a queue "
        "subscribed to the topic). Total wall: the whole process (seed: including the bounded waiter; opsbook: "
        "including the settle wait, health checks, record, notify). API calls: the tool's own count (seed: `aws` "
        "invocations; opsbook: `api_calls`) and what the sandbox recorded (moto's request recorder, harness calls "
        "excluded).",
        "",
        *table(runs),
        "",
    ]
    for key, rs in runs.items():
        if not rs:
            continue
        last = rs[-1]
        lines.append(f"{LABELS[key]}:")
        lines.append("- sandbox saw: " + ", ".join(f"{k} {v}" for k, v in last["recorded"].items()))
        if last.get("by_operation"):
            lines.append("- opsbook counted: " + ", ".join(f"{k} {v}" for k, v in last["by_operation"].items()))
        if key == "seed":
            lines.append("- marks (s): " + "; ".join(", ".join(f"{k} {v:.2f}" for k, v in r["marks"].items()) for r in rs))
            lines.append("- poll time - marker (aws CLI start-up and the call): "
                         + ", ".join(f"{r['call_s'] - r['marker_s']:.2f}" for r in rs if r.get("call_s") is not None) + " s")
            lines.append(f"- exit codes: {[r['exit_code'] for r in rs]} (124 = the bounded waiter was stopped)")
        else:
            lines.append(f"- outcome/status/exit: {sorted({(r.get('outcome'), r.get('status'), r['exit_code']) for r in rs})}; "
                         f"opsbook duration_s (flow start to report) {fmt(med(rs, 'duration_s'))}")
            lines.append(f"- target evidence: {last.get('evidence')}")
            lines.append("- findings not OK (last run): " + "; ".join(last.get("not_ok", [])))
            pre = [r["breakdown"]["flow_start_s"] for r in rs if r.get("breakdown")]
            inflow = [r["call_s"] - r["breakdown"]["flow_start_s"] for r in rs if r.get("breakdown") and r.get("call_s") is not None]
            after = [r["wall_s"] - r["breakdown"]["flow_end_s"] for r in rs if r.get("breakdown")]
            if pre:
                lines.append(f"- command start -> flow run start (interpreter, imports, Prefect client, flow run created): median "
                             f"{statistics.median(pre):.2f} s; flow run start -> UpdateService: {statistics.median(inflow):.2f} s; "
                             f"flow run end -> process exit: {statistics.median(after):.2f} s")
            tail = [r["wall_s"] - r["report_s"] for r in rs if r.get("report_s") is not None]
            if tail:
                lines.append(f"- JSON report printed at {fmt(med(rs, 'report_s'))} s; the process exits {statistics.median(tail):.2f} s "
                             "later (median)")
            b = last.get("breakdown")
            if b:
                lines.append(f"- last run, from the Prefect API (s after the command started): flow run {b['flow_start_s']:.2f}-{b['flow_end_s']:.2f}; "
                             + ", ".join(f"{t['task']} @{t['start_s']:.2f} +{t['took_s']:.2f}" for t in b["tasks"]))
        brackets = [r["call_bracket_s"][1] - r["call_bracket_s"][0] for r in rs if r.get("call_bracket_s")]
        if brackets:
            lines.append(f"- poll bracket around the call: max {max(brackets) * 1000:.0f} ms")
        lines.append("")
    loads = [x for rs in runs.values() for r in rs for x in r.get("loadavg_1m", [])]
    if loads:
        lines += [f"1-minute load average around the runs: {min(loads):.2f}-{max(loads):.2f} on {m['nproc']} CPUs "
                  "(the machine is shared: other benchmarks and test suites may run at the same time).", ""]
    versions = sorted({r["code_version"] for rs in runs.values() for r in rs if r.get("code_version")})
    if len(versions) > 1:
        lines += [f"**Warning: opsbook's code changed while the benchmark ran** (versions {', '.join(versions)}); rerun for a clean comparison.", ""]
    elif versions:
        where = ("the live tree" if meta.get("live_code") else
                 f"a snapshot of the live tree taken at the start (live tree {meta.get('live_code_at_start')} at the start, "
                 f"{meta.get('live_code_at_end')} at the end)")
        lines += [f"opsbook code version (sha256 of {', '.join(d + '/' for d in CODE_DIRS)}): {versions[0]}, {where}; "
                  "every run used it.", ""]
    lines += ["Daily-health results: [latest.md](latest.md).", ""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def link_from_latest(latest: Path) -> None:
    """latest.md is rewritten by the daily-health benchmark (which adds this link itself); add it now if missing."""
    if latest.exists() and "rollback.md" not in latest.read_text():
        with open(latest, "a") as f:
            f.write("\nRollback benchmark (emergency-rollback vs the seed's emergency_rollback.sh): [rollback.md](rollback.md).\n")


# --- main ---------------------------------------------------------------------------------------


def main(repeat: int, latency_ms: float, settle_s: int = 5, wait_timeout_s: int = 20, table_variant: bool = True,
         out: Path = RESULTS / "rollback.md", live_code: bool = False) -> int:
    t_start = time.monotonic()
    command = "cd /work/main && .venv/bin/python -m bench.run " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    aws = aws_cli()
    awscli_version = subprocess.run([aws, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    from opsbook.inventory import load_system

    state_table = load_system(SYSTEM).mutations.state_table
    home = tempfile.mkdtemp(prefix="opsbook-bench-rollback-")
    port = free_port()
    base_env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "PREFECT_API_URL", "AWS_DEFAULT_PROFILE")}
    base_env.update({"OPSBOOK_HOME": home, "OPSBOOK_PREFECT_PORT": str(port), "OPSBOOK_QUOTAS": "off", "PYTHONUNBUFFERED": "1",
                     "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION})
    live_start = code_version()
    cwd = ROOT
    if not live_code:
        cwd = snapshot_code(Path(home) / "code")
        base_env["PYTHONPATH"] = os.pathsep.join([str(cwd)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
        log(f"opsbook code snapshot {code_version(cwd)} in {cwd} (the live tree keeps changing under other people's edits)")
    seed_env = {**base_env, "AWS": aws, "WAIT_TIMEOUT_S": str(wait_timeout_s)}
    meta: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "command": command,
                            "latency_ms": latency_ms, "awscli": awscli_version, "prefect_port": port, "home": home,
                            "settle_s": settle_s, "wait_timeout_s": wait_timeout_s, "live_code": live_code,
                            "code_version": code_version(cwd), "live_code_at_start": live_start}
    runs: dict[str, list[dict[str, Any]]] = {"seed": [], "opsbook": [], "opsbook_table": []}
    n_run = 0

    def one(tool: str, cmd: list[str], env: dict[str, str], table_exists: bool) -> dict[str, Any]:
        nonlocal n_run
        n_run += 1
        run_home = Path(home) / f"run-{n_run:02d}-{tool}"  # the sandbox's OPSBOOK_HOME (its env file, log, recording)
        run_home.mkdir()
        before = code_version(cwd)
        load0 = os.getloadavg()[0]
        r = run_once("seed" if tool == "seed" else "opsbook", cmd, env, latency_ms, str(run_home), state_table if table_exists else None,
                     cwd=cwd)
        after = code_version(cwd)
        r["code_version"] = before if before == after else f"{before}->{after}"
        r["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]  # other people's work shares the 2 CPUs
        return r

    server_started = False
    try:
        log(f"OPSBOOK_HOME={home}; starting the local Prefect server on port {port}")
        server_started = True
        t = time.monotonic()
        cp = subprocess.run([OPSBOOK, "server", "start"], env=base_env, capture_output=True, text=True, timeout=T_SERVER_START, cwd=cwd)
        meta["server_start_s"] = round(time.monotonic() - t, 1)
        log(f"opsbook server start ({meta['server_start_s']} s): {(cp.stdout or cp.stderr).strip()[-200:]}")
        if cp.returncode != 0:
            raise RuntimeError(f"opsbook server start exited {cp.returncode}: {cp.stderr[-800:]}")
        w = one("warmup", opsbook_cmd(settle_s), base_env, False)
        meta["warmup"] = {k: w.get(k) for k in ("wall_s", "call_s", "api_calls", "outcome")}
        log(f"opsbook warm-up (untimed): {w['wall_s']:.2f} s wall, call at {w['call_s']}, {w.get('outcome')}")
        for i in range(repeat):
            plan = [("seed", ["bash", str(SEED_SCRIPT)], seed_env, False), ("opsbook", opsbook_cmd(settle_s), base_env, False)]
            if table_variant:
                plan.append(("opsbook_table", opsbook_cmd(settle_s), base_env, True))
            for key, cmd, env, table_exists in plan:
                r = one(key, cmd, env, table_exists)
                runs[key].append(r)
                log(f"{key} {i + 1}/{repeat} [code {r['code_version']}]: call at {r['call_s'] if r['call_s'] is None else round(r['call_s'], 2)} s, "
                    f"notify at {r['notify_s'] if r['notify_s'] is None else round(r['notify_s'], 2)} s, wall {r['wall_s']:.2f} s, "
                    f"{r.get('api_calls')} calls ({r['recorded_total']} seen), {rev(r['from'])} -> {rev(r['to'])}, exit {r['exit_code']}")
        for key in ("opsbook", "opsbook_table"):
            for r in runs[key]:
                try:
                    r["breakdown"] = breakdown(port, r)
                except Exception as exc:  # diagnostics only
                    r["breakdown"] = None
                    log(f"breakdown of {r.get('flow_run_id')}: {exc}")
    finally:
        if server_started:
            try:
                cp = subprocess.run([OPSBOOK, "server", "stop"], env=base_env, capture_output=True, text=True, timeout=T_SERVER_STOP, cwd=cwd)
                log(f"opsbook server stop: {cp.stdout.strip() or cp.stderr.strip()}")
            except subprocess.TimeoutExpired:
                log("`opsbook server stop` timed out")
        if any(runs.values()):
            meta["total_s"] = round(time.monotonic() - t_start, 1)
            meta["live_code_at_end"] = code_version()
            text = write_markdown(out, runs, meta)
            out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1, default=str))
            link_from_latest(out.parent / "latest.md")
            print(text)
            log(f"wrote {out} (total {meta['total_s']} s)")
    return 0
