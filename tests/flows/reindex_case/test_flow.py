"""reindex-case (seed 003 시나리오 B), against the sandbox: the cases table in its local PostgreSQL, moto's server and the
OpenSearch test double."""

from __future__ import annotations

import json

import pytest
from opensearchpy import OpenSearch

from flows.reindex_case import flow as rc
from flows.reindex_case import judge as rj
from flows.reindex_case.flow import reindex_case
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.mutation.core import Identity, Refused, ShellApproval, shell_approval
from opsbook.report import RunReport
from sandbox.leh_cases import case_status, delete_case, evidence_doc, seed_case, set_case_status
from tasks import cases_db as sqldb
from tasks import dynamodb as ddb
from tasks import opensearch as ops

pytestmark = pytest.mark.usefixtures("prefect_harness")
CASE = "CASE-2025-0042"
INDEX = "evidence-case-2025-0042"


def run(approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = reindex_case(system="leh", return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def status_of(sandbox, case_id=CASE) -> str:
    from opsbook.inventory import load_system

    return case_status(sandbox, load_system("leh"), case_id)


def search(sandbox) -> OpenSearch:
    return OpenSearch(hosts=[{"host": "127.0.0.1", "port": sandbox.opensearch.port, "url_prefix": "leh-cases"}])


def count(sandbox, index=INDEX) -> int | None:
    try:
        return len(sandbox.opensearch.docs("leh-cases", index))
    except KeyError:  # no such index
        return None


@pytest.fixture
def leh(seeded, sandbox, case_postgres):
    inv = seeded("leh")
    seed_case(sandbox, inv, "CASE-OTHER", 4)  # a neighbour that must never be touched
    return inv


def test_dry_run_plans_both_actions_and_changes_nothing(leh, sandbox):
    seed_case(sandbox, leh, CASE, 30)
    delete_case(sandbox, leh, CASE)
    report = run(case_id=CASE)
    assert report.outcome == "planned" and report.status is Status.OK and report.dry_run
    status, index = report.plan["actions"]
    assert (status["kind"], status["resource"], status["current"], status["target"], status["iam_action"], status["reversible"]) == \
        ("case-status", f"leh.cases/{CASE}", "closed", "active", "secretsmanager:GetSecretValue", True)
    assert (index["kind"], index["resource"], index["current"], index["target"], index["iam_action"], index["reversible"]) == \
        ("case-index", f"leh-cases/{INDEX}", "0 documents", "30 documents from DynamoDB", "es:ESHttpPost", False)
    assert "does not exist" in index["evidence"] and "No undo" in index["evidence"]
    assert status_of(sandbox) == "closed" and count(sandbox) is None and report.records == []
    assert report.api_calls_by_operation.get("dynamodb:UpdateItem") is None and "UPDATE cases SET status = 'active'" in status["evidence"]


def test_execute_restores_the_case_and_rebuilds_its_index_once(leh, sandbox):
    seeded = seed_case(sandbox, leh, CASE, 30)
    delete_case(sandbox, leh, CASE)
    before_other = sandbox.opensearch.docs("leh-cases", "evidence-case-other")
    report = run(case_id=CASE, dry_run=False, approval="yes", approver="oncall-kim")
    assert report.outcome == "done" and report.status is Status.OK, report.findings
    assert status_of(sandbox) == "active" and count(sandbox) == 30
    doc = search(sandbox).get(index=INDEX, id="ev-00007")
    assert doc["_source"] == evidence_doc(CASE, 7) == seeded["docs"][7]  # the product's data, unmasked, numbers and lists intact
    assert sandbox.opensearch.docs("leh-cases", INDEX) == {d["evidence_id"]: d for d in seeded["docs"]}
    assert [(r["kind"], r["status"], r["before"], r["after"]) for r in report.records] == [
        ("case-status", "verified", "closed", "active"), ("case-index", "verified", "0 documents", "30 documents from DynamoDB")]
    assert "index created" in report.records[1]["detail"] and report.records[0]["approver"] == "oncall-kim"
    assert {f.check: f.status for f in report.findings} == {"case-status": Status.OK, "case-index": Status.OK}
    shown = json.dumps([report.plan, report.records, [f.model_dump(mode="json") for f in report.findings]], ensure_ascii=False)
    assert "lawfirm.example.com" not in shown and "010-1234" not in shown  # nothing of the case's contents in what opsbook shows
    assert sandbox.opensearch.docs("leh-cases", "evidence-case-other") == before_other and status_of(sandbox, "CASE-OTHER") == "active"
    again = run(case_id=CASE, dry_run=False, approval="yes")
    assert again.outcome == "nothing-to-do" and again.records == [] and count(sandbox) == 30
    assert again.plan["unchanged"] == [f"leh.cases/{CASE}: already active", f"leh-cases/{INDEX}: 30 documents, one for each "
                                       "evidence item in leh-evidence, with the product's mapping"]
    assert search(sandbox).indices.get_mapping(index=INDEX)[INDEX]["mappings"] == leh.case_store.index_mapping
    # undo: the case's status back as the run found it (the guarded UPDATE the other way); the index stays as rebuilt
    undo = run(case_id=CASE, dry_run=False, approval="yes", undo_run=report.flow_run_id)
    assert undo.outcome == "done" and undo.status is Status.OK, undo.findings
    assert [(a["kind"], a["current"], a["target"]) for a in undo.plan["actions"]] == [("case-status", "active", "closed")]
    assert f"leh-cases/{INDEX}: the index is derived data and is left as rebuilt (no undo)" in undo.plan["unchanged"]
    assert [(r["kind"], r["status"], r["before"], r["after"]) for r in undo.records] == [("case-status", "verified", "active", "closed")]
    assert status_of(sandbox) == "closed" and count(sandbox) == 30 and status_of(sandbox, "CASE-OTHER") == "active"
    twice = run(case_id=CASE, dry_run=False, approval="yes", undo_run=report.flow_run_id)
    assert twice.outcome == "nothing-to-do" and f"leh.cases/{CASE}: case-status already back at closed" in twice.plan["unchanged"]


def test_only_the_status_when_the_index_is_intact(leh, sandbox):
    seed_case(sandbox, leh, CASE, 12)
    delete_case(sandbox, leh, CASE, drop_index=False)
    report = run(case_id=CASE, dry_run=False, approval="yes")
    [action] = report.plan["actions"]
    assert action["kind"] == "case-status" and report.outcome == "done" and status_of(sandbox) == "active"
    assert [r["status"] for r in report.records] == ["verified"] and count(sandbox) == 12
    assert "es:ESHttpPost" not in json.dumps(report.records)
    # the same index with the same documents but without the product's mapping (filled by dynamic mapping): recreated with it
    docs = sandbox.opensearch.docs("leh-cases", INDEX)
    search(sandbox).indices.delete(index=INDEX)
    sandbox.opensearch.create_index("leh-cases", INDEX, docs=docs, mappings={"properties": {"created_at": {"type": "text"}}})
    again = run(case_id=CASE, dry_run=False, approval="yes")
    [action] = again.plan["actions"]
    assert (action["kind"], action["current"], action["target"]) == ("case-index", "12 documents (mapping differs)", "12 documents from DynamoDB")
    assert "created_at is text, not date" in action["evidence"] and again.outcome == "done", again.findings
    assert search(sandbox).indices.get_mapping(index=INDEX)[INDEX]["mappings"] == leh.case_store.index_mapping and count(sandbox) == 12
    assert again.records[0]["detail"].startswith("12 document(s) written in 1 batch(es), index created with the product's mapping")


def test_a_partial_index_is_refilled_without_duplicates_and_strays_go(leh, sandbox):
    seed_case(sandbox, leh, CASE, 40)
    client = search(sandbox)
    for i in (3, 17, 29):
        client.delete(index=INDEX, id=f"ev-{i:05d}")
    client.index(index=INDEX, id="ev-gone", body={"evidence_id": "ev-gone", "title": "deleted from DynamoDB"})
    client.indices.refresh(index=INDEX)
    report = run(case_id=CASE, dry_run=False, approval="yes", batch_size=16)
    [action] = report.plan["actions"]  # the case is active: only the index
    assert (action["current"], action["target"]) == ("38 documents", "40 documents from DynamoDB")
    assert report.outcome == "done", report.findings
    docs = sandbox.opensearch.docs("leh-cases", INDEX)
    assert len(docs) == 40 and set(docs) == {f"ev-{i:05d}" for i in range(40)} and docs["ev-00017"] == evidence_doc(CASE, 17)
    assert "in 3 batch(es)" in report.records[0]["detail"] and "1 without evidence in DynamoDB removed" in report.records[0]["detail"]
    assert client.count(index=INDEX)["count"] == 40


def test_an_unknown_case_is_refused(leh, sandbox):
    report = run(case_id="CASE-NOPE", dry_run=False, approval="yes")
    assert report.outcome == "refused" and report.status is Status.UNKNOWN and report.records == []
    assert "no case 'CASE-NOPE' in leh.cases" in report.findings[-1].summary
    bad = run(case_id="a/b")
    assert bad.outcome == "refused" and "not a case id" in bad.findings[-1].summary


def test_without_a_case_database_it_says_what_to_configure(sandbox, tmp_path):
    import yaml

    from opsbook.inventory import SYSTEMS_DIR

    data = yaml.safe_load((SYSTEMS_DIR / "leh.yaml").read_text())
    del data["case_store"]["database"]
    (tmp_path / "leh.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    with shell_approval("yes"):
        report = reindex_case(system=str(tmp_path / "leh.yaml"), case_id=CASE, dry_run=False, return_state=True).result(raise_on_failure=False)
    assert report.outcome == "refused" and report.status is Status.UNKNOWN and report.records == []
    assert "names no database for its cases; configure case_store.database" in report.findings[-1].summary
    assert "password_secret" in report.findings[-1].summary and "nothing was changed" in report.findings[-1].summary


def test_a_large_case_pages_batches_and_is_covered_by_the_policy(leh, sandbox, capsys, monkeypatch):
    from opensearchpy.transport import Transport

    seed_case(sandbox, leh, CASE, 1200)
    delete_case(sandbox, leh, CASE)
    verbs: set[str] = set()
    real = Transport.perform_request

    def spy(self, method, url, *args, **kwargs):
        verbs.add(method)
        return real(self, method, url, *args, **kwargs)

    monkeypatch.setattr(Transport, "perform_request", spy)
    report = run(case_id=CASE, dry_run=False, approval="yes", batch_size=500)
    assert report.outcome == "done" and report.status is Status.OK, report.findings
    assert count(sandbox) == 1200 and status_of(sandbox) == "active"
    assert report.records[1]["detail"].startswith("1200 document(s) written in 3 batch(es), index created with the product's mapping")
    # the plan and the drift check count (Select=COUNT); the rebuild reads the items in pages of 500
    assert report.api_calls_by_operation["dynamodb:Query"] >= 2 + 3
    err = capsys.readouterr().err
    assert "evidence-case-2025-0042: 500/1200 documents written" in err and "1200/1200 documents written" in err
    policy = set(policy_for(rc.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert {"secretsmanager:GetSecretValue", "dynamodb:Query", "es:DescribeDomain"} <= used and used <= policy, used - policy
    assert verbs == {"GET", "PUT", "POST"}  # the cluster's HTTP API is outside botocore: check its verbs here
    assert {f"es:ESHttp{v.title()}" for v in verbs} <= policy
    assert report.undeclared_iam_actions == []


def test_the_status_update_is_conditional_on_the_planned_value(leh, sandbox):
    seed_case(sandbox, leh, CASE, 5)
    delete_case(sandbox, leh, CASE)
    t = rj.target_for(leh, CASE)
    index = ops.read_index.fn(leh, t.store.opensearch_domain, t.index)
    t = t.model_copy(update={"url": index.url})
    ident = Identity(account="123456789012", arn="arn:aws:sts::123456789012:assumed-role/x/y", region="ap-northeast-2")
    plan = rj.plan_for(leh, ident, t, "closed", ddb.read_evidence.fn(leh, t.store, t.case_id), index)
    set_case_status(sandbox, leh, CASE, "active")  # someone reopened it
    with pytest.raises(Refused, match=f"leh.cases/{CASE} was closed when planned and is now active"):
        rc.check_drift.fn(leh, plan, t, 500)
    work = rc.CaseWork(leh, plan, t, 500)
    with pytest.raises(sqldb.StatusChanged, match="was closed when planned and is now active"):
        work.set_status(leh, t.case_resource, "active")
    assert work.drifted and status_of(sandbox) == "active"
    findings = {f.check: f for f in rc.verify_reindex.fn(leh, plan, t, ops.Rebuilt(written=5))}  # the index is still gone
    assert findings["case-status"].status is Status.OK and findings["case-index"].status is Status.CRIT
    assert "holds no index after the rebuild, but leh-evidence has 5 evidence items" in findings["case-index"].summary


def test_a_change_while_acting_stops_the_run_and_changes_nothing(leh, sandbox, monkeypatch):
    seed_case(sandbox, leh, CASE, 5)
    delete_case(sandbox, leh, CASE)
    real = rc.CaseWork.set_status

    def reopened_meanwhile(self, system, resource, value):  # someone reopens it after the drift check
        set_case_status(sandbox, leh, CASE, "archived")
        return real(self, system, resource, value)

    monkeypatch.setattr(rc.CaseWork, "set_status", reopened_meanwhile)
    report = run(case_id=CASE, dry_run=False, approval="yes")
    assert report.outcome == "refused" and report.status is Status.UNKNOWN
    assert "was closed when planned and is now archived" in report.findings[-1].summary and "nothing was changed" in report.findings[-1].summary
    assert [(r["kind"], r["status"]) for r in report.records] == [("case-status", "failed"), ("case-index", "not-attempted")]
    assert status_of(sandbox) == "archived" and count(sandbox) is None


def test_a_failed_rebuild_undoes_the_status_and_says_how_far_it_got(leh, sandbox, monkeypatch):
    seed_case(sandbox, leh, CASE, 25)
    delete_case(sandbox, leh, CASE)
    real = ops.rebuild_index

    def dies_after_a_batch(url, region, index, docs, key, batch_size, on_batch=None, **kw):
        def docs_then_outage():
            for i, d in enumerate(docs):
                if i == batch_size:
                    sandbox.opensearch.set_unreachable("leh-cases")
                yield d
        return real(url, region, index, docs_then_outage(), key, batch_size, on_batch, **kw)

    monkeypatch.setattr(ops, "rebuild_index", dies_after_a_batch)
    try:
        report = run(case_id=CASE, dry_run=False, approval="yes", batch_size=10)
    finally:
        sandbox.opensearch.set_unreachable("leh-cases", False)
    assert report.outcome == "failed" and report.status is Status.CRIT
    assert [(r["kind"], r["status"]) for r in report.records] == [
        ("case-status", "applied"), ("case-index", "failed"), ("case-status", "undone")]
    assert report.records[1]["detail"].startswith("10 document(s) written in 1 batch(es), index created with the product's mapping; ")
    assert status_of(sandbox) == "closed" and count(sandbox) == 10  # the case stays as it was; the next run refills the index
