"""tasks/endpoints.py against the sandbox's endpoint double (127.0.0.1): each fault planted on one endpoint next to
its healthy twin, which stays OK. The thresholds the rules apply are tests/opsbook/test_endpoints.py's."""

from __future__ import annotations

import pytest

from opsbook import aws
from opsbook.findings import Status
from opsbook.inventory import Endpoint, System, load_system
from sandbox.faults import apply_fault
from tasks.endpoints import check_endpoints

API, TWIN = "https://api.todo-app.com/health", "https://www.todo-app.com/health"


def system(*endpoints: Endpoint) -> System:
    return load_system("todo-app").model_copy(update={"endpoints": list(endpoints)})


def probe(inv: System, seconds: float = 30) -> dict[tuple[str, str], object]:
    found = check_endpoints.fn(inv, aws.Deadline(seconds))
    out = {(f.check, f.resource): f for f in found}
    assert len(out) == len(found), found
    return out


def pair(**kw) -> System:
    """The endpoint under test with ``kw``; its twin with the defaults (5 s timeout, WARN at 1 s), so that a slow machine
    cannot turn the twin WARN or unreachable: the twin proves no false alarm, not the tight thresholds."""
    return system(Endpoint(name="api", url=API, **kw), Endpoint(name="twin", url=TWIN))


def test_the_healthy_sandbox_answers_every_endpoint_ok_with_its_certificate(sandbox):
    got = probe(system(Endpoint(name="api", url=API), Endpoint(name="plain", url="http://www.todo-app.com/", method="HEAD")))
    api = got[("endpoint", API)]
    assert api.status is Status.OK and api.summary.startswith("GET answered 200 in ") and api.details["probed_url"].startswith("https://127.0.0.1:")
    tls = got[("endpoint-tls", API)]
    assert tls.status is Status.OK and 360 <= tls.value <= 366
    assert got[("endpoint", "http://www.todo-app.com/")].status is Status.OK
    assert ("endpoint-tls", "http://www.todo-app.com/") not in got  # plain http: no certificate


def test_a_500_is_crit_its_twin_ok(sandbox):
    inv = pair()
    apply_fault(sandbox, inv, "endpoint-500")
    got = probe(inv)
    f = got[("endpoint", API)]
    assert f.status is Status.CRIT and f.value == 500 and "answered 500" in f.summary and "expected 2xx or 3xx" in f.summary
    assert got[("endpoint", TWIN)].status is Status.OK
    assert got[("endpoint-tls", API)].status is Status.OK  # it answered, over a good certificate


def test_slow_is_warn_its_twin_ok(sandbox):
    # 1.5 s planted against WARN at 0.5 s, CRIT at 60 s: the latency cannot be under the planted delay
    inv = pair(latency_warn_ms=500, latency_crit_ms=60_000, timeout_s=30)
    applied = apply_fault(sandbox, inv, "endpoint-slow", delay_s=1.5)
    got = probe(inv)
    f = got[("endpoint", API)]
    assert applied["delay_s"] == 1.5 and f.status is Status.WARN and f.value >= 1500 and "slower than 500 ms (WARN)" in f.summary
    assert got[("endpoint", TWIN)].status is Status.OK


def test_a_hang_past_the_timeout_is_crit_unreachable_and_does_not_hold_the_teardown(sandbox):
    inv = pair(timeout_s=0.5)
    apply_fault(sandbox, inv, "endpoint-hang")
    got = probe(inv)
    f = got[("endpoint", API)]
    assert f.status is Status.CRIT and f.summary.startswith("unreachable: no answer within 0.5 s") and f.details["error_kind"] == "timeout"
    assert "retry" not in f.summary  # a timeout is not retried: it would wait again
    assert ("endpoint-tls", API) not in got
    assert got[("endpoint", TWIN)].status is Status.OK
    # the double still holds the request: the sandbox fixture's reset lets it go (no wait here, none there)


def test_a_closed_port_is_crit_refused_after_one_retry_said(sandbox, closed_port):
    inv = system(Endpoint(name="dead", url=f"http://127.0.0.1:{closed_port}/health"), Endpoint(name="twin", url=TWIN))
    got = probe(inv)
    f = got[("endpoint", f"http://127.0.0.1:{closed_port}/health")]
    assert f.status is Status.CRIT and f.summary.startswith("unreachable: connection refused") and "a retry failed too" in f.summary
    assert "probed_url" not in f.details  # a loopback URL goes as it is
    assert got[("endpoint", TWIN)].status is Status.OK


