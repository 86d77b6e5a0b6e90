"""Personal data in log excerpts and audit-log events (pure: no AWS; unit-tested).

Two users:

- ``mask_log(text)``: how every log excerpt is masked (the rule is in opsbook/masking.py):
  secrets (``masking.secret_spans``) and personal data (``personal_data``) replaced by
  their kind, ``[RRN]``, ``[CARD]``, ``[PHONE]``, ``[EMAIL]``, ``[IP]``.
- the audit-log check (seed 003 정기 점검 asks for a sample of the audit log to be
  checked for data that must never be logged): ``scan(message)`` returns the RRNs, card
  numbers and secrets it holds as kinds and spans; ``hits`` turns a sample of events into
  reportable hits that say where (log group, stream, timestamp, kind) with a masked
  excerpt, never the value. An audit log records who did what (an e-mail address, a client
  address) by design, so ``scan`` does not report those; its excerpts still mask them.

Kinds:

- ``rrn``: Korean resident registration number (주민등록번호) YYMMDD-GXXXXXX.
  The birth date must exist and G (gender and century) must be 1-8 (1/2/5/6:
  1900s, 3/4/7/8: 2000s), so a number with an impossible date is not flagged.
  The check digit only raises confidence: numbers issued from October 2020
  carry a random last digit. Without the hyphen, 13 digits are an RRN only
  when the check digit holds (else they are far more likely an id), and never
  when they read as a millisecond epoch timestamp within two years of now.
- ``card``: 13-19 digits (spaces or dashes allowed) passing the Luhn check, starting with
  2-6 (the card networks) or 9 (Korean domestic cards), not part of a word or path; 13
  digits only from a 4 (only Visa issued 13-digit numbers; a millisecond timestamp has
  13 digits and passes Luhn one time in ten).
- ``phone``: Korean mobile numbers, ``010-1234-5678``, ``01012345678``, ``+82 10 1234 5678``
  (the 0 or +82 is required: a 10-digit epoch second is no phone number).
- ``email``: an e-mail address.
- ``ip``: a PUBLIC IPv4/IPv6 address. In a log line it is a client's, which is personal
  data when it can be tied to a person (PIPA, GDPR), and the first hour of an incident
  does not turn on one client's address (the log group holds it for whoever must look).
  Private, loopback, link-local, shared and documentation addresses are infrastructure
  ("connect to 10.0.3.12:5432 timed out") and stay; a network range (``0.0.0.0/0``,
  ``10.0.0.0/8``) or a version (``version 1.2.3.4``, ``v1.2.3.4``, ``foo-1.2.3.4``,
  ``agent/1.2.3.4``) is no address. Outside log excerpts (security groups, plans,
  findings built from AWS APIs) no address is masked.
"""

from __future__ import annotations

import ipaddress
import random
import re
import time
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable

from opsbook.masking import HIGH_ENTROPY, Span, replace, secret_spans

RRN_RE = re.compile(r"(?<![\d-])(\d{2})(\d{2})(\d{2})(-?)([1-8])(\d{5})(\d)(?![\d-])")
CARD_RE = re.compile(r"(?<![\w/-])\d(?:[ -]?\d){12,18}(?![\w-])")
# the first digit of a payment card: 2-6 (Mastercard, Amex, Visa, Discover, JCB, UnionPay...) or 9 (Korean domestic cards)
_CARD_FIRST = "234569"
PHONE_RE = re.compile(r"(?<![\w+-])(?:\+82[- ]?|0)1[016789][- ]?\d{3,4}[- ]?\d{4}(?![\w-])")
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# an address is not one after a word, a dot, a path, a '#', '@' or '-' (versions: v1.2.3.4, agent/1.2.3.4, foo-1.2.3.4),
# nor before more digits or a prefix length (a range: 0.0.0.0/0)
IPV4_RE = re.compile(r"(?<![\w./#@-])\d{1,3}(?:\.\d{1,3}){3}(?!\.?\d|\w|/\d)")
IPV6_RE = re.compile(r"(?<![\w.:/#@-])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:./])")
_VERSION_BEFORE = re.compile(r"(?i)\b(?:version|ver|release|build|v)\s*[:=]?\s*$")
_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
_EPOCH_MS_WINDOW = 2 * 366 * 86400 * 1000


@dataclass(frozen=True)
class Match:
    kind: str  # rrn | secret | card | phone | email | ip
    start: int
    end: int
    confidence: str = "high"  # high | medium
    detail: str = ""

    def span(self) -> Span:
        return Span(self.start, self.end, f"[{self.kind.upper()}]")


def rrn_birth_date(yy: str, mm: str, dd: str, g: str) -> date | None:
    """The birth date an RRN encodes, or None when it is no date."""
    century = 1900 if g in "1256" else 2000
    try:
        return date(century + int(yy), int(mm), int(dd))
    except ValueError:
        return None


def rrn_check_digit_ok(digits: str) -> bool:
    """The pre-October-2020 check digit over the 13 digits (no hyphen)."""
    if len(digits) != 13 or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:12], _WEIGHTS))
    return (11 - total % 11) % 10 == int(digits[12])


def luhn_ok(digits: str) -> bool:
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _outside(found: list[Match], taken: list[Match]) -> list[Match]:
    """The found matches that overlap none of the taken ones."""
    return [m for m in found if not any(m.start < t.end and t.start < m.end for t in taken)]


