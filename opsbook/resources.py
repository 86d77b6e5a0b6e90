"""Tag-based discovery (Resource Groups Tagging API): one paged call finds every
tagged resource of the system, whatever the service. ListFunctions carries no
tags, so this is how "all Team=Team2 functions" is answered correctly."""

from __future__ import annotations

import contextvars
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task, declares
from opsbook.inventory import System

T = TypeVar("T")

RESOURCE_TYPES = [
    "lambda:function",
    "dynamodb:table",
    "es:domain",
    "apigateway:restapis",
    "s3:bucket",
    "sqs:queue",
    "ecs:service",
    "logs:log-group",
]


class Discovered(BaseModel):
    """Names found by tag, by kind. ``error`` is set when discovery could not run."""

    lambda_functions: list[str] = Field(default_factory=list)
    dynamodb_tables: list[str] = Field(default_factory=list)
    opensearch_domains: list[str] = Field(default_factory=list)
    api_gateway_ids: list[str] = Field(default_factory=list)
    s3_buckets: list[str] = Field(default_factory=list)
    sqs_queues: list[str] = Field(default_factory=list)
    ecs_services: list[tuple[str, str]] = Field(default_factory=list)
    log_groups: list[str] = Field(default_factory=list)
    enabled: bool = False
    error: str | None = None
    # when discovery gave up: the resources an earlier complete discovery found that this one did not see
    # ([field, name], e.g. ["lambda_functions", "ResumeParser"]) and when that was (None: no earlier discovery here)
    unseen: list[tuple[str, str]] = Field(default_factory=list)
    remembered_at: str | None = None

    def count(self) -> int:
        return sum(len(getattr(self, f)) for f in _FOUND_FIELDS)

    def confirmed(self, kind: str) -> set[str]:
        """The names of a kind shown to exist: here, those discovery found."""
        return set(getattr(self, KINDS[kind][1]))


_FOUND_FIELDS = ("lambda_functions", "dynamodb_tables", "opensearch_domains", "api_gateway_ids", "s3_buckets", "sqs_queues",
                 "ecs_services", "log_groups")


def classify(arns: list[str]) -> Discovered:
    """Sort ARNs into names by kind (pure: tested without AWS)."""
    d = Discovered(enabled=True)
    for arn in arns:
        parts = arn.split(":", 5)
        if len(parts) < 6:
            continue
        service, resource = parts[2], parts[5]
        if service == "lambda" and resource.startswith("function:"):
            name = resource.split(":")[1]
            if name not in d.lambda_functions:
                d.lambda_functions.append(name)
        elif service == "dynamodb" and resource.startswith("table/") and "/" not in resource[6:]:
            d.dynamodb_tables.append(resource[6:])
        elif service == "es" and resource.startswith("domain/"):
            d.opensearch_domains.append(resource[7:])
        elif service == "apigateway" and resource.startswith("/restapis/") and resource.count("/") == 2:
            d.api_gateway_ids.append(resource.split("/")[2])
        elif service == "s3" and "/" not in resource:
            d.s3_buckets.append(resource)
        elif service == "sqs":
            d.sqs_queues.append(resource)
        elif service == "ecs" and resource.startswith("service/"):
            bits = resource.split("/")
            if len(bits) == 3:
                d.ecs_services.append((bits[1], bits[2]))
        elif service == "logs" and resource.startswith("log-group:"):
            d.log_groups.append(resource[len("log-group:"):].removesuffix(":*"))
    return d


# A page of GetResources that still fails after botocore's retries (throttled, or a 5xx) is asked for again after
# 2, 4, 8 s (the pages already read are kept), within the first third of the run's deadline (the checks that read what
# discovery found need the rest); then discovery gives up.
DISCOVERY_WAITS_S = (2.0, 4.0, 8.0)
_sleep = time.sleep  # tests replace it: no test waits


def _spent(deadline: aws.Deadline) -> float:
    return deadline.seconds - deadline.remaining