def test_a_dropped_connection_is_crit(sandbox):
    inv = pair()
    apply_fault(sandbox, inv, "endpoint-down")
    got = probe(inv)
    f = got[("endpoint", API)]
    assert f.status is Status.CRIT and "closed the connection without an answer" in f.summary and "a retry failed too" in f.summary
    assert got[("endpoint", TWIN)].status is Status.OK


@pytest.mark.parametrize(("days", "want"), [(20, Status.WARN), (3, Status.CRIT)])
def test_a_certificate_near_expiry_is_read_from_the_handshake(sandbox, days, want):
    inv = system(Endpoint(name="api", url=API), Endpoint(name="plain", url="http://www.todo-app.com/health"))
    apply_fault(sandbox, inv, "endpoint-tls-expiring", days=days)
    got = probe(inv)
    f = got[("endpoint-tls", API)]
    assert f.status is want and days - 1 <= f.value <= days, f.summary
    assert got[("endpoint", API)].status is Status.OK and got[("endpoint", "http://www.todo-app.com/health")].status is Status.OK


def test_an_expired_certificate_is_crit_the_handshake_fails(sandbox):
    inv = system(Endpoint(name="api", url=API), Endpoint(name="plain", url="http://www.todo-app.com/health"))
    sandbox.endpoints.set_certificate_days(-2)
    got = probe(inv)
    f = got[("endpoint", API)]
    assert f.status is Status.CRIT and "TLS handshake failed (certificate verify failed: certificate has expired)" in f.summary
    assert "retry" not in f.summary and got[("endpoint", "http://www.todo-app.com/health")].status is Status.OK


def test_without_the_sandbox_s_map_nothing_leaves_loopback(sandbox, monkeypatch):
    monkeypatch.delenv("OPSBOOK_ENDPOINT_MAP")
    got = probe(pair())
    for url in (API, TWIN):
        f = got[("endpoint", url)]
        assert f.status is Status.UNKNOWN and "reaches loopback only" in f.summary
        assert ("endpoint-tls", url) not in got


def test_a_broken_map_is_unknown_naming_it(sandbox, monkeypatch):
    monkeypatch.setenv("OPSBOOK_ENDPOINT_MAP", "https:127.0.0.1")
    f = probe(pair())[("endpoint", API)]
    assert f.status is Status.UNKNOWN and "OPSBOOK_ENDPOINT_MAP" in f.summary


def test_no_time_left_is_unknown_not_probed(sandbox):
    f = probe(pair(), seconds=0)[("endpoint", API)]
    assert f.status is Status.UNKNOWN and "deadline" in f.summary


def test_no_endpoints_no_findings_and_no_iam_action():
    assert check_endpoints.fn(system(), aws.Deadline(5)) == []
    assert check_endpoints.iam_actions == ()


def test_one_slow_answer_is_probed_again_and_the_faster_judged(monkeypatch):
    """A busy prober or a cold connection makes one sample slow: a slow first answer is asked again, and the faster of the
    two is judged (the first is kept in the details); twice slow stays WARN (test_slow_is_warn_its_twin_ok)."""
    from tasks import endpoints as te

    answers = iter([{"status": 200, "latency_ms": 1800.0, "tls_not_after": None, "body": None, "timeout_s": 5},
                    {"status": 200, "latency_ms": 40.0, "tls_not_after": None, "body": None, "timeout_s": 5}])
    monkeypatch.setattr(te, "request", lambda ep, url, timeout: next(answers))
    ep = Endpoint(name="api", url="http://127.0.0.1:9/health")
    p = te.probe(ep, {}, True, aws.Deadline(30))
    assert (p.latency_ms, p.first_latency_ms) == (40.0, 1800.0)
    answers = iter([{"status": 200, "latency_ms": 300.0, "tls_not_after": None, "body": None, "timeout_s": 5}])
    assert te.probe(ep, {}, True, aws.Deadline(30)).first_latency_ms is None  # under WARN: one request only
