"""dr-test: restores that are never tested do not exist.

Sources: 000 복구 테스트 (disaster_recovery_test.sh), 001 재해 복구 절차, 002 복구
시나리오 (RTO: a table 30 min, a region 2 h). For each component of the
system, restore a copy from its latest backup, prove the copy is right, and
always remove it:

- DynamoDB: the latest on-demand backup (else the latest PITR time) into
  ``<table>-drtest-<run>``; wait for ACTIVE; count by scan (DescribeTable's
  ItemCount lags by hours) against the backup's own item count; compare a
  sample of items by key with the source; time it against the RTO. Tables
  over ``max_restore_size_gb`` are skipped (WARN), so a test never runs up
  an unplanned bill.
- S3: for versioned buckets, the previous version of sampled objects is
  copied into the DR test bucket (never a production bucket, whose
  notifications would start work) and compared by SHA-256.
- OpenSearch: the latest snapshot's indices restored into the DR domain, or
  under ``drtest_`` with no replicas; document counts compared; timed.

It writes only its own tagged copies, so ``dry_run=false`` runs without
approval. It leases the system's DR test (a second one is refused while it
runs: its start would remove this one's copies), writes each restore's intent
before the restore starts and its outcome after (opsbook.mutation), first
removes leftovers of a killed run (whose open restores the next run closes
from what is left of them), and removes its own copies at the end whether it
passes, fails or is cancelled. A missing
backup or snapshot is a CRIT finding. A history table (same artifact key per
system) lets each run be compared with the last.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from botocore.exceptions import ClientError
from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.dr_test.judge import INDEX_PREFIX, MARK, RUNBOOK, TAG, dr_bucket, is_copy, judge_restore, object_prefix, restore_finding, restores
from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task, declares
from opsbook.iam_scope import Copies
from opsbook.inventory import System, load_system
from opsbook.mutation import steps
from opsbook.mutation.core import Action, Applier, Plan, Record, Refused
from opsbook.mutation.session import SESSION_TASKS, MutationSession, steps_policy
from opsbook.params import Approver, Param, SystemName
from tasks.dynamodb import find_table_backups, remove_tables, restore_table
from tasks.opensearch import client_for, domain_statuses, find_snapshots, remove_indices, restore_indices
from tasks.s3 import find_object_versions, remove_prefix, restore_objects

FINDERS = {"dynamodb": find_table_backups, "s3": find_object_versions, "opensearch": find_snapshots}
ABSENT, RESTORED = "absent", "restored (test copy)"


# --- the steps: a test copy each (closed after a kill from whether the copy is there) -------------------------------


@declares(["dynamodb:DescribeTable"])
def table_copy(system: System, copy: str) -> str:
    try:
        aws.client("dynamodb", system.region).describe_table(TableName=copy)
    except ClientError as exc:
        if aws.error_code(exc) == "ResourceNotFoundException":
            return ABSENT
        raise
    return RESTORED


@declares(["s3:ListBucket"])
def object_copies(system: System, where: str) -> str:
    bucket, _, prefix = where.removeprefix("s3://").partition("/")
    try:
        found = aws.client("s3", system.region).list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0)
    except ClientError as exc:
        if aws.error_code(exc) == "NoSuchBucket":
            return ABSENT
        raise
    return RESTORED if found else ABSENT


@declares(["es:DescribeDomains", "es:ESHttpGet"])
def index_copies(system: System, where: str) -> str:
    name, _, pattern = where.partition("/")
    for d in system.opensearch_domains:
        if d.snapshot_repository and (system.dr.opensearch_dr_domain or d.name) == name:
            c = client_for(system, d, name, domain_statuses(system, [d.name]).get(d.name))
            return RESTORED if c.cat.indices(index=pattern, format="json") else ABSENT
    return ABSENT


def not_by_value(system: System, copy: str, value: str) -> None:
    raise Refused(f"{copy}: a test copy is made by a restore (dr-test), not set to a value")


APPLIERS = {kind: Applier(read=read, apply=not_by_value)
            for kind, read in (("restore-table", table_copy), ("restore-objects", object_copies), ("restore-indices", index_copies))}


@aws_task(iam=["dynamodb:ListTables", "dynamodb:DeleteTable", "s3:ListBucket", "s3:DeleteObject", "s3:DeleteBucket",
               "sts:GetCallerIdentity", "es:DescribeDomains", "es:ESHttpGet", "es:ESHttpDelete"],
          name="remove-test-copies", cache_policy=NO_CACHE, read_only=False)
def remove_copies(system: System, account: str, delete_bucket: bool) -> list[str]:
    """Remove every drtest copy of this system's resources (tables, objects, the test bucket, indices); what was removed."""
    removed = remove_tables(system, lambda name: is_copy(system, name))
    removed += remove_prefix(system, dr_bucket(system, account), f"drtest/{system.name}/", delete_bucket and not system.dr.test_bucket)
    removed += remove_indices(system, [d for d in system.opensearch_domains if d.snapshot_repository],
                              lambda name: system.dr.opensearch_dr_domain or name, f"{INDEX_PREFIX}*")
    return removed


