"""opsbook.mutation.fixes: independent fixes read back (no AWS, no Prefect)."""

from __future__ import annotations

from opsbook.findings import Finding, Status
from opsbook.mutation.core import Record
from opsbook.mutation.fixes import after_fixes, applied_items, fix_findings, wait_verified


def rec(resource: str, status: str = "applied", after: str | None = "on") -> Record:
    return Record(runbook="rb", system="s", resource=resource, kind="k", before="off", after=after, status=status)


def test_wait_verified_settles_or_times_out():
    answers = iter([None, True])
    seen = wait_verified([("k", "a", "on")], lambda k, r, t: (next(answers), "read"), timeout_s=5, poll_s=0)
    assert seen == {("k", "a"): (True, "read")}
    assert wait_verified([("k", "a", "on")], lambda k, r, t: (False, "off"), timeout_s=5, poll_s=0) == {("k", "a"): (False, "off")}
    calls = []
    patient = wait_verified([("k", "a", "on")], lambda k, r, t: calls.append(1) or (False, "off"), timeout_s=0.05, poll_s=0.01, patient=True)
    assert patient == {("k", "a"): (False, "off")} and len(calls) > 1  # read again until the timeout

    def boom(k, r, t):
        raise RuntimeError("denied")

    assert wait_verified([("k", "a", "on")], boom, timeout_s=5, poll_s=0)[("k", "a")] == (False, "could not read it back (RuntimeError: denied)")


def test_applied_items_and_fix_findings():
    records = [rec("a", "verified"), rec("b"), rec("c", "failed", None)]
    assert applied_items(records) == [("k", "b", "on")]
    assert [(f.status, f.summary) for f in fix_findings(records, "fix", lambda r: f"set {r.resource}")] == [
        (Status.OK, "set a: verified"), (Status.WARN, "set b: applied"), (Status.CRIT, "set c: failed")]


def test_after_fixes_replaces_the_fixed_resources_or_says_the_reread_failed():
    old = [Finding(check="x", resource="a", status=Status.WARN, summary="before"), Finding(check="y", resource="a", status=Status.OK, summary="kept"),
           Finding(check="x", resource="b", status=Status.WARN, summary="not fixed")]
    fresh = [Finding(check="x", resource="a", status=Status.OK, summary="after")]
    out = after_fixes(old, {"k": ["state"]}, {"k": ["a"], "other": ["z"]}, lambda st: fresh, lambda c: c == "x")
    assert [f.summary for f in out] == ["kept", "not fixed", "after"]
    out = after_fixes(old, {"k": RuntimeError("throttled")}, {"k": ["a"]}, lambda st: fresh, lambda c: c == "x")
    assert out[:3] == old and (out[3].check, out[3].resource, out[3].status) == ("k-reread", "a", Status.UNKNOWN)
