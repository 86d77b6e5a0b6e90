"""daily-health's paging channel and breach escalation against the sandbox and the local receiver
(sandbox/receiver.py on 127.0.0.1): a CRIT pages once with the routing key from the environment and its dedup key, the
same CRIT again pages nothing, recovery resolves it, WARN pages nothing, a failing receiver is an error in the report
that changes no status, and failed logins at CRIT name the inventory's breach level (the WARN twin names none)."""

from __future__ import annotations

import boto3
import pytest
import yaml

from flows.daily_health.flow import daily_health
from opsbook import paging as pg
from opsbook.escalation import CHECK as ESCALATION
from opsbook.findings import Finding, Status
from opsbook.inventory import SYSTEMS_DIR, load_file
from opsbook.report import RunReport, markdown
from sandbox.faults import apply_fault
from sandbox.receiver import Receiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

KEY_ENV, KEY = "OPSBOOK_TEST_PAGING_KEY", "pdkey-0123456789abcdefABCDEF"
DLQ = "leh-ai-jobs-dlq"


@pytest.fixture
def receiver():
    with Receiver() as rx:
        yield rx


def with_paging(tmp_path, system: str, paging: dict) -> str:
    """A copy of the shipped inventory with ``notifications.paging`` set; the incidents it remembers start empty."""
    from prefect.variables import Variable

    inv = yaml.safe_load((SYSTEMS_DIR / f"{system}.yaml").read_text())
    inv.setdefault("notifications", {})["paging"] = paging
    path = tmp_path / f"{system}.yaml"
    path.write_text(yaml.safe_dump(inv, allow_unicode=True))
    Variable.unset(pg.state_key("daily-health", system))
    return str(path)


