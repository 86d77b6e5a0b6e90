"""weekly-report's data: the two weeks it compares, the series it reads and their trends."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from pydantic import BaseModel

from opsbook.inventory import System
from tasks.cloudwatch import MetricSeries, TwoWeeks

# the metrics that show a resource is used at all (an idle resource has none of them)
ACTIVITY = {"lambda": ("Invocations",), "apigateway": ("Count",), "dynamodb": ("ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits"),
            "s3": ("BucketSizeBytes", "NumberOfObjects")}


class Window(BaseModel):
    """Two whole weeks of local days: [start, mid) is last week, [mid, end) this week."""

    start: datetime
    end: datetime
    timezone: str

    @property
    def mid(self) -> datetime:
        return self.start + timedelta(days=7)

    def days(self) -> list[date]:
        tz = self.start.tzinfo
        return [(self.start + timedelta(days=i)).astimezone(tz).date() for i in range(14)]


def week_window(system: System, weeks_back: int = 0, now: datetime | None = None) -> Window:
    """The 7 local days before today (minus ``weeks_back`` weeks) and the 7 before those."""
    now = (now or datetime.now(system.tz)).astimezone(system.tz)
    end = datetime.combine(now.date(), time(0), tzinfo=system.tz) - timedelta(days=7 * weeks_back)
    return Window(start=end - timedelta(days=14), end=end, timezone=system.timezone)


class Series(MetricSeries):
    """One trend line: a metric statistic of one resource (summed over ``dimension_sets``)."""

    kind: str  # custom, lambda, apigateway, dynamodb, s3; alb (hidden: the availability's counts)
    resource: str
    unit: str = ""
    sparse: bool = False  # published only when it happens (errors, throttles): no data is normal
    bad_when_up: bool = False
    slo: float | None = None
    slo_kind: str | None = None  # max | min
    hidden: bool = False  # read for a derived value (SampleCount for a rate), not shown

    @property
    def activity(self) -> bool:
        """No datapoint of this metric in either week means that the subject was idle."""
        return self.kind == "custom" or self.metric in ACTIVITY.get(self.kind, ())

    @property
    def label(self) -> str:
        return f"{self.metric} {self.stat}"

    @property
    def key(self) -> str:
        """The finding's resource for this series."""
        return f"{self.resource} {self.label}"

    @property
    def subject(self) -> str:
        """What is idle when the series has no data: the resource, or for custom metrics the metric."""
        return f"{self.namespace} {self.metric}" if self.kind == "custom" else self.resource


class Trend(TwoWeeks):
    """A series and its two weeks of values."""

    series: Series

    @property
    def no_data(self) -> bool:
        return self.last_week is None and self.this_week is None and all(v is None for v in self.daily)

    @property
    def change_pct(self) -> float | None:
        a, b = self.last_week, self.this_week
        if a is None or b is None:
            return None
        if a == 0:
            return 0.0 if b == 0 else None
        return round((b - a) / abs(a) * 100, 1)


def trends_of(series: list[Series], values: list[TwoWeeks]) -> list[Trend]:
    """Each series with the values read for it (the same order)."""
    return [Trend(series=s, **v.model_dump()) for s, v in zip(series, values, strict=True)]
