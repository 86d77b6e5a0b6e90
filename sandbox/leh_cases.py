"""LEH cases in the sandbox (seed 003 시나리오 B): a case with its evidence, and a case "deleted" by mistake.

``seed_case`` writes an active case as a row of the ``cases`` table in the
sandbox's local PostgreSQL (started on first use: see ``Sandbox.start_postgres``;
the database, the inventory's user with its password in Secrets Manager, and the
schema are made as needed), its evidence items to DynamoDB, and indexes them into
the OpenSearch test double with the product's mapping, the way the product keeps
them (one index a case, document id = evidence id, body = the item as plain JSON).
``delete_case`` is what the lawyer's "delete" button does: status closed and,
by default, the case's index dropped. Call ``seed_system`` for the inventory
first (it creates the tables and the domain).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from flows.reindex_case.judge import index_name
from opsbook.inventory import CaseDatabase, CaseStore, System
from sandbox.server import Sandbox, sandbox_client

_serializer = TypeSerializer()
_TITLES = ["계약서 사본", "카카오톡 대화 캡처", "녹취록", "이메일 출력본", "입금 내역서", "진술서"]


# The seed's `cases` table as the sandbox creates it (the product's own schema is not in the seed: these are the columns
# its runbook's SQL names, plus a title and the lawyer). Identifiers come from the inventory (validated names).
SCHEMA = """CREATE TABLE IF NOT EXISTS {table} (
    {id} text PRIMARY KEY,
    title text NOT NULL DEFAULT '',
    lawyer text,
    {status} text NOT NULL DEFAULT 'active',
    updated_at timestamptz NOT NULL DEFAULT now()
)"""


def _store(system: System) -> CaseStore:
    if system.case_store is None:
        raise ValueError(f"{system.name}'s inventory has no case_store section")
    return system.case_store


def _database(system: System) -> CaseDatabase:
    db = _store(system).database
    if db is None:
        raise ValueError(f"{system.name}'s inventory has no case_store.database section")
    return db


def case_db(sb: Sandbox, system: System) -> CaseDatabase:
    """The inventory's case database in the sandbox's PostgreSQL: started, the database, user (its password in Secrets
    Manager or the env var the inventory names) and the cases table made if missing. Returns the inventory's settings."""
    from psycopg import sql

    db = _database(system)
    pg = sb.start_postgres()
    with pg.connect() as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (db.user,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(db.user), sql.Literal(pg.password)))
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db.database,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.database)))
    table = sql.Identifier(*db.table.split("."))
    with pg.connect(db.database) as conn:
        conn.execute(sql.SQL(SCHEMA).format(table=table, id=sql.Identifier(db.id_column), status=sql.Identifier(db.status_column)))
        conn.execute(sql.SQL("GRANT SELECT, UPDATE ON {} TO {}").format(table, sql.Identifier(db.user)))
    sb.sql_tables.add((db.database, sql.Identifier(*db.table.split(".")).as_string(None)))
    if db.password_env:
        os.environ[db.password_env] = pg.password
    else:
        sm = sandbox_client(sb, "secretsmanager", system.region)
        value = json.dumps({"username": db.user, "password": pg.password, "engine": "postgres", "host": db.host, "port": db.port,
                            "dbname": db.database})
        try:
            sm.put_secret_value(SecretId=db.password_secret, SecretString=value)
        except sm.exceptions.ResourceNotFoundException:
            sm.create_secret(Name=db.password_secret, SecretString=value)
    return db


def _execute(sb: Sandbox, db: CaseDatabase, query: Any, args: tuple[Any, ...]) -> Any:
    with sb.postgres.connect(db.database) as conn:
        return conn.execute(query, args).rowcount


def set_case_status(sb: Sandbox, system: System, case_id: str, status: str | None) -> None:
    """Set a case's status in the sandbox's cases table directly (the product, or someone else, doing it)."""
    from psycopg import sql

    db = _database(system)
    q = sql.SQL("UPDATE {t} SET {s} = %s, updated_at = now() WHERE {k} = %s").format(
        t=sql.Identifier(*db.table.split(".")), s=sql.Identifier(db.status_column), k=sql.Identifier(db.id_column))
    if _execute(sb, db, q, (status, case_id)) != 1:
        raise ValueError(f"no case {case_id!r} in the sandbox's {db.table}")


def case_status(sb: Sandbox, system: System, case_id: str) -> str | None:
    """A case's status as the sandbox's cases table holds it (None: NULL); KeyError: no such case."""
    from psycopg import sql

    db = _database(system)
    q = sql.SQL("SELECT {s} FROM {t} WHERE {k} = %s").format(
        t=sql.Identifier(*db.table.split(".")), s=sql.Identifier(db.status_column), k=sql.Identifier(db.id_column))
    with sb.postgres.connect(db.database) as conn:
        row = conn.execute(q, (case_id,)).fetchone()
    if row is None:
        raise KeyError(case_id)
    return row[0]


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
    from psycopg import sql

    store = _store(system)
    db = case_db(sb, system)
    q = sql.SQL("INSERT INTO {t} ({k}, title, lawyer, {s}) VALUES (%s, %s, %s, 'active') ON CONFLICT ({k}) DO UPDATE SET "
                "title = EXCLUDED.title, {s} = 'active', updated_at = now()").format(
        t=sql.Identifier(*db.table.split(".")), s=sql.Identifier(db.status_column), k=sql.Identifier(db.id_column))
    _execute(sb, db, q, (case_id, title or f"사건 {case_id}", "lawyer0@lawfirm.example.com"))
    ddb = sandbox_client(sb, "dynamodb", system.region)
    docs = [evidence_doc(case_id, i) for i in range(n_evidence)]
    _batch_write(ddb, store.evidence_table, [{k: _serializer.serialize(v) for k, v in d.items()} for d in docs])
    index = index_name(store, case_id)
    sb.opensearch.create_index(store.opensearch_domain, index, shards=1, replicas=1,
                               docs={d[store.evidence_key]: d for d in docs}, mappings=store.index_mapping)
    return {"case_id": case_id, "domain": store.opensearch_domain, "index": index, "docs": docs}


def index_url(sb: Sandbox, system: System, case_id: str) -> str:
    store = _store(system)
    return f"{sb.opensearch.url_for(store.opensearch_domain)}/{index_name(store, case_id)}"


def delete_case(sb: Sandbox, system: System, case_id: str, drop_index: bool = True) -> None:
    """The lawyer's "delete": the case's status becomes closed and (by default) its index is deleted."""
    set_case_status(sb, system, case_id, "closed")
    if drop_index:
        try:
            urllib.request.urlopen(urllib.request.Request(index_url(sb, system, case_id), method="DELETE"), timeout=10).read()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise


def case_deleted(sb: Sandbox, system: System, case_id: str = "CASE-2025-0042", n_evidence: int = 30) -> dict[str, Any]:
    """Fault ``leh-case-deleted`` (시나리오 B): a case with its evidence, then closed by mistake and its index dropped."""
    seed_case(sb, system, "CASE-OTHER", 4)  # a neighbour that must never be touched
    seeded = seed_case(sb, system, case_id, n_evidence)
    delete_case(sb, system, case_id)
    return {"resource": f"{_database(system).table}/{case_id}", "case_id": case_id, "index": seeded["index"]}


SCENARIOS = {"leh-case-deleted": case_deleted}
