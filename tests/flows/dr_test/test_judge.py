"""dr-test's judge, fed data directly (no sandbox, no Prefect): which restores run and what cannot be restored, and each
restore's verdict against the backup and the RTO (exactly at it, and either side)."""

from __future__ import annotations

from flows.dr_test import judge as j
from opsbook.findings import Status
from opsbook.inventory import System
from opsbook.mutation.core import Action

INV = System.model_validate({"name": "app", "region": "ap-northeast-2",
                             "dynamodb_tables": [{"name": "todos", "max_restore_size_gb": 1}, {"name": "big", "max_restore_size_gb": 1},
                                                 {"name": "none"}, {"name": "err"}, {"name": "pitr"}]})
TABLE = Action(kind="restore-table", resource="todos", current="backup x", target="todos-drtest-run1", iam_action="dynamodb:RestoreTableFromBackup")


def test_plan_restores_and_what_cannot_be_restored():
    found = {
        "dynamodb": {"todos": {"kind": "backup", "at": "2025-06-01", "size_bytes": 10, "key": ["id"]},
                     "big": {"kind": "backup", "at": "2025-06-01", "size_bytes": 2 * 1024**3},
                     "none": {"kind": None, "size_bytes": 0}, "err": {"kind": None, "error": "AccessDenied"},
                     "pitr": {"kind": "pitr", "at": "2025-06-01", "size_bytes": 1024**3}},  # exactly at the size limit: restored
        "s3": {"v": {"versioned": True, "samples": [{"key": "k", "version": "1"}]}, "empty": {"versioned": True, "samples": []},
               "plain": {"versioned": False}, "bad": {"error": "denied"}},
        "opensearch": {"d": {"snapshot": "nightly", "indices": ["a"], "repo": "r"}, "none": {"snapshot": None, "repo": "r"}},
    }
    actions, findings = j.restores(INV, found, "123456789012", "run1")
    assert [(a.kind, a.resource, a.target, a.iam_action) for a in actions] == [
        ("restore-table", "todos", "todos-drtest-run1", "dynamodb:RestoreTableFromBackup"),
        ("restore-table", "pitr", "pitr-drtest-run1", "dynamodb:RestoreTableToPointInTime"),
        ("restore-objects", "v", "s3://app-drtest-123456789012/drtest/app/run1/", "s3:PutObject"),
        ("restore-indices", "d", "d/drtest_*", "es:ESHttpPost")]
    got = {(f.check, f.resource): (f.status, f.summary) for f in findings}
    assert got[("dr-dynamodb", "big")] == (Status.WARN, "skipped: 2.0 GB is over max_restore_size_gb 1")
    assert got[("dr-dynamodb", "none")] == (Status.CRIT, "no on-demand backup and PITR disabled: nothing to restore")
    assert got[("dr-dynamodb", "err")] == (Status.UNKNOWN, "could not be read: AccessDenied")
    assert got[("dr-s3", "empty")][0] is Status.WARN and got[("dr-s3", "bad")][0] is Status.UNKNOWN
    assert got[("dr-opensearch", "none")] == (Status.CRIT, "no successful snapshot in repository r")
    assert ("dr-s3", "plain") not in got and len(findings) == 6
    assert j.restores(INV, {}, "1", "run1") == ([], [])


def test_test_copies_and_the_bucket():
    assert j.is_copy(INV, "todos-drtest-deadbeef") and not j.is_copy(INV, "todos") and not j.is_copy(INV, "other-drtest-1")
    assert j.dr_bucket(INV, "123456789012") == "app-drtest-123456789012"
    assert j.dr_bucket(INV.model_copy(update={"dr": INV.dr.model_copy(update={"test_bucket": "mine"})}), "1") == "mine"


def test_table_restore_count_against_the_backup():
    good = {"seconds": 12.0, "status": "ACTIVE", "count": 25, "expected": 25, "sampled": 20, "differ": 0}
    v = j.judge_restore(TABLE, good, None)
    assert v["ok"] and v["why"] == "25 items restored, 25 in the backup; 20 sampled items identical to the source"
    v = j.judge_restore(TABLE, {**good, "count": 24}, None)
    assert not v["ok"] and v["why"].startswith("24 items restored, 25 in the backup")
    v = j.judge_restore(TABLE, {**good, "differ": 2}, None)  # writes since the backup inform, never fail
    assert v["ok"] and "2 of 20 sampled items differ from the source now" in v["why"]
    assert j.judge_restore(TABLE, {**good, "count": 9990, "expected": 10000}, None)["ok"]  # 0.1 % tolerance, exactly at it
    assert not j.judge_restore(TABLE, {**good, "count": 9989, "expected": 10000}, None)["ok"]
    v = j.judge_restore(TABLE, {"seconds": 1801.0, "status": "CREATING", "timeout_s": 1800}, None)
    assert not v["ok"] and v["why"] == "not ACTIVE after 1800 s (status CREATING)"
    assert j.judge_restore(TABLE, None, "ThrottlingException") == {"ok": False, "seconds": 0.0, "why": "ThrottlingException"}


def test_objects_and_indices_restores():
    objs = Action(kind="restore-objects", resource="b", current="1", target="s3://x/", iam_action="s3:PutObject")
    assert j.judge_restore(objs, {"seconds": 1.0, "checked": 2, "differ": []}, None)["why"] == "2/2 previous versions restored with identical SHA-256"
    v = j.judge_restore(objs, {"seconds": 1.0, "checked": 2, "differ": ["k"]}, None)
    assert not v["ok"] and v["why"] == "1/2 previous versions restored with identical SHA-256; differ: ['k']"
    idx = Action(kind="restore-indices", resource="d", current="s", target="d/drtest_*", iam_action="es:ESHttpPost")
    v = j.judge_restore(idx, {"seconds": 3.0, "health": "yellow", "counts": [("a", 5, 5), ("b", 0, 0)]}, None)
    assert v["ok"] and v["why"] == "2 indices restored (yellow); document counts equal"
    v = j.judge_restore(idx, {"seconds": 3.0, "health": "green", "counts": [("a", 5, 0), ("b", 4, 3)]}, None)
    assert not v["ok"] and v["why"] == "2 indices restored (green); a: restored empty, 5 in the source; b: 3 restored vs 4 in the source now"
    assert not j.judge_restore(idx, {"seconds": 3.0, "health": "red", "counts": [("a", 5, 5)]}, None)["ok"]


def test_restore_finding_against_the_rto():
    ok = {"ok": True, "seconds": 1800.0, "why": "25 items restored, 25 in the backup"}
    f = j.restore_finding(TABLE, ok, 1800)
    assert (f.check, f.status, f.value) == ("dr-dynamodb", Status.OK, 1800.0)
    assert f.summary == "PASS: 25 items restored, 25 in the backup; restored in 1800.0 s (RTO 30 min)"
    f = j.restore_finding(TABLE, {**ok, "seconds": 1800.1}, 1800)
    assert f.status is Status.CRIT and f.summary.startswith("PASS:")  # right, but too slow
    f = j.restore_finding(TABLE, {**ok, "ok": False}, 1800)
    assert f.status is Status.CRIT and f.summary.startswith("FAIL:")
