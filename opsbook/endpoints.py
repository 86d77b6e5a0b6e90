"""HTTP endpoints users reach: what a probe saw, where a probe may go, and the rules that judge it. Pure: no
network, no Prefect, no clock (``now`` is given). The probe itself is tasks/endpoints.py.

An endpoint that cannot be reached (connection refused, no answer within its timeout, a name that does not
resolve, a certificate users' clients refuse) is the outage itself: CRIT, naming the error. A probe that could
not run because of OUR side (the sandbox reaches loopback only, the run's deadline had passed) is UNKNOWN with
the reason, never OK.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import Endpoint
from opsbook.loopback import is_loopback_host

CHECK, TLS_CHECK = "endpoint", "endpoint-tls"
MAP_ENV = "OPSBOOK_ENDPOINT_MAP"  # scheme=base,...: where a sandboxed run sends each scheme's URLs (the sandbox sets it)
CA_ENV = "OPSBOOK_ENDPOINT_CA_BUNDLE"  # PEM file of the CAs trusted for https endpoints (default: certifi's bundle)
LOOPBACK_ENV = "OPSBOOK_LOOPBACK_ONLY"  # "1": no request leaves this machine (the sandbox and the test suite set it)

ErrorKind = Literal["refused", "timeout", "dns", "tls", "disconnected", "connection"]


class Probe(BaseModel):
    """One request to one endpoint: its answer, or the error that stopped it, or why it was not made."""

    model_config = ConfigDict(frozen=True)

    url: str
    probed_url: str | None = None  # where the request went, when the sandbox's map sent it elsewhere
    status: int | None = None
    latency_ms: float | None = None
    body: str | None = None  # the first 64 KiB, only when the endpoint expects a substring
    tls_not_after: datetime | None = None  # https: the server certificate's notAfter (aware, UTC)
    error_kind: ErrorKind | None = None
    error: str | None = None
    timeout_s: float | None = None  # the timeout the request had (the endpoint's, or less when the deadline was near)
    first_error: str | None = None  # a connection error before the one retry, which then answered or failed again
    first_latency_ms: float | None = None  # a first answer slower than the WARN threshold, before the faster second one judged
    not_probed: str | None = None  # OUR side: why no request was made (UNKNOWN)


# --- where a probe may go ------------------------------------------------------------------------


def parse_map(raw: str | None) -> dict[str, str]:
    """``http=http://127.0.0.1:8001,https=https://127.0.0.1:8002`` -> {scheme: base URL}; raises ValueError."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (raw or "").split(","))):
        scheme, sep, base = part.partition("=")
        if not sep or scheme not in ("http", "https") or urlsplit(base).scheme not in ("http", "https"):
            raise ValueError(f"{MAP_ENV}: {part!r} is not scheme=base-url (like https=https://127.0.0.1:8443)")
        out[scheme] = base.rstrip("/")
    return out


def target(url: str, mapping: Mapping[str, str], loopback_only: bool) -> tuple[str | None, str | None]:
    """(the URL to request, or None and why not). A loopback URL goes as it is; another goes to its scheme's base
    in ``mapping`` with its host as the first path segment (``https://api.example.com/health`` ->
    ``https://127.0.0.1:8443/api.example.com/health``); when ``loopback_only``, anything else is refused."""
    parts = urlsplit(url)
    if is_loopback_host(parts.hostname):
        return url, None
    base = mapping.get(parts.scheme)
    if base is not None:
        b = urlsplit(base)
        mapped = urlunsplit((b.scheme, b.netloc, f"{b.path}/{parts.netloc}{parts.path or '/'}", parts.query, ""))
        if not loopback_only or is_loopback_host(b.hostname):
            return mapped, None
        return None, f"not probed: {MAP_ENV} sends {parts.scheme} to {base}, not a loopback address, and this run reaches loopback only"
    if loopback_only:
        why = (f"{MAP_ENV} names no {parts.scheme} base" if mapping else f"{MAP_ENV} is not set")
        return None, (f"not probed: this run reaches loopback only (the sandbox or the test suite) and {why}; "
                      f"{parts.hostname} is not on this machine")
    return url, None


# --- the rules -----------------------------------------------------------------------------------


def _expected(ep: Endpoint) -> str:
    return ", ".join(str(s) for s in ep.expect_status) if ep.expect_status else "2xx or 3xx"


def status_ok(ep: Endpoint, status: int) -> bool:
    return status in ep.expect_status if ep.expect_status else 200 <= status < 400


