"""emergency-check's judging, fed findings and log counts directly: no sandbox, no Prefect."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flows.emergency_check.judge import (
    RECENT_CHECK,
    TOP_CHECK,
    escalation_for,
    implied_priority,
    judge_recent,
    judge_recent_errors,
    judge_top_errors,
    judge_window_errors,
    rank_messages,
    verdict,
)
from opsbook.findings import Finding, Status
from opsbook.inventory import System, Thresholds, load_system

SEEDS = ["hr-resource-optimization", "t-developer", "todo-app", "leh"]


def F(check, resource, status, value=None, **details):
    return Finding(check=check, resource=resource, status=Status(status), summary=f"{check} {status}", value=value, details=details)


def counted(n, samples=(), top=()):
    return {"count": n, "samples": list(samples), "pages": 1, "top": list(top)}


# --- errors of the last hour ----------------------------------------------------------------------


@pytest.mark.parametrize(("n", "status"), [(0, Status.OK), (4, Status.OK), (5, Status.WARN), (49, Status.WARN), (50, Status.CRIT)])
def test_recent_errors_at_each_threshold(n, status):
    f = judge_recent("/aws/lambda/a", counted(n), None, 5, 50, 60)
    assert f.check == RECENT_CHECK and f.status is status and f.value == n
    assert f.summary == f"{n} ERROR lines in the last 60 min" and f.details["window_minutes"] == 60


def test_recent_errors_name_the_top_messages_masked():
    top = [{"message": "ERROR timeout for kim.minsu@example.com", "count": 3}, {"message": "ERROR db gone", "count": 1}]
    f = judge_recent("/g", counted(4, ["a", "b", "c", "d"], top), None, 1, 100, 60)
    assert "top: ERROR timeout for" in f.summary and "(×3); ERROR db gone (×1)" in f.summary
    assert f.details["sampled"] == 4 and f.details["top_messages"] == top


def test_recent_errors_missing_or_unreadable_group_is_unknown():
    missing = judge_recent("/g", None, None, 1, 100, 60)
    assert missing.status is Status.UNKNOWN and "log group does not exist" in missing.summary
    denied = judge_recent("/g", None, "FilterLogEvents: access denied", 1, 100, 60)
    assert denied.status is Status.UNKNOWN and "access denied" in denied.summary


def test_recent_errors_use_the_daily_thresholds_per_group():
    reads = [{"group": "/a", "result": counted(0), "unreadable": None}, {"group": "/b", "result": counted(100), "unreadable": None},
             {"group": "/c", "result": None, "unreadable": "throttled"}]
    got = judge_recent_errors(reads, Thresholds(log_errors_warn=1, log_errors_crit=100), 60)
    assert [(f.resource, f.status) for f in got] == [("/a", Status.OK), ("/b", Status.CRIT), ("/c", Status.UNKNOWN)]
    assert judge_recent_errors([], Thresholds(), 60) == []


# --- the messages of the hour ranked over every line -------------------------------------------------

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=timezone.utc)


def ms(minute: float) -> int:
    return int((T0 + timedelta(minutes=minute)).timestamp() * 1000)


def read(group, lines, cut=False, seen=None):
    """A group as tasks.logs.count_recent_errors answers it: lines are (minute, masked line)."""
    ls = [(ms(m), line) for m, line in lines]
    return {"group": group, "unreadable": None,
            "result": {"count": len(ls) if seen is None else seen, "samples": [x for _, x in ls[:20]], "pages": 1, "lines": ls, "cut": cut}}


def test_ranking_nothing_read_is_empty():
    assert rank_messages([]) == []
    f = judge_top_errors([read("/a", []), read("/b", [])], "sys", 60, 10_000)[0]
    assert f.check == TOP_CHECK and f.resource == "sys" and f.status is Status.OK and f.value == 0
    assert f.details["top_messages"] == [] and f.summary == "no ERROR lines in the last 60 min in the 2 log group(s) read"
    assert judge_top_errors([], "sys", 60, 10_000) == []  # no log groups: no ranking


def test_ranking_one_message_folded_with_first_and_last_seen():
    got = rank_messages([("/a", ms(10 + i), f"ERROR order {1000 + i} failed for 3f2a9c1e-1234-4abc-9def-0123456789a{i}") for i in range(4)])
    assert got == [{"message": "ERROR order N failed for <id>", "count": 4, "first_seen": "2026-12-04T08:10:00Z",
                    "last_seen": "2026-12-04T08:13:00Z", "groups": ["/a"]}]


def test_ranking_puts_the_most_frequent_first_over_every_line_and_group():
    """The bug: 20 samples, the oldest, made the early message A the top; every line read makes B the top."""
    a = [(1 + i, f"ERROR cache miss for key {i}") for i in range(25)]
    b = [(30 + i * 0.5, f"ERROR payment {i} declined by gateway gw-{i % 3}") for i in range(30)]
    reads = [read("/a", a[:10] + b[:10]), read("/b", a[10:] + b[10:])]
    f = judge_top_errors(reads, "sys", 60, 10_000)[0]
    top = f.details["top_messages"]
    assert [(t["message"], t["count"], t["groups"]) for t in top] == [
        ("ERROR payment N declined by gateway gw-N", 30, ["/a", "/b"]), ("ERROR cache miss for key N", 25, ["/a", "/b"])]
    assert (top[0]["first_seen"], top[0]["last_seen"]) == ("2026-12-04T08:30:00Z", "2026-12-04T08:44:30Z")
    assert (top[1]["first_seen"], top[1]["last_seen"]) == ("2026-12-04T08:01:00Z", "2026-12-04T08:25:00Z")
    assert f.status is Status.OK and f.value == 55 and f.details["budget_reached"] is False and f.details["messages"] == 2
    assert f.summary.startswith("2 distinct message(s) in 55 ERROR lines of the last 60 min; top: ERROR payment N declined by gateway gw-N (×30, 08:30:00Z–08:44:30Z)")
    # each group's own finding ranks its own lines, not its first 20
    per = {x.resource: x for x in judge_recent_errors(reads, Thresholds(log_errors_warn=1, log_errors_crit=100), 60)}
    assert per["/b"].details["top_messages"][0]["count"] == 20 and per["/b"].details["top_messages"][0]["message"].startswith("ERROR payment")
    assert per["/b"].details["sampled"] == 20 and per["/b"].details["lines_ranked"] == 35


def test_ranking_ties_go_to_the_message_seen_first_then_the_message():
    lines = [("/a", ms(5), "ERROR b"), ("/a", ms(1), "ERROR c"), ("/a", ms(6), "ERROR b"), ("/a", ms(2), "ERROR c"),
             ("/a", ms(3), "ERROR a"), ("/b", ms(3), "ERROR a"), ("/a", ms(0), "ERROR x")]
    assert [(t["message"], t["count"]) for t in rank_messages(lines)] == [("ERROR c", 2), ("ERROR a", 2), ("ERROR b", 2), ("ERROR x", 1)]
    assert [t["message"] for t in rank_messages(reversed(lines))] == ["ERROR c", "ERROR a", "ERROR b", "ERROR x"]  # whatever the order read


def test_folding_keeps_distinct_messages_distinct():
    lines = ["ERROR db timeout for user 12", "ERROR db timeout for user 13", "ERROR cache timeout for user 12",
             "ERROR db refused for user 12", "ERROR [EMAIL] not found", "ERROR [IP] not found", "WARN db timeout for user 1"]
    got = rank_messages(("/a", ms(i), line) for i, line in enumerate(lines))
    assert [(t["message"], t["count"]) for t in got] == [
        ("ERROR db timeout for user N", 2), ("ERROR cache timeout for user N", 1), ("ERROR db refused for user N", 1),
        ("ERROR [EMAIL] not found", 1), ("ERROR [IP] not found", 1), ("WARN db timeout for user N", 1)]


def test_ranking_at_the_budget_says_so_and_names_the_groups_cut():
    reads = [read("/a", [(i / 10, f"ERROR storm {i}") for i in range(8)], cut=True, seen=12), read("/b", [(1, "ERROR once")]),
             read("/c", [], cut=True, seen=0), {"group": "/d", "result": None, "unreadable": "FilterLogEvents: access denied"}]
    f = judge_top_errors(reads, "sys", 60, 9, n=1)[0]
    assert f.status is Status.UNKNOWN and f.value == 9
    assert f.summary.startswith("ranked the first 9 of ≥13 lines; the budget (9 lines) was reached (cut: /a, /c). 2 distinct message(s)")
    assert f.summary.endswith("1 log group(s) not read (UNKNOWN, see their findings): /d")
    assert f.details["cut_groups"] == ["/a", "/c"] and f.details["budget_reached"] is True and f.details["lines_seen"] == 13
    assert f.details["unread_groups"] == {"/d": "FilterLogEvents: access denied"}
    assert [t["message"] for t in f.details["top_messages"]] == ["ERROR storm N"]  # the top n only
    per = {x.resource: x for x in judge_recent_errors(reads, Thresholds(log_errors_warn=5, log_errors_crit=100), 60)}
    # a group cut short: a lower bound, its status as far as it reaches; below WARN it is UNKNOWN, not OK
    assert per["/a"].status is Status.WARN and per["/a"].value == 12 and per["/a"].summary.startswith("≥12 ERROR lines in the last 60 min (the line budget")
    assert per["/c"].status is Status.UNKNOWN and per["/c"].summary.startswith("not read: the line budget was spent")
    assert per["/b"].status is Status.OK and per["/d"].status is Status.UNKNOWN and "access denied" in per["/d"].summary
    low = judge_recent_errors([read("/e", [(1, "ERROR x")], cut=True, seen=2)], Thresholds(log_errors_warn=5, log_errors_crit=100), 60)[0]
    assert low.status is Status.UNKNOWN and low.value == 2



def test_ranking_with_no_group_read_is_unknown():
    f = judge_top_errors([{"group": "/d", "result": None, "unreadable": None}], "sys", 60, 100)[0]
    assert f.status is Status.UNKNOWN and f.details["top_messages"] == [] and f.details["groups_read"] == 0
    assert f.summary.endswith("1 log group(s) not read (UNKNOWN, see their findings): /d")
    assert f.details["unread_groups"] == {"/d": "log group does not exist (never written to, or wrong name)"}


def test_window_errors_are_the_groups_then_the_ranking():
    system = System(name="sys", region="us-east-1", thresholds=Thresholds(log_errors_warn=1, log_errors_crit=100, error_lines_budget=50))
    got = judge_window_errors([read("/a", [(1, "ERROR x 1")])], system, 60)
    assert [(f.check, f.resource, f.status) for f in got] == [(RECENT_CHECK, "/a", Status.WARN), (TOP_CHECK, "sys", Status.OK)]
    assert got[1].details["budget"] == 50


# --- priority ---------------------------------------------------------------------------------------


def test_nothing_found_is_p3():
    assert implied_priority([]) == ("P3", [])


def test_all_functions_failing_is_p0_some_is_p1():
    fns = [F("lambda-state", n, "OK") for n in ("a", "b")]
    errs = [F(RECENT_CHECK, f"/aws/lambda/{n}", "CRIT", 80) for n in ("a", "b")]
    assert implied_priority(fns + errs) == ("P0", ["all 2 Lambda functions failing"])
    assert implied_priority(fns + errs[:1])[0] == "P2"  # one function's errors at CRIT: any other CRIT
    prio, reasons = implied_priority([F("lambda-state", "a", "CRIT"), F("lambda-state", "b", "OK")])
    assert prio == "P1" and reasons == ["Lambda function(s) down: a"]


def test_front_door_down_is_p0_and_its_healthy_twin_is_p3():
    assert implied_priority([F("ecs-service", "c/s", "CRIT", 0)])[0] == "P0"  # 0 running
    assert implied_priority([F("ecs-service", "c/s", "CRIT", None)])[0] == "P0"  # missing
    assert implied_priority([F("alb-targets", "tg", "CRIT", 0)])[0] == "P0"
    assert implied_priority([F("apigateway-present", "api", "CRIT")])[0] == "P0"
    healthy = [F("ecs-service", "c/s", "OK", 2), F("alb-targets", "tg", "OK", 2), F("apigateway-present", "api", "OK")]
    assert implied_priority(healthy) == ("P3", [])


def test_an_endpoint_users_reach_down_is_p0_slow_is_p1_and_its_healthy_twin_is_p3():
    url = "https://api.example.com/health"
    assert implied_priority([F("endpoint", url, "CRIT", failure="unreachable")]) == ("P0", [f"endpoint {url}: endpoint CRIT"])
    assert implied_priority([F("endpoint", url, "CRIT", 500, failure="status")])[0] == "P0"
    assert implied_priority([F("endpoint", url, "CRIT", 4000, failure="latency")])[0] == "P1"
    assert implied_priority([F("endpoint", url, "WARN", 1500, failure="latency")])[0] == "P3"  # slow, not down: daily-health's
    assert implied_priority([F("endpoint-tls", url, "CRIT", 3.0)])[0] == "P2"  # a certificate about to expire: any other CRIT
    assert implied_priority([F("endpoint", url, "OK", 40), F("endpoint-tls", url, "OK", 300.0)]) == ("P3", [])
    assert implied_priority([F("endpoint", url, "UNKNOWN")]) == ("P3", [])  # not probed: a blind spot


@pytest.mark.parametrize("check", ["alb-latency", "alb-5xx", "agent-time", "pipeline-time"])
def test_a_service_slower_than_60_s_is_p1_over_its_target_is_not_an_incident(check):
    """001 P1 서비스 성능 저하 (응답시간 > 60초, 일부 요청 실패): CRIT past slow_response_crit_s / 5 % 5XX; WARN (over the
    target) stays daily-health's; CPU and memory over their targets are no incident by themselves."""
    prio, reasons = implied_priority([F(check, "generation", "CRIT", 70.0)])
    assert prio == "P1" and reasons[0].endswith(f"generation: {check} CRIT")
    assert implied_priority([F(check, "generation", "WARN", 20.0), F("ecs-cpu", "c/s", "WARN", 92.0), F("ecs-memory", "c/s", "WARN", 90.0)])[0] == "P3"
    assert implied_priority([F(check, "generation", "UNKNOWN")]) == ("P3", [])


