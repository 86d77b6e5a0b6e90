"""Personal data and secrets in audit-log events (pure: no AWS; unit-tested).

Seed 003 정기 점검 asks for a sample of the audit log to be checked for data
that must never be logged. ``scan(message)`` returns what it found, as kinds
and spans; ``hits`` turns a sample of events into reportable hits that say
where (log group, stream, timestamp, kind) with a masked excerpt, never the
value.

- ``rrn``: Korean resident registration number (주민등록번호) YYMMDD-GXXXXXX.
  The birth date must exist and G (gender and century) must be 1-8 (1/2/5/6:
  1900s, 3/4/7/8: 2000s), so a number with an impossible date is not flagged.
  The check digit only raises confidence: numbers issued from October 2020
  carry a random last digit. Without the hyphen, 13 digits are an RRN only
  when the check digit holds (else they are far more likely an id).
- ``secret``: ``password=...``-style key/values, ``Bearer ...``, JWTs, ``sk-...`` keys.
- ``card``: 13-19 digits (spaces or dashes allowed) passing the Luhn check.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from tasks.masking import mask

RRN_RE = re.compile(r"(?<![\d-])(\d{2})(\d{2})(\d{2})(-?)([1-8])(\d{5})(\d)(?![\d-])")
SECRET_RES: list[tuple[str, re.Pattern[str]]] = [
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("bearer", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}")),
    ("api-key", re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")),
    ("key-value", re.compile(
        r"(?i)\b(?:password|passwd|pwd|secret|client_secret|token|access_token|refresh_token|api[_-]?key|access[_-]?key|"
        r"aws_secret_access_key)[\"']?\s*[:=]\s*[\"']?([^\s\"',;}&]+)")),
]
CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# values that are already masked or empty placeholders are not secrets
_PLACEHOLDER = re.compile(r"^(\*+|x+|X+|\[?redacted\]?|<[^>]*>|null|none|\$\{.*\}|\[[A-Z-]+\])$", re.I)
_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)


@dataclass(frozen=True)
class Match:
    kind: str  # rrn | secret | card
    start: int
    end: int
    confidence: str = "high"  # high | medium
    detail: str = ""


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


def _overlaps(m: tuple[int, int], taken: list[Match]) -> bool:
    return any(m[0] < t.end and t.start < m[1] for t in taken)


def scan(message: str) -> list[Match]:
    """Every RRN, secret and card number in one message (non-overlapping, in order)."""
    found: list[Match] = []
    for m in RRN_RE.finditer(message):
        yy, mm, dd, hyphen, g = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
        if rrn_birth_date(yy, mm, dd, g) is None:
            continue
        check = rrn_check_digit_ok(m.group(0).replace("-", ""))
        if not hyphen and not check:
            continue
        found.append(Match("rrn", m.start(), m.end(), "high" if check else "medium",
                           "check digit holds" if check else "valid date and gender digit; no check digit (issued from 2020-10, or not an RRN)"))
    for name, rx in SECRET_RES:
        for m in rx.finditer(message):
            if _overlaps(m.span(), found):
                continue
            if name == "key-value" and _PLACEHOLDER.match(m.group(1)):
                continue
            found.append(Match("secret", m.start(), m.end(), "high", name))
    for m in CARD_RE.finditer(message):
        digits = re.sub(r"[ -]", "", m.group(0))
        if _overlaps(m.span(), found) or not luhn_ok(digits):
            continue
        found.append(Match("card", m.start(), m.end(), "high", f"{len(digits)} digits, Luhn check holds"))
    return sorted(found, key=lambda x: x.start)


def redact(message: str, matches: list[Match]) -> str:
    """The message with every match replaced by its kind, then the general masking on top."""
    out, last = [], 0
    for m in sorted(matches, key=lambda x: x.start):
        out += [message[last:m.start], f"[{m.kind.upper()}]"]
        last = m.end
    out.append(message[last:])
    return mask("".join(out))


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
