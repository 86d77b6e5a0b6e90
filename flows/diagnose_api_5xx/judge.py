"""diagnose-api-5xx's judgement (pure: no AWS, no Prefect, no clock).

From what the read tasks collected (the API's routes, its metrics, its functions' configuration, metrics, error
lines by type and execution roles): the likely causes of the API's 5XX ranked by their evidence, each with the
runbook to run next (``rank_causes``), the verdict per API (``api_verdict``) and the evidence findings
(``api_findings``, ``function_findings``). ``judge_apis`` puts them together for every API of the run.
"""

from __future__ import annotations

from pydantic import BaseModel

from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import ApiGatewayApi, System
from opsbook.masking import mask
from tasks.apigateway import ApiInfo
from tasks.awslambda import FunctionInfo
from tasks.cloudwatch import ApiMetrics, FunctionMetrics
from tasks.iam_roles import RolePolicies
from tasks.logs import TIMEOUT, ErrorType, FunctionErrors, is_access_denied

VERDICT = "api-5xx-verdict"
CRIT_RATE_PCT = 5.0  # seed 002 문제 2: "5% 정도의 요청에서 500 에러" is an incident

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


def functions_of(api: ApiGatewayApi, info: ApiInfo) -> list[str]:
    """ApiGatewayApi.functions union the functions the integrations name (inventory order first)."""
    return list(api.functions) + [f for f in info.integrated_functions() if f not in api.functions]


def integration_timeout_s(api: ApiGatewayApi, info: ApiInfo) -> float:
    """The shortest of the API's integration timeout and the Lambda routes' own timeoutInMillis, in seconds."""
    return min([api.integration_timeout_s] + [r.timeout_ms / 1000 for r in info.routes if r.function and r.timeout_ms])


def log_group_of(system: System, fn: str) -> str:
    return next((f.log_group_name for f in system.lambda_functions if f.name == fn), f"/aws/lambda/{fn}")


# --- the procedure's judge step -------------------------------------------------------------------------------


def judge_apis(system: System, apis: list[ApiGatewayApi], infos: dict[str, ApiInfo], metrics: dict[str, ApiMetrics],
               configs: dict[str, FunctionInfo], fmetrics: dict[str, FunctionMetrics], errors: dict[str, FunctionErrors],
               roles: dict[str, RolePolicies], crit_rate_pct: float = CRIT_RATE_PCT) -> tuple[list[Finding], list[Finding]]:
    """(one verdict per API with its ranked causes, the evidence findings: each function once)."""
    verdicts: list[Finding] = []
    evidence: list[Finding] = []
    seen: set[str] = set()
    for api in apis:
        info = infos[api.name]
        fns = functions_of(api, info)
        integ = int(integration_timeout_s(api, info))
        m = metrics.get(api.name)
        evidence += api_findings(api, info, m, fns)
        for fn in fns:
            if fn not in seen:
                seen.add(fn)
                evidence += function_findings(fn, log_group_of(system, fn), configs.get(fn), fmetrics.get(fn), errors.get(fn), roles, integ)
        causes = rank_causes(api, info, m, fns, configs, fmetrics, errors, roles) if info.found else []
        groups = {log_group_of(system, x) for x in fns}
        blind = [f"{f.check} {f.resource}" for f in evidence if f.status is Status.UNKNOWN
                 and (f.resource in {api.name, "(whole check)"} or f.resource in fns or f.resource in groups)]
        verdicts.append(api_verdict(api, info, m, causes, blind, crit_rate_pct))
    return verdicts, evidence


# --- the likely causes ------------------------------------------------------------------------------------------


def rank_causes(api: ApiGatewayApi, info: ApiInfo, metrics: ApiMetrics | None, functions: list[str], configs: dict[str, FunctionInfo],
                fmetrics: dict[str, FunctionMetrics], errors: dict[str, FunctionErrors], roles: dict[str, RolePolicies]) -> list[Cause]:
    """The likely causes of the API's 5XX, most evidence first."""
    causes: list[Cause] = []
    integ_s = integration_timeout_s(api, info)
    for fn in functions:
        causes += function_causes(fn, info, metrics, integ_s, configs.get(fn), fmetrics.get(fn), errors.get(fn), roles)
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


