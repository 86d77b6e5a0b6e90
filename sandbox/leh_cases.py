"""LEH cases in the sandbox (seed 003 시나리오 B): a case with its evidence, and a case "deleted" by mistake.

``seed_case`` writes an active case and its evidence items to DynamoDB and
indexes them into the OpenSearch test double, the way the product keeps them
(one index a case, document id = evidence id, body = the item as plain JSON).
``delete_case`` is what the lawyer's "delete" button does: status closed and,
by default, the case's index dropped. Call ``seed_system`` for the inventory
first (it creates the tables and the domain).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from flows.reindex_case.judge import index_name
from opsbook.inventory import CaseStore, System
from sandbox.server import Sandbox, sandbox_client

_serializer = TypeSerializer()
_TITLES = ["계약서 사본", "카카오톡 대화 캡처", "녹취록", "이메일 출력본", "입금 내역서", "진술서"]


def _store(system: System) -> CaseStore:
    if system.case_store is None:
        raise ValueError(f"{system.name}'s inventory has no case_store section")
    return system.case_store


def evidence_doc(case_id: str, i: int) -> dict[str, Any]:
    """One evidence item as plain JSON (what the index holds; DynamoDB holds the same as DynamoDB JSON)."""
    created = datetime(2025, 11, 1, tzinfo=timezone.utc) + timedelta(minutes=7 * i)
    return {
        "case_id": case_id,
        "evidence_id": f"ev-{i:05d}",
        "title": f"{_TITLES[i % len(_TITLES)]} {i}",
        "summary": f"증거 {i}: 의뢰인 연락처 010-1234-{i % 10000:04d}, 상대방 계좌 이체 내역 요약",
        "uploaded_by": f"lawyer{i % 3}@lawfirm.example.com",
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pages": 1 + i % 40,
        "tags": ["ai-processed", "ocr"] if i % 2 else ["ai-processed"],
    }


def _batch_write(ddb: Any, table: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 25):
        request = {table: [{"PutRequest": {"Item": it}} for it in items[start:start + 25]]}
        for _ in range(10):
            unprocessed = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            if not unprocessed:
                break
            request = unprocessed
            time.sleep(0.05)
        else:
            raise RuntimeError(f"batch_write_item left items unprocessed in {table}")


def seed_case(sb: Sandbox, system: System, case_id: str, n_evidence: int, title: str | None = None) -> dict[str, Any]:
    """An active case with ``n_evidence`` evidence items in DynamoDB and in its index. Returns names and docs."""
    store = _store(system)
    ddb = sandbox_client(sb, "dynamodb", system.region)
    ddb.put_item(TableName=store.cases_table, Item={
        store.case_key: {"S": case_id}, store.status_attribute: {"S": "active"},
        "title": {"S": title or f"사건 {case_id}"}, "lawyer": {"S": "lawyer0@lawfirm.example.com"}})
    docs = [evidence_doc(case_id, i) for i in range(n_evidence)]
    _batch_write(ddb, store.evidence_table, [{k: _serializer.serialize(v) for k, v in d.items()} for d in docs])
    index = index_name(store, case_id)
    sb.opensearch.create_index(store.opensearch_domain, index, shards=1, replicas=1,
                               docs={d[store.evidence_key]: d for d in docs})
    return {"case_id": case_id, "domain": store.opensearch_domain, "index": index, "docs": docs}


def index_url(sb: Sandbox, system: System, case_id: str) -> str:
    store = _store(system)
    return f"{sb.opensearch.url_for(store.opensearch_domain)}/{index_name(store, case_id)}"


def delete_case(sb: Sandbox, system: System, case_id: str, drop_index: bool = True) -> None:
    """The lawyer's "delete": the case's status becomes closed and (by default) its index is deleted."""
    store = _store(system)
    sandbox_client(sb, "dynamodb", system.region).update_item(
        TableName=store.cases_table, Key={store.case_key: {"S": case_id}}, UpdateExpression="SET #s = :c",
        ExpressionAttributeNames={"#s": store.status_attribute}, ExpressionAttributeValues={":c": {"S": "closed"}})
    if drop_index:
        try:
            urllib.request.urlopen(urllib.request.Request(index_url(sb, system, case_id), method="DELETE"), timeout=10).read()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
