"""GetMetricData: a series CloudWatch could not read is an error, never an empty (idle-looking) series."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from opsbook import aws
from tasks import cloudwatch

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


class FakeCloudWatch:
    def __init__(self, results):
        self.results = results

    def get_paginator(self, op):
        assert op == "get_metric_data"
        results = self.results

        class Pages:
            def paginate(self, **kw):
                yield {"MetricDataResults": [r for r in results if r["Id"] in {q["Id"] for q in kw["MetricDataQueries"]}]}

        return Pages()


def run(monkeypatch, results):
    monkeypatch.setattr(aws, "client", lambda service, region: FakeCloudWatch(results))
    queries = [{"Id": r["Id"], "MetricStat": {}} for r in results]
    return cloudwatch.get_metric_data("us-east-1", queries, NOW - timedelta(days=1), NOW)


def test_a_forbidden_series_is_an_error_naming_it(monkeypatch):
    results = [{"Id": "ok", "StatusCode": "Complete", "Timestamps": [NOW], "Values": [3.0]},
               {"Id": "denied", "StatusCode": "Forbidden", "Timestamps": [], "Values": [],
                "Messages": [{"Code": "Forbidden", "Value": "not authorized for namespace Custom/X"}]}]
    with pytest.raises(cloudwatch.MetricsUnreadable, match=r"could not read 1 of 2 series, e.g. denied \(Forbidden: not authorized"):
        run(monkeypatch, results)


def test_healthy_twin_complete_and_empty_series_are_data(monkeypatch):
    results = [{"Id": "ok", "StatusCode": "Complete", "Timestamps": [NOW - timedelta(hours=1), NOW], "Values": [1.0, 2.0]},
               {"Id": "idle", "StatusCode": "Complete", "Timestamps": [], "Values": []}]
    out = run(monkeypatch, results)
    assert out == {"ok": [(NOW, 2.0), (NOW - timedelta(hours=1), 1.0)], "idle": []}
