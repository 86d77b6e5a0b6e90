"""emergency-check end to end against the sandbox: the incident priority, the
escalation named, the errors of the last hour, ALB target health, the deadline."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from flows.emergency_check.flow import TASKS, emergency_check
from flows.emergency_check.judge import TOP_CHECK
from flows.emergency_check.report import emergency_markdown
from opsbook.findings import Finding, Status
from opsbook.iam import iam_action, policy_for
from opsbook.inventory import SYSTEMS_DIR
from opsbook.report import RunReport
from sandbox.faults import _put, apply_fault

SEEDS = ["hr-resource-optimization", "t-developer", "todo-app", "leh"]
TD_SERVICE = "t-developer-cluster-production/t-developer-service-production"


def run(system: str, **params) -> RunReport:
    state = emergency_check(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    assert state.type.value == "COMPLETED"
    return report


def only(report: RunReport, check: str, resource: str | None = None) -> Finding:
    hits = [f for f in report.findings if f.check == check and (resource is None or f.resource == resource)]
    assert len(hits) == 1, (check, resource, hits)
    return hits[0]


def not_ok(report: RunReport):
    return [(f.check, f.resource, f.status.value) for f in report.findings if f.status is not Status.OK]


@pytest.fixture
def healthy(seeded):
    """A seeded system: healthy (sandbox/alb.py puts each ECS service's target group behind an ALB, with healthy IP targets)."""
    return seeded


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_harness")
def test_each_healthy_seed_system_is_p3_and_ok_in_time_with_30ms_latency(healthy, sandbox):
    durations = {}
    for name in SEEDS:
        healthy(name)
    sandbox.set_latency_ms(30)
    for name in SEEDS:
        t0 = time.monotonic()
        report = run(name)
        durations[name] = round(time.monotonic() - t0, 2)
        assert not_ok(report) == [] and report.status is Status.OK, (name, not_ok(report))
        v = report.findings[0]
        assert v.check == "incident-priority" and v.details["priority"] == "P3" and v.summary.startswith("P3")
        checks = {f.check for f in report.findings}
        assert "log-errors" not in checks and "security-logs" not in checks  # no 24 h scans
        assert checks >= {"alarms", "log-errors-1h", TOP_CHECK}
        top = only(report, TOP_CHECK, name)  # no error lines: no top errors
        assert top.details["top_messages"] == [] and top.value == 0 and top.summary.startswith("no ERROR lines in the last 60 min")
        assert ("endpoint" in checks) is (name == "todo-app")  # the one seed that gives a public URL
        assert report.undeclared_iam_actions == [] and report.runbook == "emergency-check"
        md = emergency_markdown(report)
        assert md.splitlines()[0].endswith("**P3**") and "Everything checked is OK." in md and "Top error messages" not in md
    print("emergency-check at 30 ms:", durations)  # a figure, not a check: speed is bench/emergency.py's


@pytest.mark.usefixtures("prefect_harness")
def test_t_developer_ecs_running_zero_is_p0(healthy, sandbox):
    td = healthy("t-developer")
    sandbox.set_ecs_running(td.region, "t-developer-cluster-production", "t-developer-service-production", 0)
    report = run("t-developer")
    v = report.findings[0]
    assert v.details["priority"] == "P0" and v.status is Status.CRIT and report.status is Status.CRIT
    assert v.summary.startswith("P0; escalate to P0: DevOps Lead + Slack #ops (respond within 5 min)")
    assert only(report, "ecs-service", TD_SERVICE).summary == "0 of 2 tasks running"
    assert only(report, "alb-targets").status is Status.OK  # the seed's targets are static IPs
    policy = set(policy_for(TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert used and used <= policy, used - policy
    assert {"elasticloadbalancing:DescribeTargetHealth", "logs:FilterLogEvents"} <= used
    assert not any(op.split(":")[1].startswith(("Put", "Update", "Delete", "Create")) for op in report.api_calls_by_operation)
    # the findings follow the verdict by severity
    assert [f.status for f in report.findings[1:]] == sorted((f.status for f in report.findings[1:]),
                                                             key=["CRIT", "WARN", "UNKNOWN", "OK"].index)


@pytest.mark.usefixtures("prefect_harness")
def test_todo_app_public_health_url_answering_500_is_p0(healthy, sandbox):
    todo = healthy("todo-app")  # its healthy twin: every seed system P3 above, with the endpoint probed OK
    apply_fault(sandbox, todo, "endpoint-500")
    report = run("todo-app")
    v = report.findings[0]
    assert v.details["priority"] == "P0" and v.details["reasons"][0].startswith("endpoint https://api.todo-app.com/health: GET answered 500")
    assert v.summary.startswith("P0; escalate to P0: 모든 이해관계자 (respond within 5 min)")
    assert only(report, "endpoint", "https://api.todo-app.com/health").status is Status.CRIT
    assert "endpoint" in {f.check for f in report.findings} and report.undeclared_iam_actions == []


# one line each, as an application would log them: the secrets of issue 13 (the first five leaked), personal data, and
# what must stay readable
PEM_BODY = ["H6cVi/ZqQOAR0TLqYoeQUKYxJRWdK6f/+FXbamG13SKzDC4DknDttoBUMyzDSRg1",
            "dzC0PRJVMRkveZElyLeFIH8TYz7v0ICjiPEP3NJ07yQrdXswpfcXNrXvkKZL54T1"]
SECRETS = {
    "n7kbPZxZxSwJKjRMiGG2DuRSCY6Wu7VOpyhP8HmJ": "ERROR s3 client built with n7kbPZxZxSwJKjRMiGG2DuRSCY6Wu7VOpyhP8HmJ failed",
    "cmVzdW1lLXN5bmM6V2ludDNyLTIwMjYh": "ERROR 401 from hr-sync Authorization: Basic cmVzdW1lLXN5bmM6V2ludDNyLTIwMjYh",
    "ghp_TMBr8wp7KHA1PH3bVmDiP01s3kjzLtnqw3Lm": "ERROR template fetch with ghp_TMBr8wp7KHA1PH3bVmDiP01s3kjzLtnqw3Lm got 404",
    "xoxb-527829197233-4381300541038-1ggoqAfaDcWViazQLntK3rIz": "ERROR chat.postMessage xoxb-527829197233-4381300541038-1ggoqAfaDcWViazQLntK3rIz invalid_auth",
    PEM_BODY[0]: "ERROR bad signing key -----BEGIN EC PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END EC PRIVATE KEY----- rejected",
    "AKIAQ9JNXOGFT51IQ2IQ": "ERROR AccessDenied for AKIAQ9JNXOGFT51IQ2IQ",
    "n0G9W8uw8de9puyHB9d3xvE_pg3mKBxfeN4_YYsakj8DuzdoRy7q3sRjKMPMEiOe": (
        "ERROR expired eyJhbGciOiAiUlMyNTYiLCAidHlwIjogIkpXVCJ9.eyJzdWIiOiAiZW1wLTQ4MjEiLCAiZXhwIjogMTc2NzIyNTYwMH0."
        "n0G9W8uw8de9puyHB9d3xvE_pg3mKBxfeN4_YYsakj8DuzdoRy7q3sRjKMPMEiOe"),
    "yPkKLmqfqcBj23MrrAPEsikj4QOR5bdc": "ERROR upstream said 403 to Bearer yPkKLmqfqcBj23MrrAPEsikj4QOR5bdc",
    "sk-ant-api03-eo9nKRDZb2kyULKsCW5WdSm4": "ERROR scoring model key sk-ant-api03-eo9nKRDZb2kyULKsCW5WdSm4 rate limited",
    "Wint3r-2026!": "ERROR smtp login password=Wint3r-2026! refused",
    "c0ffee42beef": "ERROR oauth refresh token: c0ffee42beef expired",
    "1XlwIjk1i+DBeoMldpqR5bqdaQVKX97AW7x9IEd9": "ERROR boto config aws_secret_access_key=1XlwIjk1i+DBeoMldpqR5bqdaQVKX97AW7x9IEd9",
    "AIzaSyB3kM9vQ2wX7rT4yU1iO8pL5aS6dF0gH2j": "ERROR geocode api_key=AIzaSyB3kM9vQ2wX7rT4yU1iO8pL5aS6dF0gH2j quota",
    "xdewqDD8Ccv5UkAXGn8MDOAw": "ERROR alert to https://hooks.slack.com/services/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 timed out",
}


@pytest.mark.usefixtures("prefect_harness")
def test_hr_p1_alarm_errors_of_the_last_hour_and_planted_secrets(healthy, sandbox):
    """One run: a P1 alarm names the first escalation and its contact; the errors of the last hour are the subset
    inside the hour with a masked top message; secrets planted in log lines never reach the JSON or the markdown."""
    hr = healthy("hr-resource-optimization")
    # the seed makes every alarm the inventory declares: seed 000's api-gateway-5xx-errors-team2 (P1) among them
    apply_fault(sandbox, hr, "alarm-firing", alarm="api-gateway-5xx-errors-team2")
    now = datetime.now(timezone.utc)
    fault = apply_fault(sandbox, hr, "log-errors", group="/aws/lambda/TechTrendCollector", inside=7, outside=4)
    step = timedelta(minutes=22 * 60 / 7)  # how the fault spreads its lines over the last 22 h
    in_hour = sum(1 for i in range(fault["inside"]) if timedelta(minutes=30) + i * step < timedelta(minutes=59))
    assert 0 < in_hour < fault["inside"]
    lines = list(SECRETS.values()) + ["ERROR resume of kim.minsu@example.com from 81.2.69.142 rejected",
                                      "ERROR sg-0a1b2c3d allows 0.0.0.0/0; parser version 1.2.3.4 at 10.0.3.12 failed"]
    _put(sandbox, hr, "/aws/lambda/ResumeParser", "planted", [(now - timedelta(minutes=5 + i), line) for i, line in enumerate(lines)])
    report = run("hr-resource-optimization")
    assert (datetime.now(timezone.utc) - now) < timedelta(minutes=1)

    v = report.findings[0]
    assert v.check == "incident-priority" and v.details["priority"] == "P1" and v.status is Status.CRIT
    assert v.summary.startswith("P1; escalate to L1: 운영 엔지니어 (operations@example.com, #ops-team)") and "L2 시니어 엔지니어" in v.summary
    assert "api-gateway-5xx-errors-team2" in v.summary
    assert only(report, "alarms", "api-gateway-5xx-errors-team2").details["priority"] == "P1"
    md = emergency_markdown(report)
    assert "**P1**" in md.splitlines()[0] and md.index("Incident priority P1") < md.index("· alarms `api-gateway-5xx-errors-team2`")

    f = only(report, "log-errors-1h", "/aws/lambda/TechTrendCollector")
    assert f.value == in_hour and f.status is Status.WARN  # HR warns from 1 line
    top = f.details["top_messages"][0]
    assert top["count"] == in_hour and "[EMAIL]" in top["message"] and "Task timed out after N.N seconds" in top["message"]
    assert "[EMAIL]" in f.summary and "top:" in f.summary
    assert only(report, "log-errors-1h", "/aws/lambda/AffinityScoreCalculator").value == 0

    out = report.public()  # what `opsbook run emergency-check --json` prints
    text = json.dumps(out, ensure_ascii=False)
    for secret in [*SECRETS, *PEM_BODY, "kim.minsu@example.com", "81.2.69.142", "sk-abcdef"]:
        assert secret not in text and secret not in md, secret
    f = next(x for x in out["findings"] if x["check"] == "log-errors-1h" and x["resource"] == "/aws/lambda/ResumeParser")
    assert f["value"] == len(lines) and f["details"]["sampled"] == len(lines)  # every planted line was read and shown
    samples = "\n".join(f["details"]["samples"])
    for label in ("[SECRET]", "[BASIC-AUTH]", "[GITHUB-TOKEN]", "[SLACK-TOKEN]", "[PRIVATE-KEY]", "[EMAIL]", "[IP]"):
        assert label in samples, label
    assert "allows 0.0.0.0/0; parser version 1.2.3.4 at 10.0.3.12 failed" in samples  # what the on-call needs stays


def iso(t: datetime) -> str:
    return datetime.fromtimestamp(int(t.timestamp() * 1000) / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def plant_a_then_b(sandbox, system, group: str, now: datetime, b_lines: int = 30) -> tuple[list[datetime], list[datetime]]:
    """5 lines of message A early in the hour, then ``b_lines`` of B later (numbers and ids vary: only folding groups them)."""
    a_at = [now - timedelta(minutes=55 - i) for i in range(5)]
    b_at = [now - timedelta(minutes=30 - i * 0.5) for i in range(b_lines)]
    _put(sandbox, system, group, "planted-a", [(t, f"ERROR cache node {10 + i} unreachable after {i * 7} ms") for i, t in enumerate(a_at)])
    _put(sandbox, system, group, "planted-b", [(t, f"ERROR payment {i:04d}-3f2a9c1e-1234-4abc-9def-0123456789{i:02d} for order {7000 + i} "
                                                    f"declined: 0a1b2c3d4e5f{i:04x}") for i, t in enumerate(b_at)])
    return a_at, b_at


@pytest.mark.usefixtures("prefect_harness")
def test_the_most_frequent_message_of_the_hour_is_first_with_counts_and_first_last_seen(healthy, sandbox):
    """The 20 sample lines kept per group were the oldest: 5 of A then 15 of B, so B's count was 15. Every line is ranked now."""
    hr = healthy("hr-resource-optimization")
    now = datetime.now(timezone.utc)
    a_at, b_at = plant_a_then_b(sandbox, hr, "/aws/lambda/ResumeParser", now)
    report = run("hr-resource-optimization")

    top = only(report, TOP_CHECK, "hr-resource-optimization")
    assert top.status is Status.OK and top.value == 35 and top.details["budget_reached"] is False
    ranked = top.details["top_messages"]
    assert [(t["message"], t["count"]) for t in ranked] == [
        ("ERROR payment N-<id> for order N declined: <hex>", 30), ("ERROR cache node N unreachable after N ms", 5)]
    assert (ranked[0]["first_seen"], ranked[0]["last_seen"]) == (iso(b_at[0]), iso(b_at[-1]))
    assert (ranked[1]["first_seen"], ranked[1]["last_seen"]) == (iso(a_at[0]), iso(a_at[-1]))
    assert ranked[0]["groups"] == ranked[1]["groups"] == ["/aws/lambda/ResumeParser"]  # the twin groups added nothing
    group = only(report, "log-errors-1h", "/aws/lambda/ResumeParser")
    assert group.value == 35 and group.details["top_messages"][0]["count"] == 30 and group.details["sampled"] == 20
    twin = only(report, "log-errors-1h", "/aws/lambda/AffinityScoreCalculator")
    assert twin.status is Status.OK and twin.value == 0 and twin.details["top_messages"] == []
    md = emergency_markdown(report)
    assert "**Top error messages, last 60 min** (35 ERROR lines ranked, 2 distinct messages" in md
    assert f"1. ×30 ERROR payment N-<id> for order N declined: <hex> — first {iso(b_at[0])}, last {iso(b_at[-1])} · /aws/lambda/ResumeParser" in md
    assert "2. ×5 ERROR cache node N unreachable after N ms" in md


@pytest.mark.usefixtures("prefect_harness")
def test_a_small_line_budget_is_reached_and_said(healthy, sandbox, tmp_path):
    hr = healthy("hr-resource-optimization")
    plant_a_then_b(sandbox, hr, "/aws/lambda/ResumeParser", datetime.now(timezone.utc))
    inv = yaml.safe_load((SYSTEMS_DIR / "hr-resource-optimization.yaml").read_text())
    inv["thresholds"]["error_lines_budget"] = 12
    path = tmp_path / "hr-resource-optimization.yaml"
    path.write_text(yaml.safe_dump(inv, allow_unicode=True))
    report = run(str(path))

    top = only(report, TOP_CHECK, "hr-resource-optimization")
    assert top.status is Status.UNKNOWN and top.details["budget_reached"] is True and top.details["budget"] == 12
    assert top.details["cut_groups"] == ["/aws/lambda/ResumeParser"] and 0 < top.value <= 12
    assert top.summary.startswith(f"ranked the first {top.value} of ≥{top.details['lines_seen']} lines; the budget (12 lines) was reached "
                                  "(cut: /aws/lambda/ResumeParser)")
    group = only(report, "log-errors-1h", "/aws/lambda/ResumeParser")
    assert group.summary.startswith(f"≥{group.value} ERROR lines in the last 60 min (the line budget was reached") and group.details["cut"]
    assert group.status is Status.WARN  # HR warns from 1 line: the lower bound reaches it
    assert f"{TOP_CHECK} hr-resource-optimization" in report.findings[0].details["blind_spots"]
    assert "the budget (12 lines) was reached (cut: /aws/lambda/ResumeParser)" in emergency_markdown(report)


@pytest.mark.usefixtures("prefect_harness")
def test_missing_target_group_is_unknown_with_the_reason(seeded, sandbox):
    apply_fault(sandbox, seeded("t-developer"), "alb-target-group-missing")  # the healthy twin: the test of every seed system above
    report = run("t-developer")
    f = only(report, "alb-targets", "t-developer-tg-production")
    assert f.status is Status.UNKNOWN and "target group t-developer-tg-production not found in us-east-1" in f.summary
    assert "check the inventory's target_group" in f.summary
    for check in ("alb-latency", "alb-5xx", "alb-unhealthy"):  # its metrics cannot be found either
        assert "not found" in only(report, check, "t-developer-tg-production").summary
    v = report.findings[0]
    assert v.details["priority"] == "P3" and sorted(v.details["blind_spots"]) == [
        "alb-5xx t-developer-tg-production", "alb-latency t-developer-tg-production", "alb-targets t-developer-tg-production",
        "alb-unhealthy t-developer-tg-production"]


@pytest.mark.usefixtures("prefect_harness")
def test_t_developer_agent_slower_than_60_s_is_p1_naming_the_agent(healthy, sandbox):
    """001 P1 (응답시간 > 60초) and 성능 이슈 대응 1 (병목 에이전트 식별): the twin is the healthy T-Developer above (P3, every
    agent, the pipeline, CPU/memory and the target group's numbers OK)."""
    td = healthy("t-developer")
    apply_fault(sandbox, td, "tdev-slow-agent", agent="generation", seconds=75)
    report = run("t-developer")
    f = only(report, "agent-time", "generation")
    assert f.status is Status.CRIT and f.value == 75.0
    assert f.summary.startswith("agent generation execution_time p95 75.00 s over the last 60 min (24 runs, max 75.00 s; target 10 s, CRIT past 60 s")
    assert only(report, "agent-time", TD_SERVICE).value == 8  # the other agents: within their target
    assert only(report, "pipeline-time", TD_SERVICE).value == 75.0  # the runs it slowed (request ids of its own: 75 s each)
    assert sorted(not_ok(report)) == [("agent-time", "generation", "CRIT"), ("incident-priority", "t-developer", "CRIT"),
                                      ("pipeline-time", TD_SERVICE, "CRIT")]
    v = report.findings[0]
    assert v.details["priority"] == "P1" and v.details["reasons"][0].startswith("agent generation: agent generation execution_time p95 75.00 s")
    assert report.api_calls_by_operation["logs:FilterLogEvents"] >= 2 and report.undeclared_iam_actions == []


@pytest.mark.usefixtures("prefect_harness")
def test_a_slow_aws_ends_unknown_at_the_deadline(healthy, sandbox):
    healthy("hr-resource-optimization")
    sandbox.set_latency_ms(1500)
    report = run("hr-resource-optimization", deadline_seconds=1.0)
    # every call takes 1.5 s, the deadline is 1 s: the checks still in flight at the deadline are UNKNOWN, saying so,
    # and the verdict is reached without them (not a wall-clock assertion: what is late is named)
    late = [f for f in report.findings if f.status is Status.UNKNOWN and "within the run's deadline (" in f.summary]
    assert late, [(f.check, f.summary) for f in report.findings]
    assert report.status is not Status.OK
    assert report.findings[0].check == "incident-priority"


@pytest.fixture
def silent_endpoint():
    """An address that accepts connections and never answers (an AWS endpoint that hangs)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.mark.usefixtures("prefect_harness")
def test_a_hung_endpoint_is_unknown_at_the_deadline_and_every_check_blind_escalates_as_for_p1(healthy, sandbox, silent_endpoint,
                                                                                                monkeypatch):
    healthy("todo-app")
    # Lambda hangs, the rest answers: Lambda is UNKNOWN at the deadline, the rest is read, P3 only as far as seen
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", silent_endpoint)
    report = run("todo-app", deadline_seconds=3.0)
    lam = only(report, "lambda-state", "todo-api")
    assert lam.status is Status.UNKNOWN and "deadline" in lam.summary
    assert only(report, "dynamodb-status", "todos").status is Status.OK  # the twin in the same run: read, fine
    v = report.findings[0]
    assert v.details["priority"] == "P3" and v.status is Status.UNKNOWN and "only as far as seen" in v.summary
    # every endpoint hangs: nothing could be read, so never P3: UNKNOWN, escalated as for P1
    monkeypatch.setenv("AWS_ENDPOINT_URL", silent_endpoint)
    monkeypatch.setenv("OPSBOOK_ENDPOINT_MAP", f"https={silent_endpoint},http={silent_endpoint}")  # users' endpoint too
    report = run("todo-app", deadline_seconds=3.0)
    v = report.findings[0]
    assert v.details["priority"] == "UNKNOWN" and v.status is Status.UNKNOWN and report.status is Status.UNKNOWN
    assert v.details["escalation"]["level"] == "P1" and "escalate as for P1" in v.summary
    assert all(f.status is Status.UNKNOWN for f in report.findings if f.check in ("dynamodb-status", "lambda-state", "s3-storage"))
