"""The one safe-mutation mechanism (opsbook/mutation/steps.py, statestore.py), on moto's DynamoDB: leases that lapse
with their holder's heartbeat and are fenced, intent before action, replay of open intents after a kill, undo, records.
Every runbook's own tests then only prove its Steps."""

from __future__ import annotations

import threading
import time

import pytest

from opsbook.findings import Status
from opsbook.inventory import System
from opsbook.mutation import statestore, steps
from opsbook.mutation.core import Action, Applier, Approval, Identity, Plan, Record, Refused

INV = System(name="x", region="us-east-1")
ME = Identity(account="123456789012", arn="arn:aws:iam::123456789012:user/me", region="us-east-1")
OK = Approval(approved=True, approver="ann", reason="test", via="yes", plan_fingerprint="f")


class World:
    """Resources with values, set through an Applier that can be told to fail on one resource."""

    def __init__(self, **values: str) -> None:
        self.values, self.calls, self.fail_on = dict(values), [], ""
        self.applier = Applier(read=lambda s, r: self.values[r], apply=self.apply)

    def apply(self, system, resource, value):
        self.calls.append((resource, value))
        if resource == self.fail_on:
            raise RuntimeError(f"injected failure on {resource}")
        self.values[resource] = value


def plan_of(*moves: tuple[str, str, str]) -> Plan:
    return Plan(runbook="rb", system="x", identity=ME,
                actions=[Action(kind="k", resource=r, current=c, target=t, iam_action="svc:Set") for r, c, t in moves])


def expire(resource: str) -> None:
    """What a killed holder's lease looks like once its heartbeat has lapsed."""
    from opsbook import aws
    aws.client("dynamodb", "us-east-1").update_item(
        TableName="opsbook-state", Key={"pk": {"S": f"lease#{resource}"}, "sk": {"S": "lease"}},
        UpdateExpression="SET expires_at = :past", ExpressionAttributeValues={":past": {"N": "1"}})


def journal(run_id: str, *resources: str) -> steps.Journal:
    j = steps.Journal(INV, "rb", run_id)
    j.take(list(resources))
    return j


# --- leases ------------------------------------------------------------------------------------


def test_a_live_lease_is_refused_naming_its_holder_and_a_lapsed_one_is_taken_over_with_a_new_fence(aws_mock):
    first = statestore.acquire_lease(INV, "r", "kim@laptop run a", "a")
    assert first.fence == 1 and not first.took_over
    with pytest.raises(statestore.LeaseHeld, match="kim@laptop run a"):
        statestore.acquire_lease(INV, "r", "lee", "b")
    assert statestore.acquire_lease(INV, "r", "kim@laptop run a", "a").fence == 1  # the holder renews: same fence
    expire("r")
    second = statestore.acquire_lease(INV, "r", "lee", "b")
    assert second.fence == 2 and "kim@laptop run a" in second.took_over and "expired" in second.took_over


def test_a_finished_holder_is_taken_over_at_once_but_unknown_is_never_dead(aws_mock):
    statestore.acquire_lease(INV, "r", "a", "a")
    with pytest.raises(statestore.LeaseHeld):
        statestore.acquire_lease(INV, "r", "b", "b", is_dead=lambda run: False)  # the API could not say
    taken = statestore.acquire_lease(INV, "r", "b", "b", is_dead=lambda run: run == "a")
    assert taken.fence == 2 and "finished run" in taken.took_over


def test_only_a_run_prefect_says_has_finished_is_dead(prefect_harness):
    from prefect import flow

    @flow
    def quick() -> str:
        from prefect.runtime import flow_run
        return str(flow_run.get_id())

    assert steps.prefect_run_finished(quick()) is True
    assert steps.prefect_run_finished("00000000-0000-0000-0000-000000000000") is False  # a run the server does not know
    assert steps.prefect_run_finished("local") is False  # not a Prefect run id


def test_only_one_of_six_concurrent_takers_wins(aws_mock):
    statestore.ensure_table(INV)
    wins, losses = [], []

    def take(i):
        try:
            statestore.acquire_lease(INV, "contended", f"runner {i}", f"run-{i}")
            wins.append(i)
        except statestore.LeaseHeld as exc:
            losses.append(exc.holder)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(wins) == 1 and len(losses) == 5 and all(h == f"runner {wins[0]}" for h in losses)


