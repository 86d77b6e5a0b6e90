"""The one Prefect server opsbook talks to: which one, and making sure it is up.

Ad hoc runs during an incident must be quick and visible: Prefect's ephemeral
API costs 5-7 s a run and nobody can watch its runs. So opsbook always talks
to one real server, chosen once per process, in this order:

1. ``PREFECT_API_URL`` when set, in the environment or in the active Prefect
   profile (``prefect config set`` / ``prefect cloud login`` write it there);
2. else ``PREFECT_SERVER_API_HOST`` / ``PREFECT_SERVER_API_PORT`` when set
   (what ``prefect server start`` would listen on), the same way;
3. else 127.0.0.1, port ``OPSBOOK_PREFECT_PORT`` (default 4200).

``configure()`` writes that choice into ``PREFECT_API_URL`` before Prefect is
imported (Prefect reads its settings once, at import: a module that imports
Prefect earlier would send everything to a throw-away ephemeral server; the
runner checks Prefect's settings afterwards and refuses if they disagree).
``ensure()`` reuses the server when it answers, starts one when the address
is on this machine (database in ``OPSBOOK_HOME``, default ``~/.opsbook``; cold
start ~10-15 s, the first time also creating the database), and otherwise
says which server does not answer and what to do.

Nothing here imports prefect.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PORT = 4200
LOOPBACK = {"127.0.0.1", "localhost", "::1"}  # as tasks.aws.is_loopback_url, which imports Prefect: this module must not


@dataclass(frozen=True)
class Target:
    """Where the Prefect API is, and what chose it (shown to the user)."""

    api_url: str
    host: str
    port: int
    source: str

    @property
    def local(self) -> bool:
        """On this machine: opsbook may start a server there."""
        return self.host in LOOPBACK

    @property
    def ui_url(self) -> str:
        """Where people look: PREFECT_UI_URL, else a self-hosted server's address (its API minus /api)."""
        return os.environ.get("PREFECT_UI_URL") or self.api_url.removesuffix("/api")


def home() -> Path:
    p = Path(os.environ.get("OPSBOOK_HOME", Path.home() / ".opsbook")).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def prefect_profile() -> tuple[str, dict[str, str]]:
    """(name, settings) of the active Prefect profile, read as Prefect reads it, without importing Prefect."""
    prefect_home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", prefect_home / "profiles.toml")).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return "", {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RuntimeError(f"cannot read the Prefect profiles in {path}: {exc}; fix or remove the file") from None
    name = os.environ.get("PREFECT_PROFILE") or data.get("active") or ""
    values = data.get("profiles", {}).get(name, {})
    return name, {k: str(v) for k, v in values.items()}


def setting(name: str) -> tuple[str | None, str]:
    """A Prefect setting as Prefect sees it: (value, where it came from); the environment wins over the profile."""
    if os.environ.get(name):
        return os.environ[name], name
    profile, values = prefect_profile()
    if values.get(name):
        return values[name], f"{name} in Prefect profile {profile!r}"
    return None, name


def target() -> Target:
    """The server this process uses (see the module docstring for the order)."""
    url, source = setting("PREFECT_API_URL")
    if url:
        parts = urlsplit(url)
        if not parts.scheme or not parts.hostname:
            raise RuntimeError(f"PREFECT_API_URL={url!r} ({source}) is not a URL; set it like http://127.0.0.1:4200/api")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return Target(url.rstrip("/"), parts.hostname, port, source)
    host, host_source = setting("PREFECT_SERVER_API_HOST")
    port, port_source = setting("PREFECT_SERVER_API_PORT")
    if host or port:
        source = " and ".join(src for src, value in ((host_source, host), (port_source, port)) if value)
        host = host or "127.0.0.1"
        if host in ("0.0.0.0", "::"):  # a server listening everywhere is reached on loopback from here
            host = "127.0.0.1"
        p = int(port or DEFAULT_PORT)
        return Target(f"http://{host}:{p}/api", host, p, source)
    p = int(os.environ.get("OPSBOOK_PREFECT_PORT", str(DEFAULT_PORT)))
    return Target(f"http://127.0.0.1:{p}/api", "127.0.0.1", p, "opsbook's local server (OPSBOOK_PREFECT_PORT)")


_chosen: Target | None = None


def configure() -> Target:
    """Choose the server once and point this process (and its children) at it. Call before importing prefect."""
    global _chosen
    if _chosen is None or os.environ.get("PREFECT_API_URL") != _chosen.api_url:
        _chosen = target()
    os.environ["PREFECT_API_URL"] = _chosen.api_url
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's SDK telemetry calls out from an interactive shell: not from opsbook
    if _chosen.local:  # a remote server (Prefect Cloud too) has its own UI address: Prefect infers it
        os.environ.setdefault("PREFECT_UI_URL", _chosen.ui_url)
    return _chosen


