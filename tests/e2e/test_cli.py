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
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def local_prefect(tmp_path_factory):
    """A local Prefect server started the way `opsbook run` starts it (once per session)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OPSBOOK_HOME": str(tmp_path_factory.mktemp("opsbook-home")), "OPSBOOK_PREFECT_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run(OPSBOOK + ["server", "start"], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    yield env
    subprocess.run(OPSBOOK + ["server", "stop"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


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
        ("hr-resource-optimization", "opensearch-red", {}, "opensearch-health", "hr-resource-optimization-team2", "CRIT", 2, 2),
        ("t-developer", "ecs-degraded", {"running": 1}, "ecs-service",
         "t-developer-cluster-production/t-developer-service-production", "WARN", 1, 1),
        ("todo-app", "table-missing", {}, "dynamodb-status", "todos", "CRIT", None, 2),
        ("leh", "dlq-messages", {"count": 4}, "dlq-depth", "leh-ai-jobs-dlq", "WARN", 4, 1),
    ],
)
def test_each_seed_system_end_to_end(local_prefect, seeded, sandbox, system, fault, params, check, resource, status, value, exit_code):
    inv = seeded(system)
    healthy, out = run_json(local_prefect, system, sandbox)
    assert healthy["status"] == "OK" and out.returncode == 0, [f for f in healthy["findings"] if f["status"] != "OK"]
    assert healthy["runbook"] == "daily-health" and healthy["system"] == system and healthy["api_calls"] > 0
    apply_fault(sandbox, inv, fault, **params)
    result, out = run_json(local_prefect, system, sandbox)
    f = find(result, check, resource)
    assert (f["status"], f["value"]) == (status, value)
    assert result["status"] == status and out.returncode == exit_code
    assert result["flow_run_id"] and result["api_calls"] == sum(result["api_calls_by_operation"].values())
    assert result["flow_run_url"].startswith("http://127.0.0.1:") and result["flow_run_id"] in result["flow_run_url"]


def test_human_output_and_quiet_console(local_prefect, seeded, sandbox):
    seeded("leh")
    out = opsbook(local_prefect, "run", "daily-health", "--system", "leh", sandbox=sandbox)
    assert out.returncode == 0
    assert "daily-health leh: OK" in out.stdout and "/runs/flow-run/" in out.stdout
    for noise in ("Traceback", "database is locked", "CancelledError", "Task run"):
        assert noise not in out.stdout + out.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "daily-health", "--system", "nope"], "known systems: hr-resource-optimization, leh, t-developer, todo-app"),
        (["run", "no-such-runbook", "--system", "leh"], "known runbooks: alarm-bridge, backup-verify, bill-shock-breaker"),
        (["run", "daily-health", "--system", "leh", "--yes"], "--yes only makes sense with --execute"),
        (["run", "daily-health", "--system", "leh", "--execute"], "read-only"),
        (["run", "daily-health"], "--system"),
        (["run", "daily-health", "--system", "leh", "--param", "novalue"], "KEY=VALUE"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_3_before_any_aws_call(args, message):
    out = opsbook(dict(os.environ), *args, timeout=60)
    assert out.returncode == 3, out
    assert message in out.stderr


def test_broken_inventory_fails_with_file_field_and_problem(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: broken\nregion: us-east-1\ndynamodb_tables:\n  - {name: t, backup_requird: true}\n")
    out = opsbook(dict(os.environ), "run", "daily-health", "--system", str(p), "--json", timeout=60)
    assert out.returncode == 3
    assert str(p) in out.stderr and "dynamodb_tables.0.backup_requird" in out.stderr and "unknown field" in out.stderr


def test_list_and_policy():
    out = opsbook(dict(os.environ), "list", timeout=60)
    assert out.returncode == 0 and "daily-health" in out.stdout and "todo-app" in out.stdout
    out = opsbook(dict(os.environ), "policy", "daily-health", timeout=60)
    policy = json.loads(out.stdout)
    assert "logs:FilterLogEvents" in policy["Statement"][0]["Action"]


def test_rollback_dry_run_then_execute_yes_then_once_only(local_prefect, seeded, sandbox):
    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    dry, out = run_json_args(local_prefect, sandbox, "emergency-rollback", "todo-app")
    assert out.returncode == 0 and dry["outcome"] == "planned" and dry["plan"]["actions"][0]["target"] == "1"
    out = opsbook(local_prefect, "run", "emergency-rollback", "--system", "todo-app", "--execute", sandbox=sandbox)
    assert out.returncode == 3 and "needs --yes" in out.stderr  # no terminal here
    refused, out = run_json_args(local_prefect, sandbox, "emergency-rollback", "todo-app", "--execute", "--yes")
    assert out.returncode == 3 and refused["outcome"] == "refused" and refused["records"] == []  # the target 1 is a guess
    assert "--param accept_guess=true" in refused["findings"][-1]["summary"]
    done, out = run_json_args(local_prefect, sandbox, "emergency-rollback", "todo-app", "--execute", "--yes",
                              "--param", "accept_guess=true", "--param", "settle_timeout_s=10")
    assert out.returncode == 0 and done["outcome"] == "done" and done["records"][0]["status"] == "verified"
    assert "todo-api:LIVE: 2 -> 1" in out.stderr  # the plan it approved is printed
    again, out = run_json_args(local_prefect, sandbox, "emergency-rollback", "todo-app", "--execute", "--yes")
    assert out.returncode == 0 and again["outcome"] == "nothing-to-do"


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
