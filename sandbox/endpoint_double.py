"""TEST DOUBLE of a system's public HTTP(S) endpoints (``https://api.todo-app.com/health``) on 127.0.0.1.

Two listeners, one plain HTTP and one HTTPS (a certificate for 127.0.0.1 signed by a CA made at start, whose PEM
the probe is told to trust: ``OPSBOOK_ENDPOINT_CA_BUNDLE``). The probe sends each public URL here through
``OPSBOOK_ENDPOINT_MAP`` with its host as the first path segment (``/api.todo-app.com/health``), as the OpenSearch
double takes the domain name. Every URL answers 200 ``{"status": "ok"}`` until a fault is planted for it
(``plant``): another status, a delay, a hang past the client's timeout (released at ``reset``/``stop``, so it never
holds up a teardown), or a connection closed without an answer. ``set_certificate_days`` serves a certificate that
expires in that many days (negative: expired) from the next connection on.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from opsbook.endpoints import CA_ENV, LOOPBACK_ENV, MAP_ENV

HANG_LIMIT_S = 60.0  # a hang ends by itself after this long if nobody releases it
HEALTHY_DAYS = 365


def key_of(url: str) -> str:
    """The double's key for a public URL: host[:port] and path (``api.todo-app.com/health``)."""
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path or '/'}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stops talking mid-request
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall between them

    def log_message(self, *args: Any) -> None:
        return None

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # here, in the request's thread, not in the accept loop

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_POST(self) -> None:
        """A product's API (``on_post``): the handler's answer, the request recorded in ``posts``; else like a GET."""
        double = self.server.double
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = urlsplit(self.path).path.lstrip("/") or "/"
        handler = double.post_handler(key)
        double.record_post(key, body, self.headers.get("Authorization"))
        if handler is None:
            self._answer(head=False)
            return
        status, answer = handler(body)
        data = answer.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, head: bool) -> None:
        double = self.server.double
        key = urlsplit(self.path).path.lstrip("/") or "/"
        if "/" not in key:
            key += "/"
        fault, release = double.fault_for(key)
        if fault.get("drop"):
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault.get("hang"):
            release.wait(HANG_LIMIT_S)
        elif fault.get("delay_s"):
            release.wait(fault["delay_s"])  # a slow answer; reset/stop cut it short
        status = fault.get("status", 200)
        body = fault.get("body", '{"status": "ok"}' if status < 400 else '{"message": "Internal server error"}').encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except OSError:
            pass  # the client gave up (a hang past its timeout)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, double: EndpointDouble, tls: bool) -> None:
        self.double, self.tls = double, tls
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> Any:
        sock, addr = self.socket.accept()
        if self.tls:
            sock = self.double.tls_context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that refused the certificate or went away: nothing to print


