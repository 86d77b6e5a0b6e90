"""diagnose-api-5xx's judge, fed directly (no sandbox, no Prefect): the ranked causes, the verdict at and around
the 5XX rate threshold, timeouts against the integration timeout, AccessDenied against the role's policies, and
every piece that could not be read a blind spot (UNKNOWN), never OK."""

from __future__ import annotations

from flows.diagnose_api_5xx.judge import VERDICT, api_verdict, function_findings, functions_of, judge_apis, rank_causes
from opsbook.findings import Finding, Status
from opsbook.inventory import ApiGatewayApi, LambdaFunction, System
from tasks.apigateway import ApiInfo, Route
from tasks.awslambda import FunctionInfo
from tasks.cloudwatch import ApiMetrics, FunctionMetrics
from tasks.iam_roles import RolePolicies, statements_of
from tasks.logs import TIMEOUT, ErrorType, FunctionErrors

FN, ROLE, TABLE = "Scorer", "ScorerRole", "arn:aws:dynamodb:us-east-2:123456789012:table/Scores"
GROUP = "/custom/Scorer"
SYSTEM = System(name="shop", region="us-east-2", lambda_functions=[LambdaFunction(name=FN, log_group=GROUP)])
API = ApiGatewayApi(name="shop-api", functions=[FN])


def info(*routes: Route, found: bool = True, error: str | None = None) -> ApiInfo:
    return ApiInfo(name=API.name, id="a1b2" if found else None, found=found, error=error,
                   routes=list(routes) or [Route(path="/score", method="POST", type="AWS_PROXY", function=FN)])


def traffic(requests: float | None = 300, errors_5xx: float | None = 0, **kw) -> ApiMetrics:
    return ApiMetrics(api=API.name, requests=requests, errors_5xx=errors_5xx, errors_4xx=2, **kw)


def config(timeout_s: int = 10, exists: bool = True, **kw) -> FunctionInfo:
    return FunctionInfo(function=FN, exists=exists, role_arn=f"arn:aws:iam::123456789012:role/{ROLE}" if exists else None,
                        timeout_s=timeout_s if exists else None, memory_mb=512 if exists else None, **kw)


def fmetrics(**kw) -> FunctionMetrics:
    return FunctionMetrics(**{"function": FN, "invocations": 300, "errors": 0, "throttles": 0, "duration_max_ms": 800.0, **kw})


def errors(*types: ErrorType, **kw) -> FunctionErrors:
    return FunctionErrors(function=FN, group=GROUP, total=sum(t.count for t in types), types=list(types), **kw)


def role(statements: list[dict] | None = None, **kw) -> dict[str, RolePolicies]:
    doc = {"Statement": statements if statements is not None else [{"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": TABLE}]}
    return {ROLE: RolePolicies(role=ROLE, inline=["Scorer-Access"], statements=statements_of("Scorer-Access", doc), **kw)}


def denied(count: int = 15, action: str | None = "dynamodb:Query") -> ErrorType:
    return ErrorType(type="AccessDeniedException", count=count, samples=["... is not authorized to perform: dynamodb:Query ..."],
                     denied=[{"action": action, "resource": TABLE if action else None, "count": count}] if action else [])


GONE = object()  # a piece whose read task failed: absent from what the judge gets


def judge(api_info: ApiInfo | None = None, metrics=None, cfg=None, fm=None, fe=None, roles: dict[str, RolePolicies] | None = None,
          crit_rate_pct: float = 5.0) -> tuple[Finding, list[Finding]]:
    """(verdict, evidence) of one API; a piece left None is the healthy default, GONE is absent."""
    def part(key: str, value, default) -> dict:
        return {} if value is GONE else {key: value or default}

    verdicts, evidence = judge_apis(SYSTEM, [API], {API.name: api_info or info()}, part(API.name, metrics, traffic()), part(FN, cfg, config()),
                                    part(FN, fm, fmetrics()), part(FN, fe, errors()), role() if roles is None else roles, crit_rate_pct)
    assert len(verdicts) == 1 and verdicts[0].check == VERDICT
    return verdicts[0], evidence


def one(evidence: list[Finding], check: str, resource: str = FN) -> Finding:
    hits = [f for f in evidence if f.check == check and f.resource == resource]
    assert len(hits) == 1, (check, resource, [(f.check, f.resource) for f in evidence])
    return hits[0]


