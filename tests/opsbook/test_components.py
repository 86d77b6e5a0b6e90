"""The component health rules, fed what a check task reads: no AWS, no Prefect."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from opsbook.components import (
    alarm_priority,
    declared_names,
    judge_alarms,
    judge_alias,
    judge_apis,
    judge_backup,
    judge_bucket_absent,
    judge_cluster,
    judge_count,
    judge_created,
    judge_declared_alarms,
    judge_dlq,
    judge_domain,
    judge_duration,
    judge_function,
    judge_service,
    judge_storage,
    judge_table,
    judge_targets,
    log_group_unread,
    td_revision,
)
from opsbook.findings import Status
from opsbook.inventory import DynamoTable, S3Bucket, System
from opsbook.resources import Discovered

NOW = datetime(2026, 3, 10, 3, 0, tzinfo=timezone.utc)  # 12:00 in Seoul
DENIED = "DescribeX: access denied (nope); grant the IAM action (see `opsbook policy`)"


def system(**kw) -> System:
    return System.model_validate({"name": "s", "region": "us-east-1", "timezone": "Asia/Seoul", **kw})


# --- ECS ------------------------------------------------------------------------------------


def svc(running=2, desired=2, pending=0, deps=None, status="ACTIVE"):
    deps = deps if deps is not None else [{"status": "PRIMARY", "rolloutState": "COMPLETED", "taskDefinition": "td:2"}]
    return {"status": status, "runningCount": running, "desiredCount": desired, "pendingCount": pending, "deployments": deps,
            "taskDefinition": "td:2"}


def test_ecs_steady_is_ok_and_each_fault_has_its_status():
    f = judge_service("c", "s", svc(), named=True)
    assert (f.status, f.resource, f.value, f.summary) == (Status.OK, "c/s", 2, "2/2 tasks running, deployment steady")
    assert judge_service("c", "s", svc(running=1, pending=1), True).summary == "1 of 2 tasks running (1 pending)"
    assert judge_service("c", "s", svc(running=1), True).status is Status.WARN
    zero = judge_service("c", "s", svc(running=0), True)
    assert zero.status is Status.CRIT and zero.summary == "0 of 2 tasks running" and zero.value == 0
    failed = judge_service("c", "s", svc(deps=[{"status": "PRIMARY", "rolloutState": "FAILED", "rolloutStateReason": "circuit breaker"}]), True)
    assert failed.status is Status.CRIT and failed.summary == "deployment FAILED: circuit breaker" and failed.value == 2
    rolling = judge_service("c", "s", svc(deps=[{"status": "PRIMARY", "rolloutState": "IN_PROGRESS"}, {"status": "ACTIVE"}]), True)
    assert rolling.status is Status.WARN and "a deployment is in progress (2 deployments)" in rolling.summary


def test_ecs_missing_inactive_cluster_gone_and_unreadable():
    assert judge_service("c", "s", None, True).summary == "named in the inventory but does not exist"
    assert judge_service("c", "s", None, False).summary == "does not exist"
    assert judge_service("c", "s", svc(status="INACTIVE"), False).summary == "is INACTIVE (deleted)"
    gone = judge_service("c", "s", None, True, cluster_missing=True)
    assert gone.status is Status.CRIT and gone.summary == "cluster c does not exist" and not gone.value
    f = judge_service("c", "s", None, True, DENIED)
    assert f.status is Status.UNKNOWN and "access denied" in f.summary


def test_ecs_no_desired_tasks_is_ok():
    assert judge_service("c", "s", svc(running=0, desired=0), True).status is Status.OK


def test_td_revision():
    assert td_revision("arn:aws:ecs:us-east-1:1:task-definition/web:12") == ("web", 12)


# --- ALB ------------------------------------------------------------------------------------


def target(i, state):
    return {"Target": {"Id": i}, "TargetHealth": {"State": state, "Reason": "Target.FailedHealthChecks"}}


def test_alb_targets_healthy_some_none_and_unreadable():
    ok = judge_targets("tg", "c/s", [target("a", "healthy"), target("b", "healthy")])
    assert ok.status is Status.OK and ok.summary == "2/2 targets healthy (service c/s)"
    some = judge_targets("tg", "c/s", [target("a", "healthy"), target("b", "unhealthy")])
    assert some.status is Status.WARN and "1 of 2 targets healthy" in some.summary and "Target.FailedHealthChecks" in some.summary
    assert judge_targets("tg", "c/s", [target("a", "unhealthy"), target("b", "unhealthy")]).status is Status.CRIT
    empty = judge_targets("tg", "c/s", [])
    assert empty.status is Status.CRIT and "no target registered" in empty.summary
    f = judge_targets("tg", "c/s", None, "target group tg not found")
    assert f.status is Status.UNKNOWN and "not found" in f.summary


# --- DynamoDB -------------------------------------------------------------------------------


def test_table_status():
    desc = lambda st: {"Table": {"TableStatus": st}} if st else {"Table": {}}
    assert judge_table("t", desc("ACTIVE"), True).status is Status.OK
    assert judge_table("t", desc("UPDATING"), True).summary == "status UPDATING (not ACTIVE)"
    assert judge_table("t", desc("UPDATING"), True).status is Status.WARN
    for bad in ("DELETING", "ARCHIVED", "INACCESSIBLE_ENCRYPTION_CREDENTIALS"):
        assert judge_table("t", desc(bad), True).status is Status.CRIT
    assert judge_table("t", desc(None), True).status is Status.UNKNOWN
    assert judge_table("t", None, True).summary == "named in the inventory but does not exist"
    assert judge_table("t", None, False).summary == "not found"
    assert judge_table("t", None, True, DENIED).status is Status.UNKNOWN


def test_items_created_yesterday_at_the_minimum():
    inv = system()
    t = DynamoTable(name="tbl", min_items_yesterday=5)
    at = judge_created(inv, t, 5, None, NOW)
    assert at.status is Status.OK and at.summary == "5 items created on 2026-03-09 (Asia/Seoul)"
    below = judge_created(inv, t, 4, None, NOW)
    assert below.status is Status.WARN and "expected at least 5" in below.summary
    assert judge_created(inv, t, None, DENIED, NOW).status is Status.UNKNOWN


def test_backup_age_and_pitr():
    t = DynamoTable(name="tbl", backup_required=True, backup_max_age_hours=24)
    info = lambda age_h, pitr="DISABLED", restorable=None: {"pitr": pitr, "latest_restorable": restorable,
                                                            "latest_backup": NOW - timedelta(hours=age_h) if age_h is not None else None}
    assert judge_backup(t, info(24), None, NOW).status is Status.OK  # exactly at the limit
    old = judge_backup(t, info(24.5), None, NOW)
    assert old.status is Status.CRIT and "latest on-demand backup 24.5 h old and PITR DISABLED" in old.summary
    pitr = judge_backup(t, info(30, "ENABLED", NOW - timedelta(minutes=5)), None, NOW)
    assert pitr.status is Status.WARN and "PITR is enabled and current" in pitr.summary
    stale_pitr = judge_backup(t, info(None, "ENABLED", NOW - timedelta(hours=2)), None, NOW)
    assert stale_pitr.status is Status.CRIT and "no on-demand backup in 35 days" in stale_pitr.summary
    assert judge_backup(t, None, DENIED, NOW).status is Status.UNKNOWN


# --- S3 -------------------------------------------------------------------------------------


def test_bucket_storage_at_the_warn_size_and_missing():
    b = S3Bucket(name="bkt", size_warn_gb=5)
    at = judge_storage(b, 5 * 1024**3, 10)
    assert at.status is Status.WARN and at.summary == "5.00 GiB, 10 objects: above 5 GiB"
    under = judge_storage(b, 5 * 1024**3 - 1, None)
    assert under.status is Status.OK and under.value == 5 * 1024**3 - 1
    assert judge_storage(S3Bucket(name="bkt"), 99 * 1024**4, 1).status is Status.OK  # no limit set
    assert judge_storage(b, None, None).status is Status.UNKNOWN  # no datapoint yet: never OK
    assert judge_storage(b, None, None, DENIED).summary.endswith(DENIED)
    assert judge_bucket_absent("b", True, None).status is Status.CRIT
    assert judge_bucket_absent("b", False, None).summary == "not found"
    assert judge_bucket_absent("b", True, DENIED).status is Status.UNKNOWN


# --- SQS ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "status"), [(0, Status.OK), (1, Status.WARN), (99, Status.WARN), (100, Status.CRIT)])
def test_dlq_depth_thresholds(n, status):
    f = judge_dlq("dlq", {"visible": n, "in_flight": 0}, None, 1, 100)
    assert f.status is status and f.value == n
    assert ("see dlq-redrive" in f.summary) == bool(n)


def test_dlq_counts_in_flight_missing_and_unreadable():
    assert judge_dlq("dlq", {"visible": 0, "in_flight": 3}, None, 1, 100).value == 3
    assert judge_dlq("dlq", None, None, 1, 100).status is Status.CRIT
    assert judge_dlq("dlq", None, DENIED, 1, 100).status is Status.UNKNOWN


# --- logs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "status"), [(0, Status.OK), (9, Status.OK), (10, Status.WARN), (49, Status.WARN), (50, Status.CRIT)])
def test_log_count_thresholds(n, status):
    f = judge_count("log-errors", "/g", {"count": n, "samples": ["ERROR x"] if n else []}, None, 10, 50, "ERROR lines")
    assert f.status is status and f.summary.startswith(f"{n} ERROR lines in the last 24 h")
    assert ("e.g. ERROR x" in f.summary) == bool(n)


def test_log_group_missing_or_unreadable_is_unknown():
    f = judge_count("log-errors", "/g", None, None, 1, 10, "ERROR lines")
    assert f.status is Status.UNKNOWN and "log group does not exist" in f.summary
    assert judge_count("failed-logins", "/g", None, DENIED, 1, 10, "failed logins").summary.endswith(DENIED)
    assert log_group_unread("x", "/g", None).status is Status.UNKNOWN


# --- alarms ---------------------------------------------------------------------------------


def test_alarms_by_priority():
    inv = system(alarms={"name_filters": ["team2-*"], "priorities": {"team2-high-*": "P1", "team2-low-*": "P3"}})
    assert alarm_priority(inv, "team2-high-errors") == "P1" and alarm_priority(inv, "team2-other") is None
    alarms = [{"AlarmName": n, "StateReason": "threshold crossed"} for n in ("team2-high-errors", "team2-low-x", "team2-other", "other-team")]
    by = {f.resource: f for f in judge_alarms(inv, alarms)}
    assert set(by) == {"team2-high-errors", "team2-low-x", "team2-other"}
    assert by["team2-high-errors"].status is Status.CRIT and by["team2-high-errors"].summary == "in ALARM (P1): threshold crossed"
    assert by["team2-low-x"].status is Status.WARN
    assert by["team2-other"].status is Status.CRIT and by["team2-other"].details["priority"] is None  # no priority: CRIT
    [quiet] = judge_alarms(inv, alarms[3:])
    assert quiet.status is Status.OK and quiet.value == 0


TOPIC = "arn:aws:sns:us-east-1:123456789012:alerts"


def declaring(*names: str, **alarms) -> System:
    return system(lambda_functions=[{"name": "fa"}, {"name": "fb"}], dynamodb_tables=[{"name": "tb1"}],
                  alarms={"name_filters": ["team2"], "priorities": {"latency*": "P2"}, "declared": [{"name": n, "source": "seed"} for n in names], **alarms})


def alarm(name: str, state: str = "OK", actions: list[str] | None = None, since: datetime = NOW - timedelta(days=3), **kw) -> dict:
    return {"AlarmName": name, "StateValue": state, "AlarmActions": [TOPIC] if actions is None else actions, "ActionsEnabled": True,
            "StateUpdatedTimestamp": since, "StateReason": "threshold crossed", **kw}


def test_declared_templates_expand_over_named_and_discovered_resources_once():
    inv = declaring("errors-{function}-team2", "throttle-{table}", "latency", "queue-{queue}")
    names = [n for n, _, _ in declared_names(inv, Discovered(lambda_functions=["fb", "fc"], dynamodb_tables=["t2"]))]
    assert names == ["errors-fa-team2", "errors-fb-team2", "errors-fc-team2", "throttle-tb1", "throttle-t2", "latency"]  # no queue: no alarm
    assert [n for n, _, _ in declared_names(system(), Discovered())] == []


@pytest.mark.parametrize("bad, why", [("x-{fn}", "unknown placeholder"), ("{function}-{table}", "at most one"), ("x-*-{table}", "cannot be combined")])
def test_a_declared_name_that_cannot_be_expanded_is_refused(bad, why):
    with pytest.raises(ValueError, match=why):
        declaring(bad)


def test_every_declared_alarm_healthy_is_one_ok_line_naming_how_many():
    inv = declaring("errors-{function}-team2", "latency")
    declared = declared_names(inv, Discovered())
    alarms = {a["AlarmName"]: a for a in (alarm("errors-fa-team2"), alarm("errors-fb-team2"), alarm("latency"))}
    [ok] = judge_declared_alarms(inv, declared, alarms, {TOPIC: True}, NOW)
    assert ok.status is Status.OK and ok.value == 3 and ok.resource == "declared alarms"


def test_each_declared_alarm_problem_is_a_finding_named_after_the_alarm():
    inv = declaring("errors-{function}-team2", "latency", "gone-*", "silent", "off", "orphan", "stale", "fresh", "hidden")
    alarms = {a["AlarmName"]: a for a in (
        alarm("errors-fa-team2"),  # errors-fb-team2 is missing
        alarm("latency", state="ALARM"),  # firing, not matched by the name filters: its priority (P2)
        alarm("silent", actions=[]),
        alarm("off", ActionsEnabled=False),
        alarm("orphan", actions=["arn:aws:sns:us-east-1:123456789012:deleted"]),
        alarm("stale", state="INSUFFICIENT_DATA", since=NOW - timedelta(hours=3, minutes=20)),
        alarm("fresh", state="INSUFFICIENT_DATA", since=NOW - timedelta(minutes=59)),  # under the 60 min allowed
        alarm("hidden", actions=["arn:aws:sns:us-east-1:123456789012:secret"]),
    )}
    topics = {TOPIC: True, "arn:aws:sns:us-east-1:123456789012:deleted": False, "arn:aws:sns:us-east-1:123456789012:secret": "access denied"}
    by = {f.resource: f for f in judge_declared_alarms(inv, declared_names(inv, Discovered()), alarms, topics, NOW)}
    assert by["errors-fb-team2"].status is Status.WARN and "for fb does not exist (seed)" in by["errors-fb-team2"].summary
    assert by["gone-*"].status is Status.WARN and "no alarm matches gone-*" in by["gone-*"].summary
    assert by["latency"].status is Status.WARN and by["latency"].summary.startswith("in ALARM (P2): threshold crossed")
    assert "no alarm actions" in by["silent"].summary and "disabled" in by["off"].summary
    assert "deleted does not exist" in by["orphan"].summary
    assert by["stale"].status is Status.WARN and "INSUFFICIENT_DATA for 3.3 h (since 2026-03-09 23:40 UTC)" in by["stale"].summary
    assert by["hidden"].status is Status.UNKNOWN and "access denied" in by["hidden"].summary
    assert {"errors-fa-team2", "fresh"} <= set(by["declared alarms"].details["alarms"]) and by["declared alarms"].value == 2
    assert all(by[n].status is Status.WARN for n in ("silent", "off", "orphan"))


def test_a_known_problem_outranks_an_unreadable_topic_and_other_partitions_topics_count():
    inv = declaring("silent-*", "silent-1")  # a glob and a name matching the same alarm: judged once
    gov = "arn:aws-us-gov:sns:us-gov-west-1:123456789012:gone"
    alarms = {"silent-1": alarm("silent-1", actions=["arn:aws:sns:us-east-1:123456789012:secret", gov], ActionsEnabled=False)}
    [f] = judge_declared_alarms(inv, declared_names(inv, Discovered()), alarms, {"arn:aws:sns:us-east-1:123456789012:secret": "denied", gov: False}, NOW)
    assert f.status is Status.WARN and "disabled" in f.summary and "gone does not exist" in f.summary and "denied" in f.summary


def test_a_declared_alarm_firing_that_the_name_filters_report_is_not_reported_twice():
    inv = declaring("errors-team2")
    [ok] = judge_declared_alarms(inv, declared_names(inv, Discovered()), {"errors-team2": alarm("errors-team2", state="ALARM")}, {TOPIC: True}, NOW)
    assert ok.status is Status.OK  # judge_alarms reports it firing, with its priority


def test_insufficient_data_exactly_at_the_limit_is_a_warning_and_the_limit_is_the_inventorys():
    inv = declaring("a", insufficient_data_warn_minutes=30)
    at = {"a": alarm("a", state="INSUFFICIENT_DATA", since=NOW - timedelta(minutes=30))}
    [f] = judge_declared_alarms(inv, declared_names(inv, Discovered()), at, {TOPIC: True}, NOW)
    assert f.status is Status.WARN and "30 min" in f.summary
    under = {"a": alarm("a", state="INSUFFICIENT_DATA", since=NOW - timedelta(minutes=29))}
    assert judge_declared_alarms(inv, declared_names(inv, Discovered()), under, {TOPIC: True}, NOW)[0].status is Status.OK


# --- Lambda ---------------------------------------------------------------------------------


def test_function_states():
    cfg = lambda state="Active", update="Successful": {"State": state, "LastUpdateStatus": update, "Runtime": "python3.12"}
    assert judge_function("f", cfg(), True).summary == "Active (python3.12)"
    assert judge_function("f", cfg("Failed"), True).status is Status.CRIT
    assert judge_function("f", cfg(update="Failed"), True).status is Status.CRIT
    assert judge_function("f", cfg("Pending"), True).summary == "state Pending (not Active)"
    assert judge_function("f", cfg(update="InProgress"), True).status is Status.WARN
    assert judge_function("f", {"Runtime": "x"}, True).status is Status.UNKNOWN
    assert judge_function("f", None, True).summary == "named in the inventory but does not exist"
    assert judge_function("f", None, True, DENIED).status is Status.UNKNOWN


def test_alias_present_missing_unreadable():
    assert judge_alias("f:LIVE", {"FunctionVersion": "3"}).summary == "alias points to version 3"
    assert judge_alias("f:LIVE", None).status is Status.CRIT
    assert judge_alias("f:LIVE", None, DENIED).status is Status.UNKNOWN


@pytest.mark.parametrize("p99_ms, status", [(23999.0, Status.OK), (24000.0, Status.WARN), (28499.0, Status.WARN), (28500.0, Status.CRIT),
                                             (30030.0, Status.CRIT)])
def test_duration_p99_against_the_timeout_at_the_thresholds(p99_ms, status):
    f = judge_duration("f", 30, p99_ms, 80, 95, 24)  # exactly 80 % (24 s of 30) is WARN, exactly 95 % CRIT
    assert f.status is status and f.check == "lambda-duration" and f.details["timeout_s"] == 30


def test_duration_summary_idle_unreadable_and_no_timeout():
    f = judge_duration("f", 300, 288000.0, 80, 95, 24)
    assert f.value == 96.0 and f.summary.startswith("Duration p99 288.00 s over the last 24 h = 96 % of its 300 s timeout "
                                                   "(WARN at 80 %, CRIT at 95 %)") and "remediate-lambda-timeout" in f.summary
    idle = judge_duration("f", 30, None, 80, 95, 24)  # no datapoint: nothing ran, which is not a failure to read
    assert idle.status is Status.OK and idle.value is None and "no invocations in the window" in idle.summary
    assert judge_duration("f", 30, 29000.0, 80, 95, 24, DENIED).status is Status.UNKNOWN  # never OK when unread
    assert judge_duration("f", None, 29000.0, 80, 95, 24).status is Status.UNKNOWN
    assert judge_duration("f", 30, 29000.0, 99, 100, 24).status is Status.OK  # the inventory's thresholds apply


# --- API Gateway ----------------------------------------------------------------------------


def test_apis_named_ambiguous_missing_and_tagged():
    apis = [{"id": "a1", "name": "api"}, {"id": "d1", "name": "dup"}, {"id": "d2", "name": "dup"}, {"id": "t1", "name": "tagged"}]
    by = {f.resource: f for f in judge_apis(["api", "dup", "gone"], ["a1", "t1", "x9"], apis)}
    assert by["api"].status is Status.OK and by["api"].summary == "present (id a1)"
    assert by["dup"].status is Status.WARN and "2 REST APIs share this name (d1, d2)" in by["dup"].summary
    assert by["gone"].status is Status.CRIT
    assert by["tagged"].summary == "present (id t1, found by tag)"
    assert by["x9"].status is Status.WARN and "no longer listed" in by["x9"].summary
    assert judge_apis([], [], []) == []


# --- OpenSearch -----------------------------------------------------------------------------


def cluster(status, unassigned=0, explain=None):
    shards = [{"index": "employee_profiles", "shard": "0", "prirep": "p", "unassigned.reason": "NODE_LEFT"}] * unassigned
    return {"health": {"status": status, "unassigned_shards": unassigned, "number_of_nodes": 1}, "unassigned": shards, "explain": explain}


def test_cluster_health():
    assert judge_cluster("d", cluster("green")).status is Status.OK
    y = judge_cluster("d", cluster("yellow", 1))
    assert y.status is Status.WARN and y.summary.startswith("cluster yellow, 1 unassigned shard(s): employee_profiles[0]p NODE_LEFT")
    r = judge_cluster("d", cluster("red", 2, {"allocate_explanation": "no node"}))
    assert r.status is Status.CRIT and r.value == 2 and "(no node)" in r.summary and r.summary.endswith("see remediate-opensearch-red")
    assert judge_cluster("d", cluster("purple")).status is Status.UNKNOWN
    assert "no endpoint" in judge_cluster("d", None).summary
    assert judge_cluster("d", None, "cluster endpoint unreachable").status is Status.UNKNOWN


def test_domain_state():
    assert judge_domain("d", {"EngineVersion": "OpenSearch_2.11"}, True).summary == "domain ready (OpenSearch_2.11)"
    assert judge_domain("d", {"Processing": True}, True).status is Status.WARN
    assert judge_domain("d", {"Deleted": True}, True).status is Status.CRIT
    assert judge_domain("d", None, False).summary == "not found"
    assert judge_domain("d", None, True, DENIED).status is Status.UNKNOWN
