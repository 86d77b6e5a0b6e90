"""The shared skeleton of every mutating runbook (a flow-side companion of opsbook/mutation/core.py).

    session = MutationSession(RUNBOOK, inv, dry_run=..., approver=..., approval_timeout_s=...)
    with session:
        identity = session.identity()
        plan = ...                                  # runbook-specific: read state, decide
        if session.gate(plan):                      # publishes the plan; dry run / nothing to do ends here
            session.lease([resources], ttl_s)       # AWS lease, released on exit
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
from typing import Any

from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed

from opsbook import aws
from opsbook.findings import Finding, Status, overall
from opsbook.iam import aws_task
from opsbook.inventory import System
from opsbook.mutation import statestore
from opsbook.mutation.core import (
    Approval,
    Identity,
    Outcome,
    Plan,
    Record,
    Refused,
    approve,
    confirm_identity,
    guess_advice,
    notify_actions,
    publish_plan,
    record_actions,
    shell_approval_mode,
    take_leases,
)
from opsbook.report import RunReport, publish_report, run_url


@aws_task(iam=["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DescribeTable", "dynamodb:CreateTable"], name="take-leases",
          cache_policy=NO_CACHE, read_only=False)
def lease_task(system: System, plan: Plan, run_id: str, ttl_s: int) -> list[str]:
    return take_leases(system, plan, run_id, ttl_s)


@aws_task(iam=["dynamodb:DeleteItem"], name="release-leases", cache_policy=NO_CACHE, read_only=False)
def release_task(system: System, resources: list[str], run_id: str) -> None:
    for r in resources:
        statestore.release_lease(system, r, run_id)


@aws_task(iam=["dynamodb:Query", "dynamodb:DescribeTable"], name="read-records", cache_policy=NO_CACHE)
def read_records(system: System) -> list[dict[str, Any]]:
    return statestore.read_records(system)


# Tasks every mutating runbook uses: add them to the runbook's TASKS (for `opsbook policy`).
SESSION_TASKS = [confirm_identity, lease_task, release_task, read_records, record_actions, notify_actions]


class MutationSession:
    def __init__(self, runbook: str, inv: System, *, dry_run: bool, approver: str | None = None,
                 approval_timeout_s: int | None = None, accept_guess: bool = False) -> None:
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
        self.leased: list[str] = []

    # --- steps -----------------------------------------------------------------------
    def identity(self) -> Identity:
        self.identity_ = confirm_identity.submit(self.inv).result()
        return self.identity_

    def gate(self, plan: Plan, policy: str | None = None) -> bool:
        """Publish the plan; True when the run should act (approved), False when it ends here.

        ``policy``: the plan needs no person's approval because the inventory or
        the runbook's purpose allows it (e.g. tripping a case's breaker); the
        reason is recorded as the approval."""
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

    def lease(self, ttl_s: int | None = None) -> None:
        assert self.plan is not None
        self.leased = lease_task.submit(self.inv, self.plan, self.run_id, ttl_s or self.inv.mutations.lease_ttl_s).result()

    def record(self, records: list[Record]) -> None:
        errors = record_actions.submit(self.inv, records).result()
        self.report.records += [r.model_dump(mode="json") for r in records]
        self.report.findings += [Finding(check="record", resource=self.inv.mutations.state_table, status=Status.WARN, summary=e) for e in errors]

    def notify(self, subject: str, lines: list[str]) -> None:
        a = self.approval
        body = "\n".join(lines + ([f"approved by {a.approver} via {a.via}: {a.reason}"] if a else []) + [f"run: {self.report.flow_run_url or self.run_id}"])
        self.report.notification = notify_actions.submit(self.inv, f"[opsbook] {self.runbook} {self.inv.name}: {subject}", body).result()

    def done(self, ok: bool) -> None:
        worst = overall(self.report.findings) if self.report.findings else Status.OK
        self.report.outcome = (Outcome.FAILED if not ok else Outcome.DONE_WITH_WARNINGS if worst in (Status.WARN, Status.UNKNOWN, Status.CRIT)
                               else Outcome.DONE).value

    # --- ending ----------------------------------------------------------------------
    def __enter__(self) -> MutationSession:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        try:
            if self.leased:
                release_task.submit(self.inv, self.leased, self.run_id).result()
        except Exception as rel_exc:  # the lease expires by itself; say so
            self.report.findings.append(Finding(check="lease", resource=", ".join(self.leased), status=Status.WARN,
                                                summary=f"lease not released ({aws.describe_error(rel_exc)}); it expires by itself"))
        if exc is None:
            return False
        if isinstance(exc, Refused):
            self.logger.warning("refused: %s", exc)
            self.report.outcome = Outcome.REFUSED.value
            self.report.findings.append(Finding(check="refused", resource=self.inv.name, status=Status.UNKNOWN, summary=str(exc)))
            return True
        if isinstance(exc, Exception):  # ends Failed with the report saved, never silently
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


def mark_verified(records: list[Record], seen: dict[tuple[str, str], tuple[bool, str]], timeout_s: float) -> list[Record]:
    """Applied records become ``verified`` when the read-back ``seen[(kind, resource)]`` shows the target."""
    out = []
    for r in records:
        if r.status != "applied":
            out.append(r)
            continue
        ok, what = seen[(r.kind, r.resource)]
        out.append(r.model_copy(update={"status": "verified" if ok else "applied",
                                        "detail": f"read back: {what}" + ("" if ok else f" after {timeout_s:g} s; the next run checks it again")}))
    return out
