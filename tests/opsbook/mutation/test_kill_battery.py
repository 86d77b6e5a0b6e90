"""The kill battery (`make chaos`): kill -9 at every step boundary of every runbook on the mechanism, then run it again.

For each scenario a run without a kill gives the twin: the state it leaves and how many steps it takes. Then, for each
boundary (opsbook/mutation/steps.py: leased, intended, acted, recorded, settled), a run on a fresh sandbox is killed
there (SIGKILL, `OPSBOOK_CHAOS_KILL`) and the same command is run again, as the on-call engineer would, until it is
accepted (a live lease refuses it: the killed run's lapses after the inventory's lease_ttl_s). Then:

- nothing past its target, nothing lost: the resources read as the twin left them;
- nothing done twice: as many steps with an effect (applied, verified) as the twin took, none of them repeated;
- no step left open, and the re-run accepted within the lease's lifetime (plus the run's own time).

The figures go to stdout (pytest -s) and OPSBOOK_KILL_BATTERY_OUT (JSON), for the closing note.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from opsbook.inventory import load_system
from opsbook.mutation import statestore
from opsbook.registry import RUNBOOKS

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[3]
OPSBOOK = [sys.executable, "-m", "opsbook.cli"]
BOUNDARIES = ["leased", "intended", "acted", "recorded", "settled"]
TTL_S = 10  # the battery's lease lifetime (the default, 60 s, is tried once: test_a_rerun_after_a_kill_waits_about_a_minute)


def _fault(name: str) -> Callable[[Any, Any], None]:
    def setup(sb, system):
        from sandbox.faults import apply_fault
        apply_fault(sb, system, name)
    return setup


def _scenarios(*names: str) -> Callable[[Any, Any], None]:
    def setup(sb, system):
        from sandbox.capacity import apply_scenario
        for n in names:
            apply_scenario(sb, system, n)
    return setup


def _provisioned_table(table: str, read: int, write: int) -> Callable[[Any, Any], None]:
    def setup(sb, system):
        from sandbox.capacity import apply_scenario, make_provisioned
        apply_scenario(sb, system, "ecs-scalable-target")
        make_provisioned(sb, system, table, read, write)
    return setup


def _opensearch(name: str) -> Callable[[Any, Any], None]:
    def setup(sb, system):
        from sandbox.opensearch_faults import apply_scenario
        apply_scenario(sb, system, name)
    return setup


def _dead_letters(count: int) -> Callable[[Any, Any], None]:
    def setup(sb, system):
        from sandbox import leh_queues
        leh_queues.consumer_mapping(sb, system)
        leh_queues.fill_dlq(sb, system, count)
    return setup


def _spend(cases: dict[str, tuple[float, float]]) -> Callable[[Any, Any], None]:
    def setup(sb, system):
        from sandbox import leh_spend
        leh_spend.event_source_mapping(sb, system)
        leh_spend.normal_traffic(sb, system)
        leh_spend.publish(sb, system, system.bill_shock.case_dimension, cases)
    return setup


def _lambda_timeouts(sb, system):
    from sandbox import lambda_timeouts as sc
    pre, dae = "ProjectRecommendationEngine", "DomainAnalysisEngine"
    for fn in (pre, dae):  # deployed at 30 s / 512 MB, below the inventory's expected_* (the seed's sizes)
        sc.configure(sb, system, fn, timeout_s=30, memory_mb=512)
    sc.healthy_lambdas(sb, system, skip=(pre, dae))
    sc.lambda_timeouts(sb, system, pre, others_healthy=False)
    sc.lambda_timeouts(sb, system, dae, others_healthy=False)


def _incident(sb, system):
    from sandbox.security import incident
    incident(sb, system)


# (id, runbook, system, set-up, params)
SCENARIOS = [
    ("rollback-alias", "emergency-rollback", "todo-app", _fault("bad-release"), ["accept_guess=true", "settle_timeout_s=10"]),
    ("rollback-ecs", "emergency-rollback", "t-developer", _fault("bad-deploy"), ["settle_timeout_s=5"]),
    ("backup-fixes", "backup-verify", "hr-resource-optimization", lambda sb, s: None, []),
    ("dynamodb-on-demand", "remediate-dynamodb-throttling", "hr-resource-optimization", _scenarios("throttled-provisioned-table"),
     ["settle_timeout_s=10"]),
    ("scale-ecs", "scale-service", "t-developer", _scenarios("ecs-scalable-target", "ecs-tasks-pending"), ["desired=10", "settle_timeout_s=5"]),
    # a rotation (its new version is not known before the call) and a bucket lock, independent steps
    ("security-rotate-and-lock", "security-incident", "t-developer", _incident,
     ['rotate_secrets=["t-developer/production/api-keys"]', 'lock_buckets=["t-developer-projects-production"]']),
    # a retry has no value to set: its step is reached once the failed copies are no longer the ones planned on
    ("opensearch-retry", "remediate-opensearch-red", "hr-resource-optimization", _opensearch("failed-allocation"),
     ["settle_timeout_s=10", "poll_s=0.5"]),
    # a move of messages, not a value: its step is reached once the DLQ holds fewer than when it started
    ("dlq-redrive", "dlq-redrive", "leh", _dead_letters(40), ["visibility_timeout_s=2"]),
    # two cases tripped by policy (no person approves a trip), then the whole worker paused behind approval
    ("bill-shock-trip", "bill-shock-breaker", "leh", _spend({"spike-a": (6000.0, 90000.0), "spike-b": (6000.0, 90000.0)}), []),
    ("bill-shock-pause", "bill-shock-breaker", "leh", _spend({f"hot-{i}": (60000.0, 60000.0) for i in range(30)}), ["mode=escalate"]),
    # three steps (a timeout; a function behind the API: more memory, then its timeout aligned below the API's)
    ("lambda-timeout", "remediate-lambda-timeout", "hr-resource-optimization", _lambda_timeouts, ["observe_s=0"]),
    # a missing log retention (the seed's worker log group), an independent fix
    ("log-retention", "maintenance-audit", "leh", lambda sb, s: None, []),
    # a function's memory and timeout off the inventory's expected_* (set back), next to its log group's missing retention
    ("lambda-config-drift", "maintenance-audit", "todo-app", _fault("lambda-config-drift"), []),
    # three steps in one plan (desired count, the auto scaling minimum, the table's write capacity): kills at the 1st and 3rd
    ("scale-ecs-hold-and-table", "scale-service", "t-developer", _provisioned_table("t-developer-metadata-production", 5, 5),
     ["desired=6", "hold=true", "table=t-developer-metadata-production", "write_units=9", "settle_timeout_s=5"]),
    # a restart is no value either: reached once the deployment it replaces is PRIMARY no more; the re-run restarts nothing
    ("restart-ecs", "restart-service", "t-developer", _fault("ecs-rolling-restart"), ["agent=parser", "settle_timeout_s=5"]),
]
RESULTS: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def prefect_env(local_prefect):
    yield local_prefect
    out_file = os.environ.get("OPSBOOK_KILL_BATTERY_OUT")
    if out_file:
        Path(out_file).write_text(json.dumps(RESULTS, indent=1))


def inventory_copy(tmp_path: Path, system: str, ttl_s: int) -> Path:
    """The system's inventory with the battery's lease lifetime (same name: the same records and sandbox seed)."""
    data = yaml.safe_load((ROOT / "systems" / f"{system}.yaml").read_text())
    data.setdefault("mutations", {})["lease_ttl_s"] = ttl_s
    path = tmp_path / f"{system}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_cli(env: dict, sandbox, runbook: str, inv: Path, params: list[str], kill_at: str | None = None) -> tuple[int, dict | None, str]:
    full = {**env, **sandbox.env()}
    full.pop("OPSBOOK_CHAOS_KILL", None)
    if kill_at:
        full["OPSBOOK_CHAOS_KILL"] = kill_at
    args = ["run", runbook, "--system", str(inv), "--execute", "--yes", "--json"] + [x for p in params for x in ("--param", p)]
    out = subprocess.run(OPSBOOK + args, env=full, capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = [l for l in out.stdout.splitlines() if l.strip().startswith("{")]
    return out.returncode, (json.loads(lines[-1]) if lines else None), out.stderr


def fresh(sandbox, system: str, setup) -> Any:
    from opsbook import aws
    from sandbox.seed import seed_system
    sandbox.reset()
    aws.reset_clients()
    inv = load_system(system)
    seed_system(sandbox, inv)
    setup(sandbox, inv)
    return inv


ROTATION = "secret-rotation"  # its new version's id differs from run to run: compared as "rotated from the start value"
RESTART = "ecs-force-new-deployment"  # so does a new deployment's id: compared the same way


def appliers_of(runbook: str) -> dict[str, Any]:
    module = importlib.import_module(RUNBOOKS[runbook].module)
    return module.APPLIERS if hasattr(module, "APPLIERS") else module.appliers({})


def live(runbook: str, inv, resources: list[tuple[str, str]], start: dict[str, str] | None = None) -> dict[str, str]:
    appliers = appliers_of(runbook)
    out = {f"{k}|{r}": appliers[k].read(inv, r) for k, r in resources}
    if start is not None:
        out = {key: ("rotated" if v != start[key] else "not rotated") if key.startswith((ROTATION, RESTART)) else v for key, v in out.items()}
    return out


def effects(inv, runbook: str) -> list[tuple[str, str, str, str]]:
    """(kind, resource, before, after) of every step with an effect, from the durable records (last word per step). A step
    whose effect is not a value it sets (``reached``: a rotation, a retry, a move) is compared by its effect: its outcome
    says what was done (a count, a new version) when the run finished it, or the value read when a re-run closed it."""
    appliers = appliers_of(runbook)
    return sorted((r["kind"], r["resource"], "the version before" if r["kind"] in (ROTATION, RESTART) else r["before"],
                   "reached" if appliers[r["kind"]].reached is not None else str(r["after"]))
                  for r in statestore.read_records(inv) if r.get("runbook") == runbook and r["status"] in ("applied", "verified"))


def rerun_until_accepted(env, sandbox, runbook, inv_path, params, limit_s: float) -> tuple[int, dict, float, int]:
    """The same command again, as the on-call engineer would, until no live lease refuses it. (rc, report, seconds, refusals)."""
    t0, refusals = time.monotonic(), 0
    while True:
        rc, report, err = run_cli(env, sandbox, runbook, inv_path, params)
        assert report is not None, err[-3000:]
        text = json.dumps(report.get("findings", []))
        if report.get("outcome") == "refused" and any(w in text for w in ("being changed by", "live run holds", "stopped part-way")):
            refusals += 1
            assert time.monotonic() - t0 < limit_s, f"still refused after {limit_s} s: {text[-800:]}"
            time.sleep(1)
            continue
        return rc, report, time.monotonic() - t0, refusals


@pytest.mark.parametrize("sid, runbook, system, setup, params", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_kill_at_every_step_boundary_then_rerun(prefect_env, sandbox, tmp_path, sid, runbook, system, setup, params):
    inv_path = inventory_copy(tmp_path, system, TTL_S)
    inv = fresh(sandbox, system, setup)
    rc, twin, err = run_cli(prefect_env, sandbox, runbook, inv_path, params)
    # the twin acts; its exit code may say WARN or CRIT about the system (an ECS rollout the sandbox never finishes,
    # an OpenSearch snapshot repository it lacks): the re-runs must end no worse
    assert rc in (0, 1, 2) and twin and twin["outcome"] in ("done", "done-with-warnings"), err[-3000:]
    twin_rc = rc
    resources = [(a["kind"], a["resource"]) for a in twin["plan"]["actions"]]
    twin_start = {f"{a['kind']}|{a['resource']}": a["current"] for a in twin["plan"]["actions"]}
    want_state, want_effects = live(runbook, inv, resources, twin_start), effects(inv, runbook)
    assert want_effects, "the twin took no step: the scenario tests nothing"
    steps_n = len(resources)
    for boundary in BOUNDARIES:
        for nth in sorted({1, steps_n}) if boundary in ("intended", "acted", "recorded") else [1]:
            inv = fresh(sandbox, system, setup)
            start_state = live(runbook, inv, resources)
            norm = lambda: live(runbook, inv, resources, start_state)  # noqa: E731
            kill_at = f"{boundary}:{nth}"
            rc, _, err = run_cli(prefect_env, sandbox, runbook, inv_path, params, kill_at=kill_at)
            landed = rc == -9
            mid_state = live(runbook, inv, resources)
            rc2, again, waited, refusals = rerun_until_accepted(prefect_env, sandbox, runbook, inv_path, params, limit_s=TTL_S + 60)
            got_state, got_effects = norm(), effects(inv, runbook)
            row = {"scenario": sid, "runbook": runbook, "kill_at": kill_at, "landed": landed, "changed_before_kill":
                   mid_state != start_state, "rerun_outcome": again["outcome"], "rerun_wait_s": round(waited, 1),
                   "refusals": refusals, "state_as_twin": got_state == want_state, "effects": len(got_effects),
                   "twin_effects": len(want_effects), "open_intents": len(statestore.open_intents(inv))}
            RESULTS.append(row)
            print("kill-battery", json.dumps(row), flush=True)
            # no worse than the twin; or nothing left to do and a check that cannot judge yet (a function changed a moment
            # ago has no invocations since: UNKNOWN, exit 3), never about the steps themselves
            blind = [f"{f['check']} {f['resource']}: {f['summary'][:160]}" for f in again["findings"] if f["status"] == "UNKNOWN"]
            row["unknown"] = blind
            assert again["outcome"] in ("done", "done-with-warnings", "nothing-to-do"), (kill_at, again["findings"])
            assert rc2 <= twin_rc or (again["outcome"] == "nothing-to-do" and blind and not any(
                b.startswith(("open-intent", "open-plan")) for b in blind)), (kill_at, rc2, blind or again["findings"])
            assert not [f for f in again["findings"] if f["check"] == "open-intent" and f["status"] != "OK"], (kill_at, again["findings"])
            assert got_state == want_state, (kill_at, got_state, want_state)  # nothing past its target, nothing lost
            assert got_effects == want_effects, (kill_at, got_effects, want_effects)  # nothing done twice
            assert row["open_intents"] == 0
            assert waited < TTL_S + 45, (kill_at, waited)


def test_a_rerun_after_a_kill_waits_about_a_minute(prefect_env, sandbox, tmp_path):
    """The default lease lifetime (60 s): killed between its AWS call and its record, the rollback's re-run is accepted
    within about a minute, and it finishes the step instead of rolling back further."""
    inv_path = inventory_copy(tmp_path, "todo-app", 60)
    inv = fresh(sandbox, "todo-app", _fault("bad-release"))
    params = ["accept_guess=true", "settle_timeout_s=10"]
    rc, _, _ = run_cli(prefect_env, sandbox, "emergency-rollback", inv_path, params, kill_at="acted:1")
    assert rc == -9
    rc2, again, waited, refusals = rerun_until_accepted(prefect_env, sandbox, "emergency-rollback", inv_path, params, limit_s=120)
    RESULTS.append({"scenario": "rollback-alias, default lease", "kill_at": "acted:1", "rerun_wait_s": round(waited, 1), "refusals": refusals,
                    "rerun_outcome": again["outcome"]})
    print("kill-battery", json.dumps(RESULTS[-1]), flush=True)
    assert rc2 == 0 and again["outcome"] == "nothing-to-do" and waited < 90
    assert live("emergency-rollback", inv, [("lambda-alias", "todo-api:LIVE")]) == {"lambda-alias|todo-api:LIVE": "1"}


# --- dr-test: its steps make copies; after a kill nothing of them may stay -----------------------------------------


def _dr_backups(sb, system):
    """hr-resource-optimization with something to restore of each kind: a table's backup, a previous object version, a snapshot."""
    import boto3
    kw = dict(region_name=system.region, endpoint_url=sb.endpoint)
    ddb, s3 = boto3.client("dynamodb", **kw), boto3.client("s3", **kw)
    for t in system.dynamodb_tables:
        keys = ddb.describe_table(TableName=t.name)["Table"]["KeySchema"]
        for i in range(10):
            ddb.put_item(TableName=t.name, Item={k["AttributeName"]: {"S": f"dr-{i}"} for k in keys})
        ddb.create_backup(TableName=t.name, BackupName=f"{t.name}-nightly")
    bucket = system.s3_buckets[0].name
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for v in ("first", "second"):
        s3.put_object(Bucket=bucket, Key="cv/kim.pdf", Body=v.encode())
    domain = system.opensearch_domains[0]
    sb.opensearch.add_snapshot(domain.name, domain.snapshot_repository, "nightly", ["employee_profiles"])


