"""opsbook/endpoints.py: the rules that judge an endpoint probe, and where a probe may go. Pure: no network."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from opsbook.endpoints import CHECK, TLS_CHECK, Probe, judge_endpoint, judge_probe, judge_tls, parse_map, target
from opsbook.findings import Status
from opsbook.inventory import Endpoint, InventoryError, System, load_file, load_system

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=timezone.utc)
URL = "https://api.example.com/health"
EP = Endpoint(name="api", url=URL)  # defaults: 2xx/3xx, warn 1000 ms, crit 3000 ms, TLS warn 30 d, crit 7 d, timeout 5 s


def answered(status=200, ms=42.0, days=200.0, **kw) -> Probe:
    return Probe(url=URL, status=status, latency_ms=ms, tls_not_after=NOW + timedelta(days=days) if days is not None else None,
                 timeout_s=5.0, **kw)


def failed(kind, error, **kw) -> Probe:
    return Probe(url=URL, error_kind=kind, error=error, timeout_s=kw.pop("timeout_s", 5.0), **kw)


# --- status and latency ---------------------------------------------------------------------------------


def test_ok_names_status_and_latency():
    f = judge_endpoint(EP, answered(200, 42.4))
    assert (f.check, f.resource, f.status, f.value) == (CHECK, URL, Status.OK, 42)
    assert f.summary == "GET answered 200 in 42 ms" and f.details["name"] == "api" and "failure" not in f.details


@pytest.mark.parametrize(("status", "want"), [(200, Status.OK), (204, Status.OK), (301, Status.OK), (399, Status.OK),
                                              (404, Status.CRIT), (500, Status.CRIT), (503, Status.CRIT), (199, Status.CRIT)])
def test_by_default_2xx_and_3xx_are_healthy_like_curl_f(status, want):
    f = judge_endpoint(EP, answered(status))
    assert f.status is want
    if want is Status.CRIT:
        assert f.summary == f"GET answered {status} in 42 ms; expected 2xx or 3xx" and f.value == status
        assert f.details["failure"] == "status"


def test_expected_statuses_and_body_from_the_inventory():
    ep = Endpoint(name="api", url=URL, expect_status=[200], expect_body='"status": "ok"')
    assert judge_endpoint(ep, answered(301)).summary.endswith("expected 200")
    assert judge_endpoint(ep, answered(200, body='{"status": "ok"}')).status is Status.OK
    f = judge_endpoint(ep, answered(200, body='{"status": "degraded"}'))
    assert f.status is Status.CRIT and "body lacks" in f.summary and f.details["failure"] == "body"
    assert judge_endpoint(ep, answered(200, body=None)).status is Status.CRIT


@pytest.mark.parametrize(("ms", "want"), [(999.4, Status.OK), (1000, Status.WARN), (2999, Status.WARN), (3000, Status.CRIT), (9000, Status.CRIT)])
def test_latency_against_the_thresholds(ms, want):
    f = judge_endpoint(EP, answered(200, ms))
    assert f.status is want
    if want is Status.WARN:
        assert f.summary.endswith("slower than 1000 ms (WARN)") and f.details["failure"] == "latency"
    if want is Status.CRIT:
        assert f.summary.endswith("slower than 3000 ms (CRIT)")


def test_a_wrong_status_is_crit_however_fast():
    assert judge_endpoint(EP, answered(500, 3)).status is Status.CRIT


# --- unreachable is the outage: CRIT naming the error ------------------------------------------------------


@pytest.mark.parametrize(("kind", "error", "said"), [
    ("refused", "[Errno 111] Connection refused", "unreachable: connection refused ([Errno 111] Connection refused)"),
    ("timeout", "ReadTimeout: timed out", "unreachable: no answer within 5 s (ReadTimeout: timed out)"),
    ("dns", "[Errno -2] Name or service not known", "unreachable: the name does not resolve ([Errno -2] Name or service not known)"),
    ("tls", "certificate verify failed: certificate has expired", "unreachable: TLS handshake failed (certificate verify failed: certificate has expired)"),
    ("disconnected", "Server disconnected without sending a response.", "unreachable: the server closed the connection without an answer"),
    ("connection", "ReadError: reset", "unreachable: connection failed (ReadError: reset)"),
])
def test_unreachable_is_crit_naming_the_error(kind, error, said):
    f = judge_endpoint(EP, failed(kind, error))
    assert f.status is Status.CRIT and f.summary.startswith(said), f.summary
    assert f.details["failure"] == "unreachable" and f.details["error_kind"] == kind
    assert judge_tls(EP, failed(kind, error), NOW) is None  # judge_endpoint says it; no second finding


def test_a_retry_is_said_never_hidden():
    twice = judge_endpoint(EP, failed("refused", "Connection refused", first_error="refused: Connection refused"))
    assert twice.status is Status.CRIT and "a retry failed too (first: refused: Connection refused)" in twice.summary
    second = judge_endpoint(EP, answered(200, 40, first_error="disconnected: Server disconnected"))
    assert second.status is Status.WARN and second.details["failure"] == "retried"
    assert second.summary == "GET answered 200 in 40 ms (on a retry: the first attempt failed: disconnected: Server disconnected)"
    assert judge_endpoint(EP, answered(500, 40, first_error="refused: x")).status is Status.CRIT


# --- OUR side: UNKNOWN with the reason ---------------------------------------------------------------------


def test_not_probed_is_unknown_with_the_reason():
    f = judge_endpoint(EP, Probe(url=URL, not_probed="not probed: this run reaches loopback only"))
    assert f.status is Status.UNKNOWN and f.summary == "not probed: this run reaches loopback only"
    assert judge_probe(EP, Probe(url=URL, not_probed="x"), NOW) == [f.model_copy(update={"summary": "x"})]


def test_a_timeout_the_run_s_deadline_cut_short_is_unknown_not_an_outage():
    f = judge_endpoint(EP, failed("timeout", "ReadTimeout: timed out", timeout_s=1.5))
    assert f.status is Status.UNKNOWN and "deadline left 1.5 s of the endpoint's 5 s timeout" in f.summary
    assert judge_endpoint(EP, failed("timeout", "ReadTimeout", timeout_s=5.0)).status is Status.CRIT


# --- TLS certificate --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("days", "want"), [(200, Status.OK), (30.5, Status.OK), (30, Status.WARN), (8, Status.WARN),
                                            (7, Status.CRIT), (0.5, Status.CRIT), (-1, Status.CRIT)])
def test_certificate_expiry_against_the_thresholds(days, want):
    f = judge_tls(EP, answered(days=days), NOW)
    assert (f.check, f.resource, f.status) == (TLS_CHECK, URL, want)
    assert f.value == round(days, 1) and f.details["not_after"] == (NOW + timedelta(days=days)).isoformat()
    if days < 0:
        assert f.summary.endswith(": expired")
    elif want is Status.WARN:
        assert f.summary.endswith("(within 30 days)")
    elif want is Status.CRIT:
        assert f.summary.endswith("(within 7 days)")


def test_certificate_thresholds_from_the_inventory():
    ep = Endpoint(name="api", url=URL, tls_expiry_warn_days=60, tls_expiry_crit_days=14)
    assert judge_tls(ep, answered(days=45), NOW).status is Status.WARN
    assert judge_tls(ep, answered(days=10), NOW).status is Status.CRIT


def test_https_answered_without_a_certificate_read_is_unknown_http_has_none():
    f = judge_tls(EP, answered(days=None), NOW)
    assert f.status is Status.UNKNOWN and "expiry was not read" in f.summary
    plain = Endpoint(name="p", url="http://api.example.com/health")
    assert judge_tls(plain, answered(days=None), NOW) is None
    assert [f.check for f in judge_probe(plain, answered(days=None), NOW)] == [CHECK]
    assert [(f.check, f.status) for f in judge_probe(EP, answered(), NOW)] == [(CHECK, Status.OK), (TLS_CHECK, Status.OK)]


# --- where a probe may go ---------------------------------------------------------------------------------


SANDBOX = {"http": "http://127.0.0.1:8001", "https": "https://127.0.0.1:8002"}


def test_public_urls_go_to_the_sandbox_double_with_their_host_as_the_first_segment():
    assert target(URL, SANDBOX, True) == ("https://127.0.0.1:8002/api.example.com/health", None)
    assert target("http://a.example.com:8080/x?y=1", SANDBOX, True) == ("http://127.0.0.1:8001/a.example.com:8080/x?y=1", None)
    assert target("https://a.example.com", SANDBOX, True) == ("https://127.0.0.1:8002/a.example.com/", None)
    assert target("http://127.0.0.1:9/health", SANDBOX, True) == ("http://127.0.0.1:9/health", None)  # loopback: as it is
    assert target("http://localhost:9/h", {}, True) == ("http://localhost:9/h", None)


def test_a_loopback_only_run_never_reaches_another_address():
    url, why = target(URL, {}, True)
    assert url is None and "reaches loopback only" in why and "OPSBOOK_ENDPOINT_MAP is not set" in why and "api.example.com" in why
    url, why = target(URL, {"http": "http://127.0.0.1:8001"}, True)
    assert url is None and "names no https base" in why
    url, why = target(URL, {"https": "https://10.0.0.5:8443"}, True)
    assert url is None and "not a loopback address" in why
    assert target(URL, {}, False) == (URL, None)  # a real run: the URL itself


def test_the_map_is_parsed_strictly():
    assert parse_map("http=http://127.0.0.1:1, https=https://127.0.0.1:2/") == {"http": "http://127.0.0.1:1", "https": "https://127.0.0.1:2"}
    assert parse_map("") == {} and parse_map(None) == {}
    for bad in ("http://127.0.0.1:1", "ftp=ftp://x", "https=127.0.0.1:2"):
        with pytest.raises(ValueError, match="OPSBOOK_ENDPOINT_MAP"):
            parse_map(bad)


# --- the inventory's endpoints --------------------------------------------------------------------------


def test_todo_app_probes_the_seed_s_health_url():
    todo = load_system("todo-app")
    assert [(e.name, e.url, e.method, e.timeout_s) for e in todo.endpoints] == [("api-health", "https://api.todo-app.com/health", "GET", 5)]


@pytest.mark.parametrize(("entry", "problem"), [
    ("{name: a, url: 'ftp://x.example.com/'}", "not an http:// or https:// URL"),
    ("{name: a, url: 'api.example.com/health'}", "not an http:// or https:// URL"),
    ("{name: a, url: 'https://user:pw@x.example.com/'}", "credentials do not belong"),
    ("{name: a, url: 'https://x.example.com/', latency_warn_ms: 5000}", "latency_warn_ms must not exceed latency_crit_ms"),
    ("{name: a, url: 'https://x.example.com/', tls_expiry_crit_days: 40}", "tls_expiry_crit_days must not exceed"),
    ("{name: a, url: 'https://x.example.com/', expect_status: [200, 700]}", "not HTTP status codes"),
    ("{name: a, url: 'https://x.example.com/', timeout_s: 60}", "less than or equal to 30"),
    ("{name: a, url: 'https://x.example.com/', method: POST}", "endpoints.0.method"),
])
def test_bad_endpoints_are_refused_naming_the_field(tmp_path, entry, problem):
    p = tmp_path / "e.yaml"
    p.write_text(f"name: e\nregion: us-east-1\nendpoints:\n  - {entry}\n")
    msg = str(pytest.raises(InventoryError, load_file, p).value)
    assert "endpoints.0" in msg and problem in msg, msg


def test_endpoint_names_are_unique():
    with pytest.raises(ValueError, match="endpoints: duplicate names"):
        System.model_validate({"name": "e", "region": "us-east-1", "endpoints": [{"name": "a", "url": URL}, {"name": "a", "url": URL + "2"}]})