# --- one set of reads for several runbooks (opsbook run A B C) -----------------------------------------------------

_shared: contextvars.ContextVar[dict[tuple[Any, ...], Any] | None] = contextvars.ContextVar("opsbook_shared_reads", default=None)


@contextmanager
def shared_reads() -> Iterator[None]:
    """Runs started inside share the resolver's reads (tag discovery, named lookups): a read that succeeded is not
    made again by the next runbook of the same invocation (a failed one is). Outside it nothing is kept."""
    token = _shared.set({})
    try:
        yield
    finally:
        _shared.reset(token)


def _shared_read(key: Callable[..., tuple[Any, ...]], ok: Callable[[Any], bool]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def read(*args: Any, **kwargs: Any) -> T:
            cache = _shared.get()
            if cache is None:
                return fn(*args, **kwargs)
            k = (fn.__name__, aws.endpoint_url(), id(aws._assumed.get()), *key(*args, **kwargs))
            if k in cache:
                return cache[k]
            value = fn(*args, **kwargs)
            if ok(value):
                cache[k] = value
            return value
        return read
    return wrap


# --- tag discovery started before the run (``opsbook run``, while Prefect is imported) ------------------------------

PREFETCH_S = 60.0  # the early discovery's own deadline: daily-health's default, so throttling gets the same waits


@dataclass
class _Early:
    done: threading.Event = dc_field(default_factory=threading.Event)
    value: Any = None
    calls: aws.CallLog = dc_field(default_factory=aws.CallLog)
    lock: threading.Lock = dc_field(default_factory=threading.Lock)
    target: aws.CallLog | None = None  # the run that took it before it finished: its calls are counted there when it does


_early: dict[tuple[Any, ...], _Early] = {}
_early_lock = threading.Lock()


def _early_key(system: System) -> tuple[Any, ...]:
    return (system.name, system.region, tuple(sorted(system.discovery.tags.items())), aws.endpoint_url())


def prefetch(system: System) -> bool:
    """Start the system's tag discovery now, in a thread, for the run about to start in this process: its first
    discovery (``tagged``) takes this one's result and counts its calls as its own, instead of reading again. The CLI
    calls it once nothing left can refuse the run, so that the reads wait on AWS while the flow is imported and its
    Prefect run created. False when the system has no discovery tags, under an assumed role (a fleet target's account),
    or when one was started already."""
    if not system.discovery.tags or aws.current_role() is not None:
        return False
    early = _Early()
    with _early_lock:
        if _early_key(system) in _early:
            return False
        _early[_early_key(system)] = early

    def read() -> None:
        token = aws._current_log.set(early.calls)
        try:
            early.value = declares(["tag:GetResources"])(_tagged)(system, aws.Deadline(PREFETCH_S))
        except BaseException as exc:  # the run reads again: an early read never decides anything
            early.value = exc
        finally:
            aws._current_log.reset(token)
            with early.lock:
                early.done.set()
                if early.target is not None:  # taken while still reading: the rest of its calls go to that run
                    early.target.absorb(early.calls)

    threading.Thread(target=read, name="prefetch-discovery", daemon=True).start()
    return True


def left_early() -> aws.CallLog:
    """The calls of early discoveries no run took (the run ended before its discovery, e.g. it failed first), dropped:
    the command adds them to what it reports."""
    with _early_lock:
        left = list(_early.values())
        _early.clear()
    out = aws.CallLog()
    for early in left:
        with early.lock:
            out.absorb(early.calls)  # what it made so far (a read still going on is not waited for)
    return out


def _take_early(system: System, deadline: aws.Deadline | None) -> tuple[list[dict[str, Any]], str | None] | None:
    """The early discovery's result, once, with its calls counted in this run's log; None when there is none for this
    system, endpoint and account, or it failed (the run then reads itself). Waited for within the run's deadline (its
    own, else the one bounding its calls); still reading then: discovery gave up, as the run's own read would have."""
    if aws.current_role() is not None:
        return None
    with _early_lock:
        early = _early.pop(_early_key(system), None)
    if early is None:
        return None
    bound = deadline if deadline is not None else aws._bound.get()
    early.done.wait(timeout=bound.remaining if bound is not None else PREFETCH_S)
    log = aws.current_call_log()
    with early.lock:
        finished = early.done.is_set()
        if log is not None:
            if finished:
                log.absorb(early.calls)  # made for this run: counted in it, whatever their outcome
            else:
                early.target = log
    if not finished:
        return [], f"discovery started early did not finish within the run's deadline ({bound.seconds if bound else PREFETCH_S:g} s)"
    value = early.value
    return value if isinstance(value, tuple) and value[1] is None else None


@_shared_read(lambda system, deadline=None: (system.name, system.region, tuple(sorted(system.discovery.tags.items()))),
              ok=lambda got: got[1] is None)
def tagged(system: System, deadline: aws.Deadline | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Every resource carrying the system's discovery tags, as GetResources' mappings (ARN and tags), over every page;
    or, with the mappings of the pages read, the reason discovery gave up. A page throttled through botocore's retries
    is asked for again (``DISCOVERY_WAITS_S``) within the first third of the run's ``deadline`` (without one: botocore's
    retries only). A discovery started early for this run (``prefetch``) is taken instead of reading again."""
    early = _take_early(system, deadline)
    return early if early is not None else _tagged(system, deadline)


def _tagged(system: System, deadline: aws.Deadline | None = None) -> tuple[list[dict[str, Any]], str | None]:
    c = aws.client("resourcegroupstaggingapi", system.region)
    filters = [{"Key": k, "Values": [v]} for k, v in system.discovery.tags.items()]
    kwargs: dict[str, Any] = {"TagFilters": filters, "ResourceTypeFilters": RESOURCE_TYPES, "ResourcesPerPage": 100}
    out: list[dict[str, Any]] = []
    pages, waits = 0, list(DISCOVERY_WAITS_S)
    while True:
        try:
            page = c.get_resources(**kwargs)
        except Exception as exc:  # turned into UNKNOWN findings by the flow
            if waits and deadline is not None and aws.is_throttled(exc) and _spent(deadline) + waits[0] < deadline.seconds / 3:
                _sleep(waits.pop(0))
                continue
            tries = len(DISCOVERY_WAITS_S) - len(waits) + 1
            return out, aws.describe_error(exc) + (f" (page {pages + 1} asked for {tries} times)" if tries > 1 else "")
        pages += 1
        out += page.get("ResourceTagMappingList", [])
        token = page.get("PaginationToken")
        if not token or token == kwargs.get("PaginationToken"):
            remember(system, out)
            return out, None
        kwargs["PaginationToken"] = token


# --- what the last complete discovery found (on this machine): named when discovery gives up ---------------------------


def _memory_path(system: System) -> Path:
    home = Path(os.environ.get("OPSBOOK_HOME", Path.home() / ".opsbook")).expanduser()
    return Path(os.environ.get("OPSBOOK_DISCOVERY_MEMORY", home / "discovery")).expanduser() / f"{system.name}.json"


def _where(system: System) -> dict[str, Any]:
    """What a remembered discovery must match: region, tags, endpoint (a sandbox's is not an account's) and the
    assumed role's account (a fleet target's)."""
    role = aws.current_role()
    return {"region": system.region, "tags": system.discovery.tags, "endpoint": aws.endpoint_url(),
            "account": role.account if role else None}


def remember(system: System, mappings: list[dict[str, Any]]) -> None:
    """Keep the ARNs a complete discovery found (``OPSBOOK_HOME/discovery/<system>.json``, or the directory
    OPSBOOK_DISCOVERY_MEMORY names): when a later one gives up,
    each of them it did not see is named as UNKNOWN instead of going missing. Best effort: a file that cannot be
    written leaves only the next give-up less precise."""
    path = _memory_path(system)
    data = {**_where(system), "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "arns": sorted(m["ResourceARN"] for m in mappings)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError:
        pass


def remembered(system: System) -> tuple[list[str], str | None]:
    """(ARNs, when) the last complete discovery of the system found, where this run looks (``_where``); ([], None) when
    there is none."""
    try:
        data = json.loads(_memory_path(system).read_text())
    except (OSError, ValueError):
        return [], None
    if any(data.get(k) != v for k, v in _where(system).items()):
        return [], None
    return list(data.get("arns", [])), data.get("at")


D = TypeVar("D", bound=Discovered)


def unseen(found: Discovered, arns: list[str]) -> list[tuple[str, str]]:
    """[field, name] of each resource in ``arns`` that ``found`` does not hold (pure)."""
    out = []
    for field, names in classify(arns).model_dump(include=set(_FOUND_FIELDS)).items():
        have = {tuple(n) if isinstance(n, list) else n for n in getattr(found, field)}
        out += [(field, "/".join(n) if isinstance(n, (list, tuple)) else n) for n in names
                if (tuple(n) if isinstance(n, list) else n) not in have]
    return out


def gave_up(system: System, found: D) -> D:
    """``found`` (what discovery read before it gave up) with the resources an earlier complete discovery found that
    it did not see."""
    arns, at = remembered(system)
    return found.model_copy(update={"unseen": unseen(found, arns), "remembered_at": at})


@aws_task(iam=["tag:GetResources"], cache_policy=NO_CACHE)
def discover(system: System, deadline: aws.Deadline | None = None) -> Discovered:
    """Find the system's resources by its discovery tags (empty when it has none): ``resolve`` without looking up the
    named resources discovery did not see (daily-health's checks read each of them, and say CRIT when one is missing).
    When discovery gives up, the resources it read are kept and those it did not see are named (``unseen``)."""
    if not system.discovery.tags:
        return Discovered()
    mappings, error = tagged(system, deadline)
    found = classify([m["ResourceARN"] for m in mappings])
    if error:
        return gave_up(system, found.model_copy(update={"error": error}))
    return found


FIELD_LABEL = {"lambda_functions": "Lambda function", "dynamodb_tables": "DynamoDB table", "opensearch_domains": "OpenSearch domain",
               "api_gateway_ids": "API Gateway API", "s3_buckets": "S3 bucket", "sqs_queues": "SQS queue", "ecs_services": "ECS service",
               "log_groups": "log group"}


def unseen_findings(system: System, found: Discovered) -> list[Finding]:
    """Discovery that gave up: one UNKNOWN saying so, and one for each resource an earlier complete discovery found that
    this run did not see (never silently fewer resources)."""
    if not found.error:
        return []
    if found.remembered_at:
        named = (f"{len(found.unseen)} resource(s) tag discovery found at {found.remembered_at} were not seen and not checked "
                 "(each is UNKNOWN)" if found.unseen else f"every resource tag discovery found at {found.remembered_at} was seen")
    else:
        named = "no earlier complete discovery on this machine names the resources it did not see"
    out = [unknown("discovery", f"tags {system.discovery.tags}", f"{found.error}; {named}; run again when the API answers")]
    for field, name in found.unseen:
        out.append(Finding(check="discovery", resource=name, status=Status.UNKNOWN, details={"kind": field},
                           summary=f"{FIELD_LABEL[field]} found by tag discovery at {found.remembered_at}, not seen this run "
                                   f"({found.error}); not checked"))
    return out


def coverage(system: System, found: Discovered) -> list[Finding]:
    """Discovery problems, and the rule that finding no resources at all is never OK."""
    out = unseen_findings(system, found)
    named = sum(len(getattr(system, f)) for f in ("lambda_functions", "dynamodb_tables", "opensearch_domains", "api_gateway_apis",
                                                  "ecs_services", "s3_buckets", "log_groups", "sqs_queues"))
    if found.enabled and not found.error and found.count() == 0:
        out.append(Finding(check="discovery", resource=f"tags {system.discovery.tags}", status=Status.WARN, value=0,
                           summary=f"no resource in {system.region} carries the tags {system.discovery.tags}; check the region, account and tags"))
    if named + found.count() == 0 and not found.error:
        out.append(Finding(check="discovery", resource=system.name, status=Status.CRIT, value=0,
                           summary="the inventory resolves to no resources at all; nothing was checked"))
    return out


# --- do named resources exist? ------------------------------------------------------------


class Unreadable(BaseModel):
    """A named resource that could not be shown to exist: missing (``not_found``) or not readable."""

    kind: str  # lambda, dynamodb, s3, apigateway
    resource: str
    code: str  # the error code: what callers group causes by
    reason: str
    not_found: bool = False


_LOOKUP = {"lambda": ("lambda", "get_function_configuration", "FunctionName"), "dynamodb": ("dynamodb", "describe_table", "TableName"),
           "s3": ("s3", "head_bucket", "Bucket")}


def _unreadable(kind: str, name: str, exc: BaseException) -> Unreadable:
    return Unreadable(kind=kind, resource=name, code=aws.error_code(exc), reason=aws.describe_error(exc), not_found=aws.is_not_found(exc))


@aws_task(iam=["lambda:GetFunctionConfiguration", "dynamodb:DescribeTable", "s3:ListBucket", "apigateway:GET"], cache_policy=NO_CACHE)
def confirm_idle(system: System, names: dict[str, list[str]]) -> list[Unreadable]:
    """Look up resources by kind (an idle one and a missing one both have no datapoints); returns those missing or not readable."""
    out: list[Unreadable] = []
    for kind, items in names.items():
        if kind == "apigateway":
            try:
                existing = {a["name"] for a in aws.paginate(aws.client("apigateway", system.region), "get_rest_apis", "items")}
            except Exception as exc:  # every API asked about is then unreadable, with the reason
                out += [_unreadable(kind, n, exc) for n in items]
                continue
            out += [Unreadable(kind=kind, resource=n, code="NotFoundException", reason=f"GetRestApis lists no API named {n}", not_found=True)
                    for n in items if n not in existing]
            continue
        service, operation, param = _LOOKUP[kind]
        c = aws.client(service, system.region)
        out += [_unreadable(kind, n, err) for n, _, err in aws.parallel(lambda n: getattr(c, operation)(**{param: n}), items) if err is not None]
    return out


def discovered_or_inventory(system: System, found: Discovered | BaseException, fallback: str) -> tuple[Discovered, list[Finding]]:
    """Tag discovery's result (``discover``'s, or the exception its task raised); when it failed: nothing discovered, and an
    UNKNOWN finding with the reason and ``fallback`` (what the run does instead, e.g. "only the inventory's tables were checked")."""
    if isinstance(found, BaseException) or found.error:
        reason = aws.describe_error(found) if isinstance(found, BaseException) else found.error
        more = found.model_copy(update={"error": f"{reason}; {fallback}"}) if isinstance(found, Discovered) else None
        return Discovered(), unseen_findings(system, more) if more else [unknown("discovery", f"tags {system.discovery.tags}", f"{reason}; {fallback}")]
    return found, []


# --- one resolution a run: named ∪ tag-discovered, and what is declared but missing ----------------
#
# What every audit-type runbook reads: the inventory's named resources and the tag-discovered ones (the set
# daily-health checks), minus the named ones that do not exist, which are reported once (``resolution_findings``)
# and not audited further. Discovery is one paged GetResources; a named resource discovery did not see (untagged,
# or missing) is looked up once, with the call that also gives its tags where there is one. Pure parts below
# (``kind_name``, ``build_resolved``, ``Resolved``'s methods) are tested without AWS.

# kind -> the inventory's field (its items have .name) and Discovered's field
KINDS = {"lambda": ("lambda_functions", "lambda_functions"), "dynamodb": ("dynamodb_tables", "dynamodb_tables"),
         "s3": ("s3_buckets", "s3_buckets"), "sqs": ("sqs_queues", "sqs_queues"), "logs": ("log_groups", "log_groups")}
KIND_LABEL = {"lambda": "Lambda function", "dynamodb": "DynamoDB table", "s3": "S3 bucket", "sqs": "SQS queue", "logs": "log group"}
MISSING_CHECK = "inventory"


def kind_name(arn: str) -> tuple[str, str] | None:
    """(kind, name) of a function, table, bucket, queue or log group ARN; None for anything else (pure)."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return None
    service, res = parts[2], parts[5]
    if service == "lambda" and res.startswith("function:"):
        return "lambda", res.split(":")[1]
    if service == "dynamodb" and res.startswith("table/") and "/" not in res[6:]:
        return "dynamodb", res[6:]
    if service == "s3" and "/" not in res:
        return "s3", res
    if service == "sqs":
        return "sqs", res
    if service == "logs" and res.startswith("log-group:"):
        return "logs", res[len("log-group:"):].removesuffix(":*")
    return None