def dr_copies(inv, sandbox) -> list[str]:
    """Every DR test copy of the system left anywhere: tables, objects under its prefix, drtest_ indices."""
    import boto3

    from flows.dr_test import flow as drt
    from flows.dr_test.judge import INDEX_PREFIX, dr_bucket, is_copy
    ddb = boto3.client("dynamodb", region_name=inv.region, endpoint_url=sandbox.endpoint)
    left = [f"table {t}" for t in ddb.list_tables()["TableNames"] if is_copy(inv, t)]
    bucket = dr_bucket(inv, statestore_account(inv))
    if drt.object_copies(inv, f"s3://{bucket}/drtest/{inv.name}/") != drt.ABSENT:
        left.append(f"objects s3://{bucket}/drtest/{inv.name}/")
    for d in inv.opensearch_domains:
        where = f"{inv.dr.opensearch_dr_domain or d.name}/{INDEX_PREFIX}*"
        if d.snapshot_repository and drt.index_copies(inv, where) != drt.ABSENT:
            left.append(f"indices {where}")
    return left


def statestore_account(inv) -> str:
    from opsbook import aws
    return aws.caller_identity(inv.region)["account"]


def test_dr_test_killed_at_every_step_boundary_leaves_no_copy(prefect_env, sandbox, tmp_path):
    system = "hr-resource-optimization"
    inv_path = inventory_copy(tmp_path, system, TTL_S)
    inv = fresh(sandbox, system, _dr_backups)
    rc, twin, err = run_cli(prefect_env, sandbox, "dr-test", inv_path, [])
    assert twin and twin["outcome"] == "done", [(f["check"], f["resource"], f["status"], f["summary"]) for f in (twin or {}).get("findings", [])] or err[-3000:]
    twin_rc = rc
    kinds = sorted({a["kind"] for a in twin["plan"]["actions"]})
    assert kinds == ["restore-indices", "restore-objects", "restore-table"], kinds  # copies of each kind
    assert dr_copies(inv, sandbox) == []
    for kill_at in ["leased:1", "intended:1", "intended:3", "acted:1", "acted:3", "recorded:1", "settled:1"]:
        inv = fresh(sandbox, system, _dr_backups)
        rc, _, err = run_cli(prefect_env, sandbox, "dr-test", inv_path, [], kill_at=kill_at)
        landed = rc == -9
        left_by_kill = dr_copies(inv, sandbox)
        rc2, again, waited, refusals = rerun_until_accepted(prefect_env, sandbox, "dr-test", inv_path, [], limit_s=TTL_S + 60)
        row = {"scenario": "dr-test-copies", "runbook": "dr-test", "kill_at": kill_at, "landed": landed, "copies_after_kill":
               len(left_by_kill), "rerun_outcome": again["outcome"], "rerun_wait_s": round(waited, 1), "refusals": refusals,
               "copies_after_rerun": len(dr_copies(inv, sandbox)), "open_intents": len(statestore.open_intents(inv))}
        RESULTS.append(row)
        print("kill-battery", json.dumps(row), flush=True)
        # a kill after a copy was made leaves leftovers: the re-run removes them first and says so (WARN)
        assert again["outcome"] in ("done", "done-with-warnings") and rc2 in (twin_rc, 1), (kill_at, again["findings"])
        assert (again["outcome"] == "done") == (not left_by_kill), (kill_at, left_by_kill, again["findings"])
        assert row["copies_after_rerun"] == 0 and row["open_intents"] == 0, (kill_at, dr_copies(inv, sandbox))
        assert not [f for f in again["findings"] if f["check"] == "open-intent" and f["status"] != "OK"], (kill_at, again["findings"])
        assert waited < TTL_S + 45, (kill_at, waited)



