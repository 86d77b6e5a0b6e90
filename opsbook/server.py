"""Find or start the local Prefect server that `opsbook run` reports to.

Ad hoc runs during an incident must be quick and visible: Prefect's ephemeral
API costs 5-7 s a run and nobody can watch its runs. So, unless
PREFECT_API_URL is set, opsbook uses one long-lived local server on
127.0.0.1 (port OPSBOOK_PREFECT_PORT, default 4200) with its own database in
OPSBOOK_HOME (default ~/.opsbook). The first run starts it in the background
(cold start ~10-15 s, the first time also creating the database); every later
run finds it in a few milliseconds. `opsbook server stop` stops it.

Nothing here imports prefect: this runs before prefect reads its settings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def home() -> Path:
    p = Path(os.environ.get("OPSBOOK_HOME", Path.home() / ".opsbook")).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def port() -> int:
    return int(os.environ.get("OPSBOOK_PREFECT_PORT", "4200"))


def api_url(p: int | None = None) -> str:
    return f"http://127.0.0.1:{p or port()}/api"


def ui_url(p: int | None = None) -> str:
    return f"http://127.0.0.1:{p or port()}"


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def _pidfile() -> Path:
    return home() / "prefect-server.pid"


def server_env(p: int | None = None) -> dict[str, str]:
    p = p or port()
    return {
        "PREFECT_HOME": str(home() / "prefect"),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(p),
        "PREFECT_UI_API_URL": api_url(p),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_LOGGING_SERVER_LEVEL": "WARNING",
    }


def start(wait: float = 90.0, quiet: bool = False) -> tuple[str, bool, float]:
    """Ensure the local server is up. Returns (api url, started_now, seconds spent)."""
    url = api_url()
    t0 = time.monotonic()
    if healthy(url):
        return url, False, time.monotonic() - t0
    env = {**os.environ, **server_env()}
    env.pop("PREFECT_API_URL", None)
    log = open(home() / "prefect-server.log", "ab")
    if not quiet:
        print(f"opsbook: starting the local Prefect server on {ui_url()} (first start creates its database; ~15 s)...", file=sys.stderr)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port())],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    _pidfile().write_text(str(proc.pid))
    while time.monotonic() - t0 < wait:
        if healthy(url):
            return url, True, time.monotonic() - t0
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    raise RuntimeError(
        f"the local Prefect server did not become healthy within {wait:.0f} s; see {home() / 'prefect-server.log'} "
        f"(is port {port()} taken? set OPSBOOK_PREFECT_PORT, or PREFECT_API_URL to use another server)"
    )


def stop() -> bool:
    pf = _pidfile()
    if not pf.exists():
        return False
    pid = int(pf.read_text().strip() or 0)
    pf.unlink()
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


def use_api() -> tuple[str, bool, float]:
    """Point this process at a Prefect API: PREFECT_API_URL if set, else the local server."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"], False, 0.0
    url, started, took = start()
    os.environ["PREFECT_API_URL"] = url
    os.environ.setdefault("PREFECT_UI_URL", ui_url())
    return url, started, took
