"""The embedded AWS: moto's server on 127.0.0.1 (a free port), plus the
OpenSearch test double and the endpoint double (the systems' public HTTP(S)
URLs), with an optional per-call latency (like a real region) and an optional share of
throttled calls (each service's own throttling error: ``set_throttle_pct``).

Moto runs in this process, so where moto cannot produce a signal (ECS running
counts, S3 storage metrics) the sandbox sets it through moto's own state.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from typing import Any

from werkzeug.serving import make_server

from sandbox.endpoint_double import EndpointDouble
from sandbox.opensearch_double import OpenSearchDouble

ACCOUNT_ID = "123456789012"  # moto's default account

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "sandbox",
    "AWS_SECRET_ACCESS_KEY": "sandbox",
    "AWS_SESSION_TOKEN": "sandbox",
}


class _Latency:
    """WSGI middleware: sleep before each call, like a network round trip to a region."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if self.seconds:
            time.sleep(self.seconds)
        return self.app(environ, start_response)


# --- throttling, as each service answers it ----------------------------------------------------------------------
#
# What botocore sees from AWS when a call is throttled, by the protocol the call went out in (the protocol botocore picks
# from the model's ``metadata.protocols``: json first, then rest-json, rest-xml, query): every code below is one of
# botocore's throttling codes (botocore.retries.standard.ThrottlingErrorDetector._THROTTLED_ERROR_CODES), so its retries
# treat it as AWS's own. Services named by their SigV4 signing name (the Authorization header's credential scope).
_JSON_THROTTLE = {"sqs": ("RequestThrottled", "RequestThrottled;Sender"),  # SQS (awsJson1_0, query-compatible)
                  "monitoring": ("ThrottlingException", "Throttling;Sender")}  # CloudWatch (awsJson1_0, query-compatible)
_SIGNING = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")


def throttle_response(service: str, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status, headers, body) of AWS's answer to a throttled call of ``service`` (its signing name), in the protocol of
    the request: awsJson (an ``X-Amz-Target`` header): 400 ``ThrottlingException`` (SQS ``RequestThrottled``; the query
    code in ``x-amzn-query-error`` where the service is query-compatible, as CloudWatch's ``Throttling``); query (a form
    body): 400 ``Throttling`` (EC2: 503 ``RequestLimitExceeded``); S3: 503 ``SlowDown``; other REST services (Lambda,
    API Gateway, OpenSearch's configuration API): 429 ``TooManyRequestsException``."""
    rid = [("x-amzn-RequestId", "00000000-0000-4000-8000-throttled000")]
    if environ.get("HTTP_X_AMZ_TARGET"):
        code, query = _JSON_THROTTLE.get(service, ("ThrottlingException", None))
        headers = [("Content-Type", environ.get("CONTENT_TYPE") or "application/x-amz-json-1.0"), *rid]
        headers += [("x-amzn-query-error", query)] if query else []
        return "400 Bad Request", headers, json.dumps({"__type": code, "message": "Rate exceeded"}).encode()
    if (environ.get("CONTENT_TYPE") or "").startswith("application/x-www-form-urlencoded"):
        if service == "ec2":
            body = "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors></Response>"
            return "503 Service Unavailable", [("Content-Type", "text/xml")], body.encode()
        body = ("<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
                "<RequestId>00000000-0000-4000-8000-throttled000</RequestId></ErrorResponse>")
        return "400 Bad Request", [("Content-Type", "text/xml"), *rid], body.encode()
    if service == "s3":
        body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        return "503 Slow Down", [("Content-Type", "application/xml")], body.encode()
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "TooManyRequestsException"), *rid]
    return "429 Too Many Requests", headers, json.dumps({"message": "Rate exceeded", "Type": "User"}).encode()


class _Throttle:
    """WSGI middleware: answer a share of the AWS calls (``pct`` %, of the ``services`` signing names, default every one) as
    the service answers a throttled call (``throttle_response``). Only signed AWS calls: moto's own API (reset) is never
    throttled. Deterministic: the sequence of decisions comes from ``random.Random(seed)`` (which call gets which
    decision follows the order calls arrive in). ``seen`` and ``throttled`` count calls by service."""

    def __init__(self, app: Any, pct: float = 0.0, seed: int = 0, services: frozenset[str] | None = None) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.set(pct, seed, services)

    def set(self, pct: float, seed: int = 0, services: frozenset[str] | None = None) -> None:
        if not 0 <= pct <= 100:
            raise ValueError(f"throttle_pct must be between 0 and 100, not {pct}")
        with self._lock:
            self.pct, self.seed, self.services = float(pct), seed, services
            self._rng = random.Random(seed)
            self.seen: Counter[str] = Counter()
            self.throttled: Counter[str] = Counter()

    def decide(self, service: str) -> bool:
        """Whether this call of ``service`` is throttled (and counted)."""
        with self._lock:
            if self.services is not None and service not in self.services:
                return False
            self.seen[service] += 1
            hit = self._rng.random() * 100 < self.pct
            if hit:
                self.throttled[service] += 1
            return hit

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if self.pct:
            m = _SIGNING.search(environ.get("HTTP_AUTHORIZATION", ""))
            if m and self.decide(m.group(1)):
                status, headers, body = throttle_response(m.group(1), environ)
                start_response(status, [*headers, ("Content-Length", str(len(body)))])
                return [body]
        return self.app(environ, start_response)


