"""restore-index's pure decisions: the snapshot, the names, the plan, the progress and the counts."""

from __future__ import annotations

import pytest

from flows.restore_index import judge as j
from opsbook.findings import Status
from opsbook.inventory import OpenSearchDomain, System
from opsbook.mutation.core import Identity
from tasks.opensearch import IndexSnapshot, LiveIndex

ID = Identity(account="123456789012", arn="arn:aws:iam::123456789012:user/ops", region="us-east-2")
SYS = System(name="hr", region="us-east-2", opensearch_domains=[OpenSearchDomain(name="hr-os", snapshot_repository="backup_repo")])
DOM = "hr-os"


def snap(name, indices=("profiles",), state="SUCCESS", at=0, counts=None) -> IndexSnapshot:
    return IndexSnapshot(name=name, state=state, indices=list(indices), start_ms=at, doc_counts=counts or {})


SNAPS = [snap("s4", state="FAILED", at=40), snap("s3", ("projects",), at=30), snap("s2", at=20, counts={"profiles": 7}),
         snap("s1", at=10), snap("s0", state="PARTIAL", at=5)]


# --- which snapshot ------------------------------------------------------------------------


def test_latest_is_the_newest_successful_snapshot_holding_the_index():
    c = j.pick_snapshot("backup_repo", SNAPS, "profiles", "latest")
    assert (c.snapshot, c.expected, c.latest, c.value) == ("s2", 7, True, "snapshot backup_repo/s2")
    assert j.pick_snapshot("backup_repo", SNAPS, "projects", "latest").snapshot == "s3"


def test_a_snapshot_literally_named_latest_is_taken_by_its_name():
    c = j.pick_snapshot("r", [snap("latest", at=1), snap("newer", at=9)], "profiles", "latest")
    assert c.snapshot == "latest" and not c.latest


@pytest.mark.parametrize(("wanted", "index", "says"), [
    ("s3", "profiles", "snapshot backup_repo/s3 does not hold index profiles (it holds projects); snapshots holding profiles: s2, s1"),
    ("s4", "profiles", "snapshot backup_repo/s4 is FAILED, not SUCCESS"),
    ("s0", "profiles", "is PARTIAL, not SUCCESS"),
    ("nope", "profiles", "no snapshot 'nope' in backup_repo; snapshots holding profiles: s2, s1 (or snapshot=latest)"),
    ("latest", "other", "no successful snapshot in backup_repo holds other (5 snapshot(s) there)"),
])
def test_snapshots_that_cannot_be_restored_are_refused_naming_the_way_out(wanted, index, says):
    with pytest.raises(j.RestoreError) as exc:
        j.pick_snapshot("backup_repo", SNAPS, index, wanted)
    assert says in str(exc.value)


def test_latest_without_a_successful_one_names_the_states_seen():
    with pytest.raises(j.RestoreError) as exc:
        j.pick_snapshot("r", [snap("f", state="FAILED")], "profiles", "latest")
    assert "some that hold it are FAILED" in str(exc.value)


def test_a_pre_restore_snapshot_is_put_back_by_undo_not_by_name():
    with pytest.raises(j.RestoreError) as exc:
        j.pick_snapshot("r", [snap("pre-restore-profiles-s1")], "profiles", "pre-restore-profiles-s1")
    assert "undo_run=" in str(exc.value)


# --- names ---------------------------------------------------------------------------------


def test_names_derive_from_index_and_snapshot_and_are_checked():
    assert j.restored_name("employee_profiles", "snapshot_20251126") == "employee_profiles-restored-snapshot_20251126"
    assert j.pre_snapshot_name("profiles", "s1") == "pre-restore-profiles-s1"
    for bad in ("Profiles", "_x", "a b", "a/b", "x" * 256):
        with pytest.raises(j.RestoreError):
            j.valid_name(bad, "index")


def test_the_domain_is_the_only_one_or_named():
    assert j.pick_domain(SYS, "").name == DOM and j.pick_domain(SYS, DOM).name == DOM
    assert j.repository(OpenSearchDomain(name="xyz")) == "backup_repo"  # the seed's repository when the inventory names none
    with pytest.raises(j.RestoreError, match="not an OpenSearch domain"):
        j.pick_domain(SYS, "other")
    two = SYS.model_copy(update={"opensearch_domains": [OpenSearchDomain(name="dom-a"), OpenSearchDomain(name="dom-b")]})
    with pytest.raises(j.RestoreError, match="give domain=NAME"):
        j.pick_domain(two, "")