def healthy(url: str, timeout: float = 1.0) -> bool:
    """The API answers /health (with PREFECT_API_KEY when one is set, as Prefect Cloud wants)."""
    key, _ = setting("PREFECT_API_KEY")
    req = urllib.request.Request(f"{url.rstrip('/')}/health", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def unanswered(t: Target, timeout: float) -> tuple[str, bool] | None:
    """None when the API answers /health within ``timeout``; else (why, startable): startable when nothing listens
    on this machine's port (opsbook may start its server there), not when it is silent, remote or answers wrong."""
    import socket

    key, _ = setting("PREFECT_API_KEY")
    req = urllib.request.Request(f"{t.api_url}/health", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            if r.status == 200:
                return None
            return f"{t.api_url}/health answered HTTP {r.status}", False
    except urllib.error.HTTPError as exc:
        return f"{t.api_url}/health answered HTTP {exc.code}", False
    except (TimeoutError, socket.timeout):
        return f"the Prefect server at {t.api_url} (from {t.source}) did not answer within {timeout:g} s", False
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            return f"the Prefect server at {t.api_url} (from {t.source}) did not answer within {timeout:g} s", False
        refused = isinstance(exc.reason, ConnectionRefusedError)
        return f"the Prefect server at {t.api_url} (from {t.source}) cannot be reached: {exc.reason}", refused and t.local
    except OSError as exc:
        return f"the Prefect server at {t.api_url} (from {t.source}) cannot be reached: {exc}", False


def _pidfile(t: Target) -> Path:
    return home() / f"prefect-server-{t.port}.pid"


def database_dir(t: Target) -> Path:
    """Where a server opsbook starts keeps its SQLite database: one per port, so two servers never share one."""
    return home() / ("prefect" if t.port == DEFAULT_PORT else f"prefect-{t.port}")


def server_env(t: Target) -> dict[str, str]:
    """The environment of a server opsbook starts: its own database, listening where the target says."""
    return {
        "PREFECT_HOME": str(database_dir(t)),
        "PREFECT_SERVER_API_HOST": t.host,
        "PREFECT_SERVER_API_PORT": str(t.port),
        "PREFECT_UI_API_URL": t.api_url,  # the UI in the browser asks this address (not 127.0.0.1:4200)
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_LOGGING_SERVER_LEVEL": "WARNING",
    }


def ensure(t: Target, wait: float = 90.0, quiet: bool = False) -> tuple[bool, float]:
    """The target server answers, or is started here. Returns (started_now, seconds spent).

    Two opsbook commands that find the server down at once (monitors run checks in parallel) start it once:
    the start is under a lock, and the second finds it healthy when it gets the lock."""
    t0 = time.monotonic()
    if healthy(t.api_url, timeout=1.0 if t.local else 5.0):
        return False, time.monotonic() - t0
    if not t.local:
        raise RuntimeError(f"the Prefect server at {t.api_url} (from {t.source}) does not answer; start it, fix "
                           f"{t.source}, or unset it to use opsbook's local server on 127.0.0.1:{DEFAULT_PORT}")
    with open(home() / f"prefect-server-{t.port}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when this process dies
        if healthy(t.api_url):
            return False, time.monotonic() - t0
        proc = _start(t, quiet)
        while time.monotonic() - t0 < wait:
            if healthy(t.api_url):
                _pidfile(t).write_text(str(proc.pid))
                return True, time.monotonic() - t0
            if proc.poll() is not None:
                break
            time.sleep(0.25)
    raise RuntimeError(
        f"the Prefect server on {t.ui_url} did not become healthy within {wait:.0f} s; see {home() / 'prefect-server.log'} "
        f"(is port {t.port} taken by something else? set OPSBOOK_PREFECT_PORT, or PREFECT_API_URL to use another server)"
    )


def _start(t: Target, quiet: bool) -> subprocess.Popen:
    env = {**os.environ, **server_env(t)}
    env.pop("PREFECT_API_URL", None)
    if not quiet:
        print(f"opsbook: starting a Prefect server on {t.ui_url} (the first start creates its database: ~15 s)...", file=sys.stderr)
    with open(home() / "prefect-server.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", t.host, "--port", str(t.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )


def stop(t: Target) -> bool:
    """Stop the server opsbook started for this target (a server it did not start is left alone)."""
    pf = _pidfile(t)
    if not pf.exists():
        return False
    pid = int(pf.read_text().strip() or 0)
    pf.unlink()
    if pid <= 0:  # never signal our own process group
        return False
    try:
        os.killpg(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    for _ in range(40):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.25)
    os.killpg(pid, signal.SIGKILL)
    return True