class Sandbox:
    def __init__(self, latency_ms: float = 0.0, throttle_pct: float = 0.0, throttle_seed: int = 0) -> None:
        self.latency_ms = latency_ms
        self.throttle = _Throttle(None, throttle_pct, throttle_seed)  # its app is moto's, once started
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.opensearch = OpenSearchDouble()
        self.endpoints = EndpointDouble()  # the systems' public HTTP(S) endpoints (inventory `endpoints`)
        self.port = 0
        self.postgres: Any = None  # sandbox/postgres.Postgres: the case stores' SQL database, started by the first case seeded
        self.sql_tables: set[tuple[str, str]] = set()  # (database, table) seeded there: emptied by reset()

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> Sandbox:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

        logging.getLogger("werkzeug").setLevel(logging.ERROR)

        fast_moto_sqs()  # moto's SQS walks the whole queue per message; same results, O(1)
        fast_moto_metric_data()  # moto's GetMetricData scans every datapoint per period per query; same results
        moto_log_groups_tagged()  # moto's GetResources lists no log group; AWS's does (logs:log-group)
        moto_log_group_identifiers()  # moto's DescribeLogGroups ignores logGroupIdentifiers (up to 50 names a call)
        atomic_moto_dynamodb_writes()  # moto checks a ConditionExpression then writes, unlocked; DynamoDB's write is atomic
        fast_moto_user_pools()  # moto parses the same RSA key for every user pool it creates: 0.13 s of CPU each
        fast_moto_kms_keys()  # moto makes an RSA private key for every KMS key, symmetric ones too
        moto_without_default_amis()  # moto loads thousands of public AMIs into each region's EC2 at its first call

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        class Dispatcher(DomainDispatcherApplication):
            """moto's dispatcher, keeping which backend serves a host: moto lists its package's directories and tries
            every service's URL patterns on each request (0.3-0.8 ms of CPU a call, under one lock)."""

            backends: dict[str | None, Any] = {}

            def get_backend_for_host(self, host: str | None) -> Any:
                if host not in self.backends:
                    self.backends[host] = super().get_backend_for_host(host)
                return self.backends[host]

        self.throttle.app = Dispatcher(create_backend_app)
        app = _Latency(self.throttle, self.latency_ms / 1000.0)
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-sandbox", daemon=True)
        self._thread.start()
        self.opensearch.start()
        self.opensearch.set_latency(self.latency_ms / 1000.0)
        self.endpoints.start()
        return self

    def reset(self) -> None:
        """Empty moto's state and the OpenSearch double (between test scenarios)."""
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10).read()
        self.opensearch.reset()
        self.endpoints.reset()
        if self.postgres is not None and self.postgres.started:
            for database, table in sorted(self.sql_tables):
                with self.postgres.connect(database) as conn:
                    conn.execute(f"TRUNCATE {table}")  # noqa: S608 (the sandbox's own table names)

    def set_latency_ms(self, ms: float) -> None:
        self.latency_ms = ms
        if self._server is not None:
            self._server.app.seconds = ms / 1000.0
        self.opensearch.set_latency(ms / 1000.0)

    def set_throttle_pct(self, pct: float, seed: int = 0, services: set[str] | None = None) -> None:
        """Throttle ``pct`` % of the AWS calls from now on (of the ``services`` signing names, default every one), the
        decisions drawn from ``random.Random(seed)``; 0 turns throttling off. Counts start again (``throttle.seen``,
        ``throttle.throttled``)."""
        self.throttle.set(pct, seed, frozenset(services) if services is not None else None)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.opensearch.stop()
        self.endpoints.stop()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def start_postgres(self) -> Any:
        """The local PostgreSQL standing in for the case stores' databases (loopback only; started once, on first use: initdb
        takes seconds the runs that need no case store do not pay), with TLS where openssl is here (sslmode require, as
        against RDS). Points this process at it (OPSBOOK_CASE_DB_ENDPOINT, OPSBOOK_CASE_DB_SSLMODE);
        RuntimeError saying what to install where the server package is missing."""
        import secrets

        from sandbox.postgres import Postgres, missing_postgres

        if self.postgres is None or not self.postgres.started:
            why = missing_postgres()
            if why:
                raise RuntimeError(f"the sandbox's case store needs a local PostgreSQL: {why}")
            self.postgres = Postgres(database="postgres_sandbox", password=secrets.token_urlsafe(18), tls=True).start()
        os.environ.update(self.postgres_env())
        return self.postgres

    def postgres_env(self) -> dict[str, str]:
        started = self.postgres is not None and self.postgres.started
        if not started:
            return {}
        return {"OPSBOOK_CASE_DB_ENDPOINT": f"127.0.0.1:{self.postgres.port}", "OPSBOOK_CASE_DB_SSLMODE": "require" if self.postgres.tls else "disable"}

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- how clients reach it ----------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            **CREDENTIALS,
            "AWS_EC2_METADATA_DISABLED": "true",
            "OPSBOOK_OPENSEARCH_URL_TEMPLATE": f"http://127.0.0.1:{self.opensearch.port}/{{domain}}",
            **self.endpoints.env(),  # public URLs go to the endpoint double; nothing leaves loopback
            **self.postgres_env(),  # the case stores' SQL database, once started
        }

    def apply_env(self) -> None:
        """Point this process's boto3 and opensearch-py at the sandbox."""
        os.environ.update(self.env())
        os.environ.pop("AWS_PROFILE", None)
        from opsbook import aws

        aws.reset_clients()

    # --- moto's own state, where moto cannot produce a signal --------------------------
    @staticmethod
    def backend(service: str, region: str) -> Any:
        from moto.backends import get_backend

        return get_backend(service)[ACCOUNT_ID][region]

    def complete_ecs_rollout(self, region: str, cluster: str, service: str) -> None:
        """What ECS does when a deployment finishes (moto never does): one PRIMARY deployment
        on the service's task definition, COMPLETED, running = desired."""
        svc = self.backend("ecs", region).services[f"{cluster}:{service}"]
        svc.running_count, svc.pending_count = svc.desired_count, 0
        primary = dict(svc.deployments[0]) if svc.deployments else {}
        primary.update(status="PRIMARY", taskDefinition=svc.task_definition, rolloutState="COMPLETED",
                       runningCount=svc.desired_count, pendingCount=0, desiredCount=svc.desired_count)
        svc.deployments = [primary]

    def start_ecs_deployment(self, region: str, cluster: str, service: str, previous_task_definition: str) -> None:
        """A deployment in progress: the new PRIMARY (IN_PROGRESS) and the previous one still ACTIVE."""
        svc = self.backend("ecs", region).services[f"{cluster}:{service}"]
        base = dict(svc.deployments[0]) if svc.deployments else {}
        new = {**base, "status": "PRIMARY", "taskDefinition": svc.task_definition, "rolloutState": "IN_PROGRESS", "runningCount": 0}
        old = {**base, "id": f"{base.get('id', 'ecs-svc/0')}-old", "status": "ACTIVE", "taskDefinition": previous_task_definition,
               "rolloutState": "COMPLETED", "runningCount": svc.desired_count}
        svc.deployments = [new, old]

    def corrupt_next_restore(self, region: str) -> None:
        """The next DynamoDB restore from a backup comes back one item short (a corrupted restore)."""
        backend = self.backend("dynamodb", region)
        real = backend.restore_table_from_backup

        def restore(target_table_name: str, backup_arn: str) -> Any:
            table = real(target_table_name, backup_arn)
            if table.items:
                first = next(iter(table.items))
                del table.items[first]
            backend.restore_table_from_backup = real  # once
            return table

        backend.restore_table_from_backup = restore

    def set_ecs_running(self, region: str, cluster: str, service: str, running: int) -> None:
        svc = self.backend("ecs", region).services[f"{cluster}:{service}"]
        svc.running_count = running
        svc.pending_count = max(0, svc.desired_count - running)
        for d in svc.deployments:
            d["runningCount"] = running
            d["pendingCount"] = svc.pending_count
            d["rolloutState"] = "COMPLETED" if running >= svc.desired_count else "IN_PROGRESS"


