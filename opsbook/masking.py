"""Masking: secrets everywhere, personal data in log excerpts only.

Two functions, one rule each:

- ``mask(text)`` (and ``mask_obj`` for dicts and lists) hides SECRETS. Apply it to
  everything opsbook writes out: findings, plans, notifications, artifacts, the JSON
  result. It leaves personal data alone, so what a reader needs stays readable: the
  escalation contacts of the inventory (their e-mail addresses and phone numbers),
  network ranges (``0.0.0.0/0``, ``10.0.0.0/8``), version numbers, timestamps, ids,
  ARNs, account ids, UUIDs, hashes and run URLs.
- ``tasks.pii.mask_log(text)`` hides secrets AND personal data (RRN, Luhn-valid card
  numbers, phone numbers, e-mail addresses, public client IP addresses). Apply it to
  text that came from a log line, a message body or an audit-log event, AT THE POINT IT
  IS READ (``tasks.logs.count_matches`` samples, the api-5xx error lines, DLQ message
  samples, Lambda timeout and Bedrock samples, the audit-log sample). The rule: a log
  excerpt is masked with ``mask_log`` before it goes into any finding, summary or
  detail; ``mask`` applied later on top of it changes nothing (it is idempotent).

Secrets are found by detect-secrets 1.5 plugins (``_PLUGINS``), created once at import
and called per line through ``analyze_string``, which never verifies a secret over the
network. A plugin reports the secret VALUE, not where it is, and sometimes only part of
it (GitHubTokenDetector yields the ``ghp`` prefix, JwtTokenDetector may stop before the
signature, PrivateKeyDetector yields the ``BEGIN ... PRIVATE KEY`` header): every
occurrence of the value in its line is masked, extended over the base64/token characters
that follow it, and a private key from its BEGIN line to its END line (or to the end of
the text). The keyword plugin reports one value per pattern and call, so a line where it
found something is scanned again with that value blanked.

Plugins left out, measured on 10,000 ordinary log lines (UUIDs, ARNs, hashes, run URLs,
versions, CIDRs, timestamps): ``IPPublicDetector`` (an address is no secret; 500 hits,
version numbers among them), ``TelegramBotTokenDetector`` (250 hits on SNS topic ARNs:
account id + topic name), ``HexHighEntropyString`` (250 hits: git SHAs, ETags, ids),
``Base64HighEntropyString``'s own quoted-string search (1,500 hits: quoted identifiers),
``OpenAIDetector`` (the ``sk-`` rule below covers it), ``ArtifactoryDetector`` (its
password pattern takes words such as ``APACHEKAFKA``), and the IBM/Cloudant/SoftLayer
plugins (0.9 s of the 2 s all regex plugins took, for clouds opsbook does not run on).

detect-secrets misses, so ``_RULES`` add: ``Bearer <token>``; ``Basic <base64>`` (only
when it decodes to ``user:password``); ``sk-`` API keys; ``key=value`` / ``key: value``
in log style (the keyword plugin needs quotes) for password, secret, token, api key,
access key and credentials keys, and the value of an ``Authorization`` header; and bare
high-entropy tokens such as an AWS secret access key without its key name: 32 or more
base64 characters with upper case, lower case and digits, over the Shannon entropy
(``Base64HighEntropyString``'s measure) that random strings of that length reach
(``_entropy_limit``). Hex (hashes, SHAs, ids), UUIDs, paths of words and dashed resource
names never qualify.

Cost, 10,000 ordinary log lines on the shared 2-core dev machine (best of 3, two runs):
``mask`` 0.71-0.76 s (about 75 us a line), ``mask_log`` 1.1-1.6 s; the regex list this
replaced took 1.0-1.8 s in the same runs and wrongly masked 1,500 of those lines.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import BasePlugin
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import DENYLIST, KeywordDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector


@dataclass(frozen=True)
class Span:
    """``text[start:end]`` is to be replaced by ``label``."""

    start: int
    end: int
    label: str


_KEYWORD = KeywordDetector()
_PRIVATE_KEY = PrivateKeyDetector()
_PLUGINS: tuple[BasePlugin, ...] = (
    AWSKeyDetector(), _PRIVATE_KEY, BasicAuthDetector(), GitHubTokenDetector(), GitLabTokenDetector(), SlackDetector(),
    JwtTokenDetector(), StripeDetector(), SendGridDetector(), TwilioKeyDetector(), NpmDetector(), PypiTokenDetector(),
    AzureStorageKeyDetector(), DiscordBotTokenDetector(), SquareOAuthDetector(), MailchimpDetector(),
)
# Every pattern of the keyword plugin needs one of its keywords (``api_?key``, ``password``...) and a quote: lines
# without both skip its patterns (they take 0.4 ms a line).
_KEYWORD_WORDS = tuple(sorted({w.replace("_?", sep) for w in DENYLIST for sep in ("", "_")}))
_ENTROPY = Base64HighEntropyString()
HIGH_ENTROPY = "[SECRET]"
REDACTED = "[REDACTED]"
# values that are already masked, empty or placeholders are not secrets
_PLACEHOLDER = re.compile(r"^(\*+|x+|\[?redacted\]?|<[^>]*>|null|none|true|false|\$\{[^}]*\}?|\[[A-Z-]+\])$", re.IGNORECASE)
# what may follow a value a plugin cut short: the rest of a token (``ghp_...``, a JWT's signature)
_TAIL = re.compile(r"[A-Za-z0-9_+/=-]*")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*-----")
# a path segment made of words, acronyms and numbers (random base64 almost never is: a lone lower-case letter, mixed runs)
_PATH_SEGMENT = re.compile(r"(?:[A-Z][a-z]+|[a-z]{2,}|[A-Z]{2,5}(?![a-z])|[A-Z]?\d+)+")
_ROUNDS = 4  # scans of one line at most (the keyword plugin reports one value per pattern and scan)


def _label(plugin: BasePlugin) -> str:
    if plugin is _KEYWORD:
        return REDACTED
    return "[" + re.sub(r"\W+", "-", plugin.secret_type.upper()) + "]"


def _locate(text: str, offset: int, line: str, value: str, plugin: BasePlugin) -> list[Span]:
    """Where a plugin's value is: each occurrence in its line (``offset`` is the line's start in ``text``)."""
    if not value.strip() or _PLACEHOLDER.match(value):
        return []
    out, i = [], line.find(value)
    while i >= 0:
        start, end = offset + i, offset + i + len(value)
        if plugin is _PRIVATE_KEY:
            start = offset + (i - 5 if line[max(0, i - 5):i] == "-----" else i)
            tail = _PEM_END.search(text, end)
            end = tail.end() if tail else len(text)
        else:
            end = _TAIL.match(text, end).end()
        out.append(Span(start, end, _label(plugin)))
        i = line.find(value, i + len(value))
    return out


def _keyword_may_match(line: str) -> bool:
    if not any(q in line for q in "'\"`"):
        return False
    low = line.lower()
    return any(w in low for w in _KEYWORD_WORDS)


def _line_spans(text: str, offset: int, line: str) -> list[Span]:
    found: list[Span] = []
    for _ in range(_ROUNDS):
        plugins = _PLUGINS + ((_KEYWORD,) if _keyword_may_match(line) else ())
        new = [s for p in plugins for v in p.analyze_string(line) for s in _locate(text, offset, line, v, p) if s not in found]
        if not new:
            break
        found += new
        for s in new:  # blank what was found (same length, so offsets hold) and look again
            a, b = max(0, s.start - offset), min(len(line), s.end - offset)
            line = line[:a] + "\0" * (b - a) + line[b:]
    return found


def _plugin_spans(text: str) -> list[Span]:
    out, offset = [], 0
    for line in text.split("\n"):
        out += _line_spans(text, offset, line)
        offset += len(line) + 1
    return out


# --- the project's own rules, for what detect-secrets misses ---------------------------------


def _is_basic_credentials(value: str) -> bool:
    """``Basic`` auth carries base64 of ``user:password``; ``Basic authentication failed`` does not."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


