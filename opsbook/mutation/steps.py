"""Taking a plan's steps so that a kill at any moment leaves nothing lost and nothing done twice.

Each step of an approved plan is taken as

    intent (durable, fenced)  ->  the AWS call  ->  outcome (durable, fenced; closes the intent)

under a lease per resource that a heartbeat keeps alive while the run lives (``Journal``). A run killed
between intent and outcome leaves the intent open; the next run of the runbook on the system reads the
open intents before it plans (``recover``), reads the live state and closes each one: at its target ->
``applied`` (the step was taken), at its starting value -> ``abandoned`` (it was not), anything else ->
``abandoned`` with a WARN (changed by someone else; look at it). Plans are made from the records after
that, so a rollback can never go past its target because a record was missing.

A lease lapses about ``mutations.lease_ttl_s`` (60 s) after its holder's last heartbeat, or at once when
Prefect says the holder's run has finished; an unreachable Prefect API or a run it does not know says
nothing (the heartbeat decides). Each takeover adds one to the lease's fencing version, and every durable
write of a step checks it in the same transaction, so a holder that lost its lease (stalled, then back)
can neither write nor act: its next intent fails before its next AWS call.

``OPSBOOK_CHAOS_KILL=<boundary>[:<n>]`` kills the process (SIGKILL) at the n-th (default first) crossing of
a step boundary (``leased``, ``intended``, ``acted``, ``recorded``, ``settled``): the chaos battery's hook.
"""

from __future__ import annotations

import getpass
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from typing import Any

from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.inventory import System
from opsbook.mutation import statestore
from opsbook.mutation.core import Action, Applier, Approval, Identity, Plan, Record, Refused

PLAN = "plan"  # the open-intent item of a plan of several steps (see Journal.open_plan)

_log = logging.getLogger("opsbook.lease")
BOUNDARIES = ("leased", "intended", "acted", "recorded", "settled")
_crossed: Counter[str] = Counter()


def boundary(name: str) -> None:
    """The chaos battery's kill point (``OPSBOOK_CHAOS_KILL``); nothing otherwise."""
    want = os.environ.get("OPSBOOK_CHAOS_KILL")
    if not want:
        return
    where, _, nth = want.partition(":")
    if where != name:
        return
    _crossed[name] += 1
    if _crossed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def holder_name(run_id: str) -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} run {run_id}"


def prefect_run_finished(run_id: str) -> bool:
    """True only when the Prefect API says flow run ``run_id`` is in a final state; unreachable, unknown: False."""
    try:
        rid = uuid.UUID(run_id)
    except ValueError:
        return False
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(rid).state
        return bool(state is not None and state.is_final())
    except Exception:  # unknown is never dead: the heartbeat decides
        return False


