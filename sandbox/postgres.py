"""A throwaway local PostgreSQL (Debian's server package) for the sandbox and the tests: LEH's case store
(reindex-case, seed 003 시나리오 B) and the Prefect-on-PostgreSQL end-to-end tests.

One cluster in a temp dir, listening on 127.0.0.1:<free port> only (its socket in that dir), started with
``start()`` and removed by ``stop()``. PostgreSQL's tools refuse to run as root: as root they run as the
``postgres`` user (``runuser -u postgres --``) in a temp dir that user owns; as anyone else, as that user.

``password`` set: TCP connections need it (scram-sha-256, as RDS asks for one); the local socket stays trusted
for the set-up. ``tls``: TCP offers TLS with a throwaway self-signed certificate (``sslmode=require`` works as against
RDS), where ``openssl`` is installed (``tls`` says whether it is on). Where the server package is missing,
``missing_postgres()`` says what to install.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sandbox.procs import guard, release

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
    """Why a local PostgreSQL cannot run here, or None."""
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


def _leads_group(pid: int) -> bool:
    """pg_ctl starts the server in a session of its own (setsid): then its backends are killed with it."""
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class Postgres:
    """A throwaway PostgreSQL cluster listening on 127.0.0.1:<free port>, socket in its temp dir."""

    def __init__(self, database: str = "prefect", password: str | None = None, tls: bool = False) -> None:
        self.database = database
        self.password = password  # the superuser's (postgres) password over TCP; None: trusted
        self.tls_wanted = tls  # TLS on TCP with a throwaway self-signed certificate (as RDS offers TLS), where openssl is here
        self.tls = False  # whether it is on
        self.bindir = postgres_bindir()
        self.port = 0
        self.dir: Path | None = None
        self.started = False
        self.pid = 0  # the server's (postmaster's)
        self.pid_group = False  # whether it leads its own process group

    def _certificate(self) -> list[str]:
        """A self-signed certificate for 127.0.0.1 (a day), the server's options for it; [] without openssl."""
        openssl = shutil.which("openssl")
        if not openssl or self.dir is None:
            return []
        crt, key = self.dir / "server.crt", self.dir / "server.key"
        out = subprocess.run([openssl, "req", "-new", "-x509", "-days", "1", "-nodes", "-subj", "/CN=127.0.0.1", "-newkey", "rsa:2048",
                              "-keyout", str(key), "-out", str(crt)], capture_output=True, text=True, timeout=60, check=False)
        if out.returncode != 0:
            return []
        os.chmod(key, 0o600)
        if os.geteuid() == 0:
            for f in (crt, key):
                shutil.chown(f, "postgres", "postgres")
        self.tls = True
        return [f"-c ssl=on -c ssl_cert_file={crt} -c ssl_key_file={key}"]

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(self.dir))
        if out.returncode != 0:
            log = self.dir / "postgres.log" if self.dir else None
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
                               + (f"\nserver log:\n{tail(log)}" if log and log.exists() else ""))
        return out

    def start(self) -> Postgres:
        if self.bindir is None:
            raise RuntimeError(missing_postgres() or INSTALL_HINT)
        self.dir = Path(tempfile.mkdtemp(prefix="opsbook-pg-"))
        guard(remove=self.dir)  # removed, and the server killed (below), when this process dies, even by SIGKILL
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)
        data = str(self.dir / "data")
        auth = ["-A", "trust"]
        if self.password is not None:
            pwfile = self.dir / "pwfile"
            pwfile.write_text(self.password + "\n")
            os.chmod(pwfile, 0o600)
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres", "postgres")
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        self._run("initdb", "-D", data, "-U", "postgres", *auth, "-E", "UTF8", "--no-sync", "--no-instructions")
        if self.password is not None:
            (self.dir / "pwfile").unlink()
        self.port = free_port()
        opts = " ".join([f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c synchronous_commit=off "
                         "-c full_page_writes=off -c max_connections=200", *(self._certificate() if self.tls_wanted else [])])
        self._run("pg_ctl", "-D", data, "-l", str(self.dir / "postgres.log"), "-o", opts, "-w", "-t", "60", "start")
        self.started = True
        self.pid = self._postmaster()
        self.pid_group = _leads_group(self.pid)
        guard(self.pid, group=self.pid_group)  # pg_ctl daemonized it: its death is not ours
        self._run("createdb", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", self.database)
        return self

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect's server takes (PREFECT_API_DATABASE_CONNECTION_URL)."""
        auth = f"postgres:{self.password}" if self.password else "postgres"
        return f"postgresql+asyncpg://{auth}@127.0.0.1:{self.port}/{self.database}"

    def connect(self, database: str | None = None, autocommit: bool = True) -> Any:
        """A psycopg connection as the superuser over the local socket (set-up and test assertions)."""
        import psycopg

        assert self.started and self.dir is not None
        return psycopg.connect(host=str(self.dir), port=self.port, user="postgres", dbname=database or self.database,
                               autocommit=autocommit, connect_timeout=10)

    def _postmaster(self) -> int:
        """The server's pid (the first line of its postmaster.pid)."""
        assert self.dir is not None
        return int((self.dir / "data" / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop(self) -> None:
        try:
            if self.started and self.dir is not None:
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
                self.started = False
                release(self.pid, group=self.pid_group)
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                release(remove=self.dir)
                self.dir = None

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
