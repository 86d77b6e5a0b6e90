"""reindex-case's judge without the sandbox: case names, the plan for each state of the case and its index,
unreadable reads left out, and what the read-back means."""

from __future__ import annotations

import pytest

from flows.reindex_case import judge as j
from opsbook.findings import Status
from opsbook.inventory import CaseStore, System
from opsbook.mutation.core import Identity
from tasks.opensearch import IndexState, Rebuilt

ID = Identity(account="123456789012", arn="arn:aws:sts::123456789012:assumed-role/x/y", region="ap-northeast-2")
SYS = System(name="leh", region="ap-northeast-2", case_store=CaseStore())
CASE = "CASE-2025-0042"
T = j.target_for(SYS, CASE)


def idx(count: int | None) -> IndexState:
    return IndexState(url="http://os", exists=count is not None, count=count or 0)


def kinds(plan) -> list[tuple[str, str, str]]:
    return [(a.kind, a.current, a.target) for a in plan.actions]


def test_names_and_targets():
    assert (T.index, T.case_resource, T.index_resource) == ("evidence-case-2025-0042", f"leh-cases/{CASE}", "leh-cases/evidence-case-2025-0042")
    with pytest.raises(j.CaseError, match="does not accept"):
        j.index_name(SYS.case_store, "a*b")
    with pytest.raises(j.CaseError, match="not a case id"):
        j.target_for(SYS, "a/b")
    with pytest.raises(j.CaseError, match="not a case id"):
        j.target_for(SYS, "  ")
    with pytest.raises(j.CaseError, match="no case_store section"):
        j.target_for(System(name="x", region="ap-northeast-2"), CASE)


def test_closed_case_without_index_plans_both():
    p = j.plan_for(SYS, ID, T, "closed", 30, idx(None))
    assert kinds(p) == [("case-status", "closed", "active"), ("case-index", "0 documents", "30 documents from DynamoDB")]
    assert "does not exist" in p.actions[1].evidence and "No undo" in p.actions[1].evidence and p.actions[1].reversible is False
    assert j.planned_documents(p) == 30


def test_active_case_with_a_whole_index_is_unchanged():
    p = j.plan_for(SYS, ID, T, "active", 12, idx(12))
    assert p.actions == [] and p.unchanged == [f"leh-cases/{CASE}: already active",
                                               "leh-cases/evidence-case-2025-0042: 12 documents, one for each evidence item in leh-evidence"]
    assert j.planned_documents(p) is None


@pytest.mark.parametrize("count", [11, 13, 0])
def test_an_index_off_by_one_either_way_is_refilled(count):
    p = j.plan_for(SYS, ID, T, "active", 12, idx(count))
    assert kinds(p) == [("case-index", f"{count} documents", "12 documents from DynamoDB")]
    assert f"the index holds {count} documents and leh-evidence has 12 evidence items; it is refilled" in p.actions[0].evidence


def test_an_odd_status_is_restored_with_a_warning():
    [a] = j.plan_for(SYS, ID, T, "archived", 1, idx(1)).actions
    assert (a.current, a.target) == ("archived", "active") and "'archived' is not 'closed'" in a.evidence


def test_unreadable_evidence_or_index_is_left_out_of_the_plan():
    p = j.plan_for(SYS, ID, T, "closed", 1, ConnectionError("cluster unreachable"))
    assert [a.kind for a in p.actions] == ["case-status"] and "could not read index evidence-case-2025-0042" in p.notes[0]
    assert "ConnectionError: cluster unreachable" in p.notes[0]
    both = j.plan_for(SYS, ID, T, "active", RuntimeError("q"), RuntimeError("i"))
    assert both.actions == [] and len(both.notes) == 2 and "could not read its evidence in leh-evidence" in both.notes[0]


def test_read_back():
    assert j.status_finding("r", CASE, "active").status is Status.OK
    bad = j.status_finding("r", CASE, "closed")
    assert bad.status is Status.CRIT and bad.summary == f"{CASE} is closed after it was set to active"
    ok = j.index_finding("r", T, 5, 5, Rebuilt(written=5), 10_000)
    assert ok.status is Status.OK and ok.details["written"] == 5 and "holds 5 documents, one for each" in ok.summary
    gone = j.index_finding("r", T, None, 5, None, 10_000)
    assert gone.status is Status.CRIT and gone.value == -1 and "holds no index after the rebuild, but leh-evidence has 5" in gone.summary
    far = j.index_finding("r", T, 10_002, 10_001, Rebuilt(written=10_001, unlisted=2), 10_000)
    assert far.status is Status.CRIT and "2 document(s) beyond the result window (10000) could not be checked" in far.summary