class EndpointDouble:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, dict[str, Any]] = {}
        self._release = threading.Event()
        self._servers: list[_Server] = []
        self._dir = ""
        self._ca: tuple[Any, Any] | None = None
        self._ctx: ssl.SSLContext | None = None
        self._post_handlers: dict[str, Any] = {}
        self.posts: list[dict[str, Any]] = []  # every POST: key, body, authorization

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> EndpointDouble:
        self._dir = tempfile.mkdtemp(prefix="opsbook-endpoints-")
        self._ca = _make_ca(os.path.join(self._dir, "ca.pem"))
        self.set_certificate_days(HEALTHY_DAYS)
        self._servers = [_Server(self, tls=False), _Server(self, tls=True)]
        for s in self._servers:
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1}, name="endpoint-double", daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        for s in self._servers:
            s.shutdown()
            s.server_close()
        self._servers = []
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def reset(self) -> None:
        """Every URL healthy again; requests held by a hang or a delay are let go."""
        with self._lock:
            self._faults.clear()
            self._post_handlers.clear()
            self.posts = []
            self._release.set()
            self._release = threading.Event()
        self.set_certificate_days(HEALTHY_DAYS)

    # --- how the probe reaches it ----------------------------------------------------------------
    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def https_base(self) -> str:
        return f"https://127.0.0.1:{self._servers[1].server_address[1]}"

    @property
    def ca_file(self) -> str:
        return os.path.join(self._dir, "ca.pem")

    def env(self) -> dict[str, str]:
        return {MAP_ENV: f"http={self.http_base},https={self.https_base}", CA_ENV: self.ca_file, LOOPBACK_ENV: "1"}

    # --- faults ----------------------------------------------------------------------------------
    def plant(self, url: str, *, status: int | None = None, delay_s: float | None = None, hang: bool = False,
              drop: bool = False, body: str | None = None) -> None:
        """The public URL's next answers: ``status``, after ``delay_s``, never (``hang``), or no answer (``drop``)."""
        fault = {k: v for k, v in {"status": status, "delay_s": delay_s, "hang": hang, "drop": drop, "body": body}.items() if v}
        with self._lock:
            self._faults[key_of(url)] = fault

    def on_post(self, url: str, handler: Any) -> None:
        """POSTs to the public URL answer ``handler(body bytes) -> (status, JSON text)`` (a product's API in the sandbox)."""
        with self._lock:
            self._post_handlers[key_of(url)] = handler

    def post_handler(self, key: str) -> Any:
        with self._lock:
            return self._post_handlers.get(key)

    def record_post(self, key: str, body: bytes, authorization: str | None) -> None:
        with self._lock:
            self.posts.append({"key": key, "body": body.decode("utf-8", "replace"), "authorization": authorization})

    def heal(self, url: str) -> None:
        with self._lock:
            self._faults.pop(key_of(url), None)

    def fault_for(self, key: str) -> tuple[dict[str, Any], threading.Event]:
        with self._lock:
            return dict(self._faults.get(key, {})), self._release

    def set_certificate_days(self, days: float) -> None:
        """The HTTPS listener's certificate expires ``days`` from now (negative: it has expired)."""
        assert self._ca is not None
        cert, key = _make_leaf(*self._ca, days, self._dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        with self._lock:
            self._ctx = ctx

    def tls_context(self) -> ssl.SSLContext:
        with self._lock:
            assert self._ctx is not None
            return self._ctx


# --- certificates (cryptography, installed with moto) ----------------------------------------------


def _name(cn: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(path: str) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("opsbook sandbox CA")).issuer_name(_name("opsbook sandbox CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _make_leaf(ca_cert: Any, ca_key: Any, days: float, directory: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    not_after = now + dt.timedelta(days=days)
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(min(now, not_after) - dt.timedelta(days=30)).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    fd, cert_path = tempfile.mkstemp(suffix=".pem", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd, key_path = tempfile.mkstemp(suffix=".key", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


# --- named faults (sandbox/faults.py registers them) ------------------------------------------------


def _endpoint(system: Any, fault: str, name: str | None) -> Any:
    eps = [e for e in system.endpoints if name in (None, e.name, e.url)]
    if not eps:
        raise ValueError(f"fault {fault!r} needs an endpoint{f' named {name!r}' if name else ''} in the inventory of {system.name}")
    return eps[0]


def endpoint_error(sb: Any, system: Any, endpoint: str | None = None, status: int = 500) -> dict[str, Any]:
    ep = _endpoint(system, "endpoint-500", endpoint)
    sb.endpoints.plant(ep.url, status=status)
    return {"resource": ep.url, "status": status}


def endpoint_slow(sb: Any, system: Any, endpoint: str | None = None, delay_s: float | None = None) -> dict[str, Any]:
    """Slower than the WARN threshold, well short of CRIT (by default)."""
    ep = _endpoint(system, "endpoint-slow", endpoint)
    delay = delay_s if delay_s is not None else (ep.latency_warn_ms + min((ep.latency_crit_ms - ep.latency_warn_ms) / 2, 1000)) / 1000
    sb.endpoints.plant(ep.url, delay_s=delay)
    return {"resource": ep.url, "delay_s": delay}


def endpoint_hang(sb: Any, system: Any, endpoint: str | None = None) -> dict[str, Any]:
    ep = _endpoint(system, "endpoint-hang", endpoint)
    sb.endpoints.plant(ep.url, hang=True)
    return {"resource": ep.url, "timeout_s": ep.timeout_s}


def endpoint_down(sb: Any, system: Any, endpoint: str | None = None) -> dict[str, Any]:
    ep = _endpoint(system, "endpoint-down", endpoint)
    sb.endpoints.plant(ep.url, drop=True)
    return {"resource": ep.url}


def endpoint_tls_expiring(sb: Any, system: Any, days: float | None = None) -> dict[str, Any]:
    """Every https endpoint's certificate expires within the (first) endpoint's WARN window (CRIT when ``days`` says)."""
    ep = _endpoint(system, "endpoint-tls-expiring", None)
    left = days if days is not None else (ep.tls_expiry_warn_days + ep.tls_expiry_crit_days) / 2
    sb.endpoints.set_certificate_days(left)
    return {"resource": ep.url, "days": left}


SCENARIOS = {
    "endpoint-500": endpoint_error,
    "endpoint-slow": endpoint_slow,
    "endpoint-hang": endpoint_hang,
    "endpoint-down": endpoint_down,
    "endpoint-tls-expiring": endpoint_tls_expiring,
}