def test_a_zombie_holder_can_neither_renew_nor_write_after_a_takeover(aws_mock):
    zombie = journal("zombie", "r")
    expire("r")
    heir = journal("heir", "r")
    assert heir.leases["r"].fence == zombie.leases["r"].fence + 1
    with pytest.raises(statestore.LeaseLost):
        statestore.renew_lease(zombie.leases["r"])
    rec = Record(runbook="rb", system="x", resource="r", kind="k", before="1", after="2", status="applied", flow_run_id="zombie")
    with pytest.raises(statestore.LeaseLost, match="another run took it over"):
        zombie.intend(rec, "applied")
    assert statestore.open_intents(INV) == [] and statestore.read_records(INV, history=True) == []
    heir.intend(rec.model_copy(update={"flow_run_id": "heir"}), "applied")  # the holder writes
    assert len(statestore.open_intents(INV)) == 1


def test_the_heartbeat_keeps_the_lease_past_its_ttl_and_release_frees_it(aws_mock):
    j = steps.Journal(INV, "rb", "beating", ttl_s=1)
    j.take(["r"])
    first = j.leases["r"].expires_at
    j.start_heartbeat()
    deadline = time.monotonic() + 20
    while j.leases["r"].expires_at == first and time.monotonic() < deadline:  # waits for a beat; asserts no duration
        time.sleep(0.05)
    assert j.leases["r"].expires_at > first and not j.lost
    j.release()
    assert statestore.acquire_lease(INV, "r", "next", "next").fence == 1  # released, not taken over


def test_taking_several_leases_is_all_or_nothing(aws_mock):
    statestore.acquire_lease(INV, "b", "other", "other")
    with pytest.raises(Refused, match="other"):
        journal("mine", "a", "b")
    assert statestore.acquire_lease(INV, "a", "third", "third").fence == 1  # "a" was given back


# --- intent before action ---------------------------------------------------------------------


def run_plan(world: World, plan: Plan, run_id: str = "run-1") -> tuple[list[Record], bool]:
    j = journal(run_id, *[a.resource for a in plan.actions])
    steps.activate(j)
    try:
        return steps.apply_plan(INV, plan, {"k": world.applier}, OK, run_id, ME)
    finally:
        steps.deactivate(j)
        j.release()


def test_each_step_is_intent_then_act_then_outcome_and_leaves_no_open_intent(aws_mock):
    world = World(a="1", b="5")
    records, ok = run_plan(world, plan_of(("a", "1", "2"), ("b", "5", "6")))
    assert ok and [r.status for r in records] == ["applied", "applied"] and all(r.step_id for r in records)
    history = statestore.read_records(INV, history=True)
    assert sorted((r["resource"], r["status"]) for r in history) == [("a", "applied"), ("a", "intended"), ("b", "applied"), ("b", "intended")]
    assert [r["status"] for r in statestore.read_records(INV)] == ["applied", "applied"]  # the last word per step
    assert statestore.open_intents(INV) == []


def test_a_failure_undoes_the_applied_steps_in_reverse_each_a_step_of_its_own(aws_mock):
    world = World(a="1", b="5", c="7")
    world.fail_on = "c"
    records, ok = run_plan(world, plan_of(("a", "1", "2"), ("b", "5", "6"), ("c", "7", "8")))
    assert not ok and [(r.resource, r.status) for r in records] == [("a", "applied"), ("b", "applied"), ("c", "failed"),
                                                                     ("b", "undone"), ("a", "undone")]
    assert world.values == {"a": "1", "b": "5", "c": "7"} and statestore.open_intents(INV) == []


def test_a_lost_lease_stops_before_the_next_call_and_undoes_nothing(aws_mock):
    world = World(a="1", b="5")
    j = journal("run-1", "a", "b")
    steps.activate(j)
    real = world.applier.apply

    def steal_after_a(system, resource, value):
        real(system, resource, value)
        if resource == "a":  # the heartbeat lapsed while we worked, and another run took "b"
            expire("b")
            statestore.acquire_lease(INV, "b", "heir", "heir")

    try:
        records, ok = steps.apply_plan(INV, plan_of(("a", "1", "2"), ("b", "5", "6")), {"k": Applier(read=world.applier.read, apply=steal_after_a)},
                                       OK, "run-1", ME)
    finally:
        steps.deactivate(j)
    assert not ok and [(r.resource, r.status) for r in records] == [("a", "applied"), ("b", "not-attempted")]
    assert "taken over" in records[1].detail or "took it over" in records[1].detail
    assert world.values == {"a": "2", "b": "5"} and world.calls == [("a", "2")]


