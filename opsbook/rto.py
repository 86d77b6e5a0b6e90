"""A restore's RTO against the inventory's target (pure: the caller measures, this judges). Shared by the restore
runbooks (restore-table, restore-index), each with its own start and end points and its own words for them."""

from __future__ import annotations

from typing import Any

from opsbook.findings import Finding, Status

CHECK = "restore-rto"


def rto_finding(resource: str, seconds: float | None, target_minutes: float | None, sandbox: bool, *, span: str,
                sandbox_why: str, details: dict[str, Any] | None = None, unmeasured: str = "") -> Finding:
    """``seconds`` of ``span`` ("from the restore's start to usable data") against ``target_minutes``: OK within it
    (exactly at it included), WARN over it, OK without a target (said so). Sandbox figures are labelled as such
    (``sandbox_why``: why they are no production figure). ``seconds`` None: not measured (``unmeasured`` says why), UNKNOWN."""
    label = f"sandbox RTO ({sandbox_why}: not a production figure)" if sandbox else "RTO"
    extra = dict(details or {})
    if seconds is None:
        return Finding(check=CHECK, resource=resource, status=Status.UNKNOWN,
                       details={"target_s": target_minutes * 60 if target_minutes else None, "sandbox": sandbox, **extra},
                       summary=f"{label}: not measured ({unmeasured or 'no start or end known'})"
                               + (f"; target {target_minutes:g} min" if target_minutes else ""))
    seconds = max(0.0, seconds)
    if target_minutes is None:
        return Finding(check=CHECK, resource=resource, status=Status.OK, value=round(seconds, 1),
                       details={"target_s": None, "sandbox": sandbox, **extra},
                       summary=f"{label}: {seconds:.1f} s {span}; the inventory has no target")
    ok = seconds <= target_minutes * 60
    return Finding(check=CHECK, resource=resource, status=Status.OK if ok else Status.WARN, value=round(seconds, 1),
                   details={"target_s": target_minutes * 60, "sandbox": sandbox, **extra},
                   summary=f"{label}: {seconds:.1f} s {span}; target {target_minutes:g} min" + ("" if ok else ": over the target"))
