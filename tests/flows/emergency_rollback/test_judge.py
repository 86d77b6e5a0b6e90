"""emergency-rollback's decisions, fed states and records directly: no sandbox, no Prefect run."""

from __future__ import annotations

import pytest

from flows.emergency_rollback.judge import (
    ALIAS_KIND,
    ECS_KIND,
    RUNBOOK,
    alias_target,
    ecs_target,
    failed_actions,
    last_rollback,
    plan_rollback,
    settled_findings,
    targets,
    unread_findings,
)
from opsbook.findings import Status
from opsbook.inventory import System
from opsbook.mutation.core import Identity, Record, Refused

TD = "arn:aws:ecs:us-east-1:123456789012:task-definition/web:{}"
ME = Identity(account="123456789012", arn="arn:aws:sts::123456789012:assumed-role/ops/me", region="us-east-1")
INV = System.model_validate({"name": "s", "region": "us-east-1",
                             "ecs_services": [{"cluster": "c", "service": "web"}],
                             "lambda_functions": [{"name": "api", "aliases": ["LIVE"]}, {"name": "worker"}]})


def ecs_state(current=3, revisions=(3, 2, 1), previous=None):
    deps = [{"status": "PRIMARY", "taskDefinition": TD.format(current), "rolloutState": "FAILED"}]
    if previous:
        deps.append({"status": "ACTIVE", "taskDefinition": TD.format(previous), "rolloutState": "COMPLETED"})
    return {"task_definition": TD.format(current), "deployments": deps, "revisions": [TD.format(r) for r in revisions]}


def alias_state(value="3", versions=(1, 2, 3)):
    return {"value": value, "version": value.split("+")[0], "versions": list(versions)}


def rec(resource, before, after, runbook=RUNBOOK, status="verified"):
    return {"resource": resource, "before": before, "after": after, "runbook": runbook, "status": status, "at": "t0", "approver": "kim"}


# --- which resources -----------------------------------------------------------------------------


def test_targets_are_every_service_and_alias_or_those_matching_only():
    assert targets(INV, None) == [(ECS_KIND, "c/web"), (ALIAS_KIND, "api:LIVE")]
    assert targets(INV, "api") == [(ALIAS_KIND, "api:LIVE")]
    assert targets(INV, "nothing") == []
    assert targets(System.model_validate({"name": "e", "region": "us-east-1"}), None) == []


def test_last_rollback_is_the_newest_applied_record_of_that_resource():
    records = [rec("x", "1", "2", status="failed"), rec("api:LIVE", "3", "2", status="failed"), rec("api:LIVE", "2", "1", status="undone"),
               rec("api:LIVE", "9", "8")]
    assert last_rollback(records, "api:LIVE")["before"] == "2"
    assert last_rollback(records, "other") is None and last_rollback([], "x") is None


# --- ECS target -------------------------------------------------------------------------------------


def test_ecs_previous_deployment_is_evidence():
    target, why, guess = ecs_target("c/web", ecs_state(previous=2), [], None, False)
    assert target == TD.format(2) and not guess and why.startswith("the deployment the service ran before the current one (ACTIVE")


def test_ecs_without_evidence_guesses_the_newest_earlier_revision():
    target, why, guess = ecs_target("c/web", ecs_state(revisions=(3, 1)), [], None, False)
    assert target == TD.format(1) and guess and why.startswith("GUESS")


def test_ecs_nothing_earlier():
    assert ecs_target("c/web", ecs_state(current=1, revisions=(1,)), [], None, False) == (None, "no earlier ACTIVE revision of web to roll back to", False)


def test_ecs_asked_revision_and_one_that_is_not_active():
    assert ecs_target("c/web", ecs_state(), [], 1, False) == (TD.format(1), "asked for revision 1", False)
    with pytest.raises(Refused, match="web:42 is not an ACTIVE revision of web"):
        ecs_target("c/web", ecs_state(), [], 42, False)


def test_ecs_twice_rolls_back_once_unless_forced():
    records = [rec("c/web", TD.format(3), TD.format(2))]
    target, why, _ = ecs_target("c/web", ecs_state(current=2), records, None, False)
    assert target is None and why.startswith("already runs the rollback target web:2 (rolled back from web:3")
    target, why, guess = ecs_target("c/web", ecs_state(current=2, revisions=(3, 2, 1)), records, None, True)
    assert target == TD.format(1) and guess  # forced: further back, never to the release it was rolled back from


