"""reindex-case: restore a case a lawyer closed ("deleted") by mistake, and rebuild its search index.

Source: 003 RUNBOOK.md 시나리오 B (실수로 사건 '종료(삭제)'): 1. DB 복구, the case's
status closed -> active; 2. 인덱스 복구, if its OpenSearch index was deleted,
rebuild it from the data in DynamoDB. The seed calls the product's
``POST /admin/reindex-case``; opsbook does the same work itself against
DynamoDB and the cluster, with a plan, approval and records.

Steps: confirm identity -> read the case's status, count its evidence (Query,
Select=COUNT) and its index's documents, at once -> plan -> (dry run ends
here) -> approve -> leases -> drift check -> act (the rebuild reads the
evidence items themselves, fresh, page by page) -> verify -> record -> notify.

- Idempotent: each action is planned only when needed (the status is not
  active; the index is missing or its count differs from the evidence count),
  so a second run finds nothing to do.
- The status update is conditional on the planned value: if someone changed
  the case meanwhile, the run stops (refused) and says what it found.
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
    documents,
    index_finding,
    plan_for,
    planned_documents,
    status_finding,
    target_for,
)
from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task, declares
from opsbook.inventory import System, load_system
from opsbook.masking import mask
from opsbook.mutation.core import Applier, Approval, Identity, Plan, Record, Refused, drift
from opsbook.mutation.session import SESSION_TASKS, MutationSession
from opsbook.mutation.steps import apply_plan
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SystemName
from tasks import dynamodb as ddb
from tasks import opensearch as ops
from tasks.dynamodb import read_case, read_evidence
from tasks.opensearch import DomainUnavailable, IndexState, Rebuilt, read_index

RERUN = "; run again once the cause is fixed (the rebuild overwrites, it never duplicates)"


# --- acting ------------------------------------------------------------------------------------


class CaseWork:
    """This run's appliers (the case's status, its index) and what they did."""

    def __init__(self, system: System, plan: Plan | None, t: CaseTarget, batch_size: int) -> None:
        """``plan`` None: only to read (closing a killed run's open step)."""
        self.system, self.t, self.batch_size = system, t, batch_size
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

    @declares(["dynamodb:GetItem"])
    def read_status(self, system: System, resource: str) -> str:
        return ddb.read_status(system, self.t.store, self.t.case_id) or ddb.NO_CASE

    def set_status(self, system: System, resource: str, value: str) -> None:
        a = self.planned[STATUS_KIND]
        expected = a.current if value == a.target else a.target  # forward, or the undo of a later failure
        try:
            ddb.set_status(system, self.t.store, self.t.case_id, expected, value)
        except ddb.StatusChanged as exc:
            if value == a.target:  # a failed undo is recorded as undo-failed, not as drift
                self.drifted.append(str(exc))
            raise

    @declares(["es:ESHttpGet"])
    def read_index(self, system: System, resource: str) -> str:
        assert self.t.url
        return documents(ops.index_count(self.t.url, system.region, self.t.index) or 0)

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
        self.rebuilt = ops.rebuild_index(self.t.url, system.region, self.t.index, docs, self.t.store.evidence_key,
                                         self.batch_size, on_batch)
        update_progress_artifact(progress, progress=100.0)


@aws_task(iam=["dynamodb:GetItem", "dynamodb:Query", "es:ESHttpGet"], name="check-drift", cache_policy=NO_CACHE)
def check_drift(system: System, plan: Plan, t: CaseTarget, batch_size: int) -> None:
    drifted = drift(system, plan, CaseWork(system, plan, t, batch_size).appliers())
    planned = planned_documents(plan)
    if planned is not None:
        now = ddb.count_evidence(system, t.store, t.case_id)
        if now != planned:
            drifted.append(f"{t.store.evidence_table} had {planned} evidence items for {t.case_id} when planned and has {now} now")
    if drifted:
        raise Refused("the state changed since the plan was approved; nothing was changed: " + "; ".join(drifted))


@aws_task(iam=["dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:Query", "es:ESHttpGet", "es:ESHttpPut", "es:ESHttpPost"],
          name="apply-reindex", cache_policy=NO_CACHE, read_only=False)
def apply_reindex(system: System, plan: Plan, t: CaseTarget, batch_size: int, approval: Approval,
                  identity: Identity) -> tuple[list[Record], bool, list[str], Rebuilt | None]:
    work = CaseWork(system, plan, t, batch_size)
    records, ok = apply_plan(system, plan, work.appliers(), approval, str(flow_run.get_id()) if flow_run.get_id() else None, identity)
    rebuilt = work.rebuilt
    if rebuilt is not None:
        how = (f"{rebuilt.written} document(s) written in {rebuilt.batches} batch(es)" + (", index created" if rebuilt.created else "")
               + (f", {rebuilt.removed} without evidence in DynamoDB removed" if rebuilt.removed else ""))
        records = [r.model_copy(update={"detail": f"{how}; {r.detail}".rstrip("; ") if r.status == "failed" else how})
                   if r.kind == INDEX_KIND and r.status in ("applied", "failed") else r for r in records]
    return [r.model_copy(update={"detail": mask(r.detail)}) for r in records], ok, work.drifted, rebuilt


@aws_task(iam=["dynamodb:GetItem", "dynamodb:Query", "es:ESHttpGet", "es:ESHttpPost"], name="verify-reindex", cache_policy=NO_CACHE)
def verify_reindex(system: System, plan: Plan, t: CaseTarget, rebuilt: Rebuilt | None) -> list[Finding]:
    """Read back what was set: the status is active; the index holds one document per evidence item."""
    out = []
    for a in plan.actions:
        if a.kind == STATUS_KIND:
            out.append(status_finding(a.resource, t.case_id, ddb.read_status(system, t.store, t.case_id) or ddb.NO_CASE))
            continue
        assert t.url
        n = ops.refresh_and_count(t.url, system.region, t.index)
        m = rebuilt.written if rebuilt else ddb.count_evidence(system, t.store, t.case_id)
        out.append(index_finding(a.resource, t, n, m, rebuilt, ops.MAX_RESULT_WINDOW))
    return out


@task(name="make-plan", cache_policy=NO_CACHE)
def make_plan(system: System, identity: Identity, t: CaseTarget, status: str, evidence: int | BaseException,
              index: IndexState | BaseException) -> Plan:
    return plan_for(system, identity, t, status, evidence, index)


def _outcome(fut: Any) -> Any:
    """A submitted read's result, or its exception (the plan says what could not be read)."""
    fut.wait()
    return fut.result() if fut.state.is_completed() else fut.state.result(raise_on_failure=False)


# --- the runbook --------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def reindex_case(
    system: SystemName,
    case_id: Annotated[str, Param("The case to restore (its id in the case store)", min_length=1)],
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    batch_size: Annotated[int, Param("Evidence items per DynamoDB page and per bulk index request", ge=10, le=5000)] = 500,
) -> Any:
    """Restore a case closed by mistake (status -> active) and rebuild its search index from DynamoDB.

    dry_run (default) ends after the plan. Otherwise the run asks for approval
    (a form on the paused run in the UI; the shell's prompt or --yes), then acts, verifies,
    records and notifies. batch_size: evidence items per DynamoDB page and per
    bulk request.
    """
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
    with session:
        identity = session.identity()
        try:
            t = target_for(inv, case_id)
        except CaseError as exc:
            raise Refused(f"{exc}; nothing was changed") from None
        reads = (read_case.submit(inv, t.store, t.case_id), read_evidence.submit(inv, t.store, t.case_id),
                 read_index.submit(inv, t.store.opensearch_domain, t.index))
        status, evidence, index = (_outcome(f) for f in reads)
        if isinstance(index, DomainUnavailable):  # said as the runbook's own error, as it always was
            index = CaseError(str(index))
        if isinstance(status, BaseException):
            raise Refused(f"could not read case {t.case_id} from {t.store.cases_table}: {aws.describe_error(status)}; nothing was changed")
        if status is None:
            raise Refused(f"no case {t.case_id!r} in {t.store.cases_table} (key {t.store.case_key}); check the case id; nothing was changed")
        if isinstance(index, IndexState):
            t = t.model_copy(update={"url": index.url})
        if t.url:
            session.recover(CaseWork(inv, None, t, batch_size).appliers())
        plan = make_plan.submit(inv, identity, t, status, evidence, index).result()
        session.report.findings += [Finding(check="reindex-case-plan", resource=t.index_resource, status=Status.UNKNOWN,
                                            summary=mask(n.split(": ", 1)[1])) for n in plan.notes if "could not read" in n]
        if session.gate(plan):
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
    return session.finish()


TASKS = [read_case, read_evidence, read_index, check_drift, apply_reindex, verify_reindex] + SESSION_TASKS
