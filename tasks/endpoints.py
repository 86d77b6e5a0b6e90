"""HTTP endpoints users reach (seed 002's health check after a deploy, 4단계 포스트 배포 검증: ``curl -f
https://api.todo-app.com/health``; no runbook probed it daily): one request each, concurrently, with the endpoint's
short timeout; status, latency and, for https, the certificate's notAfter read from the TLS handshake. Not AWS: no IAM
action, no AWS call counted.

Where a request may go: a run on the sandbox (``AWS_ENDPOINT_URL`` on loopback) or in the test suite
(``OPSBOOK_LOOPBACK_ONLY=1``) reaches loopback only; the sandbox maps each scheme's public URLs to its local endpoint
double (``OPSBOOK_ENDPOINT_MAP``), as it maps OpenSearch domains to its OpenSearch double. A URL it cannot map is
UNKNOWN (not probed), never a request off the machine. The rules: opsbook/endpoints.py.
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
import time
from datetime import datetime, timezone
from typing import Any

import httpx
from prefect.cache_policies import NO_CACHE

from opsbook import aws, loopback
from opsbook.endpoints import CA_ENV, CHECK, MAP_ENV, ErrorKind, Probe, is_loopback_host, judge_probe, parse_map, target
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task, declares
from opsbook.inventory import Endpoint, System

BODY_BYTES = 64 * 1024
RETRIED: set[ErrorKind] = {"refused", "dns", "disconnected", "connection"}  # not a timeout (it would wait again), not TLS
MIN_TIMEOUT_S = 0.1


def loopback_only() -> bool:
    """No request leaves this machine: on the sandbox (AWS on loopback) or when the environment says so (the one rule:
    opsbook.loopback)."""
    return loopback.loopback_only()


def _ssl_context() -> ssl.SSLContext:
    import certifi  # httpx's own default trust store

    cafile = os.environ.get(CA_ENV) or certifi.where()
    return _trust(cafile, os.stat(cafile).st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _trust(cafile: str, version: int) -> ssl.SSLContext:
    """One context per trust store and version of its file for the process (loading a CA bundle costs ~20 ms of CPU;
    a context is safe to share between threads)."""
    return ssl.create_default_context(cafile=cafile)


def _causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and len(out) < 10:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return out


def classify(exc: httpx.HTTPError) -> tuple[ErrorKind, str]:
    """The kind of failure (how the judge names it) and its message."""
    chain = _causes(exc)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return "tls", f"certificate verify failed: {e.verify_message}"
        if isinstance(e, ssl.SSLError):
            return "tls", str(e)
        if isinstance(e, socket.gaierror):
            return "dns", str(e)
        if isinstance(e, ConnectionRefusedError):
            return "refused", str(e)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", f"{type(exc).__name__}: {text}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "disconnected", text
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return "dns", text
    if "Connection refused" in text:
        return "refused", text
    return "connection", f"{type(exc).__name__}: {text}"


def _not_after(response: httpx.Response) -> datetime | None:
    stream = response.extensions.get("network_stream")
    sslobj = stream.get_extra_info("ssl_object") if stream is not None else None
    cert = sslobj.getpeercert() if sslobj is not None else None
    if not cert or "notAfter" not in cert:
        return None
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), timezone.utc)


def request(ep: Endpoint, url: str, timeout: float) -> dict[str, Any]:
    """One request: status, latency (headers and up to 64 KiB of body) and notAfter, or the error's kind and text."""
    https = url.startswith("https://")
    with httpx.Client(timeout=httpx.Timeout(timeout), verify=_ssl_context() if https else False, follow_redirects=False,
                      trust_env=not is_loopback_host(httpx.URL(url).host), headers={"User-Agent": "opsbook-probe"}) as client:
        t0 = time.monotonic()
        try:
            with client.stream(ep.method, url) as r:
                not_after = _not_after(r) if https else None
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) >= BODY_BYTES:
                        break
                ms = (time.monotonic() - t0) * 1000
        except httpx.HTTPError as exc:
            kind, text = classify(exc)
            return {"error_kind": kind, "error": text, "timeout_s": timeout}
    text = bytes(body[:BODY_BYTES]).decode("utf-8", "replace") if ep.expect_body is not None else None
    return {"status": r.status_code, "latency_ms": round(ms, 1), "tls_not_after": not_after, "body": text, "timeout_s": timeout}