def test_priorities_from_components_and_alarms():
    assert implied_priority([F("opensearch-health", "d", "CRIT", 2)])[0] == "P1"
    assert implied_priority([F("opensearch-domain", "d", "CRIT")])[0] == "P1"
    assert implied_priority([F("dynamodb-status", "t", "CRIT")]) == ("P1", ["DynamoDB t: dynamodb-status CRIT"])
    assert implied_priority([F("ecs-service", "c/s", "CRIT", 1)])[0] == "P1"  # deployment FAILED, tasks still running
    assert implied_priority([F("ecs-service", "c/s", "WARN", 1)])[0] == "P2"
    assert implied_priority([F("alarms", "x", "WARN", 1, priority="P2")])[0] == "P2"
    assert implied_priority([F("alarms", "x", "CRIT", 1, priority="P0")])[0] == "P0"
    prio, reasons = implied_priority([F("alarms", "x", "CRIT", 1, priority=None)])
    assert prio == "P2" and reasons == ["alarm x firing (no priority in the inventory: P2)"]
    assert implied_priority([F("alarms", "alarms", "OK", 0), F("dynamodb-backup", "t", "WARN")])[0] == "P3"  # not a component
    assert implied_priority([F("s3-storage", "b", "CRIT")])[0] == "P2"  # any other CRIT


