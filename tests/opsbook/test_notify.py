"""Status notifications when their memory (a Prefect variable) cannot be read: alert rather than stay silent."""

from __future__ import annotations

import pytest

from opsbook import notify
from opsbook.findings import Status
from opsbook.inventory import load_system


@pytest.fixture
def sent(monkeypatch):
    out = []
    monkeypatch.setattr(notify, "publish", lambda system, subject, body: out.append(subject) or {"sent": ["sns:t"], "errors": []})
    return out


def unreadable(key):
    raise RuntimeError("Prefect variables are not available offline")


def test_an_unreadable_memory_still_alerts_on_crit_and_says_it_may_repeat(monkeypatch, sent):
    monkeypatch.setattr(notify, "_last_notified", unreadable)
    monkeypatch.setattr(notify, "_remember", lambda key, value: pytest.fail("nothing to remember into"))
    todo = load_system("todo-app")
    out = notify.notify_status.fn(todo, "daily-health", Status.CRIT, "todos missing", "body")
    assert out["kind"] == "alert" and sent == ["[opsbook CRIT] todos missing"] and "an alert may repeat" in out["errors"][0]
    # OK with no memory: no recovery notice (whether an alert went out is unknown), said
    out = notify.notify_status.fn(todo, "daily-health", Status.OK, "fine", "body")
    assert out["kind"] is None and len(sent) == 1 and "could not be read" in out["errors"][0]


def test_the_healthy_twin_alerts_once_then_remembers(monkeypatch, sent):
    memory = {}
    monkeypatch.setattr(notify, "_last_notified", memory.get)
    monkeypatch.setattr(notify, "_remember", memory.__setitem__)
    todo = load_system("todo-app")
    first = notify.notify_status.fn(todo, "daily-health", Status.CRIT, "todos missing", "body")
    again = notify.notify_status.fn(todo, "daily-health", Status.CRIT, "todos missing", "body")
    assert first["kind"] == "alert" and first["errors"] == [] and again["kind"] is None and len(sent) == 1
