"""Loopback means loopback (issue 19 item 7): when AWS calls go to this machine, every other connection opsbook opens
does too, or the run refuses (up front, one line, exit 3) or the connection is refused (UNKNOWN with the reason).
Each refusal next to its healthy twin: a loopback target is allowed, and without a loopback AWS endpoint anything is."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from opsbook import loopback as lb
from opsbook.inventory import load_system
from tests.opsbook.test_cli import prefect_points_nowhere, run_main  # noqa: F401 - the fixture, used by name

LOCAL_AWS = {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}
REAL_AWS: dict[str, str] = {}
PUBLIC = "https://search-hr.ap-northeast-2.es.amazonaws.com"
TEMPLATE = "http://127.0.0.1:9200/{domain}"


def test_when_a_run_is_loopback_only():
    assert lb.reason(LOCAL_AWS) == "AWS calls go to http://127.0.0.1:5000 on this machine (AWS_ENDPOINT_URL)"
    assert lb.reason({"OPSBOOK_LOOPBACK_ONLY": "1"}) == "this run reaches this machine only (OPSBOOK_LOOPBACK_ONLY=1)"
    assert lb.loopback_only({"AWS_ENDPOINT_URL": "http://[::1]:5000"}) and lb.loopback_only({"AWS_ENDPOINT_URL": "http://localhost:4566"})
    assert not lb.loopback_only(REAL_AWS)  # the standard chain: real AWS, real endpoints
    assert not lb.loopback_only({"AWS_ENDPOINT_URL": "https://vpce-1.dynamodb.ap-northeast-2.vpce.amazonaws.com"})
    assert not lb.loopback_only({"AWS_ENDPOINT_URL": "http://127.example.com:5000"})  # a name that looks local is not


def test_the_aws_endpoint_and_paging_checks_follow_the_same_rule(monkeypatch):
    from opsbook import aws, paging
    from opsbook.inventory import Paging

    assert aws.is_loopback_url("http://127.0.0.2:5000") and aws.is_loopback_url("http://[::1]:5000")
    assert not aws.is_loopback_url("http://127.example.com:5000") and not aws.is_loopback_url(None)  # was taken for loopback
    monkeypatch.delenv("OPSBOOK_LOOPBACK_ONLY", raising=False)
    hook = Paging(kind="webhook", url="https://127.evil.example/hook")
    assert "is not on loopback" in paging.refusal(hook, "http://127.0.0.1:5000")
    assert paging.refusal(hook, None) is None  # real AWS: the real receiver


def test_the_per_connection_guard_refuses_off_machine_and_allows_loopback():
    with pytest.raises(lb.NotLoopback) as exc:
        lb.require_loopback(f"{PUBLIC}/_cluster/health?token=s3cret", "OpenSearch cluster", "set X", LOCAL_AWS)
    assert str(exc.value) == (f"OpenSearch cluster: {PUBLIC} is not on this machine, and AWS calls go to http://127.0.0.1:5000 "
                              "on this machine (AWS_ENDPOINT_URL); set X")  # scheme://host only: never a path or token
    assert lb.require_loopback("http://127.0.0.1:9200/hr", "OpenSearch cluster", environ=LOCAL_AWS) == "http://127.0.0.1:9200/hr"
    assert lb.require_loopback(PUBLIC, "OpenSearch cluster", environ=REAL_AWS) == PUBLIC  # real AWS: the real cluster


def test_an_opensearch_domain_without_a_local_endpoint_names_the_variable_to_set():
    why = lb.opensearch_refusal("hr-search", None, LOCAL_AWS)
    assert why.startswith("OpenSearch domain hr-search: its cluster would be reached at the domain's own (public) endpoint")
    assert lb.OPENSEARCH_TEMPLATE_ENV in why
    assert lb.opensearch_refusal("hr-search", None, {**LOCAL_AWS, lb.OPENSEARCH_TEMPLATE_ENV: TEMPLATE}) is None
    assert "not on this machine" in lb.opensearch_refusal("hr-search", PUBLIC, {**LOCAL_AWS, lb.OPENSEARCH_TEMPLATE_ENV: TEMPLATE})
    assert lb.opensearch_refusal("hr-search", None, {**LOCAL_AWS, lb.OPENSEARCH_TEMPLATE_ENV: "https://os.example.com/{domain}"})
    assert lb.opensearch_refusal("hr-search", None, REAL_AWS) is None


def _with_paging(tmp_path: Path, url: str) -> Path:
    data = yaml.safe_load(Path("systems/todo-app.yaml").read_text())
    data["notifications"]["paging"] = {"kind": "webhook", "url": url}
    path = tmp_path / "todo-app.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_preflight_looks_at_what_the_runbook_uses(tmp_path):
    hr = load_system("hr-resource-optimization")
    assert hr.opensearch_domains
    reads_clusters = {"es:DescribeDomains", "es:ESHttpGet"}
    assert "OpenSearch domain" in lb.preflight(hr, reads_clusters, pages=False, environ=LOCAL_AWS)
    assert lb.preflight(hr, {"es:DescribeDomains"}, pages=False, environ=LOCAL_AWS) is None  # no cluster read: nothing to refuse
    assert lb.preflight(hr, reads_clusters, pages=False, environ={**LOCAL_AWS, lb.OPENSEARCH_TEMPLATE_ENV: TEMPLATE}) is None
    assert lb.preflight(hr, reads_clusters, pages=False, environ=REAL_AWS) is None
    todo = load_system(str(_with_paging(tmp_path, "https://hooks.example.com/opsbook/t0ken")))
    why = lb.preflight(todo, set(), pages=True, environ=LOCAL_AWS)
    assert why.startswith("the paging channel (webhook): https://hooks.example.com is not on this machine") and "t0ken" not in why
    assert lb.preflight(todo, set(), pages=False, environ=LOCAL_AWS) is None
    local = load_system(str(_with_paging(tmp_path, "http://127.0.0.1:8099/hook")))
    assert lb.preflight(local, set(), pages=True, environ=LOCAL_AWS) is None


class FakeBlock(BaseModel):
    url: SecretStr
    channel: str = "#ops"

    def notify(self, body: str, subject: str) -> None:  # never reached off machine
        raise AssertionError("posted")

    def raise_on_failure(self):
        import contextlib

        return contextlib.nullcontext()


def test_a_prefect_notification_block_off_machine_is_not_posted_to(monkeypatch):
    from prefect.blocks.core import Block

    from opsbook import notify
    from opsbook.inventory import Notifications, System

    block = FakeBlock(url=SecretStr("https://hooks.slack.com/services/T0/B0/secret"))
    assert lb.block_urls(block) == ["https://hooks.slack.com/services/T0/B0/secret"]
    monkeypatch.setattr(Block, "load", classmethod(lambda cls, name: block))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    system = System(name="x", region="us-east-1", notifications=Notifications(prefect_block="ops-slack"))
    out = notify.publish(system, "subject", "body")
    assert out["sent"] == [] and "https://hooks.slack.com is not on this machine" in out["errors"][0]
    assert "secret" not in out["errors"][0]


def test_opensearch_clients_and_the_case_database_follow_the_rule(monkeypatch):
    from tasks import cases_db
    from tasks.opensearch import os_client

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("OPSBOOK_LOOPBACK_ONLY", raising=False)
    with pytest.raises(lb.NotLoopback, match="OPSBOOK_OPENSEARCH_URL_TEMPLATE"):
        os_client(PUBLIC, "ap-northeast-2")
    assert os_client("http://127.0.0.1:9/hr", "ap-northeast-2") is not None  # made, not called
    db = load_system("leh").case_store.database
    with pytest.raises(cases_db.CaseDbUnavailable, match="AWS calls go to http://127.0.0.1:9 on this machine .*not connecting to"):
        cases_db.where(db, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert cases_db.where(db, {})[0] == db.host  # real AWS: the real database
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert os_client(PUBLIC, "ap-northeast-2") is not None  # real AWS: the real cluster (made, not called)


@pytest.fixture
def sockets(monkeypatch):
    """Every connection or name lookup this process attempts off loopback (then refused)."""
    attempts: list[str] = []
    real_connect, real_lookup = socket.create_connection, socket.getaddrinfo

    def connect(address, *args, **kwargs):
        if not lb.is_loopback_host(str(address[0])):
            attempts.append(f"connect {address[0]}")
            raise OSError("test: no connection off loopback")
        return real_connect(address, *args, **kwargs)

    def lookup(host, *args, **kwargs):
        if host is not None and not lb.is_loopback_host(str(host)):
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror("test: no lookup off loopback")
        return real_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    return attempts


@pytest.mark.usefixtures("prefect_points_nowhere")  # the CLI's own check that Prefect reads its server (nothing listens there)
def test_a_run_on_a_loopback_aws_endpoint_refuses_a_public_cluster_or_webhook_in_one_line(tmp_path, monkeypatch, capsys, sockets):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: an AWS call would fail loudly
    monkeypatch.delenv(lb.OPENSEARCH_TEMPLATE_ENV, raising=False)
    monkeypatch.delenv("OPSBOOK_LOOPBACK_ONLY", raising=False)  # AWS on loopback alone is enough
    assert run_main("run", "daily-health", "--system", "hr-resource-optimization") == 3
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("UNKNOWN - opsbook: error: refusing to run: OpenSearch domain "), out
    assert lb.OPENSEARCH_TEMPLATE_ENV in out[0]
    hook = _with_paging(tmp_path, "https://hooks.example.com/opsbook/t0ken")
    assert run_main("run", "daily-health", "--system", str(hook), "--json") == 3
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and "the paging channel (webhook): https://hooks.example.com is not on this machine" in lines[0]
    assert sockets == []  # neither the cluster nor the webhook, nor anything else off this machine, was even looked up


def test_on_the_sandbox_a_cluster_off_the_machine_is_unknown_and_never_reached(seeded, sandbox, monkeypatch, sockets):
    """The per-connection guard on the sandbox: its OpenSearch double (the template) is read; without the template the
    domain's endpoint as moto answers it (a public name) is refused before any connection: UNKNOWN with the reason."""
    from opsbook import aws
    from opsbook.findings import Status
    from opsbook.resources import Discovered
    from tasks.opensearch import check_domains

    hr = seeded("hr-resource-optimization")
    healthy = [f for f in check_domains.fn(hr, Discovered(), aws.Deadline(30)) if f.check == "opensearch-health"]
    assert healthy and all(f.status is not Status.UNKNOWN for f in healthy), healthy
    monkeypatch.delenv(lb.OPENSEARCH_TEMPLATE_ENV)
    blind = [f for f in check_domains.fn(hr, Discovered(), aws.Deadline(30)) if f.check == "opensearch-health"]
    assert [f.status for f in blind] == [Status.UNKNOWN] * len(healthy)
    assert all("is not on this machine, and AWS calls go to" in f.summary and lb.OPENSEARCH_TEMPLATE_ENV in f.summary for f in blind)
    assert sockets == []
