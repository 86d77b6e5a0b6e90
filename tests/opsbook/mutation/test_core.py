"""opsbook/mutation/core.py: approval of a plan (the shell's modes, the UI form, guessed steps) and the plan as the UI shows it."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import pytest

from opsbook.mutation import core as mutation
from opsbook.mutation.core import Action, Identity, Plan, Refused, approval_form, approve, prefect_user, shell_approval, shell_approval_mode

ME = Identity(account="123456789012", arn="arn:aws:iam::123456789012:user/me", region="us-east-1")
TD = "arn:aws:ecs:us-east-1:123456789012:task-definition/api"


def plan(guess: bool) -> Plan:
    return Plan(runbook="emergency-rollback", system="x", identity=ME, override="to_revision", actions=[
        Action(kind="ecs-task-definition", resource="c/api", current=f"{TD}:7", target=f"{TD}:6", iam_action="ecs:UpdateService",
               evidence="GUESS: the newest earlier ACTIVE revision (6)" if guess else "the deployment the service ran before",
               guess=guess)])


def test_the_fingerprint_covers_the_guess_flag():
    assert plan(True).fingerprint != plan(False).fingerprint
    assert plan(True).guesses and not plan(False).guesses


def test_yes_alone_refuses_a_guess_naming_the_step_and_both_ways_out():
    with pytest.raises(Refused) as exc:
        approve(plan(True), "yes", "kim", 60)
    why = str(exc.value)
    assert "step 1 (c/api: task-definition/api:7 -> task-definition/api:6" in why and "nothing was changed" in why
    assert "--param accept_guess=true" in why and "--param to_revision=" in why


def test_yes_applies_a_guess_accepted_and_a_plan_without_guess():
    accepted = approve(plan(True), "yes", "kim", 60, accept_guess=True)
    assert (accepted.approved, accepted.via, accepted.approver) == (True, "yes", "kim") and "accept_guess" in accepted.reason
    plain = approve(plan(False), "yes", "kim", 60)
    assert plain.approved and plain.plan_fingerprint == plan(False).fingerprint


def test_the_prompt_refuses_a_guess_before_asking(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    with pytest.raises(Refused, match="accept_guess"):
        approve(plan(True), "prompt", None, 60)
    assert mutation.sys.stdin.read() == "yes\n"  # the question was never asked
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    assert approve(plan(True), "prompt", None, 60, accept_guess=True).via == "prompt"


def _ui(monkeypatch, answer: dict, accept_guess: bool = False, the_plan: Plan | None = None):
    """approve() in UI mode, with the pause answered by ``answer`` (what the Resume form sends)."""
    asked: dict = {}

    def pause(wait_for_input, timeout, poll_interval):
        asked["form"] = wait_for_input
        return wait_for_input(**answer)

    monkeypatch.setattr("prefect.flow_runs.pause_flow_run", pause)
    monkeypatch.setattr(mutation, "get_run_logger", lambda: logging.getLogger("test"))
    told: list[Plan] = []
    result = approve(the_plan or plan(True), None, None, 60, accept_guess=accept_guess, announce=told.append)
    return result, asked["form"], told


def test_the_form_refuses_a_guess_approved_without_the_box(monkeypatch):
    with pytest.raises(Refused, match="without accept_guess ticked"):
        _ui(monkeypatch, {"approve": True, "approver": "ann", "reason": "INC-1"})
    result, form, told = _ui(monkeypatch, {"approve": True, "approver": "ann", "reason": "INC-1", "accept_guess": True})
    assert result.approved and result.via == "ui" and len(told) == 1  # announced once, before the pause
    result, form, _ = _ui(monkeypatch, {"approve": True, "approver": "ann", "reason": "INC-1"}, the_plan=plan(False))
    assert result.approved and "accept_guess" not in form.model_fields  # no box when nothing is guessed


def test_the_form_speaks_the_ui_and_fills_the_approver_when_known():
    form = approval_form(plan(True), "kim@example.com", accept_guess=True)
    fields = form.model_fields
    assert fields["approver"].default == "kim@example.com" and fields["accept_guess"].default is True
    assert fields["approve"].description == "Approve exactly the plan shown above"  # the base's fields keep their help text
    text = form._description
    assert "start a new run with to_revision set" in text and "accept_guess ticked" in text
    assert "--" not in text.replace("---", "")  # no shell flags in the UI
    unknown = approval_form(plan(False), None, accept_guess=False).model_fields
    assert unknown["approver"].is_required() and "accept_guess" not in unknown


def test_the_plan_in_the_ui_is_one_block_per_step_with_short_arns():
    md = plan(True).markdown()
    assert "- current: `task-definition/api:7`" in md and "- target: `task-definition/api:6`" in md
    assert "|---" not in md and "⚠️ **guess**" in md and "Account **123456789012**, region **us-east-1**" in md
    other = Plan(runbook="r", system="x", identity=ME, actions=[Action(kind="k", resource="r", current="arn:aws:s3:::bucket",
                                                                       target=f"{TD.replace('us-east-1', 'eu-west-1')}:1", iam_action="x")])
    assert "`arn:aws:s3:::bucket`" in other.markdown() and "eu-west-1" in other.markdown()  # other accounts/regions: in full


def test_prefect_user_only_for_a_user():
    assert prefect_user(None) is None  # a self-hosted server: no users
    assert prefect_user(SimpleNamespace(type="USER", display_value="kim", id="u1")) == "kim"  # Prefect Cloud
    assert prefect_user(SimpleNamespace(type="AUTOMATION", display_value="alarm -> rollback", id="a1")) is None


def test_shell_approval_is_set_only_inside_its_block():
    assert shell_approval_mode() is None
    with shell_approval("yes"):
        assert shell_approval_mode() == "yes"
        with shell_approval(None):
            assert shell_approval_mode() is None
    assert shell_approval_mode() is None
    with pytest.raises(ValueError, match="expected None"):
        with shell_approval("ui"):  # type: ignore[arg-type]
            pass