def test_an_alias_stands_for_its_one_index_or_the_original_of_a_restored_copy():
    assert j.concrete(LiveIndex(name="p", exists=True, is_alias=True, indices=["profiles"]), SNAPS) == ("profiles", ["p"])
    on_copy = LiveIndex(name="p", exists=True, is_alias=True, indices=["profiles-restored-s2"])
    assert j.concrete(on_copy, SNAPS) == ("profiles", ["p"])
    assert j.original("profiles-restored-unknown", SNAPS) == "profiles-restored-unknown"
    assert j.concrete(LiveIndex(name="profiles", exists=True, aliases=["p", "q"]), SNAPS) == ("profiles", ["p", "q"])
    with pytest.raises(j.RestoreError, match="alias of 2 indices"):
        j.concrete(LiveIndex(name="p", exists=True, is_alias=True, indices=["a", "b"]), SNAPS)


def test_values_of_an_index_read_as_steps():
    assert j.data_value(LiveIndex(name="x")) == "absent"
    assert j.data_value(LiveIndex(name="x", exists=True, state="open")) == "live"
    assert j.data_value(LiveIndex(name="x", exists=True, state="close")) == "live, closed"
    assert j.data_value(LiveIndex(name="x", exists=True, state="open", source="r/s1")) == "snapshot r/s1"
    assert j.data_value(LiveIndex(name="x", exists=True, state="open", source="r/pre-restore-x-s1")) == "live"  # put back
    assert j.copy_value(LiveIndex(name="c", exists=True, state="open")) == "an index not restored from a snapshot"
    assert j.alias_value([]) == "none" and j.alias_value(["b", "a"]) == "a,b"
    assert j.parse_value("snapshot r/s1") == ("r", "s1") and j.parse_value("snapshot r/s1, closed") == ("r", "s1")
    assert j.parse_value("live") is None


# --- the plan ------------------------------------------------------------------------------

C = j.Chosen(repository="backup_repo", snapshot="s2", index="profiles", expected=7, latest=True)
LIVE = LiveIndex(name="profiles", exists=True, state="open", count=9, aliases=["p"])
COPY = "profiles-restored-s2"


def test_aliased_plan_restores_a_copy_then_moves_the_alias():
    plan = j.plan_restore(SYS, ID, DOM, C, LIVE, ["p"], LiveIndex(name=COPY), {"p": ["profiles"]}, None)
    assert [(a.kind, a.resource, a.current, a.target) for a in plan.actions] == [
        (j.RESTORE_KIND, f"{DOM}/{COPY}", "absent", "snapshot backup_repo/s2"), (j.ALIAS_KIND, f"{DOM}/_alias/p", "profiles", COPY)]
    assert "the snapshot's metadata says profiles had 7 documents" in plan.notes[0] and "holds 9 documents now" in plan.notes[0]
    assert "documents written after the snapshot are not in the restore" in plan.notes[0]
    assert "only after the restored copy's documents are counted right" in plan.actions[1].evidence


def test_aliased_rerun_continues_the_copy_and_refuses_a_stranger_of_that_name():
    restored = LiveIndex(name=COPY, exists=True, state="open", source="backup_repo/s2")
    plan = j.plan_restore(SYS, ID, DOM, C, LIVE, ["p"], restored, {"p": ["profiles"]}, None)
    assert [a.kind for a in plan.actions] == [j.ALIAS_KIND] and "continued, not restored again" in plan.unchanged[0]
    done = j.plan_restore(SYS, ID, DOM, C, LIVE, ["p"], restored, {"p": [COPY]}, None)
    assert done.actions == [] and "already on" in done.unchanged[1]
    relocated = LiveIndex(name=COPY, exists=True, state="open")  # _recovery no longer names the snapshot
    by_name = j.plan_restore(SYS, ID, DOM, C, LIVE, ["p"], relocated, {"p": ["profiles"]}, None)
    assert [a.kind for a in by_name.actions] == [j.ALIAS_KIND] and "taken as the copy an earlier run restored by its name" in (
        by_name.unchanged[0])
    stranger = LiveIndex(name=COPY, exists=True, state="open", source="backup_repo/other")
    refused = j.plan_restore(SYS, ID, DOM, C, LIVE, ["p"], stranger, {"p": ["profiles"]}, None)
    assert refused.actions == [] and "delete or rename it" in refused.cannot[0]


