"""Scenarios for the two read-only diagnoses of issue 7: diagnose-api-5xx and
diagnose-bedrock-throttling.

The seed creates each inventory API as an empty REST API and every function
with one shared role; these helpers add what a real incident leaves behind:

- ``api_integrations``: resources and methods whose AWS_PROXY integrations
  name Lambda functions (GetResources/GetIntegration read them back);
- ``execution_role``: a named execution role with inline and managed policies,
  set on a function (GetFunctionConfiguration's Role);
- ``api_metrics`` / ``function_metrics``: what API Gateway and Lambda publish
  (AWS/ApiGateway, AWS/Lambda), one datapoint a minute over the last hour;
  percentiles are answered through ``sandbox.metrics.enable_percentiles``;
- ``function_logs``: log lines of a kind (``LINES``) inside the window and a
  few older ones that must not be counted;
- ``metrics_unreadable``: GetMetricData answers AccessDenied (moto's
  CloudWatch backend of the region, until the next sandbox reset);
- ``enable_bedrock_quotas``: moto implements Service Quotas for ``vpc`` only
  and has no ListServiceQuotas; this teaches its in-process backend the
  Bedrock quotas (names in AWS's format, values of a fresh account outside
  us-east-1, sandbox-made quota codes: AWS does not publish Bedrock's, they
  differ by model) with NextToken paging (5 a page, so paging is exercised).
  ``bedrock_quota_values`` sets applied values; ``quotas_unreadable`` makes
  the region's Service Quotas answer AccessDeniedException.

The composite scenarios (``hr_5xx_keyerror``, ``todo_timeouts``,
``hr_access_denied``, ``healthy_api``, ``bedrock_throttled``) are what the
tests and the demo apply; each returns the numbers a test asserts on.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.inventory import ApiGatewayApi, System
from sandbox.metrics import enable_percentiles
from sandbox.server import ACCOUNT_ID, Sandbox, sandbox_client

# --- API Gateway integrations --------------------------------------------------------------


def _api(system: System, api: str | None) -> ApiGatewayApi:
    apis = {a.name: a for a in system.api_gateway_apis}
    if not apis:
        raise ValueError(f"{system.name} names no API Gateway API")
    if api is None:
        return next(iter(apis.values()))
    if api not in apis:
        raise ValueError(f"{system.name} has no API {api!r}; it names {sorted(apis)}")
    return apis[api]


def rest_api_id(sb: Sandbox, system: System, name: str) -> str:
    for a in sandbox_client(sb, "apigateway", system.region).get_rest_apis(limit=500)["items"]:
        if a["name"] == name:
            return a["id"]
    raise ValueError(f"no REST API named {name!r} in the sandbox (seed the system first)")


def lambda_uri(region: str, function: str, qualifier: str | None = None) -> str:
    fn_arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{function}" + (f":{qualifier}" if qualifier else "")
    return f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{fn_arn}/invocations"


def api_integrations(sb: Sandbox, system: System, routes: list[tuple[str, str, str | None]], api: str | None = None,
                     qualifier: str | None = None, timeout_ms: int | None = None) -> dict[str, Any]:
    """Routes (path part, HTTP method, function or None for a MOCK) under the API's root resource."""
    a = _api(system, api)
    gw = sandbox_client(sb, "apigateway", system.region)
    api_id = rest_api_id(sb, system, a.name)
    root = next(r["id"] for r in gw.get_resources(restApiId=api_id)["items"] if r["path"] == "/")
    made = []
    for part, method, fn in routes:
        rid = gw.create_resource(restApiId=api_id, parentId=root, pathPart=part)["id"]
        gw.put_method(restApiId=api_id, resourceId=rid, httpMethod=method, authorizationType="NONE")
        if fn is None:
            gw.put_integration(restApiId=api_id, resourceId=rid, httpMethod=method, type="MOCK")
        else:
            kw: dict[str, Any] = {"timeoutInMillis": timeout_ms} if timeout_ms else {}
            gw.put_integration(restApiId=api_id, resourceId=rid, httpMethod=method, type="AWS_PROXY", integrationHttpMethod="POST",
                               uri=lambda_uri(system.region, fn, qualifier), **kw)
        made.append({"path": f"/{part}", "method": method, "function": fn})
    return {"api": a.name, "id": api_id, "routes": made}


