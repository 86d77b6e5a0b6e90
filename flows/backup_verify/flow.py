"""backup-verify: the weekly proof that the system's data can be restored.

Sources: 000 백업 및 복구 (on-demand backups, PITR, S3 versioning, cross-region
replication, OpenSearch snapshots to ``backup_repo``), 001 and 002 백업
(on-demand backups, replication check), 003 정기 점검 (RDS: 최근 자동 스냅샷).
The seeds' scripts take a backup of every table on each run; this runbook
checks first and changes only what falls short, behind the safe-mutation path.

Steps: confirm identity -> discover the system's tagged resources -> read
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
calls a snapshot repository, 1 + pages an RDS instance, 1 for discovery, plus
the session's (identity, leases, records, SNS) and 3-4 a fix.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import (
    Action,
    Approval,
    Identity,
    Plan,
    Record,
    Refused,
    drift,
)
from opsbook.mutation.session import SESSION_TASKS, MutationSession, mark_verified
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SystemName
from opsbook.resources import Discovered, discover
from tasks.backups import (
    APPLIERS,
    BACKUP,
    BACKUP_LOOKBACK_DAYS,
    PITR,
    VERSIONING,
    BucketProtection,
    TableBackups,
    backup_name,
    bucket_findings,
    iso_utc,
    judge_rds,
    judge_snapshots,
    read_bucket_protection,
    read_rds_snapshots,
    read_snapshots,
    read_table_backups,
    table_findings,
    wait_verified,
)

RUNBOOK = "backup-verify"
READ_DEADLINE_S = 120.0
VERIFY_TIMEOUT_S = 60.0  # on-demand backups are AVAILABLE within seconds whatever the table's size


# --- deciding (pure: unit-tested without AWS) ----------------------------------------------


def judge(states: dict[str, Any], now: datetime) -> list[Finding]:
    """A finding per resource and check; a read task that failed as a whole is UNKNOWN with its reason."""
    out: list[Finding] = []
    for name, value in states.items():
        if isinstance(value, BaseException):
            out.append(unknown(f"{name}-backups", "(whole check)", aws.describe_error(value)))
            continue
        for s in value:
            if name == "dynamodb":
                out += table_findings(s, now)
            elif name == "s3":
                out += bucket_findings(s)
            elif name == "opensearch":
                out.append(judge_snapshots(s, now))
            else:
                out.append(judge_rds(s, now))
    return out


def decide(inv: System, identity: Identity, tables: list[TableBackups], buckets: list[BucketProtection], fix: bool, now: datetime) -> Plan:
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    wanted: list[Action] = []
    for t in tables:
        if t.error or not t.required:
            continue
        if t.pitr == "DISABLED":
            wanted.append(Action(kind=PITR, resource=t.table, current="DISABLED", target="ENABLED", iam_action="dynamodb:UpdateContinuousBackups",
                                 evidence="backup_required; PITR off: no point-in-time restore (undo: disable PITR, which drops the restore window)"))
        elif t.pitr == "ENABLED":
            plan.unchanged.append(f"{t.table}: PITR ENABLED")
        age = (now - t.latest_backup).total_seconds() / 3600 if t.latest_backup else None
        if age is None or age > t.max_age_hours:
            wanted.append(Action(kind=BACKUP, resource=t.table, current=iso_utc(t.latest_backup),
                                 target=backup_name(t.table, now), iam_action="dynamodb:CreateBackup",
                                 evidence=(f"backup_required; latest on-demand backup {age:.1f} h old" if age is not None else
                                           f"backup_required; no on-demand backup in {BACKUP_LOOKBACK_DAYS} days") + f" (limit {t.max_age_hours:g} h); "
                                          "a backup only adds a restore point (undo: delete it)"))
        else:
            plan.unchanged.append(f"{t.table}: on-demand backup {age:.1f} h old")
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


# --- tasks ------------------------------------------------------------------------------------


@task(name="plan-backup-fixes", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, tables: list[TableBackups], buckets: list[BucketProtection], fix: bool, now: datetime) -> Plan:
    return decide(inv, identity, tables, buckets, fix, now)


@aws_task(iam=["dynamodb:DescribeContinuousBackups", "dynamodb:ListBackups", "s3:GetBucketVersioning"], name="check-backup-drift",
          cache_policy=NO_CACHE)
def check_drift(system: System, plan: Plan) -> None:
    drifted = drift(system, plan, APPLIERS)
    if drifted:
        raise Refused("the state changed since the plan was made; nothing was changed (run again to plan afresh): " + "; ".join(drifted))


@aws_task(iam=["dynamodb:UpdateContinuousBackups", "dynamodb:CreateBackup", "s3:PutBucketVersioning"], name="apply-backup-fixes",
          cache_policy=NO_CACHE, read_only=False)
def apply_fixes(system: System, plan: Plan, approval: Approval, identity: Identity, run_id: str) -> list[Record]:
    """Every fix in order. Each only adds protection and none depends on another, so a failure is recorded and
    the rest still run; nothing is undone (undoing PITR because versioning failed would leave less protection)."""
    base = dict(runbook=plan.runbook, system=plan.system, flow_run_id=run_id, approver=approval.approver, approved_via=approval.via,
                caller_arn=identity.arn, plan_fingerprint=plan.fingerprint)
    records = []
    for a in plan.actions:
        try:
            APPLIERS[a.kind].apply(system, a.resource, a.target)
            records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=a.target, status="applied"))
        except Exception as exc:  # recorded and reported (the run ends failed); the other fixes are independent
            records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=None, status="failed",
                                  detail=aws.describe_error(exc)))
    return records


@aws_task(iam=["dynamodb:DescribeContinuousBackups", "dynamodb:ListBackups", "s3:GetBucketVersioning"], name="verify-backup-fixes",
          cache_policy=NO_CACHE)
def verify_fixes(system: System, records: list[Record], timeout_s: float) -> list[Record]:
    """Read every applied fix back: verified when AWS shows the target state."""
    applied = [(r.kind, r.resource, r.after or "") for r in records if r.status == "applied"]
    return mark_verified(records, wait_verified(system, applied, timeout_s), timeout_s)


def fix_findings(records: list[Record]) -> list[Finding]:
    out = []
    for r in records:
        what = {PITR: "enable PITR", VERSIONING: "enable versioning", BACKUP: f"on-demand backup {r.after}"}.get(r.kind, r.kind)
        status = {"verified": Status.OK, "applied": Status.WARN}.get(r.status, Status.CRIT)
        out.append(Finding(check="backup-fix", resource=r.resource, status=status, summary=f"{what}: {r.status}; {r.detail}".rstrip("; ")))
    return out


def replace_findings(findings: list[Finding], fresh: list[Finding], resources: set[str]) -> list[Finding]:
    """The report shows the state after the fixes: the re-read findings replace those of the fixed resources."""
    prefixes = ("dynamodb-", "s3-")
    return [f for f in findings if not (f.resource in resources and f.check.startswith(prefixes))] + fresh


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
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
    with session:
        identity = session.identity()
        found = future_value(discover.submit(inv))
        if isinstance(found, BaseException):
            session.report.findings.append(unknown("discovery", f"tags {inv.discovery.tags}", f"{aws.describe_error(found)}; "
                                                   "only the inventory's named resources were checked"))
            found = Discovered()
        deadline = aws.Deadline(READ_DEADLINE_S)
        futures = {"dynamodb": read_table_backups.submit(inv, found, deadline), "s3": read_bucket_protection.submit(inv, found, deadline),
                   "opensearch": read_snapshots.submit(inv, deadline), "rds": read_rds_snapshots.submit(inv, deadline)}
        states = {k: future_value(f) for k, f in futures.items()}
        now = datetime.now(timezone.utc)
        checked = judge(states, now)
        session.report.findings += checked
        if not checked:
            session.report.findings.append(Finding(check="coverage", resource=inv.name, status=Status.WARN, value=0,
                                                   summary="the inventory names no DynamoDB table, S3 bucket, OpenSearch snapshot repository "
                                                           "or RDS instance (and discovery found none): nothing was verified"))
        tables = states["dynamodb"] if isinstance(states["dynamodb"], list) else []
        buckets = states["s3"] if isinstance(states["s3"], list) else []
        plan = make_plan.submit(inv, identity, tables, buckets, fix, now).result()
        if session.gate(plan):
            session.lease()
            check_drift.submit(inv, plan).result()
            done = apply_fixes.submit(inv, plan, session.approval, identity, session.run_id).result()
            done = verify_fixes.submit(inv, done, min(VERIFY_TIMEOUT_S, inv.mutations.settle_timeout_s)).result()
            fixed_tables = sorted({a.resource for a in plan.actions if a.kind in (PITR, BACKUP)})
            fixed_buckets = sorted({a.resource for a in plan.actions if a.kind == VERSIONING})
            reread = {"dynamodb": read_table_backups.submit(inv, found, aws.Deadline(READ_DEADLINE_S), fixed_tables),
                      "s3": read_bucket_protection.submit(inv, found, aws.Deadline(READ_DEADLINE_S), fixed_buckets)}
            after = {k: future_value(f) for k, f in reread.items()}
            session.record(done)
            for k, resources in (("dynamodb", fixed_tables), ("s3", fixed_buckets)):
                if isinstance(after[k], BaseException):  # keep what was read before, and say the re-read failed
                    session.report.findings += [unknown(f"{k}-reread", r, aws.describe_error(after[k])) for r in resources]
                else:
                    fresh = judge({k: after[k]}, datetime.now(timezone.utc))
                    session.report.findings = replace_findings(session.report.findings, fresh, set(resources))
            session.report.findings += fix_findings(done)
            session.done(all(r.status != "failed" for r in done))
            session.notify(session.report.outcome, [f"{r.resource}: {r.kind} {r.before} -> {r.after}: {r.status} {r.detail}".strip() for r in done])
    return session.finish()


TASKS = [discover, read_table_backups, read_bucket_protection, read_snapshots, read_rds_snapshots, check_drift, apply_fixes,
         verify_fixes] + SESSION_TASKS
