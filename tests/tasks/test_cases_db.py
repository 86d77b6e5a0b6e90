"""LEH's case database settings (opsbook/inventory.py CaseDatabase) and where tasks/cases_db.py connects, without a
database: TLS rules, the sandbox's loopback override, the password from Secrets Manager or the environment."""

from __future__ import annotations

import json

import boto3
import pytest
from pydantic import ValidationError

from opsbook.inventory import CaseDatabase, CaseStore, System, load_system
from tasks import cases_db

RDS = "leh-db.cluster-example.ap-northeast-2.rds.amazonaws.com"


def db(**kw) -> CaseDatabase:
    return CaseDatabase(**{"host": RDS, "database": "leh", "user": "ops", "password_secret": "leh/db", **kw})


def test_defaults_are_rds_with_tls():
    d = db()
    assert (d.port, d.sslmode, d.table, d.id_column, d.status_column) == (5432, "require", "cases", "id", "status")
    assert load_system("leh").case_store.database.sslmode == "require"


@pytest.mark.parametrize("kw, why", [
    ({"sslmode": "disable"}, "sslmode disable is allowed only for a database on loopback"),
    ({"sslmode": "verify-full"}, "needs sslrootcert"),
    ({"password_env": "PGPASS"}, "exactly one of password_secret"),
    ({"password_secret": None}, "exactly one of password_secret"),
    ({"table": "cases; DROP TABLE cases"}, "table"),
    ({"status_column": "status = 'x'"}, "status_column"),
    ({"sslmode": "prefer"}, "sslmode"),
])
def test_refused_settings(kw, why):
    with pytest.raises(ValidationError, match=why):
        db(**kw)


def test_allowed_settings():
    assert db(host="127.0.0.1", sslmode="disable").sslmode == "disable"
    assert db(host="localhost", sslmode="disable", password_secret=None, password_env="PGPASS").password_env == "PGPASS"
    assert db(sslmode="verify-full", sslrootcert="/etc/ssl/rds-global-bundle.pem", table="app.cases").table == "app.cases"


def test_where_the_connection_goes():
    assert cases_db.where(db(), {}) == (RDS, 5432, "require")
    assert cases_db.where(db(), {"OPSBOOK_CASE_DB_ENDPOINT": "127.0.0.1:6543", "OPSBOOK_LOOPBACK_ONLY": "1"}) == ("127.0.0.1", 6543, "disable")
    # a stand-in left in a real shell never receives the real database's password
    with pytest.raises(cases_db.CaseDbUnavailable, match="OPSBOOK_CASE_DB_ENDPOINT is set but OPSBOOK_LOOPBACK_ONLY is not"):
        cases_db.where(db(), {"OPSBOOK_CASE_DB_ENDPOINT": "127.0.0.1:6543"})
    local_tls = {"OPSBOOK_CASE_DB_ENDPOINT": "127.0.0.1:6543", "OPSBOOK_CASE_DB_SSLMODE": "require", "OPSBOOK_LOOPBACK_ONLY": "1"}
    assert cases_db.where(db(), local_tls) == ("127.0.0.1", 6543, "require")
    with pytest.raises(cases_db.CaseDbUnavailable, match="takes require or disable"):
        cases_db.where(db(), {**local_tls, "OPSBOOK_CASE_DB_SSLMODE": "verify-full"})
    with pytest.raises(cases_db.CaseDbUnavailable, match="not a loopback host:port"):
        cases_db.where(db(), {"OPSBOOK_CASE_DB_ENDPOINT": "db.example.com:5432", "OPSBOOK_LOOPBACK_ONLY": "1"})
    with pytest.raises(cases_db.CaseDbUnavailable, match=f"OPSBOOK_LOOPBACK_ONLY=1 .*not connecting to {RDS}"):
        cases_db.where(db(), {"OPSBOOK_LOOPBACK_ONLY": "1"})
    assert cases_db.where(db(host="::1", sslmode="disable"), {"OPSBOOK_LOOPBACK_ONLY": "1"}) == ("::1", 5432, "disable")


SYS = System(name="leh", region="ap-northeast-2", case_store=CaseStore(database=db()))


def test_the_password_from_secrets_manager_or_the_environment(aws_mock, monkeypatch):
    sm = boto3.client("secretsmanager", region_name="ap-northeast-2")
    sm.create_secret(Name="leh/db", SecretString=json.dumps({"username": "ops", "password": "pw-json", "port": 5432}))
    assert cases_db.password(SYS, db()) == "pw-json"  # as RDS keeps it
    sm.create_secret(Name="plain", SecretString="pw-plain")
    assert cases_db.password(SYS, db(password_secret="plain")) == "pw-plain"
    sm.create_secret(Name="nokey", SecretString=json.dumps({"username": "ops"}))
    with pytest.raises(cases_db.CaseDbUnavailable, match="JSON without a string `password` key"):
        cases_db.password(SYS, db(password_secret="nokey"))
    env_db = db(password_secret=None, password_env="LEH_CASES_PW")
    monkeypatch.delenv("LEH_CASES_PW", raising=False)
    with pytest.raises(cases_db.CaseDbUnavailable, match="LEH_CASES_PW .* is not set"):
        cases_db.password(SYS, env_db)
    monkeypatch.setenv("LEH_CASES_PW", "pw-env")
    assert cases_db.password(SYS, env_db) == "pw-env"


def test_an_unreachable_database_says_where_and_never_the_password(aws_mock, monkeypatch, closed_port):
    boto3.client("secretsmanager", region_name="ap-northeast-2").create_secret(Name="leh/db", SecretString="hunter2-secret")
    monkeypatch.setenv("OPSBOOK_CASE_DB_ENDPOINT", f"127.0.0.1:{closed_port}")
    monkeypatch.delenv("OPSBOOK_CASE_DB_SSLMODE", raising=False)  # the default: disable
    with pytest.raises(cases_db.CaseDbUnavailable) as e:
        cases_db.read_status(SYS, db(connect_timeout_s=2), "CASE-1")
    assert f"cannot connect to leh on 127.0.0.1:{closed_port} as ops (sslmode disable)" in str(e.value)
    assert "hunter2" not in str(e.value)


def test_the_sandboxs_case_database_speaks_tls_and_needs_the_password(seeded, sandbox, case_postgres):
    """What the sandbox stands in for RDS with: TLS (sslmode require) and a password (scram) from Secrets Manager."""
    import psycopg

    from sandbox.leh_cases import case_db

    leh = seeded("leh")
    d = case_db(sandbox, leh)
    if not case_postgres.tls:
        pytest.skip("openssl is missing: the sandbox's PostgreSQL runs without TLS")
    assert cases_db.where(d) == ("127.0.0.1", case_postgres.port, "require")
    with cases_db.connect(leh, d) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        assert conn.execute("SELECT current_user").fetchone() == ("opsbook_cases",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=case_postgres.port, dbname="leh", user="opsbook_cases", password="wrong",
                        sslmode="require", connect_timeout=5).close()
