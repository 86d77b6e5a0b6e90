"""dr-test, judged (pure: no AWS, no Prefect, no clock): what can be restored -> the restores to run (and the findings of
what cannot be), and each restore's result -> PASS or FAIL against the backup and the RTO."""

from __future__ import annotations

from typing import Any

from opsbook.findings import Finding, Status
from opsbook.inventory import System
from opsbook.mutation.core import Action

RUNBOOK = "dr-test"
MARK = "-drtest-"  # <table>-drtest-<run>: a restored test copy
TAG = "opsbook:drtest"
INDEX_PREFIX = "drtest_"
CHECKS = {"restore-table": "dr-dynamodb", "restore-objects": "dr-s3", "restore-indices": "dr-opensearch"}  # action kind -> check


def dr_bucket(system: System, account: str) -> str:
    return system.dr.test_bucket or f"{system.name}-drtest-{account}"[:63]


def object_prefix(system: System, run: str) -> str:
    return f"drtest/{system.name}/{run}/"


def is_copy(system: System, table: str) -> bool:
    """A test copy of one of the system's tables (this run's or a killed run's)."""
    return MARK in table and table.split(MARK)[0] in {t.name for t in system.dynamodb_tables}


def unreadable(check: str, resource: str, error: str) -> Finding:
    return Finding(check=check, resource=resource, status=Status.UNKNOWN, summary=f"could not be read: {error}")


def table_restores(inv: System, tables: dict[str, dict[str, Any]], run: str) -> tuple[list[Action], list[Finding]]:
    """A restore a table with a backup (or PITR) within max_restore_size_gb; CRIT: nothing to restore; WARN: too large."""
    actions, findings = [], []
    for t, info in tables.items():
        spec = next(x for x in inv.dynamodb_tables if x.name == t)
        if info.get("error"):
            findings.append(unreadable("dr-dynamodb", t, info["error"]))
        elif info["kind"] is None:
            findings.append(Finding(check="dr-dynamodb", resource=t, status=Status.CRIT, summary="no on-demand backup and PITR disabled: nothing to restore"))
        elif info["size_bytes"] > spec.max_restore_size_gb * 1024**3:
            findings.append(Finding(check="dr-dynamodb", resource=t, status=Status.WARN,
                                    summary=f"skipped: {info['size_bytes'] / 1024**3:.1f} GB is over max_restore_size_gb {spec.max_restore_size_gb:g}"))
        else:
            actions.append(Action(kind="restore-table", resource=t, current=f"{info['kind']} {info['at']}", target=f"{t}{MARK}{run}",
                                  iam_action="dynamodb:RestoreTableFromBackup" if info["kind"] == "backup" else "dynamodb:RestoreTableToPointInTime",
                                  evidence="a tagged test copy, removed at the end"))
    return actions, findings


def object_restores(inv: System, buckets: dict[str, Any], account: str, run: str) -> tuple[list[Action], list[Finding]]:
    """A restore a versioned bucket with previous versions; WARN: versioned but nothing to restore yet."""
    actions, findings = [], []
    for b, info in buckets.items():
        if info.get("error"):
            findings.append(unreadable("dr-s3", b, info["error"]))
        elif info.get("versioned") and info["samples"]:
            actions.append(Action(kind="restore-objects", resource=b, current=f"{len(info['samples'])} previous versions",
                                  target=f"s3://{dr_bucket(inv, account)}/{object_prefix(inv, run)}", iam_action="s3:PutObject",
                                  evidence="copies into the DR test bucket, never a production bucket"))
        elif info.get("versioned"):
            findings.append(Finding(check="dr-s3", resource=b, status=Status.WARN, summary="versioned, but no object has a previous version to restore yet"))
    return actions, findings