def run(system: str) -> tuple[RunReport, str]:
    state = daily_health(system=system, notify=True, return_state=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report, state.type.value


def test_a_crit_pages_once_and_resolves_on_recovery_and_warn_pages_nothing(seeded, sandbox, receiver, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    path = with_paging(tmp_path, "leh", {"kind": "pagerduty", "url": receiver.url, "routing_key_env": KEY_ENV})
    leh = seeded("leh")
    report, _ = run(path)
    assert report.status is Status.OK and receiver.events == []  # the healthy twin pages nothing
    apply_fault(sandbox, leh, "dlq-messages", count=3)
    report, _ = run(path)
    assert report.status is Status.WARN and receiver.events == [] and report.notification["paging"]["triggered"] == []

    apply_fault(sandbox, leh, "dlq-messages", count=50)  # 53: CRIT at 50
    report, state = run(path)
    assert report.status is Status.CRIT and state == "FAILED"
    key = pg.dedup_key("leh", "daily-health", pg.fingerprint("dlq-depth", DLQ))
    [ev] = receiver.events
    assert (ev["routing_key"], ev["event_action"], ev["dedup_key"]) == (KEY, "trigger", key)
    assert ev["payload"]["class"] == "dlq-depth" and ev["payload"]["component"] == DLQ and ev["payload"]["severity"] == "critical"
    assert report.notification["paging"]["triggered"] == [f"dlq-depth {DLQ} ({key})"] and report.notification["errors"] == []
    assert KEY not in str(report.public()) and KEY not in markdown(report) and f"triggered dlq-depth {DLQ}" in markdown(report)

    report, _ = run(path)  # still CRIT: no second trigger
    assert report.status is Status.CRIT and len(receiver.events) == 1 and report.notification["paging"]["open"] == 1

    sandbox_sqs = boto3.client("sqs", region_name=leh.region, endpoint_url=sandbox.endpoint)
    sandbox_sqs.purge_queue(QueueUrl=sandbox_sqs.get_queue_url(QueueName=DLQ)["QueueUrl"])
    report, _ = run(path)
    assert report.status is Status.OK
    assert receiver.events[1] == {"routing_key": KEY, "event_action": "resolve", "dedup_key": key}
    assert report.notification["paging"]["resolved"] == [key]
    run(path)
    assert len(receiver.events) == 2  # resolved once


def test_a_failing_receiver_is_said_in_the_report_and_changes_no_status(seeded, sandbox, receiver, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    path = with_paging(tmp_path, "leh", {"kind": "pagerduty", "url": receiver.url, "routing_key_env": KEY_ENV})
    leh = seeded("leh")
    apply_fault(sandbox, leh, "dlq-messages", count=60)
    receiver.fail_with(500)
    report, state = run(path)
    assert report.status is Status.CRIT and state == "FAILED"  # as without paging: the DLQ's CRIT
    assert [(f.check, f.status) for f in report.findings if f.status is not Status.OK] == [("dlq-depth", Status.CRIT)]
    [err] = report.notification["errors"]
    assert err.startswith(f"paging: trigger dlq-depth {DLQ}: http://127.0.0.1:") and "answered HTTP 500" in err and KEY not in err
    assert "answered HTTP 500" in markdown(report) and len(receiver.requests) == 1
    receiver.fail_with(202)  # not remembered: the next run pages it
    report, _ = run(path)
    assert [e["event_action"] for e in receiver.events] == ["trigger"] and report.notification["errors"] == []


def test_a_missing_routing_key_is_an_error_and_nothing_is_posted(seeded, sandbox, receiver, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = with_paging(tmp_path, "leh", {"kind": "pagerduty", "url": receiver.url, "routing_key_env": KEY_ENV})
    apply_fault(sandbox, seeded("leh"), "dlq-messages", count=60)
    report, _ = run(path)
    assert receiver.requests == [] and report.status is Status.CRIT
    assert report.notification["errors"] == ["paging: 1 trigger(s) and 0 resolve(s) not sent: the environment variable "
                                             f"{KEY_ENV} (routing_key_env) is not set"]


def test_sandboxed_paging_to_a_non_loopback_url_is_refused(sandbox, tmp_path):
    path = with_paging(tmp_path, "leh", {"kind": "pagerduty", "routing_key_env": KEY_ENV})  # the real PagerDuty URL
    crit = Finding(check="dlq-depth", resource=DLQ, status=Status.CRIT, summary="60 messages")
    out = pg.page_findings.fn(load_file(path), "daily-health", [crit])
    assert out["triggered"] == [] and len(out["errors"]) == 1
    assert "https://events.pagerduty.com is not on loopback" in out["errors"][0] and out["channel"] == "pagerduty:https://events.pagerduty.com"


def test_failed_logins_at_crit_name_the_breach_level_and_the_page_carries_it(seeded, sandbox, receiver, tmp_path):
    path = with_paging(tmp_path, "t-developer", {"kind": "webhook", "url": receiver.url})
    td = seeded("t-developer")
    apply_fault(sandbox, td, "security-events", failed_logins=25, rate_limited=3)  # the twin: WARN, no breach
    report, _ = run(path)
    assert [f for f in report.findings if f.check == ESCALATION] == [] and receiver.events == []
    apply_fault(sandbox, td, "security-events", failed_logins=175, rate_limited=0)  # 200: failed_logins_crit
    report, _ = run(path)
    logins = next(f for f in report.findings if f.check == "failed-logins")
    assert logins.status is Status.CRIT and logins.value == 200
    [esc] = [f for f in report.findings if f.check == ESCALATION]
    assert esc.summary.startswith("escalate to security: 보안 담당자 + 경영진 (respond within 0 min): suspected breach (failed-logins ")
    assert "escalate to security: 보안 담당자 + 경영진" in markdown(report)
    [ev] = [e for e in receiver.events if e["check"] == "failed-logins"]
    assert ev["event_action"] == "trigger" and ev["escalation"] == esc.summary and "routing_key" not in ev
    assert all(e["check"] != ESCALATION for e in receiver.events)  # the escalation travels with the finding, not as a page
