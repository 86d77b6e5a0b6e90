"""The Lambda-timeout scenario writes evidence the runbook can trust: nothing stamped in the future."""

from __future__ import annotations

from datetime import datetime, timezone

import boto3

from sandbox import lambda_timeouts as sc


def test_every_seeded_log_line_is_in_the_past(seeded, sandbox):
    """A line stamped after the runbook's change would count as new traffic after it (a flaky 'done' instead of
    'not yet confirmed'): the last minute's invocations used to end up to ~14 s after the moment of seeding."""
    hr = seeded("hr-resource-optimization")
    out = sc.lambda_timeouts(sandbox, hr, "DomainAnalysisEngine")
    written = datetime.now(timezone.utc).timestamp() * 1000
    logs = boto3.client("logs", region_name=hr.region, endpoint_url=sandbox.endpoint)
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName="/aws/lambda/DomainAnalysisEngine")
    stamps = [e["timestamp"] for p in pages for e in p["events"]]
    assert len(stamps) >= out["invocations"] * 3  # START, END, REPORT per invocation (+ the timeout lines)
    assert max(stamps) <= written, f"{(max(stamps) - written) / 1000:.1f} s in the future"
