"""diagnose-api-5xx's reads and judgements (seed 000 문제 5, seed 002 문제 2).

Reads (each a Prefect task that declares its IAM actions):

- ``read_api``: the REST API by name, its resources (GetResources, every page,
  methods embedded) and each method's integration (GetIntegration), with the
  Lambda function an integration's URI names;
- ``read_api_metrics`` / ``read_function_metrics``: AWS/ApiGateway and
  AWS/Lambda metrics of the window in one batched GetMetricData each;
- ``read_functions``: GetFunctionConfiguration (role, timeout) per function;
- ``read_function_errors``: the window's error lines per function log group,
  grouped by exception type, with masked samples and top message shapes
  (``tasks.logs.message_shape``/``top_messages``);
- ``read_roles``: each execution role's inline and attached policies, as
  statements (what the role allows).

The judgement (``rank_causes``, ``api_verdict``) is pure: the likely causes,
ranked by the evidence behind them, each with the runbook to run next.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import ApiGatewayApi, System
from opsbook.masking import mask
from opsbook.pii import mask_log
from tasks.cloudwatch import get_metric_data
from tasks.logs import (
    FILTER_LOG_EVENTS_TPS,
    top_messages,  # folds variable parts (message_shape) and counts the shapes
)

CRIT_RATE_PCT = 5.0  # seed 002 문제 2: "5% 정도의 요청에서 500 에러" is an incident
SAMPLES_PER_TYPE = 3
MAX_EVENTS = 20_000  # per log group and run; beyond it the count is a lower bound (said in the finding)
# What an error line contains (CloudWatch Logs terms are case-sensitive; moto matches everything for ?term patterns,
# which is harmless: every line is classified again here).
ERROR_FILTER = '?ERROR ?Error ?Exception ?"Task timed out" ?"Runtime exited" ?"not authorized"'

# --- metric queries (shared with tasks/bedrock.py) ------------------------------------------------------


def metric_query(qid: str, namespace: str, metric: str, dims: dict[str, str], stat: str, period: int) -> dict[str, Any]:
    return {"Id": qid, "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]},
        "Period": period, "Stat": stat}}


def run_metric_queries(region: str, specs: dict[str, tuple[str, str, dict[str, str], str, int]], start: datetime,
                       end: datetime) -> dict[str, list[tuple[datetime, float]]]:
    """specs: key -> (namespace, metric, dimensions, stat, period). One batched GetMetricData for all."""
    keys = list(specs)
    queries = [metric_query(f"q{i}", *specs[k]) for i, k in enumerate(keys)]
    res = get_metric_data(region, queries, start, end)
    return {k: res[f"q{i}"] for i, k in enumerate(keys)}


def total(points: list[tuple[datetime, float]]) -> float | None:
    return sum(v for _, v in points) if points else None


def peak(points: list[tuple[datetime, float]]) -> float | None:
    return max(v for _, v in points) if points else None


def window(minutes: int) -> tuple[datetime, datetime]:
    end = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
    return end - timedelta(minutes=minutes), end


# --- the API and its integrations ---------------------------------------------------------------------

_LAMBDA_URI = re.compile(r":lambda:path/[\d-]+/functions/(?P<arn>.+?)/invocations")


def function_from_uri(uri: str | None) -> tuple[str | None, str | None, str | None]:
    """(function name, qualifier, problem) from an integration URI; (None, None, None) when it names no Lambda function."""
    if not uri:
        return None, None, None
    m = _LAMBDA_URI.search(uri)
    if not m:
        return None, None, None
    arn = unquote(m.group("arn"))
    if "${stageVariables." in arn:
        return None, None, f"the function comes from a stage variable ({arn}); resolve it from the stage"
    parts = arn.split(":")
    if len(parts) >= 7 and parts[5] == "function":
        return parts[6], (parts[7] if len(parts) > 7 else None), None
    if len(parts) == 1:  # a bare function name
        return parts[0], None, None
    return None, None, f"unrecognised Lambda ARN in the integration URI: {arn}"


class Route(BaseModel):
    path: str
    method: str
    type: str | None = None
    uri: str | None = None
    function: str | None = None
    qualifier: str | None = None
    timeout_ms: int | None = None
    problem: str | None = None


class ApiInfo(BaseModel):
    name: str
    id: str | None = None
    found: bool = False
    error: str | None = None
    ambiguous_ids: list[str] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)

    def integrated_functions(self) -> list[str]:
        return sorted({r.function for r in self.routes if r.function})


@aws_task(iam=["apigateway:GET"], cache_policy=NO_CACHE)
def read_api(system: System, api: ApiGatewayApi, deadline: aws.Deadline) -> ApiInfo:
    """The REST API by name, its resources and their integrations (GetRestApis, GetResources, GetIntegration)."""
    c = aws.client("apigateway", system.region)
    try:
        matches = [a for a in aws.paginate(c, "get_rest_apis", "items") if a["name"] == api.name]
    except Exception as exc:  # the reason becomes an UNKNOWN finding
        return ApiInfo(name=api.name, error=aws.describe_error(exc))
    if not matches:
        return ApiInfo(name=api.name)
    info = ApiInfo(name=api.name, id=matches[0]["id"], found=True, ambiguous_ids=[m["id"] for m in matches] if len(matches) > 1 else [])
    try:
        resources = list(aws.paginate(c, "get_resources", "items", restApiId=info.id, embed=["methods"]))
    except Exception as exc:
        info.error = aws.describe_error(exc)
        return info
    pairs = [(r, m) for r in resources for m in sorted((r.get("resourceMethods") or {}))]

    def integration(rm: tuple[dict[str, Any], str]) -> dict[str, Any]:
        return c.get_integration(restApiId=info.id, resourceId=rm[0]["id"], httpMethod=rm[1])

    for (r, m), res, err in aws.parallel(integration, pairs, deadline=deadline, max_workers=8):
        if err is not None:
            if aws.is_not_found(err):
                info.routes.append(Route(path=r.get("path", "?"), method=m, problem="method has no integration"))
            else:
                info.routes.append(Route(path=r.get("path", "?"), method=m, problem=f"integration unreadable: {aws.describe_error(err)}"))
            continue
        fn, qual, problem = function_from_uri(res.get("uri"))
        tmo = res.get("timeoutInMillis")
        info.routes.append(Route(path=r.get("path", "?"), method=m, type=res.get("type"), uri=res.get("uri"), function=fn, qualifier=qual,
                                 timeout_ms=int(tmo) if tmo not in (None, "") else None, problem=problem))
    info.routes.sort(key=lambda x: (x.path, x.method))
    return info


# --- metrics -------------------------------------------------------------------------------------------


class ApiMetrics(BaseModel):
    api: str
    error: str | None = None
    requests: float | None = None
    errors_5xx: float | None = None
    errors_4xx: float | None = None
    latency_avg_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None
    integration_latency_avg_ms: float | None = None
    integration_latency_p95_ms: float | None = None
    integration_latency_max_ms: float | None = None
    dimensions: str | None = None

    @property
    def has_data(self) -> bool:
        return self.error is None and self.requests is not None

    @property
    def rate_5xx_pct(self) -> float | None:
        if not self.requests or self.errors_5xx is None:
            return None
        return 100.0 * self.errors_5xx / self.requests


def _avg(res: dict[str, list[tuple[datetime, float]]], key: str) -> float | None:
    s, n = total(res[f"{key}.sum"]), total(res[f"{key}.n"])
    return round(s / n, 1) if s is not None and n else None


def _latency_specs(ns: str, metric: str, dims: dict[str, str], key: str, minutes: int) -> dict[str, tuple[str, str, dict[str, str], str, int]]:
    whole = minutes * 60
    return {f"{key}.sum": (ns, metric, dims, "Sum", 60), f"{key}.n": (ns, metric, dims, "SampleCount", 60),
            f"{key}.p95": (ns, metric, dims, "p95", whole), f"{key}.max": (ns, metric, dims, "Maximum", whole)}


def _r(v: float | None) -> float | None:
    return round(v, 1) if v is not None else None


@aws_task(iam=["cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def read_api_metrics(system: System, apis: list[ApiGatewayApi], minutes: int = 60) -> dict[str, ApiMetrics]:
    """Count, 5XXError, 4XXError (sums), Latency and IntegrationLatency (avg, p95, max) per API.

    API Gateway publishes each metric by ApiName and by ApiName+Stage: both are asked for in the same batch and
    the ApiName series is used when it has data, else the stage's.
    """
    if not apis:
        return {}
    specs: dict[str, tuple[str, str, dict[str, str], str, int]] = {}
    for i, api in enumerate(apis):
        for v, d in enumerate(({"ApiName": api.name}, {"ApiName": api.name, "Stage": api.stage})):
            for metric in ("Count", "5XXError", "4XXError"):
                specs[f"{i}.{v}.{metric}"] = ("AWS/ApiGateway", metric, d, "Sum", 60)
            specs.update(_latency_specs("AWS/ApiGateway", "Latency", d, f"{i}.{v}.lat", minutes))
            specs.update(_latency_specs("AWS/ApiGateway", "IntegrationLatency", d, f"{i}.{v}.ilat", minutes))
    start, end = window(minutes)
    try:
        res = run_metric_queries(system.region, specs, start, end)
    except Exception as exc:
        reason = aws.describe_error(exc)
        return {a.name: ApiMetrics(api=a.name, error=reason) for a in apis}
    out = {}
    for i, api in enumerate(apis):
        v = 0 if res[f"{i}.0.Count"] or not res[f"{i}.1.Count"] else 1
        k = f"{i}.{v}"
        out[api.name] = ApiMetrics(
            api=api.name, requests=total(res[f"{k}.Count"]), errors_5xx=total(res[f"{k}.5XXError"]), errors_4xx=total(res[f"{k}.4XXError"]),
            latency_avg_ms=_avg(res, f"{k}.lat"), latency_p95_ms=_r(peak(res[f"{k}.lat.p95"])), latency_max_ms=_r(peak(res[f"{k}.lat.max"])),
            integration_latency_avg_ms=_avg(res, f"{k}.ilat"), integration_latency_p95_ms=_r(peak(res[f"{k}.ilat.p95"])),
            integration_latency_max_ms=_r(peak(res[f"{k}.ilat.max"])), dimensions="ApiName" if v == 0 else f"ApiName+Stage={api.stage}")
    return out


class FunctionMetrics(BaseModel):
    function: str
    error: str | None = None
    invocations: float | None = None
    errors: float | None = None
    throttles: float | None = None
    duration_avg_ms: float | None = None
    duration_p95_ms: float | None = None
    duration_max_ms: float | None = None


@aws_task(iam=["cloudwatch:GetMetricData"], cache_policy=NO_CACHE)
def read_function_metrics(system: System, functions: list[str], minutes: int = 60) -> dict[str, FunctionMetrics]:
    """Invocations, Errors, Throttles (sums) and Duration (avg, p95, max) per function."""
    if not functions:
        return {}
    specs: dict[str, tuple[str, str, dict[str, str], str, int]] = {}
    for i, fn in enumerate(functions):
        d = {"FunctionName": fn}
        for metric in ("Invocations", "Errors", "Throttles"):
            specs[f"{i}.{metric}"] = ("AWS/Lambda", metric, d, "Sum", 60)
        specs.update(_latency_specs("AWS/Lambda", "Duration", d, f"{i}.dur", minutes))
    start, end = window(minutes)
    try:
        res = run_metric_queries(system.region, specs, start, end)
    except Exception as exc:
        reason = aws.describe_error(exc)
        return {f: FunctionMetrics(function=f, error=reason) for f in functions}
    return {fn: FunctionMetrics(function=fn, invocations=total(res[f"{i}.Invocations"]), errors=total(res[f"{i}.Errors"]),
                                throttles=total(res[f"{i}.Throttles"]), duration_avg_ms=_avg(res, f"{i}.dur"),
                                duration_p95_ms=_r(peak(res[f"{i}.dur.p95"])), duration_max_ms=_r(peak(res[f"{i}.dur.max"])))
            for i, fn in enumerate(functions)}


# --- functions and their execution roles ------------------------------------------------------------------


class FunctionInfo(BaseModel):
    function: str
    exists: bool = False
    error: str | None = None
    role_arn: str | None = None
    timeout_s: int | None = None
    memory_mb: int | None = None

    @property
    def role_name(self) -> str | None:
        return self.role_arn.rsplit("/", 1)[-1] if self.role_arn else None


@aws_task(iam=["lambda:GetFunctionConfiguration"], cache_policy=NO_CACHE)
def read_functions(system: System, functions: list[str], deadline: aws.Deadline) -> dict[str, FunctionInfo]:
    c = aws.client("lambda", system.region)
    out: dict[str, FunctionInfo] = {}
    for fn, cfg, err in aws.parallel(lambda n: c.get_function_configuration(FunctionName=n), functions, deadline=deadline):
        if err is not None:
            out[fn] = FunctionInfo(function=fn, error=None if aws.is_not_found(err) else aws.describe_error(err))
        else:
            out[fn] = FunctionInfo(function=fn, exists=True, role_arn=cfg.get("Role"), timeout_s=cfg.get("Timeout"), memory_mb=cfg.get("MemorySize"))
    return out


class Statement(BaseModel):
    policy: str
    effect: str
    actions: list[str] = Field(default_factory=list)
    not_actions: list[str] = Field(default_factory=list)
    resources: list[str] = Field(default_factory=list)
    conditional: bool = False

    def covers(self, action: str, resource: str | None) -> bool:
        a = action.lower()
        if self.actions and not any(fnmatch.fnmatchcase(a, p.lower()) for p in self.actions):
            return False
        if self.not_actions and any(fnmatch.fnmatchcase(a, p.lower()) for p in self.not_actions):
            return False
        if resource is None:
            return True
        return any(fnmatch.fnmatchcase(resource, p) for p in self.resources)

    def text(self) -> str:
        acts = ", ".join(self.actions) or f"all but {', '.join(self.not_actions)}"
        cond = " (with conditions)" if self.conditional else ""
        return f"{self.effect} {acts} on {', '.join(self.resources) or '*'}{cond} [{self.policy}]"


class RolePolicies(BaseModel):
    role: str
    error: str | None = None
    inline: list[str] = Field(default_factory=list)
    attached: list[str] = Field(default_factory=list)
    statements: list[Statement] = Field(default_factory=list)

    def allows(self, action: str, resource: str | None) -> tuple[list[Statement], list[Statement]]:
        """(Allow statements covering it, Deny statements covering it)."""
        allow = [s for s in self.statements if s.effect == "Allow" and s.covers(action, resource)]
        deny = [s for s in self.statements if s.effect == "Deny" and s.covers(action, resource)]
        return allow, deny


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    return [v] if isinstance(v, str) else [str(x) for x in v]


def statements_of(policy: str, doc: Any) -> list[Statement]:
    if isinstance(doc, str):
        doc = json.loads(unquote(doc))
    stmts = doc.get("Statement", [])
    if isinstance(stmts, dict):
        stmts = [stmts]
    return [Statement(policy=policy, effect=s.get("Effect", "Allow"), actions=_as_list(s.get("Action")), not_actions=_as_list(s.get("NotAction")),
                      resources=_as_list(s.get("Resource")) or (["*"] if "NotResource" not in s else []), conditional=bool(s.get("Condition")))
            for s in stmts]


def read_role(region: str, role: str) -> RolePolicies:
    c = aws.client("iam", region)
    out = RolePolicies(role=role)
    attached = list(aws.paginate(c, "list_attached_role_policies", "AttachedPolicies", RoleName=role))
    out.inline = list(aws.paginate(c, "list_role_policies", "PolicyNames", RoleName=role))
    out.attached = [p["PolicyName"] for p in attached]
    for name in out.inline:
        out.statements += statements_of(name, c.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
    for p in attached:
        version = c.get_policy(PolicyArn=p["PolicyArn"])["Policy"]["DefaultVersionId"]
        doc = c.get_policy_version(PolicyArn=p["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
        out.statements += statements_of(p["PolicyName"], doc)
    return out


@aws_task(iam=["iam:ListAttachedRolePolicies", "iam:ListRolePolicies", "iam:GetRolePolicy", "iam:GetPolicy", "iam:GetPolicyVersion"],
          cache_policy=NO_CACHE)
def read_roles(system: System, functions: dict[str, FunctionInfo], deadline: aws.Deadline) -> dict[str, RolePolicies]:
    """The execution roles of the functions (each role read once): inline and attached policies as statements."""
    roles = sorted({f.role_name for f in functions.values() if f.role_name})
    out = {}
    for role, res, err in aws.parallel(lambda r: read_role(system.region, r), roles, deadline=deadline, max_workers=4):
        out[role] = res if err is None else RolePolicies(role=role, error=aws.describe_error(err))
    return out


# --- error lines by exception type ---------------------------------------------------------------------------

TIMEOUT = "Task timed out"
UNTYPED = "ERROR (no exception type)"
_TIMEOUT_RE = re.compile(r"Task timed out after ([\d.]+) seconds")
_AWS_CODE_RE = re.compile(r"An error occurred \((\w+)\)")
_RUNTIME_RE = re.compile(r"\b(Runtime\.\w+)")
_EXC_RE = re.compile(r"\b([A-Z][A-Za-z0-9_]*(?:Exception|Error|Fault))\b")
_DENIED_RE = re.compile(r"not authorized to perform:? (?P<action>[\w-]+:[\w*-]+)(?: on resource:? (?P<resource>[^\s,;]+))?")


def error_type(line: str) -> str | None:
    """The exception type a log line reports, or None for a line that is not an error."""
    if _TIMEOUT_RE.search(line):
        return TIMEOUT
    m = _AWS_CODE_RE.search(line)
    if m:
        return m.group(1)
    m = _RUNTIME_RE.search(line)
    if m:
        return m.group(1)
    if "Runtime exited" in line:
        return "Runtime.ExitError"
    m = _EXC_RE.search(line)
    if m:
        return m.group(1)
    if "ERROR" in line or "not authorized" in line:
        return UNTYPED
    return None


def is_access_denied(kind: str) -> bool:
    return kind in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "AuthorizationErrorException") or kind.endswith("AccessDenied")


class ErrorType(BaseModel):
    type: str
    count: int = 0
    samples: list[str] = Field(default_factory=list)
    top: list[dict[str, Any]] = Field(default_factory=list)
    denied: list[dict[str, Any]] = Field(default_factory=list)  # AccessDenied: action, resource, count
    timeout_after_s: float | None = None


class FunctionErrors(BaseModel):
    function: str
    group: str
    error: str | None = None
    missing_group: bool = False
    total: int = 0
    lines_read: int = 0
    truncated: bool = False
    types: list[ErrorType] = Field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(t.count for t in self.types if t.type == kind)


def classify(function: str, group: str, messages: list[str], lines_read: int, truncated: bool) -> FunctionErrors:
    """Group error lines by exception type; masked samples and top shapes per type."""
    by: dict[str, list[str]] = {}
    denied: dict[str, Counter[tuple[str, str | None]]] = {}
    timeouts: dict[str, float] = {}
    for raw in messages:
        line = raw.strip()
        kind = error_type(line)
        if kind is None:
            continue
        masked = mask_log(line)[:300]
        by.setdefault(kind, []).append(masked)
        if is_access_denied(kind) or (kind == UNTYPED and "not authorized" in line):
            m = _DENIED_RE.search(line)
            if m:
                denied.setdefault(kind, Counter())[(m.group("action"), (m.group("resource") or "").rstrip(".") or None)] += 1
        if kind == TIMEOUT:
            m = _TIMEOUT_RE.search(line)
            if m:
                timeouts[kind] = max(timeouts.get(kind, 0.0), float(m.group(1)))
    types = []
    for kind, lines in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        types.append(ErrorType(type=kind, count=len(lines), samples=lines[:SAMPLES_PER_TYPE], top=top_messages(lines),
                               denied=[{"action": a, "resource": r, "count": n} for (a, r), n in (denied.get(kind) or Counter()).most_common()],
                               timeout_after_s=timeouts.get(kind)))
    return FunctionErrors(function=function, group=group, total=sum(t.count for t in types), lines_read=lines_read, truncated=truncated, types=types)


def read_events(region: str, group: str, pattern: str, start: datetime, end: datetime, max_events: int = MAX_EVENTS) -> tuple[list[dict[str, Any]], bool]:
    """Every matching event (timestamp, message) of [start, end) over all pages (up to max_events): (events, truncated)."""
    c = aws.client("logs", region)
    lim = aws.limiter("filter_log_events", FILTER_LOG_EVENTS_TPS)
    kwargs: dict[str, Any] = dict(logGroupName=group, filterPattern=pattern, startTime=int(start.timestamp() * 1000),
                                  endTime=int(end.timestamp() * 1000) - 1)
    out: list[dict[str, Any]] = []
    while True:
        lim.acquire()
        page = c.filter_log_events(**kwargs)
        out += [{"timestamp": e["timestamp"], "message": e["message"]} for e in page.get("events", [])]
        if len(out) >= max_events:
            return out[:max_events], True
        token = page.get("nextToken")
        if not token or token == kwargs.get("nextToken"):
            return out, False
        kwargs["nextToken"] = token


@aws_task(iam=["logs:FilterLogEvents"], cache_policy=NO_CACHE)
def read_function_errors(system: System, functions: list[str], deadline: aws.Deadline, minutes: int = 60) -> dict[str, FunctionErrors]:
    """The window's error lines of each function's log group, grouped by exception type."""
    groups = {f.name: f.log_group_name for f in system.lambda_functions}
    start, end = window(minutes)

    def one(fn: str) -> FunctionErrors:
        group = groups.get(fn, f"/aws/lambda/{fn}")
        events, truncated = read_events(system.region, group, ERROR_FILTER, start, end)
        return classify(fn, group, [e["message"] for e in events], len(events), truncated)

    out = {}
    for fn, res, err in aws.parallel(one, functions, deadline=deadline, max_workers=8):
        group = groups.get(fn, f"/aws/lambda/{fn}")
        if err is None:
            out[fn] = res
        elif aws.is_not_found(err):
            out[fn] = FunctionErrors(function=fn, group=group, missing_group=True,
                                     error="log group does not exist (the function never ran, or logs elsewhere)")
        else:
            out[fn] = FunctionErrors(function=fn, group=group, error=aws.describe_error(err))
    return out


# --- judgement -----------------------------------------------------------------------------------------------

# exception type -> (cause, next step)
_KNOWN = {
    "ProvisionedThroughputExceededException": ("DynamoDB throttling", "remediate-dynamodb-throttling"),
    "ThrottlingException": ("throttled by a downstream AWS API (Bedrock: see diagnose-bedrock-throttling)", "diagnose-bedrock-throttling"),
    "TooManyRequestsException": ("Lambda concurrency throttling", "raise the function's reserved concurrency or the account's concurrent executions quota"),
    "RequestLimitExceeded": ("throttled by a downstream AWS API", "add backoff with jitter; request a quota increase"),
}


class Cause(BaseModel):
    cause: str
    weight: float
    function: str | None = None
    evidence: str
    next: str
    kind: str


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "n/a"
    return f"{v:g}{unit}" if isinstance(v, float) and v != int(v) else f"{int(v)}{unit}"


def rank_causes(api: ApiGatewayApi, info: ApiInfo, metrics: ApiMetrics | None, functions: list[str], configs: dict[str, FunctionInfo],
                fmetrics: dict[str, FunctionMetrics], errors: dict[str, FunctionErrors], roles: dict[str, RolePolicies]) -> list[Cause]:
    """The likely causes of the API's 5XX, most evidence first."""
    causes: list[Cause] = []
    integ_s = min([api.integration_timeout_s] + [r.timeout_ms / 1000 for r in info.routes if r.function and r.timeout_ms])
    for fn in functions:
        cfg, fm, fe = configs.get(fn), fmetrics.get(fn), errors.get(fn)
        if cfg is not None and not cfg.exists and cfg.error is None:
            routes = [f"{r.method} {r.path}" for r in info.routes if r.function == fn]
            causes.append(Cause(cause="integration names a function that does not exist", weight=1e9, function=fn, kind="missing-function",
                                evidence=f"{fn} not found (routes: {', '.join(routes) or 'inventory only'})",
                                next="fix the integration URI or deploy the function; emergency-rollback if a release removed it"))
            continue
        timeout_s = cfg.timeout_s if cfg else None
        n_timeouts = fe.count(TIMEOUT) if fe else 0
        dmax = fm.duration_max_ms if fm else None
        near_integ = dmax is not None and dmax >= 0.95 * integ_s * 1000
        near_fn = dmax is not None and timeout_s is not None and dmax >= 0.95 * timeout_s * 1000
        ilat = metrics.integration_latency_max_ms if metrics else None
        api_cut = ilat is not None and ilat >= 0.95 * integ_s * 1000
        if n_timeouts or near_fn or near_integ:
            beyond = timeout_s is not None and timeout_s > integ_s
            ev = [f"{n_timeouts} 'Task timed out' lines" if n_timeouts else None,
                  f"Duration max {_fmt(dmax, ' ms')} vs function timeout {timeout_s} s and the API's {integ_s:g} s integration timeout",
                  f"IntegrationLatency max {_fmt(ilat, ' ms')}" if api_cut else None]
            what = "timeouts: the function runs into its timeout"
            if beyond and (near_integ or api_cut):
                what = (f"timeouts: the API's {integ_s:g} s integration timeout ends requests before the function's own {timeout_s} s "
                        "timeout (clients get 504)")
            causes.append(Cause(cause=what, weight=max(n_timeouts, 1), function=fn, kind="timeout", evidence="; ".join(e for e in ev if e),
                                next=("remediate-lambda-timeout (memory/CPU, slow downstream calls); behind API Gateway a timeout above "
                                      f"{integ_s:g} s does not help: make the work faster or asynchronous")))
        if fm is not None and fm.throttles:
            causes.append(Cause(cause="Lambda throttling (concurrency limit)", weight=fm.throttles, function=fn, kind="lambda-throttles",
                                evidence=f"Throttles {_fmt(fm.throttles)} in the window (Invocations {_fmt(fm.invocations)})",
                                next="raise the function's reserved concurrency or the account's concurrent executions quota; smooth bursts"))
        if fe is None or fe.error is not None:
            continue
        for t in fe.types:
            if t.type == TIMEOUT:
                continue
            if is_access_denied(t.type) or t.denied:
                role = cfg.role_name if cfg else None
                rp = roles.get(role) if role else None
                notes = []
                for d in t.denied or [{"action": None, "resource": None, "count": t.count}]:
                    if d["action"] is None:
                        notes.append("the lines name no action")
                    elif rp is None or rp.error:
                        notes.append(f"{d['action']} on {d['resource'] or '?'}: role {role or '?'} policies unreadable"
                                     + (f" ({rp.error})" if rp and rp.error else ""))
                    else:
                        allow, deny = rp.allows(d["action"], d["resource"])
                        if deny:
                            notes.append(f"{d['action']} on {d['resource']}: explicitly denied by {deny[0].policy}")
                        elif allow:
                            notes.append(f"{d['action']} on {d['resource']}: allowed by {allow[0].policy} (look for a permissions boundary, "
                                         "an SCP, a resource or KMS key policy, or a condition)")
                        else:
                            notes.append(f"{d['action']} on {d['resource']}: no statement of role {role} "
                                         f"({', '.join(rp.inline + rp.attached) or 'no policies'}) allows it")
                causes.append(Cause(cause=f"permissions: {t.type}", weight=t.count, function=fn, kind="permissions",
                                    evidence=f"{t.count} lines; " + "; ".join(notes),
                                    next=f"grant the missing action to the execution role {role or '?'} (a reviewed IAM change), then re-run this diagnosis"))
                continue
            if t.type in _KNOWN:
                what, nxt = _KNOWN[t.type]
                causes.append(Cause(cause=what, weight=t.count, function=fn, kind=t.type, evidence=f"{t.count} {t.type} lines", next=nxt))
                continue
            sample = t.samples[0] if t.samples else ""
            causes.append(Cause(cause=f"function errors of type {t.type}", weight=t.count, function=fn, kind="code",
                                evidence=f"{t.count} lines, e.g. {sample[:200]}",
                                next="fix the code and redeploy; if it began with the latest release, roll back with emergency-rollback"))
    fn_caused = sum(c.weight for c in causes)
    if metrics is not None and metrics.has_data and (metrics.errors_5xx or 0) > 0 and not fn_caused:
        causes.append(Cause(cause="API-side 5XX with no function errors", weight=metrics.errors_5xx or 0, kind="api-side",
                            evidence=f"{_fmt(metrics.errors_5xx)} 5XX while the integrated functions log no errors, timeouts or throttles",
                            next=("check the integration (type, URI, credentials), the Lambda resource policy allowing apigateway.amazonaws.com "
                                  "to invoke, the API's throttling/WAF, and the stage's execution logs (API-Gateway-Execution-Logs_<id>/<stage>)")))
    for r in info.routes:
        if r.problem and "stage variable" in r.problem:
            causes.append(Cause(cause="integration not resolvable by this runbook", weight=0, kind="unresolved", evidence=f"{r.method} {r.path}: {r.problem}",
                                next="name the function in the inventory's ApiGatewayApi.functions"))
    return sorted(causes, key=lambda c: -c.weight)


