"""The one place that makes boto3 sessions and clients.

- Region from the inventory; credentials from the standard chain (env, profile,
  SSO, instance role); ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` are
  honoured by botocore itself, so the sandbox and real AWS take the same path.
- botocore owns per-call retries (``standard`` mode by default, ``adaptive`` via
  ``OPSBOOK_RETRY_MODE``), with more attempts and a shorter backoff for throttling
  (``_throttle_retries``); every call has connect/read timeouts.
- One client per (service, region, profile), shared across threads (boto3
  clients are thread-safe; adaptive mode's rate limiter is per client). Nothing
  is created at import time. Every session shares the first session's botocore
  data loader, so a service's model is read from disk once per process, not once
  per session (an assumed role, a reset, a fleet target all make new sessions).
- Every API call is counted by service and operation (``CallLog``), its retries
  apart, and each call (once, whatever its retries) is checked against the IAM
  actions the running task declared.
- ``paginate`` pages every list call to the end.
- ``Deadline`` and ``parallel`` run independent reads concurrently, bounded by
  the run's deadline and a per-API rate, so a run ends in bounded time.
- ``assume_role`` + ``with assumed(role):`` make every ``client()`` created in
  that context (and the threads and tasks it spawns) use the assumed role's
  credentials, with their own client cache; outside it nothing changes.
  ``with gated(fn):`` calls ``fn(service, operation, region)`` before each API
  call made in that context (the fleet's shared per-API rate limits).
- ``with recording(fn):`` calls ``fn(service, operation, region, params)`` for
  every API call the process makes meanwhile (the scoped-IAM check of the test
  suite); off by default, and then one global read a call.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urlparse

import boto3
import botocore.config
from botocore import xform_name
import botocore.loaders
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

from opsbook.iam import check_call

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_sessions: dict[tuple[str | None, bytes], boto3.Session] = {}
_clients: dict[tuple[str, str, str | None, bytes], Any] = {}
_loader: botocore.loaders.Loader | None = None

# --- API call accounting -----------------------------------------------------------


class CallLog:
    """API calls by (service, operation): each call once (``calls``: what the code asked for) and, apart, the attempts
    botocore's retries added to them (``retries``: a throttled or failed attempt sent again). ``total`` and
    ``by_operation`` count every attempt, each one a request AWS received; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.retries: Counter[tuple[str, str]] = Counter()
        self.undeclared: set[str] = set()

    def add(self, service: str, operation: str, undeclared: str | None = None) -> None:
        with self._lock:
            self.calls[(service, operation)] += 1
            if undeclared:
                self.undeclared.add(undeclared)

    def add_retry(self, service: str, operation: str) -> None:
        with self._lock:
            self.retries[(service, operation)] += 1

    def absorb(self, other: CallLog) -> None:
        """Count ``other``'s calls here too (reads made for this run before it started: opsbook.resources.prefetch)."""
        with other._lock:
            calls, retries, undeclared = Counter(other.calls), Counter(other.retries), set(other.undeclared)
        with self._lock:
            self.calls.update(calls)
            self.retries.update(retries)
            self.undeclared |= undeclared

    @property
    def total(self) -> int:
        """Every attempt: the calls and their retries."""
        with self._lock:
            return sum(self.calls.values()) + sum(self.retries.values())

    @property
    def retries_total(self) -> int:
        with self._lock:
            return sum(self.retries.values())

    def by_operation(self) -> dict[str, int]:
        """Every attempt, by "service:Operation"."""
        with self._lock:
            return {f"{s}:{o}": n for (s, o), n in sorted((self.calls + self.retries).items())}

    def retries_by_operation(self) -> dict[str, int]:
        with self._lock:
            return {f"{s}:{o}": n for (s, o), n in sorted(self.retries.items())}


_current_log: contextvars.ContextVar[CallLog | None] = contextvars.ContextVar("opsbook_call_log", default=None)
PROCESS_CALLS = CallLog()


def start_call_log() -> CallLog:
    """Start counting calls for the current run (this context and what it spawns)."""
    log = CallLog()
    _current_log.set(log)
    return log


def current_call_log() -> CallLog | None:
    return _current_log.get()


