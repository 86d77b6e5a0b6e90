"""What the tests start dies with the process that started it, even by SIGKILL (sandbox/procs.py): a child process
starts something the way the harness does, prints its pid, and is killed with SIGKILL; what it started must be gone.
The PostgreSQL and Prefect server cases take seconds (initdb, a server start): `make chaos`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sandbox.procs import start_time

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int, started: str | None) -> bool:
    """The same process (pid and start time) still exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and fields[19] == started


def gone_within(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def start_and_kill(code: str, timeout: float = 120) -> dict:
    """Run ``code`` in a child (it prints one JSON line, then waits), SIGKILL the child, return what it printed."""
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = child.stdout.readline()
        assert line, f"the child printed nothing (exit {child.poll()})"
        info = json.loads(line)
        info["started"] = {str(p): start_time(p) for p in info.get("pids", [])}
        assert all(info["started"].values()), info
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    return info


def assert_all_gone(info: dict, seconds: float = 15) -> None:
    still = lambda: [p for p in info["pids"] if alive(p, info["started"][str(p)])]  # noqa: E731
    assert gone_within(lambda: not still(), seconds), f"still running after the parent's SIGKILL: {still()}"
    for d in info.get("dirs", []):
        assert gone_within(lambda: not Path(d).exists(), seconds), f"{d} left behind"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's")
def test_a_direct_child_dies_with_its_parent():
    info = start_and_kill("""
import json, subprocess, sys, time
from sandbox.procs import die_with_parent
p = subprocess.Popen(["sleep", "300"], preexec_fn=die_with_parent)
print(json.dumps({"pids": [p.pid]}), flush=True)
time.sleep(300)
""")
    assert_all_gone(info)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's")
def test_a_daemon_in_its_own_session_and_its_directory_go_with_the_process_that_guarded_them():
    work = tempfile.mkdtemp(prefix="opsbook-test-guard-")
    info = start_and_kill(f"""
import json, subprocess, sys, time
from sandbox.procs import guard
# a group leader with a child of its own, as a daemon leaves behind (no PDEATHSIG: only the watchdog can reach it)
p = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, text=True, start_new_session=True)
grandchild = int(p.stdout.readline())
guard(p.pid, group=True, remove={work!r})
print(json.dumps({{"pids": [p.pid, grandchild], "dirs": [{work!r}]}}), flush=True)
time.sleep(300)
""")
    assert_all_gone(info)


def test_a_released_process_is_left_alone_by_the_watchdog():
    info = start_and_kill("""
import json, subprocess, sys, time
from sandbox.procs import guard, release
kept = subprocess.Popen(["sleep", "300"], start_new_session=True)
killed = subprocess.Popen(["sleep", "300"], start_new_session=True)
guard(kept.pid, group=True)
guard(killed.pid, group=True)
release(kept.pid, group=True)  # stopped "normally" elsewhere: not the watchdog's any more
print(json.dumps({"pids": [killed.pid], "kept": kept.pid}), flush=True)
time.sleep(300)
""")
    kept = info["kept"]
    try:
        assert_all_gone(info)
        assert alive(kept, start_time(kept))
    finally:
        os.killpg(kept, signal.SIGKILL)


@pytest.mark.chaos
def test_the_harness_postgres_dies_with_the_process_that_started_it():
    from sandbox.postgres import missing_postgres

    if missing_postgres():
        pytest.skip(missing_postgres())
    info = start_and_kill("""
import json, time
from sandbox.postgres import Postgres
pg = Postgres().start()
print(json.dumps({"pids": [pg.pid], "dirs": [str(pg.dir)]}), flush=True)
time.sleep(300)
""")
    assert_all_gone(info, seconds=30)


@pytest.mark.chaos
def test_the_harness_prefect_server_and_worker_die_with_the_process_that_started_them():
    info = start_and_kill("""
import json, time
from tests.e2e.services import PrefectServer, Worker
server = PrefectServer().start()
worker = Worker(server, "guard-pool", "guard-worker").start()
print(json.dumps({"pids": [server.proc.pid, worker.proc.pid], "dirs": [str(server.home), str(worker.dir)]}), flush=True)
time.sleep(300)
""", timeout=180)
    assert_all_gone(info, seconds=30)


@pytest.mark.chaos
def test_a_local_server_still_starting_dies_with_the_process_that_asked_for_it():
    """local_prefect's and the browser stack's case: `opsbook server start` starts the server in a session of its own and
    writes its pid file only once it is healthy; the parent is killed before that. guard_env finds it by its OPSBOOK_HOME."""
    info = start_and_kill("""
import json, os, subprocess, sys, tempfile, time
from sandbox.procs import die_with_parent, guard_env
from sandbox.postgres import free_port
home = tempfile.mkdtemp(prefix="opsbook-test-guard-home-")
env = {**os.environ, "OPSBOOK_HOME": home, "OPSBOOK_PREFECT_PORT": str(free_port())}
env.pop("PREFECT_API_URL", None)
guard_env("OPSBOOK_HOME", home)
cli = subprocess.Popen([sys.executable, "-m", "opsbook.cli", "server", "start"], env=env, preexec_fn=die_with_parent,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def server():
    for d in os.listdir("/proc"):
        try:
            if b"prefect" in open(f"/proc/{d}/cmdline", "rb").read() and f"OPSBOOK_HOME={home}".encode() in open(f"/proc/{d}/environ", "rb").read().split(b"\\0") and int(d) != cli.pid:
                return int(d)
        except (OSError, ValueError):
            pass
end = time.monotonic() + 60
while not server() and time.monotonic() < end:
    time.sleep(0.05)
print(json.dumps({"pids": [cli.pid, server()], "home": home}), flush=True)
time.sleep(300)
""")
    try:
        assert_all_gone(info, seconds=30)
    finally:
        import shutil

        shutil.rmtree(info["home"], ignore_errors=True)