# --- empty, healthy, the rate threshold ----------------------------------------------------------------------


def test_no_api_gives_no_finding():
    assert judge_apis(SYSTEM, [], {}, {}, {}, {}, {}, {}) == ([], [])


def test_healthy_api_is_ok_with_all_its_evidence_ok():
    v, ev = judge()
    assert v.status is Status.OK and v.value == 0.0 and v.details["causes"] == [] and v.details["blind_spots"] == []
    assert v.summary == "OK: 0 5XX / 300 requests (0.0%); the integrated functions show no errors, timeouts or throttles"
    assert {(f.check, f.status) for f in ev} == {(c, Status.OK) for c in ("api-integrations", "api-metrics", "lambda-config",
                                                                           "lambda-errors-by-type", "lambda-metrics", "lambda-role")}
    assert one(ev, "lambda-errors-by-type", GROUP).summary == "0 error lines in the window"  # the inventory's log group


def test_5xx_rate_at_the_crit_threshold_is_crit_just_below_warn():
    at, below, above = (judge(metrics=traffic(10_000, n))[0] for n in (500, 499, 501))
    assert (at.status, below.status, above.status) == (Status.CRIT, Status.WARN, Status.CRIT)
    assert at.value == 5.0 and at.summary.startswith("CRIT: 500 5XX / 10000 requests (5.0%)")
    assert below.summary.startswith("WARN: 499 5XX / 10000 requests (5.0%). Likely cause: API-side 5XX with no function errors")
    # the threshold is the crit_rate_pct parameter's
    assert judge(metrics=traffic(10_000, 500), crit_rate_pct=6.0)[0].status is Status.WARN
    assert judge(metrics=traffic(10_000, 600), crit_rate_pct=6.0)[0].status is Status.CRIT


def test_5xx_without_function_errors_is_api_side_and_its_twin_without_5xx_ok():
    v, _ = judge(metrics=traffic(300, 3))
    assert v.status is Status.WARN and [c["kind"] for c in v.details["causes"]] == ["api-side"]
    assert "Lambda resource policy allowing apigateway.amazonaws.com" in v.details["causes"][0]["next"]
    assert judge(metrics=traffic(300, 0))[0].status is Status.OK


def test_no_requests_with_no_cause_is_ok():
    v, ev = judge(metrics=traffic(0, 0))
    assert v.status is Status.OK and v.value is None and v.summary.startswith("OK: no requests;")
    assert one(ev, "api-metrics", API.name).summary.startswith("0 requests, 5XX 0 (n/a)")


# --- the API itself --------------------------------------------------------------------------------------------------


def test_missing_api_is_crit_and_its_functions_are_still_examined():
    v, ev = judge(api_info=info(found=False))
    assert v.status is Status.CRIT and "no REST API has that name: every request fails" in v.summary and v.details["causes"] == []
    assert "api-integrations" not in {f.check for f in ev} and "api-metrics" not in {f.check for f in ev}
    assert one(ev, "lambda-config").status is Status.OK  # the inventory's function


def test_unreadable_api_is_unknown():
    v, ev = judge(api_info=info(found=False, error="GetRestApis: access denied"))
    assert v.status is Status.UNKNOWN and v.summary == "could not be read: the API could not be read: GetRestApis: access denied"


def test_unreadable_resources_are_unknown_evidence_and_a_blind_spot():
    v, ev = judge(api_info=info(error="GetResources: throttled"))
    integ = one(ev, "api-integrations", API.name)
    assert integ.status is Status.UNKNOWN and "resources unreadable: GetResources: throttled; functions from the inventory: Scorer" in integ.summary
    assert v.status is Status.UNKNOWN and "api-integrations shop-api" in v.details["blind_spots"]


def test_functions_are_the_inventorys_then_the_integrations_each_once():
    routes = [Route(path="/a", method="GET", function="Other", qualifier="LIVE"), Route(path="/a", method="POST", function="Other"),
              Route(path="/b", method="GET", function=FN)]
    assert functions_of(API, info(*routes)) == [FN, "Other"]
    _, ev = judge(api_info=info(*routes))
    integ = one(ev, "api-integrations", API.name)
    assert integ.details["functions"] == [FN, "Other"] and "(Other found through the integrations only)" in integ.summary
    assert one(ev, "lambda-config", "Other").status is Status.UNKNOWN  # configured for Scorer only: never read, never OK


