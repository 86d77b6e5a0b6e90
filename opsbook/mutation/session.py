"""The shared skeleton of every mutating runbook (a flow-side companion of opsbook/mutation/core.py).

    session = MutationSession(RUNBOOK, inv, dry_run=..., approver=..., approval_timeout_s=...)
    with session:
        identity = session.identity()
        plan = ...                                  # runbook-specific: read state, decide
        if session.gate(plan):                      # publishes the plan; dry run / nothing to do ends here
            session.lease()                         # AWS leases (heartbeat), released on exit
            ...check drift, act, verify...          # runbook-specific
            session.record(records)                 # events, table artifact, durable record
            session.notify(subject, body)           # SNS (dry runs never get here)
            session.done(ok)
    return session.finish()

How the run is approved: a form in the Prefect UI (the run pauses and the
system's channels are told), unless the shell approves (``tasks.mutation.shell_approval``).

Refused (wrong account, a guess not accepted, rejected, timed out, drift, lease held) ends the run
with outcome ``refused`` (exit 3); any other exception ends it ``failed``
with its report saved (a CRIT run ends Failed in the UI).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed

from opsbook import aws
from opsbook.findings import Finding, Status, overall
from opsbook.iam import aws_task
from opsbook.inventory import System
from opsbook.mutation import statestore, steps
from opsbook.mutation.core import (
    Action,
    Applier,
    Approval,
    Identity,
    Outcome,
    Plan,
    Record,
    Refused,
    approve,
    confirm_identity,
    drift,
    guess_advice,
    notify_actions,
    publish_plan,
    shell_approval_mode,
)
from opsbook.mutation.verify import change_findings, wait_for_records
from opsbook.report import RunReport, publish_report, run_url
from opsbook.unfinished import explain

_LEASE_IAM = ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DescribeTable", "dynamodb:CreateTable"]
_STEP_IAM = ["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable", "dynamodb:CreateTable"]


@aws_task(iam=_LEASE_IAM, name="take-leases", cache_policy=NO_CACHE, read_only=False)
def lease_task(journal: steps.Journal, resources: list[str]) -> list[str]:
    return journal.take(resources)


@aws_task(iam=["dynamodb:DeleteItem"], name="release-leases", cache_policy=NO_CACHE, read_only=False)
def release_task(journal: steps.Journal) -> None:
    journal.release()


@aws_task(iam=["dynamodb:Query", "dynamodb:DescribeTable"], name="read-records", cache_policy=NO_CACHE)
def read_records(system: System) -> list[dict[str, Any]]:
    return statestore.read_records(system)


@aws_task(iam=["dynamodb:Query", "dynamodb:DescribeTable"] + _LEASE_IAM + _STEP_IAM + ["dynamodb:DeleteItem"], name="recover-open-steps",
          cache_policy=NO_CACHE, read_only=False)
def recover_task(system: System, runbook: str, appliers: dict[str, Applier], run_id: str) -> tuple[list[Finding], list[Action]]:
    """Steps an earlier run of this runbook left between intent and outcome (it was killed), closed from the live state;
    and the steps of its approved plan it never took (to be planned again)."""
    carried: list[Action] = []
    return steps.recover(system, runbook, appliers, run_id, carried), carried


@aws_task(iam=_STEP_IAM, name="record-actions", cache_policy=NO_CACHE, read_only=False)
def record_actions(system: System, records: list[Record]) -> list[str]:
    """A Prefect event for every action, its durable record unless its step wrote it already (a later word, such as
    verified, is written fenced under the run's lease), and a table artifact. Returns errors."""
    from prefect.artifacts import create_table_artifact
    from prefect.events import emit_event

    errors: list[str] = []
    for n, r in enumerate(records):
        payload = r.model_dump(mode="json")
        emit_event(event=f"opsbook.action.{r.status}", resource={"prefect.resource.id": f"opsbook.{r.kind}.{r.resource}",
                   "prefect.resource.name": r.resource}, payload=payload)
        journal = steps.active(r.flow_run_id)
        try:
            if journal is not None and r.resource in journal.leases:  # fenced, numbered by the run's journal
                if not r.step_id or journal.written.get(r.step_id) != r.status:
                    try:
                        journal.note(r)
                    except statestore.LeaseLost:
                        if r.step_id:  # a step's word is its holder's only: the next run reads the live state
                            raise
                        statestore.put_record(system, payload, 500 + n)  # a fact of an action taken is never dropped
            elif not r.step_id:
                statestore.put_record(system, payload, n)
        except Exception as exc:  # the artifact and event still carry it; the run reports the gap
            errors.append(f"durable record of {r.resource} ({r.status}) not written: {aws.describe_error(exc)}")
    if records:
        create_table_artifact(
            key=f"{records[0].runbook}-{system.name}-actions".lower(),
            table=[{k: v for k, v in r.model_dump(mode="json").items() if k in
                    ("resource", "status", "before", "after", "detail", "flow_run_id", "approver", "os_user", "caller_arn", "at")}
                   for r in records],
            description=f"{len(records)} action record(s)",
        )
    return errors


@aws_task(iam=[], name="check-drift", cache_policy=NO_CACHE)
def check_drift(system: System, plan: Plan, appliers: dict[str, Applier]) -> None:
    """Read every planned resource again after approval: any difference from the plan refuses the run (nothing changed).
    The steps' read functions declare their IAM actions."""
    drifted = drift(system, plan, appliers)
    if drifted:
        raise Refused("the state changed since the plan was made; nothing was changed (run again to plan afresh): " + "; ".join(drifted))


@aws_task(iam=_STEP_IAM, name="take-steps", cache_policy=NO_CACHE, read_only=False)
def take_steps(system: System, plan: Plan, appliers: dict[str, Applier], approval: Approval, identity: Identity, run_id: str,
               undo_on_failure: bool | tuple[str, ...]) -> tuple[list[Record], bool]:
    """The plan's steps, each intent -> act -> outcome (opsbook.mutation.steps.take_steps), with a progress artifact and a
    line on the shell per step. The steps' functions declare their IAM actions."""
    progress = create_progress_artifact(progress=0.0, description=f"{plan.runbook}: applying {len(plan.actions)} change(s)")
    total, done = len(plan.actions), [0]

    def tracked(kind: str, step: Applier) -> Applier:
        def apply(system: System, resource: str, value: str) -> None:
            print(f"opsbook: {plan.runbook}: {resource}: {kind} -> {value} ({done[0] + 1}/{total})", file=sys.stderr)
            step.apply(system, resource, value)
            done[0] += 1
            try:  # the change is made: a progress update that fails must not make it a failed step
                update_progress_artifact(progress, progress=100.0 * min(1.0, done[0] / max(total, 1)))
            except Exception as exc:
                print(f"opsbook: {plan.runbook}: progress not updated ({aws.describe_error(exc)}); the step itself is done", file=sys.stderr)

        return replace(step, apply=apply)

    result = steps.take_steps(system, plan, {k: tracked(k, a) for k, a in appliers.items()}, approval, identity, run_id,
                              undo_on_failure=undo_on_failure)
    update_progress_artifact(progress, progress=100.0)
    return result


@aws_task(iam=[], name="wait-settled", cache_policy=NO_CACHE)
def wait_settled(system: System, records: list[Record], appliers: dict[str, Applier], timeout_s: float, label: str,
                 not_yet: str = "not settled after {timeout} s: {what}; the next run checks it again", poll_s: float = 2.0,
                 word: Callable[[Record, bool, str, float], str] | None = None) -> list[Record]:
    """Poll each applied step's settled check every ``poll_s`` (bounded by ``timeout_s``, with a progress artifact and a line
    on the shell): settled -> ``verified`` ("read back after N s: ..."); not within the time -> stays ``applied`` and says
    what was seen (``word``: how the runbook words both)."""
    return wait_for_records(label, records, lambda r: lambda: appliers[r.kind].settled_now(system, r.resource, r.after or ""), timeout_s,
                            not_yet=not_yet, poll_s=poll_s, word=word)


def steps_policy(appliers: dict[str, Applier]) -> Any:
    """The IAM actions a runbook's steps declare (read, apply), as an entry of its TASKS (for `opsbook policy`)."""
    actions = sorted({a for step in appliers.values() for fn in (step.read, step.apply, step.reached, step.settled) if fn is not None
                      for a in getattr(fn, "iam_actions", ())})
    return SimpleNamespace(name="steps", iam_actions=tuple(actions))


# Tasks every mutating runbook uses: add them to the runbook's TASKS (for `opsbook policy`).
SESSION_TASKS = [confirm_identity, recover_task, lease_task, release_task, read_records, check_drift, take_steps, wait_settled, record_actions,
                 notify_actions]


def step_line(r: Record) -> str:
    """A step as a notice says it: resource, kind, before -> after, status, detail."""
    return f"{r.resource}: {r.kind} {r.before} -> {r.after}: {r.status} {r.detail}".strip()


class MutationSession:
    def __init__(self, runbook: str, inv: System, *, dry_run: bool, approver: str | None = None,
                 approval_timeout_s: int | None = None, accept_guess: bool = False, appliers: dict[str, Applier] | None = None) -> None:
        self.runbook, self.inv, self.dry_run = runbook, inv, dry_run
        self.approver, self.accept_guess = approver or None, accept_guess
        self.approval_timeout_s = approval_timeout_s or inv.mutations.approval_timeout_s
        self.started = time.monotonic()
        self.calls = aws.start_call_log()
        self.run_id = str(flow_run.get_id()) if flow_run.get_id() else "local"
        self.logger = get_run_logger()
        self.report = RunReport(runbook=runbook, system=inv.name, status=Status.OK, findings=[], api_calls=0,
                                region=inv.region, flow_run_id=self.run_id, flow_run_url=run_url(), dry_run=dry_run)
        self.plan: Plan | None = None
        self.approval: Approval | None = None
        self.identity_: Identity | None = None
        self.appliers = appliers or {}
        self.journal: steps.Journal | None = None
        self.carried: list[Action] = []  # steps of a killed run's plan it never took (recover)

    # --- steps -----------------------------------------------------------------------
    def identity(self) -> Identity:
        """Who we are (a pinned account that does not match refuses); then the steps an earlier, killed run of this runbook
        left open are closed from the live state, so that what is planned next starts from complete records."""
        self.identity_ = confirm_identity.submit(self.inv).result()
        if self.appliers:
            self.recover(self.appliers)
        return self.identity_

    def recover(self, appliers: dict[str, Applier]) -> list[Finding]:
        """Close the steps an earlier, killed run of this runbook left open (read with ``appliers``: a runbook whose steps
        depend on what it read calls this itself, before it plans). A dry run changes nothing, not even records.
        The findings (one per step closed)."""
        found, self.carried = ([], []) if self.dry_run else recover_task.submit(self.inv, self.runbook, appliers, self.run_id).result()
        self.report.findings += found
        return found

    def gate(self, plan: Plan, policy: str | None = None) -> bool:
        """Publish the plan; True when the run should act (approved), False when it ends here.

        ``policy``: the plan needs no person's approval because the inventory or
        the runbook's purpose allows it (e.g. tripping a case's breaker); the
        reason is recorded as the approval."""
        mine = {(a.kind, a.resource) for a in plan.actions}
        carried = [a for a in self.carried if (a.kind, a.resource) not in mine]
        if carried:  # a killed run's approved plan, finished: its steps first, in its order, behind this run's approval
            plan.actions = carried + plan.actions
        self.plan = plan
        publish_plan.submit(plan).result()
        self.report.plan = plan.model_dump(mode="json")
        self.report.findings += [Finding(check=f"{self.runbook}-plan", resource=c.split(": ")[0], status=Status.WARN, summary=c)
                                 for c in plan.cannot]
        if self.dry_run or not plan.actions:
            self.report.outcome = (Outcome.PLANNED if plan.actions else Outcome.NOTHING_TO_DO).value
            self.logger.info("plan %s: %d action(s)%s", plan.fingerprint, len(plan.actions), "; dry run, nothing changed" if self.dry_run else "")
            return False
        if policy:
            self.approval = Approval(approved=True, approver=f"policy ({self.approver or 'scheduled run'})", reason=policy,
                                     via="policy", plan_fingerprint=plan.fingerprint)
            self.report.approval = self.approval.model_dump(mode="json")
            return True
        mode = shell_approval_mode()
        if mode == "yes":  # the shell approved up front: show what it approved
            print(plan.text(), file=sys.stderr)
        self.approval = approve(plan, mode, self.approver, self.approval_timeout_s, accept_guess=self.accept_guess,
                                announce=self.announce_pause)
        self.report.approval = self.approval.model_dump(mode="json")
        return True

    def announce_pause(self, plan: Plan) -> None:
        """One message to the system's channels (its SNS topic, the Prefect block the inventory names) when the
        run pauses for approval in the UI: the plan and the run's link. A dry run never gets here; neither does
        the shell's prompt or --yes (the approver is the person at the terminal). A message that could not be
        sent is a WARN finding: nobody may know that the run waits."""
        where = self.report.flow_run_url or f"flow run {self.run_id} (no UI address: set PREFECT_UI_URL)"
        lines = [plan.text(), "", f"It waits for approval in the Prefect UI up to {self.approval_timeout_s} s: open {where} and press Resume.",
                 "Nothing is changed before approval; the run reads the state again and stops if it changed since the plan."]
        if plan.guesses:
            lines.append("A step is marked GUESS: " + guess_advice(plan, shell=False) + ".")
        sent = notify_actions.submit(self.inv, f"[opsbook] {self.runbook} {self.inv.name}: approval needed (plan {plan.fingerprint})",
                                     "\n".join(lines)).result()
        self.logger.info("approval requested from %s", ", ".join(sent["sent"]) or "nobody")
        self.report.findings += [Finding(check="approval-notice", resource=self.inv.name, status=Status.WARN,
                                         summary=f"not told that the run waits for approval: {e}") for e in sent["errors"]]

    def lease(self, resources: list[str] | None = None) -> None:
        """Lease the plan's resources (or ``resources``) for this run: a heartbeat keeps them while the run lives, every step's
        durable write checks them, and they are released when the session ends (or lapse about a minute after a kill)."""
        assert self.plan is not None
        self.journal = steps.Journal(self.inv, self.runbook, self.run_id)
        lease_task.submit(self.journal, resources if resources is not None else [a.resource for a in self.plan.actions]).result()
        steps.activate(self.journal)
        self.journal.start_heartbeat()
        self.report.findings += [Finding(check="lease", resource=self.inv.name, status=Status.OK, summary=t) for t in self.journal.took_over()]

    def act(self, identity: Identity, undo_on_failure: bool | tuple[str, ...] = True) -> tuple[list[Record], bool]:
        """After approval, the plan's steps through the mechanism: leases (heartbeat), the drift check (refused when the
        state changed since the plan), then each step as intent -> act -> outcome; on a failure, ``undo_on_failure``
        undoes what was applied (else the other, independent, steps still run). (records, ok)."""
        assert self.plan is not None and self.approval is not None and self.appliers
        self.lease()
        check_drift.submit(self.inv, self.plan, self.appliers).result()
        return take_steps.submit(self.inv, self.plan, self.appliers, self.approval, identity, self.run_id, undo_on_failure).result()

    def settle(self, records: list[Record], timeout_s: float, not_yet: str = "", poll_s: float = 2.0,
               word: Callable[[Record, bool, str, float], str] | None = None) -> list[Record]:
        """Wait (bounded) until each applied step has taken effect; those become ``verified``. ``not_yet``: what a step
        not settled in time says ({timeout}, {what}), when the runbook knows better than "the next run checks it again";
        ``word(record, settled, last answer, seconds)``: the record's detail either way."""
        extra = {"not_yet": not_yet} if not_yet else {}
        return wait_settled.submit(self.inv, records, self.appliers, timeout_s, self.runbook, poll_s=poll_s, word=word, **extra).result()

    def record(self, records: list[Record]) -> None:
        if self.journal is not None:
            steps.boundary("settled")  # acted and waited: what follows writes the verified word
        errors = record_actions.submit(self.inv, records).result()
        self.report.records += [r.model_dump(mode="json") for r in records]
        self.report.findings += [Finding(check="record", resource=self.inv.mutations.state_table, status=Status.WARN, summary=e) for e in errors]

    def notify(self, subject: str, lines: list[str]) -> None:
        a = self.approval
        body = "\n".join(lines + ([f"approved by {a.approver} via {a.via}: {a.reason}"] if a else []) + [f"run: {self.report.flow_run_url or self.run_id}"])
        self.report.notification = notify_actions.submit(self.inv, f"[opsbook] {self.runbook} {self.inv.name}: {subject}", body).result()

    def act_and_settle(self, identity: Identity, settle_timeout_s: float, check: str, acting: str, acted: Callable[[Record], str],
                       not_yet: str) -> None:
        """The whole acting of a runbook whose steps take a while to take effect: act (``act``), say so at once (``acting``:
        the notice's subject, ``acted``: a line a step), wait for them (bounded: ``settle_timeout_s`` or the inventory's,
        ``not_yet`` for a step not settled in time), record, a ``check`` finding a step, conclude."""
        done, ok = self.act(identity)
        if ok:
            self.notify(acting, [acted(r) for r in done])
            done = self.settle(done, settle_timeout_s or self.inv.mutations.settle_timeout_s, not_yet)
        self.record(done)
        self.report.findings += change_findings(check, done)
        self.conclude(done, ok)

    def conclude(self, records: list[Record], ok: bool, line: Callable[[Record], str] | None = None) -> None:
        """The outcome of the steps taken (``done``) and the notice of it, a line a step (``step_line`` unless ``line``)."""
        self.done(ok)
        self.notify(self.report.outcome, [(line or step_line)(r) for r in records])

    def done(self, ok: bool) -> None:
        worst = overall(self.report.findings) if self.report.findings else Status.OK
        self.report.outcome = (Outcome.FAILED if not ok else Outcome.DONE_WITH_WARNINGS if worst in (Status.WARN, Status.UNKNOWN, Status.CRIT)
                               else Outcome.DONE).value

    # --- ending ----------------------------------------------------------------------
    def __enter__(self) -> MutationSession:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        journal, self.journal = self.journal, None
        try:
            if journal is not None:
                steps.deactivate(journal)
                journal.stop_heartbeat()  # whatever happens to the release below
                held = ", ".join(journal.leases)
                release_task.submit(journal).result()
        except Exception as rel_exc:  # the lease expires by itself; say so
            self.report.findings.append(Finding(check="lease", resource=held, status=Status.WARN,
                                                summary=f"lease not released ({aws.describe_error(rel_exc)}); it lapses by itself within "
                                                        f"{self.inv.mutations.lease_ttl_s} s"))
        if exc is None:
            return False
        if isinstance(exc, Refused):
            self.logger.warning("refused: %s", exc)
            self.report.outcome = Outcome.REFUSED.value
            self.report.findings.append(Finding(check="refused", resource=self.inv.name, status=Status.UNKNOWN, summary=str(exc)))
            return True
        if isinstance(exc, Exception):  # ends Failed with the report saved, never silently
            exc = explain(exc, flow_run.get_id())  # a step left PENDING by a failed one: name the failed one
            self.logger.error("failed: %s", aws.describe_error(exc))
            self.report.outcome = Outcome.FAILED.value
            self.report.findings.append(Finding(check="error", resource=self.inv.name, status=Status.CRIT,
                                                summary=f"{aws.describe_error(exc)}; the records show what was changed"))
            return True
        return False  # KeyboardInterrupt and friends propagate

    def finish(self) -> Any:
        report = self.report
        outcome = Outcome(report.outcome or Outcome.FAILED.value)
        if outcome is Outcome.REFUSED:
            report.status = Status.UNKNOWN
        elif outcome in (Outcome.PLANNED, Outcome.NOTHING_TO_DO):
            report.status = overall(report.findings) if report.findings else Status.OK
        else:
            report.status = overall(report.findings + [Finding(check="outcome", resource=self.inv.name, status=outcome.status, summary=outcome.value)])
        report.count_calls(self.calls, self.started)
        publish_report.submit(report).result()
        if report.status is Status.CRIT:
            return Failed(message=report.headline(), data=report)
        return report