class Journal:
    """One run's leases (kept alive by a heartbeat thread) and its fenced durable writes: intents and outcomes."""

    def __init__(self, system: System, runbook: str, run_id: str, ttl_s: int | None = None) -> None:
        self.system, self.runbook, self.run_id = system, runbook, run_id
        self.ttl_s = ttl_s or system.mutations.lease_ttl_s
        self.leases: dict[str, statestore.Lease] = {}
        self.written: dict[str, str] = {}  # step id -> the status durably written last
        self.lost = ""
        self._n = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- leases ----------------------------------------------------------------------
    def take(self, resources: list[str], check_open: bool = True) -> list[str]:
        """Lease every resource (sorted, so two runs never wait on each other crosswise), or none: Refused naming the holder."""
        taken: list[str] = []
        try:
            for resource in sorted(set(resources)):
                self.leases[resource] = statestore.acquire_lease(self.system, resource, holder_name(self.run_id), self.run_id, self.ttl_s,
                                                                 is_dead=prefect_run_finished)
                taken.append(resource)
        except statestore.LeaseHeld as exc:
            self.release(taken)
            raise Refused(str(exc)) from None
        # A step left open on a resource this run now holds was left by a run that stopped after this run planned
        # (its lease lapsed since): the plan was made without its outcome. Refuse; the next run closes it first.
        stale = [] if not check_open else [i for i in statestore.open_intents(self.system) if i["resource"] in taken and i.get("flow_run_id") != self.run_id]
        if stale:
            self.release(taken)
            raise Refused("an earlier run stopped part-way through a step on " + ", ".join(sorted({i["resource"] for i in stale}))
                          + f" ({', '.join(i['step_id'] for i in stale)}); nothing was changed; run "
                          + " or ".join(sorted({str(i.get('runbook')) for i in stale}))
                          + " again on this system: it closes that step from the live state before it plans")
        boundary("leased")
        return taken

    def took_over(self) -> list[str]:
        return [f"{r}: took over the lease of {lease.took_over}" for r, lease in self.leases.items() if lease.took_over]

    def start_heartbeat(self) -> None:
        if self._beat is None:
            self._beat = threading.Thread(target=self._heartbeat, name=f"opsbook-lease-{self.run_id}", daemon=True)
            self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            for lease in list(self.leases.values()):
                try:
                    statestore.renew_lease(lease)
                except statestore.LeaseLost as exc:
                    self.lost = str(exc)
                except Exception as exc:  # a missed beat; the next one tries again (the lease lasts ttl_s)
                    _log.warning("lease heartbeat on %s missed (%s); retrying in %.0f s; the lease lapses at %.0f",
                                 lease.resource, aws.describe_error(exc), self.ttl_s / 4, lease.expires_at)

    def stop_heartbeat(self) -> None:
        self._stop.set()

    def release(self, resources: list[str] | None = None) -> None:
        """Stop the heartbeat and give the leases back (``resources``: only those)."""
        if resources is None:
            self._stop.set()
        for r in list(resources if resources is not None else self.leases):
            self.leases.pop(r, None)
            statestore.release_lease(self.system, r, self.run_id)

    # --- fenced writes ----------------------------------------------------------------
    def _lease(self, resource: str) -> statestore.Lease:
        if self.lost:
            raise statestore.LeaseLost(self.lost)
        if resource not in self.leases:
            raise statestore.LeaseLost(f"this run holds no lease on {resource}")
        return self.leases[resource]

    def check(self, resource: str) -> None:
        """Right before a step's AWS call: LeaseLost when the lease is lost, or so close to lapsing (the heartbeat lagging,
        the process stalled) that another run may take it over during the call."""
        lease = self._lease(resource)
        if time.time() > lease.expires_at - min(10.0, lease.ttl_s / 4):
            raise statestore.LeaseLost(f"the lease on {resource} lapses at {lease.expires_at:.0f} and was not renewed in time "
                                       "(the run stalled?): not acting on it")

    def _next(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def intend(self, record: Record, on_success: str) -> Record:
        """Write the intent of a step (its record with status ``intended``) before its AWS call; the record, with its step id."""
        n = self._next()
        step_id = f"{self.runbook}#{self.run_id}#{n:03d}"
        intent = record.model_copy(update={"status": "intended", "step_id": step_id,
                                           "detail": f"about to set {record.after} (then {on_success})"})
        body = {**intent.model_dump(mode="json"), "on_success": on_success}
        statestore.fenced_write(self._lease(record.resource), [(intent.model_dump(mode="json"), n)], open_intent=(step_id, body))
        self.written[step_id] = "intended"
        return intent

    def open_plan(self, plan: Plan, approval: Approval) -> str:
        """Before the first step of a plan of several: the whole plan, durably (its id), so that a re-run after a kill
        between two steps knows which steps the approved plan still had to take."""
        plan_id = f"{self.runbook}#{self.run_id}#000"
        body = {"runbook": self.runbook, "system": self.system.name, "kind": PLAN, "resource": plan.actions[0].resource,
                "flow_run_id": self.run_id, "approver": approval.approver, "plan_fingerprint": plan.fingerprint,
                "actions": [a.model_dump(mode="json") for a in plan.actions]}
        statestore.fenced_write(self._lease(plan.actions[0].resource), [], open_intent=(plan_id, body))
        return plan_id

    def close_plan(self, plan_id: str, resource: str) -> None:
        """Every step of the plan has its outcome (or the run undid them): the plan is no longer open."""
        statestore.fenced_write(self._lease(resource), [], close_intent=plan_id)

    def outcome(self, record: Record) -> Record:
        """Write the outcome of a step and close its intent, in one transaction."""
        statestore.fenced_write(self._lease(record.resource), [(record.model_dump(mode="json"), self._next())], close_intent=record.step_id)
        self.written[record.step_id] = record.status
        return record

    def note(self, record: Record) -> None:
        """A later word on a step (verified), or a record of no step (not attempted), fenced like the rest."""
        statestore.fenced_write(self._lease(record.resource), [(record.model_dump(mode="json"), self._next())])
        if record.step_id:
            self.written[record.step_id] = record.status


_ACTIVE: dict[str, Journal] = {}


def activate(journal: Journal) -> None:
    _ACTIVE[journal.run_id] = journal


def deactivate(journal: Journal) -> None:
    if _ACTIVE.get(journal.run_id) is journal:
        del _ACTIVE[journal.run_id]


def active(run_id: str | None) -> Journal | None:
    """The journal of the mutating run ``run_id`` in this process (its leases are taken), if any."""
    return _ACTIVE.get(run_id or "")


# --- taking the steps ---------------------------------------------------------------------


def intend(journal: Journal | None, record: Record, on_success: str) -> Record:
    """Before a step's AWS call: its intent, durably (fenced); the record, with its step id. No journal: as it is."""
    if journal is None:
        return record
    intent = journal.intend(record, on_success)
    boundary("intended")
    journal.check(record.resource)  # the next thing is the AWS call
    return record.model_copy(update={"step_id": intent.step_id})


def done(journal: Journal | None, record: Record) -> Record:
    """The outcome, durably; when it cannot be written the intent stays open and the next run closes it from the live state."""
    boundary("acted")
    if journal is None:
        return record
    try:
        journal.outcome(record)
    except Exception as exc:
        return record.model_copy(update={"detail": f"{record.detail} (outcome not recorded: {aws.describe_error(exc)}; "
                                                   "the next run closes its open intent from the live state)".lstrip()})
    boundary("recorded")
    return record


def failed(journal: Journal | None, record: Record, exc: BaseException, detail: str = "") -> Record:
    """A step whose AWS call failed: its outcome ``failed`` with the error (or ``detail``)."""
    return done(journal, record.model_copy(update={"after": None, "status": "failed", "detail": detail or aws.describe_error(exc)}))


def take_steps(system: System, plan: Plan, appliers: dict[str, Applier], approval: Approval, identity: Identity, run_id: str | None,
               *, undo_on_failure: bool | tuple[str, ...]) -> tuple[list[Record], bool]:
    """Every action of the plan in order, each as intent -> act -> outcome. On a failure: ``undo_on_failure`` undoes the
    applied ones in reverse (each undo a step of its own) and attempts no more; otherwise the others still run (independent
    fixes); a tuple of kinds: those kinds are all or nothing together (a failure of one undoes the applied ones of those
    kinds and attempts no more of them), the other kinds independent. A lost lease stops at once, undoing nothing (another run holds the resources now). Returns (records, ok)."""
    journal = active(run_id)
    plan_id = journal.open_plan(plan, approval) if journal is not None and len(plan.actions) > 1 else None
    records, ok = _take(journal, system, plan, appliers, approval, identity, run_id, undo_on_failure)
    if plan_id:
        try:
            journal.close_plan(plan_id, plan.actions[0].resource)  # type: ignore[union-attr]
        except Exception as exc:  # a lost lease, or unreachable: left open, the next run finds each step's outcome and closes it
            _log.warning("plan %s left open (%s): the next run of %s closes it", plan_id, aws.describe_error(exc), plan.runbook)
    return records, ok


def _take(journal: Journal | None, system: System, plan: Plan, appliers: dict[str, Applier], approval: Approval, identity: Identity,
          run_id: str | None, undo_on_failure: bool | tuple[str, ...]) -> tuple[list[Record], bool]:
    base = dict(runbook=plan.runbook, system=plan.system, flow_run_id=run_id, approver=approval.approver,
                approved_via=approval.via, caller_arn=identity.arn, plan_fingerprint=plan.fingerprint)
    records: list[Record] = []
    applied: list[Action] = []
    stopped = False  # a step of the all-or-nothing kinds failed: the rest of those kinds are not attempted

    def together(kind: str) -> bool:
        return undo_on_failure is True or (isinstance(undo_on_failure, tuple) and kind in undo_on_failure)

    def fail(i: int, a: Action, why: str) -> list[Record]:
        """After step i (of an all-or-nothing kind) failed: the rest of its kind not attempted, the applied ones undone."""
        rest = [r for r in plan.actions[i + 1:] if together(r.kind)]
        out = [Record(**base, resource=r.resource, kind=r.kind, before=r.current, after=None, status="not-attempted", detail=why)
               for r in rest] if undo_on_failure is True else []
        out += undo_applied(journal, system, appliers, [x for x in applied if together(x.kind)], base, a.resource)
        applied[:] = [x for x in applied if not together(x.kind)]
        return out

    for i, a in enumerate(plan.actions):
        rec = Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=a.target, status="applied")
        if stopped and together(a.kind):
            records.append(rec.model_copy(update={"after": None, "status": "not-attempted", "detail": "an earlier action of its kind failed"}))
            continue
        try:
            rec = intend(journal, rec, "applied")
        except statestore.LeaseLost as exc:
            records += [Record(**base, resource=r.resource, kind=r.kind, before=r.current, after=None, status="not-attempted",
                               detail=f"{exc}; stopped here, nothing undone") for r in plan.actions[i:]]
            return records, False
        except Exception as exc:  # the intent could not be written (throttled, unreachable): the call is not made
            records.append(rec.model_copy(update={"after": None, "status": "not-attempted",
                                                  "detail": f"its intent could not be written ({aws.describe_error(exc)}); not attempted"}))
            if not together(a.kind):
                continue
            records += fail(i, a, "an earlier action could not be attempted")
            if undo_on_failure is True:
                return records, False
            stopped = True
            continue
        try:
            appliers[a.kind].apply(system, a.resource, a.target)
        except Exception as exc:
            records.append(failed(journal, rec, exc))
            if not together(a.kind):  # recorded and reported; the other fixes are independent
                continue
            records += fail(i, a, "an earlier action failed")
            if undo_on_failure is True:
                return records, False
            stopped = True
            continue
        records.append(done(journal, rec))
        applied.append(a)
    return records, bool(records) and all(r.status == "applied" for r in records)


