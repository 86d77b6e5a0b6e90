"""Mask secrets and personal data in every log excerpt, artifact, message and JSON result."""

from __future__ import annotations

import re
from typing import Any

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # secrets
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "[AWS-KEY-ID]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"), "[JWT]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [TOKEN]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}\b"), "[API-KEY]"),
    (
        re.compile(
            r"(?i)((?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|aws_secret_access_key|authorization|credential)s?"
            r"[\"']?\s*[:=]\s*[\"']?)([^\s\"',;}]+)"
        ),
        r"\1[REDACTED]",
    ),
    # personal data
    (re.compile(r"\b\d{6}-?[1-8]\d{6}\b"), "[RRN]"),  # Korean resident registration number (주민번호)
    (re.compile(r"(?<![\w-])(?:\d[ -]?){13,16}(?![\w-])"), "[CARD]"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[EMAIL]"),
    (re.compile(r"(?<![\w-])(?:\+?82[- ]?)?0?1[016789][- ]?\d{3,4}[- ]?\d{4}(?![\w-])"), "[PHONE]"),
    # client addresses in log lines; loopback (127.x) is never personal data
    (re.compile(r"(?<![\w.])(?!127\.)(?:\d{1,3}\.){3}\d{1,3}(?![\w.])"), "[IP]"),
]


def mask(text: str) -> str:
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def mask_obj(obj: Any) -> Any:
    """Mask every string inside dicts/lists (keys are kept)."""
    if isinstance(obj, str):
        return mask(obj)
    if isinstance(obj, dict):
        return {k: mask_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mask_obj(v) for v in obj]
    return obj