def _count_call(event_name: str, model: Any = None, **kwargs: Any) -> None:
    # event_name: before-call.<service-id>.<Operation>
    service = model.service_model.service_name if model is not None else event_name.split(".")[1]
    op = model.name if model is not None else event_name.split(".")[2]
    _within_bound(service, op)
    undeclared = check_call(service, op)  # raises in strict mode
    PROCESS_CALLS.add(service, op, undeclared)
    log = _current_log.get()
    if log is not None:
        log.add(service, op, undeclared)
    gate = _call_gate.get()
    if gate is not None:
        gate(service, op, (kwargs.get("context") or {}).get("client_region"))
    tps = API_QUOTAS_TPS.get((service, op))
    if tps is not None:
        limiter(xform_name(op), tps).acquire()
    if _recorder is not None:
        _record(service, op, kwargs.get("context") or {})


# Per-API rate limits opsbook keeps itself: the published default quotas (per account and region) of the operations the
# runbooks call in bursts (``parallel`` over log groups, alarm queries), applied before each call of them is sent when
# quotas are on (``quotas_enabled``: against AWS, not the sandbox; OPSBOOK_RATE_<OPERATION> overrides), so a burst stays
# under the quota instead of being throttled and retried. FilterLogEvents (5/s) and GetMetricData (50/s) are limited
# where they are called, page by page (tasks/logs.py, tasks/cloudwatch.py); the fleet shares the same figures across
# its workers (flows/fleet/ratelimits.py).
API_QUOTAS_TPS: dict[tuple[str, str], float] = {
    ("logs", "DescribeLogGroups"): 5.0,
    ("logs", "GetLogEvents"): 25.0,
    ("logs", "StartQuery"): 5.0,
    ("cloudwatch", "DescribeAlarms"): 9.0,
    ("cloudwatch", "GetMetricStatistics"): 400.0,
}


def _count_attempt(event_name: str, attempts: int = 1, operation: Any = None, **kwargs: Any) -> None:
    """``needs-retry`` comes after every attempt of a call (``attempts``: 1 for the first); the second and later ones are
    retries. Counted apart from the call (``_count_call``, once a call: the IAM check and the gate see each call once)."""
    if attempts < 2:
        return
    service = operation.service_model.service_name if operation is not None else event_name.split(".")[1]
    op = operation.name if operation is not None else event_name.split(".")[2]
    PROCESS_CALLS.add_retry(service, op)
    log = _current_log.get()
    if log is not None:
        log.add_retry(service, op)


# --- recording calls with their parameters (off unless ``with recording(fn):``) ---------------------------------

Recorder = Callable[[str, str, str, dict[str, Any]], None]
_recorder: Recorder | None = None  # process-wide: calls from every thread (Prefect's task workers included)


def _keep_params(params: dict[str, Any], context: dict[str, Any], **kwargs: Any) -> None:
    """before-parameter-build: hand the call's parameters to the before-call hook (the request context is the call's)."""
    if _recorder is not None:
        context["opsbook_params"] = params


def _record(service: str, operation: str, context: dict[str, Any]) -> None:
    recorder = _recorder
    if recorder is not None:
        recorder(service, operation, context.get("client_region") or "", context.get("opsbook_params") or {})


@contextmanager
def recording(recorder: Recorder) -> Iterator[None]:
    """Call ``recorder(service, operation, region, params)`` for every AWS API call made meanwhile, in any thread."""
    global _recorder
    previous, _recorder = _recorder, recorder
    try:
        yield
    finally:
        _recorder = previous


# --- sessions and clients ------------------------------------------------------------


def _config() -> botocore.config.Config:
    return botocore.config.Config(
        retries={
            "mode": os.environ.get("OPSBOOK_RETRY_MODE", "standard"),
            "max_attempts": int(os.environ.get("OPSBOOK_MAX_ATTEMPTS", "3")),
        },
        connect_timeout=float(os.environ.get("OPSBOOK_CONNECT_TIMEOUT", "3")),
        read_timeout=float(os.environ.get("OPSBOOK_READ_TIMEOUT", "15")),
        max_pool_connections=int(os.environ.get("OPSBOOK_MAX_POOL", "32")),
    )


