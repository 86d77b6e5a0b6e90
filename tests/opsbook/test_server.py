"""Which Prefect server opsbook uses, and what it says when that server cannot be used."""

from __future__ import annotations

import pytest

from opsbook import server


@pytest.fixture
def env(monkeypatch, tmp_path):
    # setenv first, then delenv: monkeypatch then restores what configure() writes into os.environ
    for var in ("PREFECT_API_URL", "PREFECT_UI_URL", "PREFECT_SERVER_API_HOST", "PREFECT_SERVER_API_PORT", "OPSBOOK_PREFECT_PORT",
                "PREFECT_PROFILE", "PREFECT_API_KEY"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setenv("OPSBOOK_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(tmp_path / "profiles.toml"))
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
    assert (t.api_url, t.source) == ("http://127.0.0.1:4400/api", "PREFECT_SERVER_API_PORT")
    env.setenv("PREFECT_SERVER_API_HOST", "0.0.0.0")  # listening everywhere: reached on loopback from here
    assert server.target().api_url == "http://127.0.0.1:4400/api"


def test_prefect_api_url_wins_and_configure_exports_it(env):
    env.setenv("PREFECT_API_URL", "http://prefect.internal:4200/api/")
    env.setenv("PREFECT_SERVER_API_PORT", "4400")
    t = server.configure()
    assert (t.api_url, t.host, t.port, t.local) == ("http://prefect.internal:4200/api", "prefect.internal", 4200, False)
    import os

    assert os.environ["PREFECT_API_URL"] == t.api_url
    assert "PREFECT_UI_URL" not in os.environ  # a remote server's UI address is Prefect's to infer (Cloud's is not API minus /api)
    assert server.configure().source == "PREFECT_API_URL"


def test_a_local_server_gets_its_ui_address(env):
    import os

    env.setenv("PREFECT_API_URL", "http://127.0.0.1:4401/api")
    t = server.configure()
    assert t.local and os.environ["PREFECT_UI_URL"] == "http://127.0.0.1:4401"


def test_the_active_prefect_profile_is_read_like_prefect_reads_it(env, tmp_path):
    (tmp_path / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://127.0.0.1:4402/api"\n'
        '[profiles.cloud]\nPREFECT_API_URL = "https://api.prefect.cloud/api/accounts/a/workspaces/w"\n')
    t = server.target()
    assert (t.api_url, t.source) == ("http://127.0.0.1:4402/api", "PREFECT_API_URL in Prefect profile 'team'")
    env.setenv("PREFECT_PROFILE", "cloud")
    assert server.target().api_url == "https://api.prefect.cloud/api/accounts/a/workspaces/w"
    env.setenv("PREFECT_API_URL", "http://127.0.0.1:4403/api")  # the environment wins, as in Prefect
    assert server.target().api_url == "http://127.0.0.1:4403/api"


def test_healthy_twin_no_profile_file_means_the_default(env):
    assert server.prefect_profile() == ("", {}) and server.target().api_url == "http://127.0.0.1:4200/api"


def test_a_broken_profiles_file_is_named(env, tmp_path):
    (tmp_path / "profiles.toml").write_text("active = [\n")
    with pytest.raises(RuntimeError, match="cannot read the Prefect profiles in .*profiles.toml"):
        server.target()


def test_configure_keeps_the_first_choice_and_its_source(env):
    env.setenv("OPSBOOK_PREFECT_PORT", "4312")
    first = server.configure()
    assert server.configure() == first and "OPSBOOK_PREFECT_PORT" in first.source


def test_a_remote_server_that_does_not_answer_is_an_error_saying_what_to_do(env):
    env.setenv("PREFECT_API_URL", "https://prefect.example.com/api")
    env.setattr(server, "healthy", lambda url, timeout=1.0: False)
    env.setattr(server, "_start", lambda t, quiet: pytest.fail("started a server for a remote address"))
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


def test_a_server_started_meanwhile_by_another_command_is_not_started_again(env):
    """The second of two parallel commands gets the start lock after the first started the server: it reuses it."""
    answers = iter([False, True])  # down at first sight, up once the lock is ours
    env.setattr(server, "healthy", lambda url, timeout=1.0: next(answers))
    env.setattr(server, "_start", lambda t, quiet: pytest.fail("started a second server"))
    assert server.ensure(server.target())[0] is False


def test_an_empty_pidfile_never_signals_our_own_process_group(env):
    t = server.target()
    server._pidfile(t).write_text("")
    assert server.stop(t) is False


def _listening(answer: bytes | None):
    """A socket on loopback that answers /health with ``answer`` (raw HTTP), or never answers (None)."""
    import socket
    import threading

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)

    def serve():
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            if answer is not None:
                c.recv(4096)
                c.sendall(answer)
                c.close()

    threading.Thread(target=serve, daemon=True).start()
    return s


@pytest.mark.parametrize("answer,said,startable", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntrue", None, None),  # the healthy twin
    (None, "did not answer within 0.3 s", False),  # accepts, never answers: run offline, do not start a server there
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "answered HTTP 503", False),
])
def test_a_server_that_does_not_answer_is_told_from_one_that_does(env, answer, said, startable):
    s = _listening(answer)
    try:
        env.setenv("PREFECT_API_URL", f"http://127.0.0.1:{s.getsockname()[1]}/api")
        got = server.unanswered(server.target(), timeout=0.3)
    finally:
        s.close()
    if said is None:
        assert got is None
    else:
        assert said in got[0] and got[1] is startable


def test_nothing_listening_on_this_machine_means_opsbook_may_start_its_server_there(env):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound, never listening: refused
    env.setenv("OPSBOOK_PREFECT_PORT", str(port))
    why, startable = server.unanswered(server.target(), timeout=1)
    assert startable and "cannot be reached" in why
    elsewhere = server.Target(f"http://127.0.0.2:{port}/api", "127.0.0.2", port, "test")  # not one opsbook starts
    assert not elsewhere.local and server.unanswered(elsewhere, timeout=1)[1] is False