def named_in(system: System) -> dict[str, list[str]]:
    """The names the inventory declares, by kind."""
    return {kind: [x.name for x in getattr(system, field)] for kind, (field, _) in KINDS.items()}


class Probe(BaseModel):
    """One lookup of a named resource discovery did not see: does it exist, and its tags (None: not read); or why it could not be told."""

    exists: bool | None = None
    tags: dict[str, str] | None = None
    error: str | None = None


class Resolved(Discovered):
    """The run's resources: Discovered's tag-found names, plus, by kind, the named ones (``named``), those of them that do
    not exist (``missing``), the tags read of each ("kind:name" -> tags, from discovery or the lookup; absent: not read)
    and the named ones whose lookup failed (``unreadable``: kept in the audited set, their checks say UNKNOWN)."""

    named: dict[str, list[str]] = Field(default_factory=dict)
    missing: dict[str, list[str]] = Field(default_factory=dict)
    tags: dict[str, dict[str, str]] = Field(default_factory=dict)
    unreadable: dict[str, str] = Field(default_factory=dict)
    looked_up: list[str] = Field(default_factory=list)  # "kind:name" of the named resources looked up
    probed: bool = False

    def discovered(self, kind: str) -> list[str]:
        return list(getattr(self, KINDS[kind][1]))

    def names(self, kind: str) -> list[str]:
        """What to check of a kind: the named ones that exist (inventory order), then the tag-discovered others."""
        gone = set(self.missing.get(kind, []))
        named = [n for n in self.named.get(kind, []) if n not in gone]
        return named + [n for n in self.discovered(kind) if n not in named and n not in gone]

    def source(self, kind: str, name: str) -> str:
        """Where a name came from: "named", "discovered" or "named+discovered"."""
        where = [w for w, names in (("named", self.named.get(kind, [])), ("discovered", self.discovered(kind))) if name in names]
        return "+".join(where)

    def confirmed(self, kind: str) -> set[str]:
        """The names of a kind shown to exist: found by discovery, or named and found by their lookup."""
        looked_up = {n for n in self.named.get(kind, []) if f"{kind}:{n}" in self.looked_up and f"{kind}:{n}" not in self.unreadable}
        return set(self.discovered(kind)) | (looked_up - set(self.missing.get(kind, [])))

    def present(self, system: System) -> System:
        """The inventory without its declared-but-missing resources: what the audits read (each missing one is reported
        once by ``resolution_findings``)."""
        update = {}
        for kind, gone in self.missing.items():
            field = KINDS[kind][0]
            update[field] = [x for x in getattr(system, field) if x.name not in gone]
        return system.model_copy(update=update) if update else system