def test_unaliased_plan_snapshots_the_live_index_then_restores_over_it():
    live = LIVE.model_copy(update={"aliases": []})
    no_counts = C.model_copy(update={"expected": None})
    plan = j.plan_restore(SYS, ID, DOM, no_counts, live, [], None, {}, None)
    assert [(a.kind, a.current, a.target, a.reversible) for a in plan.actions] == [
        (j.PRE_SNAPSHOT_KIND, "absent", "SUCCESS", False), (j.DATA_KIND, "live", "snapshot backup_repo/s2", True)]
    assert plan.actions[0].resource == f"{DOM}/backup_repo/pre-restore-profiles-s2"
    assert "the snapshot carries no document count" in plan.notes[0] and "has no alias" in plan.notes[1]
    saved = j.plan_restore(SYS, ID, DOM, C, live, [], None, {}, "SUCCESS")
    assert [a.kind for a in saved.actions] == [j.DATA_KIND] and "already saved" in saved.unchanged[0]
    broken = j.plan_restore(SYS, ID, DOM, C, live, [], None, {}, "FAILED")
    assert broken.actions == [] and "is FAILED: delete it" in broken.cannot[0]
    restored = live.model_copy(update={"source": "backup_repo/s2"})
    assert j.plan_restore(SYS, ID, DOM, C, restored, [], None, {}, "SUCCESS").actions == []


def test_a_gone_unaliased_index_is_restored_under_its_own_name_without_undo():
    plan = j.plan_restore(SYS, ID, DOM, C, LiveIndex(name="profiles"), [], None, {}, None)
    [a] = plan.actions
    assert (a.kind, a.current, a.target, a.reversible) == (j.DATA_KIND, "absent", "snapshot backup_repo/s2", False)
    assert "give alias=NAME" in plan.notes[1]


# --- progress and counts ----------------------------------------------------------------------


def test_recovery_progress_from_the_shard_copies():
    body = {"x": {"shards": [{"stage": "DONE", "index": {"size": {"percent": "100.0%"}}},
                             {"stage": "INDEX", "index": {"size": {"percent": "50.0%"}}},
                             {"stage": "INDEX", "index": {"size": {"percent": "bad"}}}]}}
    assert j.recovery_progress(body, "x") == (1, 3, 50.0)
    assert j.recovery_progress({}, "x") == (0, 0, 0.0)
    assert j.progress_line("x", 1, 3, 50.0) == "x: 1/3 shard copies recovered, 50 %"


def test_counts_against_the_snapshot_metadata_or_the_index_stats_say_which():
    ok = j.count_finding("d/c", "c", 7, 7, 7, "r/s")
    assert ok.status is Status.OK and "the snapshot's metadata says 7" in ok.summary and ok.details["against"] == "snapshot metadata"
    short = j.count_finding("d/c", "c", 5, 7, 7, "r/s")
    assert short.status is Status.CRIT and "not switched (the alias stays where it is)" in short.summary
    in_place = j.count_finding("d/c", "c", 5, 7, 7, "r/s", then=j.IF_SHORT[j.DATA_KIND])
    assert "undo_run=<this run> to put the live data back" in in_place.summary
    stats = j.count_finding("d/c", "c", 3, 3, None, "r/s")
    assert stats.status is Status.OK and "checked against the restored index's own stats" in stats.summary
    partial = j.count_finding("d/c", "c", 2, 3, None, "r/s")
    assert partial.status is Status.CRIT and "not every document is searchable yet" in partial.summary
    unread = j.count_finding("d/c", "c", None, None, None, None, "cluster API answered 503")
    assert unread.status is Status.UNKNOWN and "not verified" in unread.summary


def test_an_alias_named_as_the_live_index_cannot_be_planned_but_it_may_replace_a_gone_one():
    live = LIVE.model_copy(update={"aliases": []})
    plan = j.plan_restore(SYS, ID, DOM, C, live, ["profiles"], LiveIndex(name=COPY), {"profiles": []}, None)
    assert plan.actions == [] and "an alias cannot have an index's name" in plan.cannot[0]
    gone = j.plan_restore(SYS, ID, DOM, C, LiveIndex(name="profiles"), ["profiles"], LiveIndex(name=COPY), {"profiles": []}, None)
    assert [(a.kind, a.current, a.target) for a in gone.actions][1] == (j.ALIAS_KIND, "none", COPY)


