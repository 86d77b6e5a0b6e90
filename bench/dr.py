"""Benchmark: the seed's disaster_recovery_test.sh (seeds/000, 복구 테스트) vs
`opsbook run dr-test --system hr-resource-optimization --execute --yes --json`.

  cd /work/main && .venv/bin/python -m bench.run --dr --repeat 3 --latency-ms 30

(`bench.run --dr` calls main() below.) Every timed run gets a fresh sandbox from
bench/dr_sandbox.py (moto + the OpenSearch double on 127.0.0.1, HR seeded, 200 items in
Employees-Team2, an on-demand backup of each of the six tables, two versions of
test-file.pdf in the versioned hr-resumes-bucket-team2, the seed's destination bucket
hr-resumes-bucket-team2-test, snapshots `snapshot_<date>` and `latest` of both indices in
backup_repo; 30 ms per call), so both tools start from the same state. The harness checks
that state before each run, then measures:

  - total wall clock of the process;
  - per component: the seed's BENCH_STEP timestamps (stderr); opsbook's finding values
    (restore seconds, rounded to 0.1 s by opsbook) and its task runs from the Prefect API
    (restore + verify per component);
  - API calls: the tool's own count (seed: `aws` + `curl` processes; opsbook: `api_calls`,
    which includes its OpenSearch HTTP calls as es:ESHttp*) and what the sandbox saw (moto's
    request recorder + the OpenSearch double's request log, the harness's calls excluded);
  - verification: opsbook's PASS/FAIL per component; the seed does none, so the harness looks
    at what it restored (items in the copy, which backup, which object version, documents);
  - leftovers after the run: `-drtest-`/`-Test` tables, test buckets and their objects,
    `drtest_`/`test_` indices (and opsbook's own state table, which is by design).

Probes, once each: the seed script run a second time on the same sandbox (what its leftovers
do to the next quarterly test), and opsbook after ordinary writes to the sources since the
backup (one item updated, one document added).

Writes bench/results/dr.md and dr.json; latest.md links to it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.harness import (
    BENCH,
    HARNESS_UA,
    OPSBOOK,
    RESULTS,
    ROOT,
    T_SERVER_STOP,
    SandboxProc,
    aws_cli,
    breakdown,
    code_version,
    free_port,
    last_json,
    log,
    machine,
    recorder,
    snapshot_code,
)

SYSTEM = "hr-resource-optimization"
REGION = "us-east-2"
DOMAIN = "hr-resource-optimization-team2"
SOURCE_TABLE = "Employees-Team2"
BUCKET = "hr-resumes-bucket-team2"
TEST_BUCKET = "hr-resumes-bucket-team2-test"
OBJECT_KEY = "test-file.pdf"
REPO = "backup_repo"
SEED_SCRIPT = BENCH / "disaster_recovery_test.sh"
DR_SANDBOX = BENCH / "dr_sandbox.py"
T_RUN = 300
SLOW_RESTORE_S = 5.0  # the slow-restore probe: each restored table CREATING for this long
T_SERVER_START = 120
OPSBOOK_CMD = [OPSBOOK, "run", "dr-test", "--system", SYSTEM, "--execute", "--yes", "--json"]
COMPONENTS = ("dynamodb", "s3", "opensearch")


class DrSandbox(SandboxProc):
    """bench/dr_sandbox.py in the foreground (seeded and prepared), stopped with SIGTERM."""

    def __init__(self, latency_ms: float, home: str, items: int, env: dict[str, str], cwd: Path, restore_delay_s: float = 0.0) -> None:
        super().__init__(SYSTEM, 1, latency_ms, home, env=env, cwd=cwd)
        self.os_log = Path(home) / "opensearch-requests.jsonl"
        self.prep_out = Path(home) / "prep.json"
        self.errlog = Path(home) / "dr-sandbox.log"
        # by path: sys.path[0] is bench/, and `sandbox`/`tasks` come from PYTHONPATH (the code snapshot)
        self.cmd = [sys.executable, str(DR_SANDBOX), "--latency-ms", str(latency_ms), "--items", str(items),
                    "--os-log", str(self.os_log), "--prep-out", str(self.prep_out), "--restore-delay-s", str(restore_delay_s)]

    def prep(self) -> dict[str, Any]:
        return json.loads(self.prep_out.read_text())


# --- the harness's own clients (user agent filtered out of what the sandbox saw) --------------------


def clients(endpoint: str) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    cfg = Config(user_agent_extra=HARNESS_UA, retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=20)
    kw = dict(region_name=REGION, endpoint_url=endpoint, aws_access_key_id="sandbox", aws_secret_access_key="sandbox",
              aws_session_token="sandbox", config=cfg)
    return {s: boto3.client(s, **kw) for s in ("dynamodb", "s3")}


def os_get(os_url: str, path: str, method: str = "GET", body: dict | None = None) -> Any:
    req = urllib.request.Request(f"{os_url}/{path.lstrip('/')}", method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"user-agent": f"Python-urllib {HARNESS_UA}", "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=15) as r:
        return json.loads(r.read())


def scan_count(ddb: Any, table: str) -> int:
    return sum(p["Count"] for p in ddb.get_paginator("scan").paginate(TableName=table, Select="COUNT"))


def state(c: dict[str, Any], os_url: str, prep: dict[str, Any]) -> dict[str, Any]:
    """Test copies in the account (and how they look), read by the harness."""
    ddb, s3 = c["dynamodb"], c["s3"]
    names = [n for p in ddb.get_paginator("list_tables").paginate() for n in p["TableNames"]]
    backup_names = {}
    tables = []
    for n in names:
        if "-drtest-" not in n and "-Test" not in n:
            continue
        d = ddb.describe_table(TableName=n)["Table"]
        src = (d.get("RestoreSummary") or {}).get("SourceBackupArn")
        if src and src not in backup_names:
            try:
                b = ddb.describe_backup(BackupArn=src)["BackupDescription"]["BackupDetails"]
                backup_names[src] = f"{b['BackupName']} ({b['BackupCreationDateTime']:%H:%M:%S})"
            except Exception as exc:
                backup_names[src] = f"? ({type(exc).__name__})"
        tables.append({"name": n, "status": d.get("TableStatus"), "items": scan_count(ddb, n), "from_backup": backup_names.get(src)})
    versions = {v["VersionId"]: v.get("ETag") for v in s3.list_object_versions(Bucket=BUCKET, Prefix=OBJECT_KEY).get("Versions", [])}
    etag_of = {e: f"v{i + 1}" for i, vid in enumerate(prep["object_versions"]) for e in [versions.get(vid)] if e}
    buckets = []
    for b in s3.list_buckets()["Buckets"]:
        n = b["Name"]
        if "drtest" not in n and not n.endswith("-test"):
            continue
        objs = [{"key": v["Key"], "is": etag_of.get(v.get("ETag"), "other")} for v in s3.list_object_versions(Bucket=n).get("Versions", [])]
        buckets.append({"name": n, "prepared": n == TEST_BUCKET, "objects": objs})
    indices = [{"index": i["index"], "docs": int(i["docs.count"]) if i.get("docs.count") is not None else None}
               for i in os_get(os_url, "_cat/indices?format=json") if i["index"].startswith(("drtest_", "test_"))]
    snaps = [s["snapshot"] for s in os_get(os_url, f"_snapshot/{REPO}/_all")["snapshots"]]
    return {"tables": tables, "buckets": buckets, "indices": indices, "snapshots": snaps, "state_table": "opsbook-state" in names,
            "backups_of_source": len(ddb.list_backups(TableName=SOURCE_TABLE)["BackupSummaries"]),
            "source_items": scan_count(ddb, SOURCE_TABLE), "object_versions": len(versions)}


def leftover_counts(st: dict[str, Any]) -> dict[str, int]:
    return {"tables": len(st["tables"]), "buckets": sum(1 for b in st["buckets"] if not b["prepared"]),
            "objects": sum(len(b["objects"]) for b in st["buckets"]), "indices": len(st["indices"])}


def check_start(st: dict[str, Any], prep: dict[str, Any]) -> None:
    """The prepared state, the same for every run."""
    problems = []
    if st["tables"] or st["indices"] or any(b["objects"] or not b["prepared"] for b in st["buckets"]):
        problems.append(f"test copies before the run: {st}")
    if st["source_items"] != prep["items"][SOURCE_TABLE] or st["backups_of_source"] < 1 or st["object_versions"] != 2:
        problems.append(f"sources not prepared: {st['source_items']} items, {st['backups_of_source']} backups, {st['object_versions']} versions")
    if sorted(st["snapshots"]) != sorted(prep["snapshots"]) or st["state_table"]:
        problems.append(f"snapshots {st['snapshots']} (want {prep['snapshots']}), state table {st['state_table']}")
    if problems:
        raise RuntimeError("the sandbox is not in the prepared state: " + "; ".join(problems))


def write_after_backup(c: dict[str, Any], os_url: str) -> str:
    """Ordinary production writes since the backup: one sampled item updated, one document added."""
    item = c["dynamodb"].scan(TableName=SOURCE_TABLE, Limit=1)["Items"][0]
    key = {"id": item["id"]}
    c["dynamodb"].update_item(TableName=SOURCE_TABLE, Key=key, UpdateExpression="SET #l = :l", ExpressionAttributeNames={"#l": "level"},
                              ExpressionAttributeValues={":l": {"N": "9"}})
    os_get(os_url, "employee_profiles/_doc/emp-new?refresh=true", "PUT", {"name": "New hire", "department": "dept-0"})
    return f"updated {SOURCE_TABLE} item {key['id']['S']} (level=9); added document emp-new to employee_profiles"


# --- what the sandbox saw ------------------------------------------------------------------------


def _s3_op(method: str, url: str, headers: dict[str, str]) -> str:
    rest = url.split("://", 1)[-1]
    path, _, query = (rest.split("/", 1)[1] if "/" in rest else "").partition("?")
    params = [q.split("=")[0] for q in query.split("&") if q]
    if "/" in path.strip("/"):  # path style: /bucket/key
        if "x-amz-copy-source" in headers:
            return "CopyObject"
        return {"HEAD": "HeadObject", "GET": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(method, f"{method} object")
    sub = next((q for q in params if q in ("versioning", "versions", "tagging", "delete", "list-type", "location")), None)
    if method == "GET":
        return {"versioning": "GetBucketVersioning", "versions": "ListObjectVersions", "tagging": "GetBucketTagging",
                "list-type": "ListObjectsV2", "location": "GetBucketLocation"}.get(sub or "", "ListObjects")
    if method == "PUT":
        return {"versioning": "PutBucketVersioning", "tagging": "PutBucketTagging"}.get(sub or "", "CreateBucket")
    if method == "POST" and sub == "delete":
        return "DeleteObjects"
    return {"DELETE": "DeleteBucket", "HEAD": "HeadBucket"}.get(method, f"{method} bucket")


def recorded_calls(path: Path) -> dict[str, int]:
    """AWS operations in moto's recording, without the harness's (user agent); S3 named from method and path."""
    import base64
    from urllib.parse import parse_qs

    out: dict[str, int] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        e = json.loads(line)
        h = {k.lower(): v for k, v in e.get("headers", {}).items()}
        if HARNESS_UA in h.get("user-agent", ""):
            continue
        m = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/", h.get("authorization", ""))
        svc = m.group(1) if m else "?"
        op = h["x-amz-target"].rsplit(".", 1)[-1] if h.get("x-amz-target") else None
        if not op and svc == "s3":
            op = _s3_op(e.get("method", ""), e.get("url", ""), h)
        if not op:
            body = e.get("body") or ""
            try:
                raw = base64.b64decode(body) if e.get("body_encoded") else body.encode()
                op = parse_qs(raw.decode("utf-8", "replace")).get("Action", [None])[0]
            except Exception:
                op = None
        if not op and "/2021-01-01/opensearch/" in e.get("url", ""):
            op = "DescribeDomains" if "domain-info" in e["url"] else e["url"].split("/2021-01-01/opensearch/", 1)[1].split("?")[0]
        op = op or f"{e.get('method')} {e.get('url', '').split('://', 1)[-1].split('/', 1)[-1][:40]}"
        out[f"{svc}:{op}"] = out.get(f"{svc}:{op}", 0) + 1
    return dict(sorted(out.items()))


def opensearch_reply(stdout: str) -> str | None:
    """The seed's curl output (no trailing newline: "=== Test Complete ===" follows on the same line), shortened."""
    m = re.search(r"^3\. Testing OpenSearch restore\.\.\.\n(.*?)=== Test Complete ===", stdout, re.M | re.S)
    if not m:
        return None
    raw = m.group(1).strip()
    try:
        d = json.loads(raw)
    except ValueError:
        return raw[:300]
    if "error" in d:
        e = d["error"]
        return f"HTTP {d.get('status')} {e.get('type')}: {e.get('reason', '')[:160]}"
    return json.dumps(d)


