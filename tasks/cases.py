"""LEH cases (seed 003, 시나리오 B): a case's status, its evidence in DynamoDB, its search index.

The seed keeps cases in an SQL ``cases`` table; here (the inventory's
``case_store:``) a case is an item of a DynamoDB table (key ``case_id``,
attribute ``status`` active/closed). Its evidence are the evidence table's
items under the same partition key, and its search index (``index_template``,
one index a case) holds one document an evidence item: id = the evidence id,
body = the item as plain JSON. The index is derived data: DynamoDB is the
source of truth and the index can always be rebuilt from it.

The reads are Prefect tasks that declare their IAM actions; the plain functions
are what those tasks and the reindex-case runbook's appliers call (the calling
task declares their actions). The cluster's own HTTP API is authorised as
``es:ESHttp<Verb>``; opensearch-py does not go through botocore, so those
declarations are checked by review and by the tests, not at call time.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.exceptions import ClientError
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from opsbook import aws
from opsbook.iam import aws_task
from opsbook.inventory import CaseStore, OpenSearchDomain, System
from opsbook.masking import mask
from tasks.opensearch import endpoint_for, os_client

NO_STATUS = "(none)"  # the case item has no status attribute
NO_CASE = "(no such case)"
MAX_RESULT_WINDOW = 10_000  # OpenSearch's default index.max_result_window: from + size beyond it is refused
_BAD_INDEX_CHARS = set(' "\\/*?<>|,#:')
_deserializer = TypeDeserializer()


class CaseError(ValueError):
    """The case or its inventory cannot be worked on (the runbook turns it into Refused)."""


class StatusChanged(RuntimeError):
    """The conditional status update found another value than the one planned."""


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


class IndexState(BaseModel):
    url: str
    exists: bool
    count: int  # 0 when the index does not exist


class Rebuilt(BaseModel):
    written: int = 0  # evidence items read from DynamoDB and indexed
    batches: int = 0
    created: bool = False
    removed: int = 0  # documents whose evidence is not in DynamoDB
    unlisted: int = 0  # documents beyond the result window that could not be checked


# --- names and conversions (pure) -------------------------------------------------------


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


def plain(value: Any) -> Any:
    """A deserialized DynamoDB value as plain JSON (numbers, lists, base64 for binary)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (Binary, bytes, bytearray)):
        return base64.b64encode(bytes(value.value if isinstance(value, Binary) else value)).decode()
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=lambda v: (str(type(v)), v))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def to_document(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item (DynamoDB JSON) as the plain JSON document the index holds."""
    return {k: plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- DynamoDB (the calling task declares dynamodb:GetItem / Query / UpdateItem) ----------


def _key(t: CaseTarget) -> dict[str, Any]:
    return {t.store.case_key: {"S": t.case_id}}


def read_status(system: System, t: CaseTarget) -> str | None:
    """The case's status (NO_STATUS when it has none); None when there is no such case."""
    item = aws.client("dynamodb", system.region).get_item(
        TableName=t.store.cases_table, Key=_key(t), ConsistentRead=True, ProjectionExpression="#k, #s",
        ExpressionAttributeNames={"#k": t.store.case_key, "#s": t.store.status_attribute}).get("Item")
    if item is None:
        return None
    if t.store.status_attribute not in item:
        return NO_STATUS
    return str(to_document({"s": item[t.store.status_attribute]})["s"])


def set_status(system: System, t: CaseTarget, expected: str, value: str) -> None:
    """Set the status, only if it still is ``expected`` (else StatusChanged, saying what it is now)."""
    names = {"#k": t.store.case_key, "#s": t.store.status_attribute}
    values: dict[str, Any] = {":to": {"S": value}}
    if expected == NO_STATUS:
        condition = "attribute_exists(#k) AND attribute_not_exists(#s)"
    else:
        condition = "attribute_exists(#k) AND #s = :from"
        values[":from"] = {"S": expected}
    try:
        aws.client("dynamodb", system.region).update_item(
            TableName=t.store.cases_table, Key=_key(t), UpdateExpression="SET #s = :to", ConditionExpression=condition,
            ExpressionAttributeNames=names, ExpressionAttributeValues=values)
    except ClientError as exc:
        if aws.error_code(exc) != "ConditionalCheckFailedException":
            raise
        now = read_status(system, t)
        raise StatusChanged(f"{t.case_resource} was {expected} when planned and is now {now or NO_CASE} "
                            f"(changed by someone else); it was not set to {value}") from None


def _by_case(t: CaseTarget) -> dict[str, Any]:
    return dict(TableName=t.store.evidence_table, KeyConditionExpression="#k = :c", ExpressionAttributeNames={"#k": t.store.case_key},
                ExpressionAttributeValues={":c": {"S": t.case_id}}, ConsistentRead=True)


def evidence(system: System, t: CaseTarget, page_size: int) -> Iterator[dict[str, Any]]:
    """Every evidence item of the case as a plain document (Query on the partition key, every page of ``page_size``)."""
    for item in aws.paginate(aws.client("dynamodb", system.region), "query", "Items", **_by_case(t),
                             PaginationConfig={"PageSize": page_size}):
        yield to_document(item)


def count_evidence(system: System, t: CaseTarget) -> int:
    """How many evidence items the case has (Query on the partition key, Select=COUNT, every page).

    Pages by hand: ``aws.paginate`` yields list items and ``Count`` is a number per page."""
    c = aws.client("dynamodb", system.region)
    return sum(page.get("Count", 0) for page in c.get_paginator("query").paginate(**_by_case(t), Select="COUNT"))


# --- the search index (the calling task declares es:DescribeDomain and es:ESHttp*) ---------


def domain_url(system: System, store: CaseStore) -> str:
    """The domain's HTTP endpoint: DescribeDomain, then the inventory/sandbox override (endpoint_for)."""
    dom = next((d for d in system.opensearch_domains if d.name == store.opensearch_domain), None) \
        or OpenSearchDomain(name=store.opensearch_domain)
    status = aws.client("opensearch", system.region).describe_domain(DomainName=dom.name)["DomainStatus"]
    if status.get("Deleted"):
        raise CaseError(f"OpenSearch domain {dom.name} is being deleted")
    url = endpoint_for(dom, status)
    if not url:
        raise CaseError(f"OpenSearch domain {dom.name} has no endpoint yet and the inventory gives no endpoint override")
    return url


def _count(client: Any, index: str) -> int | None:
    """GET {index}/_count (opensearch-py's count() POSTs); None when the index does not exist."""
    body = client.transport.perform_request("GET", f"/{quote(index)}/_count", params={"ignore": 404})
    if "count" in body:
        return int(body["count"])
    if (body.get("error") or {}).get("type") == "index_not_found_exception":
        return None
    raise RuntimeError(f"GET {index}/_count answered {body.get('status')}: {(body.get('error') or {}).get('reason', body)}")


def index_count(url: str, region: str, index: str) -> int | None:
    """Documents in the index; None when the index does not exist."""
    return _count(os_client(url, region), index)


def refresh_and_count(url: str, region: str, index: str) -> int | None:
    c = os_client(url, region)
    c.indices.refresh(index=index, ignore=404)  # a missing index is counted as None below
    return _count(c, index)


def _bulk(client: Any, actions: list[dict[str, Any]]) -> None:
    from opensearchpy import helpers

    if not actions:
        return
    _, errors = helpers.bulk(client, actions, chunk_size=len(actions), raise_on_error=False, max_retries=3,
                             initial_backoff=1, max_backoff=10)
    if errors:
        first = [next(iter(e.values())) for e in errors[:3]]
        reasons = "; ".join(f"{e.get('_id')}: {(e.get('error') or {}).get('type')} {(e.get('error') or {}).get('reason', '')}".strip()
                            for e in first)
        raise RuntimeError(mask(f"{len(errors)} of {len(actions)} bulk item(s) failed: {reasons}"))


def _listed_ids(client: Any, index: str, total: int, page: int = 1000) -> list[str]:
    """Document ids of the index, as far as from/size reaches (the result window)."""
    ids: list[str] = []
    for start in range(0, min(total, MAX_RESULT_WINDOW), page):
        size = min(page, MAX_RESULT_WINDOW - start)
        hits = client.search(index=index, body={"query": {"match_all": {}}, "_source": False, "from": start, "size": size})
        batch = [h["_id"] for h in hits["hits"]["hits"]]
        ids += batch
        if len(batch) < size:
            break
    return ids


def rebuild_index(url: str, region: str, index: str, docs: Iterable[dict[str, Any]], key: str, batch_size: int,
                  on_batch: Callable[[Rebuilt], None] | None = None) -> Rebuilt:
    """Make the index hold exactly ``docs``: create it if missing, bulk-index in batches
    (document id = ``doc[key]``, so nothing is duplicated), then remove documents not among them."""
    client = os_client(url, region, timeout=60)
    done = Rebuilt()
    answer = client.indices.create(index=index, ignore=400)  # PUT; an existing index is kept and refilled
    if answer.get("acknowledged"):
        done.created = True
    elif (answer.get("error") or {}).get("type") != "resource_already_exists_exception":
        raise RuntimeError(f"creating index {index} failed: {(answer.get('error') or {}).get('reason', answer)}")
    written: set[str] = set()
    for batch in _chunks(docs, batch_size):
        actions = [{"_op_type": "index", "_index": index, "_id": str(d[key]), "_source": d} for d in batch]
        _bulk(client, actions)
        written.update(a["_id"] for a in actions)
        done.written, done.batches = len(written), done.batches + 1
        if on_batch:
            on_batch(done)
    client.indices.refresh(index=index)
    count = _count(client, index) or 0
    if count > len(written):
        stray = [i for i in _listed_ids(client, index, count) if i not in written]
        _bulk(client, [{"_op_type": "delete", "_index": index, "_id": i} for i in stray])
        client.indices.refresh(index=index)
        done.removed = len(stray)
        done.unlisted = max(0, count - MAX_RESULT_WINDOW)
    return done


# --- read tasks ---------------------------------------------------------------------------


@aws_task(iam=["dynamodb:GetItem"], name="read-case", cache_policy=NO_CACHE)
def read_case(system: System, t: CaseTarget) -> str | None:
    return read_status(system, t)


@aws_task(iam=["dynamodb:Query"], name="read-case-evidence", cache_policy=NO_CACHE)
def read_evidence(system: System, t: CaseTarget) -> int:
    """How many evidence items the case has: all the plan needs; the rebuild reads the items themselves, fresh."""
    return count_evidence(system, t)


@aws_task(iam=["es:DescribeDomain", "es:ESHttpGet"], name="read-case-index", cache_policy=NO_CACHE)
def read_index(system: System, t: CaseTarget) -> IndexState:
    url = domain_url(system, t.store)
    n = index_count(url, system.region, t.index)
    return IndexState(url=url, exists=n is not None, count=n or 0)