def api_verdict(api: ApiGatewayApi, info: ApiInfo, metrics: ApiMetrics | None, causes: list[Cause], blind: list[str],
                crit_rate_pct: float = CRIT_RATE_PCT) -> Finding:
    check = "api-5xx-verdict"
    if info.error and not info.found:
        return unknown(check, api.name, f"the API could not be read: {info.error}")
    if not info.found:
        return Finding(check=check, resource=api.name, status=Status.CRIT, value=None,
                       summary="CRIT: named in the inventory but no REST API has that name: every request fails. "
                               "Next: check the region and the name; emergency-rollback if a release removed it",
                       details={"causes": [], "blind_spots": blind})
    ranked = [c.model_dump() for c in causes]
    rate = metrics.rate_5xx_pct if metrics else None
    if metrics is not None and metrics.has_data:
        traffic = f"{_fmt(metrics.errors_5xx)} 5XX / {_fmt(metrics.requests)} requests ({rate:.1f}%)" if rate is not None else "no requests"
        if rate is not None and rate >= crit_rate_pct:
            status = Status.CRIT
        elif (metrics.errors_5xx or 0) > 0 or causes:
            status = Status.WARN
        else:
            status = Status.OK
    else:
        reason = metrics.error if metrics and metrics.error else (
            "no AWS/ApiGateway datapoints for ApiName=" + api.name + " in the window (no traffic, or CloudWatch knows the API by another name)")
        traffic = f"API metrics unavailable: {reason}"
        status = Status.WARN if any(c.kind != "unresolved" for c in causes) else Status.UNKNOWN
    if status is Status.OK and blind:
        status = Status.UNKNOWN  # no 5XX, but part of the evidence could not be read
    if status is Status.UNKNOWN:
        summary = f"UNKNOWN: {traffic}; no cause found in what could be read"
    elif status is Status.OK:
        summary = f"OK: {traffic}; the integrated functions show no errors, timeouts or throttles"
    else:
        lead = [c for c in causes if c.kind != "unresolved"]
        if lead:
            c = lead[0]
            summary = (f"{status.value}: {traffic}. Likely cause: {c.cause}" + (f" in {c.function}" if c.function else "")
                       + f" ({c.evidence[:200]}). Next: {c.next}")
            if len(lead) > 1:
                summary += ". Also: " + "; ".join(f"{x.cause}" + (f" in {x.function}" if x.function else "") for x in lead[1:4])
        else:
            summary = f"{status.value}: {traffic}; no cause found in the functions' logs and metrics"
    if blind:
        summary += f". {len(blind)} blind spot(s): {', '.join(blind[:3])}"
    return Finding(check=check, resource=api.name, status=status, value=round(rate, 2) if rate is not None else None, summary=mask(summary)[:900],
                   details={"causes": ranked, "blind_spots": blind, "rate_5xx_pct": rate, "metrics": metrics.model_dump() if metrics else None,
                            "api_id": info.id})


