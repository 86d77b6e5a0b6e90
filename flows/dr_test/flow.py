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
approval; every run first removes leftovers of a killed run, and removes its
own copies at the end whether it passes, fails or is cancelled. A missing
backup or snapshot is a CRIT finding. A history table (same artifact key per
system) lets each run be compared with the last.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from prefect import flow
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Action, Plan, Record
from opsbook.mutation.session import SESSION_TASKS, MutationSession
from opsbook.params import Approver, Param, SystemName
from tasks.opensearch import endpoint_for, os_client

RUNBOOK = "dr-test"
MARK = "-drtest-"
TAG = "opsbook:drtest"


def dr_bucket(system: System, account: str) -> str:
    return system.dr.test_bucket or f"{system.name}-drtest-{account}"[:63]


# --- read: what can be restored -----------------------------------------------------------


@aws_task(iam=["dynamodb:ListBackups", "dynamodb:DescribeBackup", "dynamodb:DescribeContinuousBackups", "dynamodb:DescribeTable"],
          name="find-table-backups", cache_policy=NO_CACHE)
def find_table_backups(system: System) -> dict[str, dict[str, Any]]:
    c = aws.client("dynamodb", system.region)

    def one(table: str) -> dict[str, Any]:
        desc = c.describe_table(TableName=table)["Table"]
        backups = [b for b in aws.paginate(c, "list_backups", "BackupSummaries", TableName=table, BackupType="ALL")
                   if b.get("BackupStatus") == "AVAILABLE"]
        latest = max(backups, key=lambda b: b["BackupCreationDateTime"], default=None)
        out = {"size_bytes": desc.get("TableSizeBytes", 0), "key": [k["AttributeName"] for k in desc["KeySchema"]]}
        if latest:
            d = c.describe_backup(BackupArn=latest["BackupArn"])["BackupDescription"]
            out.update(kind="backup", arn=latest["BackupArn"], at=latest["BackupCreationDateTime"].isoformat(),
                       item_count=d["SourceTableDetails"].get("ItemCount"))
            return out
        pitr = c.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"].get("PointInTimeRecoveryDescription", {})
        if pitr.get("PointInTimeRecoveryStatus") == "ENABLED":
            out.update(kind="pitr", at=str(pitr.get("LatestRestorableDateTime")), item_count=None)
        else:
            out.update(kind=None)
        return out

    res = {}
    for t, info, err in aws.parallel(one, [t.name for t in system.dynamodb_tables]):
        res[t] = info if err is None else {"kind": None, "error": aws.describe_error(err)}
    return res


@aws_task(iam=["s3:GetBucketVersioning", "s3:ListBucketVersions"], name="find-object-versions", cache_policy=NO_CACHE)
def find_object_versions(system: System) -> dict[str, Any]:
    """Per versioned bucket: up to sample_objects keys that have a previous version."""
    s3 = aws.client("s3", system.region)
    out: dict[str, Any] = {}
    for b in system.s3_buckets:
        try:
            if s3.get_bucket_versioning(Bucket=b.name).get("Status") != "Enabled":
                out[b.name] = {"versioned": False}
                continue
            seen: dict[str, list[dict]] = {}
            for v in aws.paginate(s3, "list_object_versions", "Versions", Bucket=b.name):
                seen.setdefault(v["Key"], []).append(v)
                if sum(1 for vs in seen.values() if len(vs) > 1) >= system.dr.sample_objects:
                    break
            samples = []
            for key, vs in seen.items():
                older = sorted((v for v in vs if not v.get("IsLatest")), key=lambda v: v["LastModified"], reverse=True)
                if older:
                    samples.append({"key": key, "version": older[0]["VersionId"]})
            out[b.name] = {"versioned": True, "samples": samples[: system.dr.sample_objects]}
        except Exception as exc:  # this bucket's restore is UNKNOWN with the reason
            out[b.name] = {"error": aws.describe_error(exc)}
    return out


