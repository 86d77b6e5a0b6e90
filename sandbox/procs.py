"""Processes the sandbox, the tests and the benchmarks start die with the process that started them, even when that
process is killed (SIGKILL of `make test`, of an xdist worker, of a benchmark): no Prefect server, PostgreSQL or worker
is left running.

- ``die_with_parent``: a ``preexec_fn`` for a direct child: Linux sends it SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``). The "parent" is the thread that forked it: start such children from a thread that
  lives as long as the process (the main thread); a child whose parent already died before the prctl exits at once.
- ``guard(pid, group=..., remove=...)``: for what a direct child's death does not reach: daemons that fork themselves
  (PostgreSQL's ``pg_ctl start``), grandchildren in their own session (the server ``opsbook server start`` leaves
  behind), children started by a library (Prefect's test server). One watchdog process per process that uses it,
  started on first use in its own session (a Ctrl-C to the terminal's process group does not stop it), waits for EOF
  on a pipe only this process holds the writing end of; at EOF (this process exited, however) it kills what is still
  registered (the process group, or the process) and removes the registered directories. ``release`` unregisters
  what was stopped normally. A process is recognised by its pid AND its start time, so a reused pid is never killed.
- ``guard_env(name, value)``: the same watchdog kills every process whose environment holds ``name=value`` (with its
  group when it leads one): for a server started in a session of its own by a child, before anything says its pid
  (`opsbook server start` writes its pid file only once the server is healthy). The value must be this process's own
  (a temp dir it made), so nothing else matches.

Linux only (prctl, /proc); elsewhere both are no-ops.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: SIGKILL this child when the thread that forked it exits (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died between fork and prctl
        os._exit(1)


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


# The watchdog: reads commands from stdin until EOF, then kills and removes what is still registered.
WATCHDOG = r"""
import json, os, shutil, signal, sys
procs, marks, dirs = {}, {}, {}
for line in sys.stdin:
    cmd = json.loads(line)
    table = {"dir": dirs, "env": marks}.get(cmd["kind"], procs)
    key = (cmd["kind"], cmd["what"])
    if cmd["op"] == "add":
        table[key] = cmd.get("started")
    else:
        table.pop(key, None)
def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
def kill(kind, pid):
    try:
        (os.killpg if kind == "group" else os.kill)(pid, signal.SIGKILL)
    except OSError:
        pass
for (kind, pid), started in procs.items():
    st = stat(pid)
    if st and st[19] == started:
        kill(kind, pid)
if marks:
    wanted = {m.encode() for (_, m) in marks}
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                with open(f"/proc/{d}/environ", "rb") as f:
                    env = set(f.read().split(b"\0"))
            except OSError:
                continue
            if env & wanted:
                st = stat(d)
                kill("group" if st and st[3] == d else "pid", int(d))  # a session/group leader: its group too
for (_, path) in dirs:
    shutil.rmtree(path, ignore_errors=True)
"""

_lock = threading.Lock()
_watchdog: subprocess.Popen[str] | None = None
_owner = 0


def _send(op: str, kind: str, what: int | str, started: str | None = None) -> None:
    global _watchdog, _owner
    if not sys.platform.startswith("linux"):
        return
    with _lock:
        if _watchdog is None or _owner != os.getpid() or _watchdog.poll() is not None:  # (a forked child gets its own)
            _watchdog = subprocess.Popen([sys.executable, "-I", "-S", "-c", WATCHDOG], stdin=subprocess.PIPE, text=True,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            _owner = os.getpid()
        assert _watchdog.stdin is not None
        _watchdog.stdin.write(json.dumps({"op": op, "kind": kind, "what": what, "started": started}) + "\n")
        _watchdog.stdin.flush()


def guard(pid: int | None = None, group: bool = False, remove: str | os.PathLike[str] | None = None) -> None:
    """Kill ``pid`` (its process group when ``group``), and/or remove the directory ``remove``, when this process dies."""
    if pid:
        started = start_time(pid)
        if started is not None:
            _send("add", "group" if group else "pid", pid, started)
    if remove:
        _send("add", "dir", os.fspath(remove))


def guard_env(name: str, value: str) -> None:
    """Kill every process whose environment has ``name=value`` when this process dies: for what is started in a
    session of its own by a child that may itself be killed first (the server `opsbook server start` leaves running,
    before its pid file exists). ``value`` must be unique to what this process started (a temp dir of its own)."""
    _send("add", "env", f"{name}={value}")


def release(pid: int | None = None, group: bool = False, remove: str | os.PathLike[str] | None = None) -> None:
    """Forget what ``guard`` registered (it was stopped and removed normally)."""
    if pid:
        _send("del", "group" if group else "pid", pid)
    if remove:
        _send("del", "dir", os.fspath(remove))