def test_ambiguous_name_and_integration_problems_warn():
    routes = [Route(path="/a", method="GET", function=FN), Route(path="/x", method="GET", problem="integration unreadable: boom"),
              Route(path="/h", method="OPTIONS", problem="method has no integration")]
    ev = judge(api_info=info(*routes).model_copy(update={"ambiguous_ids": ["a1b2", "c3d4"]}))[1]
    integ = one(ev, "api-integrations", API.name)
    assert integ.status is Status.WARN and "2 REST APIs share this name (a1b2, c3d4): the first is read" in integ.summary
    assert integ.details["problems"] == ["GET /x: integration unreadable: boom"]  # no integration (a mock) is no problem
    twin = one(judge()[1], "api-integrations", API.name)
    assert twin.status is Status.OK and twin.summary == "id a1b2; 1 methods; functions: Scorer"


def test_a_stage_variable_integration_is_unresolved_not_a_cause():
    stagevar = Route(path="/s", method="GET", problem="the function comes from a stage variable (${stageVariables.fn}); resolve it from the stage")
    v, _ = judge(api_info=info(stagevar, Route(path="/score", method="POST", function=FN)), metrics=traffic(None, None))
    assert v.details["causes"][0]["kind"] == "unresolved" and v.details["causes"][0]["weight"] == 0
    assert v.status is Status.UNKNOWN and v.summary.startswith("UNKNOWN: API metrics unavailable")  # an unresolved route is no cause


# --- metrics that could not be read --------------------------------------------------------------------------------


def test_unreadable_metrics_without_a_cause_are_unknown_never_ok():
    v, ev = judge(metrics=ApiMetrics(api=API.name, error="GetMetricData: access denied"), fm=fmetrics(error="GetMetricData: access denied"))
    assert v.status is Status.UNKNOWN
    assert v.summary.startswith("UNKNOWN: API metrics unavailable: GetMetricData: access denied; no cause found in what could be read")
    assert one(ev, "api-metrics", API.name).status is Status.UNKNOWN and one(ev, "lambda-metrics").status is Status.UNKNOWN
    assert {"api-metrics shop-api", "lambda-metrics Scorer"} <= set(v.details["blind_spots"]) and "blind spot(s)" in v.summary


def test_unreadable_metrics_with_a_cause_in_the_logs_still_name_it():
    ddb = ErrorType(type="ProvisionedThroughputExceededException", count=6)
    v, _ = judge(metrics=ApiMetrics(api=API.name, error="GetMetricData: access denied"), fe=errors(ddb))
    assert v.status is Status.WARN and v.details["causes"][0]["next"] == "remediate-dynamodb-throttling"
    assert v.summary.startswith("WARN: API metrics unavailable: GetMetricData: access denied. Likely cause: DynamoDB throttling in Scorer")


def test_no_datapoints_is_unknown():
    v, ev = judge(metrics=traffic(None, None))
    assert v.status is Status.UNKNOWN and "no AWS/ApiGateway datapoints for ApiName=shop-api in the window" in v.summary
    assert one(ev, "api-metrics", API.name).status is Status.UNKNOWN


def test_a_read_task_that_failed_is_a_blind_spot_not_ok():
    v, ev = judge(cfg=GONE, fm=GONE, fe=GONE)
    for check, resource in (("lambda-config", FN), ("lambda-metrics", FN), ("lambda-errors-by-type", GROUP)):
        f = one(ev, check, resource)
        assert f.status is Status.UNKNOWN and f.summary == "could not be read: not read (the read task failed)"
    assert v.status is Status.UNKNOWN and "lambda-errors-by-type /custom/Scorer" in v.details["blind_spots"]
    v, ev = judge(roles={})
    assert one(ev, "lambda-role").summary == f"could not be read: role {ROLE} not read (the read task failed)" and v.status is Status.UNKNOWN


def test_unreadable_log_group_is_unknown():
    v, ev = judge(fe=FunctionErrors(function=FN, group=GROUP, error="AccessDeniedException: logs:FilterLogEvents"))
    assert one(ev, "lambda-errors-by-type", GROUP).status is Status.UNKNOWN and v.status is Status.UNKNOWN


# --- the causes, ranked --------------------------------------------------------------------------------------------