def sandbox_client(sb: Sandbox, service: str, region: str) -> Any:
    """A boto3 client for the sandbox's moto server (the sandbox's own credentials); one per endpoint, service and region
    (boto3 clients are thread-safe; making one costs more than most of the calls seeding makes with it)."""
    return _client(sb.endpoint, service, region)


@functools.lru_cache(maxsize=256)
def _client(endpoint: str, service: str, region: str) -> Any:
    import boto3

    return boto3.client(service, region_name=region, endpoint_url=endpoint,
                        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def moto_log_groups_tagged() -> None:
    """Let moto's Resource Groups Tagging API list log groups with their tags, as AWS's does (moto's logs backend yields
    none); idempotent, this process only."""
    from moto.core.resource_tagging import TaggedResource
    from moto.logs.models import LogsBackend

    if getattr(LogsBackend, "_opsbook_tagged", False):
        return

    def iter_tagged_resources(self: LogsBackend) -> Any:
        for g in list(self.groups.values()):
            yield TaggedResource(arn=g.arn, tags=dict(self.list_tags_for_resource(g.arn)), resource_type="logs:log-group")

    LogsBackend.iter_tagged_resources = iter_tagged_resources  # type: ignore[method-assign]
    LogsBackend._opsbook_tagged = True  # type: ignore[attr-defined]


def moto_log_group_identifiers() -> None:
    """Let moto's DescribeLogGroups answer ``logGroupIdentifiers`` as AWS's does (moto ignores it and lists every
    group): 1-50 names or ARNs of this account's groups, the ones that exist, with no other filter allowed beside it;
    idempotent, this process only."""
    from moto.logs.exceptions import InvalidParameterException
    from moto.logs.responses import LogsResponse

    if getattr(LogsResponse, "_opsbook_identifiers", False):
        return
    listing = LogsResponse.describe_log_groups

    def describe_log_groups(self: LogsResponse) -> str:
        wanted = self._get_param("logGroupIdentifiers")
        if wanted is None:
            return listing(self)
        if not 1 <= len(wanted) <= 50:
            raise InvalidParameterException(constraint="Member must have length less than or equal to 50 and greater than or "
                                            "equal to 1", parameter="logGroupIdentifiers", value=str(len(wanted)))
        if self._get_param("logGroupNamePrefix") or self._get_param("logGroupNamePattern"):
            raise InvalidParameterException(msg="If you specify logGroupIdentifiers, the only other filter you can specify is "
                                            "includeLinkedAccounts")
        names = {w.split(":log-group:", 1)[1].removesuffix(":*") if ":log-group:" in w else w for w in wanted}
        groups = sorted((g for n, g in self.logs_backend.groups.items() if n in names), key=lambda g: g.name)
        return json.dumps({"logGroups": [g.to_describe_dict() for g in groups]})

    LogsResponse.describe_log_groups = describe_log_groups  # type: ignore[method-assign]
    LogsResponse._opsbook_identifiers = True  # type: ignore[attr-defined]


_DYNAMODB_WRITES = threading.Lock()


def atomic_moto_dynamodb_writes() -> None:
    """Make moto's DynamoDB writes one at a time, as real DynamoDB makes a conditional write atomic; idempotent, this
    process only (the sandbox's server and the in-process ``mock_aws`` alike).

    moto checks a ConditionExpression and then writes, unlocked: two threads can both pass the check (two runs "win"
    the same lease). Reads and every other service stay concurrent."""
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler, "_opsbook_atomic", False):
        return

    def one_at_a_time(write: Any) -> Any:
        @functools.wraps(write)
        def locked(self: DynamoHandler) -> Any:
            with _DYNAMODB_WRITES:
                return write(self)
        return locked

    for name in ("put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items"):
        setattr(DynamoHandler, name, one_at_a_time(getattr(DynamoHandler, name)))
    DynamoHandler._opsbook_atomic = True  # type: ignore[attr-defined]


