"""Real services for end-to-end tests: PostgreSQL (Debian's package; sandbox/postgres.py, which the sandbox's
case store shares), a Prefect server on it, and Prefect process workers, each in its own temp dir, on
127.0.0.1 only, stopped and removed by ``stop()`` (use them in try/finally or as
context managers).

PostgreSQL's tools refuse to run as root: as root they run as the ``postgres``
user (``runuser -u postgres --``) in a temp dir that user owns; as anyone else
they run as that user.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sandbox.postgres import (  # noqa: F401 (their home moved)
    INSTALL_HINT,
    Postgres,
    free_port,
    missing_postgres,
    postgres_bindir,
)
from sandbox.postgres import tail as _tail
from sandbox.procs import die_with_parent, guard, release

PREFECT = [sys.executable, "-m", "prefect"]


def _stop_group(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """Stop a process we started (and its children: it leads its own session)."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class PrefectServer:
    """``prefect server start`` on 127.0.0.1:<free port> with its own PREFECT_HOME and database."""

    def __init__(self, database_url: str | None = None, ui: bool = False, env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.ui = ui
        self.extra_env = env or {}
        self.port = 0
        self.home: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def client_env(self) -> dict[str, str]:
        """What a client process (worker, flow, CLI) needs to talk to this server."""
        return {"PREFECT_API_URL": self.api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

    def start(self, timeout: float = 120.0) -> PrefectServer:
        self.home = Path(tempfile.mkdtemp(prefix="opsbook-prefect-home-"))
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({
            "PREFECT_HOME": str(self.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true" if self.ui else "false",
            "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_UI_API_URL": self.api_url, "PREFECT_LOGGING_LEVEL": "WARNING",
        })
        if self.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        env.update(self.extra_env)
        log = open(self.home / "server.log", "wb")
        self.proc = subprocess.Popen(PREFECT + ["server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                                     env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.home),
                                     preexec_fn=die_with_parent)
        log.close()
        guard(self.proc.pid, group=True, remove=self.home)  # and whatever it started, when this process is killed
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited ({self.proc.returncode}):\n{_tail(self.home / 'server.log')}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s:\n{_tail(self.home / 'server.log')}")

    def stop(self) -> None:
        try:
            _stop_group(self.proc)
        finally:
            if self.proc is not None:
                release(self.proc.pid, group=True, remove=self.home)
            self.proc = None
            if self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)
                self.home = None

    def log(self) -> str:
        return _tail(self.home / "server.log") if self.home else ""

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Worker:
    """``prefect worker start --pool P --type process --limit N --name NAME`` against a server."""

    def __init__(self, server: PrefectServer, pool: str, name: str, limit: int = 1, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None) -> None:
        self.server, self.pool, self.name, self.limit = server, pool, name, limit
        self.extra_env = env or {}
        self.cwd = cwd
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        self.dir = Path(tempfile.mkdtemp(prefix=f"opsbook-worker-{self.name}-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(self.server.client_env())
        env.update({"PREFECT_HOME": str(self.dir / "home"), "PREFECT_WORKER_QUERY_SECONDS": "1",
                    "PREFECT_WORKER_PREFETCH_SECONDS": "1"})
        env.update(self.extra_env)
        log = open(self.dir / "worker.log", "wb")
        self.proc = subprocess.Popen(PREFECT + ["worker", "start", "--pool", self.pool, "--type", "process", "--limit",
                                                str(self.limit), "--name", self.name],
                                     env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=str(self.cwd or self.dir), preexec_fn=die_with_parent)
        log.close()
        guard(self.proc.pid, group=True, remove=self.dir)  # its flow-run processes share its group
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return _tail(self.dir / "worker.log", 60) if self.dir else ""

    def stop(self) -> None:
        try:
            _stop_group(self.proc)
        finally:
            if self.proc is not None:
                release(self.proc.pid, group=True, remove=self.dir)
            self.proc = None
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
