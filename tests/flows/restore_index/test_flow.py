"""restore-index against the sandbox (moto + the OpenSearch test double): an index deleted from the cluster comes back from
its snapshot behind its alias and is undone; an alias is switched back to its live index; an unaliased index is restored in
place over a pre-restore snapshot and undone; `latest` picks the newest snapshot holding the index; a snapshot lacking it
is refused; a run killed after its restore call is continued by the next, never restoring twice; the RTO within its target,
over it (a slow restore), and not measured when the copy falls short."""

from __future__ import annotations

import pytest
from opensearchpy import OpenSearch

from flows.restore_index import flow as ri
from flows.restore_index import judge as j
from flows.restore_index.flow import restore_index
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.inventory import load_system
from opsbook.mutation import statestore, steps
from opsbook.mutation.core import Record, ShellApproval, shell_approval
from opsbook.report import RunReport

pytestmark = pytest.mark.usefixtures("prefect_harness")

HR, DOM, REPO = "hr-resource-optimization", "hr-resource-optimization-team2", "backup_repo"
DAY_MS = 86_400_000


def run(approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = restore_index(system=HR, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    assert report.undeclared_iam_actions == []
    policy = set(policy_for(ri.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert used <= policy, used - policy
    return report


def cluster(sandbox) -> OpenSearch:
    return OpenSearch(sandbox.opensearch.url_for(DOM), timeout=5, max_retries=0)


def one(report: RunReport, check: str):
    hits = [f for f in report.findings if f.check == check]
    assert len(hits) == 1, (check, report.findings)
    return hits[0]


def indices(sandbox) -> list[str]:
    return sorted(r["index"] for r in cluster(sandbox).cat.indices(format="json"))


def add_docs(sandbox, index: str, ids: range) -> None:
    os = cluster(sandbox)
    for i in ids:
        os.index(index=index, id=f"x{i}", body={"n": i})
    os.indices.refresh(index=index)


def test_deleted_index_comes_back_behind_its_alias_latest_refusal_rerun_and_undo(seeded, sandbox):
    seeded(HR)
    os, double = cluster(sandbox), sandbox.opensearch
    os.indices.put_alias(index="employee_profiles", name="profiles")
    now = 1_760_000_000_000
    double.add_snapshot(DOM, REPO, "snap-1", ["employee_profiles"], start_time_ms=now - 3 * DAY_MS)
    add_docs(sandbox, "employee_profiles", range(4))  # 7 documents
    double.add_snapshot(DOM, REPO, "snap-2", ["employee_profiles"], start_time_ms=now - 2 * DAY_MS,
                        metadata={"doc_counts": {"employee_profiles": 7}})
    double.add_snapshot(DOM, REPO, "snap-3", ["project_requirements"], start_time_ms=now - DAY_MS)  # newer, not holding it
    double.add_snapshot(DOM, REPO, "snap-4", ["employee_profiles"], state="FAILED", start_time_ms=now)  # newer, failed
    os.indices.delete(index="employee_profiles")  # the data is lost, and its alias with it
    assert double.aliases(DOM) == {}

    refused = run(index="employee_profiles", snapshot="snap-3", alias="profiles")
    assert refused.outcome == "refused"
    assert "snapshot backup_repo/snap-3 does not hold index employee_profiles" in refused.findings[-1].summary
    assert "snapshots holding employee_profiles: snap-2, snap-1" in refused.findings[-1].summary

    dry = run(index="employee_profiles", alias="profiles")  # snapshot=latest
    assert dry.outcome == "planned" and dry.dry_run
    copy = "employee_profiles-restored-snap-2"
    assert [(a["kind"], a["resource"], a["current"], a["target"]) for a in dry.plan["actions"]] == [
        (j.RESTORE_KIND, f"{DOM}/{copy}", "absent", f"snapshot {REPO}/snap-2"),
        (j.ALIAS_KIND, f"{DOM}/_alias/profiles", "none", copy)]
    assert "the newest successful one holding employee_profiles" in dry.plan["notes"][0]
    assert "the snapshot's metadata says employee_profiles had 7 documents" in dry.plan["notes"][0]
    assert copy not in indices(sandbox) and double.aliases(DOM) == {} and dry.records == []

    done = run("yes", index="employee_profiles", alias="profiles", dry_run=False)
    assert done.outcome == "done" and done.status is Status.OK, done.findings
    assert double.aliases(DOM) == {"profiles": [copy]}
    assert os.count(index="profiles")["count"] == 7
    counted = one(done, "restore-count")
    assert counted.status is Status.OK and "the snapshot's metadata says 7" in counted.summary
    assert [r["status"] for r in done.records] == ["verified", "verified"]
    rto = one(done, "restore-rto")  # the restore's start to the alias switched, within dr.rto_index_minutes (60)
    assert rto.status is Status.OK and rto.resource == f"{DOM}/{copy}" and rto.details["until"] == "alias switched"
    assert rto.summary.startswith("sandbox RTO (the OpenSearch test double") and "to the alias switched" in rto.summary
    assert 0 <= rto.details["to_verified_s"] <= rto.details["to_switched_s"] == rto.value
    assert {"es:ESHttpPost", "es:ESHttpGet"} <= {iam_action(*op.split(":")) for op in done.api_calls_by_operation}

    again = run("yes", index="profiles", dry_run=False)  # by the alias now; the same copy, nothing to do
    assert again.outcome == "nothing-to-do" and indices(sandbox).count(copy) == 1
    assert any("already on" in u for u in again.plan["unchanged"])

    undo = run("yes", undo_run=done.flow_run_id, dry_run=False)
    assert undo.outcome == "done", undo.findings
    [action] = undo.plan["actions"]
    assert (action["kind"], action["current"], action["target"]) == (j.ALIAS_KIND, copy, "none")
    assert any("the restored copy is kept" in n for n in undo.plan["notes"])
    assert double.aliases(DOM) == {} and copy in indices(sandbox)  # the copy is kept


def test_alias_switched_from_a_damaged_live_index_with_progress_a_short_copy_is_not_switched_undo_switches_back(
        seeded, sandbox, capfd, monkeypatch):
    hr = seeded(HR)
    os, double = cluster(sandbox), sandbox.opensearch
    os.indices.put_alias(index="project_requirements", name="projects")
    double.add_snapshot(DOM, REPO, "bad-0", ["project_requirements"], start_time_ms=1,
                        metadata={"doc_counts": {"project_requirements": 99}})  # says more than it holds
    double.add_snapshot(DOM, REPO, "nightly-1", ["project_requirements"])  # no document count in its metadata
    os.delete_by_query(index="project_requirements", body={"query": {"match_all": {}}})  # the data is damaged

    short = run("yes", index="projects", snapshot="bad-0", dry_run=False)  # the fault: the copy falls short of the snapshot
    assert short.outcome == "failed" and short.status is Status.CRIT
    counted = one(short, "restore-count")
    assert counted.status is Status.CRIT and "holds 3 searchable documents; the snapshot's metadata says 99" in counted.summary
    assert "not switched (the alias stays where it is)" in counted.summary
    assert [r["status"] for r in short.records] == ["applied", "failed"]  # the copy is there (kept), the alias not moved
    assert "projects not moved: project_requirements-restored-bad-0" in short.records[1]["detail"]
    assert double.aliases(DOM) == {"projects": ["project_requirements"]}
    assert one(short, "restore-rto").status is Status.UNKNOWN  # not usable: no RTO figure
    assert "the restored index was not verified" in one(short, "restore-rto").summary

    # a target of 0.06 s: the restore below takes at least the double's 0.3 s recovery, so its RTO is over it
    slow = hr.model_copy(update={"dr": hr.dr.model_copy(update={"rto_index_minutes": 0.001})})
    monkeypatch.setattr(ri, "load_system", lambda name: slow if name == HR else load_system(name))
    double.set_recovery_time(DOM, 0.3)  # the restored copies recover a while: the run waits on _recovery, showing progress
    done = run("yes", index="projects", dry_run=False, poll_s=0.05, settle_timeout_s=60)  # the twin: latest, healthy
    copy = "project_requirements-restored-nightly-1"
    assert done.outcome == "done-with-warnings" and done.status is Status.WARN, done.findings
    rto = one(done, "restore-rto")
    assert rto.status is Status.WARN and rto.value >= 0.3 and "target 0.001 min: over the target" in rto.summary
    assert [f.check for f in done.findings if f.status is not Status.OK] == ["restore-rto"]
    assert f"{copy}: 2/2 shard copies recovered, 100 %" in capfd.readouterr().err
    counted = one(done, "restore-count")
    assert counted.status is Status.OK and "the snapshot carries no document count" in counted.summary
    assert "3 searchable documents of 3 in its primaries" in counted.summary
    assert double.aliases(DOM) == {"projects": [copy]} and os.count(index="projects")["count"] == 3
    assert os.count(index="project_requirements")["count"] == 0  # the live index keeps its (damaged) data
    undo = run("yes", undo_run=done.flow_run_id, dry_run=False)
    assert undo.outcome == "done" and double.aliases(DOM) == {"projects": ["project_requirements"]}
    assert not [f for f in undo.findings if f.check == "restore-rto"]  # an undo is no restore


def test_unaliased_index_is_restored_in_place_after_a_pre_restore_snapshot_and_undone(seeded, sandbox):
    seeded(HR)
    os, double = cluster(sandbox), sandbox.opensearch
    missing = run(index="project_requirements")  # no repository registered yet
    assert missing.outcome == "refused"
    assert "no snapshot repository 'backup_repo' is registered on the cluster" in missing.findings[-1].summary
    double.add_snapshot(DOM, REPO, "snap-a", ["project_requirements"])
    add_docs(sandbox, "project_requirements", range(2))  # 5 documents live, 3 in the snapshot
    dry = run(index="project_requirements", snapshot="snap-a")
    pre = "pre-restore-project_requirements-snap-a"
    assert [(a["kind"], a["resource"], a["current"], a["target"]) for a in dry.plan["actions"]] == [
        (j.PRE_SNAPSHOT_KIND, f"{DOM}/{REPO}/{pre}", "absent", "SUCCESS"),
        (j.DATA_KIND, f"{DOM}/project_requirements", "live", f"snapshot {REPO}/snap-a")]
    assert any("has no alias" in n for n in dry.plan["notes"]) and "holds 5 documents now" in dry.plan["notes"][0]
    assert double.index_state(DOM, "project_requirements") == "open" and os.count(index="project_requirements")["count"] == 5

    done = run("yes", index="project_requirements", snapshot="snap-a", dry_run=False)
    assert done.outcome == "done", done.findings
    assert double.index_state(DOM, "project_requirements") == "open" and os.count(index="project_requirements")["count"] == 3
    saved = os.snapshot.get(repository=REPO, snapshot=pre)["snapshots"][0]
    assert saved["state"] == "SUCCESS" and saved["metadata"]["doc_counts"] == {"project_requirements": 5}
    rto = one(done, "restore-rto")
    assert rto.status is Status.OK and rto.details["until"] == "index verified" and "restored in place and verified" in rto.summary
    again = run(index="project_requirements")  # latest: snap-a again, never the newer pre-restore snapshot (the damaged data)
    assert again.outcome == "nothing-to-do" and any("already restored from backup_repo/snap-a" in u for u in again.plan["unchanged"])
    undo = run("yes", undo_run=done.flow_run_id, dry_run=False)
    assert undo.outcome == "done", undo.findings
    assert os.count(index="project_requirements")["count"] == 5
    counted = one(undo, "restore-count")
    assert counted.status is Status.OK and "metadata says 5" in counted.summary


def test_a_run_killed_after_its_restore_call_is_continued_never_restored_twice(seeded, sandbox):
    from sandbox.faults import apply_fault
    hr = seeded(HR)
    os, double = cluster(sandbox), sandbox.opensearch
    lost = apply_fault(sandbox, hr, "index-deleted")  # employee_profiles gone behind its alias, snapshot "nightly" holds it
    alias, copy = "employee_profiles-live", "employee_profiles-restored-nightly"
    assert (lost["index"], lost["alias"], lost["snapshot"], lost["documents"]) == ("employee_profiles", alias, "nightly", 3)
    assert double.aliases(DOM) == {} and "employee_profiles" not in indices(sandbox)
    # the killed run: its intent written, the restore accepted, then killed before its outcome (its lease lapsed since)
    journal = steps.Journal(hr, j.RUNBOOK, "killed-run")
    journal.take([f"{DOM}/{copy}"])
    steps.intend(journal, Record(runbook=j.RUNBOOK, system=HR, resource=f"{DOM}/{copy}", kind=j.RESTORE_KIND, before="absent",
                                 after=f"snapshot {REPO}/nightly", status="applied", flow_run_id="killed-run", approver="kim"), "applied")
    os.snapshot.restore(repository=REPO, snapshot="nightly", body={
        "indices": "employee_profiles", "rename_pattern": "^employee_profiles$", "rename_replacement": copy, "include_aliases": False})
    journal.release()
    again = run("yes", index="employee_profiles", alias=alias, dry_run=False)
    assert again.outcome == "done", again.findings
    closed = one(again, "open-intent")
    assert closed.status is Status.OK and "applied: run killed-run (kim) took this step" in closed.summary
    assert [a["kind"] for a in again.plan["actions"]] == [j.ALIAS_KIND]
    assert any("already restored from backup_repo/nightly (an earlier run): continued" in u for u in again.plan["unchanged"])
    assert indices(sandbox).count(copy) == 1 and double.aliases(DOM) == {alias: [copy]}
    assert os.count(index=alias)["count"] == 3  # as the snapshot's metadata says (the 2 written after it are not in it)
    assert statestore.open_intents(load_system(HR)) == []
    assert one(again, "restore-rto").status is Status.OK  # counted from the killed run's restore (the copy's _recovery)
