"""The mutation session end to end, once for every mutating runbook: approval in the UI (the form, the notice), a
rejection, an approval timeout, drift between plan and approval, a lease held elsewhere, a failure part-way undone
step by step, a pinned account. Driven through the smallest mutating runbook on the sandbox (emergency-rollback on
todo-app's one alias: a single step); each runbook's own tests prove only its steps (read, apply, reached, settled)
and its judging. The mechanism's parts without Prefect: test_steps.py (leases, fencing, intents, recovery),
test_core.py (plan, fingerprint, approval)."""

from __future__ import annotations

import threading

import boto3
import pytest

from flows.emergency_rollback import flow as rb
from flows.emergency_rollback.flow import emergency_rollback
from opsbook.findings import Status
from opsbook.inventory import load_file
from opsbook.mutation import statestore
from sandbox.faults import apply_fault
from tests.flows.emergency_rollback.test_flow import alias_version, run  # the vehicle
from tests.helpers import inbox, wait_paused

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _run_in_thread(**params):
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("report", run(**params)), daemon=True)
    t.start()
    return t, out


def test_ui_approval_through_the_prefect_api(seeded, sandbox):
    from prefect.flow_runs import resume_flow_run

    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    messages = inbox(sandbox, "ap-northeast-2", ":alerts")
    t, out = _run_in_thread(system="todo-app", dry_run=False, approval_timeout_s=60, settle_timeout_s=10)
    run_id = wait_paused()
    assert alias_version(sandbox) == "2"  # nothing before approval
    # the system's topic is told once, with the plan and the run's link in the UI
    [asked] = messages()
    assert "approval needed" in asked["Subject"] and "todo-api:LIVE: 2 -> 1" in asked["Message"]
    assert f"/runs/flow-run/{run_id}" in asked["Message"] and "accept_guess" in asked["Message"]
    form = _pause_form(run_id)  # the Resume form: the guess box, and no shell flags in the UI's text
    assert form["schema"]["properties"]["accept_guess"]["default"] is False
    assert "default" not in form["schema"]["properties"]["approver"]  # a self-hosted server knows no user: the approver types it
    assert "Plan: emergency-rollback · todo-app" in form["description"] and "to_revision set" in form["description"]
    assert "--param" not in form["description"] and "--yes" not in form["description"]
    resume_flow_run(run_id, run_input={"approve": True, "approver": "alice", "reason": "INC-42 P0", "accept_guess": True})
    t.join(60)
    report = out["report"]
    assert report.outcome == "done" and alias_version(sandbox) == "1"
    assert report.approval["approver"] == "alice" and report.approval["via"] == "ui" and report.records[0]["approver"] == "alice"
    later = messages()  # the two notices of the change itself; no second approval notice
    assert len(later) == 2 and not any("approval needed" in m["Subject"] for m in later), [m["Subject"] for m in later]


def _pause_form(run_id) -> dict:
    """What the UI's Resume modal shows for a paused run: the form's schema and its description."""
    from prefect.client.orchestration import get_client
    from prefect.input import keyset_from_paused_state
    from prefect.input.actions import read_flow_run_input

    with get_client(sync_client=True) as client:
        keyset = keyset_from_paused_state(client.read_flow_run(run_id).state)
    return {k: read_flow_run_input(keyset[k], flow_run_id=run_id) for k in ("schema", "description")}


def test_ui_rejection_changes_nothing(seeded, sandbox):
    from prefect.flow_runs import resume_flow_run

    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    t, out = _run_in_thread(system="todo-app", dry_run=False, approval_timeout_s=60)
    resume_flow_run(wait_paused(), run_input={"approve": False, "approver": "bob", "reason": "not this one"})
    t.join(60)
    report = out["report"]
    assert report.outcome == "refused" and report.status is Status.UNKNOWN and "rejected by bob" in report.findings[-1].summary
    assert alias_version(sandbox) == "2" and report.records == []


def test_approval_timeout_ends_the_run_and_changes_nothing(seeded, sandbox):
    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    state = emergency_rollback(system="todo-app", dry_run=False, approval_timeout_s=3, return_state=True)
    # Prefect expires the pause itself: the run ends Failed ("never resumed") and cannot be resumed later.
    assert state.is_failed() and "never resumed" in state.message
    assert alias_version(sandbox) == "2"