def test_drift_since_the_plan_refuses_before_any_step(aws_mock):
    from opsbook.mutation.session import check_drift
    world = World(a="1", b="7")
    with pytest.raises(Refused, match="b was 5 when planned and is now 7"):
        check_drift.fn(INV, plan_of(("a", "1", "2"), ("b", "5", "6")), {"k": world.applier})
    assert world.calls == []
    check_drift.fn(INV, plan_of(("a", "1", "2")), {"k": world.applier})  # unchanged: no error


def test_waiting_until_settled_verifies_what_settled_and_says_what_did_not(prefect_harness):
    from opsbook.mutation.session import wait_settled

    def settled(system, resource, target):
        if resource == "broken":
            raise RuntimeError("denied")
        return (True, "ready") if resource == "a" else (False, "still creating")

    step = Applier(read=lambda s, r: "x", apply=lambda s, r, v: None, settled=settled)
    records = [Record(runbook="rb", system="x", resource=r, kind="k", before="0", after="1", status=st)
               for r, st in [("a", "applied"), ("b", "applied"), ("broken", "applied"), ("c", "failed")]]
    out = {r.resource: r for r in wait_settled.fn(INV, records, {"k": step}, 1, "rb")}
    assert out["a"].status == "verified" and "ready" in out["a"].detail
    assert out["b"].status == "applied" and out["b"].detail == "not settled after 1 s: still creating; the next run checks it again"
    assert out["broken"].status == "applied" and "RuntimeError: denied" in out["broken"].detail
    assert out["c"] == records[3]  # a failed step is not waited for


# --- a kill between intent and outcome, and the next run -----------------------------------------


def killed_between_intent_and_outcome(world: World, resource: str, before: str, target: str, acted: bool) -> None:
    """What a run killed right after its intent (``acted``: after its AWS call too) leaves: an open intent, a lapsed lease."""
    j = journal("killed", resource)
    j.intend(Record(runbook="rb", system="x", resource=resource, kind="k", before=before, after=target, status="applied",
                    flow_run_id="killed", approver="ann"), "applied")
    if acted:
        world.values[resource] = target
    j.leases.clear()  # never released: killed
    expire(resource)


@pytest.mark.parametrize("acted, status, value", [(True, "applied", "2"), (False, "abandoned", "1")])
def test_the_next_run_closes_an_open_intent_from_the_live_state(aws_mock, acted, status, value):
    world = World(a="1")
    killed_between_intent_and_outcome(world, "a", "1", "2", acted)
    findings = steps.recover(INV, "rb", {"k": world.applier}, "next")
    assert [f.status for f in findings] == [Status.OK] and status in findings[0].summary
    [last] = statestore.read_records(INV)
    assert (last["status"], last["resource"], last["flow_run_id"]) == (status, "a", "killed")
    assert statestore.open_intents(INV) == [] and world.values["a"] == value and world.calls == []  # read, never set


def test_a_value_neither_before_nor_target_is_a_warning_to_look_at(aws_mock):
    world = World(a="1")
    killed_between_intent_and_outcome(world, "a", "1", "2", acted=False)
    world.values["a"] = "9"
    [finding] = steps.recover(INV, "rb", {"k": world.applier}, "next")
    assert finding.status is Status.WARN and "found at 9" in finding.summary and "look at it" in finding.summary


def test_an_open_step_whose_resource_cannot_be_read_is_left_open_with_a_warning_and_the_run_goes_on(aws_mock):
    world = World(a="1")
    killed_between_intent_and_outcome(world, "a", "1", "2", acted=False)
    del world.values["a"]  # deleted since (a user, a domain): its read raises
    [finding] = steps.recover(INV, "rb", {"k": world.applier}, "next")
    assert finding.status is Status.WARN and "could not be read" in finding.summary and "left open" in finding.summary
    assert len(statestore.open_intents(INV)) == 1 and world.calls == []
    journal("next", "b")  # a plan on other resources takes its leases
    with pytest.raises(Refused):  # one on that resource refuses: its last step is still unknown
        journal("other", "a")