# --- reindex-case: its steps are read through the case the run resolved (the case's row in the sandbox's PostgreSQL, its
# index) -------------


def test_reindex_case_killed_at_every_step_boundary_restores_once(prefect_env, sandbox, case_postgres, tmp_path):
    from sandbox.leh_cases import case_status, delete_case, seed_case
    case, index = "CASE-2025-0042", "evidence-case-2025-0042"

    def setup(sb, system):
        seed_case(sb, system, "CASE-OTHER", 4)  # a neighbour that must never be touched
        seed_case(sb, system, case, 30)
        delete_case(sb, system, case)

    def state() -> tuple[str | None, int | None, int, str | None]:
        try:
            docs = len(sandbox.opensearch.docs("leh-cases", index))
        except KeyError:
            docs = None
        return (case_status(sandbox, inv, case), docs, len(sandbox.opensearch.docs("leh-cases", "evidence-case-other")),
                case_status(sandbox, inv, "CASE-OTHER"))

    def steps_taken(inv) -> list[tuple[str, str]]:  # the outcome's words differ when a re-run closed the step: its effect counts
        return sorted((r["kind"], r["before"]) for r in statestore.read_records(inv)
                      if r.get("runbook") == "reindex-case" and r["status"] in ("applied", "verified"))

    system, params = "leh", [f"case_id={case}"]
    inv_path = inventory_copy(tmp_path, system, TTL_S)
    inv = fresh(sandbox, system, setup)
    rc, twin, err = run_cli(prefect_env, sandbox, "reindex-case", inv_path, params)
    assert twin and twin["outcome"] == "done", err[-3000:]
    want_state, want_steps = state(), steps_taken(inv)
    assert want_state == ("active", 30, 4, "active") and len(want_steps) == 2
    for kill_at in ["leased:1", "intended:1", "intended:2", "acted:1", "acted:2", "recorded:1", "recorded:2", "settled:1"]:
        inv = fresh(sandbox, system, setup)
        rc, _, err = run_cli(prefect_env, sandbox, "reindex-case", inv_path, params, kill_at=kill_at)
        mid = state()
        rc2, again, waited, refusals = rerun_until_accepted(prefect_env, sandbox, "reindex-case", inv_path, params, limit_s=TTL_S + 60)
        row = {"scenario": "reindex-case", "runbook": "reindex-case", "kill_at": kill_at, "landed": rc == -9,
               "changed_before_kill": mid != ("closed", None, 4, "active"), "rerun_outcome": again["outcome"], "rerun_wait_s": round(waited, 1),
               "refusals": refusals, "state_as_twin": state() == want_state, "effects": len(steps_taken(inv)),
               "twin_effects": len(want_steps), "open_intents": len(statestore.open_intents(inv))}
        RESULTS.append(row)
        print("kill-battery", json.dumps(row), flush=True)
        assert again["outcome"] in ("done", "done-with-warnings", "nothing-to-do") and rc2 <= rc_twin(twin), (kill_at, again["findings"])
        assert row["state_as_twin"] and steps_taken(inv) == want_steps and row["open_intents"] == 0, (kill_at, state(), steps_taken(inv))
        assert waited < TTL_S + 45, (kill_at, waited)