def test_drift_between_plan_and_approval_stops_the_run(seeded, sandbox):
    from prefect.flow_runs import resume_flow_run

    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    t, out = _run_in_thread(system="todo-app", dry_run=False, approval_timeout_s=60)
    run_id = wait_paused()
    apply_fault(sandbox, todo, "bad-release")  # someone ships v3 while the plan waits for approval
    resume_flow_run(run_id, run_input={"approve": True, "approver": "alice", "reason": "go", "accept_guess": True})
    t.join(60)
    report = out["report"]
    assert report.outcome == "refused" and "was 2 when planned and is now 3" in report.findings[-1].summary
    assert alias_version(sandbox) == "3" and report.records == []


def test_a_lease_held_elsewhere_refuses_naming_the_holder(seeded, sandbox):
    todo = seeded("todo-app")
    apply_fault(sandbox, todo, "bad-release")
    statestore.acquire_lease(todo, "todo-api:LIVE", "lee@laptop run other", "other-run", ttl_s=120)
    report = run("todo-app", dry_run=False, approval="yes", accept_guess=True)
    assert report.outcome == "refused" and "lee@laptop run other" in report.findings[-1].summary and "expires at" in report.findings[-1].summary
    assert alias_version(sandbox) == "2"
    statestore.release_lease(todo, "todo-api:LIVE", "other-run")
    assert run("todo-app", dry_run=False, approval="yes", accept_guess=True, settle_timeout_s=10).outcome == "done"


def test_failure_part_way_undoes_what_was_done(seeded, sandbox, tmp_path, monkeypatch):
    seeded("todo-app")
    lam = boto3.client("lambda", region_name="ap-northeast-2", endpoint_url=sandbox.endpoint)
    for fn in ("todo-api", "todo-worker"):
        if fn == "todo-worker":
            role = lam.get_function(FunctionName="todo-api")["Configuration"]["Role"]
            lam.create_function(FunctionName=fn, Runtime="python3.12", Role=role, Handler="h.h", Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18})
            lam.publish_version(FunctionName=fn)
            lam.create_alias(FunctionName=fn, Name="LIVE", FunctionVersion="1")
        lam.update_function_configuration(FunctionName=fn, Description="v-next")
        v = lam.publish_version(FunctionName=fn)["Version"]
        lam.update_alias(FunctionName=fn, Name="LIVE", FunctionVersion=v)
    inv = tmp_path / "two.yaml"
    inv.write_text("name: two\nregion: ap-northeast-2\nlambda_functions:\n  - {name: todo-api, aliases: [LIVE]}\n  - {name: todo-worker, aliases: [LIVE]}\n")
    real = rb.APPLIERS[rb.ALIAS_KIND]

    def flaky_apply(system, resource, value):
        if resource.startswith("todo-worker") and value == "1":
            raise RuntimeError("injected failure between the two actions")
        real.apply(system, resource, value)

    monkeypatch.setitem(rb.APPLIERS, rb.ALIAS_KIND, rb.Applier(read=real.read, apply=flaky_apply))
    report = run(str(inv), dry_run=False, approval="yes", accept_guess=True, settle_timeout_s=5)
    assert report.outcome == "failed" and report.status is Status.CRIT
    assert [(r["resource"], r["status"]) for r in report.records] == [
        ("todo-api:LIVE", "applied"), ("todo-worker:LIVE", "failed"), ("todo-api:LIVE", "undone")]
    assert alias_version(sandbox, "todo-api") == "2" and alias_version(sandbox, "todo-worker") == "2"
    durable = statestore.read_records(load_file(inv))
    assert {r["status"] for r in durable} == {"applied", "failed", "undone"}
    history = statestore.read_records(load_file(inv), history=True)  # each step: its intent, then its outcome
    assert sorted(r["status"] for r in history) == ["applied", "failed", "intended", "intended", "intended", "undone"]
    assert statestore.open_intents(load_file(inv)) == []


def test_a_pinned_account_refuses_other_credentials(sandbox, tmp_path):
    p = tmp_path / "pinned.yaml"
    p.write_text("name: pinned\nregion: ap-northeast-2\naccount_id: '999999999999'\nlambda_functions: [{name: todo-api, aliases: [LIVE]}]\n")
    report = run(str(p), dry_run=False, approval="yes")
    assert report.outcome == "refused" and "wrong account" in report.findings[-1].summary and "999999999999" in report.findings[-1].summary