def function_causes(fn: str, info: ApiInfo, metrics: ApiMetrics | None, integ_s: float, cfg: FunctionInfo | None, fm: FunctionMetrics | None,
                    fe: FunctionErrors | None, roles: dict[str, RolePolicies]) -> list[Cause]:
    """One function's causes: missing, timeouts, Lambda throttling, then its error lines by type."""
    if cfg is not None and not cfg.exists and cfg.error is None:
        routes = [f"{r.method} {r.path}" for r in info.routes if r.function == fn]
        return [Cause(cause="integration names a function that does not exist", weight=1e9, function=fn, kind="missing-function",
                      evidence=f"{fn} not found (routes: {', '.join(routes) or 'inventory only'})",
                      next="fix the integration URI or deploy the function; emergency-rollback if a release removed it")]
    causes: list[Cause] = []
    tmo = timeout_cause(fn, metrics, integ_s, cfg, fm, fe)
    if tmo is not None:
        causes.append(tmo)
    if fm is not None and fm.throttles:
        causes.append(Cause(cause="Lambda throttling (concurrency limit)", weight=fm.throttles, function=fn, kind="lambda-throttles",
                            evidence=f"Throttles {_fmt(fm.throttles)} in the window (Invocations {_fmt(fm.invocations)})",
                            next="raise the function's reserved concurrency or the account's concurrent executions quota; smooth bursts"))
    if fe is None or fe.error is not None:
        return causes
    role = cfg.role_name if cfg else None
    for t in fe.types:
        if t.type != TIMEOUT:
            causes.append(error_type_cause(fn, t, role, roles.get(role) if role else None))
    return causes


def timeout_cause(fn: str, metrics: ApiMetrics | None, integ_s: float, cfg: FunctionInfo | None, fm: FunctionMetrics | None,
                  fe: FunctionErrors | None) -> Cause | None:
    """Timeouts: 'Task timed out' lines, or a Duration max at 95% of the function's or the API's integration timeout."""
    timeout_s = cfg.timeout_s if cfg else None
    n_timeouts = fe.count(TIMEOUT) if fe else 0
    dmax = fm.duration_max_ms if fm else None
    near_integ = dmax is not None and dmax >= 0.95 * integ_s * 1000
    near_fn = dmax is not None and timeout_s is not None and dmax >= 0.95 * timeout_s * 1000
    ilat = metrics.integration_latency_max_ms if metrics else None
    api_cut = ilat is not None and ilat >= 0.95 * integ_s * 1000
    if not (n_timeouts or near_fn or near_integ):
        return None
    beyond = timeout_s is not None and timeout_s > integ_s
    ev = [f"{n_timeouts} 'Task timed out' lines" if n_timeouts else None,
          f"Duration max {_fmt(dmax, ' ms')} vs function timeout {timeout_s} s and the API's {integ_s:g} s integration timeout",
          f"IntegrationLatency max {_fmt(ilat, ' ms')}" if api_cut else None]
    what = "timeouts: the function runs into its timeout"
    if beyond and (near_integ or api_cut):
        what = (f"timeouts: the API's {integ_s:g} s integration timeout ends requests before the function's own {timeout_s} s "
                "timeout (clients get 504)")
    return Cause(cause=what, weight=max(n_timeouts, 1), function=fn, kind="timeout", evidence="; ".join(e for e in ev if e),
                 next=("remediate-lambda-timeout (memory/CPU, slow downstream calls); behind API Gateway a timeout above "
                       f"{integ_s:g} s does not help: make the work faster or asynchronous"))


def error_type_cause(fn: str, t: ErrorType, role: str | None, rp: RolePolicies | None) -> Cause:
    """The cause one exception type points to: permissions (checked against the role), a known throttling, else code."""
    if is_access_denied(t.type) or t.denied:
        notes = [denied_note(d, role, rp) for d in t.denied or [{"action": None, "resource": None, "count": t.count}]]
        return Cause(cause=f"permissions: {t.type}", weight=t.count, function=fn, kind="permissions",
                     evidence=f"{t.count} lines; " + "; ".join(notes),
                     next=f"grant the missing action to the execution role {role or '?'} (a reviewed IAM change), then re-run this diagnosis")
    if t.type in _KNOWN:
        what, nxt = _KNOWN[t.type]
        return Cause(cause=what, weight=t.count, function=fn, kind=t.type, evidence=f"{t.count} {t.type} lines", next=nxt)
    sample = t.samples[0] if t.samples else ""
    return Cause(cause=f"function errors of type {t.type}", weight=t.count, function=fn, kind="code",
                 evidence=f"{t.count} lines, e.g. {sample[:200]}",
                 next="fix the code and redeploy; if it began with the latest release, roll back with emergency-rollback")


