"""Escalation for a suspected breach (pure: inventory and findings in, the level and the line to say out).

The level is data: the inventory marks it ``breach: true`` on one ``escalation`` entry (000: L4 CTO,
"보안 침해 의심"; 001: security, "보안 담당자 + 경영진"; 002: security, "보안팀과 레벨 3에 동시 통보"; 003: Lv3,
"데이터 유출, 보안 사고"). Which findings are a suspected breach is the runbook's to say (its ``BREACH_CHECKS``:
IAM or exposure checks), at CRIT only; security-incident is one by definition. Everything else keeps the
escalation it had (emergency-check's priority rules are not touched).
"""

from __future__ import annotations

from collections.abc import Iterable

from opsbook.findings import Finding, Status
from opsbook.inventory import EscalationLevel, System

CHECK = "breach-escalation"
WHY = "suspected breach"


def breach_level(system: System) -> EscalationLevel | None:
    """The escalation entry marked ``breach: true`` (at most one: the inventory refuses more)."""
    return next((e for e in system.escalation if e.breach), None)


def breach_line(level: EscalationLevel, why: str = WHY) -> str:
    """How a report names it: ``escalate to L4: CTO (respond within 120 min): suspected breach``."""
    return f"escalate to {level.level}: {level.who} (respond within {level.respond_within_minutes} min): {why}"


def breach_findings(findings: Iterable[Finding], checks: Iterable[str]) -> list[Finding]:
    """The CRIT findings of the breach checks (WARN, UNKNOWN and OK never escalate)."""
    wanted = set(checks)
    return [f for f in findings if f.status is Status.CRIT and f.check in wanted]


def breach_escalation(system: System, findings: Iterable[Finding], checks: Iterable[str]) -> list[Finding]:
    """One CRIT finding naming whom to call when any breach check is CRIT, else none. An inventory that marks no level
    says so and names its most urgent entry instead (never a silent fall back to the first level)."""
    hits = breach_findings(findings, checks)
    if not hits:
        return []
    what = "; ".join(f"{f.check} {f.resource}" for f in hits[:5]) + (f" (+{len(hits) - 5} more)" if len(hits) > 5 else "")
    level = breach_level(system)
    if level is not None:
        summary = f"{breach_line(level)} ({what})"
    elif system.escalation:
        urgent = min(system.escalation, key=lambda e: e.respond_within_minutes)
        summary = (f"{WHY} ({what}): the inventory marks no escalation level for a breach (breach: true); its most urgent is "
                   f"{urgent.level}: {urgent.who} ({urgent.respond_within_minutes} min): escalate there and mark a breach level")
    else:
        summary = f"{WHY} ({what}): the inventory names no escalation levels: add one marked breach: true"
    return [Finding(check=CHECK, resource=system.name, status=Status.CRIT, value=len(hits), summary=summary[:600],
                    details={"escalation": level.model_dump() if level else None, "reason": WHY,
                             "findings": [f"{f.check} {f.resource}" for f in hits]})]
