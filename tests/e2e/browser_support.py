"""Helpers for tests/e2e/test_browser.py: the stack it runs against (sandbox +
`make serve` + the local Prefect server), headless Chromium, and screenshots.

Everything here starts processes in their own process group and stops them
by that group's id, so a failed test leaves nothing running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from opsbook.server import DEFAULT_PORT
from sandbox.procs import die_with_parent, guard_env
from tests import prefect_db

ROOT = Path(__file__).resolve().parents[2]
# Kept as test output (git-ignored: `tests/e2e/screenshots/`); emptied at the start of each run.
SHOTS = ROOT / "tests" / "e2e" / "screenshots"
CHROMIUM = os.environ.get("OPSBOOK_CHROMIUM", "/usr/bin/chromium")
PLAYWRIGHT_PIN = "playwright==1.65.2"


def missing_requirements() -> list[str]:
    """What this machine lacks to run the browser test, each with the command that installs it."""
    missing = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Debian's Chromium at {CHROMIUM} (apt-get install -y chromium; "
                       "or set OPSBOOK_CHROMIUM to another Chromium binary)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append(f"the Playwright driver library ({ROOT / '.venv/bin/pip'} install '{PLAYWRIGHT_PIN}'; "
                       "no browser download needed: the test launches Debian's Chromium)")
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[e2e-browser {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the Prefect API, read directly (what the UI shows is checked against it) -----------------------
class Api:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def healthy(self) -> bool:
        try:
            return self.call("GET", "/health", timeout=2) is True
        except OSError:
            return False

    def deployment_names(self) -> set[str]:
        return {d["name"] for d in self.call("POST", "/deployments/filter", {"limit": 200})}

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return self.call("GET", f"/flow_runs/{run_id}")

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        return self.call("GET", f"/deployments/{deployment_id}")

    def runs_of(self, deployment_id: str) -> list[dict[str, Any]]:
        """The deployment's runs that were started (not the scheduler's future ones)."""
        return self.call("POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}},
                                                       "flow_runs": {"state": {"type": {"not_any_": ["SCHEDULED"]}}}, "limit": 50})

    def artifacts_of(self, run_id: str) -> list[dict[str, Any]]:
        return self.call("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}, "limit": 50})

    def wait_pause_form(self, run_id: str, timeout: float = 30.0) -> None:
        """Prefect pauses the run first and saves the form (schema, then its description) right
        after; the Resume button shows as soon as the run is paused. Wait for the description so
        the form opened in the UI is the complete one."""
        end = time.monotonic() + timeout
        while True:
            keyset = ((self.flow_run(run_id).get("state") or {}).get("state_details") or {}).get("run_input_keyset")
            if keyset:
                try:
                    self.call("GET", f"/flow_runs/{run_id}/input/{keyset['description']}")
                    return
                except urllib.error.HTTPError as exc:
                    if exc.code != 404:
                        raise
            if time.monotonic() > end:
                raise AssertionError(f"run {run_id} paused without its approval form within {timeout:.0f} s (keyset {keyset})")
            time.sleep(0.3)

    def wait_final(self, run_id: str, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            run = self.flow_run(run_id)
            if run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            if time.monotonic() > end:
                return run
            time.sleep(0.5)


# --- the stack: sandbox + `make serve` + local Prefect server -----------------------------------
class Stack:
    """A seeded sandbox in this process, `make serve SERVE_ARGS=` (every deployment, against the
    sandbox) in a subprocess with its own OPSBOOK_HOME and port, and the Prefect server it starts."""

    def __init__(self, home: Path, systems: list[str], faults: list[tuple[str, str]]) -> None:
        self.home, self.systems, self.faults = home, systems, faults
        self.port = free_port()
        self.sandbox: Any = None
        self.serve: subprocess.Popen | None = None
        self.serve_log = SHOTS / "serve.log"
        self.fault_info: dict[tuple[str, str], dict[str, Any]] = {}
        self.env: dict[str, str] = {}
        self.api = Api(f"http://127.0.0.1:{self.port}/api")
        self.ui = f"http://127.0.0.1:{self.port}"

    def serve_command(self) -> list[str]:
        """`make serve SERVE_ARGS=` when .venv is installed and up to date (what a user runs);
        otherwise the same command make would run, with this interpreter (make would first
        rebuild .venv, minutes of pip that have nothing to do with this test)."""
        if shutil.which("make") and (ROOT / ".venv/bin/opsbook").exists():
            fresh = subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT, capture_output=True).returncode == 0
            if fresh:
                return ["make", "--no-print-directory", "serve", "SERVE_ARGS="]
            log("make would reinstall .venv first (.venv/.installed is older than pyproject.toml/requirements.lock); "
                "running `opsbook serve` directly instead")
        return [sys.executable, "-m", "opsbook.cli", "serve"]

    def start(self, ready_timeout: float = 150.0) -> None:
        from deployments.schedules import deployment_specs
        from opsbook.inventory import load_system
        from sandbox.faults import apply_fault
        from sandbox.seed import seed_system
        from sandbox.server import Sandbox

        t0 = time.monotonic()
        self.sandbox = Sandbox().start()
        self.sandbox.reset()  # moto's state is per process: start from nothing
        self.env = {**os.environ, **self.sandbox.env(),
                    # a fresh HOME, so a deployment sent to Prefect's own ephemeral server would leave
                    # HOME/.prefect/prefect.db behind (what `opsbook serve` once did)
                    "HOME": str(self.home), "OPSBOOK_HOME": str(self.home), "OPSBOOK_PREFECT_PORT": str(self.port),
                    # the runner looks for runs to start every 10 s by default; a run started from the UI
                    # should not wait that long in a test
                    "PREFECT_RUNNER_POLL_FREQUENCY": "2",
                    # the server opsbook starts creates no scheduled runs: the alarm bridge's every-minute schedule
                    # would start a flow-run process each minute of the test (what is tested here is runs started
                    # from the UI; the schedules are still stored, and shown, as the first test checks)
                    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
                    # a 503 the UI gets is logged with its cause in prefect-server.log (kept with the screenshots)
                    "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
                    "PYTHONUNBUFFERED": "1"}
        for var in ("PREFECT_API_URL", "PREFECT_UI_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            self.env.pop(var, None)
        # the server's database: a copy of one migrated once per Prefect version (tests/prefect_db.py), not 10-14 s
        # of migrations here; a server started on no database at all is tests/e2e/test_cli.py's
        prefect_db.copy_to(self.home / ("prefect" if self.port == DEFAULT_PORT else f"prefect-{self.port}"))  # server.database_dir
        cmd = self.serve_command()
        log(f"starting {' '.join(cmd)} (OPSBOOK_HOME={self.home}, port {self.port}); log: {self.serve_log}")
        guard_env("OPSBOOK_HOME", str(self.home))  # serve, its flow runs and the Prefect server it starts, when this process dies
        self.serve = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                      stdout=open(self.serve_log, "wb"), stderr=subprocess.STDOUT,
                                      start_new_session=True, preexec_fn=die_with_parent)
        # seed while the Prefect server starts (serve does not touch AWS until a run starts)
        for name in self.systems:
            seed_system(self.sandbox, load_system(name))
        for system, fault in self.faults:
            self.fault_info[(system, fault)] = apply_fault(self.sandbox, load_system(system), fault)
        log(f"sandbox seeded with {', '.join(self.systems)} and faults {self.faults} in {time.monotonic() - t0:.1f} s")
        expected = {s["name"] for s in deployment_specs()}
        self.expected_deployments = expected
        end = time.monotonic() + ready_timeout
        have: set[str] = set()
        while time.monotonic() < end:
            if self.serve.poll() is not None:
                raise RuntimeError(f"`{' '.join(cmd)}` exited with {self.serve.returncode} before serving:\n{self.log_tail()}")
            # count, then read the names once: reading every deployment twice a second while serve registers them
            # costs the server a time zone lookup per schedule each time (~6 ms each in Prefect 3.8)
            if self.api.healthy() and self.api.call("POST", "/deployments/count") >= len(expected):
                have = self.api.deployment_names()
                if expected <= have and b"serving" in self.serve_log.read_bytes():
                    log(f"{len(expected)} deployments served after {time.monotonic() - t0:.1f} s")
                    return
            time.sleep(0.5)
        raise RuntimeError(f"not serving within {ready_timeout:.0f} s: missing deployments {sorted(expected - have)[:5]}...\n"
                           f"{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.serve_log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no serve log)"

    def stop(self) -> None:
        errors = []
        if self.serve is not None and self.serve.poll() is None:
            # SIGTERM: Prefect's runner exits on it (SIGINT can be ignored when the test itself was
            # started in the background by a non-interactive shell, and the children inherit that)
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.serve.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.serve.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    errors.append(f"serve did not stop on {sig.name} within {wait} s")
        if self.serve is not None:
            # flow runs the runner started (a run paused for approval, say) share its process group
            end = time.monotonic() + 10
            while True:
                try:
                    os.killpg(self.serve.pid, 0)
                except ProcessLookupError:
                    break  # the group is empty
                if time.monotonic() > end:
                    errors.append("flow-run processes outlived serve; killed")
                    try:
                        os.killpg(self.serve.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    break
                time.sleep(0.2)
        if self.env:
            out = subprocess.run([sys.executable, "-m", "opsbook.cli", "server", "stop"], cwd=ROOT, env=self.env,
                                 capture_output=True, text=True, timeout=60)
            log(f"opsbook server stop: {out.stdout.strip() or out.stderr.strip()}")
            try:
                shutil.copy(self.home / "prefect-server.log", SHOTS / "prefect-server.log")
            except OSError as exc:  # the server may never have written one: say so, the test's result stands
                log(f"prefect-server.log not kept with the screenshots: {exc}")
        if self.sandbox is not None:
            self.sandbox.stop()
        if errors:
            log("; ".join(errors))


class RolloutCompleter:
    """What ECS does and moto never does: once the service runs `target` (the rollback was
    applied), finish its deployment so the runbook's settle check passes."""

    def __init__(self, sandbox: Any, region: str, cluster: str, service: str, target: str) -> None:
        self.sandbox, self.region, self.cluster, self.service, self.target = sandbox, region, cluster, service, target
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ecs-rollout", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            svc = self.sandbox.backend("ecs", self.region).services.get(f"{self.cluster}:{self.service}")
            if svc is not None and svc.task_definition == self.target:
                self.sandbox.complete_ecs_rollout(self.region, self.cluster, self.service)
                self.done.set()
                return
            self._stop.wait(0.2)

    def __enter__(self) -> RolloutCompleter:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)


