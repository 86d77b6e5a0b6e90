"""Availability against the SLO and the error budget left (opsbook/availability.py): counts in, a finding out."""

from __future__ import annotations

import pytest

from opsbook.availability import Traffic, add_counts, availability_pct, budget, judge_availability, nothing_to_measure, pct_text
from opsbook.findings import Status
from opsbook.inventory import Thresholds

TH = Thresholds(availability_slo_pct=99.9)
DAY = "the last 24 h"


def api(requests, errors, **kw) -> Traffic:
    return Traffic(subject="todo-api", kind="apigateway", requests=requests, errors=errors, source="AWS/ApiGateway", **kw)


def test_no_slo_no_finding():
    assert judge_availability(api(1000, 500), Thresholds(), DAY) is None
    assert nothing_to_measure("leh", Thresholds()) == []


def test_no_traffic_is_ok_and_says_so_never_a_made_up_100():
    for req, err in ((None, None), (0, 0), (0, None), (None, 0)):
        f = judge_availability(api(req, err), TH, DAY)
        assert f.status is Status.OK and f.value is None and f.details["no_traffic"]
        assert f.summary.startswith("no traffic over the last 24 h") and "100 %" not in f.summary
    assert availability_pct(None, None) is None


def test_exactly_at_the_slo_meets_it_with_no_budget_left_a_warning():
    f = judge_availability(api(1000, 1), TH, DAY)  # 99.9 % of 1,000: 1 5XX allowed, 1 used
    assert f.status is Status.WARN and f.value == pytest.approx(99.9)
    assert f.details["below_slo"] is False and f.details["budget_left_pct"] == 0 and f.details["burn_rate"] == 1
    assert f.details["exhausts_before_period_end"] is False
    assert "99.9 % available over the last 24 h (1 5XX of 1,000 requests) against the 99.9 % SLO" in f.summary
    assert "0 % left" in f.summary and "gone as the period ends" in f.summary


def test_below_the_slo_is_crit_with_the_budget_spent_and_when_a_period_would_run_out():
    f = judge_availability(api(1000, 2), TH, DAY)
    assert f.status is Status.CRIT and f.summary.startswith("BELOW SLO: 99.8 % available")
    assert f.details["budget_left_pct"] == -100 and f.details["burn_rate"] == 2 and f.details["exhausts_before_period_end"]
    assert "0 % left" in f.summary and "a 30-day budget is gone in 15.0 days" in f.summary


def test_budget_mostly_spent_is_a_warning_at_the_inventory_threshold():
    f = judge_availability(api(10_000, 8), TH, DAY)  # 8 of 10 allowed: 20 % left
    assert f.status is Status.WARN and f.details["budget_left_pct"] == 20 and f.summary.startswith("error budget mostly spent (20 % left")
    assert judge_availability(api(10_000, 7), TH, DAY).status is Status.OK  # 30 % left
    lenient = Thresholds(availability_slo_pct=99.9, availability_budget_warn_pct=10)
    assert judge_availability(api(10_000, 8), lenient, DAY).status is Status.OK


def test_budget_left_is_ok_with_the_numbers():
    f = judge_availability(api(20_000, 5), TH, DAY)
    assert f.status is Status.OK and f.value == pytest.approx(99.975)
    assert f.details["budget_allowed"] == 20 and f.details["budget_used"] == 5 and f.details["budget_left_pct"] == 75
    assert f.details["burn_rate"] == 0.25 and f.details["requests"] == 20_000 and f.details["slo_pct"] == 99.9
    assert "99.975 % available" in f.summary and "error budget 20 5XX, 5 used, 75 % left (burn rate 0.25x" in f.summary
    assert "outlasts the period" in f.summary
    clean = judge_availability(api(20_000, None), TH, DAY)  # 5XXError is published only when it happens
    assert clean.status is Status.OK and clean.value == 100 and clean.details["budget_left_pct"] == 100


def test_unreadable_is_unknown_with_the_reason():
    f = judge_availability(api(None, None, error="AccessDenied"), TH, DAY)
    assert f.status is Status.UNKNOWN and "AccessDenied" in f.summary and "the last 24 h" in f.summary
    gone = Traffic(subject="t-developer-tg-production", kind="alb", error="target group t-developer-tg-production not found")
    assert judge_availability(gone, TH, "this week").status is Status.UNKNOWN


def test_5xx_without_requests_is_an_outage_not_no_traffic():
    f = judge_availability(api(None, 40), TH, DAY)  # e.g. the ALB's own 503s, none of which reached a target
    assert f.status is Status.CRIT and f.value == 0
    assert availability_pct(10, 40) == 0


def test_an_slo_of_100_allows_no_5xx():
    th = Thresholds(availability_slo_pct=100)
    assert judge_availability(api(500, 0), th, DAY).status is Status.OK
    f = judge_availability(api(500, 1), th, DAY)
    assert f.status is Status.CRIT and f.details["budget_left_pct"] is None and "allows no 5XX and 1 happened" in f.summary


def test_the_slo_bounds_and_an_slo_without_anything_to_measure():
    with pytest.raises(ValueError):
        Thresholds(availability_slo_pct=0)
    with pytest.raises(ValueError):
        Thresholds(availability_slo_pct=100.5)
    [f] = nothing_to_measure("x", TH)
    assert f.status is Status.UNKNOWN and "no API Gateway API and no ECS service with a target_group" in f.summary


def test_budget_numbers_and_words():
    b = budget(99.5, 4000, 10)
    assert b.allowed == 20 and b.left_pct == 50 and b.burn_rate == 0.5 and not b.below_slo
    assert pct_text(99.95) == "99.95 %" and pct_text(100.0) == "100 %" and pct_text(99.9999) == "99.9999 %" and pct_text(99.5) == "99.5 %"
    assert pct_text(99.8999) == "99.9 %" and pct_text(99.8999, 99.9) == "99.8999 %" and pct_text(99.9, 99.9) == "99.9 %"
    f = judge_availability(api(1_000_000, 1001), TH, DAY)  # a hair below: never printed as the SLO it misses
    assert f.status is Status.CRIT and f.summary.startswith("BELOW SLO: 99.8999 % available")


def test_alb_counts_add_the_load_balancers_own_5xx_to_requests_and_errors():
    req, err = add_counts([(("AWS/ApplicationELB", "RequestCount"), 1000.0), (("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"), 3.0),
                           (("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"), 2.0)])
    assert (req, err) == (1002.0, 5.0)
    assert add_counts([(("AWS/ApiGateway", "Count"), None), (("AWS/ApiGateway", "5XXError"), None)]) == (None, None)
    assert add_counts([(("AWS/ApiGateway", "Count"), 10.0), (("AWS/ApiGateway", "5XXError"), None)]) == (10.0, None)
