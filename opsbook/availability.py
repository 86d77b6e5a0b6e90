"""Availability against the SLO, and the error budget left (pure: counts and thresholds in, a finding out).

Over a window, ``availability = 1 - 5XX / requests``. The SLO (``thresholds.availability_slo_pct``) allows
``budget = (1 - SLO) x requests`` 5XX in that window; ``used`` is the 5XX counted; ``left % = 100 x (1 - used /
budget)``. The burn rate is the window's error rate over the rate the SLO allows, ``(5XX / requests) / (1 - SLO)``:
at 1 the budget of any period is spent exactly as the period ends, above 1 before it ends (a period of
``availability_period_days`` lasts ``period / burn rate`` days at that pace).

Rules: below the SLO is CRIT (the window's budget is spent); at or above it with less than
``availability_budget_warn_pct`` of the budget left (at the SLO exactly: 0 % left) is WARN; no request in the window is
OK and says "no traffic" (never a made-up 100 %); counts that could not be read are UNKNOWN with the reason. A system
without ``availability_slo_pct`` gets no availability finding at all.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import Thresholds

CHECK = "availability"


class Traffic(BaseModel):
    """A subject's counts over a window: None is no datapoint (CloudWatch publishes nothing without a request)."""

    subject: str  # the API name or the target group
    kind: str  # apigateway | alb
    requests: float | None = None
    errors: float | None = None  # 5XX
    error: str | None = None  # why the counts could not be read
    source: str = ""  # the metrics and dimensions they come from
    service: str | None = None  # the ECS service behind a target group


class Budget(BaseModel):
    """The numbers of one window against the SLO."""

    requests: float
    errors: float
    availability_pct: float
    allowed: float  # the budget: 5XX the SLO allows in the window
    left_pct: float | None  # None: an SLO of 100 % allows none, and some happened
    burn_rate: float | None  # None: an SLO of 100 % with errors (any error spends an empty budget)
    below_slo: bool


def availability_pct(requests: float | None, errors: float | None) -> float | None:
    """100 x (1 - 5XX / requests); None without any request (no traffic is not 100 %)."""
    total = max(requests or 0.0, errors or 0.0)  # more 5XX than requests (a count published apart): every request failed
    if total <= 0:
        return None
    return 100.0 * (1 - (errors or 0.0) / total)


def budget(slo_pct: float, requests: float, errors: float) -> Budget:
    """The window's error budget. The comparison is made on the budget rounded to 1e-6 of a request, so that 1 5XX in
    1,000 requests is exactly at a 99.9 % SLO (binary floats would put it a hair under)."""
    total = max(requests, errors)
    allowed = round(total * (100.0 - slo_pct) / 100.0, 6)
    below = errors > allowed
    if allowed > 0:
        left: float | None = round(100.0 * (1 - errors / allowed), 2)
        burn: float | None = round(errors / allowed, 2)
    else:  # an SLO of 100 %
        left, burn = (100.0, 0.0) if errors == 0 else (None, None)
    return Budget(requests=total, errors=errors, availability_pct=100.0 * (1 - errors / total) if total else 100.0, allowed=allowed,
                  left_pct=left, burn_rate=burn, below_slo=below)


def pct_text(v: float, slo: float | None = None) -> str:
    """99.975 %, 99.9 %, 100 %: three decimals, zeros cut; more where that would read 100 for less, or read as the ``slo``
    it is not (99.8999 against 99.9)."""
    for digits in (3, 4, 5, 6):
        s = f"{v:.{digits}f}"
        if (float(s) != 100.0 or v >= 100.0) and (slo is None or v == slo or float(s) != slo):
            break
    return s.rstrip("0").rstrip(".") + " %"