# --- retries: throttling gets more attempts and a shorter backoff ----------------------------------------------------
#
# botocore's standard mode, as AWS's SDKs do it (jittered exponential backoff, the retry quota per client that stops
# retrying when most attempts fail), with two changes for an incident tool with a deadline: a throttled attempt is sent
# again up to OPSBOOK_THROTTLE_RETRIES times (default 9; throttling passes, and a run's answer must not change with
# it: measured, 3 retries turned findings UNKNOWN in 2 of 8 daily-health runs at 20 % throttled, 9 in none), while
# every other retryable error (5xx, connection errors, timeouts) keeps OPSBOOK_MAX_ATTEMPTS retries (default 3:
# retrying a hung endpoint ten times would only wait longer); and the backoff is capped at OPSBOOK_MAX_BACKOFF seconds
# (default 5, botocore's is 20: a 20 s sleep is a third of daily-health's deadline); and throttled retries do not spend
# the retry quota (``_quota_for_failures``). ``adaptive`` mode (OPSBOOK_RETRY_MODE) gets the same; "legacy" keeps
# botocore's own.

THROTTLE_RETRIES = 9
MAX_BACKOFF_S = 5.0


class _Conditions:
    """Retry a throttled attempt up to ``throttle_attempts`` attempts, anything else botocore's standard mode retries
    up to ``attempts`` (botocore.retries.standard's checkers). Throttled: a throttling code, or HTTP 429 or 503 (S3's
    SlowDown to a HEAD request has no body, so no code: botocore sees only "503")."""

    def __init__(self, attempts: int, throttle_attempts: int) -> None:
        from botocore.retries import standard

        self._throttled = standard.ThrottledRetryableChecker()
        self._throttle_max = standard.MaxAttemptsChecker(throttle_attempts)
        self._other = standard.StandardRetryConditions(max_attempts=attempts)

    def throttled(self, context: Any) -> bool:
        return self._throttled.is_retryable(context) or getattr(context.http_response, "status_code", None) in (429, 503)

    def is_retryable(self, context: Any) -> bool:
        if self.throttled(context):
            return self._throttle_max.is_retryable(context)
        return self._other.is_retryable(context)


def _quota_for_failures(retry_quota: Any, conditions: _Conditions) -> Any:
    """botocore's retry quota (``RetryQuotaChecker``) spent only on retries of failures (5xx, connection errors,
    timeouts), not of throttling: its 500 tokens, 5 a retry and 1 back a call answered at once, ran dry after ~250 calls
    of one client at 50 % throttled (measured), after which no call of that client was retried at all for the rest of
    the process. A throttled retry is paced by the backoff and bounded by the attempts and the run's deadline instead."""
    acquire = retry_quota.acquire_retry_quota

    def acquire_unless_throttled(context: Any) -> bool:
        return True if conditions.throttled(context) else acquire(context)

    retry_quota.acquire_retry_quota = acquire_unless_throttled
    return retry_quota


def _retry_settings() -> tuple[int, int, float]:
    """(attempts, attempts when throttled, backoff cap in seconds) from the environment."""
    retries = int(os.environ.get("OPSBOOK_MAX_ATTEMPTS", "3"))
    throttled = int(os.environ.get("OPSBOOK_THROTTLE_RETRIES", str(THROTTLE_RETRIES)))
    return retries + 1, max(retries, throttled) + 1, float(os.environ.get("OPSBOOK_MAX_BACKOFF", str(MAX_BACKOFF_S)))