@aws_task(iam=["es:DescribeDomains", "es:ESHttpGet"], name="find-snapshots", cache_policy=NO_CACHE)
def find_snapshots(system: System) -> dict[str, Any]:
    out: dict[str, Any] = {}
    doms = [d for d in system.opensearch_domains if d.snapshot_repository]
    if not doms:
        return out
    st = {s["DomainName"]: s for s in aws.client("opensearch", system.region).describe_domains(DomainNames=[d.name for d in doms])["DomainStatusList"]}
    for d in doms:
        try:
            c = os_client(endpoint_for(d, st.get(d.name)), system.region)
            snaps = [s for s in c.snapshot.get(repository=d.snapshot_repository, snapshot="_all")["snapshots"] if s.get("state") == "SUCCESS"]
            latest = max(snaps, key=lambda s: s.get("start_time_in_millis", 0), default=None)
            out[d.name] = {"snapshot": latest["snapshot"], "indices": [i for i in latest["indices"] if not i.startswith(".")],
                           "repo": d.snapshot_repository} if latest else {"snapshot": None, "repo": d.snapshot_repository}
        except Exception as exc:
            out[d.name] = {"error": aws.describe_error(exc) if not hasattr(exc, "status_code") else f"{exc}"}
    return out


# --- cleanup (leftovers of killed runs, and this run's copies) ------------------------------------


@aws_task(iam=["dynamodb:ListTables", "dynamodb:DeleteTable", "s3:ListBucket", "s3:DeleteObject", "s3:DeleteBucket",
               "sts:GetCallerIdentity", "es:DescribeDomains", "es:ESHttpGet", "es:ESHttpDelete"],
          name="remove-test-copies", cache_policy=NO_CACHE, read_only=False)
def remove_copies(system: System, account: str, delete_bucket: bool) -> list[str]:
    """Remove every drtest copy of this system's resources; returns what was removed."""
    removed: list[str] = []
    ddb = aws.client("dynamodb", system.region)
    mine = {t.name for t in system.dynamodb_tables}
    for name in aws.paginate(ddb, "list_tables", "TableNames"):
        if MARK in name and name.split(MARK)[0] in mine:
            try:
                ddb.delete_table(TableName=name)
                removed.append(f"table {name}")
            except Exception as exc:
                if aws.error_code(exc) != "ResourceInUseException":  # still being created: the next run removes it
                    raise
    s3 = aws.client("s3", system.region)
    bucket = dr_bucket(system, account)
    try:
        keys = [o["Key"] for o in aws.paginate(s3, "list_objects_v2", "Contents", Bucket=bucket, Prefix=f"drtest/{system.name}/")]
        for i in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True})
        removed += [f"object s3://{bucket}/{k}" for k in keys]
        if delete_bucket and not system.dr.test_bucket:
            s3.delete_bucket(Bucket=bucket)
            removed.append(f"bucket {bucket}")
    except Exception as exc:
        if not aws.is_not_found(exc):
            raise
    doms = [d for d in system.opensearch_domains if d.snapshot_repository]
    if doms:
        st = {s["DomainName"]: s for s in aws.client("opensearch", system.region).describe_domains(DomainNames=[d.name for d in doms])["DomainStatusList"]}
        for d in doms:
            target = system.dr.opensearch_dr_domain or d.name
            c = os_client(endpoint_for(d.model_copy(update={"name": target}) if target != d.name else d, st.get(d.name)), system.region)
            for idx in c.cat.indices(index="drtest_*", format="json"):
                c.indices.delete(index=idx["index"])
                removed.append(f"index {target}/{idx['index']}")
    return removed


# --- restore and verify --------------------------------------------------------------------


def _scan_count(c: Any, table: str) -> int:
    return sum(p["Count"] for p in c.get_paginator("scan").paginate(TableName=table, Select="COUNT"))


@aws_task(iam=["dynamodb:RestoreTableFromBackup", "dynamodb:RestoreTableToPointInTime", "dynamodb:DescribeTable", "dynamodb:TagResource",
               "dynamodb:Scan", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
               "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"],
          name="restore-table", cache_policy=NO_CACHE, read_only=False)