def test_an_open_step_a_live_run_is_taking_refuses_planning_when_it_is_this_runbooks_else_is_left_to_its_run(aws_mock):
    world = World(a="1")
    live = journal("live", "a")
    live.intend(Record(runbook="rb", system="x", resource="a", kind="k", before="1", after="2", status="applied", flow_run_id="live"), "applied")
    with pytest.raises(Refused, match="a has an open step .* a live run holds it"):  # records without that step's outcome
        steps.recover(INV, "rb", {"k": world.applier}, "next")
    [finding] = steps.recover(INV, "other-rb", {"k": world.applier}, "next")  # another runbook is not held up by it
    assert finding.status is Status.OK and "left to it" in finding.summary
    assert len(statestore.open_intents(INV)) == 1 and world.calls == []
    with pytest.raises(Refused, match="being changed by"):
        journal("next", "a")


def test_another_runbooks_open_step_is_closed_when_this_one_reads_its_kind_else_the_refusal_names_that_runbook(aws_mock):
    world = World(a="1", b="5")
    for resource, kind, before, after in [("a", "k", "1", "2"), ("b", "other-kind", "5", "6")]:
        j = journal(f"killed-{resource}", resource)
        j.runbook = "other-runbook"
        j.intend(Record(runbook="other-runbook", system="x", resource=resource, kind=kind, before=before, after=after, status="applied",
                        flow_run_id=f"killed-{resource}"), "applied")
        j.leases.clear()
        expire(resource)
    [closed] = steps.recover(INV, "rb", {"k": world.applier}, "next")
    assert closed.resource == "a" and "abandoned" in closed.summary
    assert [i["resource"] for i in statestore.open_intents(INV)] == ["b"]
    with pytest.raises(Refused, match="run other-runbook again"):
        journal("next", "b")


def test_no_call_is_made_on_a_lease_about_to_lapse(aws_mock):
    world = World(a="1")
    j = journal("stalled", "a")
    j.leases["a"].expires_at = time.time() + 1  # the heartbeat has not renewed it: another run may take it any moment
    steps.activate(j)
    try:
        records, ok = steps.apply_plan(INV, plan_of(("a", "1", "2")), {"k": world.applier}, OK, "stalled", ME)
    finally:
        steps.deactivate(j)
    assert not ok and records[0].status == "not-attempted" and "not renewed in time" in records[0].detail and world.calls == []


def test_an_intent_that_cannot_be_written_is_not_acted_on_and_the_plan_is_undone(aws_mock, monkeypatch):
    world = World(a="1", b="5")
    j = journal("run-1", "a", "b")
    steps.activate(j)
    real = statestore.fenced_write

    def throttled_on_b(lease, records, open_intent=None, close_intent=None):
        if open_intent is not None and open_intent[1]["resource"] == "b" and open_intent[1]["status"] == "intended":
            raise RuntimeError("ProvisionedThroughputExceededException")
        return real(lease, records, open_intent, close_intent)

    monkeypatch.setattr(statestore, "fenced_write", throttled_on_b)
    try:
        records, ok = steps.apply_plan(INV, plan_of(("a", "1", "2"), ("b", "5", "6")), {"k": world.applier}, OK, "run-1", ME)
    finally:
        steps.deactivate(j)
    assert not ok and [(r.resource, r.status) for r in records] == [("a", "applied"), ("b", "not-attempted"), ("a", "undone")]
    assert world.values == {"a": "1", "b": "5"} and ("b", "6") not in world.calls


def test_a_step_left_open_after_the_plan_was_made_refuses_taking_the_lease(aws_mock):
    """The killed run's lease lapsed between this run's recovery and its lease: its plan lacks that step's outcome."""
    world = World(a="1")
    killed_between_intent_and_outcome(world, "a", "1", "2", acted=True)
    with pytest.raises(Refused, match="stopped part-way through a step on a"):
        journal("late", "a")
    assert statestore.acquire_lease(INV, "a", "x", "x").fence == 1  # given back, not held
    assert len(statestore.open_intents(INV)) == 1


def test_replay_then_plan_never_goes_past_the_target(aws_mock):
    """The rollback defect: killed after its AWS call, before its record. The re-run's records say the step was taken."""
    world = World(svc="td:3")
    killed_between_intent_and_outcome(world, "svc", "td:3", "td:2", acted=True)
    steps.recover(INV, "rb", {"k": world.applier}, "rerun")
    [last] = statestore.read_records(INV, resource="svc")
    assert (last["before"], last["after"], last["status"]) == ("td:3", "td:2", "applied")  # the judge sees: already at the target


