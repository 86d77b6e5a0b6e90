"""LEH's case store: the ``cases`` table of its SQL database (RDS PostgreSQL, seed 003 시나리오 B), through psycopg 3.

Reads a case's status and sets it with the seed's ``UPDATE cases SET status = ... WHERE id = ...``, parameterised, in a
transaction, guarded by the status the plan saw (``AND status = %s``): 0 rows means the case changed under the run
(StatusChanged says what it is now). Table and column names come from the inventory (validated identifiers, quoted
with psycopg.sql.Identifier); values are always parameters.

Where the connection goes: the inventory's host and port, TLS as its ``sslmode`` says (``require`` by default, as RDS
asks). ``OPSBOOK_CASE_DB_ENDPOINT=127.0.0.1:<port>`` (the sandbox sets it) points every case database at a local
PostgreSQL instead; it must be loopback, and its TLS is ``OPSBOOK_CASE_DB_SSLMODE`` (``require``: the sandbox's
self-signed certificate, encrypted but not verified; ``disable``, the default: none). With
``OPSBOOK_LOOPBACK_ONLY=1`` (the sandbox, the tests) a database off this machine is refused before connecting.
The password is read at connect time from Secrets Manager or the environment and never leaves this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.cache_policies import NO_CACHE

from opsbook import aws, loopback
from opsbook.iam import aws_task, declares
from opsbook.inventory import CaseDatabase, System, is_loopback_host

ENDPOINT_ENV = "OPSBOOK_CASE_DB_ENDPOINT"  # host:port of a local PostgreSQL standing in for every case database (the sandbox)
SSLMODE_ENV = "OPSBOOK_CASE_DB_SSLMODE"  # its TLS: require (a self-signed certificate) or disable (none); default disable
LOOPBACK_ENV = "OPSBOOK_LOOPBACK_ONLY"
NO_STATUS = "(none)"  # the row's status is NULL
NO_CASE = "(no such case)"


class CaseDbUnavailable(RuntimeError):
    """The case database cannot be reached as configured (the message says what to fix; never the password)."""


class StatusChanged(RuntimeError):
    """The guarded UPDATE changed no row: the case's status is not the one planned any more."""


def where(db: CaseDatabase, environ: dict[str, str] | None = None) -> tuple[str, int, str]:
    """(host, port, sslmode) this process connects to: the inventory's, or the sandbox's local PostgreSQL."""
    env = os.environ if environ is None else environ
    override = (env.get(ENDPOINT_ENV) or "").strip()
    if override and env.get(LOOPBACK_ENV) != "1":
        raise CaseDbUnavailable(f"{ENDPOINT_ENV} is set but {LOOPBACK_ENV} is not: the stand-in is the sandbox's alone; "
                                f"unset {ENDPOINT_ENV} to reach {db.host} (the real password is never sent to a stand-in)")
    if override:
        host, _, port = override.rpartition(":")
        if not host or not port.isdigit() or not is_loopback_host(host):
            raise CaseDbUnavailable(f"{ENDPOINT_ENV}={override!r} is not a loopback host:port (it stands in for the case "
                                    "database on this machine only)")
        sslmode = (env.get(SSLMODE_ENV) or "disable").strip()
        if sslmode not in ("disable", "require"):
            raise CaseDbUnavailable(f"{SSLMODE_ENV}={sslmode!r}: a local stand-in takes require or disable")
        return host.strip("[]"), int(port), sslmode
    why = loopback.reason(env)  # the one rule: AWS on loopback, or OPSBOOK_LOOPBACK_ONLY=1
    if why and not is_loopback_host(db.host):
        lead = f"{LOOPBACK_ENV}=1 (the sandbox or the tests)" if env.get(LOOPBACK_ENV) == "1" else why
        raise CaseDbUnavailable(f"{lead}: not connecting to {db.host}; the sandbox sets "
                                f"{ENDPOINT_ENV} to its local PostgreSQL when it seeds a case (--sandbox --fault leh:leh-case-deleted)")
    return db.host, db.port, db.sslmode


