"""daily-health's own judging (pure).

The component rules are opsbook.components' (shared with emergency-check and a mutation's verify step);
the run's status is the worst finding (opsbook.findings.overall: no findings at all is UNKNOWN), and an
inventory that resolves to no resources is CRIT (opsbook.resources.coverage, run by tasks.health). What
only daily-health decides is how its run ends.
"""

from __future__ import annotations

from opsbook.findings import Status

# Suspected breach at CRIT (opsbook.escalation): failed logins beyond failed_logins_crit are an attack on the accounts
# (001 보안 인시던트 대응: 의심스러운 활동 감지 시). Add a public-exposure check here when daily-health gains one.
BREACH_CHECKS = frozenset({"failed-logins"})


def ends_failed(status: Status) -> bool:
    """CRIT ends the run Failed, with its report saved (the schedule's history shows the bad mornings);
    WARN and UNKNOWN complete, their report saying why."""
    return status is Status.CRIT