def test_unknown_never_raises_the_priority():
    assert implied_priority([F("s3-storage", "b", "UNKNOWN"), F("ecs-service", "c/s", "UNKNOWN")]) == ("P3", [])


def test_highest_priority_wins_with_its_reasons_in_order():
    prio, reasons = implied_priority([F("dynamodb-status", "t", "CRIT"), F("ecs-service", "c/s", "CRIT", 0), F("alb-targets", "tg", "CRIT", 0)])
    assert prio == "P0" and reasons == ["ECS c/s: ecs-service CRIT", "ALB tg: alb-targets CRIT"]


# --- escalation and the verdict ---------------------------------------------------------------------


def test_escalation_mapping_per_seed():
    hr, td, todo, leh = (load_system(n) for n in SEEDS)
    now, nxt, how = escalation_for(hr, "P0")
    assert (now.level, nxt.level) == ("L1", "L2") and how == "P0: the first escalation entry"
    assert escalation_for(hr, "P2")[1] is None and "without paging" in escalation_for(hr, "P2")[2]
    assert escalation_for(hr, "P3")[0] is None
    assert escalation_for(td, "P1")[0].level == "P1" and escalation_for(td, "P2")[0].level == "P0"
    assert escalation_for(todo, "P3")[0].level == "P3"
    assert escalation_for(leh, "P1")[0].level == "Lv1"