@declares(["secretsmanager:GetSecretValue"])
def password(system: System, db: CaseDatabase) -> str:
    """The database password: the secret's SecretString (JSON with ``password``, or the string itself), or the env var."""
    if db.password_env:
        value = os.environ.get(db.password_env)
        if not value:
            raise CaseDbUnavailable(f"environment variable {db.password_env} (case_store.database.password_env) is not set")
        return value
    assert db.password_secret
    raw = aws.client("secretsmanager", system.region).get_secret_value(SecretId=db.password_secret).get("SecretString")
    if raw is None:
        raise CaseDbUnavailable(f"secret {db.password_secret} has no SecretString (a binary secret is not a password)")
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(doc, dict):
        if not isinstance(doc.get("password"), str):
            raise CaseDbUnavailable(f"secret {db.password_secret} is JSON without a string `password` key")
        return doc["password"]
    return raw


@contextmanager
def connect(system: System, db: CaseDatabase) -> Iterator[Any]:
    """A psycopg connection (not autocommit: a transaction per ``with conn.transaction()``), closed on exit."""
    import psycopg

    host, port, sslmode = where(db)
    kw: dict[str, Any] = {"sslrootcert": db.sslrootcert} if db.sslrootcert and sslmode.startswith("verify") else {}
    try:
        # a row the application holds locked makes the guarded UPDATE wait: 5 s, then an error saying so, never a hang
        conn = psycopg.connect(host=host, port=port, dbname=db.database, user=db.user, password=password(system, db),
                               sslmode=sslmode, connect_timeout=db.connect_timeout_s, application_name="opsbook",
                               options="-c lock_timeout=5000 -c statement_timeout=30000", **kw)
    except psycopg.OperationalError as exc:
        raise CaseDbUnavailable(f"cannot connect to {db.database} on {host}:{port} as {db.user} (sslmode {sslmode}): "
                                f"{' '.join(line.strip() for line in str(exc).strip().splitlines())}") from None
    try:
        yield conn
    finally:
        conn.close()


def _names(db: CaseDatabase) -> tuple[Any, Any, Any]:
    from psycopg import sql

    return sql.Identifier(*db.table.split(".")), sql.Identifier(db.id_column), sql.Identifier(db.status_column)


def _select(conn: Any, db: CaseDatabase, case_id: str) -> str | None:
    from psycopg import sql

    table, key, status = _names(db)
    row = conn.execute(sql.SQL("SELECT {s} FROM {t} WHERE {k} = %s").format(s=status, t=table, k=key), (case_id,)).fetchone()
    if row is None:
        return None
    return NO_STATUS if row[0] is None else str(row[0])


@declares(["secretsmanager:GetSecretValue"])
def read_status(system: System, db: CaseDatabase, case_id: str) -> str | None:
    """The case's status (NO_STATUS when NULL); None when there is no such case."""
    with connect(system, db) as conn, conn.transaction():
        return _select(conn, db, case_id)


@declares(["secretsmanager:GetSecretValue"])
def set_status(system: System, db: CaseDatabase, case_id: str, expected: str, value: str) -> None:
    """``UPDATE cases SET status = %s WHERE id = %s AND status = %s`` in one transaction; 0 rows: StatusChanged (what it is
    now). More than one row (the id is not unique) rolls back and refuses."""
    from psycopg import sql

    table, key, status = _names(db)
    guard = sql.SQL("{s} IS NULL").format(s=status) if expected == NO_STATUS else sql.SQL("{s} = %s").format(s=status)
    args = (value, case_id) if expected == NO_STATUS else (value, case_id, expected)
    with connect(system, db) as conn:
        with conn.transaction():
            cur = conn.execute(sql.SQL("UPDATE {t} SET {s} = %s WHERE {k} = %s AND {g}").format(t=table, s=status, k=key, g=guard), args)
            if cur.rowcount > 1:
                raise CaseDbUnavailable(f"{db.table}: {cur.rowcount} rows have {db.id_column} = {case_id!r}; the id is not "
                                        "unique, nothing was changed (rolled back)")
        if cur.rowcount == 1:
            return
        with conn.transaction():
            now = _select(conn, db, case_id)
    raise StatusChanged(f"{db.database}.{db.table}/{case_id} was {expected} when planned and is now {now or NO_CASE} "
                        f"(changed by someone else); it was not set to {value}")


@aws_task(iam=["secretsmanager:GetSecretValue"], name="read-case", cache_policy=NO_CACHE)
def read_case(system: System, db: CaseDatabase, case_id: str) -> str | None:
    """The case's status in the cases table (None: no such case)."""
    return read_status(system, db, case_id)