def apply_plan(system: System, plan: Plan, appliers: dict[str, Applier], approval: Approval, run_id: str | None,
               identity: Identity) -> tuple[list[Record], bool]:
    """All or nothing: a failure undoes what was applied. Returns (records, ok)."""
    return take_steps(system, plan, appliers, approval, identity, run_id, undo_on_failure=True)


def apply_each(system: System, plan: Plan, appliers: dict[str, Applier], approval: Approval, identity: Identity, run_id: str) -> list[Record]:
    """Independent fixes: a failure is recorded (the run ends failed) and the others still run; nothing is undone."""
    return take_steps(system, plan, appliers, approval, identity, run_id, undo_on_failure=False)[0]


def undo_applied(journal: Journal | None, system: System, appliers: dict[str, Applier], applied: list[Action],
                 base: dict[str, Any], failed_resource: str) -> list[Record]:
    out = []
    for a in reversed(applied):
        undo = Record(**base, resource=a.resource, kind=a.kind, before=a.target, after=a.current, status="undone",
                      detail=f"compensating for the failure of {failed_resource}")
        try:
            if not a.reversible:
                raise RuntimeError("action is not reversible")
            undo = intend(journal, undo, "undone")
            appliers[a.kind].apply(system, a.resource, a.current)
            out.append(done(journal, undo))
        except Exception as undo_exc:  # its intent (when written) is closed with this outcome
            left = undo.model_copy(update={"after": a.target, "status": "undo-failed", "detail": f"left at {a.target}: {aws.describe_error(undo_exc)}"})
            out.append(done(journal, left) if left.step_id else left)
    return out


