"""Benchmark: one bill-shock-breaker evaluation for C active cases (and C/5 users).

    .venv/bin/python -m bench.bill_shock --cases 250 500 --latency-ms 30

Starts the sandbox in-process (moto on 127.0.0.1, 30 ms per call), publishes
TokensUsed per case and per user (baseline_hours=2 here, so moto's
GetMetricData, which scans every stored datapoint per query, stays fast enough
to measure), runs one evaluation with dry_run=false under a Prefect test
server, and prints wall time and API calls by operation. The calls grow as
ceil(C/500) ListMetrics pages + ceil(C/500) GetMetricData calls for cases (the
same for users) + a few fixed calls: extrapolated for 10,000 cases in the output.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, nargs="+", default=[250, 500])
    ap.add_argument("--latency-ms", type=float, default=30.0)
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from opsbook.inventory import load_system
    from sandbox import leh_spend
    from sandbox.seed import seed_system
    from sandbox.server import Sandbox

    rows = []
    sb = Sandbox().start()
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), prefect_test_harness(server_startup_timeout=120):
        for n in args.cases:
            try:
                sb.reset()
                sb.set_latency_ms(0)
                sb.apply_env()
                leh = load_system("leh")
                leh = leh.model_copy(update={"bill_shock": leh.bill_shock.model_copy(update={"baseline_hours": 2})})
                seed_system(sb, leh)
                leh_spend.event_source_mapping(sb, leh)
                cases = {f"case-{i:05d}": (6000.0, 6500.0) for i in range(n)}
                cases["case-spike"] = (6000.0, 90000.0)
                leh_spend.publish(sb, leh, "CaseId", cases, hours=2)
                leh_spend.publish(sb, leh, "UserId", {f"user-{i:05d}": (18000.0, 19000.0) for i in range(n // 5)}, hours=2)
                sb.set_latency_ms(args.latency_ms)
                import flows.bill_shock_breaker.flow as bsb
                from opsbook import inventory

                real = inventory.load_system
                bsb.load_system = lambda name: leh if name == "leh" else real(name)
                t0 = time.monotonic()
                state = bsb.bill_shock_breaker(system="leh", dry_run=False, approver="bench", return_state=True)
                wall = time.monotonic() - t0
                bsb.load_system = real
                report = state.result(raise_on_failure=False)
                tripped = [r["resource"] for r in report.records]
                rows.append((n, wall, report.api_calls, report.api_calls_by_operation, tripped))
            finally:
                sb.set_latency_ms(0)
    sb.stop()
    print(f"bill-shock-breaker evaluation, sandbox with {args.latency_ms:g} ms per call")
    print(f"{'cases':>7} {'users':>6} {'wall s':>7} {'API calls':>9}  tripped")
    for n, wall, calls, by_op, tripped in rows:
        print(f"{n:>7} {n // 5:>6} {wall:>7.1f} {calls:>9}  {tripped}")
        print(f"        by operation: {by_op}")
    fixed = rows[-1][2] - 2 * (math.ceil((rows[-1][0] + 1) / 500) + math.ceil(rows[-1][0] // 5 / 500)) if rows else 0
    est = 2 * (math.ceil(10000 / 500) + math.ceil(2000 / 500)) + fixed
    print(f"extrapolated for 10,000 cases and 2,000 users: {est} API calls "
          f"(2 x (20 + 4) list/read calls + {fixed} fixed: identity, breakers, consumer, uploads of the top users, records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
