"""remediate-dynamodb-throttling's judge: findings, sizing, bounds and AWS's limits from data given directly (no sandbox, no Prefect run)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flows.remediate_dynamodb_throttling import judge as j
from opsbook.findings import Status
from opsbook.inventory import System
from opsbook.mutation.core import Action, Identity, Plan, Record
from opsbook.resources import Discovered
from tasks.autoscaling import ScalableTarget
from tasks.cloudwatch import Usage
from tasks.dynamodb import IndexCapacity, TableCapacity

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
START = NOW - timedelta(hours=1)
ME = Identity(account="123456789012", arn="arn:aws:sts::123456789012:assumed-role/x/y", region="us-east-2")


def inv(**remediation) -> System:
    return System.model_validate({"name": "x", "region": "us-east-2", "remediation": remediation,
                                  "dynamodb_tables": [{"name": "Tab"}, {"name": "Uab"}]})


def pts(v, minutes_ago=3):
    return [(NOW - timedelta(minutes=minutes_ago), v)]


def cap(mode="PROVISIONED", read=100, write=100, **kw) -> TableCapacity:
    return TableCapacity(table="Tab", status="ACTIVE", mode=mode, read=read if mode == "PROVISIONED" else 0,
                         write=write if mode == "PROVISIONED" else 0, **kw)


def usage(write_throttles=7.0, peak_per_s=150.0, index=None, minutes_ago=3) -> Usage:
    return Usage(table="Tab", index=index, series={"write_throttles": pts(write_throttles, minutes_ago), "consumed_write": pts(60 * peak_per_s)})


def judged(c: TableCapacity, *u: Usage):
    return j.judge_table("Tab", c, list(u), START, 60)


def plan(c: TableCapacity, *u: Usage, targets=None, prefer="provisioned", system=None) -> Plan:
    _, facts = judged(c, *u)
    return j.decide(system or inv(), ME, {"Tab": c}, {"Tab": facts} if facts else {}, {} if targets is None else targets, prefer, NOW)


# --- findings -----------------------------------------------------------------------------------


def test_missing_table_is_crit_unreadable_table_or_metrics_unknown():
    f, facts = j.judge_table("Tab", "missing: Tab does not exist in us-east-2 (named in the inventory)", [], START, 60)
    assert (f.status, f.summary, facts) == (Status.CRIT, "Tab does not exist in us-east-2 (named in the inventory)", {})
    f, _ = j.judge_table("Tab", "access denied", [], START, 60)
    assert f.status is Status.UNKNOWN and f.summary == "could not be read: access denied"
    f, facts = j.judge_table("Tab", cap(), "access denied", START, 60)
    assert f.status is Status.UNKNOWN and "CloudWatch metrics: access denied" in f.summary and "nothing planned" in f.summary and facts == {}


def test_no_tables_is_ok_nothing_to_check_and_a_quiet_table_is_ok():
    findings, facts = j.judge_tables("x", [], {}, [], START, 60)
    assert [(f.resource, f.status) for f in findings] == [("x", Status.OK)] and "nothing to check" in findings[0].summary and facts == {}
    f, facts = judged(cap(), Usage(table="Tab"))
    assert f.status is Status.OK and f.summary == "no throttle events in the last 60 min (PROVISIONED)" and facts == {}


def test_one_throttle_event_is_a_warning_with_its_numbers():
    f, facts = judged(cap(), usage(write_throttles=1.0, peak_per_s=6.0))
    assert f.status is Status.WARN and f.value == 1 and "write: 1 throttle events, peak 6.0 units/s consumed vs 100 provisioned" in f.summary
    assert facts["throttled"] == {(None, "write"): 1.0}


def test_throttles_before_the_last_increase_are_history():
    c = cap(last_increase=NOW - timedelta(minutes=2))
    f, facts = judged(c, usage(minutes_ago=3))
    assert f.status is Status.OK and "7 earlier event(s) before the last capacity increase" in f.summary and facts == {}
    assert judged(c, usage(minutes_ago=1))[0].status is Status.WARN
    # a switch to on-demand counts only while the table is on-demand
    back = cap(last_to_on_demand=NOW - timedelta(minutes=2))
    assert judged(back, usage(minutes_ago=3))[0].status is Status.WARN


def test_on_demand_table_throttled_is_a_warning_with_advice_and_no_capacity_change():
    c = cap(mode="PAY_PER_REQUEST", on_demand_max_write=50)
    f, _ = judged(c, usage())
    assert f.status is Status.WARN and "hot partition" in f.summary and "the table's on-demand maximum (write 50 units/s)" in f.summary
    assert "Nothing to change in capacity." in f.summary
    p = plan(c, usage())
    assert p.actions == [] and "Tab: on-demand and throttled" in p.unchanged[0]


# --- sizing ---------------------------------------------------------------------------------------


def test_provisioned_is_peak_times_headroom_within_the_policy_maximum():
    p = plan(cap(read=5, write=5), usage(peak_per_s=6.0))
    [a] = p.actions
    assert (a.kind, a.current, a.target, a.iam_action) == ("dynamodb-capacity", "PROVISIONED r=5 w=5", "PROVISIONED r=5 w=9", "dynamodb:UpdateTable")
    assert any("6.0 units/s consumed x headroom 1.5 = 9" in n for n in p.notes)
    huge = plan(cap(), usage(peak_per_s=50_000.0))
    assert huge.actions[0].target == "PROVISIONED r=100 w=40000" and any("capped from 75000" in n for n in huge.notes)


def test_capacity_that_covers_the_peak_is_a_hot_partition_not_capacity():
    p = plan(cap(), usage(peak_per_s=20.0))  # 20 x 1.5 = 30 <= 100
    assert p.actions == [] and "hot partition" in p.unchanged[0]
    at = plan(cap(write=40000), usage(peak_per_s=40000.0))
    assert at.actions == [] and "already at the policy's maximum 40000" in at.cannot[0]
    edge = plan(cap(write=9), usage(peak_per_s=6.0))  # exactly 9 needed, 9 provisioned: covered
    assert edge.actions == [] and "9 provisioned already covers 9" in edge.unchanged[0]
    assert plan(cap(write=8), usage(peak_per_s=6.0)).actions[0].target == "PROVISIONED r=100 w=9"


def test_a_gsi_is_sized_with_the_table_and_no_consumption_data_cannot_be_sized():
    c = cap(read=5, write=5, indexes=[IndexCapacity(name="byEmail", read=5, write=5)])
    gsi = Usage(table="Tab", index="byEmail", series={"read_throttles": pts(25.0), "consumed_read": pts(60 * 10.0)})
    [a] = plan(c, Usage(table="Tab"), gsi).actions
    assert a.target == "PROVISIONED r=5 w=5; byEmail r=15 w=5"
    blind = Usage(table="Tab", series={"write_throttles": pts(3.0)})
    p = plan(cap(), blind)
    assert p.actions == [] and "no ConsumedWriteCapacityUnits" in p.cannot[0]


def test_not_active_table_is_not_changed():
    p = plan(cap().model_copy(update={"status": "UPDATING"}), usage())
    assert p.actions == [] and "not ACTIVE (UPDATING)" in p.cannot[0]


# --- auto scaling bounds ------------------------------------------------------------------------------------


def target(lo=5, hi=100, suspended=False) -> dict[str, ScalableTarget]:
    t = ScalableTarget(namespace="dynamodb", resource_id="table/Tab", dimension="dynamodb:table:WriteCapacityUnits", min=lo, max=hi,
                       scale_out_suspended=suspended)
    return {t.key: t}


def test_auto_scaled_dimension_at_its_max_gets_a_higher_max():
    p = plan(cap(), usage(peak_per_s=100.0), targets=target(hi=100))  # 150 needed, capacity at the max
    [a] = p.actions
    assert (a.kind, a.resource, a.current, a.target) == ("autoscaling-bounds", "table/Tab dynamodb:table:WriteCapacityUnits", "min=5 max=100",
                                                         "min=5 max=150")
    assert a.iam_action == "application-autoscaling:RegisterScalableTarget" and "auto scaling max" in a.evidence
    assert "SUSPENDED" in plan(cap(), usage(peak_per_s=100.0), targets=target(hi=100, suspended=True)).actions[0].evidence


def test_auto_scaling_with_room_or_a_max_that_covers_or_at_the_policy_maximum_is_not_changed():
    room = plan(cap(write=50), usage(peak_per_s=100.0), targets=target(hi=100))
    assert room.actions == [] and "had room (50 provisioned, max 100)" in room.unchanged[0] and "table=Tab write_units=N" in room.unchanged[0]
    covers = plan(cap(), usage(peak_per_s=60.0), targets=target(hi=100))  # 90 <= 100
    assert covers.actions == [] and "auto scaling max 100 already covers the 90 needed" in covers.unchanged[0]
    top = plan(cap(write=40000), usage(peak_per_s=40000.0), targets=target(hi=40000))  # needed is capped at the policy's maximum
    assert top.actions == [] and "auto scaling max 40000 already covers the 40000 needed" in top.unchanged[0]
    assert "capped from 60000" in top.unchanged[0]


def test_unreadable_targets_plan_nothing():
    p = plan(cap(), usage(), targets="access denied")
    assert p.actions == [] and "auto scaling targets could not be read (access denied)" in p.cannot[0]


# --- on-demand and its 24 h limit -------------------------------------------------------------------------


def test_on_demand_preference_switches_table_and_gsis_together():
    c = cap(indexes=[IndexCapacity(name="byEmail", read=5, write=5)])
    [a] = plan(c, usage(), prefer="on-demand", targets=target()).actions
    assert (a.target, a.current) == ("PAY_PER_REQUEST", "PROVISIONED r=100 w=100; byEmail r=5 w=5")
    assert "1 GSI(s) switch together" in a.evidence and "auto scaling targets stay registered" in a.evidence


def test_a_switch_within_24_h_of_the_last_is_not_planned_more_capacity_instead():
    just = cap(read=5, write=5, last_to_on_demand=NOW - timedelta(hours=23, minutes=59))
    p = plan(just, usage(peak_per_s=6.0), prefer="on-demand")
    assert p.actions[0].target == "PROVISIONED r=5 w=9"
    note = next(n for n in p.notes if "not switched to on-demand" in n)
    assert "4 switches to on-demand in 24 h" in note and "possible again at 2026-03-02T12:01" in note
    day = cap(read=5, write=5, last_to_on_demand=NOW - timedelta(hours=24))  # exactly 24 h: allowed again
    assert plan(day, usage(peak_per_s=6.0), prefer="on-demand").actions[0].target == "PAY_PER_REQUEST"


# --- reading, after the change -------------------------------------------------------------------------------


def test_the_state_table_is_not_the_systems_and_strangers_are_named():
    system = inv()
    assert j.wanted_tables(system, Discovered(dynamodb_tables=["Vab", system.mutations.state_table]), []) == (["Tab", "Uab", "Vab"], [])
    assert j.wanted_tables(system, Discovered(), ["Uab", "nope"]) == (["Uab"], ["nope"])
    assert j.usage_entities(["Tab", "Uab"], {"Tab": cap(indexes=[IndexCapacity(name="i")]), "Uab": "denied"}) == [("Tab", None), ("Tab", "i"), ("Uab", None)]


def test_throttling_after_the_change_and_a_verified_fix_resolves_the_warning():
    ok, warn = j.after_change([Usage(table="Tab"), Usage(table="Uab", series={"read_throttles": pts(2.0)})], 2.5)
    assert ok.status is Status.OK and "no throttle events in the 2.5 min since the change" in ok.summary
    assert warn.status is Status.WARN and warn.summary.startswith("2 throttle events in the 2.5 min")
    f, _ = judged(cap(), usage())
    rec = Record(runbook=j.RUNBOOK, system="x", resource="table/Tab dynamodb:table:WriteCapacityUnits", kind="autoscaling-bounds",
                 before="min=5 max=100", after="min=5 max=150", status="verified")
    [fixed] = j.resolved([f], [rec])
    assert fixed.status is Status.OK and fixed.summary.startswith("fixed by this run (verified: min=5 max=100 -> min=5 max=150); was THROTTLED")
    assert j.resolved([f], [rec.model_copy(update={"status": "applied"})]) == [f]
    p = Plan(runbook=j.RUNBOOK, system="x", identity=ME, actions=[
        Action(kind="autoscaling-bounds", resource=rec.resource, current="a", target="b", iam_action="x"),
        Action(kind="dynamodb-capacity", resource="Uab", current="a", target="b", iam_action="x")])
    assert j.changed_tables(p) == ["Tab", "Uab"]
