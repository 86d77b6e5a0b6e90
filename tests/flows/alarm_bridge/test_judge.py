"""alarm-bridge's judgement without AWS or Prefect: which transitions start which runbook (once), what a poll says
about each routed alarm, and which scheduled runs were missed (CRIT), exactly at the grace and the age limits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flows.alarm_bridge import judge as j
from opsbook.findings import Status
from opsbook.inventory import load_system
from tasks.cloudwatch import Alarm

HR = load_system("hr-resource-optimization")
NOW = datetime(2025, 3, 5, 1, 30, tzinfo=timezone.utc)
MAX_AGE = timedelta(minutes=30)
GRACE = timedelta(minutes=10)


def alarm(name: str, ago: timedelta) -> Alarm:
    return Alarm(name=name, region=HR.region, state_time=NOW - ago)


def daily_at_midnight_utc(spec: j.ScheduleSpec, after: datetime, until: datetime) -> list[datetime]:
    """A stand-in for Prefect's cron computation: every 00:00 UTC in (after, until]."""
    day = after.replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    while day <= until:
        if day > after:
            out.append(day)
        day += timedelta(days=1)
    return out


def deployment(name: str, **kw) -> j.WatchedDeployment:
    return j.WatchedDeployment(**{"id": name, "name": name, "system": HR.name, "created": NOW - timedelta(days=10),
                                  "schedules": [j.ScheduleSpec(cron="0 0 * * *")], **kw})


def run(dep: str, expected: datetime | None, state: str = "COMPLETED", **kw) -> j.SeenRun:
    return j.SeenRun(**{"id": f"r-{dep}", "name": f"run-{dep}", "deployment_id": dep, "expected_start": expected,
                        "state_type": state, "state_name": state.title(), **kw})


FIRE = datetime(2025, 3, 5, 0, 0, tzinfo=timezone.utc)


# --- alarms -> runbooks ---------------------------------------------------------------------------------


def test_routing_needs_the_systems_filter_and_a_runbook_glob():
    assert j.routed_runbook(HR, "lambda-errors-team2") == "emergency-check"
    assert j.routed_runbook(HR, "team2-high-latency") is None  # the system's, but no runbook glob matches
    assert j.routed_runbook(HR, "todo-api-high-error-rate") is None  # not the system's alarm
    assert j.nothing_to_bridge(HR) is None
    bare = HR.model_copy(update={"alarms": HR.alarms.model_copy(update={"runbooks": {}})})
    assert "routes no alarm to a runbook" in j.nothing_to_bridge(bare).summary
    assert j.table_names(HR, alarm("x", MAX_AGE).model_copy(update={"dimensions": {"TableName": "t"}})) == ["t"]
    assert j.table_names(HR, alarm("x", MAX_AGE)) == []


def test_a_transition_is_sent_once_and_one_older_than_max_age_is_reported_not_sent():
    fresh = alarm("lambda-errors-x-team2", timedelta(minutes=2))
    at_limit = alarm("lambda-errors-y-team2", MAX_AGE)  # exactly max_age old: still sent
    old = alarm("dynamodb-a-throttle-b", MAX_AGE + timedelta(seconds=1))
    other = alarm("todo-api-high-error-rate", timedelta(0))
    out, keep = j.select_transitions(HR, [fresh, at_limit, old, other], j.BridgeMemory(), NOW, MAX_AGE)
    assert {t.alarm.name: t.fate for t in out} == {fresh.name: "send", at_limit.name: "send", old.name: "stale"}
    assert set(keep.alarms) == {old.name} and keep.polled_at == NOW.isoformat()  # "send" is kept once the server accepted it
    seen = j.BridgeMemory(alarms={fresh.name: fresh.state_time.isoformat()})
    assert [t.fate for t in j.select_transitions(HR, [fresh], seen, NOW, MAX_AGE)[0]] == ["seen"]
    again = alarm(fresh.name, timedelta(minutes=1))  # OK, then ALARM again: a new transition time
    assert [t.fate for t in j.select_transitions(HR, [again], seen, NOW, MAX_AGE)[0]] == ["send"]
    assert j.select_transitions(HR, [], seen, NOW, MAX_AGE)[1].alarms == {}  # an alarm that left ALARM is forgotten


