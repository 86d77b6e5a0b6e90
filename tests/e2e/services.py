"""Real services for end-to-end tests: PostgreSQL (Debian's package), a Prefect
server on it, and Prefect process workers, each in its own temp dir, on
127.0.0.1 only, stopped and removed by ``stop()`` (use them in try/finally or as
context managers).

PostgreSQL's tools refuse to run as root: as root they run as the ``postgres``
user (``runuser -u postgres --``) in a temp dir that user owns; as anyone else
they run as that user.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

PREFECT = [sys.executable, "-m", "prefect"]
INSTALL_HINT = "install PostgreSQL's server package (Debian/Ubuntu: `apt-get install postgresql`)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir() -> Path | None:
    """Debian's /usr/lib/postgresql/<version>/bin (newest), or None when the server package is missing."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def missing_postgres() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None."""
    if postgres_bindir() is None:
        return f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return f"running as root but there is no `postgres` user to run PostgreSQL as: {INSTALL_HINT}"
        if not shutil.which("runuser"):
            return "running as root and `runuser` (util-linux) is missing: cannot drop to the postgres user"
    return None


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


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


class Postgres:
    """A throwaway PostgreSQL cluster listening on 127.0.0.1:<free port>, socket in its temp dir."""

    def __init__(self, database: str = "prefect") -> None:
        self.database = database
        self.bindir = postgres_bindir()
        self.port = 0
        self.dir: Path | None = None
        self.started = False

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(self.dir))
        if out.returncode != 0:
            log = self.dir / "postgres.log" if self.dir else None
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
                               + (f"\nserver log:\n{_tail(log)}" if log and log.exists() else ""))
        return out

    def start(self) -> Postgres:
        if self.bindir is None:
            raise RuntimeError(missing_postgres() or INSTALL_HINT)
        self.dir = Path(tempfile.mkdtemp(prefix="opsbook-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)
        data = str(self.dir / "data")
        self._run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        self.port = free_port()
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", data, "-l", str(self.dir / "postgres.log"), "-o", opts, "-w", "-t", "60", "start")
        self.started = True
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.database)
        return self

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect's server takes (PREFECT_API_DATABASE_CONNECTION_URL)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.database}"

    def stop(self) -> None:
        try:
            if self.started and self.dir is not None:
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
                self.started = False
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


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
                                     env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.home))
        log.close()
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
            self.proc = None
            if self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)
                self.home = None

    def log(self) -> str:
        return _tail(self.home / "server.log") if self.home else ""

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
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
                                     cwd=str(self.cwd or self.dir))
        log.close()
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
            self.proc = None
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
