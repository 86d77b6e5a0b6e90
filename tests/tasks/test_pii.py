"""tasks/pii.py: what counts as an RRN, a secret and a card, the reproducible sample, and that a hit never carries the value."""

from __future__ import annotations

import pytest

from tasks import pii


@pytest.mark.parametrize("text, kinds", [
    ("rrn=900101-1234568", ["rrn"]),                 # valid date, gender 1, check digit holds
    ("rrn=021231-3234567", ["rrn"]),                 # 2000s (3), no check digit: still flagged, medium confidence
    ("ref 901332-1234567", []),                      # month 13: no date
    ("ref 900230-1234567", []),                      # 30 February
    ("ref 900101-9234567", []),                      # gender/century digit 9: not 1-8
    ("id 9001011234560", []),                        # 13 digits, no hyphen, check digit fails: an id, not an RRN
    ("card 4111 1111 1111 1111 ok", ["card"]),
    ("card 4111-1111-1111-1111 ok", ["card"]),
    ("order 4111 1111 1111 1112", []),               # Luhn fails
    ("password=hunter2secret", ["secret"]),
    ("password=*** and token=[REDACTED]", []),       # already masked
    ("Authorization: Bearer abcdef123456789", ["secret"]),
    ("key sk-abcdefghijklmnopqrstu", ["secret"]),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", ["secret"]),
    ("case 42 opened in 1200 ms", []),
])
def test_scan(text, kinds):
    assert [m.kind for m in pii.scan(text)] == kinds


def test_rrn_confidence_and_check_digit():
    assert pii.rrn_check_digit_ok("9001011234568") and not pii.rrn_check_digit_ok("9001011234567")
    assert [m.confidence for m in pii.scan("900101-1234568 021231-3234567")] == ["high", "medium"]


def test_luhn():
    assert pii.luhn_ok("4111111111111111") and pii.luhn_ok("378282246310005") and not pii.luhn_ok("4111111111111112")
    assert not pii.luhn_ok("0000000000")  # too short


def test_hits_say_where_and_never_the_value():
    events = [{"logStreamName": "s1", "timestamp": 1000, "message": "user rrn=900101-1234568 card 4111 1111 1111 1111 password=hunter2secret"},
              {"logStreamName": "s2", "timestamp": 2000, "message": "nothing here"}]
    hits = pii.hits("/leh/audit", events)
    assert len(hits) == 1
    h = hits[0]
    assert (h["log_group"], h["stream"], h["timestamp"], h["kinds"]) == ("/leh/audit", "s1", 1000, ["card", "rrn", "secret"])
    for value in ("900101", "1234568", "4111", "hunter2"):
        assert value not in str(h), h
    assert "[RRN]" in h["excerpt"] and "[CARD]" in h["excerpt"]


def test_sample_is_reproducible_and_bounded():
    events = [{"logStreamName": "s", "timestamp": i, "message": f"m{i}", "eventId": str(i)} for i in range(500)]
    a = pii.sample(events, 50, 42)
    assert len(a) == 50 and a == pii.sample(list(reversed(events)), 50, 42)  # order read does not matter
    assert a != pii.sample(events, 50, 7)
    assert pii.sample(events[:10], 50, 42) == events[:10]
