"""One way to change things safely, shared by every mutating runbook.

plan -> dry run (default) -> approval bound to the plan -> leases -> drift
check -> act (idempotent) -> verify -> record -> notify.

A runbook supplies the Plan (what to change from what to what, and why) and
an ``Applier`` per kind of action (how to read the current value and how to
set one). This module does the rest the same way for every runbook:

- identity: STS caller identity; an inventory that pins ``account_id`` refuses
  any other account;
- approval: a Prefect pause with a form in the UI (announced on the system's
  notification channels), a prompt on the terminal, or ``--yes`` given up
  front (``shell_approval``: set by the shell, never a flow parameter); always
  bound to the plan's fingerprint; a step whose target is a guess needs
  ``accept_guess`` on top;
- leases in AWS (``tasks.statestore``) so two runs never change the same
  resource at once, wherever they run;
- drift: the state is read again after approval; any difference stops the run;
- failure part-way: what was applied is undone in reverse order (each step
  recorded), or the record says precisely what was and was not done;
- record: a Prefect event per action, a table artifact, the durable record in
  the state table, and the system's SNS topic. Dry runs notify nobody.
"""

from __future__ import annotations

import contextlib
import contextvars
import getpass
import hashlib
import json
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from pydantic import BaseModel, Field, create_model

from opsbook import aws
from opsbook.findings import Status
from opsbook.iam import aws_task
from opsbook.inventory import System
from opsbook.masking import mask


class Refused(RuntimeError):
    """The run did not act as asked (exit 3): wrong account, rejected, timed out, drift, lease held."""


class Outcome(str, Enum):
    PLANNED = "planned"  # dry run
    NOTHING_TO_DO = "nothing-to-do"
    DONE = "done"
    DONE_WITH_WARNINGS = "done-with-warnings"
    FAILED = "failed"
    REFUSED = "refused"

    @property
    def status(self) -> Status:
        return {
            Outcome.PLANNED: Status.OK, Outcome.NOTHING_TO_DO: Status.OK, Outcome.DONE: Status.OK,
            Outcome.DONE_WITH_WARNINGS: Status.WARN, Outcome.FAILED: Status.CRIT, Outcome.REFUSED: Status.UNKNOWN,
        }[self]


class Identity(BaseModel):
    account: str
    arn: str
    region: str


class Action(BaseModel):
    kind: str
    resource: str
    current: str
    target: str
    iam_action: str
    reversible: bool = True
    evidence: str = ""
    guess: bool = Field(False, description="no evidence says the target is right (e.g. no record of the last known-good release): "
                                           "approving the plan needs accept_guess as well")

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.resource}"