def delete_api(sb: Sandbox, system: System, api: str | None = None) -> dict[str, Any]:
    a = _api(system, api)
    sandbox_client(sb, "apigateway", system.region).delete_rest_api(restApiId=rest_api_id(sb, system, a.name))
    return {"resource": a.name}


# --- execution roles -------------------------------------------------------------------------


def policy(actions: list[str], resources: list[str], effect: str = "Allow") -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": effect, "Action": actions, "Resource": resources}]}


def execution_role(sb: Sandbox, system: System, functions: list[str], role_name: str, inline: dict[str, dict[str, Any]] | None = None,
                   managed: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A role with inline policies and customer-managed policies (created, attached), set on the functions."""
    iam = sandbox_client(sb, "iam", system.region)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    for name, doc in (inline or {}).items():
        iam.put_role_policy(RoleName=role_name, PolicyName=name, PolicyDocument=json.dumps(doc))
    for name, doc in (managed or {}).items():
        parn = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
        iam.attach_role_policy(RoleName=role_name, PolicyArn=parn)
    lam = sandbox_client(sb, "lambda", system.region)
    for fn in functions:
        lam.update_function_configuration(FunctionName=fn, Role=arn)
    return {"role": role_name, "arn": arn}


def set_timeout(sb: Sandbox, system: System, function: str, timeout_s: int) -> None:
    sandbox_client(sb, "lambda", system.region).update_function_configuration(FunctionName=function, Timeout=timeout_s)


# --- metrics -----------------------------------------------------------------------------------


def _minutes(now: datetime, n: int, within: int = 55) -> list[datetime]:
    """n timestamps spread over the last ``within`` minutes (oldest first), at least a minute from now."""
    n = max(1, n)
    return [now - timedelta(minutes=2 + (within - 2) * (n - 1 - i) / max(1, n - 1)) for i in range(n)]


def _spread(total: float, parts: int) -> list[float]:
    base, rest = divmod(int(round(total)), parts)
    return [float(base + (1 if i < rest else 0)) for i in range(parts)]


def _put(sb: Sandbox, system: System, namespace: str, data: list[dict[str, Any]]) -> None:
    cw = sandbox_client(sb, "cloudwatch", system.region)
    for i in range(0, len(data), 500):
        cw.put_metric_data(Namespace=namespace, MetricData=data[i : i + 500])


def api_metrics(sb: Sandbox, system: System, api: str | None = None, requests: int = 300, errors_5xx: int = 0, errors_4xx: int = 0,
                latency_ms: tuple[float, ...] = (40.0, 60.0, 80.0, 120.0), integration_latency_ms: tuple[float, ...] | None = None,
                minutes: int = 10, stage: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Count/5XXError/4XXError (sums) and Latency/IntegrationLatency (raw values) over ``minutes`` datapoints in the last hour,
    by ApiName (or by ApiName and ``stage``)."""
    enable_percentiles()
    a = _api(system, api)
    now = now or datetime.now(timezone.utc)
    dims = [{"Name": "ApiName", "Value": a.name}] + ([{"Name": "Stage", "Value": stage}] if stage else [])
    integ = integration_latency_ms or tuple(max(1.0, v - 15.0) for v in latency_ms)
    data: list[dict[str, Any]] = []
    ts = _minutes(now, minutes)
    for t, c, e5, e4 in zip(ts, _spread(requests, minutes), _spread(errors_5xx, minutes), _spread(errors_4xx, minutes)):
        data += [{"MetricName": "Count", "Dimensions": dims, "Timestamp": t, "Value": c, "Unit": "Count"},
                 {"MetricName": "5XXError", "Dimensions": dims, "Timestamp": t, "Value": e5, "Unit": "Count"},
                 {"MetricName": "4XXError", "Dimensions": dims, "Timestamp": t, "Value": e4, "Unit": "Count"}]
    for i, t in enumerate(ts):  # each latency value lands in one of the minutes
        lat = [v for k, v in enumerate(latency_ms) if k % minutes == i]
        il = [v for k, v in enumerate(integ) if k % minutes == i]
        if lat:
            data.append({"MetricName": "Latency", "Dimensions": dims, "Timestamp": t, "Values": lat, "Unit": "Milliseconds"})
        if il:
            data.append({"MetricName": "IntegrationLatency", "Dimensions": dims, "Timestamp": t, "Values": il, "Unit": "Milliseconds"})
    _put(sb, system, "AWS/ApiGateway", data)
    return {"api": a.name, "requests": requests, "5xx": errors_5xx, "4xx": errors_4xx, "latency_max": max(latency_ms),
            "integration_latency_max": max(integ), "rate_5xx": errors_5xx / requests if requests else None}


def function_metrics(sb: Sandbox, system: System, function: str, invocations: int = 100, errors: int = 0, throttles: int = 0,
                     durations_ms: tuple[float, ...] = (120.0, 250.0, 400.0), minutes: int = 10, peak: dict[int, float] | None = None,
                     now: datetime | None = None) -> dict[str, Any]:
    """AWS/Lambda Invocations/Errors/Throttles (sums) and Duration (raw values); ``peak`` adds invocations at minute offsets."""
    enable_percentiles()
    now = now or datetime.now(timezone.utc)
    dims = [{"Name": "FunctionName", "Value": function}]
    data: list[dict[str, Any]] = []
    ts = _minutes(now, minutes)
    for i, (t, n, e, th) in enumerate(zip(ts, _spread(invocations, minutes), _spread(errors, minutes), _spread(throttles, minutes))):
        data += [{"MetricName": "Invocations", "Dimensions": dims, "Timestamp": t, "Value": n, "Unit": "Count"},
                 {"MetricName": "Errors", "Dimensions": dims, "Timestamp": t, "Value": e, "Unit": "Count"},
                 {"MetricName": "Throttles", "Dimensions": dims, "Timestamp": t, "Value": th, "Unit": "Count"}]
        vals = [v for k, v in enumerate(durations_ms) if k % minutes == i]
        if vals:
            data.append({"MetricName": "Duration", "Dimensions": dims, "Timestamp": t, "Values": vals, "Unit": "Milliseconds"})
    for offset, n in (peak or {}).items():
        data.append({"MetricName": "Invocations", "Dimensions": dims, "Timestamp": now - timedelta(minutes=offset), "Value": n, "Unit": "Count"})
    _put(sb, system, "AWS/Lambda", data)
    return {"function": function, "invocations": invocations + sum((peak or {}).values()), "errors": errors, "throttles": throttles,
            "duration_max": max(durations_ms) if durations_ms else None}


def metrics_unreadable(sb: Sandbox, system: System) -> dict[str, Any]:
    """GetMetricData in the system's region answers AccessDenied (until the next sandbox reset)."""
    from moto.cloudwatch.exceptions import CloudWatchException

    backend = sb.backend("cloudwatch", system.region)

    def denied(*_: Any, **__: Any) -> Any:
        raise CloudWatchException("AccessDenied", f"User: arn:aws:iam::{ACCOUNT_ID}:user/opsbook is not authorized to perform: cloudwatch:GetMetricData")

    backend.get_metric_data = denied
    return {"region": system.region}


# --- log lines -----------------------------------------------------------------------------------

# One line each, as the Python runtime writes them ([LEVEL] \t time \t request id \t message), with personal data to mask.
LINES = {
    "keyerror": "[ERROR]\t{ts}\t{rid}\tKeyError: 'employee_id' while scoring project for kim.minsu@example.com",
    "timeout": "{ts} {rid} Task timed out after {timeout:.2f} seconds",
    "access_denied": ("[ERROR]\t{ts}\t{rid}\tClientError: An error occurred (AccessDeniedException) when calling the Query operation: "
                      "User: arn:aws:sts::" + ACCOUNT_ID + ":assumed-role/{role}/{function} is not authorized to perform: {action} "
                      "on resource: {resource} because no identity-based policy allows the {action} action"),
    "ddb_throttle": ("[ERROR]\t{ts}\t{rid}\tProvisionedThroughputExceededException: An error occurred (ProvisionedThroughputExceededException) "
                     "when calling the PutItem operation (reached max retries: 9): The level of configured provisioned throughput for the table was exceeded."),
    "bedrock_throttle": ("[ERROR]\t{ts}\t{rid}\tbedrock invoke failed modelId={model} user=lee.jiwon@example.com: An error occurred (ThrottlingException) "
                         "when calling the InvokeModel operation (reached max retries: {retries}): Too many requests, please wait before trying again."),
    "bedrock_throttle_bare": ("[ERROR]\t{ts}\t{rid}\tThrottlingException: An error occurred (ThrottlingException) when calling the InvokeModel "
                              "operation (modelId {model}): Too many requests, please wait before trying again."),
    "info": "[INFO]\t{ts}\t{rid}\trequest handled in 120 ms for park.jisoo@example.com",
}


def _log(sb: Sandbox, system: System, group: str, stream: str, events: list[tuple[datetime, str]]) -> None:
    from sandbox.faults import _put as put_log_lines  # (this module's own _put writes metrics)

    put_log_lines(sb, system, group, stream, events, create_group=True)


def function_logs(sb: Sandbox, system: System, function: str, kind: str, count: int, old: int = 0, at: list[datetime] | None = None,
                  per_request: int = 1, now: datetime | None = None, **fmt: Any) -> dict[str, Any]:
    """``count`` lines of ``kind`` in the last hour (at ``at`` or spread over 50 minutes), ``old`` more 2-3 h ago.

    ``per_request`` lines share one request id (application-level retries). Format fields: ``timeout``,
    ``role``, ``action``, ``resource``, ``model``, ``retries``.
    """
    now = now or datetime.now(timezone.utc)
    template = LINES[kind]
    defaults = {"timeout": 30.03, "role": f"{system.name}-lambda-role", "function": function, "action": "dynamodb:Query",
                "resource": f"arn:aws:dynamodb:{system.region}:{ACCOUNT_ID}:table/example", "model": "anthropic.claude-3-sonnet-20240229-v1:0",
                "retries": 4}
    values = {**defaults, **fmt}
    times = at or [now - timedelta(minutes=2 + 48 * i / max(1, count - 1)) for i in range(count)]
    rids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{system.name}/{function}/{kind}/{i // per_request}")) for i in range(len(times))]
    events = [(t, template.format(ts=t.strftime("%Y-%m-%dT%H:%M:%S.000Z"), rid=r, **values)) for t, r in zip(times, rids)]
    events += [(now - timedelta(hours=2, minutes=10 * i), template.format(ts="old", rid=f"old-{i}", **values)) for i in range(old)]
    group = next((f.log_group_name for f in system.lambda_functions if f.name == function), f"/aws/lambda/{function}")
    _log(sb, system, group, f"diag-{kind}", events)
    return {"function": function, "group": group, "kind": kind, "count": len(times), "old": old, "requests": len(set(rids))}


# --- Bedrock quotas in moto's Service Quotas ------------------------------------------------------

# (model name as Service Quotas writes it, on-demand requests/min, on-demand tokens/min, cross-Region tokens/min)
BEDROCK_MODELS = [
    ("Anthropic Claude 3 Sonnet", 100, 200_000, 400_000),
    ("Anthropic Claude 3 Haiku", 200, 300_000, 600_000),
    ("Anthropic Claude 3.5 Sonnet", 50, 400_000, 800_000),
    ("Anthropic Claude 3.5 Sonnet V2", 50, 400_000, 800_000),
    ("Amazon Titan Text Embeddings V2", 2000, 300_000, None),
    ("Meta Llama 3 70B Instruct", 400, 300_000, None),
]
PAGE_SIZE = 5


def _code(name: str) -> str:
    return "L-" + hashlib.sha1(name.encode()).hexdigest()[:8].upper()


def bedrock_quotas(region: str) -> list[dict[str, Any]]:
    """The default Bedrock quotas the sandbox serves (ListAWSDefaultServiceQuotas)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float, unit: str = "None", adjustable: bool = True) -> None:
        code = _code(name)
        out.append({"ServiceCode": "bedrock", "ServiceName": "Amazon Bedrock", "QuotaArn": f"arn:aws:servicequotas:{region}::bedrock/{code}",
                    "QuotaCode": code, "QuotaName": name, "Value": float(value), "Unit": unit, "Adjustable": adjustable, "GlobalQuota": False})

    for model, rpm, tpm, cross in BEDROCK_MODELS:
        add(f"On-demand InvokeModel requests per minute for {model}", rpm)
        add(f"On-demand InvokeModel tokens per minute for {model}", tpm)
        add(f"Model invocation max tokens per day for {model}", tpm * 1440, adjustable=False)
        if cross:
            add(f"Cross-Region InvokeModel tokens per minute for {model}", cross)
    add("Batch inference job size (in GB)", 5)
    add("Custom models per account", 100)
    add("Provisioned model units per provisioned model for Anthropic Claude 3 Sonnet", 0, adjustable=False)
    return out


def enable_bedrock_quotas() -> None:
    """Teach moto's in-process Service Quotas (every region) the Bedrock quotas and ListServiceQuotas. Idempotent."""
    from moto.core.exceptions import JsonRESTError
    from moto.servicequotas.exceptions import NoSuchResource
    from moto.servicequotas.models import ServiceQuotasBackend
    from moto.servicequotas.responses import ServiceQuotasResponse

    if getattr(ServiceQuotasBackend, "_opsbook_bedrock", False):
        return
    default_list = ServiceQuotasBackend.list_aws_default_service_quotas
    default_get = ServiceQuotasBackend.get_service_quota

    def check(self: Any) -> None:
        code = getattr(self, "opsbook_fail", None)
        if code:
            raise JsonRESTError(code, f"User: arn:aws:iam::{ACCOUNT_ID}:user/opsbook is not authorized to perform: servicequotas:* (sandbox fault)")

    def applied(self: Any, service_code: str) -> list[dict[str, Any]]:
        check(self)
        if service_code != "bedrock":
            return default_list(self, service_code)
        values = getattr(self, "opsbook_applied", {})
        return [{**q, "Value": float(values.get(q["QuotaCode"], q["Value"]))} for q in bedrock_quotas(self.region_name)]

    def defaults(self: Any, service_code: str) -> list[dict[str, Any]]:
        check(self)
        return bedrock_quotas(self.region_name) if service_code == "bedrock" else default_list(self, service_code)

    def get(self: Any, service_code: str, quota_code: str) -> dict[str, Any]:
        check(self)
        if service_code == "bedrock":
            for q in applied(self, service_code):
                if q["QuotaCode"] == quota_code:
                    return q
            raise NoSuchResource
        return default_get(self, service_code, quota_code)

    def page(response: Any, quotas: list[dict[str, Any]]) -> str:
        params = json.loads(response.body or "{}")
        start = int(params.get("NextToken") or 0)
        size = min(int(params.get("MaxResults") or PAGE_SIZE), PAGE_SIZE)
        body: dict[str, Any] = {"Quotas": quotas[start : start + size]}
        if start + size < len(quotas):
            body["NextToken"] = str(start + size)
        return json.dumps(body)

    def list_service_quotas(self: Any) -> str:
        return page(self, self.backend.list_service_quotas(str(json.loads(self.body or "{}").get("ServiceCode"))))

    def list_aws_default_service_quotas(self: Any) -> str:
        return page(self, self.backend.list_aws_default_service_quotas(str(json.loads(self.body or "{}").get("ServiceCode"))))

    ServiceQuotasBackend.list_service_quotas = applied
    ServiceQuotasBackend.list_aws_default_service_quotas = defaults
    ServiceQuotasBackend.get_service_quota = get
    ServiceQuotasResponse.list_service_quotas = list_service_quotas
    ServiceQuotasResponse.list_aws_default_service_quotas = list_aws_default_service_quotas
    ServiceQuotasBackend._opsbook_bedrock = True


def quota_code(name: str) -> str:
    return _code(name)


def bedrock_quota_values(sb: Sandbox, system: System, values: dict[str, float]) -> None:
    """Applied values by quota name (this account, this region), until the next sandbox reset."""
    enable_bedrock_quotas()
    backend = sb.backend("service-quotas", system.region)
    backend.opsbook_applied = {**getattr(backend, "opsbook_applied", {}), **{_code(k): v for k, v in values.items()}}


def quotas_unreadable(sb: Sandbox, system: System, code: str = "AccessDeniedException") -> dict[str, Any]:
    enable_bedrock_quotas()
    sb.backend("service-quotas", system.region).opsbook_fail = code
    return {"region": system.region, "code": code}


# --- composite scenarios ----------------------------------------------------------------------------

HR_API = "hr-resource-optimization-api-team2"
HR_FUNCTION = "ProjectRecommendationEngine"
HR_ROLE = "LambdaExecutionRole-Team2"


def hr_role(sb: Sandbox, system: System, functions: list[str] | None = None) -> dict[str, Any]:
    """The seed's LambdaExecutionRole-Team2: Team2-DynamoDB-Access (inline) on two tables, logs (managed)."""
    r = system.region
    tables = [f"arn:aws:dynamodb:{r}:{ACCOUNT_ID}:table/{t}" for t in ("Employees-Team2", "Projects-Team2")]
    return execution_role(sb, system, functions or [HR_FUNCTION], HR_ROLE,
                          inline={"Team2-DynamoDB-Access": policy(["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem"], tables)},
                          managed={"Team2-Lambda-Logs": policy(["logs:CreateLogStream", "logs:PutLogEvents"], [f"arn:aws:logs:{r}:{ACCOUNT_ID}:*"])})


def hr_api(sb: Sandbox, system: System) -> dict[str, Any]:
    """POST /recommendations -> ProjectRecommendationEngine, GET /affinity -> AffinityScoreCalculator (not in the inventory's list), OPTIONS mock."""
    return api_integrations(sb, system, [("recommendations", "POST", HR_FUNCTION), ("affinity", "GET", "AffinityScoreCalculator"),
                                         ("health", "GET", None)], api=HR_API)


def hr_5xx_keyerror(sb: Sandbox, system: System, requests: int = 200, errors: int = 24) -> dict[str, Any]:
    """Seed 000 문제 5: 5XX from the API, KeyError in ProjectRecommendationEngine's log."""
    out = {"api": hr_api(sb, system), "role": hr_role(sb, system)}
    out["metrics"] = api_metrics(sb, system, HR_API, requests=requests, errors_5xx=errors, errors_4xx=3,
                                 latency_ms=(90.0, 120.0, 150.0, 400.0, 650.0), integration_latency_ms=(70.0, 100.0, 130.0, 380.0, 620.0))
    out["function_metrics"] = function_metrics(sb, system, HR_FUNCTION, invocations=requests, errors=errors, durations_ms=(80.0, 120.0, 380.0, 610.0))
    out["logs"] = function_logs(sb, system, HR_FUNCTION, "keyerror", errors, old=5)
    function_logs(sb, system, HR_FUNCTION, "info", 10)
    return out


def hr_access_denied(sb: Sandbox, system: System, requests: int = 120, errors: int = 15) -> dict[str, Any]:
    """The function queries a table its role's policies do not cover (EmployeeAffinity-Team2)."""
    out = {"api": hr_api(sb, system), "role": hr_role(sb, system)}
    resource = f"arn:aws:dynamodb:{system.region}:{ACCOUNT_ID}:table/EmployeeAffinity-Team2"
    out["metrics"] = api_metrics(sb, system, HR_API, requests=requests, errors_5xx=errors)
    out["function_metrics"] = function_metrics(sb, system, HR_FUNCTION, invocations=requests, errors=errors)
    out["logs"] = function_logs(sb, system, HR_FUNCTION, "access_denied", errors, role=HR_ROLE, action="dynamodb:Query", resource=resource)
    out["resource"] = resource
    return out


def todo_timeouts(sb: Sandbox, system: System, requests: int = 150, timeouts: int = 9) -> dict[str, Any]:
    """Seed 002 문제 2: intermittent 5XX, todo-api timing out (timeout 30 s behind a 29 s integration)."""
    out = {"api": api_integrations(sb, system, [("todos", "GET", "todo-api"), ("todos-write", "POST", "todo-api")], qualifier="LIVE")}
    set_timeout(sb, system, "todo-api", 30)
    durations = tuple([150.0] * 20 + [30000.0] * 3)
    out["metrics"] = api_metrics(sb, system, "todo-api", requests=requests, errors_5xx=timeouts,
                                 latency_ms=(60.0, 90.0, 200.0, 29010.0, 29020.0), integration_latency_ms=(50.0, 80.0, 180.0, 29000.0, 29000.0))
    out["function_metrics"] = function_metrics(sb, system, "todo-api", invocations=requests, errors=timeouts, durations_ms=durations)
    out["logs"] = function_logs(sb, system, "todo-api", "timeout", timeouts, timeout=30.03)
    return out


def healthy_api(sb: Sandbox, system: System, api: str | None = None) -> dict[str, Any]:
    """Traffic without 5XX; the integrated functions log only INFO lines."""
    a = _api(system, api)
    fns = list(a.functions)
    out = {"api": api_integrations(sb, system, [(f"route{i}", "GET", fn) for i, fn in enumerate(fns)] or [("health", "GET", None)], api=a.name)}
    out["metrics"] = api_metrics(sb, system, a.name, requests=300, errors_5xx=0, errors_4xx=2)
    for fn in fns:
        function_metrics(sb, system, fn, invocations=300)
        function_logs(sb, system, fn, "info", 5)
    return out


def bedrock_throttled(sb: Sandbox, system: System, function: str = "QualitativeAnalysis", throttles: int = 30, peak: int = 12,
                      invocations: int = 200, model: str = "anthropic.claude-3-sonnet-20240229-v1:0", retries: int = 4,
                      now: datetime | None = None) -> dict[str, Any]:
    """Seed 000 문제 3: ThrottlingException lines, ``peak`` of them in one minute (8 min ago), the rest spread.

    Lines carry ``reached max retries: N`` (botocore retried) when ``retries`` > 0; the model id is in the line.
    """
    enable_bedrock_quotas()
    now = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0) - timedelta(seconds=1)
    peak_minute = now - timedelta(minutes=8)
    rest = throttles - peak
    at = [peak_minute.replace(second=5 + 4 * i) for i in range(peak)]
    at += [now - timedelta(minutes=20 + 30 * i / max(1, rest - 1)) for i in range(rest)]
    kind = "bedrock_throttle" if retries else "bedrock_throttle_bare"
    logs = function_logs(sb, system, function, kind, len(at), old=4, at=at, model=model, retries=retries, now=now)
    function_logs(sb, system, function, "info", 6, now=now)
    fm = function_metrics(sb, system, function, invocations=invocations, errors=throttles, now=now)
    return {"function": function, "throttles": throttles, "peak": peak, "peak_minute": peak_minute.replace(second=0),
            "invocations": fm["invocations"], "model": model, "logs": logs}