def _n(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() or abs(v) >= 100 else f"{v:,.2f}"


def budget_text(b: Budget, slo_pct: float, period_days: int) -> str:
    """The budget's words: allowed, used, left, burn rate and what it means for the SLO period."""
    if b.left_pct is None:
        return f"a {pct_text(slo_pct)} SLO allows no 5XX and {_n(b.errors)} happened"
    text = f"error budget {_n(b.allowed)} 5XX, {_n(b.errors)} used, {max(b.left_pct, 0.0):g} % left (burn rate {b.burn_rate:g}x"
    if b.below_slo and b.burn_rate:
        return text + f": at this rate a {period_days}-day budget is gone in {period_days / b.burn_rate:.1f} days)"
    if b.burn_rate and b.burn_rate >= 1:
        return text + f": at this rate a {period_days}-day budget is gone as the period ends)"
    return text + ": the budget outlasts the period at this rate)"


def judge_availability(t: Traffic, th: Thresholds, window: str) -> Finding | None:
    """One subject over ``window`` ("the last 24 h", "this week") against ``th.availability_slo_pct``; None without an SLO."""
    slo = th.availability_slo_pct
    if slo is None:
        return None
    if t.error is not None:
        return unknown(CHECK, t.subject, f"requests and 5XX over {window} ({t.source or t.kind}): {t.error}")
    details: dict[str, Any] = {"kind": t.kind, "source": t.source, "slo_pct": slo, "window": window, "requests": t.requests,
                               "errors_5xx": t.errors, "budget_warn_pct": th.availability_budget_warn_pct}
    if t.service:
        details["service"] = t.service
    pct = availability_pct(t.requests, t.errors)
    if pct is None:
        return Finding(check=CHECK, resource=t.subject, status=Status.OK, details={**details, "no_traffic": True},
                       summary=f"no traffic over {window}: no request, so nothing to measure against the {pct_text(slo)} SLO")
    b = budget(slo, t.requests or 0.0, t.errors or 0.0)
    details.update(availability_pct=round(pct, 4), budget_allowed=b.allowed, budget_used=b.errors, budget_left_pct=b.left_pct,
                   burn_rate=b.burn_rate, below_slo=b.below_slo, exhausts_before_period_end=b.below_slo,
                   period_days=th.availability_period_days)
    text = (f"{pct_text(pct, slo)} available over {window} ({_n(b.errors)} 5XX of {_n(b.requests)} requests) against the "
            f"{pct_text(slo)} SLO; {budget_text(b, slo, th.availability_period_days)}")
    if b.below_slo:
        return Finding(check=CHECK, resource=t.subject, status=Status.CRIT, value=round(pct, 4), details=details,
                       summary=f"BELOW SLO: {text}")
    if b.left_pct is not None and b.left_pct < th.availability_budget_warn_pct:
        return Finding(check=CHECK, resource=t.subject, status=Status.WARN, value=round(pct, 4), details=details,
                       summary=f"error budget mostly spent ({b.left_pct:g} % left, WARN under {th.availability_budget_warn_pct:g} %): {text}")
    return Finding(check=CHECK, resource=t.subject, status=Status.OK, value=round(pct, 4), details=details, summary=text)


def nothing_to_measure(system_name: str, th: Thresholds) -> list[Finding]:
    """An SLO and no API or load-balanced service to measure it on: UNKNOWN (nobody can say that it is met)."""
    if th.availability_slo_pct is None:
        return []
    return [Finding(check=CHECK, resource=system_name, status=Status.UNKNOWN,
                    summary=(f"availability_slo_pct is {pct_text(th.availability_slo_pct)} but the system has no API Gateway API and no "
                             f"ECS service with a target_group to count requests and 5XX on"))]


# --- which counts are requests and which are 5XX ------------------------------------------------------------------

# (namespace, metric) -> what a Sum of it counts. An ALB's own 5XX (HTTPCode_ELB_5XX_Count: 502/503/504 it answers
# itself, e.g. 503 with no healthy target) are counted as requests too: one rejected before a target was chosen is in
# no RequestCount, and an outage made only of those must not read as "no traffic".
ROLES: dict[tuple[str, str], str] = {
    ("AWS/ApiGateway", "Count"): "requests",
    ("AWS/ApiGateway", "5XXError"): "errors",
    ("AWS/ApplicationELB", "RequestCount"): "requests",
    ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"): "errors",
    ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"): "both",
}


def add_counts(counts: list[tuple[tuple[str, str], float | None]]) -> tuple[float | None, float | None]:
    """(requests, 5XX) from Sums of the metrics in ``ROLES`` ((namespace, metric), value or None); None: no datapoint."""
    req: float | None = None
    err: float | None = None
    for key, v in counts:
        if v is None:
            continue
        role = ROLES[key]
        if role in ("requests", "both"):
            req = (req or 0.0) + v
        if role in ("errors", "both"):
            err = (err or 0.0) + v
    return req, err
