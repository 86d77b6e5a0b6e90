"""reindex-case's decisions (pure: no AWS, no Prefect): the case's names, the plan, and what the read-back means.

A case is an item of the case store's cases table (key ``case_id``, attribute ``status`` active/closed); its
evidence are the evidence table's items under the same partition key; its search index (``index_template``, one
index a case) holds one document an evidence item. The index is derived data: DynamoDB is the source of truth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.inventory import CaseStore, System
from opsbook.masking import mask
from opsbook.mutation.core import Action, Identity, Plan

if TYPE_CHECKING:
    from tasks.opensearch import IndexState, Rebuilt

RUNBOOK = "reindex-case"
STATUS_KIND, INDEX_KIND = "case-status", "case-index"
ACTIVE = "active"
_BAD_INDEX_CHARS = set(' "\\/*?<>|,#:')


class CaseError(ValueError):
    """The case or its inventory cannot be worked on (the runbook turns it into Refused)."""


class CaseTarget(BaseModel):
    """What one run works on, resolved once from the inventory and the case id."""

    case_id: str
    store: CaseStore
    index: str
    url: str | None = None  # the cluster's HTTP endpoint, once DescribeDomain has been read

    @property
    def case_resource(self) -> str:
        return f"{self.store.cases_table}/{self.case_id}"

    @property
    def index_resource(self) -> str:
        return f"{self.store.opensearch_domain}/{self.index}"


def documents(n: int) -> str:
    return f"{n} documents"


def index_name(store: CaseStore, case_id: str) -> str:
    """The case's index (OpenSearch index names are lower case)."""
    name = store.index_template.format(case_id=case_id).lower()
    if (not name or name in (".", "..") or name[0] in "_-+" or any(c in _BAD_INDEX_CHARS for c in name)
            or len(name.encode()) > 255):
        raise CaseError(f"case id {case_id!r} gives the index name {name!r}, which OpenSearch does not accept; check the case id")
    return name


def target_for(system: System, case_id: str) -> CaseTarget:
    if system.case_store is None:
        raise CaseError(f"{system.name}'s inventory has no case_store section (cases table, evidence table, "
                        "OpenSearch domain, index template); this runbook needs one")
    case_id = case_id.strip()
    if not case_id or "/" in case_id:
        raise CaseError(f"case id {case_id!r} is not a case id")
    return CaseTarget(case_id=case_id, store=system.case_store, index=index_name(system.case_store, case_id))


def plan_for(system: System, identity: Identity, t: CaseTarget, status: str, evidence: int | BaseException,
             index: IndexState | BaseException) -> Plan:
    """Restore the status unless it is active; rebuild the index unless it holds one document per evidence item.
    What could not be read is left out of the plan (a note says why)."""
    store = t.store
    plan = Plan(runbook=RUNBOOK, system=system.name, identity=identity)
    if status == ACTIVE:
        plan.unchanged.append(f"{t.case_resource}: already {ACTIVE}")
    else:
        odd = "" if status == "closed" else f"; {status!r} is not 'closed': check this is the case that was closed by mistake"
        plan.actions.append(Action(
            kind=STATUS_KIND, resource=t.case_resource, current=status, target=ACTIVE, iam_action="dynamodb:UpdateItem",
            evidence=f"{store.cases_table} item {store.case_key}={t.case_id} has {store.status_attribute}={status}; "
                     f"the update applies only while it still is {status}" + odd))
    failed = [(what, e) for what, e in ((f"its evidence in {store.evidence_table}", evidence), (f"index {t.index}", index))
              if isinstance(e, BaseException)]
    if failed:
        plan.notes += [f"{t.index_resource}: could not read {what} ({aws.describe_error(e)}); left out of the plan" for what, e in failed]
        return plan
    assert isinstance(evidence, int) and not isinstance(index, BaseException)
    m, n = evidence, index.count
    if index.exists and n == m:
        plan.unchanged.append(f"{t.index_resource}: {documents(n)}, one for each evidence item in {store.evidence_table}")
        return plan
    why = (f"index {t.index} does not exist (deleted with the case?); it is created and filled"
           if not index.exists else f"the index holds {documents(n)} and {store.evidence_table} has {m} evidence items; it is refilled")
    plan.actions.append(Action(
        kind=INDEX_KIND, resource=t.index_resource, current=documents(n), target=f"{documents(m)} from DynamoDB",
        iam_action="es:ESHttpPost", reversible=False,
        evidence=f"{why} from {store.evidence_table} in bulk batches, document id = {store.evidence_key} (a re-run overwrites, "
                 "never duplicates); documents whose evidence is not in DynamoDB are removed. No undo: the index is derived "
                 "data, rebuilt from DynamoDB, the source of truth"))
    return plan


def planned_documents(plan: Plan) -> int | None:
    """The evidence count the approved index action was planned for (None: no index action)."""
    return next((int(a.target.split()[0]) for a in plan.actions if a.kind == INDEX_KIND), None)


def status_finding(resource: str, case_id: str, now: str) -> Finding:
    """The status read back after it was set."""
    return Finding(check="case-status", resource=resource, status=Status.OK if now == ACTIVE else Status.CRIT,
                   summary=f"{case_id} is {now}" + ("" if now == ACTIVE else f" after it was set to {ACTIVE}"))


def index_finding(resource: str, t: CaseTarget, n: int | None, m: int, rebuilt: Rebuilt | None, window: int) -> Finding:
    """The index read back (``n`` documents, None: no index) against ``m`` evidence items; ``window``: how far
    the rebuild could list the index's documents."""
    details = rebuilt.model_dump() if rebuilt else {}
    if n == m:
        return Finding(check="case-index", resource=resource, status=Status.OK, value=n, details=details,
                       summary=f"{t.index} holds {documents(n)}, one for each evidence item in {t.store.evidence_table}")
    beyond = (f"; {rebuilt.unlisted} document(s) beyond the result window ({window}) could not be checked"
              if rebuilt and rebuilt.unlisted else "")
    return Finding(check="case-index", resource=resource, status=Status.CRIT, value=n if n is not None else -1, details=details,
                   summary=mask(f"{t.index} holds {documents(n) if n is not None else 'no index'} after the rebuild, "
                                f"but {t.store.evidence_table} has {m} evidence items{beyond}; searches of this case "
                                "are incomplete: run again, or compare the two"))
