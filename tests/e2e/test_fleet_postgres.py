"""The fleet past one machine's process: a Prefect server on PostgreSQL (Debian's
package, started here as the postgres user), a process work pool with two workers
each taking one run at a time, and the fleet runbook over sandbox targets
(accounts reached through STS AssumeRole in moto). Every target must run exactly
once, in its own account and region, and both workers must take part.

`make test` runs 2 targets (2 accounts, each in its own region: each worker takes one, as its limit of one run lets it;
every target is a new process of ~8 s); `make chaos` runs the 50-target run of the fleet's closing note
(`OPSBOOK_E2E_FLEET_ACCOUNTS=25`: every account in both regions, each worker taking its runs one after the other).

Skips (saying what to install) when PostgreSQL's server binaries are missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import httpx
import pytest
import yaml

from tests.e2e.services import Postgres, PrefectServer, Worker, missing_postgres

ROOT = Path(__file__).resolve().parents[2]
POOL = "opsbook-fleet"
WORKERS = ("fleet-worker-a", "fleet-worker-b")
EXPECTED_SECONDS = 60  # this file on a busy 2-core machine: tests/conftest.py starts the costliest files first
N_ACCOUNTS = int(os.environ.get("OPSBOOK_E2E_FLEET_ACCOUNTS", "0")) or 2
ALL_PAIRS = "OPSBOOK_E2E_FLEET_ACCOUNTS" in os.environ  # every account in every region; else account i in region i
REGIONS = ("ap-northeast-2", "us-west-2")  # todo-app's own region, and one its inventory is re-pointed to
SYSTEM = "todo-app"  # the smallest inventory: the test is about distribution, not about daily-health

pytestmark = pytest.mark.skipif(missing_postgres() is not None, reason=str(missing_postgres()))


def accounts() -> list[str]:
    return [f"{100000000000 + i:012d}" for i in range(1, N_ACCOUNTS + 1)]


def target_pairs() -> list[tuple[str, str]]:
    """(account, region) of every target."""
    return [(a, r) for a in accounts() for r in REGIONS] if ALL_PAIRS else list(zip(accounts(), REGIONS))


def seed_target_accounts(sandbox) -> None:
    """The table todo-app's inventory names, in every target account and region (and nowhere else):
    a target that reads it proves the runbook ran with that account's credentials in that region."""
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=sandbox.endpoint)
    for acct in accounts():
        creds = sts.assume_role(RoleArn=f"arn:aws:iam::{acct}:role/opsbook-seed", RoleSessionName="seed")["Credentials"]
        for region in (r for a, r in target_pairs() if a == acct):
            ddb = boto3.client("dynamodb", region_name=region, endpoint_url=sandbox.endpoint, aws_access_key_id=creds["AccessKeyId"],
                               aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])
            ddb.create_table(TableName="todos", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                             AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")


def run_py(code: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"exit {out.returncode}\nstdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-5000:]}"
    return out


FLEET = """
import json
from flows.fleet.flow import deploy_target, fleet
dep_id = deploy_target({pool!r})
state = fleet(runbook="daily-health", targets_file={targets!r}, deployment="fleet-target/fleet-target",
              params={{"notify": False}}, timeout_s=600, poll_s=0.5, return_state=True)
report = state.result(raise_on_failure=False)
print(json.dumps({{"deployment_id": dep_id, "state": state.type.value, "message": state.message,
                  "report": report.model_dump(mode="json")}}))
"""


def test_fleet_over_many_targets_on_two_workers_with_postgres(sandbox, tmp_path):
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    seed_target_accounts(sandbox)
    targets = [{"account_id": a, "region": r, "system": SYSTEM} for a, r in target_pairs()]
    assert len(targets) == (2 * N_ACCOUNTS if ALL_PAIRS else min(N_ACCOUNTS, len(REGIONS)))
    targets_file = tmp_path / "targets.yaml"
    targets_file.write_text(yaml.safe_dump({"role_name": "opsbook-readonly", "targets": targets}))
    expected = {f"{SYSTEM}@{t['account_id']}/{t['region']}" for t in targets}

    storage = tempfile.mkdtemp(prefix="opsbook-fleet-results-")  # shared result storage: workers write, the fleet reads
    pg = server = None
    workers: list[Worker] = []
    try:
        pg = Postgres().start()
        timings["postgres"] = time.monotonic() - t0
        server = PrefectServer(pg.url).start()
        timings["server"] = time.monotonic() - t0
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(sandbox.env())
        env.update(server.client_env())
        env.update({"PREFECT_LOCAL_STORAGE_PATH": storage, "PREFECT_LOGGING_LEVEL": "WARNING"})
        with httpx.Client(base_url=server.api_url, timeout=30) as api:  # the pool; workers fill in its default job template
            api.post("/work_pools/", json={"name": POOL, "type": "process"}).raise_for_status()
        workers = [Worker(server, POOL, name, limit=1, env=env, cwd=ROOT).start() for name in WORKERS]
        out = json.loads(run_py(FLEET.format(pool=POOL, targets=str(targets_file)),
                                {**env, "PREFECT_HOME": str(tmp_path / "client-home")}, 900).stdout.strip().splitlines()[-1])
        timings["fleet"] = time.monotonic() - t0
        dep_id = out["deployment_id"]
        for w in workers:
            assert w.alive(), f"worker {w.name} died:\n{w.log()}"

        # the child runs, as the server recorded them
        with httpx.Client(base_url=server.api_url, timeout=30) as api:
            runs = api.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [dep_id]}}, "limit": 200}).json()
        assert len(runs) == len(targets), f"{len(runs)} fleet-target runs, not {len(targets)}"
        assert {r["state_type"] for r in runs} == {"COMPLETED"}, sorted((r["name"], r["state_type"], r["state"]["message"]) for r in runs)
        run_keys = [f"{r['parameters']['target']['system']}@{r['parameters']['target']['account_id']}/{r['parameters']['target']['region']}"
                    for r in runs]
        assert sorted(run_keys) == sorted(expected), "each target must have exactly one run"
        infra = {r["id"]: r["infrastructure_pid"] for r in runs}

        # the fleet's report: one finding per target, each read in its own account and region
        report = out["report"]
        per_target = [f for f in report["findings"] if f["check"] == "daily-health"]
        assert sorted(f["resource"] for f in per_target) == sorted(expected)
        pid_of = {w.name: w.pid for w in workers}
        seen_workers = []
        for f in per_target:
            d = f["details"]
            acct = f["resource"].split("@")[1].split("/")[0]
            assert d["identity"].startswith(f"arn:aws:sts::{acct}:assumed-role/opsbook-readonly/opsbook-fleet-"), d["identity"]
            assert d["calls"].get("sts:AssumeRole") == 1, d["calls"]
            assert d["calls"].get("dynamodb:DescribeContinuousBackups") == 1, (f["resource"], d["calls"])  # found its own table
            assert f["status"] == "CRIT", f  # the rest of todo-app is absent from these accounts
            assert d["worker"] in WORKERS, d
            assert str(infra[d["flow_run_id"]]).split(":")[-1] == str(d["pid"]), (d, infra[d["flow_run_id"]])  # the API agrees
            assert d["ppid"] == pid_of[d["worker"]], f"{f['resource']}: run process's parent {d['ppid']} is not worker {d['worker']}"
            seen_workers.append(d["worker"])
        assert set(seen_workers) == set(WORKERS), f"both workers must take part: {sorted(set(seen_workers))}"
        assert out["state"] == "FAILED" and report["status"] == "CRIT"  # CRIT targets end the fleet Failed
        assert report["api_calls"] == sum(f["value"] for f in per_target)
        share = {w: seen_workers.count(w) for w in WORKERS}
        busy = sum(float(r["total_run_time"]) for r in runs)
        timings["child runs' own time (sum)"] = busy
        timings["total"] = time.monotonic() - t0
        print(f"\nfleet e2e: {len(targets)} targets, runs per worker {share}, timings (s from start): "
              + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    finally:
        for w in workers:
            w.stop()
        if server is not None:
            server.stop()
        if pg is not None:
            pg.stop()
        import shutil

        shutil.rmtree(storage, ignore_errors=True)