def _unreachable(ep: Endpoint, p: Probe, details: dict) -> Finding:
    what = {"refused": "connection refused", "timeout": f"no answer within {p.timeout_s or ep.timeout_s:g} s",
            "dns": "the name does not resolve", "tls": "TLS handshake failed",
            "disconnected": "the server closed the connection without an answer", "connection": "connection failed"}[p.error_kind or "connection"]
    if p.error_kind == "timeout" and p.timeout_s is not None and p.timeout_s < ep.timeout_s:
        return unknown(CHECK, ep.url, f"the run's deadline left {p.timeout_s:.1f} s of the endpoint's {ep.timeout_s:g} s "
                                      f"timeout and it had not answered ({p.error})")
    retry = f"; a retry failed too (first: {p.first_error})" if p.first_error else ""
    return Finding(check=CHECK, resource=ep.url, status=Status.CRIT, details={**details, "failure": "unreachable", "error_kind": p.error_kind},
                   summary=f"unreachable: {what} ({p.error}){retry}")


def judge_endpoint(ep: Endpoint, p: Probe) -> Finding:
    """Reachable, the expected status (and body), within the latency thresholds. OK names status and latency."""
    details = {"name": ep.name, "method": ep.method, "status": p.status, "latency_ms": p.latency_ms,
               **({"probed_url": p.probed_url} if p.probed_url else {}), **({"first_error": p.first_error} if p.first_error else {}),
               **({"first_latency_ms": p.first_latency_ms} if p.first_latency_ms is not None else {})}
    if p.not_probed is not None:
        return Finding(check=CHECK, resource=ep.url, status=Status.UNKNOWN, summary=p.not_probed, details=details)
    if p.error is not None or p.status is None:
        return _unreachable(ep, p, details)
    ms = round(p.latency_ms or 0.0)
    answered = f"{ep.method} answered {p.status} in {ms} ms"
    retried = f" (on a retry: the first attempt failed: {p.first_error})" if p.first_error else ""
    if not status_ok(ep, p.status):
        return Finding(check=CHECK, resource=ep.url, status=Status.CRIT, value=p.status, details={**details, "failure": "status"},
                       summary=f"{answered}; expected {_expected(ep)}{retried}")
    if ep.expect_body is not None and ep.expect_body not in (p.body or ""):
        return Finding(check=CHECK, resource=ep.url, status=Status.CRIT, value=p.status, details={**details, "failure": "body"},
                       summary=f"{answered} but the body lacks {ep.expect_body!r}{retried}")
    if ms >= ep.latency_crit_ms:
        status, why = Status.CRIT, f"; slower than {ep.latency_crit_ms:g} ms (CRIT)"
    elif ms >= ep.latency_warn_ms:
        status, why = Status.WARN, f"; slower than {ep.latency_warn_ms:g} ms (WARN)"
    else:
        status, why = Status.OK, ""
    if status is not Status.OK:
        details["failure"] = "latency"
    elif p.first_error:
        status, details["failure"] = Status.WARN, "retried"  # a connection failed: said, not hidden behind the retry that answered
    return Finding(check=CHECK, resource=ep.url, status=status, value=ms, details=details, summary=f"{answered}{why}{retried}")


def judge_tls(ep: Endpoint, p: Probe, now: datetime) -> Finding | None:
    """https that answered: days until the certificate's notAfter against the endpoint's thresholds.
    None where there is nothing to judge (http, or unreachable: judge_endpoint says it)."""
    if urlsplit(ep.url).scheme != "https" or p.not_probed is not None or p.status is None:
        return None
    if p.tls_not_after is None:
        return unknown(TLS_CHECK, ep.url, "the server certificate's expiry was not read from the handshake")
    days = (p.tls_not_after - now).total_seconds() / 86400
    details = {"name": ep.name, "not_after": p.tls_not_after.isoformat(), "days_left": round(days, 1)}
    when = f"certificate expires {p.tls_not_after:%Y-%m-%d %H:%M} UTC"
    if days <= 0:
        return Finding(check=TLS_CHECK, resource=ep.url, status=Status.CRIT, value=round(days, 1), details=details, summary=f"{when}: expired")
    if days <= ep.tls_expiry_crit_days:
        status = Status.CRIT
    elif days <= ep.tls_expiry_warn_days:
        status = Status.WARN
    else:
        status = Status.OK
    limit = f" (within {ep.tls_expiry_crit_days if status is Status.CRIT else ep.tls_expiry_warn_days} days)" if status is not Status.OK else ""
    return Finding(check=TLS_CHECK, resource=ep.url, status=status, value=round(days, 1), details=details,
                   summary=f"{when}, in {days:.0f} days{limit}")


def judge_probe(ep: Endpoint, p: Probe, now: datetime) -> list[Finding]:
    """The endpoint's findings: reachability/status/latency, and the certificate for https."""
    tls = judge_tls(ep, p, now)
    return [judge_endpoint(ep, p)] + ([tls] if tls is not None else [])
