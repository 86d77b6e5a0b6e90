"""Paging: what to send (pure), the events' shapes, the secret, the loopback rule, and one channel end to end against
the local receiver (sandbox/receiver.py) with the open incidents in a Prefect variable."""

from __future__ import annotations

import json

import pytest

from opsbook import paging as pg
from opsbook.escalation import CHECK as ESCALATION
from opsbook.findings import Finding, Status
from opsbook.inventory import PAGERDUTY_EVENTS_URL, Paging, System, load_system
from sandbox.receiver import Receiver

KEY = "R0UT1NGKEYtest0123456789abcdef01"


def f(check: str, status: Status, resource: str = "r", summary: str = "x") -> Finding:
    return Finding(check=check, resource=resource, status=status, summary=summary)


def fp(finding: Finding) -> str:
    return pg.fingerprint(finding.check, finding.resource)


# --- what to send -------------------------------------------------------------------------------------


def test_a_crit_pages_once_and_resolves_when_it_reads_ok_again():
    dlq, lam = f("dlq-depth", Status.CRIT, "q"), f("lambda-state", Status.OK, "fn")
    first = pg.plan_pages([], [dlq, lam])
    assert [x.resource for x in first.trigger] == ["q"] and first.resolve == []
    assert pg.plan_pages([fp(dlq)], [dlq, lam]).empty  # the same CRIT again: nothing
    ok = pg.plan_pages([fp(dlq)], [f("dlq-depth", Status.OK, "q"), lam])
    assert ok.trigger == [] and ok.resolve == [fp(dlq)]


def test_warn_pages_nothing_unless_min_status_is_warn():
    warn = [f("dlq-depth", Status.WARN, "q")]
    assert pg.plan_pages([], warn).empty
    assert [x.resource for x in pg.plan_pages([], warn, "WARN").trigger] == ["q"]
    # a CRIT that fell to WARN is resolved (below min_status), under CRIT paging
    assert pg.plan_pages([pg.fingerprint("dlq-depth", "q")], warn).resolve == [pg.fingerprint("dlq-depth", "q")]


def test_unknown_or_unchecked_keeps_the_incident_open_unless_the_run_is_ok():
    opened = [pg.fingerprint("dlq-depth", "q")]
    assert pg.plan_pages(opened, [f("dlq-depth", Status.UNKNOWN, "q"), f("x", Status.WARN)]).empty
    assert pg.plan_pages(opened, [f("x", Status.UNKNOWN)]).empty  # not seen: no recovery
    assert pg.plan_pages(opened, [f("x", Status.OK)]).resolve == opened  # the whole run OK: everything clears
    assert pg.plan_pages(opened, []).empty  # nothing checked is no recovery


def test_a_second_fault_pages_without_repaging_the_first_and_the_escalation_is_not_paged_itself():
    a, b = f("dlq-depth", Status.CRIT, "q"), f("security-group-open", Status.CRIT, "sg")
    esc = f(ESCALATION, Status.CRIT, "sys", "escalate to L4: CTO (respond within 120 min): suspected breach (security-group-open sg)")
    plan = pg.plan_pages([fp(a)], [a, b, esc])
    assert [x.resource for x in plan.trigger] == ["sg"] and plan.resolve == []
    assert pg.escalation_text([a, b, esc]).startswith("escalate to L4: CTO")


def test_dedup_key_is_system_runbook_and_the_findings_check_and_resource():
    k = pg.dedup_key("leh", "daily-health", pg.fingerprint("dlq-depth", "q"))
    assert k.startswith("opsbook:leh:daily-health:") and len(k.rsplit(":", 1)[1]) == 12
    assert pg.fingerprint("dlq-depth", "q") != pg.fingerprint("dlq-depth", "q2") != pg.fingerprint("dlq-depthq", "")


