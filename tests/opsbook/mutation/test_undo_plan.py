"""undo_plan: the inverse of an earlier run's records, read against the state now."""

from __future__ import annotations

from opsbook.inventory import System
from opsbook.mutation.core import Applier, Identity, undo_plan

INV = System(name="x", region="us-east-1")
ME = Identity(account="123456789012", arn="arn:aws:iam::123456789012:user/me", region="us-east-1")


def rec(kind, resource, before, after, status="verified", run="r1", at="2026-01-01T00:00:00"):
    return {"runbook": "rb", "kind": kind, "resource": resource, "before": before, "after": after, "status": status,
            "flow_run_id": run, "at": at, "approver": "ann"}


def test_inverse_of_what_the_run_left_changed_read_against_now():
    state = {"a": "20", "b": "5", "c": "99", "d": "1"}
    appliers = {"timeout": Applier(read=lambda s, r: state[r], apply=lambda s, r, v: None)}
    records = [rec("timeout", "a", "10", "20"), rec("timeout", "b", "5", "7"), rec("timeout", "c", "1", "2"),
               rec("timeout", "d", "1", "3", status="failed"), rec("timeout", "e", "1", "2", run="other"),
               rec("rotate", "s", "v1", "v2")]
    plan = undo_plan(INV, "rb", ME, records, "r1", appliers, {"timeout": "lambda:UpdateFunctionConfiguration"},
                     irreversible={"rotate": "the old credential must never come back"})
    assert [(a.resource, a.current, a.target) for a in plan.actions] == [("a", "20", "10")]
    assert any(u.startswith("b: timeout already back at 5") for u in plan.unchanged)
    assert any(u.startswith("d:") and "failed" in u for u in plan.unchanged)
    assert any(c.startswith("c: timeout is now 99") for c in plan.cannot)
    assert any(c.startswith("s: rotate has no undo") for c in plan.cannot)
    assert all("e" != a.resource for a in plan.actions)


def test_the_last_record_of_a_resource_wins_and_unknown_runs_say_so():
    state = {"a": "10"}
    appliers = {"timeout": Applier(read=lambda s, r: state[r], apply=lambda s, r, v: None)}
    records = [rec("timeout", "a", "10", "20", at="2026-01-01T00:00:00"),
               rec("timeout", "a", "20", "10", status="undone", at="2026-01-01T00:00:01")]
    plan = undo_plan(INV, "rb", ME, records, "r1", appliers, {})
    assert plan.actions == [] and "undone" in plan.unchanged[0]
    empty = undo_plan(INV, "rb", ME, records, "nope", appliers, {})
    assert empty.actions == [] and "no rb record of this run" in empty.cannot[0]


def test_a_step_made_of_parts_is_undone_part_by_part_when_some_changed_since():
    state = {"g": "a1,b9,c1", "h": "a1,b1"}  # g: its part b changed since; h: as the run left it (the whole step)
    appliers = {"items": Applier(read=lambda s, r: state[r], apply=lambda s, r, v: None)}

    def parts(resource, before, after, now):
        b, a, n = before.split(","), after.split(","), now.split(",")
        target = [was if cur == left else cur for was, left, cur in zip(b, a, n, strict=True)]
        return ",".join(target), [f"{cur[0]} changed since" for cur, left, was in zip(n, a, b, strict=True) if cur not in (left, was)]

    records = [rec("items", "g", "a0,b0,c0", "a1,b1,c1"), rec("items", "h", "a0,b0", "a1,b1")]
    plan = undo_plan(INV, "rb", ME, records, "r1", appliers, {"items": "dynamodb:PutItem"}, parts={"items": parts})
    assert sorted((a.resource, a.current, a.target) for a in plan.actions) == [("g", "a1,b9,c1", "a0,b9,c0"), ("h", "a1,b1", "a0,b0")]
    assert plan.cannot == ["g: b changed since"]
