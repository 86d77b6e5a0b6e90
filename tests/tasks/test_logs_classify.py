"""tasks/logs.py's pure helpers for diagnoses: error lines by exception type (AccessDenied actions, timeouts), and
ThrottlingException lines (per minute, models named, retries visible), masked."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tasks.logs import LogTarget, classify, error_type, minute_of, model_of, summarize_throttles


@pytest.mark.parametrize("line,kind", [
    ("[ERROR]\tt\tid\tKeyError: 'x'", "KeyError"),
    ("2024 abc Task timed out after 30.03 seconds", "Task timed out"),
    ("[ERROR] ClientError: An error occurred (AccessDeniedException) when calling the Query operation", "AccessDeniedException"),
    ("Error: Runtime exited with error: signal: killed Runtime.ExitError", "Runtime.ExitError"),
    ("RequestId: x Error: Runtime exited with error: exit status 1", "Runtime.ExitError"),
    ("[ERROR] failed to process order", "ERROR (no exception type)"),
    ("[INFO] all fine", None),
])
def test_error_type(line, kind):
    assert error_type(line) == kind


def test_classify_counts_types_and_denied_actions():
    lines = ["[ERROR] x KeyError: 'a' kim@example.com"] * 3 + [
        "An error occurred (AccessDeniedException) ... is not authorized to perform: s3:GetObject on resource: arn:aws:s3:::b/k because"] * 2 + ["INFO ok"]
    fe = classify("f", "/aws/lambda/f", lines, len(lines), False)
    assert fe.total == 5 and [(t.type, t.count) for t in fe.types] == [("KeyError", 3), ("AccessDeniedException", 2)]
    assert fe.types[1].denied == [{"action": "s3:GetObject", "resource": "arn:aws:s3:::b/k", "count": 2}]
    assert fe.types[0].top == [{"message": "[ERROR] x KeyError: 'a' [EMAIL]", "count": 3}] and len(fe.types[0].samples) == 3
    assert "kim@example.com" not in json.dumps(fe.model_dump())
    assert fe.count("KeyError") == 3 and fe.count("Task timed out") == 0


def test_classify_keeps_the_longest_timeout():
    lines = ["a Task timed out after 30.03 seconds", "b Task timed out after 29.50 seconds"]
    fe = classify("f", "/aws/lambda/f", lines, 2, True)
    assert fe.types[0].type == "Task timed out" and fe.types[0].timeout_after_s == 30.03 and fe.truncated and fe.lines_read == 2
    assert classify("f", "/aws/lambda/f", [], 0, False).total == 0


def test_model_ids_in_lines():
    assert model_of("call modelId=anthropic.claude-3-5-sonnet-20240620-v1:0 failed") == "anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert model_of("profile us.anthropic.claude-3-haiku-20240307-v1:0.") == "us.anthropic.claude-3-haiku-20240307-v1:0"
    assert model_of("no model here") is None


def test_summarize_throttles_sees_application_retries():
    now = datetime(2026, 1, 5, 9, 12, 30, tzinfo=timezone.utc)
    rid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    events = [{"timestamp": int((now - timedelta(seconds=i)).timestamp() * 1000), "message": f"[ERROR] {rid} ThrottlingException, retrying"} for i in range(3)]
    s = summarize_throttles(LogTarget(function="f", group="/aws/lambda/f"), events + [{"timestamp": 0, "message": "INFO fine"}])
    assert s.count == 3 and s.requests == 1 and s.retries_visible and s.app_retries >= 1
    assert s.per_minute == {"2026-01-05T09:12Z": 3} and (s.peak_minute, s.peak_count) == ("2026-01-05T09:12Z", 3)


def test_summarize_throttles_peak_models_botocore_retries_and_masking():
    t0 = int(datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc).timestamp() * 1000)
    line = "[ERROR] invoke modelId=anthropic.claude-3-sonnet-20240229-v1:0 user=lee@example.com ThrottlingException (reached max retries: {n})"
    events = [{"timestamp": t0 + 60_000 * (i % 2), "message": line.format(n=2 + i % 3)} for i in range(5)]
    s = summarize_throttles(LogTarget(function="f", group="g"), events, truncated=True)
    assert s.per_minute == {"2026-01-05T09:00Z": 3, "2026-01-05T09:01Z": 2} and s.peak_minute == "2026-01-05T09:00Z"
    assert s.models == {"anthropic.claude-3-sonnet-20240229-v1:0": 5} and s.max_retries_seen == 4 and s.requests == 0
    assert s.truncated and len(s.samples) == 3 and "lee@example.com" not in " ".join(s.samples)
    assert minute_of(t0) == "2026-01-05T09:00Z"
    quiet = summarize_throttles(LogTarget(function="f", group="g"), [])
    assert (quiet.count, quiet.peak_minute, quiet.retries_visible) == (0, None, False)
