"""Cost Explorer's days summed by service and week (pure)."""

from __future__ import annotations

from datetime import date, timedelta

from tasks.costexplorer import summarize_costs


def test_cost_explorer_data_is_summed_by_service_and_week():
    start = date(2024, 1, 1)
    results = [{"TimePeriod": {"Start": (start + timedelta(days=i)).isoformat()}, "Groups": [
        {"Keys": ["AWS Lambda"], "Metrics": {"UnblendedCost": {"Amount": str(1.0 if i < 7 else 2.0), "Unit": "USD"}}}]} for i in range(14)]
    c = summarize_costs(results, start)
    assert c.error is None and c.by_service["AWS Lambda"] == (7.0, 14.0) and c.totals() == (7.0, 14.0)
    assert summarize_costs([{"TimePeriod": {"Start": "2024-01-01"}, "Groups": []}], start).error
