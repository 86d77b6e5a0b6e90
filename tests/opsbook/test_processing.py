"""The health rules of a queue-fed worker (opsbook/processing.py): pure, every edge (empty, missing, unreadable,
exactly at a threshold)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from opsbook import processing as p
from opsbook.findings import Status
from opsbook.inventory import StuckProcessing, System, load_system

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
ENABLED = {"UUID": "u-1", "State": "Enabled", "LastProcessingResult": "OK"}
PATTERNS = StuckProcessing().external_error_patterns


def test_consumer_queues_come_from_both_sides_of_the_inventory_without_repeats():
    s = System(name="x", region="us-east-1", sqs_queues=[{"name": "q1", "consumer_function": "w1"}, {"name": "q2"}],
               lambda_functions=[{"name": "w1", "sqs_source": "q1"}, {"name": "w2", "sqs_source": "q3"}])
    assert p.consumer_queues(s) == [("q1", "w1"), ("q3", "w2")]
    assert p.consumer_queues(System(name="y", region="us-east-1")) == []


def test_leh_reconciles_bill_shocks_uploads_against_case_stores_evidence_table():
    leh = load_system("leh")
    assert p.uploads_target(leh) == ("leh-evidence-uploads", "uploads/", "leh-evidence")
    assert p.results_key(leh, "leh-evidence") == ("case_id", "evidence_id")
    assert p.map_key("uploads/u1/case-7/ev-9.pdf", p.settings(leh).upload_key_pattern, "case_id", "evidence_id") == {"case_id": "case-7", "evidence_id": "ev-9"}
    assert p.map_key("uploads/keep.bin", p.settings(leh).upload_key_pattern, "case_id", "evidence_id") is None


# --- the trigger -------------------------------------------------------------------------------------------------


def test_trigger_enabled_is_ok_and_an_empty_result_is_not_judged():
    assert p.judge_trigger("q", "w", [ENABLED]).status is Status.OK
    f = p.judge_trigger("q", "w", [{"UUID": "u", "State": "Enabled"}])
    assert f.status is Status.OK and f.summary == "Enabled from q"
    assert p.judge_trigger("q", "w", [{**ENABLED, "LastProcessingResult": "No records processed"}]).status is Status.OK


def test_trigger_missing_is_crit_and_unreadable_is_unknown():
    f = p.judge_trigger("q", "w", [])
    assert f.status is Status.CRIT and "no event source mapping from q to w" in f.summary
    assert p.judge_trigger("q", "w", None, "ListEventSourceMappings: access denied").status is Status.UNKNOWN
    assert p.judge_trigger("q", "w", None).status is Status.UNKNOWN


@pytest.mark.parametrize("state", ["Disabled", "Disabling"])
def test_trigger_paused_is_crit_naming_function_and_queue_unless_the_breaker_explains_it(state):
    f = p.judge_trigger("leh-ai-jobs", "leh-ai-worker", [{**ENABLED, "State": state}])
    assert f.status is Status.CRIT and f.summary.startswith(f"leh-ai-worker's trigger from leh-ai-jobs is {state}")
    breaker = {"state": "OPEN", "reason": "5,000,001 tokens > budget", "changed_by": "kim", "changed_at": "2026-12-04T01:00:00+00:00"}
    w = p.judge_trigger("leh-ai-jobs", "leh-ai-worker", [{**ENABLED, "State": state}], breaker=breaker)
    assert w.status is Status.WARN and "paused by the circuit breaker (5,000,001 tokens > budget; by kim at 2026-12-04T01:00:00+00:00)" in w.summary
    closed = p.judge_trigger("leh-ai-jobs", "leh-ai-worker", [{**ENABLED, "State": state}], breaker={**breaker, "state": "CLOSED"})
    assert closed.status is Status.CRIT
    unread = p.judge_trigger("q", "w", [{**ENABLED, "State": state}], breaker_unreadable="BatchGetItem: throttled")
    assert unread.status is Status.CRIT and "could not be read to explain it (BatchGetItem: throttled)" in unread.summary


def test_trigger_failing_result_is_a_warning_with_its_text_and_an_enabled_mapping_is_preferred():
    f = p.judge_trigger("q", "w", [{**ENABLED, "LastProcessingResult": "PROBLEM: Function call failed"}])
    assert f.status is Status.WARN and "PROBLEM: Function call failed" in f.summary
    assert p.judge_trigger("q", "w", [{**ENABLED, "State": "Disabled"}, ENABLED]).status is Status.OK


# --- the queue ---------------------------------------------------------------------------------------------------


def backlog(visible=3, age_s=60.0, **kw):
    return p.judge_backlog("q", {"visible": visible, "in_flight": 0}, kw.get("unreadable"), age_s, kw.get("age_unreadable"), 15, 60)


def test_backlog_empty_is_ok_whatever_the_metric_says():
    assert backlog(visible=0, age_s=None).status is Status.OK
    assert backlog(visible=0, age_s=None, age_unreadable="denied").status is Status.OK


def test_backlog_thresholds_are_inclusive():
    assert backlog(age_s=15 * 60 - 1).status is Status.OK
    assert backlog(age_s=15 * 60).status is Status.WARN
    assert backlog(age_s=60 * 60 - 1).status is Status.WARN
    f = backlog(age_s=60 * 60)
    assert f.status is Status.CRIT and f.summary.startswith("q: oldest message 60 min old (CRIT from 60 min)") and f.value == 60


def test_backlog_without_a_datapoint_while_messages_wait_is_unknown_never_ok():
    f = backlog(age_s=None)
    assert f.status is Status.UNKNOWN and "no ApproximateAgeOfOldestMessage datapoint" in f.summary
    assert backlog(age_unreadable="GetMetricData: access denied").status is Status.UNKNOWN
    assert backlog(unreadable="GetQueueAttributes: access denied").status is Status.UNKNOWN


def test_backlog_of_a_missing_queue_is_crit():
    assert p.judge_backlog("q", None, None, None, None, 15, 60).status is Status.CRIT


# --- the uploads --------------------------------------------------------------------------------------------------


def test_split_uploads_keeps_the_window_leaves_young_ones_pending_newest_first():
    objs = [("old", NOW - timedelta(hours=30)), ("young", NOW - timedelta(minutes=5)), ("due", NOW - timedelta(minutes=15)),
            ("a", NOW - timedelta(hours=2)), ("b", NOW - timedelta(hours=1))]
    due, in_window, pending = p.split_uploads(objs, NOW, 24, 15)
    assert [k for k, _ in due] == ["due", "b", "a"] and (in_window, pending) == (4, 1)


def uploads(checked=0, missing=0, **kw):
    r = p.UploadsRead(bucket="b", prefix="uploads/", table="t", in_window=kw.get("in_window", checked), pending=kw.get("pending", 0),
                      checked=[{"key": f"k{i}", "uploaded_at": "2026-12-04T10:00:00+00:00"} for i in range(checked)],
                      missing=[{"key": f"k{i}", "uploaded_at": "2026-12-04T10:00:00+00:00"} for i in range(missing)], **{
                          k: v for k, v in kw.items() if k in ("error", "missing_bucket", "list_cut", "listed", "unmapped")})
    return p.judge_uploads(r, 24, 15, 1, 20)


def test_uploads_none_to_check_is_ok_and_all_present_is_ok():
    assert uploads().status is Status.OK
    assert uploads(checked=5).status is Status.OK


def test_uploads_missing_warn_at_one_and_crit_at_the_threshold():
    f = uploads(checked=5, missing=1)
    assert f.status is Status.WARN and f.summary.startswith("1 of 5 uploads of the last 24 h have no result in t") and f.details["missing_keys"] == ["k0"]
    assert uploads(checked=30, missing=19).status is Status.WARN
    assert uploads(checked=30, missing=20).status is Status.CRIT


def test_uploads_unreadable_or_bucket_missing_is_unknown_and_a_cut_listing_says_so():
    assert uploads(error="ListObjectsV2: access denied").status is Status.UNKNOWN
    assert uploads(missing_bucket=True).status is Status.UNKNOWN
    assert p.judge_uploads(None, 24, 15, 1, 20, unreadable="boom").status is Status.UNKNOWN
    assert "a lower bound" in uploads(checked=3, missing=1, list_cut=True, listed=10000).summary
    assert "(the newest 3 of 50)" in uploads(checked=3, in_window=50).summary


# --- the worker's errors ----------------------------------------------------------------------------------------------


LINES = [(NOW - timedelta(minutes=3), "[ERROR] openai.RateLimitError: Error code: 429 - rate_limit_exceeded"),
         (NOW - timedelta(minutes=2), "[ERROR] APITimeoutError: Request timed out."),
         (NOW - timedelta(minutes=1), "[ERROR] KeyError: 'pages' in summarize()"),
         (NOW, "INFO request handled in 101 ms")]


def test_errors_split_external_from_internal_and_drop_non_errors():
    ext, internal = p.split_errors(LINES, PATTERNS)
    assert [m for _, m in ext] == [LINES[0][1], LINES[1][1]] and [m for _, m in internal] == [LINES[2][1]]
    f = p.judge_worker_errors("w", "/aws/lambda/w", LINES, None, PATTERNS, "OpenAI", 24, 1, 100)
    assert f.status is Status.WARN and (f.details["external"], f.details["internal"]) == (2, 1)
    assert f.details["first_external_at"] == (NOW - timedelta(minutes=3)).isoformat() and "2 from OpenAI" in f.summary


def test_errors_none_is_ok_crit_from_the_threshold_and_unreadable_or_missing_is_unknown():
    assert p.judge_worker_errors("w", "g", [], None, PATTERNS, "OpenAI", 24, 1, 100).status is Status.OK
    assert p.judge_worker_errors("w", "g", [LINES[3]], None, PATTERNS, "OpenAI", 24, 1, 100).status is Status.OK
    many = [LINES[0]] * 100
    assert p.judge_worker_errors("w", "g", many, None, PATTERNS, "OpenAI", 24, 1, 100).status is Status.CRIT
    assert p.judge_worker_errors("w", "g", many[:99], None, PATTERNS, "OpenAI", 24, 1, 100).status is Status.WARN
    assert p.judge_worker_errors("w", "g", None, "denied", PATTERNS, "OpenAI", 24, 1, 100).status is Status.UNKNOWN
    assert p.judge_worker_errors("w", "g", None, None, PATTERNS, "OpenAI", 24, 1, 100, missing_group=True).status is Status.UNKNOWN


# --- the provider's status page -------------------------------------------------------------------------------------


def status(body, code=200, **kw):
    return p.judge_provider_status("OpenAI", "https://status.example/x", code, json.dumps(body) if not isinstance(body, str) else body,
                                   kw.get("error"), kw.get("not_probed"))


def test_provider_statuspage_indicators():
    assert status({"status": {"indicator": "none", "description": "All Systems Operational"}}).status is Status.OK
    f = status({"status": {"indicator": "major", "description": "Partial outage"}})
    assert f.status is Status.WARN and f.summary.startswith("OpenAI reports major: Partial outage")
    assert status({"status": "ok"}).status is Status.OK
    assert status({"status": "degraded"}).status is Status.WARN
    assert status("<html>fine</html>").status is Status.OK


def test_provider_page_down_or_not_probed_is_unknown_and_an_error_status_a_warning():
    assert status("", code=None, error="timeout: no answer").status is Status.UNKNOWN
    assert status("", code=None, not_probed="not probed: loopback only").status is Status.UNKNOWN
    assert status("", code=503).status is Status.WARN


def test_inventory_rejects_bad_regexes_and_warn_above_crit():
    with pytest.raises(ValueError):
        StuckProcessing(upload_key_pattern="(")
    with pytest.raises(ValueError):
        StuckProcessing(external_error_patterns=["["])
    with pytest.raises(ValueError):
        StuckProcessing(unprocessed_warn=5, unprocessed_crit=2)
    with pytest.raises(ValueError):
        System(name="x", region="us-east-1", thresholds={"queue_age_warn_minutes": 61, "queue_age_crit_minutes": 60})
