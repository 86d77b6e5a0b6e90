"""reindex-case: restore a case a lawyer closed ("deleted") by mistake, and rebuild its search index.

Source: 003 RUNBOOK.md 시나리오 B (실수로 사건 '종료(삭제)'): 1. DB 복구,
``UPDATE cases SET status = 'active' WHERE id = '{case_id}'`` on the RDS database;
2. 인덱스 복구, if its OpenSearch index was deleted, rebuild it from the data in
DynamoDB. The seed calls the product's ``POST /admin/reindex-case``; opsbook
does the same work itself against the SQL case store (PostgreSQL through
psycopg 3: tasks/cases_db.py), DynamoDB and the cluster, with a plan, approval
and records.

Steps: confirm identity -> read the case's row, count its evidence (Query,
Select=COUNT) and read its index's documents and mapping, at once -> plan ->
(dry run ends here) -> approve -> leases -> drift check -> act (the guarded
UPDATE in a transaction; the rebuild reads the evidence items themselves,
fresh, page by page, into an index created with the product's mapping) ->
verify -> record -> notify. ``undo_run``: put the case's status back as it was
before that run (the index, derived data, stays as rebuilt).

- Idempotent: each action is planned only when needed (the status is not
  active; the index is missing or its count differs from the evidence count),
  so a second run finds nothing to do.
- The status update is guarded by the planned value (``AND status = %s``): if
  someone changed the case meanwhile, 0 rows change and the run stops (refused)
  and says what it found.
- Without ``case_store.database`` in the inventory the run refuses and says what
  to configure; an unreachable database is a refusal naming host, user and TLS.
- The index is filled in batches with document id = evidence id, so a partial
  index or a re-run is overwritten, never duplicated; documents whose evidence
  is not in DynamoDB are removed (the index mirrors DynamoDB). It has no undo
  and needs none: the index is derived data, rebuilt from the source of truth.
  If the rebuild fails, the status change is undone (the case stays closed)
  and the records say how far the rebuild got; run again once the cause is fixed.
- The index holds the product's data as it is; what opsbook shows (plan,
  findings, records, notifications) is masked.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.reindex_case.judge import (
    INDEX_KIND,
    RUNBOOK,
    STATUS_KIND,
    CaseError,
    CaseTarget,
    case_of,
    documents,
    index_finding,
    index_value,
    mapping_differences,
    plan_for,
    planned_documents,
    recreate,
    status_finding,
    target_for,
    undo_records,
)
from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task, declares
from opsbook.iam_scope import Copies
from opsbook.inventory import System, load_system
from opsbook.masking import mask
from opsbook.mutation.core import Applier, Approval, Identity, Plan, Record, Refused, drift, undo_plan
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records
from opsbook.mutation.steps import apply_plan
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SystemName, UndoRun
from tasks import cases_db as sqldb
from tasks import dynamodb as ddb
from tasks import opensearch as ops
from tasks.cases_db import read_case
from tasks.dynamodb import read_evidence
from tasks.opensearch import DomainUnavailable, IndexState, Rebuilt, read_index

RERUN = "; run again once the cause is fixed (the rebuild overwrites, it never duplicates)"


# --- acting ------------------------------------------------------------------------------------


class CaseWork:
    """This run's appliers (the case's status, its index) and what they did."""

    def __init__(self, system: System, plan: Plan | None, t: CaseTarget, batch_size: int) -> None:
        """``plan`` None: only to read (closing a killed run's open step)."""
        self.system, self.t, self.batch_size, self.plan = system, t, batch_size, plan
        self.planned = {a.kind: a for a in plan.actions} if plan is not None else {}
        self.drifted: list[str] = []
        self.rebuilt: Rebuilt | None = None

    def appliers(self) -> dict[str, Applier]:
        return {STATUS_KIND: Applier(read=self.read_status, apply=self.set_status),
                INDEX_KIND: Applier(read=self.read_index, apply=self.rebuild, reached=self.rebuilt_to)}

    def rebuilt_to(self, system: System, resource: str, before: str, target: str) -> bool:
        """The rebuild's target names where the documents come from ("30 documents from DynamoDB"): it is reached when the
        index holds that many (a run killed after its rebuild, before its outcome)."""
        return self.read_index(system, resource) == documents(int(target.split()[0]))

    @declares(["secretsmanager:GetSecretValue"])
    def read_status(self, system: System, resource: str) -> str:
        return sqldb.read_status(system, self.t.db, case_of(resource)) or sqldb.NO_CASE

    @declares(["secretsmanager:GetSecretValue"])
    def set_status(self, system: System, resource: str, value: str) -> None:
        a = self.planned[STATUS_KIND]
        expected = a.current if value == a.target else a.target  # forward (or an undo run's), or the undo of a later failure
        try:
            sqldb.set_status(system, self.t.db, case_of(resource), expected, value)
        except sqldb.StatusChanged as exc:
            if value == a.target:  # a failed undo is recorded as undo-failed, not as drift
                self.drifted.append(str(exc))
            raise

    @declares(["es:ESHttpGet"])
    def read_index(self, system: System, resource: str) -> str:
        """The index's documents, and "(mapping differs)" where its mapping is not the product's."""
        assert self.t.url
        n = ops.index_count(self.t.url, system.region, self.t.index)
        want = self.t.store.index_mapping
        wrong = n is not None and want is not None and bool(mapping_differences(want, ops.index_mapping(self.t.url, system.region, self.t.index)))
        return index_value(n or 0, not wrong)

    def rebuild(self, system: System, resource: str, value: str) -> None:
        assert self.t.url
        total = int(value.split()[0])
        loud = total > self.batch_size
        progress = create_progress_artifact(progress=0.0, description=f"{RUNBOOK}: indexing {total} evidence item(s) into {self.t.index}")

        def on_batch(done: Rebuilt) -> None:
            self.rebuilt = done
            update_progress_artifact(progress, progress=min(100.0, 100.0 * done.written / max(total, 1)))
            if loud:
                print(f"opsbook: {RUNBOOK}: {self.t.index}: {done.written}/{total} documents written "
                      f"({done.batches} batch(es) of up to {self.batch_size})", file=sys.stderr)

        docs = ddb.evidence(system, self.t.store, self.t.case_id, self.batch_size)
        again = self.plan is not None and recreate(self.plan)
        self.rebuilt = ops.rebuild_index(self.t.url, system.region, self.t.index, docs, self.t.store.evidence_key,
                                         self.batch_size, on_batch, mappings=self.t.store.index_mapping, recreate=again)
        update_progress_artifact(progress, progress=100.0)


_READ_IAM = ["secretsmanager:GetSecretValue", "dynamodb:Query", "es:ESHttpGet"]


@aws_task(iam=_READ_IAM, name="check-drift", cache_policy=NO_CACHE)
def check_drift(system: System, plan: Plan, t: CaseTarget, batch_size: int) -> None:
    drifted = drift(system, plan, CaseWork(system, plan, t, batch_size).appliers())
    planned = planned_documents(plan)
    if planned is not None:
        now = ddb.count_evidence(system, t.store, t.case_id)
        if now != planned:
            drifted.append(f"{t.store.evidence_table} had {planned} evidence items for {t.case_id} when planned and has {now} now")
    if drifted:
        raise Refused("the state changed since the plan was approved; nothing was changed: " + "; ".join(drifted))


@aws_task(iam=_READ_IAM + ["es:ESHttpPut", "es:ESHttpPost", "es:ESHttpDelete"], name="apply-reindex", cache_policy=NO_CACHE,
          read_only=False)
def apply_reindex(system: System, plan: Plan, t: CaseTarget, batch_size: int, approval: Approval,
                  identity: Identity) -> tuple[list[Record], bool, list[str], Rebuilt | None]:
    work = CaseWork(system, plan, t, batch_size)
    records, ok = apply_plan(system, plan, work.appliers(), approval, str(flow_run.get_id()) if flow_run.get_id() else None, identity)
    rebuilt = work.rebuilt
    if rebuilt is not None:
        how = (f"{rebuilt.written} document(s) written in {rebuilt.batches} batch(es)" + (", index created" if rebuilt.created else "")
               + (" with the product's mapping" if rebuilt.created and t.store.index_mapping else "")
               + (f", {rebuilt.removed} without evidence in DynamoDB removed" if rebuilt.removed else ""))
        records = [r.model_copy(update={"detail": f"{how}; {r.detail}".rstrip("; ") if r.status == "failed" else how})
                   if r.kind == INDEX_KIND and r.status in ("applied", "failed") else r for r in records]
    return [r.model_copy(update={"detail": mask(r.detail)}) for r in records], ok, work.drifted, rebuilt


@aws_task(iam=_READ_IAM + ["es:ESHttpPost"], name="verify-reindex", cache_policy=NO_CACHE)
def verify_reindex(system: System, plan: Plan, t: CaseTarget, rebuilt: Rebuilt | None) -> list[Finding]:
    """Read back what was set: the status is the target; the index holds one document per evidence item, with the mapping."""
    out = []
    for a in plan.actions:
        if a.kind == STATUS_KIND:
            out.append(status_finding(a.resource, t.case_id, sqldb.read_status(system, t.db, t.case_id) or sqldb.NO_CASE, a.target))
            continue
        assert t.url
        n = ops.refresh_and_count(t.url, system.region, t.index)
        m = rebuilt.written if rebuilt else ddb.count_evidence(system, t.store, t.case_id)
        f = index_finding(a.resource, t, n, m, rebuilt, ops.MAX_RESULT_WINDOW)
        wrong = mapping_differences(t.store.index_mapping, ops.index_mapping(t.url, system.region, t.index)) if n is not None else []
        if wrong and f.status is Status.OK:
            f = f.model_copy(update={"status": Status.CRIT, "summary": f"{t.index}'s mapping is not the product's after the rebuild: "
                                     + ", ".join(wrong[:5])})
        out.append(f)
    return out


@task(name="make-plan", cache_policy=NO_CACHE)
def make_plan(system: System, identity: Identity, t: CaseTarget, status: str, evidence: int | BaseException,
              index: IndexState | BaseException) -> Plan:
    return plan_for(system, identity, t, status, evidence, index)


@aws_task(iam=["secretsmanager:GetSecretValue"], name="plan-undo", cache_policy=NO_CACHE)
def plan_undo(system: System, identity: Identity, t: CaseTarget, records: list[dict[str, Any]], run_id: str) -> Plan:
    """Put the case's status back as run ``run_id`` found it (read again now: changed since -> cannot)."""
    mine, notes = undo_records(records, t)
    plan = undo_plan(system, RUNBOOK, identity, mine, run_id, CaseWork(system, None, t, 500).appliers(),
                     {STATUS_KIND: "secretsmanager:GetSecretValue"})
    plan.unchanged += notes
    return plan


def _outcome(fut: Any) -> Any:
    """A submitted read's result, or its exception (the plan says what could not be read)."""
    fut.wait()
    return fut.result() if fut.state.is_completed() else fut.state.result(raise_on_failure=False)


# --- the runbook --------------------------------------------------------------------------


def _read_and_plan(session: MutationSession, inv: System, identity: Identity, t: CaseTarget, batch_size: int) -> tuple[Plan, CaseTarget]:
    """Read the case's row, its evidence count and its index at once; close a killed run's open steps; plan."""
    reads = (read_case.submit(inv, t.db, t.case_id), read_evidence.submit(inv, t.store, t.case_id),
             read_index.submit(inv, t.store.opensearch_domain, t.index, with_mapping=t.store.index_mapping is not None))
    status, evidence, index = (_outcome(f) for f in reads)
    if isinstance(index, DomainUnavailable):  # said as the runbook's own error, as it always was
        index = CaseError(str(index))
    if isinstance(status, BaseException):
        raise Refused(f"could not read case {t.case_id} from {t.cases_table} on {t.db.host}: {aws.describe_error(status)}; "
                      "nothing was changed")
    if status is None:
        raise Refused(f"no case {t.case_id!r} in {t.cases_table} ({t.db.id_column}); check the case id; nothing was changed")
    if isinstance(index, IndexState):
        t = t.model_copy(update={"url": index.url})
    if t.url:
        session.recover(CaseWork(inv, None, t, batch_size).appliers())
    plan = make_plan.submit(inv, identity, t, status, evidence, index).result()
    session.report.findings += [Finding(check="reindex-case-plan", resource=t.index_resource, status=Status.UNKNOWN,
                                        summary=mask(n.split(": ", 1)[1])) for n in plan.notes if "could not read" in n]
    return plan, t


def _act(session: MutationSession, inv: System, identity: Identity, plan: Plan, t: CaseTarget, batch_size: int) -> None:
    """Leases, drift check, the steps, read-back, records, conclusion."""
    session.lease()
    check_drift.submit(inv, plan, t, batch_size).result()
    done, ok, drifted, rebuilt = apply_reindex.submit(inv, plan, t, batch_size, session.approval, identity).result()
    if drifted:
        session.record(done)
        raise Refused("the state changed while acting: " + "; ".join(drifted)
                      + ("; nothing was changed" if not any(r.status == "applied" for r in done) else ""))
    checks = verify_reindex.submit(inv, plan, t, rebuilt).result() if ok else []
    good = {f.resource for f in checks if f.status is Status.OK}
    done = [r.model_copy(update={"status": "verified"}) if r.status == "applied" and r.resource in good else r for r in done]
    session.record(done)
    session.report.findings += checks
    session.report.findings += [Finding(check="reindex-action", resource=r.resource, status=Status.CRIT,
                                        summary=mask(f"{r.status}: {r.detail}" + (RERUN if r.kind == INDEX_KIND else "")))
                                for r in done if r.status in ("failed", "undo-failed")]
    session.conclude(done, ok, lambda r: f"{r.resource}: {r.status} {r.before} -> {r.after} {r.detail}".strip())


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def reindex_case(
    system: SystemName,
    case_id: Annotated[str, Param("The case to restore (its id in the case store)", min_length=1)],
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    batch_size: Annotated[int, Param("Evidence items per DynamoDB page and per bulk index request", ge=10, le=5000)] = 500,
    undo_run: UndoRun = "",
) -> Any:
    """Restore a case closed by mistake (status -> active in the cases database) and rebuild its search index from DynamoDB.

    dry_run (default) ends after the plan. Otherwise the run asks for approval
    (a form on the paused run in the UI; the shell's prompt or --yes), then acts, verifies,
    records and notifies. batch_size: evidence items per DynamoDB page and per
    bulk request. undo_run: put this case's status back as that earlier run found it.
    """
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
    with session:
        identity = session.identity()
        try:
            t = target_for(inv, case_id)
        except CaseError as exc:
            raise Refused(f"{exc}; nothing was changed") from None
        if undo_run:
            plan = plan_undo.submit(inv, identity, t, read_records.submit(inv).result(), undo_run).result()
        else:
            plan, t = _read_and_plan(session, inv, identity, t, batch_size)
        if session.gate(plan):
            _act(session, inv, identity, plan, t, batch_size)
    return session.finish()


TASKS = [read_case, read_evidence, read_index, check_drift, apply_reindex, verify_reindex, plan_undo, read_records] + SESSION_TASKS

# the case indices it rebuilds (deletes and creates again): its destructive action (es:ESHttpDelete) only there
IAM_COPIES = [Copies("es:domain", "*/*", lambda s, a: [f"{s.case_store.opensearch_domain}/{s.case_store.index_template.format(case_id='*').lower()}"]
                     if s.case_store else [])]