# --- RTO ------------------------------------------------------------------------------------------


def _shard(primary: bool, kind: str, start: int | None) -> dict:
    return {"primary": primary, "type": kind, "stage": "DONE"} | ({"start_time_in_millis": start} if start is not None else {})


def test_the_restore_starts_with_the_earliest_primary_snapshot_recovery():
    body = {"p": {"shards": [_shard(True, "SNAPSHOT", 5_000), _shard(False, "PEER", 1_000), _shard(True, "SNAPSHOT", 4_000)]}}
    assert j.restore_started_ms(body, "p") == 4_000
    assert j.restore_started_ms({"p": {"shards": [_shard(True, "EMPTY_STORE", 1), _shard(True, "SNAPSHOT", None)]}}, "p") is None
    assert j.restore_started_ms({}, "p") is None


def test_aliased_rto_runs_to_the_alias_switched_exactly_at_the_target_is_ok():
    f = j.rto_finding("hr-os/p-restored-s2", 1000.0, 1500.0, 4600.0, True, 60, False)
    assert f.status is Status.OK and f.value == 3600.0
    assert f.summary == ("RTO: 3600.0 s from the snapshot restore's start to the alias switched (the restored index verified "
                         "after 500.0 s); target 60 min")
    assert f.details == {"target_s": 3600, "sandbox": False, "to_verified_s": 500.0, "to_switched_s": 3600.0, "until": "alias switched"}


def test_over_the_target_is_warn_counting_to_the_switch_not_to_the_count():
    f = j.rto_finding("r", 0.0, 3000.0, 3600.5, True, 60, False)
    assert f.status is Status.WARN and f.summary.endswith("target 60 min: over the target")
    assert j.rto_finding("r", 0.0, 3600.0, None, False, 60, False).status is Status.OK  # in place: to the count


def test_in_place_rto_runs_to_the_index_verified_and_sandbox_figures_say_so():
    f = j.rto_finding("hr-os/p", 10.0, 12.5, None, False, 60, True)
    assert f.status is Status.OK and f.value == 2.5 and f.details["until"] == "index verified"
    assert f.summary.startswith("sandbox RTO (the OpenSearch test double restores without moving any data: not a production "
                                "figure): 2.5 s from the snapshot restore's start to the index restored in place and verified")


@pytest.mark.parametrize(("times", "aliased", "error", "says"), [
    ((None, 5.0, 6.0), True, None, "the index's _recovery no longer names a snapshot"),
    ((None, 5.0, 6.0), True, "cluster API answered 503", "the restore's start could not be read (cluster API answered 503)"),
    ((1.0, None, None), True, None, "the restored index was not verified"),
    ((1.0, None, None), False, None, "the restored index was not verified"),
    ((1.0, 3.0, None), True, None, "verified after 2.0 s, but the alias was not switched"),
])
def test_an_rto_not_reached_or_not_known_is_unknown_with_the_reason(times, aliased, error, says):
    f = j.rto_finding("r", *times, aliased, 60, False, start_error=error)
    assert f.status is Status.UNKNOWN and f.value is None and says in f.summary and "target 60 min" in f.summary


def test_latest_passes_over_the_runbooks_own_pre_restore_snapshots():
    """A re-run with latest after an in-place restore (or a kill after the pre-restore snapshot) must not restore the data
    the runbook saved before restoring over it (the kill battery found it)."""
    snaps = [snap("pre-restore-profiles-s1", at=99), snap("s1", at=10)]
    assert j.pick_snapshot("r", snaps, "profiles", "latest").snapshot == "s1"
    with pytest.raises(j.RestoreError) as exc:
        j.pick_snapshot("r", [snap("pre-restore-profiles-s1", at=99)], "profiles", "latest")
    assert "pre-restore-profiles-s1 only saved it before a restore: put it back with undo_run=" in str(exc.value)
    with pytest.raises(j.RestoreError) as exc:
        j.pick_snapshot("r", snaps, "profiles", "nope")
    assert "snapshots holding profiles: s1 (or" in str(exc.value)  # never offered