def test_pagerduty_and_webhook_events():
    pd = Paging(kind="pagerduty", routing_key_env="PD_KEY")
    esc = "escalate to Lv3: CTO / PM (respond within 0 min): suspected breach"
    crit = f("audit-log-pii", Status.CRIT, "/leh/audit", "password=hunter2hunter2 in a log line")
    ev = pg.trigger_event(pd, KEY, "opsbook:leh:x:1", crit, "leh", "maintenance-audit", "http://ui/runs/1", esc)
    assert ev["routing_key"] == KEY and ev["event_action"] == "trigger" and ev["dedup_key"] == "opsbook:leh:x:1"
    p = ev["payload"]
    assert (p["severity"], p["source"], p["component"], p["group"], p["class"]) == ("critical", "leh", "/leh/audit", "maintenance-audit", "audit-log-pii")
    assert "hunter2hunter2" not in json.dumps(ev) and p["custom_details"]["escalation"] == esc
    assert ev["links"] == [{"href": "http://ui/runs/1", "text": "opsbook run"}]
    assert pg.resolve_event(pd, KEY, "opsbook:leh:x:1", "leh", "r") == {"routing_key": KEY, "event_action": "resolve", "dedup_key": "opsbook:leh:x:1"}
    hook = Paging(kind="webhook", url="https://hooks.example.com/T0/secret-path")
    wev = pg.trigger_event(hook, "tok", "k", crit, "leh", "r", None, None)
    assert "routing_key" not in wev and "tok" not in json.dumps(wev) and wev["severity"] == "critical" and wev["check"] == "audit-log-pii"
    assert pg.where(hook.endpoint) == "https://hooks.example.com" and pg.where("https://u:p@h:8443/x?t=1") == "https://h:8443"


def test_paging_inventory_rules():
    assert Paging(kind="pagerduty", secret_block="pd-key").endpoint == PAGERDUTY_EVENTS_URL
    for bad, why in ((dict(kind="pagerduty"), "routing key"), (dict(kind="webhook"), "needs a url"),
                     (dict(kind="pagerduty", routing_key_env="A", secret_block="b"), "not both"),
                     (dict(kind="webhook", url="ftp://x"), "http"), (dict(kind="pagerduty", routing_key_env="1BAD"), "pattern")):
        with pytest.raises(ValueError, match=why):
            Paging(**bad)
    with pytest.raises(ValueError, match="'pagerduty' or 'webhook'"):
        System.model_validate({**load_system("leh").model_dump(), "notifications": {"paging": {"kind": "sms"}}})


def test_sandboxed_runs_post_to_loopback_only(monkeypatch):
    monkeypatch.delenv("OPSBOOK_LOOPBACK_ONLY", raising=False)  # the suite sets it: a real run does not
    pd = Paging(kind="pagerduty", routing_key_env="PD_KEY")
    why = pg.refusal(pd, "http://127.0.0.1:5000")
    assert why and "https://events.pagerduty.com is not on loopback" in why
    assert pg.refusal(pd.model_copy(update={"url": "http://127.0.0.1:9/v2/enqueue"}), "http://127.0.0.1:5000") is None
    assert pg.refusal(pd, None) is None  # real AWS: real PagerDuty


def test_the_secret_comes_from_the_environment_and_a_missing_one_is_said():
    pd = Paging(kind="pagerduty", routing_key_env="PD_KEY")
    assert pg.read_secret(pd, {"PD_KEY": KEY}) == KEY
    with pytest.raises(pg.PagingError, match="PD_KEY .* is not set"):
        pg.read_secret(pd, {})
    assert pg.read_secret(Paging(kind="webhook", url="http://127.0.0.1:1/"), {}) is None


def test_post_reports_an_error_answer_without_the_secret_or_the_path():
    with Receiver() as rx:
        pg.post(rx.url, {"a": 1}, "tok", bearer=True)
        assert rx.events == [{"a": 1}] and rx.requests[0]["authorization"] == "Bearer tok"
        rx.fail_with(500)
        with pytest.raises(pg.PagingError) as exc:
            pg.post(rx.url + "?token=" + KEY, {"routing_key": KEY}, KEY, bearer=False)
        assert "answered HTTP 500" in str(exc.value) and KEY not in str(exc.value) and "/v2/enqueue" not in str(exc.value)
        assert rx.requests[-1]["authorization"] is None


