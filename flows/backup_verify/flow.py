"""backup-verify: the weekly proof that the system's data can be restored.

Sources: 000 백업 및 복구 (on-demand backups, PITR, S3 versioning, cross-region
replication, OpenSearch snapshots to ``backup_repo``), 001 and 002 백업
(on-demand backups, replication check), 003 정기 점검 (RDS: 최근 자동 스냅샷).
The seeds' scripts take a backup of every table on each run; this runbook
checks first and changes only what falls short, behind the safe-mutation path.

Steps: confirm identity -> resolve the system's resources once (named and
tag-discovered, the set daily-health checks; a named table or bucket that does
not exist is reported once, CRIT, and not read further) -> read
concurrently (DynamoDB PITR and backups, S3 versioning and replication,
OpenSearch snapshots, RDS automated snapshots) -> judge (a finding per
resource and check, each saying what to do) -> plan the fixes -> (dry run ends
here) -> approve -> leases -> drift check -> act -> read back (verify) ->
record -> notify.

Fixes, for what the inventory requires (``backup_required`` tables,
``versioning_required`` / ``replication_required`` buckets): enable PITR, take
an on-demand backup ``opsbook-<table>-<UTC time>``, enable versioning (which
can only be Suspended afterwards, never undone). Everything else (replication,
snapshots, RDS, tables and buckets the inventory does not require) is a
finding with instructions. Each fix is independent and only adds protection,
so a failed one does not undo the others: it is recorded and the run fails.
Running again once everything is fixed plans nothing.

API calls: 2 a table (DescribeContinuousBackups, ListBackups pages), 1-2 a
bucket (GetBucketVersioning, GetBucketReplication where required), 2 HTTP
calls a snapshot repository, 1 + pages an RDS instance, pages of GetResources
for discovery + 1-2 a named resource discovery did not see, plus
the session's (identity, leases, records, SNS) and 3-4 a fix.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.backup_verify.judge import BACKUP, PITR, RUNBOOK, VERSIONING, decide, fix_what, fixed_check, judge, nothing_checked
from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import Status
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Applier, Identity, Plan
from opsbook.mutation.fixes import act, conclude
from opsbook.mutation.session import SESSION_TASKS, MutationSession, steps_policy
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SystemName
from opsbook.resources import Resolved, resolution_findings, resolve_tables_buckets, resolved_or_named
from tasks.dynamodb import TableBackups, backup_settled, backup_status, read_latest_backup, read_pitr, read_table_backups, set_pitr, take_backup
from tasks.opensearch import read_snapshots
from tasks.rds import read_rds_snapshots
from tasks.s3 import BucketProtection, read_bucket_protection, read_versioning, set_versioning

READ_DEADLINE_S = 120.0
VERIFY_TIMEOUT_S = 60.0  # on-demand backups are AVAILABLE within seconds whatever the table's size
APPLIERS = {
    PITR: Applier(read=read_pitr, apply=set_pitr),
    VERSIONING: Applier(read=read_versioning, apply=set_versioning),
    BACKUP: Applier(read=read_latest_backup, apply=take_backup, reached=lambda s, table, before, name: backup_status(s, table, name) is not None,
                    settled=backup_settled),
}


# --- collect ------------------------------------------------------------------------------------


def resolved(session: MutationSession, inv: System) -> Resolved:
    """The run's resources, resolved once; discovery that fails is UNKNOWN and only the named resources are checked; a named
    one that does not exist is CRIT once (its backups cannot be verified) and not read further."""
    found = resolved_or_named(inv, future_value(resolve_tables_buckets.submit(inv, aws.Deadline(READ_DEADLINE_S))))
    session.report.findings += resolution_findings(inv, found, Status.CRIT)
    return found


def read_all(inv: System, found: Resolved) -> dict[str, Any]:
    deadline = aws.Deadline(READ_DEADLINE_S)
    futures = {"dynamodb": read_table_backups.submit(inv, found, deadline), "s3": read_bucket_protection.submit(inv, found, deadline),
               "opensearch": read_snapshots.submit(inv, deadline), "rds": read_rds_snapshots.submit(inv, deadline)}
    return {k: future_value(f) for k, f in futures.items()}


def reread(inv: System, found: Resolved, fixed: dict[str, list[str]]) -> dict[str, Any]:
    """The fixed tables and buckets read again, for the report to show the state after the fixes."""
    futures = {"dynamodb": read_table_backups.submit(inv, found, aws.Deadline(READ_DEADLINE_S), fixed["dynamodb"]),
               "s3": read_bucket_protection.submit(inv, found, aws.Deadline(READ_DEADLINE_S), fixed["s3"])}
    return {k: future_value(f) for k, f in futures.items()}


# --- plan, act, verify --------------------------------------------------------------------------


@task(name="plan-backup-fixes", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, tables: list[TableBackups], buckets: list[BucketProtection], fix: bool, now: datetime) -> Plan:
    return decide(inv, identity, tables, buckets, fix, now)






# --- the runbook --------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def backup_verify(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    fix: Annotated[bool, Param("Plan the fixes the inventory asks for (enable PITR, take an on-demand backup, enable versioning); off: report only, the would-be fixes listed in the plan's notes")] = True,
) -> Any:
    """Verify every backup of the system (read-only) and, with ``fix`` (default), plan the fixes the inventory asks for.

    dry_run (default) ends after the plan. Otherwise the run asks for approval
    (a form on the paused run in the UI; the shell's prompt or --yes), then enables PITR, takes
    on-demand backups and enables versioning, reads each back, records and
    notifies. Replication and snapshot gaps are findings with instructions.
    """
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s, appliers=APPLIERS)
    with session:
        identity = session.identity()
        found = resolved(session, inv)
        inv = found.present(inv)  # without the missing ones, reported above
        states = read_all(inv, found)
        now = datetime.now(timezone.utc)
        checked = judge(states, now)
        session.report.findings += checked if checked else [nothing_checked(inv)]
        tables = states["dynamodb"] if isinstance(states["dynamodb"], list) else []
        buckets = states["s3"] if isinstance(states["s3"], list) else []
        plan = make_plan.submit(inv, identity, tables, buckets, fix, now).result()
        if session.gate(plan):
            done = act(session, identity, VERIFY_TIMEOUT_S)
            fixed = {"dynamodb": sorted({a.resource for a in plan.actions if a.kind in (PITR, BACKUP)}),
                     "s3": sorted({a.resource for a in plan.actions if a.kind == VERSIONING})}
            conclude(session, done, reread(inv, found, fixed), fixed, lambda st: judge(st, datetime.now(timezone.utc)), fixed_check, "backup-fix", fix_what)
    return session.finish()


TASKS = [resolve_tables_buckets, read_table_backups, read_bucket_protection, read_snapshots, read_rds_snapshots, steps_policy(APPLIERS)] + SESSION_TASKS
