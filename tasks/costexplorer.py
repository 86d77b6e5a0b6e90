"""Cost Explorer: the account's unblended cost by service, day by day, over two weeks."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.iam import aws_task


class CostReport(BaseModel):
    by_service: dict[str, tuple[float, float]] = Field(default_factory=dict)  # service -> (last week, this week)
    daily: list[float | None] = Field(default_factory=list)
    unit: str = "USD"
    error: str | None = None

    def totals(self) -> tuple[float, float]:
        return sum(v[0] for v in self.by_service.values()), sum(v[1] for v in self.by_service.values())


@aws_task(iam=["ce:GetCostAndUsage"], cache_policy=NO_CACHE)
def read_costs(start: date, end: date) -> CostReport:
    """Unblended cost by SERVICE, daily, for the two weeks [start, end) (Cost Explorer days are UTC; the account's whole bill)."""
    c = aws.client("ce", "us-east-1")  # Cost Explorer's one endpoint
    kwargs: dict[str, Any] = dict(TimePeriod={"Start": start.isoformat(), "End": end.isoformat()}, Granularity="DAILY",
                                  Metrics=["UnblendedCost"], GroupBy=[{"Type": "DIMENSION", "Key": "SERVICE"}])
    results: list[dict[str, Any]] = []
    try:
        while True:
            page = c.get_cost_and_usage(**kwargs)
            results += page.get("ResultsByTime", [])
            if not page.get("NextPageToken"):
                break
            kwargs["NextPageToken"] = page["NextPageToken"]
    except Exception as exc:
        return CostReport(error=aws.describe_error(exc))
    return summarize_costs(results, start)


def summarize_costs(results: list[dict[str, Any]], start: date) -> CostReport:
    """GetCostAndUsage's days as cost by service per week (the first 7 days, the next 7) and a total a day."""
    mid = start + timedelta(days=7)
    by_service: dict[str, list[float]] = {}
    daily: list[float | None] = [None] * 14
    unit = "USD"
    groups_seen = 0
    for r in results:
        day = date.fromisoformat(r["TimePeriod"]["Start"])
        k = (day - start).days
        for g in r.get("Groups", []):
            groups_seen += 1
            amt = g["Metrics"]["UnblendedCost"]
            unit = amt.get("Unit", unit)
            v = float(amt["Amount"])
            by_service.setdefault(g["Keys"][0], [0.0, 0.0])[0 if day < mid else 1] += v
            if 0 <= k < 14:
                daily[k] = (daily[k] or 0.0) + v
    if not groups_seen:
        return CostReport(error=f"Cost Explorer returned no cost data for {start} to {start + timedelta(days=14)} "
                                f"({len(results)} periods, no service groups): not enabled for the account, no access, or nothing billed; not shown as $0")
    return CostReport(by_service={k: (round(v[0], 2), round(v[1], 2)) for k, v in by_service.items()}, daily=daily, unit=unit)