def _recent_epoch_ms(digits: str, now: float | None) -> bool:
    """13 digits that read as a millisecond timestamp within two years of ``now`` (epoch seconds; default: the clock)."""
    return abs(int(digits) - (time.time() if now is None else now) * 1000) < _EPOCH_MS_WINDOW


def _rrns(text: str, now: float | None) -> list[Match]:
    out = []
    for m in RRN_RE.finditer(text):
        yy, mm, dd, hyphen, g = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
        if rrn_birth_date(yy, mm, dd, g) is None:
            continue
        digits = m.group(0).replace("-", "")
        check = rrn_check_digit_ok(digits)
        if not hyphen and (not check or _recent_epoch_ms(digits, now)):
            continue
        out.append(Match("rrn", m.start(), m.end(), "high" if check else "medium",
                         "check digit holds" if check else "valid date and gender digit; no check digit (issued from 2020-10, or not an RRN)"))
    return out


def _cards(text: str, now: float | None) -> list[Match]:
    out = []
    for m in CARD_RE.finditer(text):
        digits = re.sub(r"[ -]", "", m.group(0))
        if luhn_ok(digits) and digits[0] in _CARD_FIRST and (len(digits) > 13 or digits[0] == "4"):
            out.append(Match("card", m.start(), m.end(), "high", f"{len(digits)} digits, Luhn check holds"))
    return out


def _phones(text: str, now: float | None) -> list[Match]:
    return [Match("phone", m.start(), m.end()) for m in PHONE_RE.finditer(text)]


def _emails(text: str, now: float | None) -> list[Match]:
    return [Match("email", m.start(), m.end()) for m in EMAIL_RE.finditer(text)] if "@" in text else []


def _public(candidate: str) -> bool:
    try:
        return ipaddress.ip_address(candidate).is_global
    except ValueError:  # not an address after all (a time such as 10:00:00, four numbers over 255)
        return False


def _ips(text: str, now: float | None) -> list[Match]:
    found = list(IPV4_RE.finditer(text))
    if "::" in text or text.count(":") >= 7:  # every IPv6 address has one or the other
        found += IPV6_RE.finditer(text)
    return [Match("ip", m.start(), m.end()) for m in found
            if _public(m.group(0)) and not _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start())]


_FINDERS: dict[str, Callable[[str, float | None], list[Match]]] = {
    "rrn": _rrns, "card": _cards, "phone": _phones, "email": _emails, "ip": _ips}
AUDIT_KINDS = ("rrn", "card")


def personal_data(text: str, kinds: tuple[str, ...] = tuple(_FINDERS), now: float | None = None) -> list[Match]:
    """The personal data of these kinds in ``text`` (non-overlapping: the kinds in the order given win), in order."""
    found: list[Match] = []
    for kind in kinds:
        found += _outside(_FINDERS[kind](text, now), found)
    return sorted(found, key=lambda x: x.start)


def _secrets(text: str) -> list[Match]:
    return [Match("secret", s.start, s.end, "medium" if s.label == HIGH_ENTROPY else "high", s.label) for s in secret_spans(text)]


def scan(message: str, now: float | None = None) -> list[Match]:
    """Every secret, RRN and card number in one audit-log message (non-overlapping, in order)."""
    secrets = _secrets(message)
    return sorted(secrets + _outside(personal_data(message, AUDIT_KINDS, now), secrets), key=lambda x: x.start)


def log_spans(text: str) -> list[Span]:
    """What ``mask_log`` replaces: the secrets (by their kind) and the personal data that is not part of one."""
    secrets = _secrets(text)
    return [Span(s.start, s.end, s.detail) for s in secrets] + [m.span() for m in _outside(personal_data(text), secrets)]


def mask_log(text: str) -> str:
    """A log excerpt with its secrets and personal data replaced by their kind (see opsbook/masking.py for where)."""
    return replace(text, log_spans(text))


def redact(message: str, matches: list[Match]) -> str:
    """The message with every match replaced by its kind, and everything else ``mask_log`` hides."""
    return replace(message, [m.span() for m in matches] + log_spans(message))


def excerpt(message: str, matches: list[Match], width: int = 120) -> str:
    """A masked excerpt around the first match (at most ``width`` characters)."""
    text = redact(message, matches)
    first = text.find("[" + matches[0].kind.upper() + "]") if matches else 0
    start = max(0, first - width // 3)
    cut = text[start:start + width]
    return ("…" if start else "") + cut + ("…" if start + width < len(text) else "")


def sample(events: list[dict[str, Any]], size: int, seed: int) -> list[dict[str, Any]]:
    """A reproducible sample: the same events and seed give the same sample, whatever order they were read in."""
    ordered = sorted(events, key=lambda e: (e.get("timestamp", 0), e.get("logStreamName", ""), e.get("eventId", ""), e.get("message", "")))
    if len(ordered) <= size:
        return ordered
    return random.Random(seed).sample(ordered, size)


def hits(log_group: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where each sampled event holds personal data or a secret: never the value."""
    out = []
    for e in events:
        msg = e.get("message", "")
        found = scan(msg)
        if not found:
            continue
        out.append({"log_group": log_group, "stream": e.get("logStreamName", ""), "timestamp": e.get("timestamp"),
                    "kinds": sorted({m.kind for m in found}), "confidence": "high" if any(m.confidence == "high" for m in found) else "medium",
                    "excerpt": excerpt(msg, found)})
    return out