class Plan(BaseModel):
    runbook: str
    system: str
    identity: Identity
    actions: list[Action] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list, description="resources already at their target")
    cannot: list[str] = Field(default_factory=list, description="resources the runbook cannot plan for, and why")
    notes: list[str] = Field(default_factory=list)
    override: str = Field("", description="the runbook's parameter that names a guessed target explicitly (e.g. to_revision)")
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def propose(self, wanted: list[Action], fix: bool) -> None:
        """Plan ``wanted`` when ``fix``; otherwise (a report-only run) list in the notes what would have been planned."""
        if fix:
            self.actions = wanted
        elif wanted:
            self.notes.append("fix=false: not planned: " + "; ".join(f"{a.resource}: {a.kind} {a.current} -> {a.target}" for a in wanted))

    @property
    def fingerprint(self) -> str:
        body = json.dumps([(a.kind, a.resource, a.current, a.target, a.guess) for a in self.actions]
                          + [self.identity.account, self.identity.region])
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    @property
    def guesses(self) -> list[tuple[int, Action]]:
        """(step number, action) of every step whose target is a guess."""
        return [(i, a) for i, a in enumerate(self.actions, 1) if a.guess]

    def short(self, value: str) -> str:
        """An ARN of the plan's own account and region without that prefix (the header states both), so that
        current and target fit the approval form; any other value as it is."""
        prefix = f":{self.identity.region}:{self.identity.account}:"
        if value.startswith("arn:") and prefix in value:
            return value.split(prefix, 1)[1]
        return value

    def markdown(self) -> str:
        """The plan as the Prefect UI shows it (the plan artifact, and the approval form, a modal 32rem wide):
        one block per step, current and target on lines of their own, no wide table."""
        lines = [
            f"# Plan: {self.runbook} · {self.system}",
            "",
            f"Account **{self.identity.account}**, region **{self.identity.region}**, as `{self.identity.arn}`. "
            f"Plan `{self.fingerprint}`, {self.created_at}.",
            "",
        ]
        for i, a in enumerate(self.actions, 1):
            lines += [f"**{i}. `{a.resource}`** ({a.kind})", "",
                      f"- current: `{self.short(a.current)}`", f"- target: `{self.short(a.target)}`",
                      f"- by: {a.iam_action}; undo: {'yes' if a.reversible else '**no, not reversible**'}"]
            if a.evidence:
                lines.append(f"- why: {a.evidence}")
            if a.guess:
                lines.append("- ⚠️ **guess**: no evidence says this target is right; " + guess_advice(self, shell=False))
            lines.append("")
        if not self.actions:
            lines += ["Nothing to change.", ""]
        lines += [f"- unchanged: {u}" for u in self.unchanged] + [f"- **cannot plan**: {c}" for c in self.cannot]
        lines += [f"- note: {n}" for n in self.notes]
        return mask("\n".join(lines).rstrip())

    def text(self) -> str:
        out = [f"Plan {self.fingerprint} for {self.runbook} on {self.system}: account {self.identity.account}, "
               f"region {self.identity.region}, as {self.identity.arn}"]
        for i, a in enumerate(self.actions, 1):
            out.append(f"  {i}. {a.resource}: {a.current} -> {a.target}  ({a.iam_action}; "
                       f"{'reversible' if a.reversible else 'NOT reversible'}) {'GUESS: ' if a.guess and 'GUESS' not in a.evidence else ''}"
                       f"{a.evidence}".rstrip())
        out += [f"  unchanged: {u}" for u in self.unchanged] + [f"  CANNOT: {c}" for c in self.cannot] + [f"  note: {n}" for n in self.notes]
        if not self.actions:
            out.append("  nothing to change")
        return mask("\n".join(out))


def guess_advice(plan: Plan, shell: bool) -> str:
    """How to approve a plan with guessed steps, or to name the target instead: in the shell's words or the UI's."""
    if shell:
        return "add --param accept_guess=true to accept it" + (f", or name the target with --param {plan.override}=..." if plan.override else "")
    return ("approve it only with accept_guess ticked on the approval form"
            + (f", or reject it and start a new run with {plan.override} set" if plan.override else ""))


def guessed_steps(plan: Plan) -> str:
    return "; ".join(f"step {i} ({a.resource}: {plan.short(a.current)} -> {plan.short(a.target)}: {a.evidence})" for i, a in plan.guesses)


class Approval(BaseModel):
    approved: bool
    approver: str
    reason: str
    via: Literal["ui", "prompt", "yes", "policy"]
    plan_fingerprint: str
    at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


class ApprovalInput(RunInput):
    """The form the Prefect UI shows on a paused mutating run (Resume)."""

    approve: bool = Field(False, description="Approve exactly the plan shown above")
    approver: str = Field(..., min_length=1, description="Your name")
    reason: str = Field(..., min_length=1, description="Why: incident or ticket")


class GuessApprovalInput(ApprovalInput):
    """The form for a plan with a guessed step: approving it needs the box ticked as well."""

    accept_guess: bool = Field(False, description="The plan has a step marked guess: tick to apply it anyway")


def approval_form(plan: Plan, approver: str | None, accept_guess: bool) -> type[ApprovalInput]:
    """The Resume form for ``plan``: the plan as its description, the approver filled when known,
    and the accept_guess box when the plan has a guessed step (ticked when the run was started with accept_guess)."""
    base: type[ApprovalInput] = GuessApprovalInput if plan.guesses else ApprovalInput
    fields: dict[str, Any] = {}
    if approver:
        fields["approver"] = (str, Field(approver, min_length=1, description="Your name (filled with the Prefect user who started the run)"))
    if plan.guesses:
        fields["accept_guess"] = (bool, Field(accept_guess, description=base.model_fields["accept_guess"].description))
    form = create_model(base.__name__, __base__=base, **fields)
    end = "Approve to apply exactly this plan; the run reads the state again and stops if it changed since."
    if plan.guesses:
        end += " A step marked guess is applied only with accept_guess ticked as well."
    return form.with_initial_data(description=plan.markdown() + "\n\n" + end)


