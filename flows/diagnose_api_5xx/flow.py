"""diagnose-api-5xx: why an API answers 5XX (read-only).

Sources: seed 000 일반적인 문제 5 "API Gateway 5XX 에러" (alarm
api-gateway-5xx-errors-team2: the API's 5XX, the integrated Lambda function's
ERROR lines, its execution role LambdaExecutionRole-Team2 and the role's
policies such as Team2-DynamoDB-Access, the integration's settings) and seed
002 문제 2 "간헐적 5XX 에러" (about 5% of requests fail: memory or timeout).

For each API of the inventory (or the one ``api`` names), over the last
``minutes`` (60):

1. the REST API and its integrations (GetRestApis, GetResources, GetIntegration,
   every page); the functions to examine are ``ApiGatewayApi.functions`` plus
   those the integrations' URIs name;
2. the API's Count, 5XXError, 4XXError (sums, 5XX rate = 5XXError / Count),
   Latency and IntegrationLatency (avg, p95, max) in one GetMetricData batch;
3. per function: the error lines of its log group grouped by exception type
   (masked samples, top message shapes), Invocations/Errors/Throttles/Duration
   against its timeout and the API's integration timeout (29 s), its
   execution role and what the role's inline and attached policies allow;
   AccessDenied lines are checked against those policies;
4. the verdict, first: the likely causes ranked by their evidence (function
   errors of a type, timeouts against the 29 s integration timeout,
   throttling, permissions, or API-side 5XX with no function errors), each
   with the runbook to run next. No data is UNKNOWN with the reason, never OK.

Status of an API's verdict: CRIT when the 5XX rate reaches ``crit_rate_pct``
(5%) or the API is missing, WARN for any 5XX or any cause found, OK when the
API served traffic without 5XX and its functions show nothing, UNKNOWN when
nothing could be read. A CRIT run ends Failed in Prefect, with its report.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.diagnose_api_5xx.judge import VERDICT, functions_of, judge_apis
from opsbook import aws
from opsbook.collect import settled
from opsbook.findings import Finding, Status
from opsbook.inventory import ApiGatewayApi, System, load_system
from opsbook.masking import mask
from opsbook.params import Deadline, Param, SystemName
from opsbook.report import ICON, RunReport, findings_section, finish_read_only, publish_artifacts, sort_findings
from tasks.apigateway import ApiInfo, read_api
from tasks.awslambda import FunctionInfo, read_functions
from tasks.cloudwatch import ApiMetrics, FunctionMetrics, read_api_metrics, read_function_metrics
from tasks.iam_roles import RolePolicies, read_roles
from tasks.logs import FunctionErrors, read_function_errors

RUNBOOK = "diagnose-api-5xx"


def select_apis(system: System, api: str | None) -> list[ApiGatewayApi]:
    if api is None:
        return list(system.api_gateway_apis)
    for a in system.api_gateway_apis:
        if a.name == api:
            return [a]
    known = ", ".join(a.name for a in system.api_gateway_apis) or "none"
    raise ValueError(f"{system.name} names no API {api!r} (its APIs: {known}); add it to systems/{system.name}.yaml or pick one of those")


@task(name="judge-api-5xx", cache_policy=NO_CACHE)
def diagnose(system: System, apis: list[ApiGatewayApi], infos: dict[str, ApiInfo], metrics: dict[str, ApiMetrics], configs: dict[str, FunctionInfo],
             fmetrics: dict[str, FunctionMetrics], errors: dict[str, FunctionErrors], roles: dict[str, RolePolicies],
             crit_rate_pct: float) -> list[Finding]:
    """Per API: the verdict (ranked causes), then the evidence findings (each function once)."""
    verdicts, evidence = judge_apis(system, apis, infos, metrics, configs, fmetrics, errors, roles, crit_rate_pct)
    return verdicts + sort_findings(evidence)


def api_markdown(report: RunReport) -> str:
    lines = [f"# {ICON[report.status]} {report.runbook} · {report.system}: **{report.status.value}**", ""]
    for v in [f for f in report.findings if f.check == VERDICT]:
        lines += [f"## {ICON[v.status]} `{v.resource}` — {mask(v.summary)}", ""]
        causes = v.details.get("causes") or []
        if causes:
            lines += ["| # | likely cause | function | evidence | next |", "|---|---|---|---|---|"]
            for i, cz in enumerate(causes, 1):
                lines.append(f"| {i} | {mask(cz['cause'])} | {cz.get('function') or '—'} | {mask(cz['evidence'])[:200].replace('|', '/')} | "
                             f"{mask(cz['next']).replace('|', '/')} |")
            lines.append("")
    lines += findings_section(report, skip=(VERDICT,))
    lines += ["", "Read-only: nothing was changed. Every finding is in the table artifact with the same key plus `-findings`."]
    return "\n".join(lines)


@task(name="publish-api-5xx-report", cache_policy=NO_CACHE)
def publish(report: RunReport) -> RunReport:
    return publish_artifacts(report, api_markdown(report))


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=600)
def diagnose_api_5xx(
    system: SystemName,
    api: Annotated[str, Param("Only this API Gateway API of the inventory (its name); empty: every API of the system")] = "",
    minutes: Annotated[int, Param("How far back the 5XX rate, latency and function errors are read, in minutes", ge=5, le=1440)] = 60,
    crit_rate_pct: Annotated[float, Param("An API's 5XX rate (% of requests) from which it is CRIT", gt=0, le=100)] = 5.0,
    deadline_seconds: Deadline = 120.0,
) -> Any:
    """Why the system's APIs (or ``api``) answer 5XX: ranked causes with the next runbook. Never mutates."""
    started = time.monotonic()
    logger = get_run_logger()
    inv = load_system(system)
    calls = aws.start_call_log()
    deadline = aws.Deadline(deadline_seconds)
    apis = select_apis(inv, api or None)
    if not apis:
        findings = [Finding(check=VERDICT, resource=inv.name, status=Status.OK, value=0,
                            summary=f"nothing to check: the inventory of {inv.name} names no API Gateway API (api_gateway_apis is empty)")]
        return _finish(inv, findings, calls, started, logger)

    # collect: the APIs and their metrics at once; then the functions they integrate; then those functions' roles
    with aws.bounded(deadline):  # no read starts after the deadline; each attempt times out within the time left
        lost: list[Finding] = []
        info_f = {a.name: read_api.submit(inv, a, deadline) for a in apis}
        metrics_f = read_api_metrics.submit(inv, apis, minutes)
        infos = {a.name: settled(info_f[a.name], f"read-api {a.name}", ApiInfo(name=a.name, error="the read task failed"), lost) for a in apis}
        fns: list[str] = []
        for a in apis:
            fns += [f for f in functions_of(a, infos[a.name]) if f not in fns]
        configs_f = read_functions.submit(inv, fns, deadline)
        fmetrics_f = read_function_metrics.submit(inv, fns, minutes)
        errors_f = read_function_errors.submit(inv, fns, deadline, minutes)
        configs = settled(configs_f, "read-functions", {}, lost)
        roles_f = read_roles.submit(inv, [c.role_name for c in configs.values() if c.role_name], deadline)
        metrics = settled(metrics_f, "read-api-metrics", {a.name: ApiMetrics(api=a.name, error="the read task failed") for a in apis}, lost)
        fmetrics = settled(fmetrics_f, "read-function-metrics", {}, lost)
        errors = settled(errors_f, "read-function-errors", {}, lost)
        roles = settled(roles_f, "read-roles", {}, lost)

    # judge, then report: the verdicts first, then the reads that failed, then the evidence
    findings = diagnose.submit(inv, apis, infos, metrics, configs, fmetrics, errors, roles, crit_rate_pct).result()
    findings = findings[: len(apis)] + lost + findings[len(apis):]
    return _finish(inv, findings, calls, started, logger)


def _finish(inv: System, findings: list[Finding], calls: aws.CallLog, started: float, logger: Any) -> Any:
    return finish_read_only(RUNBOOK, inv, findings, calls, started, publish, logger)


TASKS = [read_api, read_api_metrics, read_functions, read_function_metrics, read_function_errors, read_roles]