def _looks_random(value: str) -> bool:
    """A token, not a word: ``Bearer eyJ...`` or ``Bearer 9f8a...``, not ``Bearer authentication``."""
    return len(value) >= 24 or any(c.isdigit() for c in value) or any(c.isupper() for c in value[1:])


def _entropy_limit(n: int) -> float:
    """What random base64 strings of length ``n`` exceed: 4.0 at 32, 4.26 at 40, 4.5 from 50 (detect-secrets' limit).

    Measured with the rest of ``_high_entropy`` on 50,000 random strings a length: 0.5 % missed at 32 characters,
    0.13 % at 40 (an AWS secret access key), none from 64.
    """
    return min(4.5, 0.8 * math.log2(n))


def _is_path(token: str) -> bool:
    """A path of words (``/aws/lambda/ResumeParserV2/Logs``, ``reports/2026/Q1/Summary``), not base64 that holds a '/'."""
    return token.count("/") >= 2 and all(_PATH_SEGMENT.fullmatch(s) for s in token.split("/") if s)


def _high_entropy(token: str) -> bool:
    return (any(c.isupper() for c in token) and any(c.islower() for c in token) and any(c.isdigit() for c in token)
            and not _is_path(token) and _ENTROPY.calculate_shannon_entropy(token) > _entropy_limit(len(token)))


