"""The bad night, as processes (`make chaos`): a Prefect API that accepts and never answers, AWS endpoints that
accept and never answer. Each prints its figures (pytest's "figures" section). The bad-input battery is
tests/opsbook/test_bad_input.py, throttling tests/flows/daily_health, the kill battery tests/opsbook/mutation.

Wall-clock bounds here are generous (the machine is shared) and only in this battery, never in `make test`."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.e2e.test_cli import opsbook

pytestmark = pytest.mark.chaos


@pytest.fixture
def silent():
    """Addresses that accept connections (the kernel completes the handshake) and never answer."""
    socks = []

    def make() -> str:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        socks.append(s)
        return f"http://127.0.0.1:{s.getsockname()[1]}"

    yield make
    for s in socks:
        s.close()


def timed(env, *args, sandbox=None):
    t0 = time.monotonic()
    out = opsbook(env, *args, sandbox=sandbox, timeout=300)
    return out, time.monotonic() - t0


def test_silent_prefect_api_battery(local_prefect, seeded, sandbox, silent, tmp_path, figure):
    for name in ("todo-app", "leh"):
        seeded(name)
    took, ok = [], 0
    runs = [("emergency-check", "todo-app"), ("daily-health", "todo-app"), ("emergency-check", "leh"), ("daily-health", "leh")]
    for runbook, system in runs:
        env = {**local_prefect, "OPSBOOK_HOME": str(tmp_path / "home"), "PREFECT_API_URL": f"{silent()}/api"}
        out, s = timed(env, "run", runbook, "--system", system, "--json", sandbox=sandbox)
        result = json.loads(out.stdout)
        ok += result["status"] == "OK" and "without orchestration" in out.stderr and bool(result["timing"].get("offline"))
        took.append(s)
    back = opsbook({**local_prefect, "OPSBOOK_HOME": str(tmp_path / "home")}, "replay")
    replayed = back.stdout.count("replayed ")
    assert back.returncode == 0, back.stdout + back.stderr
    figure(f"silent-API battery: {ok}/{len(runs)} runs answered without the Prefect server, whole process "
           f"{min(took):.1f}-{max(took):.1f} s (3 s of it waiting for the server); {replayed}/{len(runs)} replayed")
    assert ok == len(runs) and replayed == len(runs), back.stderr


@pytest.mark.parametrize("runbook,deadline", [("emergency-check", 10), ("daily-health", 20)])
def test_hung_aws_endpoint_battery(local_prefect, silent, tmp_path, runbook, deadline, figure):
    """Every AWS endpoint accepts and never answers (the users' endpoint is not probed: loopback only): the run ends near its deadline,
    everything UNKNOWN with the reason; emergency-check escalates as for P1, never P3."""
    env = {**local_prefect, "OPSBOOK_HOME": str(tmp_path / "home"), "AWS_ENDPOINT_URL": silent(), "OPSBOOK_LOOPBACK_ONLY": "1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    out, took = timed(env, "run", runbook, "--system", "todo-app", "--json", "--offline", "--param", f"deadline_seconds={deadline}")
    result = json.loads(out.stdout)
    unknown = [f for f in result["findings"] if f["status"] == "UNKNOWN"]
    figure(f"hung-endpoint battery: {runbook} (deadline {deadline} s) ended in {took:.1f} s whole process, "
           f"{len(unknown)}/{len(result['findings'])} findings UNKNOWN, status {result['status']}")
    assert result["status"] == "UNKNOWN" and out.returncode == 3 and len(unknown) == len(result["findings"])
    assert took < deadline + 15, took  # before: 65 s (emergency-check, 10 s) and 125 s (daily-health, 60 s)
    if runbook == "emergency-check":
        v = next(f for f in result["findings"] if f["check"] == "incident-priority")
        assert v["details"]["priority"] == "UNKNOWN" and v["details"]["escalation"]["level"] == "P1"
