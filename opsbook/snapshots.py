"""Backup age, judged the same way wherever it is checked: hours, times in UTC, and the RDS automated-snapshot check
(read by tasks.rds; judged for backup-verify and maintenance-audit alike). Pure: no AWS, no clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from opsbook.findings import Finding, Status, unknown

if TYPE_CHECKING:
    from tasks.rds import RdsSnapshots


def hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def iso_utc(dt: datetime | None) -> str:
    """ISO time in UTC, or "none" (the value a backup action compares for drift)."""
    return dt.astimezone(timezone.utc).isoformat() if dt is not None else "none"


def judge_rds(s: RdsSnapshots, now: datetime) -> Finding:
    check = "rds-snapshot"
    if s.error:
        return unknown(check, s.instance, s.error)
    if s.missing:
        return Finding(check=check, resource=s.instance, status=Status.CRIT,
                       summary="the RDS instance named in the inventory does not exist (DBInstanceNotFound); check the identifier and region")
    details = {"status": s.status, "retention_days": s.retention_days, "latest": s.latest_id, "latest_at": iso_utc(s.latest),
               "automated_snapshots": s.count, "limit_hours": s.max_age_hours}
    disabled = s.retention_days == 0
    enable = (f"automated backups are disabled (BackupRetentionPeriod 0): enable them (aws rds modify-db-instance --db-instance-identifier "
              f"{s.instance} --backup-retention-period 7 --apply-immediately)")
    if s.latest is None:
        why = enable if disabled else "check the instance's backup window and its events (aws rds describe-events)"
        return Finding(check=check, resource=s.instance, status=Status.CRIT, details=details,
                       summary=f"no automated snapshot; {why}; not fixed automatically")
    age = hours(now - s.latest)
    if age > s.max_age_hours:
        why = enable if disabled else "the daily automated backup did not run: check the backup window, the instance's status and its events"
        return Finding(check=check, resource=s.instance, status=Status.CRIT, value=round(age, 1), details=details,
                       summary=f"latest automated snapshot {s.latest_id} is {age:.1f} h old (limit {s.max_age_hours:g} h); {why}")
    return Finding(check=check, resource=s.instance, status=Status.OK, value=round(age, 1), details=details,
                   summary=f"latest automated snapshot {s.latest_id} is {age:.1f} h old (limit {s.max_age_hours:g} h; retention {s.retention_days} d)")