def _throttle_retries(client: Any) -> Any:
    """Put opsbook's retry policy (``_Conditions``, the backoff cap) in place of botocore's standard handler on a new
    client: the handler is registered under botocore's own unique id, so it replaces botocore's and nothing else; the
    retry quota is the standard one (a new ``RetryQuota`` of its own, released after each call as botocore does), spent
    on failures only (``_quota_for_failures``)."""
    if client.meta.config.retries.get("mode") not in ("standard", "adaptive"):
        return client
    from botocore.retries import quota, standard

    attempts, throttle_attempts, cap = _retry_settings()
    name = client.meta.service_model.service_id.hyphenize()
    adapter = standard.RetryEventAdapter()
    detector = standard.ThrottlingErrorDetector(adapter)
    conditions = _Conditions(attempts, throttle_attempts)
    retry_quota = _quota_for_failures(standard.RetryQuotaChecker(quota.RetryQuota(), detector), conditions)
    backoff = standard.ExponentialBackoff(max_backoff=cap, service_name=name, throttling_detector=detector)
    handler = standard.RetryHandler(
        retry_policy=standard.RetryPolicy(retry_checker=conditions, retry_backoff=backoff),
        retry_event_adapter=adapter, retry_quota=retry_quota, service_name=name)
    client.meta.events.unregister(f"needs-retry.{name}", unique_id=f"retry-config-{name}")
    client.meta.events.register(f"after-call.{name}", retry_quota.release_retry_quota)
    client.meta.events.register(f"needs-retry.{name}", handler.needs_retry, unique_id=f"retry-config-{name}")
    return client


def _new_session(**kwargs: Any) -> boto3.Session:
    """A boto3 session that counts and checks its calls, reading service models through the process's one loader
    (a loader caches every model it has parsed: ~0.1 s of JSON per service that a new session would read again).

    The first session is built exactly as boto3 builds one (profile, ``data_path``, ``AWS_DATA_PATH``) and its loader
    becomes the shared one; later sessions get it before boto3 reads anything. Models stay parsed for the life of
    the process: a change to ``~/.aws/models`` or ``AWS_DATA_PATH`` takes a new process."""
    global _loader
    if _loader is None:
        s = boto3.Session(**kwargs)
        _loader = s._session.get_component("data_loader")
    else:
        core = botocore.session.get_session()
        core.register_component("data_loader", _loader)
        s = boto3.Session(botocore_session=core, **kwargs)
        paths = _loader.search_paths  # boto3 adds its own data path to the loader each time: keep it once
        if len(paths) > 1 and paths[-1] in paths[:-1]:
            paths.pop()
    s.events.register("before-parameter-build", _keep_params)
    s.events.register("before-call", _count_call)
    s.events.register("needs-retry", _count_attempt)
    s.events.register("before-send", _attempt_within_bound)
    return s


# what botocore and opsbook read from the environment when they make a client, besides the AWS_* variables
_CLIENT_ENV = ("OPSBOOK_RETRY_MODE", "OPSBOOK_MAX_ATTEMPTS", "OPSBOOK_THROTTLE_RETRIES", "OPSBOOK_MAX_BACKOFF", "OPSBOOK_CONNECT_TIMEOUT", "OPSBOOK_READ_TIMEOUT", "OPSBOOK_MAX_POOL",
               "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "REQUESTS_CA_BUNDLE")


def _env() -> bytes:
    """What a session or client is made of besides its arguments: boto3's ``AWS_*`` variables (credentials, profile,
    endpoint, retries), proxies and CA bundle, and opsbook's client settings; a change to any of them gets new sessions
    and clients. A digest, so that no credential sits in a cache key (or in a traceback's locals). Not what the
    files named by AWS_CONFIG_FILE or AWS_SHARED_CREDENTIALS_FILE say: a session keeps what it read of them."""
    names = sorted(k for k in list(os.environ) if k.startswith("AWS_") or k in _CLIENT_ENV)
    pairs = [(k, v) for k in names if (v := os.environ.get(k)) is not None]  # another thread may unset one meanwhile
    return hashlib.sha256(repr(pairs).encode()).digest()


def session(profile: str | None = None) -> boto3.Session:
    profile = profile or os.environ.get("AWS_PROFILE") or None
    key = (profile, _env())
    with _lock:
        s = _sessions.get(key)
        if s is None:
            s = _sessions[key] = _new_session(profile_name=profile)
        return s


def client(service: str, region: str, profile: str | None = None) -> Any:
    """The shared client for a service and region (created on first use, again only when the environment that made
    it changed: credentials, profile, endpoint, retry and timeout settings).

    Inside ``with assumed(role):`` the client uses that role's credentials."""
    role = _assumed.get()
    if role is not None:
        return _role_client(role, service, region)
    cap = _timeout_cap()
    key = (service, region, profile, _env(), cap)
    with _lock:
        c = _clients.get(key)
    if c is not None:
        return c
    c = _throttle_retries(session(profile).client(service, region_name=region, config=_capped_config(cap)))
    with _lock:
        return _clients.setdefault(key, c)


def _capped_config(cap: float | None) -> botocore.config.Config:
    config = _config()
    if cap is None:
        return config
    return config.merge(botocore.config.Config(read_timeout=min(config.read_timeout, cap), connect_timeout=min(config.connect_timeout, cap)))


def reset_clients() -> None:
    """Forget cached sessions and clients (a client is already new when its environment changed)."""
    with _lock:
        _clients.clear()
        _sessions.clear()
        _role_clients.clear()
        _role_sessions.clear()


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or None


def is_loopback_url(url: str | None) -> bool:
    """A URL on this machine: localhost or a loopback address (opsbook.loopback's rule; 127.example.com is not one)."""
    from opsbook.loopback import is_loopback_host

    return bool(url) and is_loopback_host(urlparse(url).hostname)


def require_loopback_endpoint() -> str:
    """The sandbox, demo and tests must never reach a real AWS account."""
    url = endpoint_url()
    if not is_loopback_url(url):
        raise RuntimeError(
            f"refusing to run: AWS_ENDPOINT_URL is {url!r}, not a loopback address. "
            "The demo and tests only talk to the embedded sandbox on 127.0.0.1."
        )
    return url  # type: ignore[return-value]


# --- assumed roles (another account's credentials, for this context only) ---------------


@dataclass(frozen=True)
class AssumedRole:
    """Temporary credentials from STS AssumeRole. The secrets never appear in repr or logs."""

    role_arn: str
    session_name: str
    arn: str  # the assumed-role ARN STS returned (arn:aws:sts::<account>:assumed-role/<role>/<session>)
    account: str  # the account STS says these credentials act in
    expiration: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)