def denied_note(d: dict, role: str | None, rp: RolePolicies | None) -> str:
    """What the role's policies say about one denied action."""
    if d["action"] is None:
        return "the lines name no action"
    if rp is None or rp.error:
        return f"{d['action']} on {d['resource'] or '?'}: role {role or '?'} policies unreadable" + (f" ({rp.error})" if rp and rp.error else "")
    allow, deny = rp.allows(d["action"], d["resource"])
    if deny:
        return f"{d['action']} on {d['resource']}: explicitly denied by {deny[0].policy}"
    if allow:
        return (f"{d['action']} on {d['resource']}: allowed by {allow[0].policy} (look for a permissions boundary, "
                "an SCP, a resource or KMS key policy, or a condition)")
    return f"{d['action']} on {d['resource']}: no statement of role {role} ({', '.join(rp.inline + rp.attached) or 'no policies'}) allows it"


# --- the verdict -------------------------------------------------------------------------------------------------


def api_verdict(api: ApiGatewayApi, info: ApiInfo, metrics: ApiMetrics | None, causes: list[Cause], blind: list[str],
                crit_rate_pct: float = CRIT_RATE_PCT) -> Finding:
    check = VERDICT
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
    summary = verdict_summary(status, traffic, causes)
    if blind:
        summary += f". {len(blind)} blind spot(s): {', '.join(blind[:3])}"
    return Finding(check=check, resource=api.name, status=status, value=round(rate, 2) if rate is not None else None, summary=mask(summary)[:900],
                   details={"causes": ranked, "blind_spots": blind, "rate_5xx_pct": rate, "metrics": metrics.model_dump() if metrics else None,
                            "api_id": info.id})


def verdict_summary(status: Status, traffic: str, causes: list[Cause]) -> str:
    if status is Status.UNKNOWN:
        return f"UNKNOWN: {traffic}; no cause found in what could be read"
    if status is Status.OK:
        return f"OK: {traffic}; the integrated functions show no errors, timeouts or throttles"
    lead = [c for c in causes if c.kind != "unresolved"]
    if not lead:
        return f"{status.value}: {traffic}; no cause found in the functions' logs and metrics"
    c = lead[0]
    summary = (f"{status.value}: {traffic}. Likely cause: {c.cause}" + (f" in {c.function}" if c.function else "")
               + f" ({c.evidence[:200]}). Next: {c.next}")
    if len(lead) > 1:
        summary += ". Also: " + "; ".join(f"{x.cause}" + (f" in {x.function}" if x.function else "") for x in lead[1:4])
    return summary


# --- the evidence ------------------------------------------------------------------------------------------------


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
        out.append(api_metrics_finding(api, metrics))
    return out


def api_metrics_finding(api: ApiGatewayApi, m: ApiMetrics) -> Finding:
    if m.error:
        return unknown("api-metrics", api.name, m.error)
    if not m.has_data:
        return Finding(check="api-metrics", resource=api.name, status=Status.UNKNOWN, summary=f"no AWS/ApiGateway datapoints for ApiName={api.name} in the window")
    rate = m.rate_5xx_pct
    return Finding(check="api-metrics", resource=api.name, status=Status.OK, value=round(rate, 2) if rate is not None else None,
                   summary=(f"{_fmt(m.requests)} requests, 5XX {_fmt(m.errors_5xx)} ({_fmt(round(rate, 2) if rate is not None else None, '%')}), "
                            f"4XX {_fmt(m.errors_4xx)}; Latency avg/p95/max {_fmt(m.latency_avg_ms)}/{_fmt(m.latency_p95_ms)}/{_fmt(m.latency_max_ms)} ms; "
                            f"IntegrationLatency avg/p95/max {_fmt(m.integration_latency_avg_ms)}/{_fmt(m.integration_latency_p95_ms)}/"
                            f"{_fmt(m.integration_latency_max_ms)} ms"),
                   details=m.model_dump())


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
        out.append(config_finding(fn, cfg, integ_s))
    if fe is not None:
        out.append(errors_finding(fe))
    if fm is not None:
        out.append(lambda_metrics_finding(fn, fm, cfg))
    if cfg is not None and cfg.role_name:
        out.append(role_finding(fn, cfg.role_name, roles.get(cfg.role_name), fe))
    return out