def rc_twin(report: dict) -> int:
    return {"OK": 0, "WARN": 1, "CRIT": 2}.get(report["status"], 3)


# --- restore-table (items): its steps are groups of conditional item writes, read through the keys in their resources ----


def _table_items_lost(sb, system) -> str:
    """todos with 25 items, a backup of them, then 12 deleted (two groups of writes), one edited after the backup (newer:
    never overwritten) and one added. The backup's ARN (the restore point)."""
    from sandbox.faults import apply_fault
    return apply_fault(sb, system, "table-items-deleted", items=25, deleted=12)["backup_arn"]


@pytest.mark.parametrize("sid", ["restore-table-items"])
def test_restore_table_items_killed_at_every_step_boundary_writes_each_item_once(prefect_env, sandbox, tmp_path, sid):
    import boto3

    from flows.restore_table import judge as rtj
    system = "todo-app"
    inv_path = inventory_copy(tmp_path, system, TTL_S)

    def setup() -> tuple[Any, list[str]]:
        arn: list[str] = []
        inv = fresh(sandbox, system, lambda sb, s: arn.append(_table_items_lost(sb, s)))
        return inv, ["table=todos", f"restore_point={arn[0]}"]

    def state(inv) -> tuple[dict[str, str], int]:
        ddb = boto3.client("dynamodb", region_name=inv.region, endpoint_url=sandbox.endpoint)
        rows = {it["id"]["S"]: it["title"]["S"] for it in ddb.scan(TableName="todos", ConsistentRead=True)["Items"]}
        return rows, len([t for t in ddb.list_tables()["TableNames"] if t.startswith("todos-restore-")])

    def groups_written(inv) -> list[str]:
        return sorted(r["resource"] for r in statestore.read_records(inv)
                      if r.get("runbook") == "restore-table" and r["kind"] == rtj.ITEMS_KIND and r["status"] in ("applied", "verified"))

    inv, params = setup()
    rc, twin, err = run_cli(prefect_env, sandbox, "restore-table", inv_path, params)
    assert twin and twin["outcome"] == "done", err[-3000:]
    want_state, want_groups = state(inv), groups_written(inv)
    assert len(want_groups) == 2 and want_state[1] == 1 and len(want_state[0]) == 26
    assert want_state[0]["t24"] == "edited after the backup" and want_state[0]["t00"] == "task 0"
    for kill_at in ["leased:1", "intended:1", "intended:2", "acted:1", "acted:2", "recorded:1", "recorded:2", "settled:1"]:
        inv, params = setup()
        rc, _, err = run_cli(prefect_env, sandbox, "restore-table", inv_path, params, kill_at=kill_at)
        rc2, again, waited, refusals = rerun_until_accepted(prefect_env, sandbox, "restore-table", inv_path, params, limit_s=TTL_S + 60)
        row = {"scenario": sid, "runbook": "restore-table", "kill_at": kill_at, "landed": rc == -9, "rerun_outcome": again["outcome"],
               "rerun_wait_s": round(waited, 1), "refusals": refusals, "state_as_twin": state(inv) == want_state,
               "effects": len(groups_written(inv)), "twin_effects": len(want_groups), "open_intents": len(statestore.open_intents(inv))}
        RESULTS.append(row)
        print("kill-battery", json.dumps(row), flush=True)
        assert again["outcome"] in ("done", "done-with-warnings", "nothing-to-do"), (kill_at, again["findings"])
        assert not [f for f in again["findings"] if f["check"] == "open-intent" and f["status"] != "OK"], (kill_at, again["findings"])
        assert state(inv) == want_state, (kill_at, state(inv))  # every lost item back once, the newer one untouched, one copy
        assert groups_written(inv) == want_groups and row["open_intents"] == 0, (kill_at, groups_written(inv))
        assert waited < TTL_S + 45, (kill_at, waited)