def _os_op(method: str, path: str) -> str:
    rest = path.split("?", 1)[0].strip("/").split("/", 1)[-1] if "/" in path.strip("/") else ""
    parts = rest.split("/")
    if parts[0] == "_snapshot":
        kind = "_restore" if parts[-1] == "_restore" else ("_snapshot/REPO/SNAP" if len(parts) >= 3 else "_snapshot/REPO")
    elif parts[0].startswith("_"):
        kind = "/".join(parts[:2])
    elif len(parts) > 1 and parts[1].startswith("_"):
        kind = f"INDEX/{parts[1]}"
    else:
        kind = "INDEX"
    return f"{method} {kind}"


def opensearch_calls(path: Path, t0: float) -> tuple[dict[str, int], list[dict[str, Any]]]:
    out: dict[str, int] = {}
    seen = []
    if not path.exists():
        return out, seen
    for line in path.read_text().splitlines():
        e = json.loads(line)
        if e["t"] < t0 - 0.5 or HARNESS_UA in e.get("ua", ""):
            continue
        k = f"http:{_os_op(e['method'], e['path'])}"
        out[k] = out.get(k, 0) + 1
        seen.append({"method": e["method"], "path": e["path"], "status": e["status"], "ua": e["ua"].split(" ")[0]})
    return dict(sorted(out.items())), seen