def rto_seconds(inv: System, kind: str) -> float:
    """The inventory's RTO for this kind of restore: indices have their own target, tables and objects the table one."""
    return (inv.dr.rto_index_minutes if kind == "restore-indices" else inv.dr.rto_table_minutes) * 60


def start_restore(inv: System, a: Action, found: dict[str, dict[str, Any]], account: str, run: str) -> Any:
    """Submit the action's restore (they run at once: a DR test takes as long as the slowest restore, not their sum)."""
    rto_s = rto_seconds(inv, a.kind)
    if a.kind == "restore-table":
        return restore_table.submit(inv, a.resource, found["dynamodb"][a.resource], a.target, rto_s, {TAG: inv.name}, RUNBOOK)
    if a.kind == "restore-objects":
        return restore_objects.submit(inv, a.resource, found["s3"][a.resource]["samples"], dr_bucket(inv, account),
                                      object_prefix(inv, run), {TAG: inv.name})
    return restore_indices.submit(inv, a.resource, found["opensearch"][a.resource], inv.dr.opensearch_dr_domain or a.resource,
                                  INDEX_PREFIX, rto_s, RUNBOOK)


def run_restores(inv: System, actions: list[Action], found: dict[str, dict[str, Any]], account: str, run: str, base: dict[str, Any],
                 findings: list[Finding], rows: list[dict[str, Any]], records: list[Record]) -> None:
    """Every restore at once, then each judged against the backup and the RTO: a finding, a history row, a record."""
    journal = steps.active(base["flow_run_id"])
    intents = [steps.intend(journal, Record(**base, resource=a.target, kind=a.kind, before=ABSENT, after=RESTORED, status="applied"), "applied")
               for a in actions]  # every intent first: the restores then run at once
    running = [(a, i, start_restore(inv, a, found, account, run)) for a, i in zip(actions, intents)]
    for a, intent, fut in running:
        try:
            verdict = judge_restore(a, fut.result(), None)
        except Exception as exc:
            verdict = judge_restore(a, None, aws.describe_error(exc))
        f = restore_finding(a, verdict, rto_seconds(inv, a.kind))
        findings.append(f)
        rows.append({"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "component": f"{f.check} {a.resource}",
                     "result": "PASS" if f.status is Status.OK else "FAIL", "seconds": round(verdict["seconds"], 1), "rto_s": rto_seconds(inv, a.kind)})
        records.append(steps.done(journal, intent.model_copy(update={"after": RESTORED if verdict["ok"] else None, "detail": verdict["why"][:300],
                                                                     "status": "applied" if verdict["ok"] else "failed"})))