def test_no_escalation_listed():
    bare = System.model_validate({"name": "bare", "region": "us-east-1"})
    assert escalation_for(bare, "P0") == (None, None, "the inventory lists no escalation")
    v = verdict(bare, [F("ecs-service", "c/s", "CRIT", 0)])
    assert v.status is Status.CRIT and v.summary.startswith("P0; no escalation. Because: ECS c/s")


def test_verdict_names_whom_to_call_why_and_the_blind_spots():
    hr = load_system("hr-resource-optimization")
    v = verdict(hr, [F("dynamodb-status", "t", "CRIT"), F("opensearch-health", "d", "CRIT", 1), F("s3-storage", "b", "UNKNOWN")])
    assert v.check == "incident-priority" and v.resource == hr.name and v.status is Status.CRIT and v.value == 1
    assert v.summary.startswith("P1; escalate to L1: 운영 엔지니어") and "if unresolved after" in v.summary and "L2 시니어 엔지니어" in v.summary
    assert "Because: DynamoDB t: dynamodb-status CRIT (+1 more)" in v.summary and v.summary.endswith("1 blind spot(s) (UNKNOWN)")
    assert v.details["blind_spots"] == ["s3-storage b"] and v.details["next_escalation"]["level"] == "L2"


def test_quiet_verdict_is_p3_ok_and_a_p2_is_warn():
    hr = load_system("hr-resource-optimization")
    quiet = verdict(hr, [F("ecs-service", "c/s", "OK", 2)])
    assert quiet.status is Status.OK and quiet.value == 3 and quiet.summary == "P3; no escalation (backlog)"
    assert verdict(hr, [F("ecs-service", "c/s", "WARN", 1)]).status is Status.WARN