# --- one timed run ----------------------------------------------------------------------------------


def run_once(tool: str, cmd: list[str], env: dict[str, str], latency_ms: float, home: str, cwd: Path, items: int,
             state_table: str | None = None, second_seed_run: list[str] | None = None, writes_after_backup: bool = False,
             restore_delay_s: float = 0.0) -> dict[str, Any]:
    rec = Path(home) / "moto-recording.jsonl"
    sandbox_env = {"MOTO_RECORDER_FILEPATH": str(rec), **({"PYTHONPATH": env["PYTHONPATH"]} if env.get("PYTHONPATH") else {})}
    sandbox = DrSandbox(latency_ms, home, items, sandbox_env, cwd, restore_delay_s)
    proc: subprocess.Popen | None = None
    try:
        exports = sandbox.start()
        endpoint = exports["AWS_ENDPOINT_URL"]
        os_url = exports["OPSBOOK_OPENSEARCH_URL_TEMPLATE"].format(domain=DOMAIN)
        prep = sandbox.prep()
        c = clients(endpoint)
        check_start(state(c, os_url, prep), prep)
        note = write_after_backup(c, os_url) if writes_after_backup else None
        if state_table:  # the schema opsbook's statestore.ensure_table creates: an account where opsbook has acted before
            c["dynamodb"].create_table(
                TableName=state_table, BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
                Tags=[{"Key": "opsbook:purpose", "Value": "leases-and-records"}])
        recorder(endpoint, "reset-recording")
        recorder(endpoint, "start-recording")
        out, err = Path(home) / f"{tool}.out", Path(home) / f"{tool}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            t0 = time.time()
            proc = subprocess.Popen(cmd, env={**env, **exports}, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
            try:
                rc = proc.wait(timeout=T_RUN)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{tool} did not finish within {T_RUN} s: {' '.join(cmd)}") from None
            t_end = time.time()
        recorder(endpoint, "stop-recording")
        aws_seen = recorded_calls(rec)
        os_seen, os_requests = opensearch_calls(sandbox.os_log, t0)
        after = state(c, os_url, prep)
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        r: dict[str, Any] = {
            "tool": tool, "exit_code": rc, "t0": t0, "wall_s": t_end - t0, "sandbox_start_s": sandbox.seed_s, "prep": prep,
            "recorded": aws_seen, "recorded_total": sum(aws_seen.values()), "opensearch_seen": os_seen,
            "opensearch_seen_total": sum(os_seen.values()), "opensearch_requests": os_requests,
            "after": after, "leftovers": leftover_counts(after), "stderr_tail": stderr.strip()[-1500:],
            "writes_after_backup": note,
        }
        r["seen_total"] = r["recorded_total"] + r["opensearch_seen_total"]
        if tool.startswith("seed"):
            steps: dict[str, dict[str, float]] = {}
            for m in re.finditer(r"^BENCH_STEP (\S+) (start|end) ([\d.]+)$", stderr, re.M):
                steps.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3)) - t0
            calls = re.search(r"^BENCH_CALLS aws (\d+) curl (\d+)$", stderr, re.M)
            r.update(steps={k: round(v["end"] - v["start"], 3) for k, v in steps.items() if "end" in v and "start" in v},
                     step_marks={k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in steps.items()},
                     aws_calls=int(calls.group(1)) if calls else None, curl_calls=int(calls.group(2)) if calls else None,
                     api_calls=int(calls.group(1)) + int(calls.group(2)) if calls else None,
                     errors=[ln.strip() for ln in stderr.splitlines()
                             if re.search(r"error|Error|exception|Unable|fatal", ln) and not ln.startswith("BENCH_")][:10],
                     opensearch_reply=opensearch_reply(stdout))
            if not calls or set(r["steps"]) != set(COMPONENTS):
                raise RuntimeError(f"seed script exited {rc} without its marks; stdout: {stdout[-600:]}; stderr: {stderr[-600:]}")
            if second_seed_run:  # the next quarterly test, on the account as this run left it
                t1 = time.time()
                cp = subprocess.run(second_seed_run, env={**env, **exports}, capture_output=True, text=True, timeout=T_RUN,
                                    stdin=subprocess.DEVNULL, cwd=cwd)
                r["second_run"] = {"exit_code": cp.returncode, "wall_s": round(time.time() - t1, 2),
                                   "errors": [ln.strip() for ln in cp.stderr.splitlines()
                                              if re.search(r"error|Error|exception|Unable", ln) and not ln.startswith("BENCH_")][:6],
                                   "opensearch_reply": opensearch_reply(cp.stdout), "stdout_tail": cp.stdout.strip()[-300:],
                                   "after": state(c, os_url, prep)}
        else:
            d = last_json(stdout)
            if "error" in d:
                raise RuntimeError(f"opsbook could not finish: {d['error']}; stderr: {stderr[-1500:]}")
            comp = {}
            for f in d.get("findings", []):
                if f["check"] in ("dr-dynamodb", "dr-s3", "dr-opensearch"):
                    comp.setdefault(f["check"][3:], []).append({"resource": f["resource"], "status": f["status"], "value": f.get("value"),
                                                                "summary": f["summary"]})
            r.update(api_calls=d["api_calls"], by_operation=d["api_calls_by_operation"], status=d["status"], outcome=d.get("outcome"),
                     duration_s=d.get("duration_s"), timing=d.get("timing"), flow_run_id=d.get("flow_run_id"), components=comp,
                     restore_s={k: round(sum(x["value"] or 0 for x in v), 2) for k, v in comp.items()},
                     passed={k: f"{sum(1 for x in v if x['status'] == 'OK')}/{len(v)}" for k, v in comp.items()},
                     not_ok=[f"{f['status']} {f['check']} {f['resource']}: {f['summary']}" for f in d.get("findings", []) if f["status"] != "OK"],
                     cleanup=[x.get("detail") for x in d.get("records", []) if x.get("kind") == "cleanup"])
        return r
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=20)
        sandbox.stop()