def test_ecs_a_change_by_another_runbook_is_undone_to_its_before():
    records = [rec("c/web", TD.format(2), TD.format(3), runbook="scale-service")]
    target, why, guess = ecs_target("c/web", ecs_state(), records, None, False)
    assert target == TD.format(2) and why.startswith("opsbook record: scale-service changed it") and not guess


# --- alias target -------------------------------------------------------------------------------------


def test_alias_guess_asked_shifting_and_nothing_earlier():
    assert alias_target("api:LIVE", alias_state(), [], None, False)[0::2] == ("2", True)
    assert alias_target("api:LIVE", alias_state(), [], 1, False) == ("1", "asked for version 1", False)
    with pytest.raises(Refused, match="version 9 of api is not published"):
        alias_target("api:LIVE", alias_state(), [], 9, False)
    target, why, guess = alias_target("api:LIVE", alias_state("3+4=0.1", (1, 2, 3, 4)), [], None, False)
    assert (target, guess) == ("3", False) and "shifting weight" in why
    assert alias_target("api:LIVE", alias_state("1", (1,)), [], None, False) == (None, "no earlier published version than 1", False)


def test_alias_twice_rolls_back_once_unless_forced():
    records = [rec("api:LIVE", "3", "2")]
    target, why, _ = alias_target("api:LIVE", alias_state("2"), records, None, False)
    assert target is None and why.startswith("already points at the rollback target 2")
    assert alias_target("api:LIVE", alias_state("2"), records, None, True)[0] == "1"
    other = [rec("api:LIVE", "1", "2", runbook="remediate-lambda-timeout")]
    assert alias_target("api:LIVE", alias_state("2"), other, None, False)[0] == "1"


# --- the plan -------------------------------------------------------------------------------------------


def test_plan_sorts_actions_unchanged_cannot_and_unreadable():
    states = {f"{ECS_KIND}|c/web": ecs_state(previous=2), f"{ALIAS_KIND}|api:LIVE": alias_state("1", (1,)),
              f"{ALIAS_KIND}|b:LIVE": alias_state("2"), f"{ALIAS_KIND}|x:LIVE": "GetAlias: access denied"}
    records = [rec("b:LIVE", "3", "2")]
    plan = plan_rollback(INV, ME, states, records, None, False)
    assert plan.runbook == RUNBOOK and plan.override == "to_revision"
    [a] = plan.actions
    assert (a.kind, a.resource, a.current, a.target, a.iam_action, a.guess) == (ECS_KIND, "c/web", TD.format(3), TD.format(2), "ecs:UpdateService", False)
    assert plan.cannot == ["api:LIVE: no earlier published version than 1"]
    assert plan.unchanged[0].startswith("b:LIVE: already points at the rollback target 2")
    assert plan.notes == ["x:LIVE: could not read its state (GetAlias: access denied); left out of the plan"]
    [u] = unread_findings(plan)
    assert u.status is Status.UNKNOWN and u.check == "rollback-plan" and u.resource == "x"


def test_plan_asked_target_equal_to_current_is_unchanged():
    plan = plan_rollback(INV, ME, {f"{ALIAS_KIND}|api:LIVE": alias_state("1", (1, 2))}, [], 1, False)
    assert plan.actions == [] and plan.unchanged == ["api:LIVE: asked for version 1"]
    assert plan_rollback(INV, ME, {}, [], None, False).actions == []


# --- verify -------------------------------------------------------------------------------------------------


def record(resource, status="applied"):
    return Record(runbook=RUNBOOK, system="s", resource=resource, kind=ALIAS_KIND, before="2", after="1", status=status, detail="boom")


def test_a_settled_step_is_ok_one_not_settled_yet_is_a_warning_and_a_failed_one_is_left_to_failed_actions():
    got = settled_findings([record("a", "verified"), record("b", "applied"), record("c", "failed")])
    assert [(f.resource, f.status, f.summary) for f in got] == [("a", Status.OK, "boom"), ("b", Status.WARN, "boom")]
    assert settled_findings([]) == []


def test_failed_steps_are_crit():
    done = [record("a"), record("b", "failed"), record("c", "undo-failed"), record("d", "undone")]
    assert [(f.resource, f.status, f.summary) for f in failed_actions(done)] == [
        ("b", Status.CRIT, "failed: boom"), ("c", Status.CRIT, "undo-failed: boom")]
    assert failed_actions([]) == []
