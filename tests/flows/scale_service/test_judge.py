"""scale-service's judge: the request, the service's bounds and the table's capacity from data given directly (no sandbox, no Prefect run)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flows.scale_service import judge as j
from opsbook.findings import Status
from opsbook.inventory import System
from opsbook.mutation.core import Identity, Plan, Refused
from opsbook.resources import Discovered
from tasks.autoscaling import ScalableTarget
from tasks.dynamodb import TableCapacity, TableState
from tasks.ecs import ServiceState

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
ME = Identity(account="123456789012", arn="arn:aws:sts::123456789012:user/x", region="us-east-1")
SVC = "c/s"


def inv(min_tasks=2, max_tasks=20, services=(("c", "s"),)) -> System:
    return System.model_validate({"name": "x", "region": "us-east-1", "ecs_services": [
        {"cluster": c, "service": s, "min_tasks": min_tasks, "max_tasks": max_tasks} for c, s in services]})


def svc(desired=2, running=2, lo=None, hi=None) -> ServiceState:
    target = None if lo is None else ScalableTarget(namespace="ecs", resource_id=f"service/{SVC}", dimension="ecs:service:DesiredCount", min=lo, max=hi)
    return ServiceState(resource=SVC, desired=desired, running=running, target=target)


def plan(st=None, ts=None, system=None, records=(), **ask) -> Plan:
    return j.plan_scaling(system or inv(), ME, st, ts, j.Request(**ask), list(records), NOW)


# --- the request ----------------------------------------------------------------------------------


def test_the_forms_not_given_values_and_requests_that_cannot_be_planned():
    assert j.Request.from_form(-1, 0, False, "", "", 0, 0) == j.Request()
    assert j.Request.from_form(0, -2, True, "c/s", "T", 5, 0) == j.Request(desired=0, delta=-2, hold=True, service="c/s", table="T", read_units=5)
    for req, words in ((j.Request(desired=3, delta=1), "not both"), (j.Request(read_units=5), "need table=NAME"),
                       (j.Request(table="T"), "needs read_units=N"), (j.Request(), "nothing asked")):
        with pytest.raises(Refused, match=words):
            req.check()
    with pytest.raises(Refused, match="needs desired=N or delta"):
        j.Request(service="c/s").check_service()
    j.Request(desired=3).check()
    j.Request(table="T", write_units=1).check()


def test_the_service_is_the_one_named_or_the_only_one():
    assert j.pick_service(inv(), Discovered(), None) == SVC and j.pick_service(inv(), Discovered(), "s") == SVC
    with pytest.raises(Refused, match="has no ECS service"):
        j.pick_service(inv(services=()), Discovered(), None)
    two = inv(services=(("c", "s"), ("d", "s")))
    with pytest.raises(Refused, match="has 2 ECS services"):
        j.pick_service(two, Discovered(), None)
    with pytest.raises(Refused, match="ambiguous: c/s, d/s"):
        j.pick_service(two, Discovered(), "s")
    with pytest.raises(Refused, match="'t' is not an ECS service of x"):
        j.pick_service(inv(), Discovered(), "t")


# --- the desired count within its bounds -----------------------------------------------------------------


def test_desired_within_the_auto_scaling_bounds_is_planned_at_the_bounds_and_refused_outside():
    [a] = plan(svc(lo=2, hi=20), desired=20).actions
    assert (a.kind, a.current, a.target) == ("ecs-desired-count", "2", "20") and "within [2, 20] from the auto scaling target" in a.evidence
    with pytest.raises(Refused, match="above the maximum 12 set by the auto scaling target"):
        plan(svc(lo=3, hi=12), desired=13)
    with pytest.raises(Refused, match="below the minimum 3 .*auto scaling would scale it back up"):
        plan(svc(desired=3, lo=3, hi=12), delta=-1)
    assert plan(svc(desired=3, lo=3, hi=12), desired=3).unchanged == ["c/s: desired count already 3 (2 running)"]
    with pytest.raises(Refused, match="gives -1 tasks"):
        plan(svc(), delta=-3, system=inv(min_tasks=None, max_tasks=None))


def test_without_a_target_the_inventory_bounds_apply_and_without_either_it_is_noted():
    with pytest.raises(Refused, match="above the maximum 20 set by the inventory of x"):
        plan(svc(), desired=21)
    [a] = plan(svc(), desired=20).actions
    assert "from the inventory of x" in a.evidence
    p = plan(svc(), desired=50, system=inv(min_tasks=None, max_tasks=None))
    assert p.actions[0].target == "50" and "the count is not bounded" in p.notes[0]


def test_delta_is_relative_and_notes_recent_scaling():
    recent = {"resource": SVC, "kind": "ecs-desired-count", "status": "verified", "before": "2", "after": "4", "runbook": "scale-service",
              "at": (NOW - timedelta(minutes=29)).isoformat()}
    p = plan(svc(desired=4), delta=2, records=[recent])
    assert (p.actions[0].current, p.actions[0].target) == ("4", "6") and "delta=+2 on the current 4" in p.actions[0].evidence
    assert any("already scaled 2 -> 4" in n and "use desired=N" in n for n in p.notes)
    old = {**recent, "at": (NOW - timedelta(minutes=30)).isoformat()}
    assert plan(svc(desired=4), delta=2, records=[old]).notes == []
    assert plan(svc(desired=4), desired=6, records=[recent]).notes == []  # absolute: no note


def test_hold_raises_the_min_only_with_a_target():
    p = plan(svc(lo=2, hi=20), desired=10, hold=True)
    assert [(a.kind, a.target) for a in p.actions] == [("ecs-desired-count", "10"), ("autoscaling-bounds", "min=10 max=20")]
    assert [a.kind for a in plan(svc(lo=10, hi=20), desired=10, hold=True).actions] == ["ecs-desired-count"]
    assert "no auto scaling target" in plan(svc(), desired=10, hold=True).notes[0]


# --- the table's capacity ------------------------------------------------------------------------------------


def table(mode="PROVISIONED", targets=None, **kw) -> TableState:
    cap = TableCapacity(table="T", status=kw.pop("status", "ACTIVE"), mode=mode, read=5 if mode == "PROVISIONED" else 0,
                        write=5 if mode == "PROVISIONED" else 0, **kw)
    return TableState(table="T", capacity=cap, targets=targets or {})


def test_units_are_set_within_the_policy_maximum_on_provisioned_tables_only():
    [a] = plan(ts=table(), read_units=50).actions
    assert (a.kind, a.current, a.target) == ("dynamodb-capacity", "PROVISIONED r=5 w=5", "PROVISIONED r=50 w=5")
    assert plan(ts=table(), write_units=40000).actions[0].target == "PROVISIONED r=5 w=40000"
    for units in (0, 40001):
        with pytest.raises(Refused, match="outside \\[1, 40000\\]"):
            plan(ts=table(), write_units=units)
    p = plan(ts=table(mode="PAY_PER_REQUEST"), read_units=50)
    assert p.actions == [] and "on-demand (PAY_PER_REQUEST)" in p.cannot[0]
    assert "not ACTIVE (UPDATING)" in plan(ts=table(status="UPDATING"), read_units=50).cannot[0]
    assert plan(ts=table(), read_units=5).unchanged == ["T: capacity already PROVISIONED r=5 w=5"]


def test_a_dimension_auto_scaling_manages_gets_bounds():
    t = ScalableTarget(namespace="dynamodb", resource_id="table/T", dimension="dynamodb:table:WriteCapacityUnits", min=5, max=10)
    [a] = plan(ts=table(targets={t.key: t}), write_units=40).actions
    assert (a.kind, a.resource, a.current, a.target) == ("autoscaling-bounds", t.key, "min=5 max=10", "min=40 max=40")
    assert plan(ts=table(targets={t.key: t}), write_units=8).actions[0].target == "min=8 max=10"
    assert plan(ts=table(targets={t.key: t}), write_units=5).unchanged == ["T write: auto scaling bounds already min=5 max=10"]


def test_a_decrease_within_the_limits_is_planned_and_beyond_them_says_when():
    [a] = plan(ts=table(decreases_today=3, last_decrease=NOW), read_units=1).actions
    assert "a DECREASE" in a.evidence
    p = plan(ts=table(decreases_today=27, last_decrease=NOW), read_units=1)
    assert p.actions == [] and "possible at 2026-03-03T00:00" in p.cannot[0] and "27 decrease(s) today" in p.cannot[0]


def test_state_findings_say_what_was_read():
    st = svc(lo=2, hi=20).model_copy(update={"target_error": None})
    [f] = j.state_findings(st, None)
    assert (f.check, f.status, f.summary) == ("ecs-scale", Status.OK, "desired 2, running 2, pending 0; auto scaling [2, 20]")
    gap = svc().model_copy(update={"target_error": "access denied"})
    assert [f.status for f in j.state_findings(gap, None)] == [Status.OK, Status.UNKNOWN]
    [f] = j.state_findings(None, table())
    assert f.summary == "ACTIVE, PROVISIONED r=5 w=5"