def config_finding(fn: str, cfg: FunctionInfo, integ_s: int) -> Finding:
    if cfg.error:
        return unknown("lambda-config", fn, cfg.error)
    if not cfg.exists:
        return Finding(check="lambda-config", resource=fn, status=Status.CRIT, summary="the API integrates it but the function does not exist")
    warn = cfg.timeout_s is not None and cfg.timeout_s > integ_s
    return Finding(check="lambda-config", resource=fn, status=Status.OK, value=cfg.timeout_s,
                   summary=f"timeout {cfg.timeout_s} s, memory {cfg.memory_mb} MB, role {cfg.role_name}"
                           + (f" (timeout above the API's {integ_s} s integration timeout)" if warn else ""),
                   details=cfg.model_dump())


def errors_finding(fe: FunctionErrors) -> Finding:
    if fe.error:
        return unknown("lambda-errors-by-type", fe.group, fe.error)
    summary = f"{fe.total} error lines in the window"
    if fe.types:
        summary += ": " + "; ".join(f"{t.type} ×{t.count}" for t in fe.types[:5])
        summary += f"; e.g. {fe.types[0].samples[0][:160]}" if fe.types[0].samples else ""
    if fe.truncated:
        summary += f" (first {fe.lines_read} lines read: a lower bound)"
    return Finding(check="lambda-errors-by-type", resource=fe.group, status=Status.WARN if fe.total else Status.OK, value=fe.total,
                   summary=mask(summary)[:600], details={"types": [t.model_dump() for t in fe.types], "truncated": fe.truncated})


def lambda_metrics_finding(fn: str, fm: FunctionMetrics, cfg: FunctionInfo | None) -> Finding:
    if fm.error:
        return unknown("lambda-metrics", fn, fm.error)
    if fm.invocations is None and fm.errors is None and fm.duration_max_ms is None:
        # Lambda publishes Invocations for every invocation: no datapoint at all is no invocation
        return Finding(check="lambda-metrics", resource=fn, status=Status.OK, value=0,
                       summary="not invoked in the window (no AWS/Lambda datapoints)", details=fm.model_dump())
    t_ms = (cfg.timeout_s or 0) * 1000 if cfg else 0
    near = bool(fm.duration_max_ms and t_ms and fm.duration_max_ms >= 0.95 * t_ms)
    status = Status.WARN if (fm.errors or fm.throttles or near) else Status.OK
    return Finding(check="lambda-metrics", resource=fn, status=status, value=fm.errors,
                   summary=(f"Invocations {_fmt(fm.invocations)}, Errors {_fmt(fm.errors)}, Throttles {_fmt(fm.throttles)}; Duration "
                            f"avg/p95/max {_fmt(fm.duration_avg_ms)}/{_fmt(fm.duration_p95_ms)}/{_fmt(fm.duration_max_ms)} ms"
                            + (f" vs timeout {cfg.timeout_s} s" if cfg and cfg.timeout_s else "") + (" (at the timeout)" if near else "")),
                   details=fm.model_dump())


def role_finding(fn: str, role: str, rp: RolePolicies | None, fe: FunctionErrors | None) -> Finding:
    if rp is None:
        return unknown("lambda-role", fn, f"role {role} not read (the read task failed)")
    if rp.error:
        return unknown("lambda-role", fn, f"role {rp.role}: {rp.error}")
    allows = [s.text() for s in rp.statements]
    denied = [d for t in (fe.types if fe and not fe.error else []) for d in t.denied]
    status = Status.WARN if denied else Status.OK
    summary = f"role {rp.role}: inline {rp.inline or 'none'}, attached {rp.attached or 'none'}; allows: " + ("; ".join(allows[:6]) or "nothing")
    if denied:
        summary = f"AccessDenied in the logs for {', '.join(sorted({d['action'] for d in denied}))}; " + summary
    return Finding(check="lambda-role", resource=fn, status=status, value=len(rp.statements), summary=mask(summary)[:700],
                   details={"role": rp.role, "statements": allows, "denied": denied})