def test_code_errors_rank_by_their_lines_with_the_next_runbook():
    key = ErrorType(type="KeyError", count=24, samples=["[ERROR] KeyError: 'employee_id' for [EMAIL]"])
    ddb = ErrorType(type="ProvisionedThroughputExceededException", count=5)
    v, ev = judge(metrics=traffic(200, 24), fe=errors(ddb, key))
    first, second = v.details["causes"][:2]
    assert v.status is Status.CRIT and v.value == 12.0
    assert (first["cause"], first["function"], first["weight"], first["kind"]) == ("function errors of type KeyError", FN, 24, "code")
    assert first["evidence"].startswith("24 lines, e.g. [ERROR] KeyError") and "emergency-rollback" in first["next"]
    assert second["cause"] == "DynamoDB throttling" and second["next"] == "remediate-dynamodb-throttling"
    assert "Also: DynamoDB throttling in Scorer" in v.summary
    errs = one(ev, "lambda-errors-by-type", GROUP)
    assert errs.status is Status.WARN and errs.value == 29 and errs.summary.startswith("29 error lines in the window: ProvisionedThroughputExceededException ×5; KeyError ×24")


def test_known_exception_types_point_to_their_runbooks():
    for kind, nxt in (("ThrottlingException", "diagnose-bedrock-throttling"), ("ProvisionedThroughputExceededException", "remediate-dynamodb-throttling")):
        cause = judge(fe=errors(ErrorType(type=kind, count=3)))[0].details["causes"][0]
        assert (cause["kind"], cause["next"], cause["evidence"]) == (kind, nxt, f"3 {kind} lines")


def test_truncated_error_lines_say_they_are_a_lower_bound():
    fe = errors(ErrorType(type="KeyError", count=20_000), truncated=True, lines_read=20_000)
    assert one(judge(fe=fe)[1], "lambda-errors-by-type", GROUP).summary.endswith("(first 20000 lines read: a lower bound)")


def test_timeouts_behind_the_integration_timeout_point_to_remediate_lambda_timeout():
    fe = errors(ErrorType(type=TIMEOUT, count=9, timeout_after_s=30.03))
    v, ev = judge(metrics=traffic(150, 9, integration_latency_max_ms=29000.0), cfg=config(timeout_s=30), fm=fmetrics(duration_max_ms=30000.0), fe=fe)
    cause = v.details["causes"][0]
    assert v.status is Status.CRIT and (cause["kind"], cause["weight"]) == ("timeout", 9)
    assert cause["cause"] == "timeouts: the API's 29 s integration timeout ends requests before the function's own 30 s timeout (clients get 504)"
    assert cause["evidence"] == ("9 'Task timed out' lines; Duration max 30000 ms vs function timeout 30 s and the API's 29 s integration timeout; "
                                 "IntegrationLatency max 29000 ms")
    assert cause["next"].startswith("remediate-lambda-timeout") and "a timeout above 29 s does not help" in cause["next"]
    assert one(ev, "lambda-config").summary.endswith("(timeout above the API's 29 s integration timeout)")
    assert one(ev, "lambda-metrics").summary.endswith("vs timeout 30 s (at the timeout)") and one(ev, "lambda-metrics").status is Status.WARN


def test_a_function_timeout_within_the_integration_timeout_is_its_own():
    fe = errors(ErrorType(type=TIMEOUT, count=2))
    cause = judge(cfg=config(timeout_s=10), fm=fmetrics(duration_max_ms=10000.0), fe=fe)[0].details["causes"][0]
    assert cause["cause"] == "timeouts: the function runs into its timeout"
    assert one(judge(cfg=config(timeout_s=29))[1], "lambda-config").summary == f"timeout 29 s, memory 512 MB, role {ROLE}"  # equal: not above


def test_duration_at_95_percent_of_the_timeout_is_a_timeout_just_below_not():
    at, below = (judge(cfg=config(timeout_s=10), fm=fmetrics(duration_max_ms=ms)) for ms in (9500.0, 9499.0))
    assert [c["kind"] for c in at[0].details["causes"]] == ["timeout"] and at[0].details["causes"][0]["weight"] == 1
    assert "(at the timeout)" in one(at[1], "lambda-metrics").summary and one(at[1], "lambda-metrics").status is Status.WARN
    assert below[0].details["causes"] == [] and below[0].status is Status.OK and one(below[1], "lambda-metrics").status is Status.OK