def index_restores(inv: System, snaps: dict[str, Any]) -> tuple[list[Action], list[Finding]]:
    """A restore a domain with a successful snapshot; CRIT: none."""
    actions, findings = [], []
    for d, info in snaps.items():
        if info.get("error"):
            findings.append(unreadable("dr-opensearch", d, info["error"]))
        elif not info.get("snapshot"):
            findings.append(Finding(check="dr-opensearch", resource=d, status=Status.CRIT, summary=f"no successful snapshot in repository {info['repo']}"))
        else:
            actions.append(Action(kind="restore-indices", resource=d, current=f"snapshot {info['snapshot']}",
                                  target=f"{inv.dr.opensearch_dr_domain or d}/{INDEX_PREFIX}*", iam_action="es:ESHttpPost",
                                  evidence="restored under drtest_ with no replicas, removed at the end"))
    return actions, findings


def restores(inv: System, found: dict[str, dict[str, Any]], account: str, run: str) -> tuple[list[Action], list[Finding]]:
    """The restores to run, in order (tables, objects, indices), and the findings of what cannot be restored."""
    parts = [table_restores(inv, found.get("dynamodb", {}), run), object_restores(inv, found.get("s3", {}), account, run),
             index_restores(inv, found.get("opensearch", {}))]
    return [a for p in parts for a in p[0]], [f for p in parts for f in p[1]]


def verify_table(res: dict[str, Any]) -> dict[str, Any]:
    """The copy's scanned count against the backup's (AWS records it as approximate: 0.1 %, never on small tables); a sample
    that differs from the source now may be a write since the backup, so it informs and never fails the restore."""
    if "count" not in res:
        return {"ok": False, "seconds": res["seconds"], "why": f"not ACTIVE after {res['timeout_s']:.0f} s (status {res['status']})"}
    copy_count, expected, differ, sampled = res["count"], res["expected"], res["differ"], res["sampled"]
    tolerance = int(expected * 0.001) if expected else 0
    why = f"{copy_count} items restored, {expected} in the backup"
    why += (f"; {differ} of {sampled} sampled items differ from the source now (written since the backup?)" if differ
            else f"; {sampled} sampled items identical to the source")
    return {"ok": abs(copy_count - expected) <= tolerance, "seconds": res["seconds"], "why": why}


def verify_objects(res: dict[str, Any]) -> dict[str, Any]:
    bad, n = res["differ"], res["checked"]
    return {"ok": not bad, "seconds": res["seconds"],
            "why": f"{n - len(bad)}/{n} previous versions restored with identical SHA-256" + (f"; differ: {bad}" if bad else "")}


def verify_indices(res: dict[str, Any]) -> dict[str, Any]:
    """Green or yellow (no replicas) and no index restored empty; counts that differ inform (snapshots carry no counts:
    the source may have changed since)."""
    empty, drift = [], []
    for i, a, b in res["counts"]:
        if a and not b:
            empty.append(f"{i}: restored empty, {a} in the source")
        elif a != b:
            drift.append(f"{i}: {b} restored vs {a} in the source now")
    ok = res["health"] in ("green", "yellow") and not empty
    return {"ok": ok, "seconds": res["seconds"], "why": (f"{len(res['counts'])} indices restored ({res['health']})"
                                                         + ("; " + "; ".join(empty + drift) if empty or drift else "; document counts equal"))}


VERIFY = {"restore-table": verify_table, "restore-objects": verify_objects, "restore-indices": verify_indices}


def judge_restore(a: Action, res: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    """A restore's verdict: ok, seconds and why (a restore that raised fails with the reason)."""
    return {"ok": False, "seconds": 0.0, "why": error} if res is None else VERIFY[a.kind](res)


def restore_finding(a: Action, verdict: dict[str, Any], rto_s: float) -> Finding:
    """PASS when the copy is right and in time; anything else is CRIT."""
    status = Status.OK if verdict["ok"] and verdict["seconds"] <= rto_s else Status.CRIT
    return Finding(check=CHECKS[a.kind], resource=a.resource, status=status, value=round(verdict["seconds"], 1),
                   summary=f"{'PASS' if verdict['ok'] else 'FAIL'}: {verdict['why']}; restored in {verdict['seconds']:.1f} s (RTO {rto_s / 60:.0f} min)")