def test_what_a_poll_says_about_each_routed_alarm():
    a = alarm("lambda-errors-team2", timedelta(hours=3))
    seen = j.held_finding(j.Transition(system=HR.name, alarm=a, runbook="emergency-check", fate="seen"), NOW, True, 30, HR.name)
    assert seen.status is Status.OK and "was already started for this transition" in seen.summary
    stale = j.Transition(system=HR.name, alarm=a, runbook="emergency-check", fate="stale")
    f = j.held_finding(stale, NOW, False, 30, HR.name)
    assert f.status is Status.WARN and "180 min ago" in f.summary and "had any memory (first poll or new server)" in f.summary
    assert "NOT started" in f.summary and f"opsbook run emergency-check --system {HR.name}" in f.summary
    assert "last remembered it" in j.held_finding(stale, NOW, True, 30, HR.name).summary
    ok = j.sent_finding(stale, "e1", "P2", True, NOW)
    assert ok.status is Status.OK and ok.value == 1 and ok.details == {"event_id": "e1", "runbook": "emergency-check",
                                                                       "priority": "P2", "sent_at": NOW.isoformat()}
    nobody = j.sent_finding(stale.model_copy(update={"runbook": "no-such"}), "e1", None, False, NOW)
    assert nobody.status is Status.WARN and "no runbook named 'no-such' is registered" in nobody.summary
    refused = j.refused_finding(stale, "ConnectionError: refused")
    assert refused.status is Status.CRIT and "the next poll sends it again" in refused.summary
    assert j.none_routed(HR).status is Status.OK


# --- missed scheduled runs --------------------------------------------------------------------------------


def judge(deps, runs, now=NOW):
    return j.judge_schedules(deps, runs, now, now - timedelta(hours=24), GRACE, daily_at_midnight_utc)


def test_missing_fire_times_paused_inactive_new_and_on_time_deployments():
    deps = [deployment("ran"), deployment("never-ran"), deployment("paused", paused=True),
            deployment("new", created=NOW - timedelta(minutes=20)),
            deployment("off", schedules=[j.ScheduleSpec(cron="0 0 * * *", active=False)])]
    findings, missed = judge(deps, [run("ran", FIRE)])
    by = {f.resource: f for f in findings}
    assert by["ran"].status is Status.OK and "1 fire time(s)" in by["ran"].summary
    assert by["paused"].status is Status.WARN and "paused" in by["paused"].summary
    assert by["new"].status is Status.OK and "0 fire time(s)" in by["new"].summary
    assert [f.status for f in findings if f.resource == "off"] == [Status.WARN, Status.OK]
    assert by["never-ran"].status is Status.CRIT and [m.kind for m in missed] == ["missing"] and missed[0].expected == FIRE
    assert by["never-ran"].details["key"] == missed[0].key and missed[0].system == HR.name
    empty, none = judge([], [])
    assert none == [] and empty[0].summary.startswith("nothing to check") and empty[0].status is Status.OK


def test_a_run_not_started_is_missed_exactly_after_the_grace():
    dep = deployment("d", schedules=[])
    at_grace = run("d", NOW - GRACE, "SCHEDULED", auto_scheduled=True)
    findings, missed = judge([dep], [at_grace])
    assert [m.kind for m in missed] == ["stuck"] and findings[0].status is Status.CRIT
    assert "scheduled run run-d (r-d) is still Scheduled 10 min after its expected start" in missed[0].summary
    just_in = run("d", NOW - GRACE + timedelta(seconds=1), "PENDING")
    assert judge([dep], [just_in])[1] == [] and judge([dep], [just_in])[0][0].status is Status.OK
    assert judge([dep], [run("d", NOW - timedelta(hours=2), "RUNNING")])[1] == []  # started: not missed


def test_a_fire_time_inside_the_grace_is_not_missed_yet():
    dep = deployment("d")
    assert judge([dep], [], now=FIRE + GRACE)[1][0].expected == FIRE  # exactly at the grace: missed
    assert judge([dep], [], now=FIRE + GRACE - timedelta(seconds=1))[1] == []
    a_second_off = run("d", FIRE + timedelta(seconds=1))  # a run expected a second away is not this fire time's run
    assert [m.kind for m in judge([dep], [a_second_off])[1]] == ["missing"]


def test_the_missed_run_message():
    _, missed = judge([deployment("never-ran")], [])
    subject, body = j.missed_message(HR.name, missed)
    assert subject == f"[opsbook CRIT] 1 missed scheduled run(s) of {HR.name}"
    assert body.startswith("- never-ran: no run was created for the 2025-03-05T00:00+00:00 fire time")
    assert body.endswith("See the alarm-bridge run's report in the Prefect UI.")