_assumed: contextvars.ContextVar[AssumedRole | None] = contextvars.ContextVar("opsbook_assumed_role", default=None)
_call_gate: contextvars.ContextVar[Callable[[str, str, str | None], None] | None] = contextvars.ContextVar(
    "opsbook_call_gate", default=None)
_role_sessions: dict[str, boto3.Session] = {}
_role_clients: dict[tuple[str, str, str, bytes], Any] = {}


def assume_role(role_arn: str, session_name: str, region: str, *, external_id: str | None = None,
                duration_s: int = 3600) -> AssumedRole:
    """STS AssumeRole with the current credentials (the caller declares ``sts:AssumeRole``)."""
    kwargs: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name[:64], "DurationSeconds": duration_s}
    if external_id:
        kwargs["ExternalId"] = external_id
    resp = client("sts", region).assume_role(**kwargs)
    creds, user = resp["Credentials"], resp["AssumedRoleUser"]
    arn = user["Arn"]
    return AssumedRole(role_arn=role_arn, session_name=kwargs["RoleSessionName"], arn=arn, account=arn.split(":")[4],
                       expiration=str(creds.get("Expiration", "")), access_key_id=creds["AccessKeyId"],
                       secret_access_key=creds["SecretAccessKey"], session_token=creds["SessionToken"])


def current_role() -> AssumedRole | None:
    return _assumed.get()


@contextmanager
def assumed(role: AssumedRole) -> Iterator[AssumedRole]:
    """Every ``client()`` made in this context uses ``role``'s credentials (clients cached per role)."""
    token = _assumed.set(role)
    try:
        yield role
    finally:
        _assumed.reset(token)


@contextmanager
def gated(gate: Callable[[str, str, str | None], None]) -> Iterator[None]:
    """Call ``gate(service, operation, region)`` before every API call made in this context."""
    token = _call_gate.set(gate)
    try:
        yield
    finally:
        _call_gate.reset(token)


def _role_session(role: AssumedRole) -> boto3.Session:
    with _lock:
        s = _role_sessions.get(role.access_key_id)
        if s is None:
            s = _role_sessions[role.access_key_id] = _new_session(
                aws_access_key_id=role.access_key_id, aws_secret_access_key=role.secret_access_key, aws_session_token=role.session_token)
        return s