def test_a_warn_on_one_log_group_is_not_an_incident():
    assert implied_priority([F(RECENT_CHECK, "/aws/lambda/a", "WARN", 3), F("lambda-state", "a", "OK")]) == ("P3", [])


def test_a_missing_table_is_p1_and_todo_app_calls_its_p1_entry():
    todo = load_system("todo-app")
    v = verdict(todo, [Finding(check="dynamodb-status", resource="todos", status=Status.CRIT, summary="named in the inventory but does not exist")])
    assert v.details["priority"] == "P1" and "todos" in v.summary
    assert v.summary.startswith("P1; escalate to P1: Primary On-Call (respond within 15 min)")


def test_a_ranking_missing_a_group_that_could_not_be_read_is_unknown_and_one_merely_absent_is_not():
    denied = {"group": "/c", "unreadable": "FilterLogEvents: access denied", "result": None}
    absent = {"group": "/d", "unreadable": None, "result": None}
    f = judge_top_errors([read("/a", [(1, "ERROR x")]), denied], "sys", 60, 10_000)[0]
    assert f.status is Status.UNKNOWN and "/c" in f.summary
    assert judge_top_errors([read("/a", [(1, "ERROR x")]), absent], "sys", 60, 10_000)[0].status is Status.OK


def test_every_component_blind_is_unknown_and_escalates_as_for_p1_never_p3():
    todo = load_system("todo-app")
    blind = [F("dynamodb-status", "todos", "UNKNOWN"), F("lambda-state", "todo-api", "UNKNOWN"),
             F("alarms", "(whole check)", "UNKNOWN"), F("s3-storage", "b", "OK")]  # an OK that shows no incident
    v = verdict(todo, blind)
    assert v.status is Status.UNKNOWN and v.details["priority"] == "UNKNOWN" and v.value is None
    assert v.summary.startswith("UNKNOWN; no component of todo-app could be read (3 blind spot(s)")
    assert "escalate as for P1: P1: Primary On-Call" in v.summary and v.details["escalation"]["level"] == "P1"
    # the healthy twin: the same checks read OK is P3, fine
    seen = verdict(todo, [F("dynamodb-status", "todos", "OK"), F("lambda-state", "todo-api", "OK"), F("alarms", "alarms", "OK", 0)])
    assert seen.details["priority"] == "P3" and seen.status is Status.OK
    # partly blind: P3 as far as seen, but not OK
    part = verdict(todo, [F("dynamodb-status", "todos", "OK"), F("lambda-state", "todo-api", "UNKNOWN")])
    assert part.details["priority"] == "P3" and part.status is Status.UNKNOWN and "P3 only as far as seen" in part.summary
    # the users' endpoint answering is not a component read: still blind, escalated as for P1
    assert verdict(todo, [*blind[:3], F("endpoint", "https://x/health", "OK", 40)]).details["priority"] == "UNKNOWN"
    # blind, but what was seen shows an incident: that incident's priority
    assert verdict(todo, [F("dynamodb-status", "todos", "CRIT"), F("lambda-state", "todo-api", "UNKNOWN")]).details["priority"] == "P1"
