"""restart-service's judge and the restart step's settle rule, from data given directly (no sandbox, no Prefect run)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flows.restart_service import judge as j
from opsbook.inventory import System
from opsbook.mutation.core import Identity, Refused
from opsbook.resources import Discovered
from tasks.ecs import RESTART_KIND, RestartState, replaced_id, restart_settle_state, restart_target

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
ME = Identity(account="123456789012", arn="arn:aws:sts::123456789012:user/x", region="us-east-1")
NONE = Discovered()


def inv(*services: tuple[str, str, list[str]]) -> System:
    services = services or (("c", "s", []),)
    return System.model_validate({"name": "x", "region": "us-east-1", "ecs_services": [
        {"cluster": c, "service": s, "agents": agents} for c, s, agents in services]})


def state(desired=3, running=3, deployments=1, rollout="COMPLETED", primary="ecs-svc/1", lo=None, hi=None) -> RestartState:
    return RestartState(resource="c/s", desired=desired, running=running, task_definition="arn:aws:ecs:us-east-1:1:task-definition/s:7",
                        primary=primary, rollout=rollout, deployments=deployments, min_healthy_pct=lo, max_pct=hi)


def record(minutes_ago: float, status="verified", resource="c/s") -> dict:
    return {"resource": resource, "kind": RESTART_KIND, "status": status, "at": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
            "approver": "kim", "flow_run_id": "r1"}


# --- which service ------------------------------------------------------------------------------


def test_the_only_service_without_an_agent():
    assert j.pick_service(inv(), NONE, None, None) == ("c/s", "")


def test_an_agent_with_a_service_of_its_own_restarts_only_that_one():
    system = inv(("c", "main", ["nl-input", "search"]), ("c", "parser", ["Parser"]))
    resource, note = j.pick_service(system, NONE, None, "parser")
    assert resource == "c/parser" and "has a service of its own (c/parser): only it restarts" in note


def test_an_agent_sharing_its_service_names_the_agents_restarted_with_it():
    system = inv(("c", "main", ["nl-input", "search"]), ("c", "parser", ["parser"]))
    resource, note = j.pick_service(system, NONE, None, "search")
    assert resource == "c/main" and "runs on c/main with nl-input: restarting it restarts them too" in note


def test_an_unmapped_agent_says_plainly_the_whole_service_restarts():
    resource, note = j.pick_service(inv(("c", "s", ["a", "b"])), NONE, None, "generation")
    assert resource == "c/s"
    assert "agent generation has no service of its own" in note and "lists a, b" in note
    assert "the WHOLE service c/s restarts, all its agents (a, b)" in note
    _, bare = j.pick_service(inv(), NONE, None, "parser")
    assert "none listed" in bare and "WHOLE service c/s" in bare


def test_several_services_need_one_named_and_a_wrong_name_is_refused():
    system = inv(("c", "a", []), ("c", "b", []))
    with pytest.raises(Refused, match="has 2 ECS services .*say which"):
        j.pick_service(system, NONE, None, None)
    with pytest.raises(Refused, match="no service lists agent 'x'"):
        j.pick_service(system, NONE, None, "x")
    assert j.pick_service(system, NONE, "b", None) == ("c/b", "")
    assert j.pick_service(system, NONE, "c/a", None) == ("c/a", "")
    with pytest.raises(Refused, match="'z' is not an ECS service of x; its services: c/a, c/b"):
        j.pick_service(system, NONE, "z", None)
    with pytest.raises(Refused, match="has no ECS service"):
        j.pick_service(System.model_validate({"name": "x", "region": "us-east-1"}), NONE, None, None)


def test_a_discovered_service_counts_and_an_agent_on_another_service_than_named_is_refused():
    assert j.pick_service(inv(), Discovered(ecs_services=[("c", "t")]), "t", None) == ("c/t", "")
    system = inv(("c", "main", []), ("c", "parser", ["parser"]))
    with pytest.raises(Refused, match="agent 'parser' runs on c/parser .*not on 'main'"):
        j.pick_service(system, NONE, "main", "parser")
    assert j.pick_service(system, NONE, "parser", "PARSER")[0] == "c/parser"


# --- the plan -------------------------------------------------------------------------------------


def test_one_forced_deployment_not_reversible_with_the_rolling_rule():
    plan = j.plan_restart(inv(), ME, state(lo=50, hi=200), "", [], NOW, 30)
    [a] = plan.actions
    assert (a.kind, a.resource, a.current, a.target, a.iam_action, a.reversible) == (
        RESTART_KIND, "c/s", "ecs-svc/1", restart_target("ecs-svc/1"), "ecs:UpdateService", False)
    assert "3 new task(s) of s:7 replace the 3 running" in a.evidence and "at least 50 % of 3 tasks stay in service" in a.evidence
    assert replaced_id(a.target) == "ecs-svc/1"


def test_minimum_healthy_zero_warns_of_a_short_outage_and_the_agent_note_is_in_the_plan():
    plan = j.plan_restart(inv(), ME, state(lo=0, hi=100), "agent x ... WHOLE service", [], NOW, 30)
    assert "a short outage" in plan.actions[0].evidence and "; agent x ... WHOLE service" in plan.actions[0].evidence
    assert plan.notes == []  # said once, with the step
    idle = j.plan_restart(inv(), ME, state(desired=0, running=0), "agent x ... WHOLE service", [], NOW, 30)
    assert idle.notes == ["agent x ... WHOLE service"]


def test_a_recent_restart_is_not_repeated_unless_asked():
    plan = j.plan_restart(inv(), ME, state(), "", [record(5)], NOW, 30)
    assert plan.actions == [] and "already restarted at" in plan.unchanged[0] and "by kim (run r1, verified)" in plan.unchanged[0]
    assert "not_within_min=0" in plan.unchanged[0]
    assert j.plan_restart(inv(), ME, state(), "", [record(5)], NOW, 0).actions  # 0: restart anyway
    assert j.plan_restart(inv(), ME, state(), "", [record(45)], NOW, 30).actions  # older than the window
    assert j.plan_restart(inv(), ME, state(), "", [record(5, "abandoned"), record(5, resource="c/other")], NOW, 30).actions


def test_no_tasks_or_a_deployment_under_way_plans_nothing_and_says_why():
    idle = j.plan_restart(inv(), ME, state(desired=0, running=0), "", [], NOW, 30)
    assert idle.actions == [] and "desired count 0" in idle.cannot[0]
    busy = j.plan_restart(inv(), ME, state(deployments=2, rollout="IN_PROGRESS"), "", [], NOW, 30)
    assert busy.actions == [] and "a deployment is under way (2 deployments, rollout IN_PROGRESS" in busy.cannot[0]


def test_a_service_deployed_by_codedeploy_is_not_forced():
    st = state().model_copy(update={"controller": "CODE_DEPLOY"})
    plan = j.plan_restart(inv(), ME, st, "", [], NOW, 30)
    assert plan.actions == [] and "deployment controller CODE_DEPLOY" in plan.cannot[0]


def test_state_finding_names_the_primary_deployment():
    [f] = j.state_findings(state())
    assert f.status.value == "OK" and "PRIMARY deployment ecs-svc/1 (COMPLETED" in f.summary


# --- the restart step's settle rule -------------------------------------------------------------------


def dep(id_, status="PRIMARY", running=3, desired=3, rollout="COMPLETED", **kw) -> dict:
    return {"id": id_, "status": status, "runningCount": running, "desiredCount": desired, "rolloutState": rollout, **kw}


def healthy(n, state_="healthy") -> list[dict]:
    return [{"Target": {"Id": f"10.0.1.{i}"}, "TargetHealth": {"State": state_}} for i in range(n)]


def test_settled_only_when_new_tasks_run_old_ones_are_gone_and_the_rollout_completed():
    assert restart_settle_state({"deployments": [dep("ecs-svc/1")]}, "ecs-svc/1") == (
        False, "deployment ecs-svc/1 is still PRIMARY: no new deployment yet")
    rolling = {"deployments": [dep("ecs-svc/2", running=1, rollout="IN_PROGRESS"), dep("ecs-svc/1", status="ACTIVE", running=2, desired=0)]}
    ok, seen = restart_settle_state(rolling, "ecs-svc/1")
    assert not ok and seen == ("new deployment ecs-svc/2: 1 of 3 tasks running, rollout IN_PROGRESS; "
                               "old deployment(s) ecs-svc/1 still running 2 task(s)")
    ok, seen = restart_settle_state({"deployments": [dep("ecs-svc/2")]}, "ecs-svc/1")
    assert ok and seen == "new deployment ecs-svc/2: 3 of 3 tasks running, rollout COMPLETED; old tasks gone"
    failed = restart_settle_state({"deployments": [dep("ecs-svc/2", rollout="FAILED", rolloutStateReason="circuit breaker")]}, "ecs-svc/1")
    assert failed[0] is False and "FAILED (circuit breaker)" in failed[1]


def test_settled_needs_every_target_healthy_where_the_service_has_a_target_group():
    done = {"deployments": [dep("ecs-svc/2")]}
    assert restart_settle_state(done, "ecs-svc/1", healthy(3), "tg")[0] is True
    ok, seen = restart_settle_state(done, "ecs-svc/1", healthy(2) + healthy(1, "unhealthy"), "tg")
    assert not ok and "target group tg: 2/3 healthy (10.0.1.0 unhealthy)" in seen
    assert restart_settle_state(done, "ecs-svc/1", healthy(2), "tg")[0] is False  # fewer healthy than desired
    ok, seen = restart_settle_state(done, "ecs-svc/1", None, "tg", "access denied")
    assert not ok and seen.endswith("target group tg not read: access denied")
