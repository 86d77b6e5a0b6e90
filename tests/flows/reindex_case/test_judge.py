"""reindex-case's judge without the sandbox: case names, the plan for each state of the case and its index,
unreadable reads left out, and what the read-back means."""

from __future__ import annotations

import pytest

from flows.reindex_case import judge as j
from opsbook.findings import Status
from opsbook.inventory import CaseDatabase, CaseStore, System
from opsbook.mutation.core import Identity
from tasks.opensearch import IndexState, Rebuilt

ID = Identity(account="123456789012", arn="arn:aws:sts::123456789012:assumed-role/x/y", region="ap-northeast-2")
DB = CaseDatabase(host="leh-db.example.ap-northeast-2.rds.amazonaws.com", database="leh", user="ops", password_secret="leh/db")
MAPPING = {"properties": {"evidence_id": {"type": "keyword"}, "created_at": {"type": "date"},
                          "meta": {"properties": {"pages": {"type": "integer"}}}}}
SYS = System(name="leh", region="ap-northeast-2", case_store=CaseStore(database=DB))
MAPPED = System(name="leh", region="ap-northeast-2", case_store=CaseStore(database=DB, index_mapping=MAPPING))
CASE = "CASE-2025-0042"
T = j.target_for(SYS, CASE)
TM = j.target_for(MAPPED, CASE)


def idx(count: int | None, mapping: dict | None = None) -> IndexState:
    return IndexState(url="http://os", exists=count is not None, count=count or 0, mapping=mapping)


def kinds(plan) -> list[tuple[str, str, str]]:
    return [(a.kind, a.current, a.target) for a in plan.actions]


def test_names_and_targets():
    assert (T.index, T.case_resource, T.index_resource) == ("evidence-case-2025-0042", f"leh.cases/{CASE}", "leh-cases/evidence-case-2025-0042")
    assert j.case_of(T.case_resource) == CASE
    with pytest.raises(j.CaseError, match="does not accept"):
        j.index_name(SYS.case_store, "a*b")
    with pytest.raises(j.CaseError, match="not a case id"):
        j.target_for(SYS, "a/b")
    with pytest.raises(j.CaseError, match="not a case id"):
        j.target_for(SYS, "  ")
    with pytest.raises(j.CaseError, match="no case_store section") as e:
        j.target_for(System(name="x", region="ap-northeast-2"), CASE)
    assert "case_store.database" in str(e.value)


def test_closed_case_without_index_plans_both():
    p = j.plan_for(SYS, ID, T, "closed", 30, idx(None))
    assert kinds(p) == [("case-status", "closed", "active"), ("case-index", "0 documents", "30 documents from DynamoDB")]
    assert "does not exist" in p.actions[1].evidence and "No undo" in p.actions[1].evidence and p.actions[1].reversible is False
    assert j.planned_documents(p) == 30


def test_active_case_with_a_whole_index_is_unchanged():
    p = j.plan_for(SYS, ID, T, "active", 12, idx(12))
    assert p.actions == [] and p.unchanged == [f"leh.cases/{CASE}: already active",
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


def test_without_a_database_the_runbook_says_what_to_configure():
    bare = System(name="leh", region="ap-northeast-2", case_store=CaseStore())
    with pytest.raises(j.CaseError) as e:
        j.target_for(bare, CASE)
    text = str(e.value)
    assert "names no database for its cases" in text
    for word in ("case_store.database", "host", "port", "database", "user", "sslmode: require", "password_secret", "password_env", "table: cases"):
        assert word in text, word


def test_the_status_action_is_the_seeds_guarded_update():
    [a, _] = j.plan_for(SYS, ID, T, "closed", 3, idx(None)).actions
    assert (a.kind, a.resource, a.current, a.target, a.reversible) == ("case-status", f"leh.cases/{CASE}", "closed", "active", True)
    assert "UPDATE cases SET status = 'active' WHERE id = <case> AND status = <closed>" in a.evidence
    assert "parameterised, one transaction" in a.evidence


def test_mapping_differences():
    assert j.mapping_differences(MAPPING, MAPPING) == []
    assert j.mapping_differences(None, {}) == []  # no product mapping: nothing to compare
    extra = {"properties": {**MAPPING["properties"], "title": {"type": "text"}}}
    assert j.mapping_differences(MAPPING, extra) == []  # fields besides the product's are fine
    dynamic = {"properties": {"evidence_id": {"type": "text"}, "meta": {"properties": {"pages": {"type": "long"}}}}}
    assert j.mapping_differences(MAPPING, dynamic) == ["created_at missing", "evidence_id is text, not keyword", "meta.pages is long, not integer"]
    assert j.mapping_differences(MAPPING, {}) == ["created_at missing", "evidence_id missing", "meta missing"]


def test_an_index_without_the_products_mapping_is_recreated():
    p = j.plan_for(MAPPED, ID, TM, "active", 12, idx(12, {"properties": {"evidence_id": {"type": "text"}}}))
    [a] = p.actions
    assert (a.current, a.target) == ("12 documents (mapping differs)", "12 documents from DynamoDB") and j.recreate(p)
    assert "mapping is not the product's (created_at missing, evidence_id is text, not keyword, meta missing)" in a.evidence
    assert "deleted, created with the product's mapping and filled" in a.evidence
    ok = j.plan_for(MAPPED, ID, TM, "active", 12, idx(12, MAPPING))
    assert ok.actions == [] and ok.unchanged[1].endswith("with the product's mapping") and not j.recreate(ok)
    gone = j.plan_for(MAPPED, ID, TM, "closed", 12, idx(None))
    assert "created with the product's mapping and filled" in gone.actions[1].evidence and not j.recreate(gone)
    assert j.index_value(3) == "3 documents" and j.index_value(3, False) == "3 documents (mapping differs)"


def test_an_undo_works_from_this_cases_status_records_only():
    records = [{"kind": "case-status", "resource": f"leh.cases/{CASE}", "before": "closed", "after": "active"},
               {"kind": "case-status", "resource": "leh.cases/CASE-OTHER", "before": "closed", "after": "active"},
               {"kind": "case-index", "resource": T.index_resource, "before": "0 documents", "after": "3 documents from DynamoDB"}]
    mine, notes = j.undo_records(records, T)
    assert mine == records[:1] and notes == [f"{T.index_resource}: the index is derived data and is left as rebuilt (no undo)"]
    assert j.undo_records(records[1:2], T) == ([], [])
    assert j.status_finding("r", CASE, "closed", "closed").status is Status.OK
    assert j.status_finding("r", CASE, "active", "closed").summary == f"{CASE} is active after it was set to closed"
