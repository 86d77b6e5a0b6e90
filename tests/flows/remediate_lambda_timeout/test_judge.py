"""remediate-lambda-timeout's judge: verdicts, sizing and bounds from data given directly (no sandbox, no Prefect run)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flows.remediate_lambda_timeout import judge as j
from opsbook.findings import Status
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Identity, Record
from tasks.awslambda import FunctionConfig, parse_time
from tasks.cloudwatch import DurationStats
from tasks.logs import LogScan, classify_lambda_line
from tasks.sqs import QueueVisibility

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
HOUR_AGO = NOW - timedelta(hours=1)
ME = Identity(account="123456789012", arn="arn:aws:sts::123456789012:assumed-role/x/y", region="us-east-1")


def inv(**remediation) -> System:
    return System.model_validate({"name": "x", "region": "us-east-1", "remediation": remediation,
                                  "lambda_functions": [{"name": "f", "sqs_source": "q"}, {"name": "g"}, {"name": "h"}],
                                  "api_gateway_apis": [{"name": "api", "functions": ["g"], "integration_timeout_s": 15}]})


def parts(fn="f", timeout=60, memory=1024, timeouts=5, invocations=50, avg_ms=50000.0, max_ms=60030.0, earlier=0):
    cfg = FunctionConfig(name=fn, timeout_s=timeout, memory_mb=memory, last_update_status="Successful")
    scan = j.TimeoutScan(function=fn, log_group=f"/aws/lambda/{fn}", since=HOUR_AGO, count=timeouts, earlier=earlier, longest_s=timeout + 0.03)
    stats = DurationStats(function=fn, since=HOUR_AGO, invocations=invocations, avg_ms=avg_ms, max_ms=max_ms)
    return cfg, scan, stats


def case(system, fn="f", vis: int | None = 600, **kw):
    cfg, scan, stats = parts(fn, **kw)
    queues = {"q": QueueVisibility(name="q", visibility_s=vis, error=None if vis is not None else "AccessDenied")}
    return j.diagnose(system, cfg, scan, stats, queues)


def kinds(d):
    return [(a.kind, a.current, a.target) for a in d.actions]


# --- unreadable is UNKNOWN, never OK ---------------------------------------------------------------


def test_unreadable_configuration_logs_or_metrics_are_unknown_and_propose_nothing():
    cfg, scan, stats = parts()
    missing = FunctionConfig(name="f", missing=True, error="the function does not exist (check the inventory name and region)")
    d = j.diagnose(inv(), missing, scan, stats, {})
    assert (d.verdict, d.finding.status, d.actions) == ("unreadable", Status.UNKNOWN, []) and "does not exist" in d.finding.summary
    busy = cfg.model_copy(update={"last_update_status": "InProgress"})
    assert "update is in progress" in j.diagnose(inv(), busy, scan, stats, {}).finding.summary
    d = j.diagnose(inv(), cfg, scan.model_copy(update={"error": "log group does not exist"}), stats, {})
    assert d.finding.status is Status.UNKNOWN and "timeouts could not be counted: log group does not exist" in d.finding.summary
    d = j.diagnose(inv(), cfg, None, stats, {})
    assert d.finding.status is Status.UNKNOWN and "no scan" in d.finding.summary
    d = j.diagnose(inv(), cfg, scan, "access denied", {})
    assert d.finding.status is Status.UNKNOWN and d.actions == [] and "Duration metrics could not be read (access denied)" in d.finding.summary
    assert "5 timeout(s) in the logs" in d.finding.summary and d.finding.value == 5
    assert "no metrics read" in j.diagnose(inv(), cfg, scan, None, {}).finding.summary


def test_a_read_that_failed_as_a_whole_makes_every_function_unknown():
    cfgs = [FunctionConfig(name=n, timeout_s=30, memory_mb=512) for n in ("f", "g")]
    since = {"f": HOUR_AGO, "g": HOUR_AGO}
    out = j.diagnose_all(inv(), cfgs, "throttled", since, [], [], NOW)
    assert [(d.verdict, d.finding.status) for d in out] == [("unreadable", Status.UNKNOWN)] * 2
    assert all("throttled" in d.finding.summary for d in out)
    logs = [LogScan(function=n, log_group=f"/aws/lambda/{n}") for n in ("f", "g")]
    out = j.diagnose_all(inv(), cfgs, logs, since, "metrics denied", [], NOW)
    assert all(d.finding.status is Status.UNKNOWN and "metrics denied" in d.finding.summary for d in out)
    # the queues unreadable: a raise that needs a longer visibility is not made blind
    stats = [DurationStats(function="f", since=HOUR_AGO, invocations=50, avg_ms=50000.0, max_ms=30030.0)]
    timeouts = [LogScan(function="f", log_group="/aws/lambda/f",
                        events=[(NOW - timedelta(minutes=5), "Task timed out after 30.03 seconds")] * 5)]
    [d] = j.diagnose_all(inv(), cfgs[:1], timeouts, since, stats, "queue denied", NOW)
    assert d.actions == [] and "queue q could not be read (queue denied)" in d.cannot[0]


def test_no_invocation_is_unknown_even_with_timeouts_in_the_logs():
    d = case(inv(), timeouts=0, invocations=0)
    assert (d.verdict, d.finding.status) == ("no-data", Status.UNKNOWN) and "no invocation since" in d.finding.summary
    assert d.unchanged == "f: no invocation to judge"
    d = case(inv(), timeouts=3, invocations=0)
    assert d.finding.status is Status.UNKNOWN and "metrics lag" in d.finding.summary and d.actions == []


def test_empty_input_gives_no_diagnosis_and_an_empty_plan():
    assert j.diagnose_all(inv(), [], [], {}, [], [], NOW) == []
    plan = j.plan_fixes(inv(), ME, [])
    assert plan.actions == [] and plan.unchanged == [] and "headroom x1.5" in plan.notes[-1]
    assert j.select(inv(), []) == (["f", "g", "h"], [])
    assert j.select(inv(), ["g", "nope"]) == (["g"], ["nope"])
    [stranger] = j.unknown_functions(inv(), ["nope"])
    assert stranger.status is Status.UNKNOWN and "not a function of x's inventory (its functions: f, g, h)" in stranger.summary


# --- healthy, hang, too slow ----------------------------------------------------------------------------


def test_healthy_function_is_ok_and_close_to_its_timeout_at_80_percent():
    d = case(inv(), timeouts=0, avg_ms=5000.0, max_ms=47999.0)
    assert (d.verdict, d.finding.status, d.actions) == ("healthy", Status.OK, []) and "close" not in d.finding.summary
    d = case(inv(), timeouts=0, avg_ms=5000.0, max_ms=48000.0)  # exactly 80 %
    assert d.finding.status is Status.OK and "used 80% of the timeout: close, watch it" in d.finding.summary
    assert "no timeout (timeout 60 s, memory 1024 MB, max 48.00 s)" in d.unchanged


def test_hang_below_a_quarter_of_the_timeout_is_named_not_raised():
    # 5 timeouts at 60 s in 50 invocations; the other 45 average (avg*50 - 300000)/45 ms
    at_quarter = (0.25 * 60000 * 45 + 5 * 60000) / 50
    d = case(inv(), avg_ms=at_quarter - 1)
    assert (d.verdict, d.finding.status, d.actions) == ("hang", Status.WARN, []) and "downstream call hanging" in d.finding.summary
    assert d.finding.details["others_avg_ms"] < 15000 and any("far below the timeout" in n for n in d.notes)
    d = case(inv(), avg_ms=at_quarter)  # exactly 25 %: too slow, not a hang
    assert d.verdict == "timing-out" and d.actions


def test_too_slow_is_raised_to_longest_run_times_headroom():
    d = case(inv(), vis=600)  # 60.03 s x 1.5 = 91 s; 6 x 91 = 546 <= 600: the queue needs nothing
    assert (d.verdict, d.finding.status) == ("timing-out", Status.WARN) and kinds(d) == [("lambda-timeout", "60", "91")]
    assert "Proposed: timeout 60 -> 91 s" in d.finding.summary and "5 timeout(s) in 50 invocation(s)" in d.finding.summary
    assert "longest run 60.03 s x headroom 1.5 = 91 s" in d.actions[0].evidence


def test_a_queue_with_too_short_a_visibility_is_raised_first_to_6x_the_timeout():
    d = case(inv(), vis=545)  # 6 x 91 = 546
    assert kinds(d) == [("sqs-visibility", "545", "546"), ("lambda-timeout", "60", "91")]
    assert "6x the timeout" in d.actions[0].evidence and "q visibility 545 -> 546 s" in d.finding.summary
    assert kinds(case(inv(), vis=546)) == [("lambda-timeout", "60", "91")]


def test_queue_visibility_below_the_timeout_is_a_warning_and_below_6x_a_note():
    d = case(inv(), vis=59, timeouts=0, avg_ms=1000.0, max_ms=2000.0)
    [f] = d.extra_findings
    assert (f.check, f.resource, f.status) == ("lambda-queue-visibility", "q", Status.WARN) and "processed twice" in f.summary
    d = case(inv(), vis=60, timeouts=0, avg_ms=1000.0, max_ms=2000.0)
    assert d.extra_findings == [] and any("below 6x f's timeout" in n for n in d.notes)
    assert case(inv(), vis=360, timeouts=0, avg_ms=1000.0, max_ms=2000.0).notes == []


def test_policy_cap_raises_as_far_as_allowed_and_adds_memory():
    d = case(inv(lambda_max_timeout_s=70, lambda_max_memory_mb=2048))
    assert kinds(d) == [("lambda-timeout", "60", "70"), ("lambda-memory", "1024", "1344")]
    assert "lambda_max_timeout_s 70" in d.actions[1].evidence  # 91 s needed / 70 allowed -> x1.3
    assert d.finding.details["bound"] == "policy" and d.finding.details["needed_timeout_s"] == 91


def test_unreadable_queue_blocks_the_raise():
    d = case(inv(), vis=None)
    assert d.actions == [] and "not raised blind" in d.cannot[0] and "Not fixed" in d.finding.summary


def test_memory_at_the_policy_maximum_cannot_be_fixed_here():
    d = case(inv(lambda_max_memory_mb=1024), fn="g", timeout=14, memory=1024, max_ms=14030.0, avg_ms=12000.0)
    assert [a.kind for a in d.actions] == [] and "only the code can fix it" in d.cannot[0]


def test_the_api_bound_and_memory_above_one_vcpu():
    d = case(inv(), fn="g", timeout=20, memory=1536, max_ms=20030.0, avg_ms=18000.0)
    by_kind = {a.kind: a for a in d.actions}
    assert by_kind["lambda-timeout"].target == "14" and int(by_kind["lambda-memory"].target) == 3456
    assert "adds vCPUs" in by_kind["lambda-memory"].evidence and "cannot help" in by_kind["lambda-memory"].evidence
    assert "aligned below API Gateway api" in by_kind["lambda-timeout"].evidence


def test_a_healthy_function_behind_an_api_is_left_alone_with_a_note():
    d = case(inv(), fn="g", timeout=20, timeouts=0, avg_ms=1000.0, max_ms=2000.0)
    assert d.verdict == "healthy" and d.actions == [] and d.finding.status is Status.OK and "not below" in d.notes[0]
    assert case(inv(), fn="g", timeout=14, timeouts=0, avg_ms=1000.0, max_ms=2000.0).notes == []  # 14 < 15: fine


@pytest.mark.parametrize(("current", "needed", "allowed", "max_mb", "want"), [
    (1024, 91, 70, 2048, 1344), (1024, 70, 70, 2048, 1088), (1024, 500, 10, 2048, 2048), (10200, 900, 10, 20000, 10240)])
def test_memory_target_scales_by_the_speed_needed_in_64_mb_steps(current, needed, allowed, max_mb, want):
    assert j.memory_target(current, needed, allowed, max_mb) == want


# --- counting lines, since when -----------------------------------------------------------------------------


def test_only_timeouts_at_the_current_setting_since_the_last_change_count():
    log = LogScan(function="f", log_group="/aws/lambda/f", pages=2, events=[
        (NOW - timedelta(minutes=1), "Task timed out after 30.03 seconds"),
        (NOW - timedelta(minutes=2), "Task timed out after 30.99 seconds"),  # within 1 s of the setting
        (NOW - timedelta(minutes=3), "Task timed out after 31.00 seconds"),  # another setting: earlier
        (HOUR_AGO - timedelta(seconds=1), "Task timed out after 30.03 seconds"),  # before the change: earlier
        (NOW, "REPORT RequestId: x\tDuration: 5.00 ms"),
    ])
    scan = j.count_timeouts(log, HOUR_AGO, 30)
    assert (scan.count, scan.earlier, scan.longest_s, scan.pages) == (2, 2, 30.99, 2) and len(scan.samples) == 2
    d = case(inv(), timeouts=0, earlier=4, avg_ms=1000.0, max_ms=2000.0)
    assert d.finding.status is Status.OK and "4 earlier timeout(s)" in d.finding.summary


def test_since_is_the_latest_of_window_function_change_and_opsbook_change():
    cfg = FunctionConfig(name="f", last_modified=NOW - timedelta(minutes=30))
    assert j.since_for(cfg, [], "rb", HOUR_AGO) == NOW - timedelta(minutes=30)
    recs = [{"runbook": "rb", "resource": "f", "status": "verified", "at": (NOW - timedelta(minutes=10)).isoformat()},
            {"runbook": "rb", "resource": "f", "status": "failed", "at": NOW.isoformat()}]
    assert j.since_for(cfg, recs, "rb", HOUR_AGO) == NOW - timedelta(minutes=10)
    assert j.since_for(cfg.model_copy(update={"last_modified": None}), [], "rb", HOUR_AGO) == HOUR_AGO


def test_log_lines_are_classified_and_lambda_times_parsed():
    assert classify_lambda_line("2026-01-01T00:00:00.000Z abc Task timed out after 3.00 seconds") == ("timeout", 3.0)
    assert classify_lambda_line("REPORT RequestId: abc\tDuration: 12.50 ms\tBilled Duration: 13 ms") == ("report", 12.5)
    assert classify_lambda_line("INFO all good") == (None, None)
    assert parse_time("2024-05-01T18:27:43.112+0000") == datetime(2024, 5, 1, 18, 27, 43, 112000, tzinfo=timezone.utc)
    assert parse_time("2024-05-01T18:27:43.123456000Z") == datetime(2024, 5, 1, 18, 27, 43, 123456, tzinfo=timezone.utc)
    assert parse_time("yesterday") is None and parse_time(None) is None


def test_every_system_inventory_loads_into_the_rules():
    for name in ("hr-resource-optimization", "todo-app", "leh", "t-developer"):
        system = load_system(name)
        assert all(cap < 29 for cap, _ in j.api_caps(system).values())


# --- the plan and after the change ---------------------------------------------------------------------------


def test_plan_orders_queues_first_one_action_per_queue_then_memory_before_timeout():
    two = [case(inv(), vis=100), case(inv(lambda_max_timeout_s=70), vis=100)]
    plan = j.plan_fixes(inv(), ME, two)
    assert [(a.kind, a.target) for a in plan.actions] == [("sqs-visibility", "546"), ("lambda-memory", "1344"), ("lambda-timeout", "91"),
                                                          ("lambda-timeout", "70")]
    assert any("raised before the function timeouts" in n for n in plan.notes)
    blind = j.diagnose(inv(), FunctionConfig(name="h", error="denied"), None, None, {})
    assert any("h: not judged" in n for n in j.plan_fixes(inv(), ME, [blind]).notes)


def obs(**kw):
    return j.Observation(function="f", since=NOW, **kw)


def test_after_the_change_ok_warn_or_not_yet_confirmed():
    events = [(NOW + timedelta(seconds=1), "REPORT RequestId: a\tDuration: 1500.00 ms"), (NOW - timedelta(seconds=1), "Task timed out after 91.03 seconds")]
    o = j.observation("f", NOW, events)
    assert (o.invocations, o.timeouts, o.longest_ms) == (1, 0, 1500.0)
    assert j.observation_finding(o, 5).status is Status.OK and "longest 1.50 s" in j.observation_finding(o, 5).summary
    hot = j.observation_finding(obs(timeouts=1, samples=["Task timed out after 91.03 seconds"]), 5)
    assert hot.status is Status.WARN and "still timing out" in hot.summary
    none = j.observation_finding(obs(), 5)
    assert none.status is Status.UNKNOWN and "no new invocation in the 5 s watched" in none.summary
    assert j.observation_finding(obs(error="denied"), 5).status is Status.UNKNOWN


def test_after_change_replaces_the_changed_functions_finding_and_keeps_the_rest():
    before = case(inv()).finding
    other = case(inv(), fn="h", timeouts=0, avg_ms=1000.0, max_ms=2000.0).finding
    rec = Record(runbook=j.RUNBOOK, system="x", resource="f", kind="lambda-timeout", before="60", after="91", status="verified")
    out = j.after_change([before, other], [obs(invocations=3)], [rec], 5)
    assert out[1] == other and out[0].status is Status.OK
    assert out[0].summary.startswith("changed (timeout 60 -> 91); after the change: 3 invocation(s)") and "Before: 5 timeout(s)" in out[0].summary
    [fix] = j.fix_findings([rec])
    assert fix.status is Status.OK and fix.summary == "lambda-timeout 60 s -> 91 s: verified"
    failed = rec.model_copy(update={"kind": "lambda-memory", "status": "failed", "detail": "boom"})
    assert j.fix_findings([failed])[0].status is Status.CRIT and "MB" in j.fix_findings([failed])[0].summary