def api_findings(api: ApiGatewayApi, info: ApiInfo, metrics: ApiMetrics | None, functions: list[str]) -> list[Finding]:
    out: list[Finding] = []
    if info.found:
        routes = [f"{r.method} {r.path} -> {r.function or r.type or '?'}" for r in info.routes]
        problems = [f"{r.method} {r.path}: {r.problem}" for r in info.routes if r.problem and r.problem != "method has no integration"]
        extra = [f for f in info.integrated_functions() if f not in api.functions]
        summary = f"id {info.id}; {len(info.routes)} methods; functions: {', '.join(functions) or 'none'}"
        if extra:
            summary += f" ({', '.join(extra)} found through the integrations only)"
        if info.ambiguous_ids:
            summary += f"; {len(info.ambiguous_ids)} REST APIs share this name ({', '.join(info.ambiguous_ids)}): the first is read"
        status = Status.WARN if (info.ambiguous_ids or problems) else Status.OK
        if info.error:
            status, summary = Status.UNKNOWN, f"id {info.id}; resources unreadable: {info.error}; functions from the inventory: {', '.join(functions) or 'none'}"
        out.append(Finding(check="api-integrations", resource=api.name, status=status, value=len(info.routes), summary=summary[:600],
                           details={"routes": routes, "problems": problems, "functions": functions}))
    if metrics is not None and info.found:
        if metrics.error:
            out.append(unknown("api-metrics", api.name, metrics.error))
        elif not metrics.has_data:
            out.append(Finding(check="api-metrics", resource=api.name, status=Status.UNKNOWN, summary=f"no AWS/ApiGateway datapoints for ApiName={api.name} in the window"))
        else:
            m = metrics
            rate = m.rate_5xx_pct
            out.append(Finding(check="api-metrics", resource=api.name, status=Status.OK, value=round(rate, 2) if rate is not None else None,
                               summary=(f"{_fmt(m.requests)} requests, 5XX {_fmt(m.errors_5xx)} ({_fmt(round(rate, 2) if rate is not None else None, '%')}), "
                                        f"4XX {_fmt(m.errors_4xx)}; Latency avg/p95/max {_fmt(m.latency_avg_ms)}/{_fmt(m.latency_p95_ms)}/{_fmt(m.latency_max_ms)} ms; "
                                        f"IntegrationLatency avg/p95/max {_fmt(m.integration_latency_avg_ms)}/{_fmt(m.integration_latency_p95_ms)}/"
                                        f"{_fmt(m.integration_latency_max_ms)} ms"),
                               details=m.model_dump()))
    return out


