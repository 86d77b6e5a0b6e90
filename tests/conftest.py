"""Shared fixtures.

- ``aws_mock``: in-process moto (``mock_aws``) for unit tests of tasks.
- ``sandbox``: one moto server + OpenSearch test double on 127.0.0.1 for the
  session; ``seeded(*systems)`` resets it and seeds inventories; ``case_postgres``: its local PostgreSQL (case stores).
- ``prefect_harness``: one Prefect test server for flow-level tests (~8 s once per worker).
- ``local_prefect``: the environment of a local Prefect server started the way `opsbook run` starts it, for
  tests that run the CLI as a subprocess.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from unittest import mock

import pytest

from sandbox.procs import die_with_parent, guard, guard_env

# Never reach a real account from the test suite, whatever the developer's shell has.
for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "PREFECT_API_URL"):
    os.environ.pop(var, None)
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "OPSBOOK_IAM_STRICT": "1", "OPSBOOK_LOOPBACK_ONLY": "1",  # no endpoint probe leaves the machine (tasks/endpoints.py)
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
    "OPSBOOK_HOME": tempfile.mkdtemp(prefix="opsbook-test-home-"),
})
atexit.register(shutil.rmtree, os.environ["OPSBOOK_HOME"], ignore_errors=True)  # this process's home: nothing left in /tmp
guard(remove=os.environ["OPSBOOK_HOME"])  # ... even when it is killed (sandbox/procs.py)
# ... nor a Prefect server a developer's Prefect profile names (opsbook reads the active profile like Prefect does)
os.environ["PREFECT_PROFILES_PATH"] = os.path.join(os.environ["OPSBOOK_HOME"], "no-prefect-profiles.toml")


if os.environ.get("PYTEST_XDIST_WORKER"):  # an xdist worker dies with the pytest that started it (`make test` killed),
    die_with_parent()  # and its watchdog (sandbox/procs.py) then kills what the worker started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _skipped(item: pytest.Item) -> bool:
    return any(m.name == "skipif" and m.args and m.args[0] is True for m in item.iter_markers())


def _expected_cost(item: pytest.Item) -> float:
    """A rough weight of one test: a flow on the sandbox or Prefect takes seconds, the rest milliseconds. A file that
    starts processes says what it costs as a whole (``EXPECTED_SECONDS`` at module level: the e2e files)."""
    if _skipped(item):
        return 0.0
    if {"sandbox", "seeded", "prefect_harness", "local_prefect"} & set(getattr(item, "fixturenames", ())):
        return 3.0
    return 0.05


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The costliest files first, each file's tests kept together and in order. `make test` distributes whole files
    (`-n 3 --dist loadfile --no-loadscope-reorder`) in this order: the long e2e files start at once, one worker each,
    instead of last (xdist's own reorder puts the files with the most tests first, which left the browser, CLI and
    fleet files to one worker at the end: a minute and a half of the other workers idle)."""
    cost: dict[str, float] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        declared = getattr(getattr(item, "module", None), "EXPECTED_SECONDS", None)
        cost[path] = float(declared) if declared is not None and not _skipped(item) else cost.get(path, 0.0) + _expected_cost(item)
    position = {path: i for i, path in enumerate(dict.fromkeys(i.nodeid.split("::", 1)[0] for i in items))}
    items.sort(key=lambda i: (-cost[i.nodeid.split("::", 1)[0]], position[i.nodeid.split("::", 1)[0]]))


@pytest.fixture(autouse=True)
def _discovery_memory(monkeypatch):
    """Each test its own memory of complete discoveries (opsbook.resources.remember): what one test's run discovered
    never names resources in another's (the directory is made only when a discovery writes to it)."""
    monkeypatch.setenv("OPSBOOK_DISCOVERY_MEMORY", os.path.join(os.environ["OPSBOOK_HOME"], "discovery", uuid.uuid4().hex))