def fast_moto_user_pools() -> None:
    """Let every moto user pool share the one RSA key moto gives them all (it parses the same file for each pool,
    0.13 s of CPU); idempotent, this process only."""
    import types

    from joserfc import jwk
    from moto.cognitoidp import models

    if getattr(models, "_opsbook_fast", False):
        return
    parsed: dict[str, Any] = {}

    class RSAKey:
        @staticmethod
        def import_key(data: Any, *args: Any, **kwargs: Any) -> Any:
            key = repr((data, args, kwargs))
            if key not in parsed:
                parsed[key] = jwk.RSAKey.import_key(data, *args, **kwargs)
            return parsed[key]

    models.jwk = types.SimpleNamespace(RSAKey=RSAKey)  # type: ignore[attr-defined]
    models._opsbook_fast = True  # type: ignore[attr-defined]


def fast_moto_kms_keys() -> None:
    """Give moto's KMS keys of one key spec one private key, made once (moto generates an RSA key for every key it
    creates, symmetric keys included: ~0.1 s of CPU each; opsbook never signs with them); idempotent, this process."""
    from moto.kms import models

    if getattr(models, "_opsbook_fast", False):
        return
    generate, made = models.generate_private_key, {}

    def generate_private_key(key_spec: str) -> Any:
        if key_spec not in made:
            made[key_spec] = generate(key_spec)
        return made[key_spec]

    models.generate_private_key = generate_private_key  # type: ignore[attr-defined]
    models._opsbook_fast = True  # type: ignore[attr-defined]