def _role_client(role: AssumedRole, service: str, region: str) -> Any:
    cap = _timeout_cap()
    key = (role.access_key_id, service, region, _env(), cap)
    with _lock:
        c = _role_clients.get(key)
    if c is not None:
        return c
    c = _throttle_retries(_role_session(role).client(service, region_name=region, config=_capped_config(cap)))
    with _lock:
        return _role_clients.setdefault(key, c)


def credentials() -> Any:
    """The credentials AWS calls made here are signed with: inside ``with assumed(role):`` that role's, else the
    process's (for what signs its own requests: opensearch-py's SigV4 auth)."""
    role = _assumed.get()
    return (_role_session(role) if role is not None else session()).get_credentials()


# --- errors --------------------------------------------------------------------------


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "ClientError")
    return type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """A short reason for an UNKNOWN finding: what failed and what to do."""
    code = error_code(exc)
    if isinstance(exc, ClientError):
        msg = exc.response.get("Error", {}).get("Message", "")
        op = exc.operation_name
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"):
            return f"{op}: access denied ({msg}); grant the IAM action (see `opsbook policy`)"
        if code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException"):
            return f"{op}: credentials rejected ({code}); refresh your AWS credentials"
        return f"{op}: {code}: {msg}".strip()
    if isinstance(exc, BotoCoreError):
        text = str(exc)
        if "Unable to locate credentials" in text:
            return "no AWS credentials found; set AWS_PROFILE or run `aws sso login`"
        if "Could not connect" in text or "Connect timeout" in text or "Read timeout" in text:
            return f"cannot reach AWS endpoint ({text}); check the network or AWS_ENDPOINT_URL"
        return text
    return f"{type(exc).__name__}: {exc}"


def is_throttled(exc: BaseException) -> bool:
    """AWS throttled the call (a code botocore's retries treat as throttling), or answered with a 5xx: worth asking
    again a little later, after botocore's own retries gave up."""
    if not isinstance(exc, ClientError):
        return False
    from botocore.retries.standard import RetryContext, ThrottledRetryableChecker

    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return status >= 500 or ThrottledRetryableChecker().is_retryable(RetryContext(attempt_number=1, parsed_response=exc.response))


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in {
        "ResourceNotFoundException",
        "ResourceNotFound",
        "NotFoundException",
        "NoSuchBucket",
        "NoSuchEntity",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "ServiceNotFoundException",
        "ClusterNotFoundException",
        "TableNotFoundException",
        "404",
    }


# --- pagination ----------------------------------------------------------------------


def paginate(c: Any, operation: str, result_key: str, **kwargs: Any) -> Iterator[Any]:
    """Yield every item of ``result_key`` over all pages."""
    if not c.can_paginate(operation):
        raise ValueError(f"{operation} cannot be paginated by botocore; page it by hand")
    for page in c.get_paginator(operation).paginate(**kwargs):
        yield from page.get(result_key, []) or []


# --- deadline and concurrency ---------------------------------------------------------


class DeadlineExceeded(TimeoutError):
    pass


@dataclass
class Deadline:
    seconds: float
    started: float = field(default_factory=time.monotonic)

    @property
    def remaining(self) -> float:
        return max(0.0, self.seconds - (time.monotonic() - self.started))

    @property
    def expired(self) -> bool:
        return self.remaining <= 0


# A read-only runbook's deadline bounds its AWS calls (bound_calls): a call is not started once the deadline has
# passed, and a client made while it runs times out each attempt within the time left (in steps, so clients are
# still shared: a step is a cache key).
_bound: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("opsbook_call_bound", default=None)
_CAP_STEPS = (1.0, 2.0, 3.0, 5.0, 8.0, 13.0)


@contextmanager
def bounded(deadline: Deadline) -> Iterator[Deadline]:
    """Every AWS call made inside (and in the tasks and threads started inside) is bounded by ``deadline``.
    For reads only: a mutation in flight must finish and be recorded, and a notification after the reads is sent."""
    token = _bound.set(deadline)
    try:
        yield deadline
    finally:
        _bound.reset(token)


