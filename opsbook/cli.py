"""opsbook command line.

  opsbook run RUNBOOK --system NAME [--param KEY=VALUE ...] [--json] [--execute [--yes]]
  opsbook list | policy RUNBOOK | demo | sandbox | server start|stop|status

Exit codes follow the Nagios plugin convention: 0 OK, 1 WARN, 2 CRIT,
3 UNKNOWN, and 3 for anything that could not run as asked (usage errors too).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from typing import Any, NoReturn

from opsbook import server

EXIT_UNKNOWN = 3


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 (= CRIT for monitors); we exit 3
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        if "--json" in sys.argv[1:]:
            print(json.dumps({"runbook": None, "system": None, "status": "UNKNOWN", "findings": [], "api_calls": 0,
                              "error": f"usage: {message}"}))
        sys.exit(EXIT_UNKNOWN)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise UsageError(f"--param {p!r}: expected KEY=VALUE")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def execution_mode(mutating: bool, execute: bool, yes: bool, isatty: bool) -> dict[str, Any]:
    """Shared by every runbook: dry run unless --execute; --yes only with --execute.

    Returns what it implies: the flow parameters dry_run and approver, and
    "approval", how the shell approves ("prompt": ask on the terminal after the
    plan; "yes": approved up front), which is not a flow parameter: run_runbook
    sets it around the call (tasks.mutation.shell_approval). Read-only
    runbooks take neither flag.
    """
    if yes and not execute:
        raise UsageError("--yes only makes sense with --execute")
    if not mutating:
        if execute:
            raise UsageError("this runbook is read-only: it has no --execute")
        return {}
    if not execute:
        return {"dry_run": True}
    if not yes and not isatty:
        raise UsageError("--execute without a terminal needs --yes (approve the printed plan up front)")
    return {"dry_run": False, "approval": "yes" if yes else "prompt", "approver": getpass.getuser()}


def _quiet_prefect_console(verbose: bool) -> None:
    """Prefect's own console chatter goes to the log file and the UI, not the user's screen."""
    from prefect.logging.handlers import PrefectConsoleHandler

    level = logging.INFO if verbose else logging.WARNING
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for h in logging.getLogger(name).handlers:
            if isinstance(h, PrefectConsoleHandler):
                h.setLevel(level)


def _prepare_prefect(verbose: bool) -> dict[str, Any]:
    """Server first (settings are read at import), then prefect."""
    url, started, took = server.use_api()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not verbose:  # Prefect's console chatter and task tracebacks stay in the UI; findings carry the reasons
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    import prefect  # noqa: F401  (reads the settings now)
    from prefect.settings import get_current_settings

    # A CLI run is short and watched: no flow heartbeat thread (it costs ~1 s at
    # the end of every sync flow). Set on this process's settings object;
    # temporary_settings() would cost 0.15 s of re-validation.
    get_current_settings().flows.heartbeat_frequency = None
    _quiet_prefect_console(verbose)
    return {"api_url": url, "server_started": started, "server_start_s": round(took, 2)}


def flush_prefect(timeout: float = 10.0) -> None:
    """Send queued run logs and events to the API before the process (or the server) stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout)