def probe(ep: Endpoint, mapping: dict[str, str], local_only: bool, deadline: aws.Deadline) -> Probe:
    """The endpoint's one request (one retry on a connection error, said in the result), within the run's deadline."""
    url, why = target(ep.url, mapping, local_only)
    if url is None:
        return Probe(url=ep.url, not_probed=why)
    probed = url if url != ep.url else None
    timeout = min(ep.timeout_s, deadline.remaining)
    if timeout < MIN_TIMEOUT_S:
        return Probe(url=ep.url, probed_url=probed, not_probed=f"not probed: the run's deadline ({deadline.seconds:g} s) had passed")
    first = request(ep, url, timeout)
    if first.get("error_kind") in RETRIED and min(ep.timeout_s, deadline.remaining) >= MIN_TIMEOUT_S:
        again = request(ep, url, min(ep.timeout_s, deadline.remaining))
        return Probe(url=ep.url, probed_url=probed, first_error=f"{first['error_kind']}: {first['error']}", **again)
    if (first.get("latency_ms") or 0) >= ep.latency_warn_ms and min(ep.timeout_s, deadline.remaining) >= MIN_TIMEOUT_S:
        # one slow answer is a sample, not a verdict (a busy prober, a cold connection): the faster of two is judged
        again = request(ep, url, min(ep.timeout_s, deadline.remaining))
        if again.get("status") is not None and again["latency_ms"] < first["latency_ms"]:
            return Probe(url=ep.url, probed_url=probed, first_latency_ms=first["latency_ms"], **again)
    return Probe(url=ep.url, probed_url=probed, **first)


@aws_task(iam=[], cache_policy=NO_CACHE)  # not AWS: HTTP requests to the system's own endpoints, no IAM action
def check_endpoints(system: System, deadline: aws.Deadline) -> list[Finding]:
    if not system.endpoints:
        return []
    try:
        mapping = parse_map(os.environ.get(MAP_ENV))
    except ValueError as exc:
        return [unknown(CHECK, ep.url, str(exc)) for ep in system.endpoints]
    local_only = loopback_only()
    results = aws.parallel(lambda ep: probe(ep, mapping, local_only, deadline), system.endpoints, deadline=deadline)
    now = datetime.now(timezone.utc)
    findings: list[Finding] = []
    for ep, p, err in results:
        findings += judge_probe(ep, p, now) if p is not None else [unknown(CHECK, ep.url, aws.describe_error(err or RuntimeError("no result")))]
    return findings


# --- the external provider's status page (daily-health, emergency-check, diagnose-stuck-processing) ----------------

from opsbook.processing import PROVIDER, judge_provider_status, settings  # noqa: E402  (this section is appended)


@aws_task(iam=[], name="check-provider-status", cache_policy=NO_CACHE)  # not AWS: one HTTP request to the provider's status page
def check_provider_status(system: System, deadline: aws.Deadline) -> list[Finding]:
    """stuck_processing.provider_status, probed like the endpoints (loopback only on the sandbox), judged as a status page."""
    cfg = settings(system)
    ep = cfg.provider_status
    if ep is None:
        return []
    ep = ep.model_copy(update={"expect_body": ep.expect_body or ""})  # read the body: the page's own indicator
    try:
        mapping = parse_map(os.environ.get(MAP_ENV))
    except ValueError as exc:
        return [unknown(PROVIDER, ep.url, str(exc))]
    try:
        p = probe(ep, mapping, loopback_only(), deadline)
    except Exception as exc:
        return [unknown(PROVIDER, ep.url, aws.describe_error(exc))]
    f = judge_provider_status(cfg.provider, ep.url, p.status, p.body, f"{p.error_kind}: {p.error}" if p.error else None, p.not_probed)
    if f.status is not Status.WARN and ep.expect_body and p.status is not None and ep.expect_body not in (p.body or ""):
        return [Finding(check=PROVIDER, resource=ep.url, status=Status.WARN, value=p.status, details=f.details,
                        summary=f"{cfg.provider}'s status page answered {p.status} without {ep.expect_body!r}")]
    return [f]


# --- the product's admin API: POST one request (diagnose-stuck-processing's reprocess-evidence step) -----------------


@declares([])  # not AWS: an HTTP request to the product's own admin API
def post_json(url: str, body: dict[str, Any], token_env: str | None, timeout_s: float) -> int:
    """POST ``body`` as JSON (a bearer token from ``token_env`` when named), where a probe may go (loopback only on the
    sandbox); returns the 2xx status, raises RuntimeError naming the answer otherwise."""
    try:
        where, why = target(url, parse_map(os.environ.get(MAP_ENV)), loopback_only())
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None
    if where is None:
        raise RuntimeError(f"POST {url}: {why}")
    headers = {"User-Agent": "opsbook", "Content-Type": "application/json"}
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise RuntimeError(f"POST {url}: the admin API's token is not set (environment variable {token_env})")
        headers["Authorization"] = f"Bearer {token}"
    https = where.startswith("https://")
    with httpx.Client(timeout=httpx.Timeout(timeout_s), verify=_ssl_context() if https else False, follow_redirects=False,
                      trust_env=not is_loopback_host(httpx.URL(where).host), headers=headers) as client:
        try:
            r = client.post(where, json=body)
        except httpx.HTTPError as exc:
            kind, text = classify(exc)
            raise RuntimeError(f"POST {url}: {kind}: {text}") from None
    if not 200 <= r.status_code < 300:
        raise RuntimeError(f"POST {url} answered {r.status_code}: {r.text[:200]}")
    return r.status_code
