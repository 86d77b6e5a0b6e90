"""opsbook/pii.py: what counts as an RRN, a secret, a card, a phone number, an e-mail and a client address; the
reproducible sample; that a hit never carries the value."""

from __future__ import annotations

import pytest

from opsbook import pii


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
    ("visa 4222222222222 ok", ["card"]),              # 13 digits: Visa's old length
    ("at 1704352284000 ms", []),                     # a millisecond timestamp that passes Luhn: no card
    ("id 1234567890123452 ok", []),                  # Luhn holds, but no card network starts with 1
    ("deployment ecs-svc/3803867248000800970", []),  # Luhn holds, but it is part of a path
    ("key AKIAIOSFODNN7EXAMPLE used", ["secret"]),     # secrets come from tasks.masking (detect-secrets)
    ("pull ghp_4WZwmT2OxHTQi5TMpUFn3NcLSLcwLUKvlsmk", ["secret"]),
    ("user kim@example.com from 81.2.69.142 phone 010-1234-5678", []),  # an audit log records who: not reported
])
def test_scan(text, kinds):
    assert [m.kind for m in pii.scan(text)] == kinds


def test_rrn_confidence_and_check_digit():
    assert pii.rrn_check_digit_ok("9001011234568") and not pii.rrn_check_digit_ok("9001011234567")
    assert [m.confidence for m in pii.scan("900101-1234568 021231-3234567")] == ["high", "medium"]


def test_an_rrn_without_hyphen_is_no_rrn_when_it_reads_as_a_recent_millisecond_timestamp():
    v = "1801153100005"  # 2018-01-15, gender 3, check digit holds; and 2027-01-28 16:18 UTC in milliseconds
    assert pii.rrn_check_digit_ok(v)
    assert pii.scan(v, now=int(v) / 1000) == [] and pii.scan(v, now=int(v) / 1000 - 400 * 86400) == []
    assert [m.kind for m in pii.scan(v, now=int(v) / 1000 + 5 * 365 * 86400)] == ["rrn"]
    assert [m.kind for m in pii.scan("180115-3100005", now=int(v) / 1000)] == ["rrn"]  # the hyphen says RRN


@pytest.mark.parametrize("text, kinds", [
    ("call 010-1234-5678, 01098765432 or +82 10 1234 5678", ["phone", "phone", "phone"]),
    ("epoch 1712345678 and id 1012345678", []),      # no leading 0 or +82: not a phone number
    ("from kim.minsu@example.com", ["email"]),
    ("image repo@sha256:abc", []),
    ("client 81.2.69.142 and 2406:da14:abcd:1234:5678:9abc:def0:1234", ["ip", "ip"]),
    ("peer 10.0.3.12 lb 172.31.0.5 home 192.168.1.1 lo 127.0.0.1 meta 169.254.169.254 doc 203.0.113.5 2001:db8::1", []),
    ("open 0.0.0.0/0 and 81.2.69.0/24", []),          # ranges, not addresses
    ("version 1.2.3.4 v8.8.8.8 agent/8.8.4.4 lib-1.1.1.1 python3.1.2.3.4", []),
    ("at 10:00:00 mac aa:bb:cc:dd:ee:ff", []),
    ("999.1.1.1 is no address", []),
])
def test_personal_data(text, kinds):
    assert [m.kind for m in pii.personal_data(text)] == kinds


def test_mask_log_masks_a_secret_before_what_looks_like_personal_data_in_it():
    assert pii.mask_log("dsn https://app:pa55w0rd@db.example.com/hr for kim@example.com") == \
        "dsn https://app:[BASIC-AUTH-CREDENTIALS]@db.example.com/hr for [EMAIL]"


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
    h = pii.hits("/leh/audit", [{"logStreamName": "s3", "timestamp": 3000, "message": "rrn 900101-1234568 entered by kim@example.com"}])[0]
    assert h["kinds"] == ["rrn"] and h["excerpt"] == "rrn [RRN] entered by [EMAIL]"  # the excerpt is masked as a log excerpt


def test_sample_is_reproducible_and_bounded():
    events = [{"logStreamName": "s", "timestamp": i, "message": f"m{i}", "eventId": str(i)} for i in range(500)]
    a = pii.sample(events, 50, 42)
    assert len(a) == 50 and a == pii.sample(list(reversed(events)), 50, 42)  # order read does not matter
    assert a != pii.sample(events, 50, 7)
    assert pii.sample(events[:10], 50, 42) == events[:10]