@pytest.fixture
def aws_mock():
    from moto import mock_aws

    from opsbook import aws
    from sandbox.server import atomic_moto_dynamodb_writes

    atomic_moto_dynamodb_writes()  # conditional writes atomic, as in DynamoDB (tests race threads for a lease)
    aws.reset_clients()
    with mock_aws():
        yield
    aws.reset_clients()


@pytest.fixture(scope="session")
def sandbox_server():
    from sandbox.server import Sandbox

    sb = Sandbox().start()
    yield sb
    sb.stop()


@pytest.fixture
def sandbox(sandbox_server, monkeypatch):
    """The session sandbox, emptied, with this process pointed at it (opsbook's clients of the sandbox are kept from
    test to test: a client is new whenever the environment that made it changed)."""
    sandbox_server.reset()
    sandbox_server.set_latency_ms(0)
    sandbox_server.set_throttle_pct(0)
    for k, v in sandbox_server.env().items():
        monkeypatch.setenv(k, v)
    yield sandbox_server


@pytest.fixture
def case_postgres(sandbox):
    """The sandbox's local PostgreSQL for case stores (LEH's `cases` table): started once a session, on first use, so
    tests that need no case store do not pay initdb's seconds; emptied by the sandbox's reset. Skips, saying what to
    install, where PostgreSQL's server package is missing (CI installs it: .ci/run)."""
    from sandbox.postgres import missing_postgres

    why = missing_postgres()
    if why:
        pytest.skip(f"the sandbox's case store needs a local PostgreSQL: {why}")
    return sandbox.start_postgres()


@pytest.fixture
def seeded(sandbox):
    from opsbook.inventory import load_system
    from sandbox.seed import seed_system

    def _seed(*names: str, extra: dict | None = None, weeks_of_metrics: bool = False):
        """Two weeks of every metric only where a test reads them (weekly-report): moto scans them all per query."""
        systems = [load_system(n) for n in names]
        for s in systems:
            seed_system(sandbox, s, extra, weeks_of_metrics=weeks_of_metrics)
        return systems[0] if len(systems) == 1 else systems

    return _seed


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.settings import (PREFECT_API_SSL_CERT_FILE, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH,
                                  PREFECT_LOGGING_TO_API_ENABLED, PREFECT_RESULTS_PERSIST_BY_DEFAULT, PREFECT_TASKS_DEFAULT_PERSIST_RESULT,
                                  temporary_settings)
    from prefect.testing import utilities

    from tests import prefect_db

    # - no heartbeat thread (1 s a flow);
    # - run logs stay in the test's output instead of being written to the test server (no test reads them from the
    #   API; the CLI and browser tests, in their own processes, still send them);
    # - a flow's result (its report) is persisted: when the test server's SQLite is locked at the moment a run ends,
    #   the engine can be handed the server's copy of the final state, which then carries a reference to the result
    #   instead of nothing (MissingResult). Tasks stay unpersisted, so nothing is ever served from a task cache.
    # - the server's database starts as a copy of an already migrated one (tests/prefect_db.py): the harness puts its
    #   database in a new temp dir (mkdtemp), which gets the copy first.
    # - the server neither writes every event to its database nor records task runs from them (no test here reads
    #   either back from the API; a third of the server's CPU, which the xdist workers share), and runs none of the
    #   services no test here needs: the scheduler (no test waits for it to create runs; it would write runs for every
    #   scheduled deployment a test applies), the foreman, repossessor and cleanup services (no workers, no
    #   cancellations), analytics. Late runs, pause expirations and the triggers stay (alarm-bridge tests use them).
    #   They are patched into os.environ only while the harness starts its server; they also stay in this session's
    #   Prefect settings (which the harness reads then), so processes Prefect starts from them (a Runner's flow runs)
    #   inherit them; only a server reads them. The browser, CLI and fleet tests start their servers from os.environ,
    #   with every service on (the browser stack's without its scheduler: tests/e2e/browser_support.py).
    # - the test server's API is plain HTTP on loopback, so no certificate is ever checked; but Prefect builds a
    #   verifying TLS context for every client it makes (one or more a flow run), loading the whole CA bundle each time
    #   (20 ms of CPU). Its trust store here is one certificate (0.4 ms).
    quiet = {f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
             for name in ("EVENT_PERSISTER", "TASK_RUN_RECORDER", "SCHEDULER", "FOREMAN", "REPOSSESSOR", "CANCELLATION_CLEANUP",
                          "CLEANUP_RECONCILER")} | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    db_dir = tempfile.mkdtemp(prefix="opsbook-test-prefect-")
    guard(remove=db_dir)
    prefect_db.copy_to(db_dir, "prefect-test.db")  # the name prefect_test_harness gives it
    with temporary_settings({PREFECT_API_SSL_CERT_FILE: _one_certificate(db_dir),
                             PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOGGING_TO_API_ENABLED: False,
                             PREFECT_RESULTS_PERSIST_BY_DEFAULT: True, PREFECT_TASKS_DEFAULT_PERSIST_RESULT: False,
                             PREFECT_LOCAL_STORAGE_PATH: os.path.join(os.environ["OPSBOOK_HOME"], "prefect-results")}):
        with mock.patch.object(utilities, "mkdtemp", lambda: db_dir), contextlib.ExitStack() as harness:
            with mock.patch.dict(os.environ, quiet), _guarded_harness_server():  # the server's environment, not the tests'
                harness.enter_context(utilities.prefect_test_harness(server_startup_timeout=90))
            yield


