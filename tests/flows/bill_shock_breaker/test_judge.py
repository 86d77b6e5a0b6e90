"""bill-shock-breaker's judge without the sandbox: budgets and spikes at their thresholds, breaker transitions,
approval gating, findings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flows.bill_shock_breaker import judge as j
from opsbook.findings import Status
from opsbook.inventory import BillShock, System
from opsbook.mutation.core import Identity
from tasks.cloudwatch import TokenUsage

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
CFG = BillShock()  # window 15 min, case budget 200,000, spike 5x over >= 20,000, global 5,000,000/h, user 500,000
SYS = System(name="t", region="ap-northeast-2", bill_shock=CFG)
ID = Identity(account="123456789012", arn="arn:aws:sts::123456789012:assumed-role/x/y", region="ap-northeast-2")


def usage(cases=None, users=None) -> TokenUsage:
    return TokenUsage(window_minutes=15, cases=cases or {}, users=users or {})


def flat(window: float, base: float = 0.0, n: int = 96) -> list[float]:
    return [window] + [base] * (n - 1)


def verdict(cases=None, users=None, states=None, uploads=None, consumer=None):
    return j.judge(CFG, usage(cases, users), states or {}, uploads or {}, consumer, NOW)


def test_empty_usage_trips_nothing_and_reports_zero():
    v = verdict()
    assert (v.trip, v.half_open, v.close, v.block, v.pause_service, v.tokens_hour) == ({}, {}, {}, {}, None, 0)
    [f] = j.findings_for(CFG, v, None, NOW)
    assert (f.check, f.status, f.value) == ("token-spend", Status.OK, 0) and "0 tokens (~$0.00) in the last hour; budget 5,000,000" in f.summary
    auto, gated = j.plan_for(SYS, ID, v, {}, None)
    assert auto.actions == gated.actions == [] and auto.cannot == []
    assert j.candidates(CFG, usage()) == [j.SERVICE] and j.top_users(CFG, usage()) == []


def test_case_budget_exactly_at_and_either_side():
    v = verdict({"at": flat(200_000), "over": flat(200_001), "under": flat(199_999)})
    assert set(v.trip) == {"over"} and "200,001 tokens in 15 min > budget 200,000" in v.trip["over"]


def test_spike_needs_the_factor_and_the_floor():
    v = verdict({"x5": flat(50_000, 10_000), "x5+": flat(50_001, 10_000), "tiny": flat(600, 10), "nobase": flat(100_000)})
    assert set(v.trip) == {"x5+"} and "5.0x its 24 h baseline (10,000)" in v.trip["x5+"]
    floor = verdict({"at-floor": flat(20_000, 1_000), "below": flat(19_999, 1_000)})
    assert set(floor.trip) == {"at-floor"}


def test_an_open_case_is_not_tripped_again_and_half_opens_after_the_cooldown():
    opened = {"state": j.OPEN, "changed_at": (NOW - timedelta(minutes=60)).isoformat()}
    recent = {"state": j.OPEN, "changed_at": (NOW - timedelta(minutes=59)).isoformat()}
    v = verdict({"hot": flat(300_000), "cool": flat(10), "young": flat(10)}, states={"hot": opened, "cool": opened, "young": recent})
    assert v.trip == {} and set(v.half_open) == {"cool"} and "OPEN for 60 min and back under budget" in v.half_open["cool"]
    still_hot = verdict({"hot": flat(300_000)}, states={"hot": {"state": j.OPEN, "changed_at": (NOW - timedelta(hours=5)).isoformat()}})
    assert still_hot.half_open == {} and still_hot.trip == {}
    service = verdict(states={j.SERVICE: opened})
    assert service.half_open == {}


def test_half_open_closes_under_budget_and_trips_again_over_it():
    v = verdict({"ok": flat(10), "bad": flat(250_000)}, states={"ok": {"state": j.HALF_OPEN}, "bad": {"state": j.HALF_OPEN}})
    assert set(v.close) == {"ok"} and set(v.trip) == {"bad"}
    auto, _ = j.plan_for(SYS, ID, v, {"ok": {"state": j.HALF_OPEN}, "bad": {"state": j.HALF_OPEN}}, None)
    assert [(a.resource, a.current, a.target) for a in auto.actions] == [("bad", j.HALF_OPEN, j.OPEN), ("ok", j.HALF_OPEN, j.CLOSED)]


def test_users_over_budget_and_mass_upload_at_the_threshold():
    v = verdict(users={"u-at": flat(500_000), "u-over": flat(500_001)}, uploads={"u-99": 99, "u-100": 100})
    assert set(v.users_over) == {"u-over"} and set(v.block) == {"u-100"}
    checks = {(f.check, f.resource): f.status for f in j.findings_for(CFG, v, None, NOW)}
    assert checks[("user-spend", "u-over")] is Status.WARN and checks[("mass-upload", "u-100")] is Status.CRIT
    auto, gated = j.plan_for(SYS, ID, v, {}, None)
    assert auto.actions == [] and [(a.kind, a.resource) for a in gated.actions] == [("block-user", "u-100")]
    allowed = System(name="t", region="ap-northeast-2", bill_shock=BillShock(auto_block_accounts=True))
    auto, gated = j.plan_for(allowed, ID, v, {}, None)
    assert [a.kind for a in auto.actions] == ["block-user"] and gated.actions == []
    auto, gated = j.plan_for(SYS, ID, v, {}, None, {"u-100": "disabled"})  # already blocked: no step, said
    assert auto.actions == gated.actions == [] and auto.unchanged == ["u-100: already disabled"]
    auto, gated = j.plan_for(SYS, ID, v, {}, None, {"u-100": "unreadable: UserNotFoundException"})  # never blocked unchecked
    assert auto.actions == gated.actions == [] and auto.cannot == [
        "u-100: suspected mass upload, but the account unreadable: UserNotFoundException: block it by hand"]
    auto, gated = j.plan_for(SYS, ID, v, {}, None, {"u-100": "enabled"})
    assert [(a.resource, a.current, a.target) for a in gated.actions] == [("u-100", "enabled", "disabled")]


def test_global_budget_pauses_behind_approval_unless_already_paused():
    hot = {f"c{i}": [60_000.0] * 4 + [0.0] * 92 for i in range(21)}  # 21 x 240,000 = 5,040,000 > 5,000,000 an hour
    v = verdict(hot, consumer={"state": "Enabled", "mapping_uuid": "m"})
    assert v.pause_service and "5,040,000 tokens in the last hour > global budget 5,000,000" in v.pause_service
    assert j.findings_for(CFG, v, None, NOW)[0].status is Status.CRIT
    auto, gated = j.plan_for(SYS, ID, v, {}, {"mapping_uuid": "m"})
    assert [(a.kind, a.target) for a in gated.actions] == [("pause-service", "Disabled")]
    auto, gated = j.plan_for(SYS, ID, v, {}, {"mapping_uuid": None})
    assert gated.actions == [] and "no event source mapping from leh-ai-jobs" in auto.cannot[0]
    at = verdict({f"c{i}": [62_500.0] * 4 + [0.0] * 92 for i in range(20)})  # exactly 5,000,000
    assert at.pause_service is None
    paused = verdict(hot, consumer={"state": "Disabled"})
    assert paused.pause_service is None


def test_a_paused_worker_warns_then_is_critical_past_the_retention_share():
    consumer = {"state": "Disabled", "last_modified": NOW - timedelta(hours=47), "retention_s": 96 * 3600, "queued": 12}
    [_, paused] = j.findings_for(CFG, verdict(), consumer, NOW)
    assert paused.status is Status.WARN and "12 messages waiting; paused 47.0 h of the queue's 96 h retention" in paused.summary
    [_, late] = j.findings_for(CFG, verdict(), {**consumer, "last_modified": NOW - timedelta(hours=48)}, NOW)
    assert late.status is Status.CRIT and "MESSAGES WILL EXPIRE" in late.summary


def test_reset_plan_closes_what_is_open_and_resumes_what_is_paused():
    plan = j.reset_plan(SYS, ID, "c", j.OPEN, True, {"state": "Disabled"})
    assert [(a.kind, a.current, a.target) for a in plan.actions] == [("breaker", "OPEN", "CLOSED"), ("pause-service", "Disabled", "Enabled")]
    noop = j.reset_plan(SYS, ID, "c", j.CLOSED, True, {"state": "Enabled"})
    assert noop.actions == [] and noop.unchanged == ["c: already CLOSED", "service: the worker is consuming"]


def test_candidates_top_users_table_and_news():
    u = usage({"big": flat(25_000), "small": flat(100)}, {"kim@lawfirm.example.com": flat(5), "b": flat(9)})
    assert j.candidates(CFG, u) == ["big", j.SERVICE] and j.top_users(CFG, u) == ["b", "kim@lawfirm.example.com"]
    v = j.judge(CFG, u, {}, {}, None, NOW)
    assert v.top_cases == [("big", 25_000.0), ("small", 100.0)]
    md = j.report_markdown(CFG, v, u)
    assert "| big | 25,000 | | b | 9 |" in md and "2 active cases, 2 active users" in md
    tripped = verdict({"hot": flat(300_000)})
    _, gated = j.plan_for(SYS, ID, tripped, {}, None)
    head, lines = j.evaluation_news(tripped, gated)
    assert head.startswith("1 case(s) tripped, 0 action(s) awaiting approval") and lines[0].startswith("case hot: OPEN (")
    esc = j.escalation_finding({"started": None, "deployment": "d", "error": "boom", "by_hand": "opsbook run x"})
    assert esc.status is Status.WARN and "could not start the approval run (boom); run: opsbook run x" in esc.summary


def test_an_unread_consumer_is_a_finding_and_blocks_only_the_pause():
    """Issue 19 item 5: the worker's queue unreadable; a case still trips, the pause is said as not plannable."""
    hot = {f"c{i}": [60_000.0] * 4 + [0.0] * 92 for i in range(21)} | {"spike": flat(300_000)}
    v = verdict(hot, consumer=None)
    assert "spike" in v.trip and v.pause_service
    auto, gated = j.plan_for(SYS, ID, v, {}, None, consumer_error="the source queue leh-ai-jobs does not exist")
    assert ("breaker", "spike", "OPEN") in [(a.kind, a.resource, a.target) for a in auto.actions] and gated.actions == []
    assert auto.cannot == [f"service: {v.pause_service}, but the worker's trigger could not be read (the source queue leh-ai-jobs "
                           "does not exist): pause it by hand"]
    f = j.consumer_unread(CFG, "the source queue leh-ai-jobs does not exist")
    assert (f.check, f.status, f.resource) == ("worker-consumer", Status.UNKNOWN, "leh-ai-jobs")
    assert f.summary.startswith("step 'read-consumer' failed: the source queue leh-ai-jobs does not exist;")