def test_a_shorter_route_timeout_is_the_integration_timeout():
    routes = [Route(path="/score", method="POST", function=FN, timeout_ms=10_000)]
    v, ev = judge(api_info=info(*routes), cfg=config(timeout_s=20), fm=fmetrics(duration_max_ms=9600.0))
    cause = v.details["causes"][0]
    assert cause["cause"].startswith("timeouts: the API's 10 s integration timeout ends requests before the function's own 20 s")
    assert one(ev, "lambda-config").summary.endswith("(timeout above the API's 10 s integration timeout)")


def test_lambda_throttles_are_a_cause_and_their_twin_is_not():
    v, ev = judge(fm=fmetrics(throttles=7))
    cause = v.details["causes"][0]
    assert cause["cause"] == "Lambda throttling (concurrency limit)" and cause["evidence"] == "Throttles 7 in the window (Invocations 300)"
    assert v.status is Status.WARN and one(ev, "lambda-metrics").status is Status.WARN
    assert judge(fm=fmetrics(throttles=0))[0].details["causes"] == []


def test_a_function_not_invoked_is_ok():
    f = one(judge(fm=FunctionMetrics(function=FN))[1], "lambda-metrics")
    assert f.status is Status.OK and f.summary == "not invoked in the window (no AWS/Lambda datapoints)"


def test_a_missing_function_ranks_first_and_is_crit_evidence():
    v, ev = judge(metrics=traffic(300, 30), cfg=config(exists=False), fe=errors(ErrorType(type="KeyError", count=30)))
    cause = v.details["causes"][0]
    assert cause["kind"] == "missing-function" and cause["evidence"] == "Scorer not found (routes: POST /score)"
    assert len(v.details["causes"]) == 1  # nothing else is judged of a function that does not exist
    assert one(ev, "lambda-config").status is Status.CRIT
    assert one(judge(cfg=config(error="GetFunctionConfiguration: throttled"))[1], "lambda-config").status is Status.UNKNOWN


# --- AccessDenied against the role's policies ------------------------------------------------------------------------


def test_access_denied_no_statement_allows_it():
    v, ev = judge(metrics=traffic(120, 15), fe=errors(denied()))
    cause = v.details["causes"][0]
    assert (cause["kind"], cause["cause"], cause["weight"]) == ("permissions", "permissions: AccessDeniedException", 15)
    assert cause["evidence"] == f"15 lines; dynamodb:Query on {TABLE}: no statement of role {ROLE} (Scorer-Access) allows it"
    assert cause["next"] == f"grant the missing action to the execution role {ROLE} (a reviewed IAM change), then re-run this diagnosis"
    r = one(ev, "lambda-role")
    assert r.status is Status.WARN and r.details["denied"][0]["count"] == 15 and r.summary.startswith("AccessDenied in the logs for dynamodb:Query")
    twin = one(judge()[1], "lambda-role")
    assert twin.status is Status.OK and twin.summary.startswith(f"role {ROLE}: inline ['Scorer-Access'], attached none; allows: Allow dynamodb:GetItem")


def test_access_denied_explained_by_the_policies():
    allow = role([{"Effect": "Allow", "Action": "dynamodb:*", "Resource": TABLE}])
    deny = role([{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}, {"Effect": "Deny", "Action": "dynamodb:Query", "Resource": "*"}])
    assert "allowed by Scorer-Access (look for a permissions boundary" in judge(fe=errors(denied()), roles=allow)[0].details["causes"][0]["evidence"]
    assert "explicitly denied by Scorer-Access" in judge(fe=errors(denied()), roles=deny)[0].details["causes"][0]["evidence"]
    unread = {ROLE: RolePolicies(role=ROLE, error="iam:GetRolePolicy: access denied")}
    v, ev = judge(fe=errors(denied()), roles=unread)
    assert f"role {ROLE} policies unreadable (iam:GetRolePolicy: access denied)" in v.details["causes"][0]["evidence"]
    assert one(ev, "lambda-role").status is Status.UNKNOWN
    assert judge(fe=errors(denied(action=None)))[0].details["causes"][0]["evidence"] == "15 lines; the lines name no action"


# --- pieces ------------------------------------------------------------------------------------------------------------


def test_rank_causes_and_verdict_of_nothing():
    assert rank_causes(API, info(), None, [], {}, {}, {}, {}) == []
    v = api_verdict(API, info(), None, [], [])
    assert v.status is Status.UNKNOWN and "no AWS/ApiGateway datapoints" in v.summary
    assert function_findings(FN, GROUP, None, None, None, {}, 29)[0].status is Status.UNKNOWN
