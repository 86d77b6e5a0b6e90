"""opsbook.rto: a restore's RTO against the inventory's target, shared by the restore runbooks."""

from __future__ import annotations

from opsbook.findings import Status
from opsbook.rto import rto_finding

SPAN = "from the restore's start to usable data"


def test_exactly_at_the_target_is_ok_a_tenth_of_a_second_over_is_warn():
    at = rto_finding("t", 1800.0, 30, False, span=SPAN, sandbox_why="x")
    assert at.status is Status.OK and at.value == 1800.0 and at.details == {"target_s": 1800, "sandbox": False}
    assert at.summary == "RTO: 1800.0 s from the restore's start to usable data; target 30 min"
    over = rto_finding("t", 1800.1, 30, False, span=SPAN, sandbox_why="x")
    assert over.status is Status.WARN and over.summary.endswith("target 30 min: over the target")


def test_sandbox_figures_are_labelled_and_carry_the_callers_details():
    f = rto_finding("t", 2.0, 0.5, True, span=SPAN, sandbox_why="moto restores at once", details={"until": "x"})
    assert f.summary.startswith("sandbox RTO (moto restores at once: not a production figure): 2.0 s")
    assert f.check == "restore-rto" and f.details == {"target_s": 30.0, "sandbox": True, "until": "x"}


def test_no_target_is_ok_and_says_so_and_a_clock_behind_never_gives_a_negative_figure():
    f = rto_finding("t", 5.0, None, False, span=SPAN, sandbox_why="x")
    assert f.status is Status.OK and f.summary.endswith("the inventory has no target")
    assert rto_finding("t", -3.0, 30, False, span=SPAN, sandbox_why="x").value == 0.0


def test_not_measured_is_unknown_with_the_reason_never_ok():
    f = rto_finding("t", None, 60, True, span=SPAN, sandbox_why="y", unmeasured="the copy was not verified")
    assert f.status is Status.UNKNOWN and f.value is None
    assert f.summary == "sandbox RTO (y: not a production figure): not measured (the copy was not verified); target 60 min"