# --- the browser ---------------------------------------------------------------------------
@contextmanager
def chromium(timeout_ms: int = 30_000) -> Iterator[Any]:
    """A headless Debian Chromium page (1400x1000, Asia/Seoul like the inventories)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=timeout_ms)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, timezone_id="Asia/Seoul", locale="en-US")
            page = ctx.new_page()
            page.set_default_timeout(timeout_ms)
            page.api_errors = []  # failed API calls the UI made: in a failure's report

            def on_response(resp: Any) -> None:
                if "/api/" in resp.url and resp.status >= 400:
                    try:
                        body = resp.text()[:500]
                    except Exception:
                        body = ""
                    page.api_errors.append(f"{resp.request.method} {urlparse(resp.url).path} -> {resp.status} {body}")
                    log(f"UI API call failed: {page.api_errors[-1]}")

            page.on("response", on_response)
            yield page
        finally:
            browser.close()


RETRIES: list[str] = []  # every retried UI write, reported at the end of the module


def click_until_accepted(page: Any, button: Any, path_end: str, what: str, attempts: int = 4) -> Any:
    """Click `button`, which makes the UI POST to an API path ending in `path_end`, and return
    that response. Prefect's SQLite server answers a write that collides with another write
    (SQLITE_BUSY_SNAPSHOT; the scheduler fills the new database with scheduled runs while the
    test runs) with 503; its Python client retries that, the UI does not: it shows "Oops.
    Something went wrong." and the user clicks again. So does this, a bounded number of times,
    and says so in the log. Any other failure fails the test."""
    for attempt in range(1, attempts + 1):
        with page.expect_response(lambda r: r.request.method == "POST" and urlparse(r.url).path.endswith(path_end),
                                  timeout=30_000) as info:
            button.click()
        resp = info.value
        log(f"{what}: POST {urlparse(resp.url).path} -> {resp.status}")
        if resp.status < 400:
            return resp
        if resp.status != 503 or attempt == attempts:
            raise AssertionError(f"{what}: the UI's POST {urlparse(resp.url).path} got {resp.status} "
                                 f"(attempt {attempt}/{attempts}): {resp.text()[:500]}")
        RETRIES.append(f"{what}: 503 on attempt {attempt}")
        log(f"{what}: the Prefect server answered 503 (SQLite busy) and the UI showed an error; "
            f"clicking again like a user would (attempt {attempt + 1}/{attempts})")
        dismiss_toasts(page)  # the error toast can cover the button
    raise AssertionError("unreachable")


def dismiss_toasts(page: Any) -> None:
    """Close the toasts on screen (they live 5 s and outlive page changes)."""
    from playwright.sync_api import Error as PlaywrightError  # its TimeoutError too

    for close in page.locator(".p-toast__close-btn").all():
        try:
            close.click(timeout=1000)
        except PlaywrightError:
            pass  # it went by itself, or lies under its twin (see follow_run_toast)


class Shots:
    """Numbered screenshots in SHOTS; on a failure inside `step`, a screenshot and the DOM."""

    def __init__(self, page: Any, prefix: str) -> None:
        self.page, self.prefix, self.n = page, prefix, 0

    def take(self, name: str, full_page: bool = False) -> Path:
        self.n += 1
        path = SHOTS / f"{self.prefix}-{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        except BaseException:
            try:
                self.take(f"{name}-FAILED", full_page=True)
                (SHOTS / f"{self.prefix}-{name}-FAILED.html").write_text(self.page.content())
            except Exception as exc:  # the page may be gone; the original error matters more
                log(f"could not save the failure screenshot: {exc}")
            raise
        log(f"{self.prefix}: {name} ({time.monotonic() - t0:.1f} s)")


def reset_shots() -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for p in SHOTS.iterdir():
        if p.is_file() and p.suffix in (".png", ".html", ".log"):
            p.unlink()