def build_resolved(system: System, mappings: list[dict[str, Any]], probes: dict[str, Probe], *, enabled: bool,
                   error: str | None = None, probed: bool = False) -> Resolved:
    """The run's resolution from what was read (pure): GetResources' mappings (ARN + tags), and the lookups of the named
    resources discovery did not see ("kind:name" -> Probe)."""
    found = classify([m["ResourceARN"] for m in mappings]) if enabled else Discovered()
    if error:  # what discovery read before it gave up (``gave_up`` adds what an earlier complete one found that it did not see)
        found = found.model_copy(update={"enabled": enabled, "error": error})
    res = Resolved(**found.model_dump(), named=named_in(system), probed=probed)
    for m in mappings:
        key = kind_name(m["ResourceARN"])
        if key:
            res.tags[f"{key[0]}:{key[1]}"] = {t["Key"]: t["Value"] for t in m.get("Tags", [])}
    for kind, names in res.named.items():
        for n in names:
            p = probes.get(f"{kind}:{n}")
            if p is None or n in res.discovered(kind):
                continue
            res.looked_up.append(f"{kind}:{n}")
            if p.error:
                res.unreadable[f"{kind}:{n}"] = p.error
            elif p.exists is False:
                res.missing.setdefault(kind, []).append(n)
            elif p.tags is not None:
                res.tags[f"{kind}:{n}"] = p.tags
    return res