def test_post_to_a_closed_port_is_a_paging_error(closed_port):
    with pytest.raises(pg.PagingError, match="ConnectError"):
        pg.post(f"http://127.0.0.1:{closed_port}/x", {}, None, bearer=False)


@pytest.mark.usefixtures("prefect_harness")
def test_the_secret_comes_from_a_prefect_secret_block():
    from prefect.blocks.system import Secret

    Secret(value=KEY).save("opsbook-test-paging-key", overwrite=True)
    assert pg.read_secret(Paging(kind="pagerduty", secret_block="opsbook-test-paging-key"), {}) == KEY
    with pytest.raises(pg.PagingError, match="'no-such-block' could not be read") as exc:
        pg.read_secret(Paging(kind="pagerduty", secret_block="no-such-block"), {})
    assert KEY not in str(exc.value)


def _result() -> dict:
    return {"triggered": [], "resolved": [], "errors": []}


def test_a_run_sends_at_most_max_events_and_stops_when_the_channel_does_not_answer(monkeypatch, closed_port):
    monkeypatch.setattr(pg, "MAX_EVENTS", 3)
    crits = [f("lambda-state", Status.CRIT, f"fn-{i}") for i in range(5)]
    plan = pg.plan_pages([], crits)
    hook = Paging(kind="webhook", url="http://127.0.0.1:1/")
    with Receiver() as rx:
        out = _result()
        now = pg._send(hook.model_copy(update={"url": rx.url}), None, plan, set(), "s", "r", crits, None, out)
        assert len(rx.events) == 3 and len(now) == 3 and len(out["triggered"]) == 3
        assert out["errors"] == ["2 event(s) not sent: at most 3 a run; the next run sends them"]
    out = _result()
    dead = hook.model_copy(update={"url": f"http://127.0.0.1:{closed_port}/"})
    assert pg._send(dead, None, plan, set(), "s", "r", crits, None, out) == set()
    assert len(out["errors"]) == 2 and out["errors"][1] == "4 more event(s) not tried: the channel did not answer"


def test_a_failed_read_of_the_open_incidents_pages_again_but_never_overwrites_them(monkeypatch):
    """Writing after a failed read would forget the incidents earlier runs opened: they would never be resolved."""
    crit = f("lambda-state", Status.CRIT, "fn")
    inv = load_system("todo-app").model_copy(update={"notifications": load_system("todo-app").notifications.model_copy(
        update={"paging": Paging(kind="webhook", url="http://127.0.0.1:1/")})})
    written: list = []
    monkeypatch.setattr(pg, "remembered", lambda key: (_ for _ in ()).throw(RuntimeError("variables unreachable")))
    monkeypatch.setattr(pg, "remember", lambda key, keys: written.append(keys))
    with Receiver() as rx:
        hook = inv.notifications.paging.model_copy(update={"url": rx.url})
        inv = inv.model_copy(update={"notifications": inv.notifications.model_copy(update={"paging": hook})})
        out = pg.page_findings.fn(inv, "daily-health", [crit])
        assert len(rx.events) == 1 and written == [] and "could not be read" in out["errors"][0]


def test_loopback_is_an_address_not_a_prefix_and_loopback_only_refuses_a_public_receiver(monkeypatch):
    from opsbook.endpoints import is_loopback_host

    assert is_loopback_host("127.0.0.1") and is_loopback_host("127.3.2.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not is_loopback_host("127.example.com") and not is_loopback_host("api.todo-app.com")
    monkeypatch.setenv("OPSBOOK_LOOPBACK_ONLY", "1")
    why = pg.refusal(Paging(kind="pagerduty", routing_key_env="PD_KEY"), None)  # no AWS endpoint set, still sandboxed
    assert why == "this run is sandboxed (OPSBOOK_LOOPBACK_ONLY=1) and the paging URL https://events.pagerduty.com is not on loopback"