# --- after a kill: close the steps a run left open ----------------------------------------------


def recover(system: System, runbook: str, appliers: dict[str, Applier], run_id: str, carried: list[Action] | None = None) -> list[Finding]:
    """Close every step left open on ``system`` by a stopped run (of this runbook, or of another whose kind of step this one
    reads: the same capacity, the same alias) from the live state (see the module's docstring). A step whose resource a
    live run holds refuses the run when the step is this runbook's (planning without its outcome could repeat it); another
    runbook's is left to its run, and a plan of this run that touches the resource refuses at its lease (``Journal.take``)."""
    findings: list[Finding] = []
    items = statestore.open_intents(system)
    for intent in [i for i in items if i["kind"] != PLAN]:
        resource, kind, step_id = intent["resource"], intent["kind"], intent["step_id"]
        step = appliers.get(kind)
        if step is None:  # another runbook's kind of step: its own next run closes it (a run that would act on it refuses)
            if intent.get("runbook") == runbook:
                findings.append(Finding(check="open-intent", resource=resource, status=Status.WARN,
                                        summary=f"{step_id}: an open {kind} step this version of {runbook} cannot read; look at it"))
            continue
        journal = Journal(system, runbook, run_id)
        try:
            journal.take([resource], check_open=False)
        except Refused as exc:
            if intent.get("runbook") == runbook:  # planning now would use records without that step's outcome
                raise Refused(f"{resource} has an open step ({step_id}) and a live run holds it: {exc}; nothing was changed") from None
            findings.append(Finding(check="open-intent", resource=resource, status=Status.OK,  # its own run finishes it;
                                    summary=f"{step_id} is being taken by a live run ({exc}); left to it"))  # a plan on it refuses
            continue
        try:
            target, start = intent.get("after"), intent.get("before")
            try:
                reached, now = step.at_target(system, resource, str(start), str(target))
            except Exception as exc:  # gone, or unreachable: left open (a plan on it refuses); the run goes on
                findings.append(Finding(check="open-intent", resource=resource, status=Status.WARN, summary=(
                    f"{step_id}: an open {kind} step whose state could not be read ({aws.describe_error(exc)}); left open: "
                    "look at it (a plan that touches it refuses until a run can read it)")))
                continue
            who = f"run {intent.get('flow_run_id')} ({intent.get('approver') or '?'})"
            if reached:
                status, detail, level = intent.get("on_success", "applied"), f"{who} took this step and stopped before recording it; found at its target by run {run_id}", Status.OK
            elif now == start:
                status, detail, level = "abandoned", f"{who} stopped before taking this step; found unchanged by run {run_id}", Status.OK
            else:
                status, detail, level = "abandoned", (f"{who} stopped around this step; found at {now}, neither {start} nor {target}: "
                                                      "changed since by someone else; look at it"), Status.WARN
            rec = Record(**{k: v for k, v in intent.items() if k in Record.model_fields and k not in ("status", "detail", "at", "os_user", "host")},
                         status=status, detail=detail)
            # reached: the value read now (a target that only names the change, such as a rotation's new version, is not one)
            rec = rec.model_copy(update={"after": None if status == "abandoned" else now})
            journal.outcome(rec)
            findings.append(Finding(check="open-intent", resource=resource, status=level, summary=f"{step_id}: {status}: {detail}"))
        finally:
            journal.release()
    for plan in [i for i in items if i["kind"] == PLAN and i.get("runbook") == runbook]:
        findings += finish_plan(system, runbook, appliers, run_id, plan, carried if carried is not None else [])
    return findings