def history(system: System, rows: list[dict[str, Any]]) -> None:
    """Same key per system: each run's table carries the previous runs' rows too."""
    from prefect.client.orchestration import get_client

    key = f"{RUNBOOK}-{system.name}-history"
    previous: list[dict[str, Any]] = []
    try:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        with get_client(sync_client=True) as client:
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            if arts:
                previous = json.loads(max(arts, key=lambda a: a.created).data)
    except Exception as exc:  # the history starts again; the run's own rows are still written
        rows = rows + [{"at": "", "component": "history", "result": f"previous runs unreadable: {type(exc).__name__}", "seconds": "", "rto_s": ""}]
    create_table_artifact(key=key, table=(rows + previous)[:200], description=f"dr-test history of {system.name} (newest first)")


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=4 * 3600)
def dr_test(
    system: SystemName,
    dry_run: Annotated[bool, Param("Plan only (the default): nothing is restored. Off: restore the test copies, prove them "
                                   "and remove them (no approval: the run writes only its own tagged copies)")] = True,
    approver: Approver = "",
    components: Annotated[list[Literal["dynamodb", "s3", "opensearch"]], Param(
        "What to restore: DynamoDB tables, S3 objects, OpenSearch indices")] = ["dynamodb", "s3", "opensearch"],  # noqa: B006
) -> Any:
    """Restore test copies, prove them, always remove them. Writes only its own copies: no approval needed to act."""
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, appliers=APPLIERS)  # a killed run's restores: closed
    run = session.run_id[:8]
    rows: list[dict[str, Any]] = []
    with session:
        identity = session.identity()
        futures = {c: FINDERS[c].submit(inv) for c in FINDERS if c in components}
        found = {c: f.result() for c, f in futures.items()}
        actions, findings = restores(inv, found, identity.account, run)
        plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity, actions=actions)
        session.report.findings += findings
        if session.gate(plan, policy="dr-test writes only its own tagged test copies and removes them"):
            session.lease([f"{RUNBOOK}:{inv.name}"] + [a.target for a in plan.actions])  # one DR test of a system at a time
            removed_before = remove_copies.submit(inv, identity.account, False).result()
            if removed_before:
                session.report.findings.append(Finding(check="dr-leftovers", resource=inv.name, status=Status.WARN, value=len(removed_before),
                                                       summary=f"removed {len(removed_before)} leftovers of an earlier, interrupted run"))
            records: list[Record] = []
            base = dict(runbook=RUNBOOK, system=inv.name, flow_run_id=session.run_id, approver=session.approval.approver,
                        approved_via="policy", caller_arn=identity.arn, plan_fingerprint=plan.fingerprint)
            try:
                run_restores(inv, plan.actions, found, identity.account, run, base, session.report.findings, rows, records)
            finally:  # whatever happened, the test copies go
                removed = remove_copies.submit(inv, identity.account, True).result()
                records.append(Record(**base, resource=inv.name, kind="cleanup", before=f"{len(removed)} test copies", after="removed",
                                      status="applied", detail="; ".join(removed)[:500]))
                session.record(records)
                history(inv, rows)
            session.done(all(f.status is not Status.CRIT for f in session.report.findings))
            session.notify(session.report.outcome, [f"{f.check} {f.resource}: {f.summary}" for f in session.report.findings if f.check.startswith("dr-")])
    return session.finish()


TASKS = ([find_table_backups, find_object_versions, find_snapshots, remove_copies, restore_table, restore_objects, restore_indices,
          steps_policy(APPLIERS)] + SESSION_TASKS)


def own_bucket(system: System, account: str) -> list[str]:
    """The test bucket the run creates and removes (none when the inventory names one: that one is never removed)."""
    if system.dr.test_bucket:
        return []
    if account.isdigit():
        return [dr_bucket(system, account)]
    stem = f"{system.name}-drtest-"  # the account is a policy variable: the name's length is not known here
    return [f"{stem}{account}" if len(stem) + 12 <= 63 else f"{stem[:62]}*"]


def _objects(system: System, account: str) -> list[str]:
    bucket = system.dr.test_bucket or own_bucket(system, account)[0]
    return [f"{bucket}/{object_prefix(system, '*')}*"]


# the copies a run makes and removes (`opsbook policy dr-test --system X`: destructive actions only on these)
IAM_COPIES = [
    Copies("dynamodb:table", f"*{MARK}*", lambda s, a: [f"{t.name}{MARK}*" for t in s.dynamodb_tables], tag=TAG, tag_values=lambda s: [s.name]),
    Copies("s3:bucket", "*-drtest-*", own_bucket),
    Copies("s3:object", "*/drtest/*", _objects),
    Copies("es:domain", f"*/{INDEX_PREFIX}*", lambda s, a: [f"{s.dr.opensearch_dr_domain or d.name}/{INDEX_PREFIX}*"
                                                           for d in s.opensearch_domains if d.snapshot_repository]),
]
