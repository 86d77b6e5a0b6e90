"""Verifying changes: wait (bounded, with progress) until each resource reads back as it should, and say so in the records."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.mutation.core import Record


def wait_until(label: str, checks: dict[str, Callable[[], tuple[bool, str]]], timeout_s: float, poll_s: float = 2.0
               ) -> dict[str, tuple[bool, str, float]]:
    """Poll every check until it passes or ``timeout_s`` runs out; a Prefect progress artifact and a line on stderr.

    Returns resource -> (passed, last answer, seconds). A check that raises counts as not passed (its error is the answer)."""
    pending = dict(checks)
    out: dict[str, tuple[bool, str, float]] = {}
    why: dict[str, str] = {}
    started = time.monotonic()
    progress = create_progress_artifact(progress=0.0, description=f"{label}: waiting for {len(checks)} resource(s)")
    while pending:
        for res, check in list(pending.items()):
            try:
                ok, why[res] = check()
            except Exception as exc:  # read again next round; the last error is the answer at the end
                ok, why[res] = False, aws.describe_error(exc)
            if ok:
                out[res] = (True, why[res], round(time.monotonic() - started, 1))
                del pending[res]
        elapsed = time.monotonic() - started
        done = len(checks) - len(pending)
        update_progress_artifact(progress, progress=100.0 * min(1.0, max(done / max(len(checks), 1), elapsed / max(timeout_s, 0.001))))
        if pending:
            print(f"opsbook: {label}: {done}/{len(checks)} done after {elapsed:.0f}/{timeout_s:g} s; "
                  + "; ".join(f"{r}: {why.get(r, '...')}" for r in pending), file=sys.stderr)
        if not pending or elapsed >= timeout_s:
            break
        time.sleep(min(poll_s, max(0.0, timeout_s - elapsed)))
    for res in pending:
        out[res] = (False, why.get(res, "no answer"), round(time.monotonic() - started, 1))
    update_progress_artifact(progress, progress=100.0)
    return out


def wait_for_records(label: str, records: list[Record], check: Callable[[Record], Callable[[], tuple[bool, str]]], timeout_s: float,
                     not_yet: str, poll_s: float = 2.0, word: Callable[[Record, bool, str, float], str] | None = None) -> list[Record]:
    """``wait_until`` every applied record's check passes: those become ``verified`` ("read back after N s: ..."); the others stay
    ``applied`` with "not <not_yet> after N s: <last answer>; ..." (``not_yet`` says what is missing and what to do).
    ``word(record, settled, last answer, seconds)``: the record's detail, where the runbook says it better."""
    applied = [r for r in records if r.status == "applied"]
    shared = {r.resource for r in applied if sum(o.resource == r.resource for o in applied) > 1}

    def _key(r: Record) -> str:  # the resource, with the kind where one resource has two kinds of change
        return f"{r.resource} ({r.kind})" if r.resource in shared else r.resource

    seen = wait_until(label, {_key(r): check(r) for r in applied}, timeout_s, poll_s)
    out = []
    for r in records:
        if r.status != "applied":
            out.append(r)
            continue
        ok, what, secs = seen[_key(r)]
        detail = (word(r, ok, what, secs) if word is not None else f"read back after {secs:g} s: {what}" if ok
                  else not_yet.format(timeout=f"{timeout_s:g}", what=what))
        out.append(r.model_copy(update={"status": "verified" if ok else "applied", "detail": detail}))
    return out


def change_findings(check: str, records: list[Record]) -> list[Finding]:
    """One finding per change: OK verified, WARN applied but not confirmed, CRIT anything else (failed, undone, ...)."""
    status = {"verified": Status.OK, "applied": Status.WARN}
    return [Finding(check=check, resource=r.resource, status=status.get(r.status, Status.CRIT),
                    summary=f"{r.kind} {r.before} -> {r.after}: {r.status}; {r.detail}".rstrip("; ")) for r in records]