def restore_table(system: System, table: str, info: dict[str, Any], copy: str, timeout_s: float) -> dict[str, Any]:
    c = aws.client("dynamodb", system.region)
    t0 = time.monotonic()
    if info["kind"] == "backup":
        res = c.restore_table_from_backup(TargetTableName=copy, BackupArn=info["arn"])
    else:
        res = c.restore_table_to_point_in_time(SourceTableName=table, TargetTableName=copy, UseLatestRestorableTime=True)
    arn = res["TableDescription"]["TableArn"]
    c.tag_resource(ResourceArn=arn, Tags=[{"Key": TAG, "Value": system.name}])
    progress = create_progress_artifact(progress=0.0, description=f"dr-test: restoring {table} into {copy}")
    status = res["TableDescription"].get("TableStatus")
    while status != "ACTIVE":
        elapsed = time.monotonic() - t0
        if elapsed > timeout_s:
            return {"ok": False, "seconds": elapsed, "why": f"not ACTIVE after {timeout_s:.0f} s (status {status})"}
        update_progress_artifact(progress, progress=min(95.0, 100 * elapsed / timeout_s))
        print(f"opsbook: dr-test: {copy} {status} after {elapsed:.0f} s", file=sys.stderr)
        time.sleep(min(10.0, max(1.0, elapsed / 5)))
        status = c.describe_table(TableName=copy)["Table"]["TableStatus"]
    restore_s = time.monotonic() - t0
    update_progress_artifact(progress, progress=100.0)
    copy_count = _scan_count(c, copy)
    expected = info.get("item_count")
    if expected is None:  # PITR: the latest restorable time is minutes old; compare with the source now
        expected = _scan_count(c, table)
    sample = c.scan(TableName=table, Limit=system.dr.sample_items).get("Items", [])
    keys = [{k: item[k] for k in info["key"]} for item in sample]
    got: list[dict] = []
    for i in range(0, len(keys), 100):
        req = {copy: {"Keys": keys[i : i + 100]}}
        while req:
            r = c.batch_get_item(RequestItems=req)
            got += r["Responses"].get(copy, [])
            req = r.get("UnprocessedKeys") or {}
    by_key = {json.dumps({k: it[k] for k in info["key"]}, sort_keys=True): it for it in got}
    differ = sum(1 for it in sample if by_key.get(json.dumps({k: it[k] for k in info["key"]}, sort_keys=True)) != it)
    # The backup's ItemCount is recorded by AWS as approximate: allow 0.1 % (never on small tables).
    tolerance = int(expected * 0.001) if expected else 0
    ok = abs(copy_count - expected) <= tolerance
    why = f"{copy_count} items restored, {expected} in the backup"
    # The sample is compared with the source as it is now: a difference may be a write since the backup,
    # so it informs, it does not fail the restore (the count against the backup does).
    why += (f"; {differ} of {len(sample)} sampled items differ from the source now (written since the backup?)" if differ
            else f"; {len(sample)} sampled items identical to the source")
    return {"ok": ok, "seconds": restore_s, "why": why, "count": copy_count, "expected": expected}


@aws_task(iam=["s3:CreateBucket", "s3:PutBucketTagging", "s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:ListBucket"],
          name="restore-objects", cache_policy=NO_CACHE, read_only=False)
def restore_objects(system: System, bucket: str, samples: list[dict[str, Any]], account: str, run: str) -> dict[str, Any]:
    s3 = aws.client("s3", system.region)
    target = dr_bucket(system, account)
    t0 = time.monotonic()
    try:
        kw = {} if system.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": system.region}}
        s3.create_bucket(Bucket=target, **kw)
        s3.put_bucket_tagging(Bucket=target, Tagging={"TagSet": [{"Key": TAG, "Value": system.name}]})
    except Exception as exc:
        if aws.error_code(exc) not in ("BucketAlreadyOwnedByYou",):
            raise
    bad = []
    for s in samples:
        dest = f"drtest/{system.name}/{run}/{bucket}/{s['key']}"
        s3.copy_object(Bucket=target, Key=dest, CopySource={"Bucket": bucket, "Key": s["key"], "VersionId": s["version"]})
        a = hashlib.sha256(s3.get_object(Bucket=bucket, Key=s["key"], VersionId=s["version"])["Body"].read()).hexdigest()
        b = hashlib.sha256(s3.get_object(Bucket=target, Key=dest)["Body"].read()).hexdigest()
        if a != b:
            bad.append(s["key"])
    return {"ok": not bad, "seconds": time.monotonic() - t0,
            "why": f"{len(samples) - len(bad)}/{len(samples)} previous versions restored with identical SHA-256" + (f"; differ: {bad}" if bad else "")}