TASK_COMPONENT = {"restore-table": "dynamodb", "restore-objects": "s3", "restore-indices": "opensearch"}


def task_times(b: dict[str, Any] | None) -> dict[str, Any]:
    """Restore + verify seconds per component from the Prefect task runs; the rest by task name."""
    out: dict[str, Any] = {"component": {}, "other": {}}
    if not b:
        return out
    for t in b["tasks"]:
        k = TASK_COMPONENT.get(t["task"])
        bucket = out["component"] if k else out["other"]
        name = k or t["task"]
        bucket[name] = round(bucket.get(name, 0.0) + t["took_s"], 3)
    return out


# --- summary and report -------------------------------------------------------------------------------


def med(vals: list[float]) -> tuple[float, float, float] | None:
    v = [x for x in vals if x is not None]
    return (statistics.median(v), min(v), max(v)) if v else None


def fmt(x: tuple[float, float, float] | None, nd: int = 2) -> str:
    if not x:
        return "-"
    return f"{x[0]:.{nd}f}" if x[1] == x[2] else f"{x[0]:.{nd}f} ({x[1]:.{nd}f}-{x[2]:.{nd}f})"


LABELS = {
    "seed": "seed `disaster_recovery_test.sh` (aws CLI + curl)",
    "opsbook": "`opsbook run dr-test --execute --yes` (warm)",
    "opsbook_table": "opsbook, its state table already exists",
}