def _within_bound(service: str, operation: str) -> None:
    d = _bound.get()
    if d is not None and d.expired:
        raise DeadlineExceeded(f"{service}:{operation} not called: the run's deadline ({d.seconds:g} s) had passed")


def _attempt_within_bound(request: Any = None, **kwargs: Any) -> None:
    """Before each attempt (retries too: a throttled call may try ten times): none is sent past the deadline."""
    d = _bound.get()
    if d is not None and d.expired:
        raise DeadlineExceeded(f"not tried again: the run's deadline ({d.seconds:g} s) had passed")


def _timeout_cap() -> float | None:
    """Seconds one attempt of a call may wait (connect, read) so that its attempts end within the time left."""
    d = _bound.get()
    if d is None:
        return None
    attempts = max(1, int(os.environ.get("OPSBOOK_MAX_ATTEMPTS", "3")))
    share = d.remaining / attempts
    return max([c for c in _CAP_STEPS if c <= share], default=_CAP_STEPS[0]) if share < _CAP_STEPS[-1] else None


class RateLimiter:
    """A simple shared token spacing: at most ``rate`` calls a second (per process)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)


_limiters: dict[str, RateLimiter] = {}


def quotas_enabled() -> bool:
    """Honour published per-API quotas: OPSBOOK_QUOTAS=on|off|auto (auto: on unless the endpoint is loopback)."""
    mode = os.environ.get("OPSBOOK_QUOTAS", "auto")
    if mode in ("on", "off"):
        return mode == "on"
    return not is_loopback_url(endpoint_url())


def limiter(api: str, quota_tps: float) -> RateLimiter:
    """The process-wide limiter for one API at its published quota (OPSBOOK_RATE_<API> overrides)."""
    env = os.environ.get(f"OPSBOOK_RATE_{api.upper()}")
    rate = float(env) if env is not None else quota_tps
    if not quotas_enabled():
        rate = 0
    key = f"{api}:{rate}"
    with _lock:
        return _limiters.setdefault(key, RateLimiter(rate))


def parallel(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    deadline: Deadline | None = None,
    max_workers: int = 16,
) -> list[tuple[T, R | None, BaseException | None]]:
    """Run ``fn`` over ``items`` concurrently; return (item, result, error) in input order.

    Errors are returned, never swallowed: the caller turns each one into an
    UNKNOWN finding with its reason. Items still running at the deadline come
    back with ``DeadlineExceeded``.
    """
    items = list(items)
    if not items:
        return []
    out: list[tuple[T, R | None, BaseException | None]] = []
    pool = ThreadPoolExecutor(max_workers=min(max_workers, len(items)), thread_name_prefix="opsbook")
    if deadline is not None and _bound.get() is None:
        def run(item: T, fn: Callable[[T], R] = fn) -> R:
            with bounded(deadline):  # the reads of this batch are bounded by its deadline
                return fn(item)
    else:
        run = fn
    try:
        futures = [pool.submit(contextvars.copy_context().run, run, item) for item in items]
        timeout = deadline.remaining if deadline else None
        wait(futures, timeout=timeout)
        for item, fut in zip(items, futures):
            if not fut.done():
                fut.cancel()
                out.append((item, None, DeadlineExceeded(f"not finished within the run's deadline ({deadline.seconds:.0f} s)")))
            elif fut.exception() is not None:
                out.append((item, None, fut.exception()))
            else:
                out.append((item, fut.result(), None))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return out


# --- identity ------------------------------------------------------------------------


def caller_identity(region: str) -> dict[str, str]:
    ident = client("sts", region).get_caller_identity()
    return {"account": ident["Account"], "arn": ident["Arn"], "user_id": ident["UserId"]}


def unreadable(exc: BaseException | None, missing_ok: bool = True) -> str | None:
    """Why a read failed, for an UNKNOWN finding; None when it did not fail or, with ``missing_ok``, when the
    resource is simply not there (whether missing is CRIT is the health rule's call: opsbook.components)."""
    if exc is None or (missing_ok and is_not_found(exc)):
        return None
    return describe_error(exc)


def utc(dt: datetime | None) -> datetime | None:
    """An API timestamp in UTC (a naive one is taken as UTC), or None."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