@contextlib.contextmanager
def _guarded_harness_server():
    """The harness' server (Prefect's SubprocessASGIServer: one uvicorn process in this process group) is killed when
    this process dies, even by SIGKILL and while it starts (Prefect stops it only at a normal exit): registered with
    sandbox/procs.py's watchdog as soon as it is started."""
    from prefect.server.api.server import SubprocessASGIServer

    start = SubprocessASGIServer._run_uvicorn_command

    def started(self: SubprocessASGIServer):
        proc = start(self)
        guard(proc.pid)
        return proc

    with mock.patch.object(SubprocessASGIServer, "_run_uvicorn_command", started):
        yield


def _one_certificate(directory: str) -> str:
    """A trust store of one certificate (the first of certifi's bundle), for clients of a plain-HTTP server."""
    import re
    from pathlib import Path

    import certifi

    bundle = Path(certifi.where()).read_text(encoding="utf-8")
    path = os.path.join(directory, "one-ca.pem")
    with open(path, "w", encoding="utf-8") as f:
        f.write(re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", bundle, re.S).group(0))
    return path


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@pytest.fixture(scope="session")
def local_prefect(tmp_path_factory):
    """A local Prefect server started the way `opsbook run` starts it (once per session): the environment to run the CLI in."""
    import subprocess
    import sys
    from pathlib import Path

    root, cli = Path(__file__).resolve().parents[1], [sys.executable, "-m", "opsbook.cli"]
    env = {**os.environ, "OPSBOOK_HOME": str(tmp_path_factory.mktemp("opsbook-home")), "OPSBOOK_PREFECT_PORT": str(free_port())}
    env.pop("PREFECT_API_URL", None)
    guard_env("OPSBOOK_HOME", env["OPSBOOK_HOME"])  # the server (and the CLI starting it) die with this process, even while it starts
    out = subprocess.run(cli + ["server", "start"], env=env, capture_output=True, text=True, timeout=120, cwd=root,
                         preexec_fn=die_with_parent)
    assert out.returncode == 0, out.stderr
    yield env
    subprocess.run(cli + ["server", "stop"], env=env, capture_output=True, text=True, timeout=60, cwd=root)


@pytest.fixture
def figure(request):
    """``figure("battery: ...")``: a line of figures `make chaos` prints at the end (kept through xdist)."""
    return lambda line: request.node.user_properties.append(("figure", line))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = [v for reports in terminalreporter.stats.values() for r in reports
             for k, v in getattr(r, "user_properties", []) if k == "figure" and getattr(r, "when", "call") == "call"]
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
