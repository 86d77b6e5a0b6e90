"""reindex-case's decisions (pure: no AWS, no Prefect, no I/O): the case's names, the plan, and what the read-back means.

A case is a row of the case store's SQL ``cases`` table (``id``, ``status`` active/closed; seed 003 시나리오 B: RDS
PostgreSQL); its evidence are the DynamoDB evidence table's items under the case's partition key; its search index
(``index_template``, one index a case, created with the product's ``index_mapping``) holds one document an evidence item.
The index is derived data: DynamoDB is the source of truth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.inventory import CaseDatabase, CaseStore, System
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
    db: CaseDatabase
    index: str
    url: str | None = None  # the cluster's HTTP endpoint, once DescribeDomain has been read

    @property
    def cases_table(self) -> str:
        return f"{self.db.database}.{self.db.table}"

    @property
    def case_resource(self) -> str:
        return f"{self.cases_table}/{self.case_id}"

    @property
    def index_resource(self) -> str:
        return f"{self.store.opensearch_domain}/{self.index}"


MAPPING_DIFFERS = " (mapping differs)"
NEEDS_DATABASE = ("case_store.database: the SQL database holding the cases table, e.g. {host: <RDS endpoint>, port: 5432, "
                  "database: leh, user: <user with SELECT, UPDATE on cases>, sslmode: require, password_secret: <Secrets Manager "
                  "secret id> (or password_env: <environment variable>), table: cases}")


def documents(n: int) -> str:
    return f"{n} documents"


def index_value(count: int, mapping_ok: bool = True) -> str:
    """The index step's value: its document count, and whether its mapping is the product's."""
    return documents(count) + ("" if mapping_ok else MAPPING_DIFFERS)


def mapping_differences(want: dict[str, Any] | None, have: dict[str, Any] | None, path: str = "") -> list[str]:
    """The fields of the product's mapping (``want``: an index's ``mappings``) the index (``have``) lacks or types otherwise;
    fields the index has besides are fine (dynamic mapping adds them). [] when there is no product mapping."""
    out: list[str] = []
    want_props = (want or {}).get("properties") or {}
    have_props = (have or {}).get("properties") or {}
    for name, spec in sorted(want_props.items()):
        field, got = f"{path}{name}", have_props.get(name)
        if got is None:
            out.append(f"{field} missing")
            continue
        wt, ht = spec.get("type", "object" if "properties" in spec else None), got.get("type", "object" if "properties" in got else None)
        if wt != ht:
            out.append(f"{field} is {ht}, not {wt}")
        elif "properties" in spec:
            out += mapping_differences(spec, got, f"{field}.")
    return out


def index_name(store: CaseStore, case_id: str) -> str:
    """The case's index (OpenSearch index names are lower case)."""
    name = store.index_template.format(case_id=case_id).lower()
    if (not name or name in (".", "..") or name[0] in "_-+" or any(c in _BAD_INDEX_CHARS for c in name)
            or len(name.encode()) > 255):
        raise CaseError(f"case id {case_id!r} gives the index name {name!r}, which OpenSearch does not accept; check the case id")
    return name


def target_for(system: System, case_id: str) -> CaseTarget:
    if system.case_store is None:
        raise CaseError(f"{system.name}'s inventory has no case_store section (the cases database, evidence table, "
                        f"OpenSearch domain, index template); this runbook needs one; configure {NEEDS_DATABASE}")
    if system.case_store.database is None:
        raise CaseError(f"{system.name}'s inventory names no database for its cases; configure {NEEDS_DATABASE}")
    case_id = case_id.strip()
    if not case_id or "/" in case_id:
        raise CaseError(f"case id {case_id!r} is not a case id")
    return CaseTarget(case_id=case_id, store=system.case_store, db=system.case_store.database,
                      index=index_name(system.case_store, case_id))


def case_of(resource: str) -> str:
    """The case id of a status step's resource (``database.table/case_id``)."""
    return resource.rsplit("/", 1)[-1]


