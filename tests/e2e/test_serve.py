"""README's `make serve`, run as written: every deployment lands on the one Prefect server the
UI shows, never on a throw-away ephemeral server (which is what `opsbook serve` once did).

Which server that is (PREFECT_API_URL, a Prefect profile, PREFECT_SERVER_API_HOST/PORT, opsbook's
default) and starting it where it is configured are tests/opsbook/test_server.py's; the browser test
(tests/e2e/test_browser.py) drives the same command with SERVE_ARGS= against a sandbox it seeds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPSBOOK = [sys.executable, "-m", "opsbook.cli"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, path: str, body: dict | None = None) -> object:
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body or {}).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def clean_env(tmp_path: Path) -> dict[str, str]:
    """A new user's shell: no Prefect variables, no AWS account, a fresh HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env.update({"HOME": str(tmp_path), "OPSBOOK_HOME": str(tmp_path / ".opsbook"), "PYTHONUNBUFFERED": "1",
                "AWS_EC2_METADATA_DISABLED": "true"})
    return env


def serve_until_ready(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 240) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text(errors="replace")
        if "opsbook: serving" in text:
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.5)
    stop(proc, env)
    raise AssertionError(f"not serving within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen, env: dict[str, str]) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            break
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    subprocess.run(OPSBOOK + ["server", "stop"], cwd=ROOT, env=env, capture_output=True, timeout=60)


def make_serve_command() -> list[str]:
    """README's command when make and an up-to-date .venv are here; else what make would run."""
    if shutil.which("make") and (ROOT / ".venv/bin/opsbook").exists() and \
            subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT, capture_output=True).returncode == 0:
        return ["make", "--no-print-directory", "serve"]
    return OPSBOOK + ["serve", "--sandbox"]


def test_make_serve_as_written_registers_every_deployment_on_the_ui_server(tmp_path):
    from deployments.schedules import deployment_specs

    expected = {s["name"] for s in deployment_specs()}
    env = clean_env(tmp_path)
    port = free_port()
    env["OPSBOOK_PREFECT_PORT"] = str(port)  # an opsbook setting, so this test never takes a developer's :4200
    proc = serve_until_ready(make_serve_command(), env, tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}/api"
        names = {d["name"] for d in api(url, "/deployments/filter", {"limit": 200})}
        assert names == expected, (sorted(expected - names)[:5], sorted(names - expected)[:5])
        assert api(url, "/deployments/count") == len(expected)
        ui = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10).read())
        assert ui["api_url"] == url  # the browser's UI asks this server, where the deployments are
        log = (tmp_path / "serve.log").read_text()
        assert f"registered on {url} and read back" in log and "embedded AWS sandbox" in log
    finally:
        stop(proc, env)
    assert not (tmp_path / ".prefect" / "prefect.db").exists(), "deployments went to Prefect's ephemeral server"