def function_findings(fn: str, group: str, cfg: FunctionInfo | None, fm: FunctionMetrics | None, fe: FunctionErrors | None,
                      roles: dict[str, RolePolicies], integ_s: int) -> list[Finding]:
    out: list[Finding] = []
    # a piece that was never read (its task failed) is a blind spot, never silence
    if cfg is None:
        out.append(unknown("lambda-config", fn, "not read (the read task failed)"))
    if fe is None:
        out.append(unknown("lambda-errors-by-type", group, "not read (the read task failed)"))
    if fm is None:
        out.append(unknown("lambda-metrics", fn, "not read (the read task failed)"))
    if cfg is not None:
        if cfg.error:
            out.append(unknown("lambda-config", fn, cfg.error))
        elif not cfg.exists:
            out.append(Finding(check="lambda-config", resource=fn, status=Status.CRIT, summary="the API integrates it but the function does not exist"))
        else:
            warn = cfg.timeout_s is not None and cfg.timeout_s > integ_s
            out.append(Finding(check="lambda-config", resource=fn, status=Status.OK, value=cfg.timeout_s,
                               summary=f"timeout {cfg.timeout_s} s, memory {cfg.memory_mb} MB, role {cfg.role_name}"
                                       + (f" (timeout above the API's {integ_s} s integration timeout)" if warn else ""),
                               details=cfg.model_dump()))
    if fe is not None:
        if fe.error:
            out.append(unknown("lambda-errors-by-type", fe.group, fe.error))
        else:
            summary = f"{fe.total} error lines in the window"
            if fe.types:
                summary += ": " + "; ".join(f"{t.type} ×{t.count}" for t in fe.types[:5])
                summary += f"; e.g. {fe.types[0].samples[0][:160]}" if fe.types[0].samples else ""
            if fe.truncated:
                summary += f" (first {fe.lines_read} lines read: a lower bound)"
            out.append(Finding(check="lambda-errors-by-type", resource=fe.group, status=Status.WARN if fe.total else Status.OK, value=fe.total,
                               summary=mask(summary)[:600], details={"types": [t.model_dump() for t in fe.types], "truncated": fe.truncated}))
    if fm is not None:
        if fm.error:
            out.append(unknown("lambda-metrics", fn, fm.error))
        elif fm.invocations is None and fm.errors is None and fm.duration_max_ms is None:
            # Lambda publishes Invocations for every invocation: no datapoint at all is no invocation
            out.append(Finding(check="lambda-metrics", resource=fn, status=Status.OK, value=0,
                               summary="not invoked in the window (no AWS/Lambda datapoints)", details=fm.model_dump()))
        else:
            t_ms = (cfg.timeout_s or 0) * 1000 if cfg else 0
            near = bool(fm.duration_max_ms and t_ms and fm.duration_max_ms >= 0.95 * t_ms)
            status = Status.WARN if (fm.errors or fm.throttles or near) else Status.OK
            out.append(Finding(check="lambda-metrics", resource=fn, status=status, value=fm.errors,
                               summary=(f"Invocations {_fmt(fm.invocations)}, Errors {_fmt(fm.errors)}, Throttles {_fmt(fm.throttles)}; Duration "
                                        f"avg/p95/max {_fmt(fm.duration_avg_ms)}/{_fmt(fm.duration_p95_ms)}/{_fmt(fm.duration_max_ms)} ms"
                                        + (f" vs timeout {cfg.timeout_s} s" if cfg and cfg.timeout_s else "") + (" (at the timeout)" if near else "")),
                               details=fm.model_dump()))
    if cfg is not None and cfg.role_name:
        rp = roles.get(cfg.role_name)
        if rp is None:
            out.append(unknown("lambda-role", fn, f"role {cfg.role_name} not read (the read task failed)"))
        elif rp.error:
            out.append(unknown("lambda-role", fn, f"role {rp.role}: {rp.error}"))
        else:
            allows = [s.text() for s in rp.statements]
            denied = [d for t in (fe.types if fe and not fe.error else []) for d in t.denied]
            status = Status.WARN if denied else Status.OK
            summary = f"role {rp.role}: inline {rp.inline or 'none'}, attached {rp.attached or 'none'}; allows: " + ("; ".join(allows[:6]) or "nothing")
            if denied:
                summary = f"AccessDenied in the logs for {', '.join(sorted({d['action'] for d in denied}))}; " + summary
            out.append(Finding(check="lambda-role", resource=fn, status=status, value=len(rp.statements), summary=mask(summary)[:700],
                               details={"role": rp.role, "statements": allows, "denied": denied}))
    return out