def to_probe(system: System, found: Discovered, kinds: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(kind, name) of every named resource (of ``kinds``, default all) discovery did not see: none when each carries the
    discovery tags."""
    return [(kind, n) for kind, names in named_in(system).items() for n in names
            if (kinds is None or kind in kinds) and n not in getattr(found, KINDS[kind][1])]


def _tags(items: list[dict[str, str]], key: str = "Key", value: str = "Value") -> dict[str, str]:
    return {t[key]: t[value] for t in items}


@_shared_read(lambda system, kind, name, want_tags=False: (system.region, kind, name, want_tags), ok=lambda p: p.error is None)
def probe(system: System, kind: str, name: str, want_tags: bool = False) -> Probe:
    """One named resource looked up with the fewest calls that say whether it exists and, when ``want_tags``, its tags
    (a function's and a bucket's come with the lookup anyway)."""
    r = system.region
    try:
        if kind == "lambda":  # GetFunction answers both
            return Probe(exists=True, tags=aws.client("lambda", r).get_function(FunctionName=name).get("Tags") or {})
        if kind == "s3":  # GetBucketTagging too: NoSuchBucket, or NoSuchTagSet (exists, no tags)
            try:
                return Probe(exists=True, tags=_tags(aws.client("s3", r).get_bucket_tagging(Bucket=name)["TagSet"]))
            except Exception as exc:
                if aws.error_code(exc) == "NoSuchTagSet":
                    return Probe(exists=True, tags={})
                raise
        if kind == "dynamodb":
            c = aws.client("dynamodb", r)
            arn = c.describe_table(TableName=name)["Table"]["TableArn"]
            return Probe(exists=True, tags=_table_tags(c, arn) if want_tags else None)
        if kind == "sqs":
            c = aws.client("sqs", r)
            url = c.get_queue_url(QueueName=name)["QueueUrl"]
            return Probe(exists=True, tags=c.list_queue_tags(QueueUrl=url).get("Tags", {}) if want_tags else None)
        if kind == "logs":
            groups = aws.paginate(aws.client("logs", r), "describe_log_groups", "logGroups", logGroupNamePrefix=name)
            return Probe(exists=any(g["logGroupName"] == name for g in groups))
    except Exception as exc:
        if aws.is_not_found(exc):
            return Probe(exists=False)
        raise
    raise ValueError(f"no lookup for kind {kind!r}")


def _table_tags(c: Any, arn: str) -> dict[str, str]:
    """ListTagsOfResource over every page (botocore has no paginator for it)."""
    out: dict[str, str] = {}
    kwargs: dict[str, Any] = {"ResourceArn": arn}
    while True:
        page = c.list_tags_of_resource(**kwargs)
        out |= _tags(page.get("Tags", []))
        if not page.get("NextToken"):
            return out
        kwargs["NextToken"] = page["NextToken"]


# the IAM actions of the lookups, by kind (with its tags, where they are a call of their own)
LOOKUP_IAM = {"lambda": ["lambda:GetFunction"], "dynamodb": ["dynamodb:DescribeTable"], "s3": ["s3:GetBucketTagging"],
              "sqs": ["sqs:GetQueueUrl"], "logs": ["logs:DescribeLogGroups"]}
TAGS_IAM = {"dynamodb": ["dynamodb:ListTagsOfResource"], "sqs": ["sqs:ListQueueTags"]}


def resolve_once(system: System, deadline: aws.Deadline | None, kinds: tuple[str, ...], tags: bool) -> Resolved:
    """Tag discovery (one paged call), then a lookup of each named resource of ``kinds`` that discovery did not see."""
    enabled = bool(system.discovery.tags)
    mappings, error = tagged(system, deadline) if enabled else ([], None)
    seen = classify([m["ResourceARN"] for m in mappings])
    results = aws.parallel(lambda kn: probe(system, *kn, want_tags=tags), to_probe(system, seen, kinds), deadline=deadline)
    probes = {f"{k}:{n}": p if err is None else Probe(error=aws.describe_error(err)) for (k, n), p, err in results}
    res = build_resolved(system, mappings, probes, enabled=enabled, error=error, probed=True)
    return gave_up(system, res) if error else res


def resolver(kinds: tuple[str, ...], tags: bool = False, name: str = "resolve") -> Any:
    """The run's one resolution as a task that looks up the named resources of ``kinds`` (the ones its runbook reads) and
    declares just the IAM actions those lookups need; ``tags``: may read their tags (``tags=`` of the call)."""
    may_tag = tags
    iam = ["tag:GetResources"] + [a for k in kinds for a in LOOKUP_IAM[k] + (TAGS_IAM.get(k, []) if may_tag else [])]

    @aws_task(iam=iam, name=name, cache_policy=NO_CACHE)
    def resolve(system: System, deadline: aws.Deadline | None = None, tags: bool = False) -> Resolved:
        return resolve_once(system, deadline, kinds, tags and may_tag)

    resolve.__doc__ = f"The run's one resolution: tag discovery, then a lookup of each named {', '.join(kinds)} resource it did not see."
    return resolve


resolve = resolver(tuple(KINDS), tags=True)  # every kind: maintenance-audit (its required-tags check reads the tags)
resolve_tables_buckets = resolver(("dynamodb", "s3"), name="resolve-tables-buckets")  # backup-verify
resolve_metered = resolver(("lambda", "dynamodb", "s3"), name="resolve-metered")  # weekly-report (the kinds it reads metrics of)


def resolved_or_named(system: System, outcome: Resolved | BaseException) -> Resolved:
    """``resolve``'s result, or, when its task failed as a whole, the named resources only with the reason as the error."""
    if isinstance(outcome, BaseException):
        enabled = bool(system.discovery.tags)
        res = build_resolved(system, [], {}, enabled=enabled, error=f"the resolution failed: {aws.describe_error(outcome)}")
        return gave_up(system, res) if enabled else res
    return outcome


def resolution_findings(system: System, res: Resolved, status: Status = Status.WARN) -> list[Finding]:
    """Once a run: each declared-but-missing resource (not audited further), and discovery that failed (UNKNOWN: only
    the named resources were audited, never silently fewer)."""
    out = []
    if res.error and res.enabled:
        read = f"only the {res.count()} resource(s) it read and the inventory's named ones" if res.count() else "only the inventory's named resources"
        out += unseen_findings(system, res.model_copy(update={"error": f"{res.error}; {read} were checked"}))
    elif res.error:
        out.append(unknown("discovery", "named resources", f"{res.error}; only the inventory's named resources were checked"))
    for kind, names in res.missing.items():
        for n in names:
            out.append(Finding(check=MISSING_CHECK, resource=n, status=status, details={"kind": kind},
                               summary=f"{KIND_LABEL[kind]} named in the inventory but does not exist in {system.region}; not audited "
                                       f"further: fix the name in systems/{system.name}.yaml, or remove it"))
    return out