def moto_without_default_amis() -> None:
    """Start moto's EC2 regions without the public AMIs it loads into each (no runbook reads an AMI; loading them is
    most of the first EC2 call of every region after each reset), as MOTO_EC2_LOAD_DEFAULT_AMIS=false does."""
    from moto import settings

    settings.ec2_load_default_amis = lambda: False  # type: ignore[attr-defined]


def fast_moto_sqs() -> None:
    """Make moto's SQS cost O(1) per message where it walked the queue (same results); idempotent, this process only."""

    from moto.sqs.models import Message, SQSBackend

    if getattr(SQSBackend, "_opsbook_fast", False):
        return

    def is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Any) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return retention + message.sent_timestamp / 1000 > time.time()

    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]
    Message.visible = property(lambda self: time.time() * 1000 > self.visible_at)  # type: ignore[method-assign,assignment]
    Message.delayed = property(lambda self: time.time() * 1000 < self.delayed_until)  # type: ignore[method-assign,assignment]
    SQSBackend._opsbook_fast = True  # type: ignore[attr-defined]


class _Datapoints:
    """What moto's GetMetricData reads of its backend (``get_all_metrics``), limited to some datapoints."""

    def __init__(self, datapoints: list[Any]) -> None:
        self._datapoints = datapoints

    def get_all_metrics(self) -> list[Any]:
        return self._datapoints


def fast_moto_metric_data() -> None:
    """Make moto's GetMetricData answer each query from the datapoints it can match (same results); idempotent.

    moto scans every datapoint of the region once per period of every query: O(queries x periods x datapoints),
    seconds for a runbook that asks for 30 cases' token counts over a day. Each MetricStat query is answered by
    moto's own code over the datapoints that pass moto's own filter (the metric name and exact dimensions, or the
    namespace and name without dimensions); a request with an expression takes moto's path unchanged. Dimensions match
    in any order, as in CloudWatch."""
    from moto.cloudwatch.models import CloudWatchBackend, Dimension

    if getattr(CloudWatchBackend, "_opsbook_fast", False):
        return
    # CloudWatch matches a dimension set whatever the order it is given in; moto sorts both sides to compare them,
    # but its Dimension.__lt__ compares a value with a name, so two dimensions in another order never matched
    Dimension.__lt__ = lambda a, b: (a.name or "", a.value or "") < (b.name or "", b.value or "")  # type: ignore[method-assign]
    # ... which also let moto's own S3 storage metrics through: the size of the sandbox's (empty) buckets at this minute,
    # newer than the daily storage numbers the seed publishes as AWS would (sandbox.metrics); the sandbox publishes them
    CloudWatchBackend.aws_metric_data = property(lambda self: [])  # type: ignore[method-assign,assignment]
    original = CloudWatchBackend.get_metric_data

    def get_metric_data(self: CloudWatchBackend, queries: list[dict[str, Any]], start_time: Any, end_time: Any,
                        scan_by: str = "TimestampAscending") -> list[dict[str, Any]]:
        if len(queries) < 2 or any("MetricStat" not in q or "Expression" in q for q in queries):
            return original(self, queries, start_time, end_time, scan_by)
        datapoints = self.get_all_metrics()
        results: list[dict[str, Any]] = []
        for q in queries:
            metric = q["MetricStat"]["Metric"]
            dims = sorted(Dimension(name=d["Name"], value=d["Value"]) for d in metric.get("Dimensions", []))
            mine = [md for md in datapoints if md.name == metric["MetricName"]
                    and (sorted(md.dimensions) == dims if dims else md.namespace == metric["Namespace"])]
            results += original(_Datapoints(mine), [q], start_time, end_time, scan_by)  # type: ignore[arg-type]
        return results

    CloudWatchBackend.get_metric_data = get_metric_data  # type: ignore[method-assign]
    CloudWatchBackend._opsbook_moto_get_metric_data = original  # type: ignore[attr-defined]  (tests compare the two)
    CloudWatchBackend._opsbook_fast = True  # type: ignore[attr-defined]