def _not_placeholder(value: str) -> bool:
    return not _PLACEHOLDER.match(value)


@dataclass(frozen=True)
class _Rule:
    label: str
    pattern: re.Pattern[str]
    group: int | str = 0  # the part that is replaced ("value": the key=value rules' quoted or bare value)
    valid: Callable[[str], bool] = _not_placeholder
    hint: tuple[str, ...] = ()  # the rule runs only on text that holds one of these (lower case): a cheap pre-check


_KEY_WORDS = ("password", "passwd", "secret", "token", "key", "credential")
_VALUE = r"""["']?\s*[:=]\s*(?:"(?P<dq>[^"\n]+)"|'(?P<sq>[^'\n]+)'|(?P<bare>[^\s"',;&}]+))"""
_RULES: tuple[_Rule, ...] = (
    _Rule("[TOKEN]", re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{8,})"), 1, _looks_random, ("bearer",)),
    _Rule("[BASIC-AUTH]", re.compile(r"(?i)\bbasic\s+([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])"), 1, _is_basic_credentials, ("basic",)),
    _Rule("[API-KEY]", re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), hint=("sk-",)),
    _Rule(REDACTED, re.compile(r"(?i)(?<![a-z0-9])(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|credentials?)" + _VALUE),
          "value", hint=_KEY_WORDS),
    _Rule(REDACTED, re.compile(r"""(?i)\bauthorization["']?\s*[:=]\s*["']?(?:(?:basic|bearer|token|digest|negotiate)\s+)?"""
                               r"""(?P<bare>[^\s"',;}]+)"""), "value", hint=("authorization",)),
    _Rule(HIGH_ENTROPY, re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{32,}={0,2}(?![A-Za-z0-9+/=])"), 0, _high_entropy),
)


def _rule_spans(text: str) -> list[Span]:
    out, low = [], text.lower()
    for rule in _RULES:
        if rule.hint and not any(w in low for w in rule.hint):
            continue
        for m in rule.pattern.finditer(text):
            group = rule.group
            if group == "value":
                group = next(g for g in ("dq", "sq", "bare") if m.groupdict().get(g) is not None)
            if rule.valid(m.group(group)):
                out.append(Span(m.start(group), m.end(group), rule.label))
    return out


# --- spans to text ----------------------------------------------------------------------------


def _merge(spans: Iterable[Span]) -> list[Span]:
    """Overlapping spans as one (the label of the first, the longest at equal starts), in order."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, -s.end)):
        if out and s.start < out[-1].end:
            if s.end > out[-1].end:
                out[-1] = Span(out[-1].start, s.end, out[-1].label)
        else:
            out.append(s)
    return out


def replace(text: str, spans: Iterable[Span]) -> str:
    """``text`` with every span replaced by its label (overlapping spans merged)."""
    out, last = [], 0
    for s in _merge(spans):
        out += [text[last:s.start], s.label]
        last = s.end
    out.append(text[last:])
    return "".join(out)


def secret_spans(text: str) -> list[Span]:
    """Every secret in ``text`` (detect-secrets plugins, then the rules above), merged and in order."""
    return _merge(_plugin_spans(text) + _rule_spans(text))


def mask(text: str) -> str:
    """``text`` with every secret replaced by its kind (``[AWS-ACCESS-KEY]``, ``[PRIVATE-KEY]``, ``password=[REDACTED]`` ...)."""
    return replace(text, secret_spans(text))


def mask_obj(obj: Any) -> Any:
    """Mask every string inside dicts/lists (keys are kept)."""
    if isinstance(obj, str):
        return mask(obj)
    if isinstance(obj, dict):
        return {k: mask_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mask_obj(v) for v in obj]
    return obj