class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing after it runs (no undo, no outcome, no release)."""


@pytest.mark.parametrize("killed_on, carried", [("b", ["b", "c"]), ("c", ["c"]), ("a", [])])
def test_a_plan_killed_part_way_has_its_untaken_steps_planned_again_only_when_it_took_some(aws_mock, killed_on, carried):
    world = World(a="1", b="5", c="7")
    real = world.apply

    def apply(system, resource, value):
        if resource == killed_on:
            raise Killed()
        real(system, resource, value)

    world.applier = Applier(read=world.applier.read, apply=apply)
    j = journal("killed", "a", "b", "c")
    steps.activate(j)
    with pytest.raises(Killed):
        steps.apply_plan(INV, plan_of(("a", "1", "2"), ("b", "5", "6"), ("c", "7", "8")), {"k": world.applier}, OK, "killed", ME)
    steps.deactivate(j)
    j.leases.clear()
    for r in "abc":
        expire(r)
    out: list[Action] = []
    findings = steps.recover(INV, "rb", {"k": world.applier}, "next", out)
    assert [(a.resource, a.current, a.target) for a in out] == [(r, world.values[r], str(int(world.values[r]) + 1)) for r in carried]
    assert all("left by run killed (ann), killed after" in a.evidence for a in out)
    assert bool([f for f in findings if f.check == "open-plan"]) == bool(carried)
    assert statestore.open_intents(INV) == []  # the plan and its killed step are closed


def test_an_untaken_step_that_changed_since_is_a_warning_not_planned_again(aws_mock):
    world = World(a="1", b="5")
    j = journal("killed", "a", "b")
    plan = plan_of(("a", "1", "2"), ("b", "5", "6"))
    j.open_plan(plan, OK)
    rec = j.intend(Record(runbook="rb", system="x", resource="a", kind="k", before="1", after="2", status="applied", flow_run_id="killed",
                          plan_fingerprint=plan.fingerprint), "applied")
    world.values["a"] = "2"
    j.outcome(rec.model_copy(update={"status": "applied"}))
    j.leases.clear()
    expire("a"), expire("b")
    world.values["b"] = "9"  # someone else changed it since
    out: list[Action] = []
    [warn] = steps.recover(INV, "rb", {"k": world.applier}, "next", out)
    assert out == [] and warn.status is Status.WARN and "reads 9 now, not 5" in warn.summary


def test_a_plan_that_finished_leaves_nothing_open(aws_mock):
    world = World(a="1", b="5", c="7")
    world.fail_on = "c"  # a failure undoes: the run closed its plan itself
    records, ok = run_plan(world, plan_of(("a", "1", "2"), ("b", "5", "6"), ("c", "7", "8")))
    assert not ok and statestore.open_intents(INV) == []
    run_plan(World(a="1", b="5"), plan_of(("a", "1", "2"), ("b", "5", "6")), run_id="run-2")
    assert statestore.open_intents(INV) == []


def test_an_open_plan_a_live_run_holds_refuses_planning_until_it_lapses(aws_mock):
    world = World(a="1", b="5")
    j = journal("live", "a", "b")
    j.open_plan(plan_of(("a", "1", "2"), ("b", "5", "6")), OK)  # between two steps, its lease not lapsed yet
    with pytest.raises(Refused, match="is still open and a live run holds it"):
        steps.recover(INV, "rb", {"k": world.applier}, "next", [])
    j.leases.clear()
    expire("a"), expire("b")
    assert steps.recover(INV, "rb", {"k": world.applier}, "next", []) == [] and statestore.open_intents(INV) == []  # took none


def test_kinds_all_or_nothing_together_undo_each_other_while_the_other_kinds_stay_independent():
    settings, env = World(s1="0", s2="0"), World(e1="t", e2="t", e3="t")
    env.fail_on = "e2"
    plan = Plan(runbook="rb", system="x", identity=ME, actions=[
        Action(kind=k, resource=r, current=c, target=t, iam_action="svc:Set")
        for k, r, c, t in [("set", "s1", "0", "1"), ("env", "e1", "t", "c"), ("env", "e2", "t", "c"), ("set", "s2", "0", "1"),
                           ("env", "e3", "t", "c")]])
    records, ok = steps.take_steps(INV, plan, {"set": settings.applier, "env": env.applier}, OK, ME, None, undo_on_failure=("env",))
    assert not ok and [(r.resource, r.status) for r in records] == [("s1", "applied"), ("e1", "applied"), ("e2", "failed"),
                                                                     ("e1", "undone"), ("s2", "applied"), ("e3", "not-attempted")]
    assert env.values == {"e1": "t", "e2": "t", "e3": "t"} and settings.values == {"s1": "1", "s2": "1"}