# --- restore-index: an index deleted behind its alias comes back from its snapshot as a restored copy, the alias moved onto
# it; an index read by its name is snapshotted, then restored in place. Steps read through the cluster (_recovery, _alias) --


@pytest.mark.parametrize("sid", ["restore-index-alias", "restore-index-in-place"])
def test_restore_index_killed_at_every_step_boundary_restores_once(prefect_env, sandbox, tmp_path, sid):
    from opensearchpy import OpenSearch

    from sandbox.faults import apply_fault
    system, domain, index = "hr-resource-optimization", "hr-resource-optimization-team2", "employee_profiles"
    aliased = sid == "restore-index-alias"
    lost: list[dict[str, Any]] = []

    def setup(sb, s):  # aliased: gone, its alias with it; in place: 2 documents deleted. A snapshot "nightly" holds it whole
        lost.append(apply_fault(sb, s, "index-deleted" if aliased else "index-damaged"))

    def state() -> tuple[dict[str, list[str]], int | None, list[str], str | None, list[tuple[str, str]]]:
        """(aliases, documents where the application reads them, restored copies, the index's state (None: absent),
        pre-restore snapshots and their states)."""
        os_ = OpenSearch(sandbox.opensearch.url_for(domain), timeout=5, max_retries=0)
        rows = {r["index"]: r["status"] for r in os_.cat.indices(format="json")}
        aliases = sandbox.opensearch.aliases(domain)
        read = alias if aliased else index
        docs = os_.count(index=read)["count"] if read in aliases or rows.get(read) == "open" else None
        snaps = os_.snapshot.get(repository=lost[-1]["repository"], snapshot="_all")["snapshots"]
        return (aliases, docs, sorted(n for n in rows if n.startswith(f"{index}-restored-")), rows.get(index),
                sorted((x["snapshot"], x["state"]) for x in snaps if x["snapshot"].startswith("pre-restore-")))

    def steps_taken(inv) -> list[tuple[str, str, str]]:  # a step a re-run closed has other words: its effect counts
        return sorted((r["kind"], r["resource"], r["before"]) for r in statestore.read_records(inv)
                      if r.get("runbook") == "restore-index" and r["status"] in ("applied", "verified"))

    def rto(report: dict) -> float | None:
        return next((f["value"] for f in report["findings"] if f["check"] == "restore-rto"), None)

    inv_path = inventory_copy(tmp_path, system, TTL_S)
    inv = fresh(sandbox, system, setup)
    alias, copy, docs = lost[-1].get("alias"), f"{index}-restored-nightly", lost[-1]["documents"]
    params = [f"index={index}", "poll_s=0.2"] + ([f"alias={alias}"] if aliased else [])  # snapshot=latest
    rc, twin, err = run_cli(prefect_env, sandbox, "restore-index", inv_path, params)
    assert twin and twin["outcome"] == "done", err[-3000:]
    want_state, want_steps = state(), steps_taken(inv)
    assert want_state == (({alias: [copy]}, docs, [copy], None, []) if aliased else
                          ({}, docs, [], "open", [(f"pre-restore-{index}-nightly", "SUCCESS")])), want_state
    assert [k for k, _, _ in want_steps] == (["index-alias", "index-restore"] if aliased else ["index-data", "index-pre-snapshot"])
    RESULTS.append({"scenario": sid, "runbook": "restore-index", "kill_at": None, "twin_rto_s": rto(twin)})
    print("kill-battery", json.dumps(RESULTS[-1]), flush=True)
    for kill_at in ["leased:1", "intended:1", "intended:2", "acted:1", "acted:2", "recorded:1", "recorded:2", "settled:1"]:
        inv = fresh(sandbox, system, setup)
        start = state()
        rc, _, err = run_cli(prefect_env, sandbox, "restore-index", inv_path, params, kill_at=kill_at)
        mid = state()
        rc2, again, waited, refusals = rerun_until_accepted(prefect_env, sandbox, "restore-index", inv_path, params, limit_s=TTL_S + 60)
        row = {"scenario": sid, "runbook": "restore-index", "kill_at": kill_at, "landed": rc == -9,
               "changed_before_kill": mid != start, "rerun_outcome": again["outcome"], "rerun_wait_s": round(waited, 1),
               "refusals": refusals, "state_as_twin": state() == want_state, "effects": len(steps_taken(inv)),
               "twin_effects": len(want_steps), "open_intents": len(statestore.open_intents(inv)), "rerun_rto_s": rto(again)}
        RESULTS.append(row)
        print("kill-battery", json.dumps(row), flush=True)
        assert again["outcome"] in ("done", "done-with-warnings", "nothing-to-do") and rc2 <= rc_twin(twin), (kill_at, again["findings"])
        assert not [f for f in again["findings"] if f["check"] == "open-intent" and f["status"] != "OK"], (kill_at, again["findings"])
        # the snapshot's documents where the application reads them (aliased: the alias on the one restored copy; in place:
        # the index open), no second copy, one pre-restore snapshot (in place), each step once
        assert state() == want_state, (kill_at, state())
        assert steps_taken(inv) == want_steps and row["open_intents"] == 0, (kill_at, steps_taken(inv))
        assert waited < TTL_S + 45, (kill_at, waited)
