"""backup-verify, judged (pure: no AWS, no Prefect, no clock; ``now`` is passed in): what was read -> a finding per
resource and check, each saying what to do, and the fixes the inventory asks for -> a plan."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.collect import judge_states
from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import System
from opsbook.mutation.core import Action, Identity, Plan, Record
from opsbook.snapshots import hours, iso_utc, judge_rds
from tasks.dynamodb import BACKUP_LOOKBACK_DAYS, TableBackups
from tasks.opensearch import DomainSnapshots
from tasks.s3 import NEVER_ENABLED, BucketProtection

RUNBOOK = "backup-verify"
PITR_MAX_LAG = timedelta(hours=1)  # LatestRestorableDateTime is normally about 5 minutes behind
PITR, BACKUP, VERSIONING = "dynamodb-pitr", "dynamodb-backup", "s3-versioning"  # action kinds


def missing_resource(check: str, name: str, named: bool, what: str) -> Finding:
    return Finding(check=check, resource=name, status=Status.CRIT,
                   summary=f"{what} named in the inventory does not exist" if named else f"{what} not found (found by its tags)")


def judge_pitr(s: TableBackups, now: datetime) -> Finding:
    check = "dynamodb-pitr"
    if s.error:
        return unknown(check, s.table, s.error)
    bad = Status.CRIT if s.required else Status.WARN
    details = {"pitr": s.pitr, "latest_restorable": iso_utc(s.latest_restorable), "backup_required": s.required}
    if s.pitr == "ENABLED":
        lag = now - s.latest_restorable if s.latest_restorable else None
        if lag is not None and lag <= PITR_MAX_LAG:
            return Finding(check=check, resource=s.table, status=Status.OK, value=round(lag.total_seconds() / 60, 1), details=details,
                           summary=f"PITR enabled; restorable to {lag.total_seconds() / 60:.0f} min ago")
        behind = f"the latest restorable time is {hours(lag):.1f} h old" if lag is not None else "DescribeContinuousBackups gives no latest restorable time"
        return Finding(check=check, resource=s.table, status=bad, value=round(hours(lag), 1) if lag else None, details=details,
                       summary=f"PITR enabled but {behind} (more than {hours(PITR_MAX_LAG):g} h): a restore would lose recent writes; "
                               "check the table's status and AWS Health, and open an AWS support case")
    if s.pitr == "DISABLED":
        todo = ("backup-verify enables it (fix=true, with approval)" if s.required else
                f"enable it (aws dynamodb update-continuous-backups --table-name {s.table} --point-in-time-recovery-specification "
                "PointInTimeRecoveryEnabled=true) or set backup_required: true in the inventory so that backup-verify does")
        return Finding(check=check, resource=s.table, status=bad, details=details,
                       summary=f"PITR disabled: the table cannot be restored to a point in time; {todo}")
    return Finding(check=check, resource=s.table, status=Status.UNKNOWN, details=details,
                   summary=f"DescribeContinuousBackups returned PITR status {s.pitr!r}")


def judge_on_demand(s: TableBackups, now: datetime) -> Finding:
    check = "dynamodb-on-demand-backup"
    if s.error:
        return unknown(check, s.table, s.error)
    age = hours(now - s.latest_backup) if s.latest_backup else None
    details = {"latest_backup": iso_utc(s.latest_backup), "limit_hours": s.max_age_hours, "backup_required": s.required}
    if age is not None and age <= s.max_age_hours:
        return Finding(check=check, resource=s.table, status=Status.OK, value=round(age, 1), details=details,
                       summary=f"latest on-demand backup {age:.1f} h old (limit {s.max_age_hours:g} h)")
    what = f"latest on-demand backup {age:.1f} h old" if age is not None else f"no on-demand backup in the last {BACKUP_LOOKBACK_DAYS} days"
    todo = ("backup-verify takes one now (fix=true, with approval); schedule daily backups (AWS Backup plan)" if s.required else
            f"take one (aws dynamodb create-backup --table-name {s.table} --backup-name ...) or set backup_required: true in the inventory")
    return Finding(check=check, resource=s.table, status=Status.CRIT if s.required else Status.WARN,
                   value=round(age, 1) if age is not None else None, details=details,
                   summary=f"{what} (limit {s.max_age_hours:g} h); {todo}")


def table_findings(s: TableBackups, now: datetime) -> list[Finding]:
    if s.missing:
        return [missing_resource("dynamodb-table", s.table, s.named, "table")]
    return [judge_pitr(s, now), judge_on_demand(s, now)]


def judge_versioning(s: BucketProtection) -> Finding:
    """Where the inventory requires versioning (or replication, which needs it) anything but Enabled is CRIT.
    Elsewhere the state is reported as OK with the facts: the inventory says the bucket's objects can be
    rebuilt (a front end from git, reports regenerated), and a WARN every week on such a bucket would only
    teach people to ignore WARN."""
    check = "s3-versioning"
    if s.error:
        return unknown(check, s.bucket, s.error)
    details = {"versioning": s.versioning, "versioning_required": s.versioning_required, "replication_required": s.replication_required}
    state = "never enabled" if s.versioning == NEVER_ENABLED else s.versioning
    if s.versioning == "Enabled":
        return Finding(check=check, resource=s.bucket, status=Status.OK, summary="versioning Enabled", details=details)
    if s.needs_versioning:
        why = "versioning_required" if s.versioning_required else "replication_required (replication needs versioning)"
        return Finding(check=check, resource=s.bucket, status=Status.CRIT, details=details,
                       summary=f"versioning {state} but the inventory says {why}: an overwritten or deleted object cannot be recovered; "
                               "backup-verify enables it (fix=true, with approval; it can only be Suspended afterwards, never removed)")
    return Finding(check=check, resource=s.bucket, status=Status.OK, details=details,
                   summary=f"versioning {state}; not required by the inventory (set versioning_required: true if its objects cannot be rebuilt)")


def judge_replication(s: BucketProtection) -> Finding:
    check = "s3-replication"
    if s.replication_error:
        return unknown(check, s.bucket, s.replication_error)
    rules = s.replication_rules or []
    enabled = [r for r in rules if r.get("Status") == "Enabled"]
    dests = sorted({(r.get("Destination") or {}).get("Bucket", "?").removeprefix("arn:aws:s3:::") for r in enabled})
    details = {"role": s.replication_role, "rules": len(rules), "enabled_rules": len(enabled), "destinations": dests}
    todo = ("configure it: aws s3api put-bucket-replication --bucket " + s.bucket + " --replication-configuration file://replication.json "
            "(a versioned destination bucket in another region and an IAM role S3 can assume); not fixed automatically")
    if not rules:
        return Finding(check=check, resource=s.bucket, status=Status.CRIT, details=details,
                       summary=f"no replication configuration (ReplicationConfigurationNotFoundError): objects are not copied to another region; {todo}")
    if not enabled:
        return Finding(check=check, resource=s.bucket, status=Status.CRIT, details=details,
                       summary=f"replication configured but none of its {len(rules)} rule(s) is Enabled; enable a rule (not fixed automatically)")
    return Finding(check=check, resource=s.bucket, status=Status.OK, details=details,
                   summary=f"replicating to {', '.join(dests)} ({len(enabled)} enabled rule(s))")


def bucket_findings(s: BucketProtection) -> list[Finding]:
    if s.missing:
        return [missing_resource("s3-bucket", s.bucket, s.named, "bucket")]
    return [judge_versioning(s)] + ([judge_replication(s)] if s.replication_required and not s.error else [])


def judge_snapshots(s: DomainSnapshots, now: datetime) -> Finding:
    check = "opensearch-snapshot"
    if s.error:
        return unknown(check, s.domain, s.error)
    details = {"repository": s.repository, "repository_type": s.repository_type, "snapshots": len(s.snapshots), "limit_hours": s.max_age_hours}
    take = (f"take one (PUT _snapshot/{s.repository}/snapshot_YYYYMMDD) and schedule them (a Snapshot Management policy); "
            "not fixed automatically")
    if not s.repository_exists:
        return Finding(check=check, resource=s.domain, status=Status.CRIT, details=details,
                       summary=f"snapshot repository {s.repository} is not registered: register it (PUT _snapshot/{s.repository} with type s3, "
                               f"the snapshot bucket and the snapshot role), then {take}")
    good = [x for x in s.snapshots if x.state == "SUCCESS" and x.at]
    newest = s.snapshots[0] if s.snapshots else None
    if not good:
        seen = f"{len(s.snapshots)} snapshot(s), the newest {newest.name} {newest.state}" if newest else "no snapshot at all"
        return Finding(check=check, resource=s.domain, status=Status.CRIT, details=details,
                       summary=f"no successful snapshot in {s.repository} ({seen}); {take}")
    latest = good[0]
    age = hours(now - latest.at)
    details.update(latest=latest.name, latest_at=iso_utc(latest.at))
    if age > s.max_age_hours:
        return Finding(check=check, resource=s.domain, status=Status.CRIT, value=round(age, 1), details=details,
                       summary=f"latest successful snapshot {latest.name} in {s.repository} is {age:.1f} h old (limit {s.max_age_hours:g} h); {take}")
    if newest is not None and newest is not latest and newest.state in ("FAILED", "PARTIAL"):
        return Finding(check=check, resource=s.domain, status=Status.WARN, value=round(age, 1), details=details,
                       summary=f"latest successful snapshot {latest.name} is {age:.1f} h old, but the newest attempt {newest.name} is "
                               f"{newest.state}: check the cluster health and the snapshot role before the next one is due")
    return Finding(check=check, resource=s.domain, status=Status.OK, value=round(age, 1), details=details,
                   summary=f"latest successful snapshot {latest.name} in {s.repository} is {age:.1f} h old (limit {s.max_age_hours:g} h)")


def judge(states: dict[str, Any], now: datetime) -> list[Finding]:
    """A finding per resource and check; a read task that failed as a whole is UNKNOWN with its reason."""
    judges: dict[str, Any] = {"dynamodb": lambda s: table_findings(s, now), "s3": bucket_findings,
                              "opensearch": lambda s: [judge_snapshots(s, now)], "rds": lambda s: [judge_rds(s, now)]}
    return judge_states(states, judges, lambda name: f"{name}-backups")


def nothing_checked(inv: System) -> Finding:
    return Finding(check="coverage", resource=inv.name, status=Status.WARN, value=0,
                   summary="the inventory names no DynamoDB table, S3 bucket, OpenSearch snapshot repository "
                           "or RDS instance (and discovery found none): nothing was verified")


def backup_name(table: str, now: datetime) -> str:
    """opsbook-<table>-<UTC timestamp> (DynamoDB allows [a-zA-Z0-9_.-], 3-255 characters)."""
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"opsbook-{table[: 255 - 9 - len(stamp)]}-{stamp}"


def table_actions(t: TableBackups, now: datetime, unchanged: list[str]) -> list[Action]:
    """A required table: enable PITR where it is off, take a backup where the latest is too old (what is fine: ``unchanged``)."""
    wanted: list[Action] = []
    if t.pitr == "DISABLED":
        wanted.append(Action(kind=PITR, resource=t.table, current="DISABLED", target="ENABLED", iam_action="dynamodb:UpdateContinuousBackups",
                             evidence="backup_required; PITR off: no point-in-time restore (undo: disable PITR, which drops the restore window)"))
    elif t.pitr == "ENABLED":
        unchanged.append(f"{t.table}: PITR ENABLED")
    age = (now - t.latest_backup).total_seconds() / 3600 if t.latest_backup else None
    if age is None or age > t.max_age_hours:
        wanted.append(Action(kind=BACKUP, resource=t.table, current=iso_utc(t.latest_backup),
                             target=backup_name(t.table, now), iam_action="dynamodb:CreateBackup",
                             evidence=(f"backup_required; latest on-demand backup {age:.1f} h old" if age is not None else
                                       f"backup_required; no on-demand backup in {BACKUP_LOOKBACK_DAYS} days") + f" (limit {t.max_age_hours:g} h); "
                                      "a backup only adds a restore point (undo: delete it)"))
    else:
        unchanged.append(f"{t.table}: on-demand backup {age:.1f} h old")
    return wanted


def decide(inv: System, identity: Identity, tables: Iterable[TableBackups], buckets: Iterable[BucketProtection], fix: bool, now: datetime) -> Plan:
    """The fixes the inventory asks for (required tables and buckets); unreadable or not required: no action."""
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    wanted: list[Action] = []
    for t in tables:
        if not t.error and t.required:
            wanted += table_actions(t, now, plan.unchanged)
    for b in buckets:
        if b.error or not b.needs_versioning:
            continue
        if b.versioning == "Enabled":
            plan.unchanged.append(f"{b.bucket}: versioning Enabled")
            continue
        wanted.append(Action(kind=VERSIONING, resource=b.bucket, current=b.versioning or "?", target="Enabled", iam_action="s3:PutBucketVersioning",
                             reversible=False,
                             evidence=("versioning_required" if b.versioning_required else "replication_required (replication needs versioning)")
                                      + "; NOT reversible: once enabled, versioning can only be Suspended (old versions stay, and are billed)"))
    plan.propose(wanted, fix)
    plan.notes.append("S3 replication, OpenSearch snapshots, RDS snapshots and resources the inventory does not require are never "
                      "changed by this runbook: their findings say what to do")
    return plan


def fix_what(r: Record) -> str:
    return {PITR: "enable PITR", VERSIONING: "enable versioning", BACKUP: f"on-demand backup {r.after}"}.get(r.kind, r.kind)


def fixed_check(check: str) -> bool:
    """The checks a fix changes: their findings are replaced by the re-read ones."""
    return check.startswith(("dynamodb-", "s3-"))
