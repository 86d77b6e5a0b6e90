"""Benchmark: dlq-redrive moving 1,000 dead letters of LEH, at the inventory's rate and flat out.

  cd /work/main && .venv/bin/python -m bench.redrive [--messages 1000] [--latency-ms 30] [--fast-rate 3000]

Standalone: starts its own sandbox in this process (moto + the OpenSearch
double on 127.0.0.1, ``latency_ms`` added to every call, like a round trip
to a region), seeds leh, creates the worker's event source mapping, fills the
DLQ, and runs the flow in this process with ``shell_approval("yes")`` under
Prefect's test harness (a temporary local server). Two runs, each on a freshly
filled DLQ: the inventory's ``redrive_rate_per_s`` (what an operator gets by
default), then ``rate_per_s=--fast-rate`` (the ceiling: batches move one at a
time, 3 calls per batch, so the latency bounds it). Prints messages/s, API
calls per message (the move alone and the whole run) and checks that every
message arrived once. Stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any


def one_run(sb: Any, inv: Any, messages: int, rate: float | None) -> dict[str, Any]:
    from flows.dlq_redrive.flow import dlq_redrive
    from opsbook.mutation.core import shell_approval
    from sandbox import leh_queues

    sb.reset()
    from sandbox.seed import seed_system

    seed_system(sb, inv)
    leh_queues.consumer_mapping(sb, inv)
    t = time.monotonic()
    leh_queues.fill_dlq(sb, inv, messages)
    fill_s = time.monotonic() - t
    params: dict[str, Any] = {"rate_per_s": rate} if rate else {}
    t = time.monotonic()
    with shell_approval("yes"):
        state = dlq_redrive(system=inv.name, dry_run=False, approver="bench", return_state=True, **params)
    wall = time.monotonic() - t
    report = state.result(raise_on_failure=False)
    moved_f = next(f for f in report.findings if f.check == "redrive-moved")
    calls_f = next(f for f in report.findings if f.check == "redrive-api-calls")
    move_s = float(moved_f.details["seconds"])
    arrived = leh_queues.read_all(sb, inv, "leh-ai-jobs")
    return {
        "rate": rate or next(q.redrive_rate_per_s for q in inv.sqs_queues if q.dlq), "outcome": report.outcome, "status": report.status.value,
        "moved": moved_f.value, "move_s": move_s, "msg_per_s": moved_f.value / move_s if move_s else 0.0, "flow_s": report.duration_s,
        "wall_s": wall, "fill_s": fill_s, "act_calls_per_msg": calls_f.value, "act_calls": calls_f.details["by_operation"],
        "run_calls": report.api_calls, "run_calls_per_msg": report.api_calls / moved_f.value if moved_f.value else 0.0,
        "arrived": len(arrived), "distinct": len({m["body"] for m in arrived}),
        "dlq_left": leh_queues.depth(sb, inv, "leh-ai-jobs-dlq"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=30.0)
    ap.add_argument("--fast-rate", type=float, default=3000.0)
    args = ap.parse_args(argv)

    os.environ.pop("PREFECT_API_URL", None)
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from opsbook import aws
    from opsbook.inventory import load_system
    from sandbox.server import Sandbox

    inv = load_system("leh")
    sb = Sandbox(latency_ms=args.latency_ms).start()
    results = []
    try:
        sb.apply_env()
        aws.require_loopback_endpoint()
        t = time.monotonic()
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), prefect_test_harness(server_startup_timeout=120):
            print(f"bench.redrive: Prefect test server up in {time.monotonic() - t:.1f} s; sandbox latency {args.latency_ms:g} ms/call",
                  file=sys.stderr)
            for rate in (None, args.fast_rate):
                r = one_run(sb, inv, args.messages, rate)
                results.append(r)
                print(f"bench.redrive: rate {r['rate']:g}/s done: {r['moved']} moved in {r['move_s']:.1f} s", file=sys.stderr)
    finally:
        sb.stop()
        aws.reset_clients()
    print(f"\ndlq-redrive, leh, {args.messages} messages, sandbox latency {args.latency_ms:g} ms per call, {os.cpu_count()} CPUs\n")
    print("| rate limit | outcome | moved | move s | msg/s | flow s | calls/msg (move) | calls/msg (run) | arrived (distinct) | DLQ left |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['rate']:g}/s | {r['outcome']} ({r['status']}) | {r['moved']} | {r['move_s']:.1f} | {r['msg_per_s']:.1f} | {r['flow_s']:.1f} | "
              f"{r['act_calls_per_msg']:.3f} | {r['run_calls_per_msg']:.3f} | {r['arrived']} ({r['distinct']}) | "
              f"{r['dlq_left']['visible']}+{r['dlq_left']['in_flight']} |")
    print()
    for r in results:
        print(f"- rate {r['rate']:g}/s: move calls {r['act_calls']}; run total {r['run_calls']}; DLQ fill {r['fill_s']:.1f} s")
    ok = all(r["moved"] == args.messages and r["distinct"] == args.messages == r["arrived"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
