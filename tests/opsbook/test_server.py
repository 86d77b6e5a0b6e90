"""Which Prefect server opsbook uses, and what it says when that server cannot be used."""

from __future__ import annotations

import pytest

from opsbook import server


@pytest.fixture
def env(monkeypatch, tmp_path):
    for var in ("PREFECT_API_URL", "PREFECT_UI_URL", "PREFECT_SERVER_API_HOST", "PREFECT_SERVER_API_PORT", "OPSBOOK_PREFECT_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPSBOOK_HOME", str(tmp_path))
    monkeypatch.setattr(server, "_chosen", None)
    return monkeypatch


def test_default_is_opsbooks_local_server_on_4200(env):
    t = server.target()
    assert (t.api_url, t.local, t.ui_url) == ("http://127.0.0.1:4200/api", True, "http://127.0.0.1:4200")


def test_opsbook_port(env):
    env.setenv("OPSBOOK_PREFECT_PORT", "4311")
    assert server.target().api_url == "http://127.0.0.1:4311/api"


def test_prefect_server_host_and_port_are_what_prefect_server_start_would_use(env):
    env.setenv("PREFECT_SERVER_API_PORT", "4400")
    env.setenv("OPSBOOK_PREFECT_PORT", "4311")  # Prefect's own variables win over opsbook's default
    t = server.target()
    assert (t.api_url, t.source) == ("http://127.0.0.1:4400/api", "PREFECT_SERVER_API_HOST/PORT")
    env.setenv("PREFECT_SERVER_API_HOST", "0.0.0.0")  # listening everywhere: reached on loopback from here
    assert server.target().api_url == "http://127.0.0.1:4400/api"


def test_prefect_api_url_wins_and_configure_exports_it(env):
    env.setenv("PREFECT_API_URL", "http://prefect.internal:4200/api/")
    env.setenv("PREFECT_SERVER_API_PORT", "4400")
    t = server.configure()
    assert (t.api_url, t.host, t.port, t.local) == ("http://prefect.internal:4200/api", "prefect.internal", 4200, False)
    import os

    assert os.environ["PREFECT_API_URL"] == t.api_url and os.environ["PREFECT_UI_URL"] == "http://prefect.internal:4200"
    assert server.configure().source == "PREFECT_API_URL"


def test_configure_keeps_the_first_choice_and_its_source(env):
    env.setenv("OPSBOOK_PREFECT_PORT", "4312")
    first = server.configure()
    assert server.configure() == first and "OPSBOOK_PREFECT_PORT" in first.source


def test_a_remote_server_that_does_not_answer_is_an_error_saying_what_to_do(env):
    env.setenv("PREFECT_API_URL", "https://prefect.example.com/api")
    env.setattr(server, "healthy", lambda url, timeout=1.0: False)
    with pytest.raises(RuntimeError) as exc:
        server.ensure(server.target())
    msg = str(exc.value)
    assert "https://prefect.example.com/api (from PREFECT_API_URL) does not answer" in msg and "unset it" in msg


def test_a_server_that_answers_is_reused_not_started(env):
    env.setenv("PREFECT_API_URL", "https://prefect.example.com/api")
    env.setattr(server, "healthy", lambda url, timeout=1.0: True)
    started, _ = server.ensure(server.target())
    assert started is False


def test_malformed_url_is_named(env):
    env.setenv("PREFECT_API_URL", "localhost:4200")
    with pytest.raises(RuntimeError, match="is not a URL"):
        server.target()


def test_each_port_has_its_own_database(env):
    a = server.database_dir(server.Target("http://127.0.0.1:4200/api", "127.0.0.1", 4200, "x"))
    b = server.database_dir(server.Target("http://127.0.0.1:4333/api", "127.0.0.1", 4333, "x"))
    assert a != b and server.server_env(server.Target("http://127.0.0.1:4333/api", "127.0.0.1", 4333, "x"))["PREFECT_HOME"] == str(b)
