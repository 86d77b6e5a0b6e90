"""Independent fixes: each action only adds protection and none depends on another, so a failure is recorded and the
rest still run (nothing is undone, unlike an all-or-nothing plan); each applied fix is read back until it shows its target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.mutation.core import Identity, Record
from opsbook.mutation.session import MutationSession

# (kind, resource, target) -> (True: the target is read back; None: not yet, keep waiting; False: not there, what was read)
Check = Callable[[str, str, str], tuple[bool | None, str]]




def fix_findings(records: list[Record], check: str, what: Callable[[Record], str]) -> list[Finding]:
    """A finding a fix: OK verified, WARN applied but not read back yet, CRIT failed."""
    out = []
    for r in records:
        status = {"verified": Status.OK, "applied": Status.WARN}.get(r.status, Status.CRIT)
        out.append(Finding(check=check, resource=r.resource, status=status, summary=f"{what(r)}: {r.status}; {r.detail}".rstrip("; ")))
    return out


def after_fixes(findings: list[Finding], after: dict[str, Any], fixed: dict[str, list[str]],
                judge: Callable[[dict[str, Any]], list[Finding]], replaced: Callable[[str], bool]) -> list[Finding]:
    """The report shows the state after the fixes: for each kind re-read (``after``), the findings of its fixed resources
    whose check is ``replaced`` give way to the re-read ones; a failed re-read keeps what was read before and says so."""
    for kind, resources in fixed.items():
        if kind not in after:
            continue
        if isinstance(after[kind], BaseException):
            findings = findings + [unknown(f"{kind}-reread", r, aws.describe_error(after[kind])) for r in resources]
        else:
            fresh = judge({kind: after[kind]})
            findings = [f for f in findings if not (f.resource in resources and replaced(f.check))] + fresh
    return findings


def act(session: MutationSession, identity: Identity, timeout_s: float) -> list[Record]:
    """After approval: the fixes through the mechanism (leases, the drift check, each fix intent -> act -> outcome; a
    failure does not stop the others, nothing is undone: each fix only adds protection), each read back until settled
    (at most ``timeout_s``, and the inventory's settle_timeout_s). The records."""
    done, _ = session.act(identity, undo_on_failure=False)
    return session.settle(done, min(timeout_s, session.inv.mutations.settle_timeout_s))


def conclude(session: MutationSession, done: list[Record], after: dict[str, Any], fixed: dict[str, list[str]],
             judge: Callable[[dict[str, Any]], list[Finding]], replaced: Callable[[str], bool], check: str, what: Callable[[Record], str]) -> None:
    """Record the fixes; the report shows the state after them (``after_fixes``) and a finding a fix; the outcome; notify."""
    session.record(done)
    session.report.findings = after_fixes(session.report.findings, after, fixed, judge, replaced)
    session.report.findings += fix_findings(done, check, what)
    session.done(all(r.status != "failed" for r in done))
    session.notify(session.report.outcome, [f"{r.resource}: {r.kind} {r.before} -> {r.after}: {r.status} {r.detail}".strip() for r in done])