def run_runbook(name: str, system: str, params: dict[str, Any], verbose: bool = False,
                approval: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Run a runbook as a Prefect flow in this process; returns (report, meta).

    ``approval``: how the shell approves a mutating run ("prompt" or "yes"; None: the UI form)."""
    from flows import registry
    from tasks.mutation import shell_approval

    flow = registry.get(name).load()
    t0 = time.monotonic()
    with shell_approval(approval):
        state = flow(system=system, **params, return_state=True)
    wall = time.monotonic() - t0
    result = state.result(raise_on_failure=False)
    return result, {"state": state.type.value, "state_message": state.message, "wall_s": round(wall, 2)}


def _print_human(report: Any) -> None:
    from tasks.findings import Status
    from tasks.report import ICON, sort_findings

    if report.plan is not None:
        plan = report.plan
        print(f"plan ({'dry run' if report.dry_run else 'executed'}):")
        for a in plan["actions"]:
            print(f"  {a['resource']}: {a['current']} -> {a['target']}  [{a['iam_action']}] {a['evidence']}")
        for u in plan["unchanged"]:
            print(f"  unchanged: {u}")
        for c in plan.get("cannot", []):
            print(f"  CANNOT: {c}")
        for n in plan["notes"]:
            print(f"  note: {n}")
        if report.dry_run and plan["actions"]:
            print("  (dry run: nothing changed; add --execute to act)")
    for r in report.records:
        print(f"  {r['status']:13} {r['resource']}: {r['before']} -> {r['after']} {r['detail']}".rstrip())
    for f in sort_findings(report.findings):
        if f.status is not Status.OK:
            print(f"  {ICON[f.status]} {f.status.value:7} {f.check:24} {f.resource:40} {f.summary}")
    print(report.headline())
    if report.flow_run_url:
        print(f"  run in the Prefect UI: {report.flow_run_url}")


def cmd_run(args: argparse.Namespace) -> int:
    from flows import registry
    from tasks.inventory import load_system

    try:
        rb = registry.get(args.runbook)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    load_system(args.system)  # a broken inventory or unknown system fails before any AWS call
    params = parse_params(args.param or [])
    mode = execution_mode(rb.mutating, args.execute, args.yes, sys.stdin.isatty())
    approval = mode.pop("approval", None)
    params.update(mode)
    t0 = time.monotonic()
    meta = _prepare_prefect(args.verbose)
    if not args.json:
        print(f"opsbook: {rb.name} {args.system} running (Prefect API {meta['api_url']})...", file=sys.stderr)
    report, run_meta = run_runbook(rb.name, args.system, params, args.verbose, approval=approval)
    meta.update(run_meta)
    meta["total_s"] = round(time.monotonic() - t0, 2)
    from tasks.report import RunReport

    if not isinstance(report, RunReport):
        reason = f"{type(report).__name__}: {report}" if isinstance(report, BaseException) else str(run_meta.get("state_message"))
        if args.json:
            print(json.dumps({"runbook": rb.name, "system": args.system, "status": "UNKNOWN", "findings": [], "api_calls": 0,
                              "error": reason, **meta}))
        else:
            print(f"opsbook: {rb.name} {args.system} could not finish: {reason}", file=sys.stderr)
        return EXIT_UNKNOWN
    if args.json:
        print(json.dumps({**report.public(), "exit_code": report.status.exit_code, "timing": meta}, default=str))
    else:
        _print_human(report)
        print(f"  timing: run {meta['wall_s']} s, total {meta['total_s']} s"
              + (f" (incl. {meta['server_start_s']} s starting the local Prefect server)" if meta["server_started"] else ""), file=sys.stderr)
    return report.status.exit_code


def cmd_list(args: argparse.Namespace) -> int:
    from flows.registry import RUNBOOKS
    from tasks.inventory import InventoryError, known_systems, load_system

    print("runbooks:")
    for rb in RUNBOOKS.values():
        print(f"  {rb.name:30} {'mutating ' if rb.mutating else 'read-only'}  {rb.summary}")
    print("systems:")
    for name in known_systems():
        try:
            s = load_system(name)
            print(f"  {name:24} {s.region:15} {s.description}")
        except InventoryError as exc:
            print(f"  {name:24} BROKEN: {exc}")
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from flows import registry
    from tasks.iam import policy_for

    try:
        rb = registry.get(args.runbook)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    print(json.dumps(policy_for(rb.tasks()), indent=2))
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    if args.action == "start":
        url, started, took = server.start()
        print(f"Prefect server {'started' if started else 'already running'} at {server.ui_url()} ({took:.1f} s)")
    elif args.action == "stop":
        print("stopped" if server.stop() else "no opsbook-started server was running")
    else:
        up = server.healthy(server.api_url())
        print(f"{server.ui_url()}: {'up' if up else 'down'} (database in {server.home() / 'prefect'})")
        return 0 if up else EXIT_UNKNOWN
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from sandbox.cli import serve

    return serve(args.systems, args.fault or [], args.latency_ms, args.scale)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve every deployment from this process (the scheduler creates runs, the UI's Run button starts them)."""
    from deployments import schedules

    sb = None
    if args.sandbox:  # the embedded AWS, seeded with every system, for trying the UI without an account
        from sandbox.cli import start_seeded
        from tasks.inventory import known_systems

        sb, applied = start_seeded(known_systems(), args.fault or [])
        for a in applied:
            print(f"  fault injected into {a['system']}: {a['fault']} ({a.get('resource', '')})", file=sys.stderr)
        print(f"opsbook: embedded AWS sandbox on {sb.endpoint} (moto, 127.0.0.1 only)", file=sys.stderr)
    meta = _prepare_prefect(args.verbose)
    try:
        if args.work_pool:
            ids = schedules.deploy_to_work_pool(args.work_pool)
            print(f"registered {len(ids)} deployments on work pool {args.work_pool!r}; start a worker: prefect worker start --pool {args.work_pool}")
            return 0
        specs = schedules.deployment_specs()
        for s in specs:
            print(f"  {s['runbook'] + '/' + s['name']:64} {s['cron'] or 'on demand':18} {s['timezone']}", file=sys.stderr)
        print(f"opsbook: serving {len(specs)} deployments ({sum(1 for s in specs if s['cron'])} scheduled) to {meta['api_url']}",
              file=sys.stderr)
        print(f"opsbook: UI {server.ui_url()}/deployments  (Ctrl-C stops serving; the Prefect server keeps running: "
              "`opsbook server stop`)", file=sys.stderr, flush=True)
        schedules.serve()
    finally:
        if sb is not None:
            sb.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sandbox.cli import demo

    return demo(keep_server=args.keep_server, verbose=args.verbose)


def build_parser() -> Parser:
    p = Parser(prog="opsbook", description="Operations runbooks as Prefect flows.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    r = sub.add_parser("run", help="run a runbook for a system")
    r.add_argument("runbook")
    r.add_argument("--system", required=True, help="inventory name (systems/NAME.yaml) or path")
    r.add_argument("--param", action="append", metavar="KEY=VALUE", help="flow parameter (JSON values allowed)")
    r.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    r.add_argument("--execute", action="store_true", help="mutating runbooks: act (default is a dry run)")
    r.add_argument("--yes", action="store_true", help="with --execute: approve the printed plan up front")
    r.add_argument("-v", "--verbose", action="store_true", help="show Prefect's task logs")
    r.set_defaults(fn=cmd_run)
    sub.add_parser("list", help="runbooks and systems").set_defaults(fn=cmd_list)
    pol = sub.add_parser("policy", help="print the IAM policy a runbook needs")
    pol.add_argument("runbook")
    pol.set_defaults(fn=cmd_policy)
    sv = sub.add_parser("server", help="the local Prefect server opsbook reports to")
    sv.add_argument("action", choices=["start", "stop", "status"])
    sv.set_defaults(fn=cmd_server)
    sb = sub.add_parser("sandbox", help="serve the embedded AWS sandbox in the foreground (prints env to use it)")
    sb.add_argument("--systems", nargs="*", default=None, help="systems to seed (default: all)")
    sb.add_argument("--fault", action="append", metavar="SYSTEM:FAULT", help="inject a named fault")
    sb.add_argument("--latency-ms", type=float, default=0.0)
    sb.add_argument("--scale", type=int, default=1, help="10 = the benchmark's 10x HR system")
    sb.set_defaults(fn=cmd_sandbox)
    se = sub.add_parser("serve", help="serve every inventory's scheduled runbooks (runs them on schedule and from the UI)")
    se.add_argument("--work-pool", help="instead of serving, register the deployments on this process work pool")
    se.add_argument("--sandbox", action="store_true", help="run against the embedded AWS sandbox (moto on 127.0.0.1), seeded with every system")
    se.add_argument("--fault", action="append", metavar="SYSTEM:FAULT", help="with --sandbox: inject a named fault")
    se.add_argument("-v", "--verbose", action="store_true")
    se.set_defaults(fn=cmd_serve)
    d = sub.add_parser("demo", help="sandbox + faults + daily-health for the four seed systems")
    d.add_argument("--keep-server", action="store_true", help="leave the Prefect server running to browse the runs")
    d.add_argument("-v", "--verbose", action="store_true")
    d.set_defaults(fn=cmd_demo)
    return p


def _fail(args: argparse.Namespace, message: str) -> int:
    """Could not run as asked: exit 3, and with --json still exactly one JSON object on stdout."""
    print(f"opsbook: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"runbook": getattr(args, "runbook", None), "system": getattr(args, "system", None),
                          "status": "UNKNOWN", "findings": [], "api_calls": 0, "error": message}))
    return EXIT_UNKNOWN


def main(argv: list[str] | None = None) -> int:
    from tasks.inventory import InventoryError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UsageError as exc:
        return _fail(args, f"error: {exc}")
    except InventoryError as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        return _fail(args, "interrupted")
    except RuntimeError as exc:
        return _fail(args, str(exc))


if __name__ == "__main__":
    sys.exit(main())