def prefect_user(created_by: Any) -> str | None:
    """The name of the Prefect user who started a run (``FlowRun.created_by``), when the server knows one.

    Prefect Cloud records the user (type USER) who pressed Run; a self-hosted
    server has no users and leaves ``created_by`` empty, as do schedules, and
    automations record themselves (type AUTOMATION): None then, and the
    approver types their name."""
    if created_by is None or getattr(created_by, "type", None) != "USER":
        return None
    return getattr(created_by, "display_value", None) or None


def run_creator() -> str | None:
    """``prefect_user`` of this flow run; None outside a run or when the API cannot say (logged)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if not run_id:
        return None
    try:
        with get_client(sync_client=True) as client:
            return prefect_user(client.read_flow_run(run_id).created_by)
    except Exception as exc:  # only a convenience: the form asks for the name instead
        get_run_logger().warning("could not read who started run %s (%s); the approval form asks for the name", run_id, aws.describe_error(exc))
        return None


# --- how the shell approves (never a flow parameter) -------------------------------------

ShellApproval = Literal["prompt", "yes"]
_SHELL_APPROVAL: contextvars.ContextVar[ShellApproval | None] = contextvars.ContextVar("opsbook_shell_approval", default=None)


@contextlib.contextmanager
def shell_approval(mode: ShellApproval | None) -> Iterator[None]:
    """How mutating runs started inside this block, in this process, are approved.

    None (the default, and always so in a deployment run: a worker or
    ``opsbook serve`` runs it in a process of its own): the run pauses for the
    approval form in the Prefect UI. "prompt": the plan is printed and 'yes'
    typed on the terminal (``opsbook run ... --execute``). "yes": approved up
    front (``--execute --yes``). The shell sets it around the flow call; it is
    not a flow parameter because anyone who can start a deployment could then
    pass approval=yes and skip the approval."""
    if mode not in (None, "prompt", "yes"):
        raise ValueError(f"shell approval {mode!r}: expected None (the UI form), 'prompt' or 'yes'")
    token = _SHELL_APPROVAL.set(mode)
    try:
        yield
    finally:
        _SHELL_APPROVAL.reset(token)


def shell_approval_mode() -> ShellApproval | None:
    return _SHELL_APPROVAL.get()


class Record(BaseModel):
    runbook: str
    system: str
    resource: str
    kind: str
    before: str
    after: str | None
    status: Literal["intended", "applied", "verified", "failed", "undone", "undo-failed", "not-attempted", "abandoned"]
    detail: str = ""
    step_id: str = Field("", description="the step's id when it was taken as intent -> act -> outcome (opsbook.mutation.steps)")
    flow_run_id: str | None = None
    approver: str | None = None
    approved_via: str | None = None
    os_user: str = Field(default_factory=getpass.getuser)
    host: str = Field(default_factory=socket.gethostname)
    caller_arn: str = ""
    plan_fingerprint: str = ""
    at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="microseconds"))


@dataclass(frozen=True)
class Applier:
    """One kind of step: how it reads and sets its value (idempotent: setting the current value is a no-op), and, where
    the value read back is not the target itself (a backup's name vs the newest backup's time, a rotated secret's new
    version), whether the step's effect is there (``reached``; default: the value read equals the target). The read and apply functions declare
    their IAM actions (``opsbook.iam.declares``)."""

    read: Callable[[System, str], str]
    apply: Callable[[System, str, str], None]
    reached: Callable[[System, str, str, str], bool] | None = None  # (system, resource, before, target)
    settled: Callable[[System, str, str], tuple[bool, str]] | None = None  # (done, what is seen) after the change; default: reached

    def settled_now(self, system: System, resource: str, target: str) -> tuple[bool, str]:
        """Has the change taken effect (an ECS rollout complete, a version Active)? (yes, what is seen)."""
        if self.settled is not None:
            return self.settled(system, resource, target)
        now = self.read(system, resource)
        return now == target, f"reads {now}"

    def at_target(self, system: System, resource: str, before: str, target: str) -> tuple[bool, str]:
        """(is the step's effect there, the value read now)."""
        now = self.read(system, resource)
        return (self.reached(system, resource, before, target) if self.reached is not None else now == target), now


# --- steps ---------------------------------------------------------------------------


@aws_task(iam=[], name="confirm-identity", cache_policy=NO_CACHE)
def confirm_identity(system: System) -> Identity:
    """Where are we? A pinned account that does not match refuses before anything is read."""
    ident = aws.caller_identity(system.region)
    if system.account_id and ident["account"] != system.account_id:
        raise Refused(f"wrong account: credentials are for {ident['account']} ({ident['arn']}) but "
                      f"{system.name}'s inventory pins {system.account_id}; switch profile (AWS_PROFILE) and retry")
    return Identity(account=ident["account"], arn=ident["arn"], region=system.region)


def prompt_terminal(plan: Plan) -> Approval:
    """`--execute` on a terminal: show the plan, ask for 'yes'."""
    print(plan.text(), file=sys.stderr)
    sys.stderr.write(f"Apply these {len(plan.actions)} change(s)? Type 'yes' to approve: ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    ok = answer in ("yes", "y")
    return Approval(approved=ok, approver=getpass.getuser(), reason="approved at the terminal" if ok else f"answered {answer!r}",
                    via="prompt", plan_fingerprint=plan.fingerprint)


def approve(plan: Plan, mode: ShellApproval | None, approver: str | None, timeout_s: int, *, accept_guess: bool = False,
            announce: Callable[[Plan], None] | None = None) -> Approval:
    """Get approval for exactly this plan, or raise Refused. Call from the flow (a pause needs the flow run).

    ``mode``: ``shell_approval_mode()``. A plan with a guessed step needs
    ``accept_guess`` (the run's parameter, or the form's box in the UI) on top
    of the approval, never --yes alone. ``announce`` is called once, just
    before the run pauses for the UI form (the system's channels are told)."""
    if plan.guesses and mode is not None and not accept_guess:
        raise Refused(f"plan {plan.fingerprint} has a guessed step, and --yes or a 'yes' at the prompt does not apply a guess: "
                      f"{guessed_steps(plan)}; {guess_advice(plan, shell=True)}; nothing was changed")
    if mode == "yes":
        return Approval(approved=True, approver=approver or getpass.getuser(), reason="--execute --yes" + (" --param accept_guess=true" if plan.guesses else ""),
                        via="yes", plan_fingerprint=plan.fingerprint)
    if mode == "prompt":
        result = prompt_terminal(plan)
    else:
        result = approve_in_ui(plan, timeout_s, accept_guess, announce)
    if not result.approved:
        raise Refused(f"plan {plan.fingerprint} rejected by {result.approver}: {result.reason}; nothing was changed")
    return result


def approve_in_ui(plan: Plan, timeout_s: int, accept_guess: bool, announce: Callable[[Plan], None] | None) -> Approval:
    """Pause the run with the approval form; the answer, or Refused (timed out; approved without accepting a guess)."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    form_type = approval_form(plan, run_creator(), accept_guess)
    if announce is not None:
        announce(plan)
    get_run_logger().warning("waiting up to %s s for approval of plan %s in the Prefect UI", timeout_s, plan.fingerprint)
    try:
        form = pause_flow_run(wait_for_input=form_type, timeout=timeout_s, poll_interval=2)
    except FlowPauseTimeout:
        # Prefect has already failed the run ("paused and never resumed"); this message reaches the log.
        raise Refused(f"no approval within {timeout_s} s; nothing was changed") from None
    if form.approve and plan.guesses and not getattr(form, "accept_guess", False):
        raise Refused(f"plan {plan.fingerprint} approved by {form.approver} without accept_guess ticked: {guessed_steps(plan)}; "
                      f"{guess_advice(plan, shell=False)}; nothing was changed")
    return Approval(approved=form.approve, approver=form.approver, reason=form.reason, via="ui", plan_fingerprint=plan.fingerprint)


def drift(system: System, plan: Plan, appliers: dict[str, Applier]) -> list[str]:
    """What changed since the plan was made (empty when nothing did)."""
    out = []
    for a in plan.actions:
        now = appliers[a.kind].read(system, a.resource)
        if now != a.current:
            out.append(f"{a.resource} was {a.current} when planned and is now {now}")
    return out


@aws_task(iam=["sns:Publish"], name="notify-actions", cache_policy=NO_CACHE, read_only=False)
def notify_actions(system: System, subject: str, body: str) -> dict[str, Any]:
    from opsbook.notify import publish

    return publish(system, subject, body)


@task(name="publish-plan", cache_policy=NO_CACHE)
def publish_plan(plan: Plan) -> Plan:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key=f"{plan.runbook}-{plan.system}-plan".lower(), markdown=plan.markdown(),
                             description=f"plan {plan.fingerprint}: {len(plan.actions)} action(s)")
    return plan


# --- undo of an earlier run ------------------------------------------------------------------


def undo_plan(system: System, runbook: str, identity: Identity, records: list[dict[str, Any]], run_id: str,
              appliers: dict[str, Applier], iam_actions: dict[str, str], irreversible: dict[str, str] | None = None,
              parts: dict[str, Callable[[str, str, str, str], tuple[str, list[str]]]] | None = None) -> Plan:
    """The plan that puts back what run ``run_id`` changed (its durable records, newest first as read).

    One inverse action per (kind, resource) the run left changed: current = its
    ``after``, target = its ``before``. The value is read again now: already back
    at ``before`` is "unchanged"; anything else than ``after`` means someone
    changed it since, and the plan cannot undo it blindly (``cannot``).
    ``irreversible``: kind -> why it has no undo (e.g. a secret rotation: the old
    credential must never come back). ``parts``: kind -> (resource, before, after, now) -> (the value to put back, the
    parts that cannot be and why), for a step made of parts undone one by one (a group of items: each still as the run
    left it goes back, any other is named and left)."""
    irreversible, parts = irreversible or {}, parts or {}
    plan = Plan(runbook=runbook, system=system.name, identity=identity, notes=[f"undo of run {run_id}"])
    mine = [r for r in records if r.get("flow_run_id") == run_id and r.get("runbook") == runbook]
    if not mine:
        plan.cannot.append(f"{run_id}: no {runbook} record of this run in {system.mutations.state_table} "
                           f"(give the flow run id the earlier run printed; dry runs record nothing)")
        return plan
    seen: set[tuple[str, str]] = set()
    for r in sorted(mine, key=lambda r: r.get("at", ""), reverse=True):  # the last word on each resource wins
        key = (r["kind"], r["resource"])
        if key in seen:
            continue
        seen.add(key)
        if r["status"] in ("undone", "failed", "not-attempted"):
            plan.unchanged.append(f"{r['resource']}: {r['kind']} was {r['status']} in that run; nothing to put back")
            continue
        if r["kind"] in irreversible:
            plan.cannot.append(f"{r['resource']}: {r['kind']} has no undo: {irreversible[r['kind']]}")
            continue
        if r["kind"] not in appliers:
            plan.cannot.append(f"{r['resource']}: {r['kind']} has no undo in {runbook}")
            continue
        now = appliers[r["kind"]].read(system, r["resource"])
        before, after = r["before"], r.get("after")
        if r["kind"] in parts and now not in (before, after):
            target, why = parts[r["kind"]](r["resource"], before, str(after), now)
            plan.cannot += [f"{r['resource']}: {w}" for w in why]
            if target != now:
                plan.actions.append(Action(kind=r["kind"], resource=r["resource"], current=now, target=target,
                                           iam_action=iam_actions.get(r["kind"], "?"),
                                           evidence=f"undo of run {run_id} ({r.get('approver') or '?'}), part by part"))
            continue
        if now == before:
            plan.unchanged.append(f"{r['resource']}: {r['kind']} already back at {before}")
        elif now != after:
            plan.cannot.append(f"{r['resource']}: {r['kind']} is now {now}, not the {after} run {run_id} left: changed since; "
                               "look at it by hand")
        else:
            plan.actions.append(Action(kind=r["kind"], resource=r["resource"], current=now, target=before,
                                       iam_action=iam_actions.get(r["kind"], "?"), evidence=f"undo of run {run_id} ({r.get('approver') or '?'})"))
    return plan