@aws_task(iam=["es:DescribeDomains", "es:ESHttpGet", "es:ESHttpPost"], name="restore-indices", cache_policy=NO_CACHE, read_only=False)
def restore_indices(system: System, domain: str, snap: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    dom = next(d for d in system.opensearch_domains if d.name == domain)
    st = {s["DomainName"]: s for s in aws.client("opensearch", system.region).describe_domains(DomainNames=[domain])["DomainStatusList"]}
    src = os_client(endpoint_for(dom, st.get(domain)), system.region)
    target_name = system.dr.opensearch_dr_domain or domain
    dst = src if target_name == domain else os_client(endpoint_for(dom.model_copy(update={"name": target_name}), None), system.region)
    t0 = time.monotonic()
    dst.snapshot.restore(repository=snap["repo"], snapshot=snap["snapshot"], body={
        "indices": ",".join(snap["indices"]), "rename_pattern": "(.+)", "rename_replacement": "drtest_$1",
        "index_settings": {"index.number_of_replicas": 0}, "include_global_state": False})
    restored = [f"drtest_{i}" for i in snap["indices"]]
    health = dst.cluster.health(index=",".join(restored))
    while health.get("status") == "red" and time.monotonic() - t0 < timeout_s:  # bounded wait for the shards to start
        print(f"opsbook: dr-test: restored indices red after {time.monotonic() - t0:.0f} s", file=sys.stderr)
        time.sleep(5)
        health = dst.cluster.health(index=",".join(restored))
    seconds = time.monotonic() - t0
    empty, drift = [], []
    for i in snap["indices"]:
        a = src.count(index=i)["count"]
        b = dst.count(index=f"drtest_{i}")["count"]
        if a and not b:
            empty.append(f"{i}: restored empty, {a} in the source")
        elif a != b:  # snapshots carry no document counts: the source may have changed since
            drift.append(f"{i}: {b} restored vs {a} in the source now")
    ok = health.get("status") in ("green", "yellow") and not empty
    return {"ok": ok, "seconds": seconds, "why": (f"{len(restored)} indices restored ({health.get('status')})"
                                                   + ("; " + "; ".join(empty + drift) if empty or drift else "; document counts equal"))}


# --- the runbook --------------------------------------------------------------------------


def _history(system: System, rows: list[dict[str, Any]]) -> None:
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
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver)
    run = session.run_id[:8]
    rto_table = inv.dr.rto_table_minutes * 60
    rows: list[dict[str, Any]] = []
    with session:
        identity = session.identity()
        tables_f = find_table_backups.submit(inv) if "dynamodb" in components else None
        objects_f = find_object_versions.submit(inv) if "s3" in components else None
        snaps_f = find_snapshots.submit(inv) if "opensearch" in components else None
        plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
        findings: list[Finding] = []
        for t, info in (tables_f.result() if tables_f else {}).items():
            spec = next(x for x in inv.dynamodb_tables if x.name == t)
            if info.get("error"):
                findings.append(Finding(check="dr-dynamodb", resource=t, status=Status.UNKNOWN, summary=f"could not be read: {info['error']}"))
            elif info["kind"] is None:
                findings.append(Finding(check="dr-dynamodb", resource=t, status=Status.CRIT, summary="no on-demand backup and PITR disabled: nothing to restore"))
            elif info["size_bytes"] > spec.max_restore_size_gb * 1024**3:
                findings.append(Finding(check="dr-dynamodb", resource=t, status=Status.WARN,
                                        summary=f"skipped: {info['size_bytes'] / 1024**3:.1f} GB is over max_restore_size_gb {spec.max_restore_size_gb:g}"))
            else:
                plan.actions.append(Action(kind="restore-table", resource=t, current=f"{info['kind']} {info['at']}", target=f"{t}{MARK}{run}",
                                           iam_action="dynamodb:RestoreTableFromBackup" if info["kind"] == "backup" else "dynamodb:RestoreTableToPointInTime",
                                           evidence="a tagged test copy, removed at the end"))
        for b, info in (objects_f.result() if objects_f else {}).items():
            if info.get("error"):
                findings.append(Finding(check="dr-s3", resource=b, status=Status.UNKNOWN, summary=f"could not be read: {info['error']}"))
            elif info.get("versioned") and info["samples"]:
                plan.actions.append(Action(kind="restore-objects", resource=b, current=f"{len(info['samples'])} previous versions",
                                           target=f"s3://{dr_bucket(inv, identity.account)}/drtest/{inv.name}/{run}/", iam_action="s3:PutObject",
                                           evidence="copies into the DR test bucket, never a production bucket"))
            elif info.get("versioned"):
                findings.append(Finding(check="dr-s3", resource=b, status=Status.WARN, summary="versioned, but no object has a previous version to restore yet"))
        for d, info in (snaps_f.result() if snaps_f else {}).items():
            if info.get("error"):
                findings.append(Finding(check="dr-opensearch", resource=d, status=Status.UNKNOWN, summary=f"could not be read: {info['error']}"))
            elif not info.get("snapshot"):
                findings.append(Finding(check="dr-opensearch", resource=d, status=Status.CRIT, summary=f"no successful snapshot in repository {info['repo']}"))
            else:
                plan.actions.append(Action(kind="restore-indices", resource=d, current=f"snapshot {info['snapshot']}",
                                           target=f"{inv.dr.opensearch_dr_domain or d}/drtest_*", iam_action="es:ESHttpPost",
                                           evidence="restored under drtest_ with no replicas, removed at the end"))
        session.report.findings += findings
        if session.gate(plan, policy="dr-test writes only its own tagged test copies and removes them"):
            removed_before = remove_copies.submit(inv, identity.account, False).result()
            if removed_before:
                session.report.findings.append(Finding(check="dr-leftovers", resource=inv.name, status=Status.WARN, value=len(removed_before),
                                                       summary=f"removed {len(removed_before)} leftovers of an earlier, interrupted run"))
            records: list[Record] = []
            base = dict(runbook=RUNBOOK, system=inv.name, flow_run_id=session.run_id, approver=session.approval.approver,
                        approved_via="policy", caller_arn=identity.arn, plan_fingerprint=plan.fingerprint)
            try:
                running = []  # every restore at once: a DR test should take as long as the slowest restore, not their sum
                for a in plan.actions:
                    if a.kind == "restore-table":
                        running.append((a, "dr-dynamodb", restore_table.submit(inv, a.resource, tables_f.result()[a.resource], a.target, rto_table)))
                    elif a.kind == "restore-objects":
                        running.append((a, "dr-s3", restore_objects.submit(inv, a.resource, objects_f.result()[a.resource]["samples"], identity.account, run)))
                    else:
                        running.append((a, "dr-opensearch", restore_indices.submit(inv, a.resource, snaps_f.result()[a.resource], rto_table)))
                for a, check, fut in running:
                    rto = rto_table
                    try:
                        res = fut.result()
                    except Exception as exc:
                        res = {"ok": False, "seconds": 0.0, "why": aws.describe_error(exc)}
                    within = res["seconds"] <= rto
                    status = Status.OK if res["ok"] and within else Status.CRIT
                    session.report.findings.append(Finding(
                        check=check, resource=a.resource, status=status, value=round(res["seconds"], 1),
                        summary=f"{'PASS' if res['ok'] else 'FAIL'}: {res['why']}; restored in {res['seconds']:.1f} s (RTO {rto / 60:.0f} min)"))
                    rows.append({"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "component": f"{check} {a.resource}",
                                 "result": "PASS" if status is Status.OK else "FAIL", "seconds": round(res["seconds"], 1), "rto_s": rto})
                    records.append(Record(**base, resource=a.target, kind=a.kind, before="absent",
                                          after="restored (test copy)" if res["ok"] else None,
                                          status="applied" if res["ok"] else "failed", detail=res["why"][:300]))
            finally:  # whatever happened, the test copies go
                removed = remove_copies.submit(inv, identity.account, True).result()
                records.append(Record(**base, resource=inv.name, kind="cleanup", before=f"{len(removed)} test copies", after="removed",
                                      status="applied", detail="; ".join(removed)[:500]))
                session.record(records)
                _history(inv, rows)
            session.done(all(f.status is not Status.CRIT for f in session.report.findings))
            session.notify(session.report.outcome, [f"{f.check} {f.resource}: {f.summary}" for f in session.report.findings if f.check.startswith("dr-")])
    return session.finish()


TASKS = [find_table_backups, find_object_versions, find_snapshots, remove_copies, restore_table, restore_objects, restore_indices] + SESSION_TASKS