def plan_for(system: System, identity: Identity, t: CaseTarget, status: str, evidence: int | BaseException,
             index: IndexState | BaseException) -> Plan:
    """Restore the status unless it is active; rebuild the index unless it holds one document per evidence item with the
    product's mapping. What could not be read is left out of the plan (a note says why)."""
    store, db = t.store, t.db
    plan = Plan(runbook=RUNBOOK, system=system.name, identity=identity)
    if status == ACTIVE:
        plan.unchanged.append(f"{t.case_resource}: already {ACTIVE}")
    else:
        odd = "" if status == "closed" else f"; {status!r} is not 'closed': check this is the case that was closed by mistake"
        plan.actions.append(Action(
            kind=STATUS_KIND, resource=t.case_resource, current=status, target=ACTIVE, iam_action="secretsmanager:GetSecretValue",
            evidence=f"{t.cases_table} row {db.id_column}={t.case_id} has {db.status_column}={status}; UPDATE {db.table} SET "
                     f"{db.status_column} = '{ACTIVE}' WHERE {db.id_column} = <case> AND {db.status_column} = <{status}> "
                     "(parameterised, one transaction): it applies only while the case still is " + status + odd))
    failed = [(what, e) for what, e in ((f"its evidence in {store.evidence_table}", evidence), (f"index {t.index}", index))
              if isinstance(e, BaseException)]
    if failed:
        plan.notes += [f"{t.index_resource}: could not read {what} ({aws.describe_error(e)}); left out of the plan" for what, e in failed]
        return plan
    assert isinstance(evidence, int) and not isinstance(index, BaseException)
    m, n = evidence, index.count
    wrong = mapping_differences(store.index_mapping, index.mapping) if index.exists else []
    if index.exists and n == m and not wrong:
        plan.unchanged.append(f"{t.index_resource}: {documents(n)}, one for each evidence item in {store.evidence_table}"
                              + (", with the product's mapping" if store.index_mapping else ""))
        return plan
    if not index.exists:
        why = f"index {t.index} does not exist (deleted with the case?); it is created" + (" with the product's mapping" if store.index_mapping else "") + " and filled"
    elif wrong:
        why = (f"index {t.index}'s mapping is not the product's ({', '.join(wrong[:5])}{', ...' if len(wrong) > 5 else ''}); "
               "it is deleted, created with the product's mapping and filled")
    else:
        why = f"the index holds {documents(n)} and {store.evidence_table} has {m} evidence items; it is refilled"
    plan.actions.append(Action(
        kind=INDEX_KIND, resource=t.index_resource, current=index_value(n, not wrong), target=f"{documents(m)} from DynamoDB",
        iam_action="es:ESHttpPost", reversible=False,
        evidence=f"{why} from {store.evidence_table} in bulk batches, document id = {store.evidence_key} (a re-run overwrites, "
                 "never duplicates); documents whose evidence is not in DynamoDB are removed. No undo: the index is derived "
                 "data, rebuilt from DynamoDB, the source of truth"))
    return plan


def recreate(plan: Plan) -> bool:
    """Was the approved index action planned for an index whose mapping is not the product's (it is deleted first)?"""
    return any(a.kind == INDEX_KIND and a.current.endswith(MAPPING_DIFFERS) for a in plan.actions)


def undo_records(records: list[dict[str, Any]], t: CaseTarget) -> tuple[list[dict[str, Any]], list[str]]:
    """The records an undo of this case works from: its status steps (the index is derived data and has no undo), and
    what the plan says about the rest."""
    mine = [r for r in records if r.get("resource") == t.case_resource and r.get("kind") == STATUS_KIND]
    index = any(r.get("resource") == t.index_resource and r.get("kind") == INDEX_KIND for r in records)
    return mine, ([f"{t.index_resource}: the index is derived data and is left as rebuilt (no undo)"] if index else [])


def planned_documents(plan: Plan) -> int | None:
    """The evidence count the approved index action was planned for (None: no index action)."""
    return next((int(a.target.split()[0]) for a in plan.actions if a.kind == INDEX_KIND), None)


def status_finding(resource: str, case_id: str, now: str, target: str = ACTIVE) -> Finding:
    """The status read back after it was set to ``target``."""
    return Finding(check="case-status", resource=resource, status=Status.OK if now == target else Status.CRIT,
                   summary=f"{case_id} is {now}" + ("" if now == target else f" after it was set to {target}"))


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
