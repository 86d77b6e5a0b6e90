"""Bench-only sandbox server for the DR benchmark (bench/dr.py): like `opsbook sandbox
--systems hr-resource-optimization`, plus the DR preparation, in the sandbox's own process.

  .venv/bin/python -m bench.dr_sandbox [--latency-ms 30] [--items 200] [--os-log PATH]

Starts `sandbox.server.Sandbox` (moto + the OpenSearch double on 127.0.0.1), seeds HR with
`sandbox.seed.seed_system`, then prepares what a DR test needs, with no latency:

  - ``--items`` items in Employees-Team2, then an on-demand backup of each of the six tables
    (named ``<table>-bench-<stamp>``; seeding already made an empty ``<table>-sandbox`` backup
    of the two ``backup_required`` tables, before any item existed, and it stays);
  - hr-resumes-bucket-team2 versioned, ``test-file.pdf`` put twice (two versions, different bytes);
  - the bucket the seed script copies into, hr-resumes-bucket-team2-test (empty; the seed script
    does not create it and `aws s3 cp` would fail without it);
  - ``--items`` documents in employee_profiles (and 20 in project_requirements), the repository
    ``backup_repo`` registered, and two SUCCESS snapshots of both indices: a dated one
    (``snapshot_YYYYMMDDHHMM``, 2 h old, the newest) and one named ``latest`` (1 min older, same
    contents), which exists only so that the seed's ``.../backup_repo/latest/_restore`` has
    something to restore: OpenSearch has no "latest" alias for snapshots.

With ``--restore-delay-s N`` a restored table reports CREATING for N s (moto's are ACTIVE at once).
Then it sets the latency, writes what it made to ``--prep-out`` (JSON), prints the ``export`` lines
(like `opsbook sandbox`) and serves until SIGTERM/SIGINT. With ``--os-log`` every request to the OpenSearch double
after the preparation is appended to PATH as a JSON line (time, method, path, user agent, status):
moto's request recorder (MOTO_RECORDER_FILEPATH) does not see the double.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

SYSTEM = "hr-resource-optimization"
SOURCE_TABLE = "Employees-Team2"
BUCKET = "hr-resumes-bucket-team2"
TEST_BUCKET = "hr-resumes-bucket-team2-test"  # the seed script's destination
OBJECT_KEY = "test-file.pdf"
REPO = "backup_repo"


def log_opensearch_requests(path: str) -> threading.Event:
    """Wrap the double's request handler: one JSON line per request once the returned event is set."""
    from sandbox import opensearch_double as od

    on = threading.Event()
    lock = threading.Lock()
    f = open(path, "a", buffering=1)  # noqa: SIM115 - open for the life of the process
    orig_handle, orig_send = od._Handler._handle, od._Handler.send_response

    def send_response(self: Any, code: int, message: Any = None) -> None:
        self._bench_status = code
        orig_send(self, code, message)

    def handle(self: Any) -> None:
        t = time.time()
        self._bench_status = None
        try:
            orig_handle(self)
        finally:
            if on.is_set():
                e = {"t": t, "method": self.command, "path": self.path, "ua": self.headers.get("user-agent", ""),
                     "status": self._bench_status}
                with lock:
                    f.write(json.dumps(e) + "\n")

    od._Handler.send_response = send_response
    od._Handler._handle = handle
    for verb in ("GET", "POST", "PUT", "DELETE", "HEAD"):
        setattr(od._Handler, f"do_{verb}", handle)
    return on


def slow_restores(delay_s: float) -> None:
    """Restored tables report CREATING (RestoreInProgress) for ``delay_s`` after the restore call, then
    ACTIVE, as DynamoDB does for minutes to hours; moto's are ACTIVE at once. The items are there from
    the start (nobody reads a CREATING table)."""
    from moto.dynamodb.models.table import RestoredTable

    orig_init, orig_describe = RestoredTable.__init__, RestoredTable.describe

    def init(self: Any, *a: Any, **kw: Any) -> None:
        orig_init(self, *a, **kw)
        self._bench_ready_at = time.monotonic() + delay_s

    def describe(self: Any, base_key: str = "TableDescription") -> dict[str, Any]:
        out = orig_describe(self, base_key=base_key)
        if time.monotonic() < getattr(self, "_bench_ready_at", 0.0):
            out[base_key]["TableStatus"] = "CREATING"
            out[base_key]["RestoreSummary"]["RestoreInProgress"] = True
        return out

    RestoredTable.__init__, RestoredTable.describe = init, describe


