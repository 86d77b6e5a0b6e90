"""daily-health end to end inside the test process: sandbox (moto server +
OpenSearch test double on 127.0.0.1), a Prefect test server, each named fault
injected and the exact finding asserted."""

from __future__ import annotations

import json
import re

import boto3
import pytest

from flows.daily_health.flow import TASKS, daily_health
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.report import RunReport
from sandbox.faults import apply_fault

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(system: str, **params) -> tuple[RunReport, str]:
    state = daily_health(system=system, notify=params.pop("notify", False), return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report, state.type.value


def only(report: RunReport, check: str, resource: str | None = None):
    hits = [f for f in report.findings if f.check == check and (resource is None or f.resource == resource)]
    assert len(hits) == 1, (check, resource, hits)
    return hits[0]


def not_ok(report: RunReport):
    return [(f.check, f.resource, f.status.value) for f in report.findings if f.status is not Status.OK]


def test_healthy_hr_is_ok_checks_every_component_and_calls_only_what_the_policy_grants(seeded):
    seeded("hr-resource-optimization")
    report, state = run("hr-resource-optimization", notify=True)
    assert not_ok(report) == [] and report.status is Status.OK and state == "COMPLETED"
    checks = {f.check for f in report.findings}
    assert checks >= {"lambda-state", "lambda-alias", "dynamodb-status", "dynamodb-backup", "opensearch-domain",
                      "opensearch-health", "apigateway-present", "s3-storage", "alarms", "log-errors"}
    assert len([f for f in report.findings if f.check == "lambda-state"]) == 8
    assert len([f for f in report.findings if f.check == "log-errors"]) == 8
    assert only(report, "s3-storage", "hr-resumes-bucket-team2").value == 5 * 1024**3
    assert report.api_calls == sum(report.api_calls_by_operation.values()) > 0
    policy = set(policy_for(TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert used and used <= policy, used - policy
    assert report.undeclared_iam_actions == []


def test_declared_alarms_missing_silent_or_without_data_are_each_a_warning_named_after_the_alarm(seeded, sandbox):
    """Seed 000 calls for lambda-errors-<function>-team2 on every function, tag-discovered ones too; the twin is the
    healthy run above (every declared alarm there: one OK line)."""
    hr = seeded("hr-resource-optimization", extra={"functions": 2})
    apply_fault(sandbox, hr, "alarm-missing", alarm="lambda-errors-hr-resource-optimization-extra-fn-1-team2")  # discovered by tag only
    apply_fault(sandbox, hr, "alarm-no-actions", alarm="api-gateway-latency")
    apply_fault(sandbox, hr, "alarm-insufficient-data", alarm="dynamodb-read-throttle-Employees-Team2", minutes=200)
    report, _ = run("hr-resource-optimization")
    assert sorted(not_ok(report)) == [("alarms", "api-gateway-latency", "WARN"), ("alarms", "dynamodb-read-throttle-Employees-Team2", "WARN"),
                                      ("alarms", "lambda-errors-hr-resource-optimization-extra-fn-1-team2", "WARN")]
    assert "does not exist" in only(report, "alarms", "lambda-errors-hr-resource-optimization-extra-fn-1-team2").summary
    assert "no alarm actions" in only(report, "alarms", "api-gateway-latency").summary
    assert re.search(r"INSUFFICIENT_DATA for 3\.[3-9] h", only(report, "alarms", "dynamodb-read-throttle-Employees-Team2").summary)
    assert only(report, "alarms", "declared alarms").value == 8 + 2 + 2 + 6 + 6 - 3  # every other declared alarm, checked


def test_declared_alarms_notifying_a_deleted_topic_are_warnings_and_a_firing_one_keeps_its_priority(seeded, sandbox):
    todo = seeded("todo-app")
    healthy, _ = run("todo-app")
    assert not_ok(healthy) == [] and only(healthy, "alarms", "declared alarms").value == 2
    apply_fault(sandbox, todo, "alarm-topic-deleted")
    apply_fault(sandbox, todo, "alarm-firing", alarm="todo-api-high-error-rate")
    report, _ = run("todo-app")
    assert sorted(not_ok(report)) == [("alarms", "todo-api-high-error-rate", "CRIT"), ("alarms", "todo-api-high-error-rate", "WARN"),
                                      ("alarms", "todo-api-high-latency", "WARN")]
    assert all("alerts does not exist" in f.summary for f in report.findings if f.status is Status.WARN)
    firing = [f for f in report.findings if f.resource == "todo-api-high-error-rate" and f.status is Status.CRIT]
    assert firing[0].summary.startswith("in ALARM (P1)")


def test_hr_faults_each_found_the_run_fails_with_its_saved_masked_report(seeded, sandbox):
    """One run, several independent faults (each rule at its thresholds: tests/opsbook/test_components.py)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    hr = seeded("hr-resource-optimization")
    apply_fault(sandbox, hr, "table-missing", table="Projects-Team2")
    apply_fault(sandbox, hr, "alarm-firing", alarm="lambda-errors-ResumeParser-team2")
    apply_fault(sandbox, hr, "alarm-firing", alarm="team2-high-error-rate")
    apply_fault(sandbox, hr, "log-errors", group="/aws/lambda/ResumeParser", inside=7, outside=4)
    apply_fault(sandbox, hr, "log-errors", group="/aws/lambda/TechTrendCollector", inside=60, outside=0)
    apply_fault(sandbox, hr, "opensearch-red")
    report, state = run("hr-resource-optimization")
    f = only(report, "dynamodb-status", "Projects-Team2")
    assert f.status is Status.CRIT and "named in the inventory but does not exist" in f.summary
    assert report.status is Status.CRIT and state == "FAILED"
    a = only(report, "alarms", "lambda-errors-ResumeParser-team2")
    assert a.status is Status.WARN and "(P2)" in a.summary  # lambda-errors-* is P2 in seed 000
    assert only(report, "alarms", "team2-high-error-rate").status is Status.CRIT
    f = only(report, "log-errors", "/aws/lambda/ResumeParser")
    assert f.value == 7 and f.status is Status.WARN  # only the lines inside the last 24 h
    assert "kim.minsu@example.com" not in json.dumps(report.public()) and "[EMAIL]" in f.summary
    assert "sk-abcdef" not in json.dumps(report.public())
    assert only(report, "log-errors", "/aws/lambda/AffinityScoreCalculator").value == 0
    f = only(report, "log-errors", "/aws/lambda/TechTrendCollector")
    assert f.value == 60 and f.status is Status.CRIT  # HR: crit at 50
    f = only(report, "opensearch-health", "hr-resource-optimization-team2")
    assert f.status is Status.CRIT and f.value == 2 and "cluster red" in f.summary and "employee_profiles" in f.summary
    assert only(report, "opensearch-domain").status is Status.OK
    assert sorted(not_ok(report)) == sorted([
        ("dynamodb-status", "Projects-Team2", "CRIT"), ("alarms", "lambda-errors-ResumeParser-team2", "WARN"),
        ("alarms", "team2-high-error-rate", "CRIT"), ("log-errors", "/aws/lambda/ResumeParser", "WARN"),
        ("log-errors", "/aws/lambda/TechTrendCollector", "CRIT"), ("opensearch-health", "hr-resource-optimization-team2", "CRIT")])
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["daily-health-hr-resource-optimization"])))
        tables = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["daily-health-hr-resource-optimization-findings"])))
    latest = max(arts, key=lambda a: a.created)
    assert "CRIT" in latest.data and "/aws/lambda/ResumeParser" in latest.data
    assert "example.com" not in latest.data
    rows = json.loads(max(tables, key=lambda a: a.created).data)
    assert len(rows) == len(report.findings) and "example.com" not in json.dumps(rows)


def test_opensearch_unreachable_is_unknown_in_seconds(seeded, sandbox):
    hr = seeded("hr-resource-optimization")
    apply_fault(sandbox, hr, "opensearch-unreachable")
    report, _ = run("hr-resource-optimization")
    f = only(report, "opensearch-health")
    assert f.status is Status.UNKNOWN and "unreachable" in f.summary
    assert report.status is Status.UNKNOWN


def test_t_developer_degraded_service_security_events_and_items_of_yesterday_in_seoul(seeded, sandbox):
    td = seeded("t-developer")
    apply_fault(sandbox, td, "ecs-degraded", running=1)
    apply_fault(sandbox, td, "security-events", failed_logins=25, rate_limited=3)
    ddb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=sandbox.endpoint)
    ddb.put_item(TableName="t-developer-metadata-production", Item={"id": {"S": "today"}, "created_at": {"S": "2999-01-01T00:00:00Z"}})
    report, _ = run("t-developer")
    f = only(report, "ecs-service", "t-developer-cluster-production/t-developer-service-production")
    assert f.status is Status.WARN and f.value == 1 and "1 of 2 tasks running" in f.summary  # 0 running is CRIT: test_components
    assert only(report, "failed-logins").value == 25 and only(report, "failed-logins").status is Status.WARN
    assert only(report, "rate-limit-events").value == 3 and only(report, "rate-limit-events").status is Status.OK
    assert "lee@example.com" not in json.dumps(report.public())
    f = only(report, "dynamodb-items-yesterday")  # the item stamped in the future is not yesterday's
    assert f.value == 5 and f.status is Status.OK  # fewer than the minimum is WARN: test_components


def test_backup_missing(seeded, sandbox):
    todo = seeded("todo-app")  # its healthy twin: dynamodb-backup OK in the healthy hr run
    apply_fault(sandbox, todo, "backup-missing")
    report, _ = run("todo-app")
    f = only(report, "dynamodb-backup", "todos")
    assert f.status is Status.CRIT and "PITR DISABLED" in f.summary
    assert only(report, "lambda-alias", "todo-api:LIVE").status is Status.OK


def test_todo_app_probes_its_public_health_url_500_is_crit_and_its_healthy_twin_ok(seeded, sandbox):
    todo = seeded("todo-app")
    report, _ = run("todo-app")  # the healthy twin
    f = only(report, "endpoint", "https://api.todo-app.com/health")
    assert f.status is Status.OK and f.summary.startswith("GET answered 200 in ") and f.details["probed_url"].startswith("https://127.0.0.1:")
    assert only(report, "endpoint-tls", "https://api.todo-app.com/health").status is Status.OK
    assert not_ok(report) == [] and report.undeclared_iam_actions == []
    apply_fault(sandbox, todo, "endpoint-500")
    report, state = run("todo-app")
    f = only(report, "endpoint", "https://api.todo-app.com/health")
    assert f.status is Status.CRIT and "answered 500" in f.summary and report.status is Status.CRIT and state == "FAILED"
    assert not_ok(report) == [("endpoint", "https://api.todo-app.com/health", "CRIT")]


def test_tag_discovery_and_named_resources_combine_as_a_union(seeded, sandbox):
    seeded("hr-resource-optimization", extra={"functions": 2})
    lam = boto3.client("lambda", region_name="us-east-2", endpoint_url=sandbox.endpoint)
    lam.delete_function(FunctionName="VectorEmbeddingGenerator")
    report, _ = run("hr-resource-optimization")
    fns = {f.resource: f for f in report.findings if f.check == "lambda-state"}
    assert set(fns) >= {"hr-resource-optimization-extra-fn-0", "hr-resource-optimization-extra-fn-1", "ResumeParser"}
    assert len(fns) == 10
    assert fns["VectorEmbeddingGenerator"].status is Status.CRIT and "does not exist" in fns["VectorEmbeddingGenerator"].summary
    assert fns["hr-resource-optimization-extra-fn-0"].status is Status.OK
    assert "/aws/lambda/hr-resource-optimization-extra-fn-1" in {f.resource for f in report.findings if f.check == "log-errors"}


def test_aws_unreachable_ends_unknown_in_seconds(monkeypatch, closed_port):
    from opsbook import aws

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("OPSBOOK_OPENSEARCH_URL_TEMPLATE", f"http://127.0.0.1:{closed_port}/{{domain}}")
    monkeypatch.setenv("OPSBOOK_MAX_ATTEMPTS", "1")  # botocore's retry backoff (seconds a call) is not what this is about
    aws.reset_clients()
    report, _ = run("todo-app")  # how long a dead endpoint can hold a call is tests/opsbook/test_aws.py's (client config)
    assert report.status is Status.UNKNOWN
    assert report.findings and all(f.status is Status.UNKNOWN for f in report.findings)
    assert all("cannot reach AWS endpoint" in f.summary for f in report.findings if f.check not in ("discovery", "endpoint"))
    assert "reaches loopback only" in only(report, "endpoint").summary  # not AWS; and no sandbox map to probe with
    aws.reset_clients()


def test_notifies_once_per_change_and_on_recovery(seeded, sandbox):
    from prefect.variables import Variable

    Variable.unset("opsbook_daily-health_leh_notified".replace("-", "_"))
    leh = seeded("leh")
    sns = boto3.client("sns", region_name="ap-northeast-2", endpoint_url=sandbox.endpoint)
    sqs = boto3.client("sqs", region_name="ap-northeast-2", endpoint_url=sandbox.endpoint)
    inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = [t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(":leh-alerts")][0]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)

    def received():
        msgs = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        for m in msgs:
            sqs.delete_message(QueueUrl=inbox, ReceiptHandle=m["ReceiptHandle"])
        return [json.loads(m["Body"]) for m in msgs]

    run("leh", notify=True)
    assert received() == []  # OK from the start: nothing to say
    apply_fault(sandbox, leh, "dlq-messages", count=3)
    report, _ = run("leh", notify=True)
    assert only(report, "dlq-depth", "leh-ai-jobs-dlq").value == 3 and not_ok(report) == [("dlq-depth", "leh-ai-jobs-dlq", "WARN")]
    first = received()
    assert len(first) == 1 and first[0]["Subject"].startswith("[opsbook WARN]") and report.notification["kind"] == "alert"
    run("leh", notify=True)
    assert received() == []  # still WARN: no second message
    sqs.purge_queue(QueueUrl=sqs.get_queue_url(QueueName="leh-ai-jobs-dlq")["QueueUrl"])
    report, _ = run("leh", notify=True)
    rec = received()
    assert len(rec) == 1 and rec[0]["Subject"].startswith("[opsbook RECOVERED]") and report.status is Status.OK


def test_lambda_duration_p99_against_the_timeout_crit_warn_and_the_healthy_twin(seeded, sandbox):
    """Each function's Duration p99 over 24 h against its configured timeout (HR's thresholds: WARN 80 %, CRIT 95 %); the
    rule's edges are tests/opsbook/test_components.py's. A function without invocations is idle, not unknown."""
    hr = seeded("hr-resource-optimization", extra={"functions": 1})
    apply_fault(sandbox, hr, "lambda-slow", function="ResumeParser", share=0.96)  # timeout 300 s: p99 288 s
    apply_fault(sandbox, hr, "lambda-slow", function="AffinityScoreCalculator", share=0.85)  # 180 s: 153 s
    apply_fault(sandbox, hr, "lambda-slow", function="QuantitativeAnalysis", share=0.50)  # the healthy twin: 60 of 120 s
    report, state = run("hr-resource-optimization")
    durations = {f.resource: f for f in report.findings if f.check == "lambda-duration"}
    assert len(durations) == 9 and "hr-resource-optimization-extra-fn-0" in durations  # named and tag-discovered
    crit, warn, ok = durations["ResumeParser"], durations["AffinityScoreCalculator"], durations["QuantitativeAnalysis"]
    assert crit.status is Status.CRIT and crit.value == 96.0 and "Duration p99 288.00 s" in crit.summary and "300 s timeout" in crit.summary
    assert warn.status is Status.WARN and warn.value == 85.0 and "85 % of its 180 s timeout" in warn.summary
    assert ok.status is Status.OK and ok.value == 50.0 and ok.details["p99_ms"] == 60000.0
    idle = durations["TechTrendCollector"]
    assert idle.status is Status.OK and "no invocations in the window" in idle.summary
    assert report.status is Status.CRIT and state == "FAILED"
    assert {(c, r) for c, r, _ in not_ok(report)} == {("lambda-duration", "ResumeParser"), ("lambda-duration", "AffinityScoreCalculator")}
    assert report.api_calls_by_operation["cloudwatch:GetMetricData"] >= 1 and report.undeclared_iam_actions == []


@pytest.mark.filterwarnings("ignore:Exception\\(AccessDenied\\):UserWarning")  # moto: CloudWatch models no AccessDenied shape
def test_lambda_duration_unreadable_metrics_are_unknown_never_ok(seeded, sandbox):
    from sandbox.lambda_timeouts import metrics_unreadable

    todo = seeded("todo-app")
    metrics_unreadable(sandbox, todo)
    report, _ = run("todo-app")
    f = only(report, "lambda-duration", "todo-api")
    assert f.status is Status.UNKNOWN and "Duration p99" in f.summary and "not authorized" in f.summary.lower()
    f = only(report, "availability", "todo-api")  # the requests and 5XX of the same 24 h: unread, so never OK
    assert f.status is Status.UNKNOWN and "GetMetricData" in f.summary and "not authorized" in f.summary.lower()


def test_availability_below_the_slo_is_crit_and_its_healthy_twins_ok_with_traffic_and_without(seeded, sandbox):
    """todo-app's API (API Gateway, SLO 99.9 %) and T-Developer's target group (ALB, SLO 99.5 %), 1 - 5XX / requests over 24 h;
    the rule's edges (exactly at the SLO, budget mostly spent, unreadable) are tests/opsbook/test_availability.py's."""
    from sandbox.metrics import recent_traffic

    todo, td = seeded("todo-app", "t-developer")
    recent_traffic(sandbox, todo, 10_000, 3)  # todo-app's healthy twin: 99.97 %, 70 % of the budget left; T-Developer's: its
    # seeded last hour (sandbox/ecs_performance.py: 1,200 requests, no 5XX); no traffic at all: tests/opsbook/test_availability.py
    healthy = {name: run(name)[0] for name in ("todo-app", "t-developer")}
    api, tg = only(healthy["todo-app"], "availability", "todo-api"), only(healthy["t-developer"], "availability", "t-developer-tg-production")
    assert api.status is Status.OK and api.value == pytest.approx(99.97) and api.details["budget_left_pct"] == 70
    assert api.summary.startswith("99.97 % available over the last 24 h (3 5XX of 10,000 requests) against the 99.9 % SLO; error budget 10 5XX")
    assert tg.status is Status.OK and tg.value == 100 and tg.details["requests"] == 1200 and tg.summary.startswith("100 % available")
    assert tg.details["service"] == "t-developer-cluster-production/t-developer-service-production" and "app/t-developer-alb/" in tg.details["source"]
    assert all(not_ok(r) == [] for r in healthy.values()), {n: not_ok(r) for n, r in healthy.items()}
    assert healthy["t-developer"].api_calls_by_operation["elbv2:DescribeTargetGroups"] == 1  # shared with the target group's metrics
    assert healthy["t-developer"].api_calls_by_operation["cloudwatch:GetMetricData"] == 4  # one batch (and S3 storage, ECS, the hour's ALB)

    apply_fault(sandbox, todo, "slo-breach")  # 2 % of 10,000 more requests failed in the same 24 h
    apply_fault(sandbox, td, "slo-breach")
    for name, subject, slo in (("todo-app", "todo-api", "99.9 %"), ("t-developer", "t-developer-tg-production", "99.5 %")):
        report, state = run(name)
        f = only(report, "availability", subject)
        assert f.status is Status.CRIT and f.summary.startswith("BELOW SLO: ") and f"against the {slo} SLO" in f.summary, f.summary
        assert f.details["below_slo"] and f.details["budget_left_pct"] < 0 and f.details["burn_rate"] > 1
        assert not_ok(report) == [("availability", subject, "CRIT")] and state == "FAILED" and report.undeclared_iam_actions == []
    assert f.details["requests"] == 11_200 and f.details["errors_5xx"] == 200 and f.value == pytest.approx(98.21, abs=0.01)  # T-Developer: the
    # burst (2 % of 10,000) and the seeded hour (1,200 requests, no 5XX)


def test_t_developer_performance_faults_each_found_and_the_healthy_twin_ok(seeded, sandbox):
    """001 P1 / 성능 모니터링: ECS CPU and memory (Maximum of the last hour), the target group's p95, 5XX and unhealthy hosts,
    the agents' execution_time lines; the seed's healthy hour is OK on every one; then one run with six faults (each
    rule at its edges: tests/opsbook/test_performance.py; an agent past 60 s is P1: tests/flows/emergency_check/test_flow.py)."""
    td = seeded("t-developer")
    healthy, _ = run("t-developer")
    assert not_ok(healthy) == [] and healthy.undeclared_iam_actions == []
    svc = "t-developer-cluster-production/t-developer-service-production"
    assert only(healthy, "ecs-cpu", svc).value == 38.5 and "(target 70 %)" in only(healthy, "ecs-cpu", svc).summary  # 35 x 1.1
    assert only(healthy, "ecs-memory", svc).value == 59.4
    assert only(healthy, "alb-latency").details["target_s"] == 45 and only(healthy, "alb-latency").value < 45
    assert only(healthy, "alb-5xx").value == 0 and only(healthy, "alb-unhealthy").summary.startswith("0 unhealthy, 2 healthy")
    assert only(healthy, "agent-time", svc).value == 9 and only(healthy, "pipeline-time", svc).value < 45  # 9 agents within 10 s
    calls = healthy.api_calls_by_operation
    assert calls["cloudwatch:GetMetricData"] == 4  # ECS utilisation, the target group, availability: one call each (and the S3 storage)
    assert calls["elbv2:DescribeTargetGroups"] == 1 and calls["logs:FilterLogEvents"] >= 4  # errors, security x 2, agents

    apply_fault(sandbox, td, "tdev-cpu-hot", pct=92)
    apply_fault(sandbox, td, "tdev-memory-hot", pct=85)
    apply_fault(sandbox, td, "tdev-alb-5xx", errors=40)
    apply_fault(sandbox, td, "tdev-slow-responses", seconds=65)
    apply_fault(sandbox, td, "tdev-unhealthy-hosts", unhealthy=1)
    apply_fault(sandbox, td, "tdev-slow-agent", agent="search", seconds=25)
    report, state = run("t-developer")
    tg = "t-developer-tg-production"
    assert sorted(not_ok(report)) == [("agent-time", "search", "WARN"), ("alb-5xx", tg, "WARN"), ("alb-latency", tg, "CRIT"),
                                      ("alb-unhealthy", tg, "WARN"), ("availability", tg, "CRIT"),  # 40 5XX of 1,200: 96.67 % < 99.5 %
                                      ("ecs-cpu", svc, "WARN"), ("ecs-memory", svc, "WARN")] and state == "FAILED"
    agent = only(report, "agent-time", "search")
    assert agent.value == 25.0 and "target 10 s, CRIT past 60 s" in agent.summary and only(report, "agent-time", svc).value == 8
    assert only(report, "pipeline-time", svc).status is Status.OK  # 25 s runs: under the 45 s SLO
    cpu = only(report, "ecs-cpu", svc)
    assert cpu.value == 92.0 and cpu.summary.startswith("CPU peaked at 92.0 % over the last 1 h (target 70 %): over its target")
    assert only(report, "ecs-memory", svc).summary.startswith("memory peaked at 85.0 % over the last 1 h (target 80 %)")
    errors = only(report, "alb-5xx")
    assert errors.value == 3.33 and "40 target 5XX of 1200 requests (3.33 %)" in errors.summary and "target 2 %" in errors.summary
    slow = only(report, "alb-latency")
    assert slow.value == 65.0 and slow.summary.startswith("TargetResponseTime p95 65.00 s over the last 1 h") and "responses > 60 s" in slow.summary
    assert only(report, "alb-unhealthy").summary.startswith("1 unhealthy, 1 healthy host(s) in the newest minute")
    assert report.api_calls_by_operation["cloudwatch:GetMetricData"] == 4