def finish_plan(system: System, runbook: str, appliers: dict[str, Applier], run_id: str, plan: dict[str, Any],
                carried: list[Action]) -> list[Finding]:
    """A plan of several steps a killed run left open (its steps' own intents are closed by now). When it took some of its
    steps, the ones it never took go into ``carried`` (planned again by this run, behind its own approval) if they still
    read as planned; a run that took none, or that failed and undid, leaves nothing to carry."""
    actions = [Action(**a) for a in plan["actions"]]
    journal = Journal(system, runbook, run_id)
    try:
        journal.take(sorted({a.resource for a in actions}), check_open=False)
    except Refused as exc:  # planning now could leave its untaken steps behind: wait for it (alive) or its lease to lapse
        raise Refused(f"plan {plan['plan_fingerprint']} of run {plan['flow_run_id']} is still open and a live run holds it: {exc}; "
                      "nothing was changed") from None
    try:
        words = {(r["kind"], r["resource"]): r["status"] for r in reversed(statestore.read_records(system))
                 if r.get("flow_run_id") == plan["flow_run_id"] and r.get("plan_fingerprint") == plan["plan_fingerprint"]}
        taken = [a for a in actions if words.get((a.kind, a.resource)) in ("applied", "verified")]
        if not taken or any(w in ("failed", "undone", "undo-failed") for w in words.values()):
            left: list[Action] = []
        else:
            left = [a for a in actions if words.get((a.kind, a.resource)) in (None, "abandoned", "not-attempted")]
        who = f"run {plan['flow_run_id']} ({plan.get('approver') or '?'})"
        out, again = [], []
        for a in left:
            step = appliers.get(a.kind)
            now = step.read(system, a.resource) if step is not None else None
            if now == a.current:
                again.append(a.model_copy(update={"evidence": f"left by {who}, killed after {len(taken)} of {len(actions)} steps of "
                                                              f"plan {plan['plan_fingerprint']}: {a.evidence}"}))
            else:
                out.append(Finding(check="open-plan", resource=a.resource, status=Status.WARN, summary=(
                    f"{who} was killed before this step of plan {plan['plan_fingerprint']} ({a.kind} {a.current} -> {a.target}); "
                    f"it reads {now} now, not {a.current}: not planned again; look at it")))
        if again:
            out.append(Finding(check="open-plan", resource=system.name, status=Status.OK, summary=(
                f"{who} was killed after {len(taken)} of {len(actions)} steps of plan {plan['plan_fingerprint']}; "
                f"{len(again)} step(s) it never took are planned again: " + ", ".join(f"{a.resource} {a.kind}" for a in again))))
        carried += again
        journal.close_plan(plan["step_id"], plan["resource"])
        return out
    finally:
        journal.release()