def prepare(sb: Any, system: Any, items: int) -> dict[str, Any]:
    from opensearchpy import helpers

    from sandbox.backups import add_snapshot, register_repository
    from sandbox.server import sandbox_client
    from tasks.opensearch import os_client

    r = system.region
    out: dict[str, Any] = {"region": r}
    ddb = sandbox_client(sb, "dynamodb", r)
    spec = next(t for t in system.dynamodb_tables if t.name == SOURCE_TABLE)
    rows = []
    for i in range(items):
        item = {spec.partition_key: {"S": f"emp-{i:04d}"}, "name": {"S": f"Employee {i}"}, "department": {"S": f"dept-{i % 7}"},
                "skills": {"SS": [f"skill-{i % 11}", f"skill-{(i * 3) % 13}"]}, "level": {"N": str(1 + i % 5)}}
        if spec.sort_key:
            item[spec.sort_key] = {"S": "profile"}
        rows.append({"PutRequest": {"Item": item}})
    for i in range(0, len(rows), 25):
        req = {SOURCE_TABLE: rows[i : i + 25]}
        while req:
            req = ddb.batch_write_item(RequestItems=req).get("UnprocessedItems") or {}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    out["backups"] = {}
    for t in system.dynamodb_tables:
        time.sleep(0.002)  # distinct creation times
        b = ddb.create_backup(TableName=t.name, BackupName=f"{t.name}-bench-{stamp}")["BackupDetails"]
        out["backups"][t.name] = b["BackupArn"]
    out["items"] = {SOURCE_TABLE: items}

    s3 = sandbox_client(sb, "s3", r)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    versions = []
    for n, body in enumerate((b"%PDF-1.4 resume v1 " * 200, b"%PDF-1.4 resume v2, edited " * 200)):
        versions.append(s3.put_object(Bucket=BUCKET, Key=OBJECT_KEY, Body=body, ContentType="application/pdf")["VersionId"])
    out["object_versions"] = versions
    kw: dict[str, Any] = {} if r == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": r}}
    s3.create_bucket(Bucket=TEST_BUCKET, **kw)

    d = system.opensearch_domains[0]
    c = os_client(sb.opensearch.url_for(d.name), r)
    docs = [{"_index": "employee_profiles", "_id": f"emp-{i:04d}", "_source": {"name": f"Employee {i}", "department": f"dept-{i % 7}"}}
            for i in range(3, items)]
    docs += [{"_index": "project_requirements", "_id": f"prj-{i:03d}", "_source": {"project": f"P{i}", "skills": [f"skill-{i % 11}"]}}
             for i in range(3, 20)]
    helpers.bulk(c, docs, refresh=True)
    register_repository(sb, system, d.name, REPO)
    indices = ["employee_profiles", "project_requirements"]
    out["snapshots"] = [add_snapshot(sb, d.name, REPO, indices, 2.0),
                        add_snapshot(sb, d.name, REPO, indices, 2.0 + 1 / 60, name="latest")]
    out["index_docs"] = {i: c.count(index=i)["count"] for i in indices}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dr_sandbox")
    ap.add_argument("--latency-ms", type=float, default=30.0)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--os-log", default=None, help="append the OpenSearch double's requests (after the preparation) to this file")
    ap.add_argument("--prep-out", default=None, help="write what the preparation made (JSON) to this file")
    ap.add_argument("--restore-delay-s", type=float, default=0.0,
                    help="restored tables stay CREATING this long (moto's are ACTIVE at once; real restores take minutes)")
    args = ap.parse_args()

    from opsbook.inventory import load_system
    from sandbox.seed import seed_system
    from sandbox.server import Sandbox

    on = log_opensearch_requests(args.os_log) if args.os_log else None
    if args.restore_delay_s > 0:
        slow_restores(args.restore_delay_s)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sb = Sandbox(latency_ms=0.0).start()
    try:
        sb.apply_env()
        system = load_system(SYSTEM)
        t0 = time.monotonic()
        seed_system(sb, system)
        prep = prepare(sb, system, args.items)
        prep["seed_and_prep_s"] = round(time.monotonic() - t0, 2)
        prep["restore_delay_s"] = args.restore_delay_s
        sb.set_latency_ms(args.latency_ms)
        if on is not None:
            on.set()
        print(f"bench.dr_sandbox: moto on {sb.endpoint}, OpenSearch double on 127.0.0.1:{sb.opensearch.port}; "
              f"seeded {SYSTEM} and prepared for dr-test in {prep['seed_and_prep_s']} s", file=sys.stderr)
        if args.prep_out:
            with open(args.prep_out, "w") as f:
                json.dump(prep, f)
        for k, v in sb.env().items():
            print(f"export {k}={v}")
        sys.stdout.flush()
        stop.wait()
    finally:
        sb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
