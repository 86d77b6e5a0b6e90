"""`opsbook run ... --json` as a user runs it: a subprocess, against the sandbox
server (moto on 127.0.0.1) and a local Prefect server started by opsbook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.faults import apply_fault

OPSBOOK = [sys.executable, "-m", "opsbook.cli"]
EXPECTED_SECONDS = 80  # this file on a busy 2-core machine: tests/conftest.py starts the costliest files first
ROOT = Path(__file__).resolve().parents[2]


def opsbook(env: dict, *args: str, sandbox=None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = dict(env)
    if sandbox is not None:
        full.update(sandbox.env())
    return subprocess.run(OPSBOOK + list(args), env=full, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def run_json(env, system, sandbox):
    out = opsbook(env, "run", "daily-health", "--system", system, "--json", sandbox=sandbox)
    lines = [l for l in out.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, f"stdout must be exactly one JSON object:\n{out.stdout}\nstderr:\n{out.stderr}"
    return json.loads(lines[0]), out


def find(result, check, resource=None):
    hits = [f for f in result["findings"] if f["check"] == check and (resource is None or f["resource"] == resource)]
    assert len(hits) == 1, hits
    return hits[0]


@pytest.mark.parametrize(
    "system,fault,params,check,resource,status,value,exit_code",
    [
        # the smallest system (a CLI process is about the CLI: HR's opensearch-red, t-developer's ecs-degraded and HR's missing
        # table are judged in-process in tests/flows/daily_health/test_flow.py)
        ("todo-app", "table-missing", {}, "dynamodb-status", "todos", "CRIT", None, 2),
        ("leh", "dlq-messages", {"count": 4}, "dlq-depth", "leh-ai-jobs-dlq", "WARN", 4, 1),
    ],
)
def test_each_seed_system_end_to_end(local_prefect, seeded, sandbox, system, fault, params, check, resource, status, value, exit_code):
    # the healthy twins: leh through the CLI in test_human_output_and_quiet_console (OK, exit 0), HR in-process in
    # tests/flows/daily_health/test_flow.py (every component OK)
    inv = seeded(system)
    apply_fault(sandbox, inv, fault, **params)
    result, out = run_json(local_prefect, system, sandbox)
    assert result["runbook"] == "daily-health" and result["system"] == system and result["api_calls"] > 0
    f = find(result, check, resource)
    assert (f["status"], f["value"]) == (status, value)
    assert result["status"] == status and out.returncode == exit_code
    assert result["flow_run_id"] and result["api_calls"] == sum(result["api_calls_by_operation"].values())
    assert result["flow_run_url"].startswith("http://127.0.0.1:") and result["flow_run_id"] in result["flow_run_url"]


def test_human_output_and_quiet_console(local_prefect, seeded, sandbox):
    seeded("leh")
    out = opsbook(local_prefect, "run", "daily-health", "--system", "leh", sandbox=sandbox)
    assert out.returncode == 0
    first = out.stdout.splitlines()[0]  # what a Nagios-style monitor reads: status, summary, perfdata
    assert first.startswith("OK - daily-health leh: every check passed | api_calls="), first
    perf = dict(kv.split("=") for kv in first.split(" | ")[1].split())
    assert set(perf) == {"api_calls", "duration_s", "crit", "warn", "unknown", "ok"} and int(perf["api_calls"]) > 0
    assert (perf["crit"], perf["warn"], perf["unknown"]) == ("0", "0", "0") and int(perf["ok"]) > 0
    assert "/runs/flow-run/" in out.stdout
    assert "AWS_ENDPOINT_URL=http://127.0.0.1:" in out.stderr  # says where the AWS calls went
    assert not any(ord(c) > 0x2000 for c in out.stdout) and "\033[" not in out.stdout  # piped: plain text, no emoji
    for noise in ("Traceback", "database is locked", "CancelledError", "Task run"):
        assert noise not in out.stdout + out.stderr


def test_a_usage_error_and_a_bad_parameter_exit_3_as_processes():
    """The process's exit code and first line, as a monitor reads them (every case in this process:
    tests/opsbook/test_cli.py)."""
    out = opsbook(dict(os.environ), "frobnicate", timeout=60)  # argparse's own refusal: 3, not argparse's 2
    assert out.returncode == 3 and out.stdout.startswith("UNKNOWN - opsbook: ") and "invalid choice" in out.stdout, out
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens: any AWS call would fail loudly
    out = opsbook(env, "run", "daily-health", "--system", "todo-app", "--param", "foo=1", "--json", timeout=60)
    lines = [l for l in out.stdout.splitlines() if l.strip()]
    assert out.returncode == 3 and len(lines) == 1, out
    result = json.loads(lines[0])
    assert result["status"] == "UNKNOWN" and result["api_calls"] == 0 and "no such parameter" in result["error"], result
    assert "Traceback" not in out.stdout + out.stderr


def test_rollback_dry_run_then_execute_yes(local_prefect, seeded, sandbox):
    """The shell's path as processes: dry run (exit 0), --execute without a terminal (needs --yes, exit 3), --execute --yes
    (the approved plan printed, done). The guess refused without accept_guess and the re-run that plans nothing are the
    same code in-process: tests/flows/emergency_rollback/test_flow.py."""
    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    dry, out = run_json_args(local_prefect, sandbox, "emergency-rollback", "todo-app")
    assert out.returncode == 0 and dry["outcome"] == "planned" and dry["plan"]["actions"][0]["target"] == "1"
    out = opsbook(local_prefect, "run", "emergency-rollback", "--system", "todo-app", "--execute", sandbox=sandbox)
    assert out.returncode == 3 and "needs --yes" in out.stdout  # no terminal here
    done, out = run_json_args(local_prefect, sandbox, "emergency-rollback", "todo-app", "--execute", "--yes",
                              "--param", "accept_guess=true", "--param", "settle_timeout_s=10")
    assert out.returncode == 0 and done["outcome"] == "done" and done["records"][0]["status"] == "verified"
    assert "todo-api:LIVE: 2 -> 1" in out.stderr  # the plan it approved is printed


def run_json_args(env, sandbox, runbook, system, *extra):
    out = opsbook(env, "run", runbook, "--system", system, "--json", *extra, sandbox=sandbox)
    lines = [l for l in out.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, out.stdout + out.stderr
    return json.loads(lines[0]), out


@pytest.mark.parametrize("answer,exit_code,version", [("yes", 0, "1"), ("no", 3, "2")])
def test_rollback_interactive_prompt(local_prefect, seeded, sandbox, answer, exit_code, version):
    import pty
    import select
    import time

    import boto3

    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    env = {**local_prefect, **sandbox.env()}
    master, slave = pty.openpty()
    proc = subprocess.Popen(OPSBOOK + ["run", "emergency-rollback", "--system", "todo-app", "--execute", "--param", "settle_timeout_s=10",
                                       "--param", "accept_guess=true"],  # the target is a guess: accepted up front
                            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True)
    os.close(slave)
    seen, answered, t0 = b"", False, time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 90:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
        if not answered and b"Type 'yes' to approve" in seen:
            os.write(master, f"{answer}\n".encode())
            answered = True
    proc.wait(30)
    os.close(master)
    assert answered, seen.decode(errors="replace")
    assert b"todo-api:LIVE: 2 -> 1" in seen
    assert proc.returncode == exit_code, seen.decode(errors="replace")
    lam = boto3.client("lambda", region_name="ap-northeast-2", endpoint_url=sandbox.endpoint)
    assert lam.get_alias(FunctionName="todo-api", Name="LIVE")["FunctionVersion"] == version


def test_sandbox_flag_seeds_a_sandbox_for_this_run_only(local_prefect):
    """--sandbox: an embedded sandbox seeded with the system (and --fault), said in the output, stopped afterwards."""
    env = {k: v for k, v in local_prefect.items() if k != "AWS_ENDPOINT_URL"}
    out = opsbook(env, "run", "daily-health", "--system", "leh", "--sandbox", "--fault", "leh:dlq-messages", "--json")
    result = json.loads(out.stdout)
    assert out.returncode == 1 and result["status"] == "WARN", out.stderr
    assert find(result, "dlq-depth", "leh-ai-jobs-dlq")["status"] == "WARN"
    assert result["timing"]["sandbox"] is True and "embedded sandbox at http://127.0.0.1:" in result["timing"]["aws"]
    # stopped afterwards: nothing answers on its port any more, so the next --sandbox run starts a new one (leh's healthy
    # twin through the CLI: test_human_output_and_quiet_console)
    import re
    import socket

    port = int(re.search(r"embedded sandbox at http://127\.0\.0\.1:(\d+)", result["timing"]["aws"]).group(1))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_silent_prefect_api_runs_the_runbook_without_it_then_replays_into_the_server(local_prefect, seeded, sandbox, tmp_path):
    """Prefect's server accepts connections and never answers: the run says so in one line, runs without orchestration
    (the same flow and tasks), keeps its records, and `opsbook replay` puts the run, its task runs and artifacts on the
    server once it answers. The healthy twin is every other test here: a server that answers is used as always."""
    import socket

    seeded("todo-app")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (the kernel completes the handshake) and never answers
    home = tmp_path / "home"
    env = {**local_prefect, "OPSBOOK_HOME": str(home), "OPSBOOK_PREFECT_TIMEOUT": "1",
           "PREFECT_API_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/api"}
    try:
        out = opsbook(env, "run", "emergency-check", "--system", "todo-app", "--json", sandbox=sandbox, timeout=60)
    finally:
        silent.close()
    result = json.loads(out.stdout)
    assert out.returncode == 0 and result["status"] == "OK" and result["api_calls"] > 0, out.stderr
    said = [line for line in out.stderr.splitlines() if "without orchestration" in line]
    assert len(said) == 1 and "did not answer within 1 s" in said[0] and "opsbook replay" in said[0], out.stderr
    timing = result["timing"]
    assert timing["offline"]["reason"].endswith("did not answer within 1 s") and result["flow_run_url"] is None
    journal = Path(timing["offline"]["journal"])
    kinds = [json.loads(line)["kind"] for line in journal.read_text().splitlines()]
    assert kinds.count("flow_run") == 1 and kinds.count("artifact") >= 1 and kinds.count("event") >= 5

    # The server answers again (the session's local server, as PREFECT_API_URL is unset): replay.
    back = {**local_prefect, "OPSBOOK_HOME": str(home)}
    listed = opsbook(back, "replay", "--list")
    assert journal.name in listed.stdout
    replayed = opsbook(back, "replay")
    assert replayed.returncode == 0 and f"replayed {journal.name}" in replayed.stdout, replayed.stderr
    assert not journal.exists() and (home / "offline" / "replayed" / journal.name).exists()
    assert opsbook(back, "replay").stderr.startswith("0 offline run(s)")  # nothing is sent twice

    import httpx

    api = f"http://127.0.0.1:{local_prefect['OPSBOOK_PREFECT_PORT']}/api"
    runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["opsbook:offline"]}}}).json()
    mine = [r for r in runs if r["parameters"].get("system") == "todo-app"]
    assert len(mine) == 1 and mine[0]["state_type"] == "COMPLETED"
    arts = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [mine[0]["id"]]}}}).json()
    assert any(a["key"] == "emergency-check-todo-app" for a in arts)


def test_several_runbooks_in_one_process_one_report_each_the_worst_status_wins(local_prefect, seeded, sandbox):
    """`opsbook run daily-health maintenance-audit --system X --json`: one object, a run each (as alone), the worst
    status and exit code; a --param goes to the runbook that has it (deadline_seconds: daily-health only)."""
    seeded("todo-app")
    out = opsbook(local_prefect, "run", "daily-health", "maintenance-audit", "--system", "todo-app", "--json",
                  "--param", "deadline_seconds=30", sandbox=sandbox)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, out.stdout + out.stderr
    result = json.loads(lines[0])
    assert [r["runbook"] for r in result["runs"]] == ["daily-health", "maintenance-audit"]
    order = ["OK", "UNKNOWN", "WARN", "CRIT"]
    assert result["status"] == max((r["status"] for r in result["runs"]), key=order.index)
    assert out.returncode == result["exit_code"] == {"OK": 0, "WARN": 1, "CRIT": 2, "UNKNOWN": 3}[result["status"]]
    assert all(r["api_calls"] > 0 and r["flow_run_id"] for r in result["runs"])
