"""opsbook.mutation.fixes: independent fixes read back (no AWS, no Prefect)."""

from __future__ import annotations

from opsbook.findings import Finding, Status
from opsbook.mutation.core import Record
from opsbook.mutation.fixes import after_fixes, fix_findings


def rec(resource: str, status: str = "applied", after: str | None = "on") -> Record:
    return Record(runbook="rb", system="s", resource=resource, kind="k", before="off", after=after, status=status)


def test_fix_findings():
    records = [rec("a", "verified"), rec("b"), rec("c", "failed", None)]
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