def comp_time(r: dict[str, Any], k: str) -> float | None:
    if r["tool"].startswith("seed"):
        return r["steps"].get(k)
    return (r.get("tasks") or {}).get("component", {}).get(k)


def leftovers_str(r: dict[str, Any]) -> str:
    lc = r["leftovers"]
    parts = [f"{lc['tables']} table{'s' if lc['tables'] != 1 else ''}", f"{lc['objects']} object{'s' if lc['objects'] != 1 else ''}"
             + (f" in {lc['buckets']} new bucket(s)" if lc["buckets"] else ""), f"{lc['indices']} ind{'ices' if lc['indices'] != 1 else 'ex'}"]
    return ", ".join(parts)


def verification_str(key: str, rs: list[dict[str, Any]]) -> str:
    if key.startswith("seed"):
        return "none"
    last = rs[-1]
    return ", ".join(f"{k} {last['passed'].get(k, '-')} PASS" for k in COMPONENTS)


def table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = ["| tool | total wall s | DynamoDB s | S3 s | OpenSearch s | API calls (own count) | sandbox saw (AWS + OpenSearch HTTP) | verification | leftovers after the run | exit | runs |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    for key, rs in runs.items():
        if not rs:
            continue
        own = statistics.median([r["api_calls"] for r in rs if r.get("api_calls") is not None])
        aws_seen = statistics.median([r["recorded_total"] for r in rs])
        os_seen = statistics.median([r["opensearch_seen_total"] for r in rs])
        lefts = sorted({leftovers_str(r) for r in rs})
        rows.append(f"| {LABELS[key]} | {fmt(med([r['wall_s'] for r in rs]))} | {fmt(med([comp_time(r, 'dynamodb') for r in rs]))} | "
                    f"{fmt(med([comp_time(r, 's3') for r in rs]))} | {fmt(med([comp_time(r, 'opensearch') for r in rs]))} | {own:g} | "
                    f"{aws_seen + os_seen:g} ({aws_seen:g} + {os_seen:g}) | {verification_str(key, rs)} | {'; '.join(lefts)} | "
                    f"{sorted({r['exit_code'] for r in rs})} | {len(rs)} |")
    return rows


def describe_state(st: dict[str, Any]) -> list[str]:
    out = []
    for t in st["tables"]:
        out.append(f"table {t['name']} ({t['status']}, {t['items']} items, restored from backup {t['from_backup']})")
    for b in st["buckets"]:
        objs = ", ".join(f"{o['key']} (= {o['is']})" for o in b["objects"]) or "empty"
        out.append(f"bucket {b['name']}{' (prepared before the run)' if b['prepared'] else ''}: {objs}")
    for i in st["indices"]:
        out.append(f"index {i['index']} ({i['docs']} docs)")
    if st["state_table"]:
        out.append("opsbook-state (opsbook's leases and records table, by design)")
    return out


def write_markdown(path: Path, runs: dict[str, list[dict[str, Any]]], probes: dict[str, Any], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    prep = next((r["prep"] for rs in runs.values() for r in rs), {})
    lines = [
        "# opsbook benchmark: dr-test, HR (hr-resource-optimization), vs the seed's disaster_recovery_test.sh",
        "",
        f"- date: {meta['date']}",
        f"- machine: {m['nproc']} CPUs (nproc), Python {m['python']}, {m['platform']}",
        f"- versions: {m['versions']}; {meta.get('awscli')}; {meta.get('curl')}",
        f"- command: `{meta['command']}`",
        f"- each run: a fresh `bench/dr_sandbox.py --latency-ms {meta['latency_ms']:g}` (moto + the OpenSearch double on 127.0.0.1, "
        f"{meta['latency_ms']:g} ms per call): HR seeded; {prep.get('items', {}).get(SOURCE_TABLE)} items in {SOURCE_TABLE}; an on-demand "
        f"backup of each of the 6 tables (plus the empty `<table>-sandbox` backups that seeding makes of the 2 backup_required tables "
        f"before any item exists); {BUCKET} versioned with 2 versions of {OBJECT_KEY}; {TEST_BUCKET} created empty (the seed script "
        f"needs it); snapshots {prep.get('snapshots')} of employee_profiles ({prep.get('index_docs', {}).get('employee_profiles')} docs) and "
        f"project_requirements ({prep.get('index_docs', {}).get('project_requirements')} docs) in {REPO} (the dated one newest). "
        f"Seeding and preparing: ~{statistics.median([r['sandbox_start_s'] for rs in runs.values() for r in rs] or [0]):.1f} s per run, outside the timings.",
        f"- opsbook: `{' '.join(['opsbook'] + OPSBOOK_CMD[1:])}`, warm (local Prefect server started once, one untimed run first)",
        "",
        "Medians (min-max) in seconds. Total wall: the whole process. Per component: the seed's own step timestamps (the "
        "`aws`/`curl` processes of that step: DynamoDB = list-backups + restore-table-from-backup, S3 = `aws s3 cp`, "
        "OpenSearch = one curl); opsbook's restore + verify task runs from the Prefect API (DynamoDB = the 6 restore-table "
        "tasks, run one after another). API calls: the tool's own count (seed: `aws` + `curl` processes; opsbook: `api_calls`, "
        "its OpenSearch HTTP calls included as es:ESHttp*) and what the sandbox received (moto's request recorder + the "
        "OpenSearch double's log, the harness's own calls excluded). Leftovers: `-drtest-`/`-Test` tables, objects in test "
        "buckets (and buckets the tool created), `drtest_`/`test_` indices, counted by the harness after the run.",
        "",
        *table(runs),
        "",
    ]
    for key, rs in runs.items():
        if not rs:
            continue
        last = rs[-1]
        lines.append(f"{LABELS[key]}:")
        lines.append("- sandbox saw (last run): " + ", ".join(f"{k} {v}" for k, v in {**last["recorded"], **last["opensearch_seen"]}.items()))
        if key.startswith("seed"):
            lines.append(f"- own count: {last['aws_calls']} `aws` + {last['curl_calls']} `curl`; exit codes {[r['exit_code'] for r in rs]}")
            lines.append("- step times (s): " + "; ".join(", ".join(f"{k} {v:.2f}" for k, v in r["steps"].items()) for r in rs))
            lines.append(f"- OpenSearch reply: `{last.get('opensearch_reply')}`; errors printed: {last.get('errors') or 'none'}")
        else:
            lines.append("- opsbook counted (last run): " + ", ".join(f"{k} {v}" for k, v in last["by_operation"].items()))
            lines.append(f"- status/outcome/exit: {sorted({(r.get('status'), r.get('outcome'), r['exit_code']) for r in rs})}; "
                         f"duration_s (flow start to report) {fmt(med([r.get('duration_s') for r in rs]))}")
            lines.append("- restore seconds from the findings' `value` (summed per component, opsbook rounds each to 0.1 s): "
                         + "; ".join(", ".join(f"{k} {v:g}" for k, v in r["restore_s"].items()) for r in rs))
            for k in COMPONENTS:
                for x in last["components"].get(k, []):
                    lines.append(f"  - {x['status']} dr-{k} {x['resource']}: {x['summary']}")
            other = [r["tasks"]["other"] for r in rs if r.get("tasks")]
            if other:
                names = sorted({n for o in other for n in o})
                lines.append("- other task runs, median s (summed per name): " + ", ".join(
                    f"{n} {statistics.median([o.get(n, 0.0) for o in other]):.2f}" for n in names))
            pre = [r["breakdown"]["flow_start_s"] for r in rs if r.get("breakdown")]
            post = [r["wall_s"] - r["breakdown"]["flow_end_s"] for r in rs if r.get("breakdown")]
            if pre:
                lines.append(f"- command start -> flow run start: median {statistics.median(pre):.2f} s; flow run end -> process exit: "
                             f"{statistics.median(post):.2f} s")
            lines.append(f"- cleanup record (last run): {(last.get('cleanup') or ['-'])[0]}")
            b = last.get("breakdown")
            if b:
                lines.append(f"- last run, task runs from the Prefect API (s after the command started): flow run {b['flow_start_s']:.2f}-"
                             f"{b['flow_end_s']:.2f}; " + ", ".join(f"{t['task']} @{t['start_s']:.2f} +{t['took_s']:.2f}" for t in b["tasks"]))
        lines.append("- left behind (last run): " + ("; ".join(describe_state(last["after"])) or "nothing"))
        lines.append("")
    if probes:
        lines += ["## Probes (once each, not in the table)", ""]
        s2 = probes.get("seed_second_run")
        if s2:
            lines += [f"**The seed script, run again on the account as its first run left it** (the next quarterly test, if nobody "
                      f"cleaned up by hand): exit {s2['exit_code']}, {s2['wall_s']} s; errors on stderr: "
                      + ("; ".join(f"`{e[:240]}`" for e in s2["errors"]) or "none") + f"; OpenSearch reply: `{s2.get('opensearch_reply')}`; "
                      "left behind: " + "; ".join(describe_state(s2["after"])), ""]
        ss, os_ = probes.get("seed_slow"), probes.get("opsbook_slow")
        if ss and os_:
            lines += [f"**Restores that take time** (each restored table CREATING for {SLOW_RESTORE_S:g} s, as a real restore is for "
                      "minutes or hours; moto's are ACTIVE at once; `bench/dr_sandbox.py --restore-delay-s`):", ""]
            lines.append(f"- seed: exit {ss['exit_code']}, {ss['wall_s']:.2f} s wall, DynamoDB step {ss['steps'].get('dynamodb', 0):.2f} s; "
                         "right after it printed \"=== Test Complete ===\" the harness found: "
                         + "; ".join(f"{t['name']} {t['status']}" for t in ss["after"]["tables"]))
            restores = [t for t in (os_.get("breakdown") or {}).get("tasks", []) if t["task"] == "restore-table"]
            lines.append(f"- opsbook: status {os_.get('status')}, exit {os_['exit_code']}, {os_['wall_s']:.2f} s wall, DynamoDB restore + verify "
                         f"{comp_time(os_, 'dynamodb') or 0:.2f} s for 6 tables; finding values (restore s): "
                         + ", ".join(f"{x['resource']} {x['value']}" for x in os_.get("components", {}).get("dynamodb", []))
                         + "; restore-table task runs (start s after the command, duration): "
                         + ", ".join(f"@{t['start_s']:.1f} +{t['took_s']:.1f}" for t in restores))
            lines.append("")
        w = probes.get("opsbook_writes_after_backup")
        if w:
            lines += [f"**opsbook after ordinary writes since the backup** ({w['writes_after_backup']}; before the run, by the harness): "
                      f"status {w['status']}, outcome {w['outcome']}, exit {w['exit_code']}:", ""]
            lines += [f"- {x}" for x in w["not_ok"]] or ["- (every finding OK)"]
            lines.append("")
    loads = [x for rs in runs.values() for r in rs for x in r.get("loadavg_1m", [])]
    if loads:
        lines += [f"1-minute load average around the runs: {min(loads):.2f}-{max(loads):.2f} on {m['nproc']} CPUs "
                  "(the machine is shared: other benchmarks and test suites may run at the same time).", ""]
    versions = sorted({r["code_version"] for rs in runs.values() for r in rs if r.get("code_version")})
    if len(versions) > 1:
        lines += [f"**Warning: opsbook's code changed while the benchmark ran** (versions {', '.join(versions)}); rerun for a clean comparison.", ""]
    elif versions:
        lines += [f"opsbook code version {versions[0]} (sha256 of its code directories; a snapshot of the live tree taken at the start, "
                  f"live tree {meta.get('live_code_at_start')} at the start, {meta.get('live_code_at_end')} at the end); every run used it.", ""]
    if meta.get("warmup"):
        w = meta["warmup"]
        lines += [f"Warm-up (untimed, first run after `opsbook server start`, which took {meta.get('server_start_s')} s): "
                  f"{w['wall_s']:.2f} s wall, {w['api_calls']} calls, {w['status']}.", ""]
    lines += ["Daily-health results: [latest.md](latest.md); rollback: [rollback.md](rollback.md).", ""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def link_from_latest(latest: Path) -> None:
    """latest.md is rewritten by the daily-health benchmark (which adds this link itself); add it now if missing."""
    if latest.exists() and "dr.md" not in latest.read_text():
        with open(latest, "a") as f:
            f.write("\nDR benchmark (dr-test vs the seed's disaster_recovery_test.sh): [dr.md](dr.md).\n")


# --- main ---------------------------------------------------------------------------------------------


def main(repeat: int, latency_ms: float, items: int = 200, table_variant: bool = True, probes: bool = True,
         out: Path = RESULTS / "dr.md", live_code: bool = False) -> int:
    t_start = time.monotonic()
    command = "cd /work/main && .venv/bin/python -m bench.run " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    aws = aws_cli()
    awscli_version = subprocess.run([aws, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    curl_version = subprocess.run(["curl", "--version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0].split(" (")[0]
    from opsbook.inventory import load_system

    state_table = load_system(SYSTEM).mutations.state_table
    home = tempfile.mkdtemp(prefix="opsbook-bench-dr-")
    port = free_port()
    base_env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "PREFECT_API_URL", "AWS_DEFAULT_PROFILE")}
    base_env.update({"OPSBOOK_HOME": home, "OPSBOOK_PREFECT_PORT": str(port), "OPSBOOK_QUOTAS": "off", "PYTHONUNBUFFERED": "1",
                     "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION})
    live_start = code_version()
    cwd = ROOT
    if not live_code:
        cwd = snapshot_code(Path(home) / "code")
        base_env["PYTHONPATH"] = os.pathsep.join([str(cwd)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
        log(f"opsbook code snapshot {code_version(cwd)} in {cwd}")
    seed_env = {**base_env, "AWS": aws}
    seed_cmd = ["bash", str(SEED_SCRIPT)]
    meta: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "command": command,
                            "latency_ms": latency_ms, "awscli": awscli_version, "curl": curl_version, "prefect_port": port, "home": home,
                            "items": items, "live_code": live_code, "code_version": code_version(cwd), "live_code_at_start": live_start}
    runs: dict[str, list[dict[str, Any]]] = {"seed": [], "opsbook": [], "opsbook_table": []}
    probe_results: dict[str, Any] = {}
    n_run = 0

    def one(tool: str, cmd: list[str], env: dict[str, str], **kw: Any) -> dict[str, Any]:
        nonlocal n_run
        n_run += 1
        run_home = Path(home) / f"run-{n_run:02d}-{tool}"
        run_home.mkdir()
        before = code_version(cwd)
        load0 = os.getloadavg()[0]
        r = run_once(tool, cmd, env, latency_ms, str(run_home), cwd, items, **kw)
        after = code_version(cwd)
        r["code_version"] = before if before == after else f"{before}->{after}"
        r["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        return r

    server_started = False
    try:
        log(f"OPSBOOK_HOME={home}; starting the local Prefect server on port {port}")
        server_started = True
        t = time.monotonic()
        cp = subprocess.run([OPSBOOK, "server", "start"], env=base_env, capture_output=True, text=True, timeout=T_SERVER_START, cwd=cwd)
        meta["server_start_s"] = round(time.monotonic() - t, 1)
        log(f"opsbook server start ({meta['server_start_s']} s): {(cp.stdout or cp.stderr).strip()[-200:]}")
        if cp.returncode != 0:
            raise RuntimeError(f"opsbook server start exited {cp.returncode}: {cp.stderr[-800:]}")
        w = one("warmup", OPSBOOK_CMD, base_env)
        meta["warmup"] = {k: w.get(k) for k in ("wall_s", "api_calls", "status", "outcome")}
        log(f"opsbook warm-up (untimed): {w['wall_s']:.2f} s wall, {w['api_calls']} calls, {w['status']}")
        for i in range(repeat):
            plan: list[tuple[str, list[str], dict[str, str], dict[str, Any]]] = [
                ("seed", seed_cmd, seed_env, {"second_seed_run": seed_cmd if (probes and i == 0) else None}),
                ("opsbook", OPSBOOK_CMD, base_env, {})]
            if table_variant:
                plan.append(("opsbook_table", OPSBOOK_CMD, base_env, {"state_table": state_table}))
            for key, cmd, env, kw in plan:
                r = one(key, cmd, env, **kw)
                if key == "seed" and r.get("second_run"):
                    probe_results["seed_second_run"] = r.pop("second_run")
                runs[key].append(r)
                comp = {k: comp_time(r, k) if key == "seed" else None for k in COMPONENTS}
                log(f"{key} {i + 1}/{repeat} [code {r['code_version']}]: wall {r['wall_s']:.2f} s, {r.get('api_calls')} calls own, "
                    f"{r['seen_total']} seen, exit {r['exit_code']}, leftovers {r['leftovers']}"
                    + (f", steps {comp}" if key == "seed" else f", {r.get('status')} {r.get('passed')}"))
        if probes:
            p = one("opsbook_writes", OPSBOOK_CMD, base_env, state_table=state_table, writes_after_backup=True)
            probe_results["opsbook_writes_after_backup"] = {k: p.get(k) for k in ("writes_after_backup", "status", "outcome", "exit_code",
                                                                                 "not_ok", "wall_s", "api_calls", "leftovers")}
            log(f"probe, writes after the backup: {p.get('status')} {p.get('outcome')}: {p.get('not_ok')}")
            for key, cmd, env in (("seed_slow", seed_cmd, seed_env), ("opsbook_slow", OPSBOOK_CMD, base_env)):
                p = one(key, cmd, env, state_table=state_table if key.startswith("opsbook") else None, restore_delay_s=SLOW_RESTORE_S)
                probe_results[key] = p
                log(f"probe, restores take {SLOW_RESTORE_S:g} s: {key} wall {p['wall_s']:.2f} s, exit {p['exit_code']}, "
                    f"tables after: {[(t['name'], t['status']) for t in p['after']['tables']]}")
        for r in runs["opsbook"] + runs["opsbook_table"] + ([probe_results["opsbook_slow"]] if "opsbook_slow" in probe_results else []):
            try:
                r["breakdown"] = breakdown(port, r)
            except Exception as exc:  # diagnostics only
                r["breakdown"] = None
                log(f"breakdown of {r.get('flow_run_id')}: {exc}")
            r["tasks"] = task_times(r["breakdown"])
    finally:
        if server_started:
            try:
                cp = subprocess.run([OPSBOOK, "server", "stop"], env=base_env, capture_output=True, text=True, timeout=T_SERVER_STOP, cwd=cwd)
                log(f"opsbook server stop: {cp.stdout.strip() or cp.stderr.strip()}")
            except subprocess.TimeoutExpired:
                log("`opsbook server stop` timed out")
        if any(runs.values()):
            meta["total_s"] = round(time.monotonic() - t_start, 1)
            meta["live_code_at_end"] = code_version()
            text = write_markdown(out, runs, probe_results, meta)
            out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": runs, "probes": probe_results}, indent=1, default=str))
            link_from_latest(out.parent / "latest.md")
            print(text)
            log(f"wrote {out} (total {meta['total_s']} s)")
    return 0
