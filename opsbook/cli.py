"""opsbook command line.

  opsbook run RUNBOOK [RUNBOOK ...] --system NAME [--param KEY=VALUE ...] [--json] [--execute [--yes]] [--sandbox]
  opsbook run RUNBOOK --help            the runbook's parameters, types, defaults and descriptions
  opsbook list | policy RUNBOOK | serve | demo | sandbox | replay | server start|stop|status

Exit codes follow the Nagios plugin convention (see EXIT_CODES), and the first
line on stdout is the plugin summary (``STATUS - text | perfdata``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from typing import Any, NoReturn

from opsbook import server

EXIT_UNKNOWN = 3
EXIT_CODES = """\
exit codes (the Nagios plugin convention, so monitors can run opsbook as a check):
  0  OK       every check passed; mutating: done, or planned cleanly (dry run)
  1  WARN     something needs attention; mutating: done with warnings
  2  CRIT     something is broken; mutating: failed, or unhealthy afterwards
  3  UNKNOWN  data could not be read, or opsbook could not run as asked: usage error, unknown or
              ill-typed --param, unknown system, broken inventory, no AWS credentials; mutating:
              refused (rejected, approval timed out, drift, lease held, wrong account, a guessed
              target not accepted). A Prefect server that does not answer is not one: the run goes
              on without it (its records kept for `opsbook replay`)
"""
# Parameters the CLI sets itself: never --param.
SET_BY_CLI = {
    "system": "use --system NAME",
    "dry_run": "mutating runbooks are dry runs unless --execute",
    "approval": "--execute asks on the terminal; --execute --yes approves the printed plan up front",
    "approver": "the approver is you (your OS user) on the shell",
}


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 (= CRIT for monitors); we exit 3
        self.print_usage(sys.stderr)
        json_out = "--json" in sys.argv[1:]
        sys.exit(_fail(json_out, None, None, f"error: {message}"))


def parse_params(pairs: list[str]) -> dict[str, str]:
    """--param KEY=VALUE pairs as strings (runner.coerce reads them against the runbook's parameter types)."""
    out: dict[str, str] = {}
    for p in pairs:
        if "=" not in p:
            raise UsageError(f"--param {p!r}: expected KEY=VALUE")
        k, v = p.split("=", 1)
        k = k.strip()
        if k in SET_BY_CLI:
            raise UsageError(f"--param {k}: set by opsbook itself: {SET_BY_CLI[k]}")
        out[k] = v
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


# --- where the AWS calls go -------------------------------------------------------------------


def sandbox_module(name: str) -> Any:
    """A module of the sandbox, a development extra (moto): a clear error where it is not installed."""
    import importlib

    try:
        return importlib.import_module(f"sandbox.{name}")
    except ImportError as exc:
        raise UsageError(f"the embedded sandbox is a development extra, not installed here ({exc}); "
                         "install it with: pip install 'opsbook[sandbox]'") from None


def start_sandbox(systems: list[str], faults: list[str]) -> Any:
    """The embedded AWS (moto on 127.0.0.1 + the OpenSearch double), seeded; only when asked for (--sandbox)."""
    cli = sandbox_module("cli")
    known = sandbox_module("faults").FAULTS
    for spec in faults:
        system, _, fault = spec.partition(":")
        if not system or fault not in known:
            raise UsageError(f"--fault {spec!r}: expected SYSTEM:FAULT with FAULT one of {', '.join(sorted(known))}")
    names = list(dict.fromkeys(systems + [f.partition(":")[0] for f in faults]))
    sb, applied = cli.start_seeded(names, faults)
    for a in applied:
        print(f"  fault injected into {a['system']}: {a['fault']} ({a.get('resource', '')})", file=sys.stderr)
    return sb


def aws_target(sandboxed: bool) -> str:
    """Where this run's AWS calls go, said before it starts; no credentials at all stops here (exit 3)."""
    from opsbook import aws

    endpoint = aws.endpoint_url()
    if sandboxed:
        return f"the embedded sandbox at {endpoint} (--sandbox)"
    if endpoint:
        where = "a sandbox or emulator on this machine" if aws.is_loopback_url(endpoint) else "a custom endpoint"
        return f"AWS_ENDPOINT_URL={endpoint} ({where}, from your environment)"
    import boto3

    creds = boto3.Session().get_credentials()
    if creds is None:
        raise UsageError("no AWS credentials found (standard chain: AWS_PROFILE, SSO, environment, instance or task role); "
                         "log in to AWS, or add --sandbox to try opsbook on the embedded sandbox")
    profile = os.environ.get("AWS_PROFILE")
    return f"real AWS ({creds.method} credentials{', profile ' + profile if profile else ''})"


def start_discovery_early(rbs: list[Any], args: argparse.Namespace, checked: bool = False) -> bool:
    """When the first runbook's first read is the system's tag discovery and nothing left to check can refuse the run
    (``checked``: its --params were validated, or it has none; no embedded sandbox to start; no off-machine target a
    loopback-only run would refuse), start that discovery now: it waits on AWS while the flows are imported and the
    Prefect run is created (~0.5 s; ~0.3 s once the parameters were checked), and the run takes its result and counts
    its calls (opsbook.resources.prefetch)."""
    from opsbook import loopback
    from opsbook.inventory import load_system
    from opsbook.resources import prefetch

    if not rbs[0].discovers_first or (args.param and not checked) or args.sandbox or args.help:
        return False
    if os.environ.get("OPSBOOK_EARLY_DISCOVERY", "on").lower() in ("0", "off", "false", "no"):
        return False  # the run discovers in its own task, as a served run does (for a comparison, or a suspicion)
    if any(p.split("=", 1)[0].strip() == "undo_run" and p.split("=", 1)[-1].strip() for p in args.param or []):
        return False  # putting back an earlier run's changes reads its records, not the system
    inv = load_system(args.system)
    if loopback.preflight(inv, ["es:ESHttpGet"], pages=True) is not None:
        return False
    return prefetch(inv)


def count_left_early(report: Any) -> None:
    """An early discovery the run never took (it ended before its discovery) still made its calls: the report counts
    them, so that the command never says fewer calls than it made."""
    from opsbook.report import RunReport
    from opsbook.resources import left_early

    left = left_early()
    if not left.total or not isinstance(report, RunReport):
        return
    report.api_calls += left.total
    report.api_retries += left.retries_total
    for op, n in left.by_operation().items():
        report.api_calls_by_operation[op] = report.api_calls_by_operation.get(op, 0) + n


def refuse_off_machine(rb: Any, system: str) -> None:
    """Loopback means loopback (opsbook.loopback): a run whose AWS calls stay on this machine refuses, before any call,
    to read an OpenSearch cluster or page a channel off it (exit 3, one line naming what to set)."""
    import importlib

    from opsbook import loopback
    from opsbook.inventory import load_system

    if not loopback.loopback_only():
        return
    actions = {a for t in rb.tasks() for a in getattr(t, "iam_actions", ())}
    pages = hasattr(importlib.import_module(rb.module), "page_report")  # the runbooks that page (opsbook.paging)
    why = loopback.preflight(load_system(system), actions, pages)
    if why:
        raise UsageError(f"refusing to run: {why}")


# --- commands ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    server.configure()  # before anything imports Prefect (opsbook.runner checks it did)
    from opsbook import registry, runner
    from opsbook.inventory import load_system

    names = args.runbook or []
    if len(names) > 1:
        return cmd_run_many(args, names)
    args.runbook = names[0] if names else None
    if args.runbook is None:
        if args.help:
            return print_run_help(None)
        raise UsageError("the following arguments are required: RUNBOOK (opsbook list shows them)")
    try:
        rb = registry.get(args.runbook)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    if args.help:
        return print_run_help(rb)
    if not args.system:
        raise UsageError("the following arguments are required: --system")
    if args.fault and not args.sandbox:
        raise UsageError("--fault needs --sandbox (faults are injected into the embedded sandbox only)")
    load_system(args.system)  # a broken inventory or unknown system fails before any AWS call
    params = parse_params(args.param or [])
    mode = execution_mode(rb.mutating, args.execute, args.yes, sys.stdin.isatty())
    off = go_offline(args.offline, rb.name, args.system)  # before Prefect is imported: it reads its API address once
    runner.import_prefect(args.verbose)
    if off:
        off.record_events()
    early = start_discovery_early([rb], args)  # before the flow is imported, when no parameter is left to check
    flow = rb.load()
    try:
        params = runner.coerce(flow, params)
        runner.validate(flow, rb.name, {"system": args.system, **params}, hidden=set(SET_BY_CLI))
    except runner.ParameterError as exc:
        raise UsageError(str(exc)) from None
    if not early:
        start_discovery_early([rb], args, checked=True)  # the parameters are valid: overlap the run's creation still
    approval = mode.pop("approval", None)  # how the shell approves: not a flow parameter (tasks.mutation.shell_approval)
    params.update(mode)
    sb = start_sandbox([args.system], args.fault or []) if args.sandbox else None
    try:
        where = aws_target(sb is not None)
        refuse_off_machine(rb, args.system)
        t0 = time.monotonic()
        off, meta = prefect_or_offline(off, args, rb.name)
        if not args.json:
            print(f"opsbook: {rb.name} {args.system} on {where}; Prefect {meta['api_url'] or 'offline (journal)'}", file=sys.stderr)
        report, run_meta = runner.run_runbook(rb.name, args.system, params, approval=approval)
        count_left_early(report)
    finally:
        if off:
            off.finish()
        if sb is not None:
            sb.stop()
    meta.update(run_meta, aws=where, sandbox=sb is not None, total_s=round(time.monotonic() - t0, 2))
    return report_result(args, rb.name, report, meta)


def prefect_or_offline(off: Any, args: argparse.Namespace, name: str) -> tuple[Any, dict[str, Any]]:
    """The Prefect server up (started here when it is local and down), or, when it cannot be had, the offline journal."""
    from opsbook import runner

    if not off:
        try:
            return None, runner.prepare_prefect(args.verbose)
        except RuntimeError as exc:  # opsbook could not start its local server either: go on without it
            off = go_offline(False, name, args.system, why=str(exc))
            off.point(runner.prefect_settings())
            off.record_events()
    return off, offline_meta(off)


def many_params(rbs: list[Any], system: str, raw: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each runbook's --param values: those it takes (an error when none takes one); mutating ones only plan."""
    import inspect

    from opsbook import runner

    per: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for rb in rbs:
        flow = rb.load()
        accepted = inspect.signature(flow.fn).parameters
        mine = {k: v for k, v in raw.items() if k in accepted}
        taken |= set(mine)
        try:
            mine = runner.coerce(flow, mine)
            runner.validate(flow, rb.name, {"system": system, **mine}, hidden=set(SET_BY_CLI))
        except runner.ParameterError as exc:
            raise UsageError(f"{rb.name}: {exc}") from None
        per[rb.name] = {**mine, **({"dry_run": True} if rb.mutating else {})}
    unused = [k for k in raw if k not in taken]
    if unused:
        raise UsageError(f"--param {unused[0]}: none of {', '.join(rb.name for rb in rbs)} has such a parameter")
    return per


def cmd_run_many(args: argparse.Namespace, names: list[str]) -> int:
    """Several runbooks for one system in one process, sharing its resolution (tag discovery and lookups), one after
    another; one report each, the worst status wins. Mutating runbooks only plan here (--execute takes one runbook)."""
    from opsbook import registry, runner
    from opsbook.inventory import load_system
    from opsbook.resources import shared_reads

    args.runbook = " ".join(names)
    if len(set(names)) != len(names):
        raise UsageError(f"a runbook named twice: {' '.join(names)}")
    try:
        rbs = [registry.get(n) for n in names]
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    if args.help:
        raise UsageError("--help takes one runbook: opsbook run RUNBOOK --help")
    if not args.system:
        raise UsageError("the following arguments are required: --system")
    if args.execute or args.yes:
        raise UsageError("a combined run only plans: --execute takes one runbook (opsbook run RUNBOOK --system X --execute)")
    if args.fault and not args.sandbox:
        raise UsageError("--fault needs --sandbox (faults are injected into the embedded sandbox only)")
    load_system(args.system)
    raw = parse_params(args.param or [])
    off = go_offline(args.offline, "+".join(names), args.system)
    runner.import_prefect(args.verbose)
    if off:
        off.record_events()
    per = many_params(rbs, args.system, raw)  # every runbook's parameters checked (its required ones too) ...
    start_discovery_early(rbs, args, checked=True)  # ... before any call
    sb = start_sandbox([args.system], args.fault or []) if args.sandbox else None
    results: list[tuple[str, Any, dict[str, Any]]] = []
    try:
        where = aws_target(sb is not None)
        for rb in rbs:
            refuse_off_machine(rb, args.system)
        t0 = time.monotonic()
        off, meta = prefect_or_offline(off, args, names[0])
        if not args.json:
            print(f"opsbook: {', '.join(names)} {args.system} on {where}; Prefect {meta['api_url'] or 'offline (journal)'}",
                  file=sys.stderr)
        with shared_reads():
            for rb in rbs:
                report, run_meta = runner.run_runbook(rb.name, args.system, per[rb.name])
                results.append((rb.name, report, run_meta))
        count_left_early(results[0][1])
    finally:
        if off:
            off.finish()
        if sb is not None:
            sb.stop()
    meta.update(aws=where, sandbox=sb is not None, total_s=round(time.monotonic() - t0, 2))
    return report_many(args, results, meta)


def report_many(args: argparse.Namespace, results: list[tuple[str, Any, dict[str, Any]]], meta: dict[str, Any]) -> int:
    from opsbook import output
    from opsbook.findings import Status, worst
    from opsbook.report import RunReport

    runs, statuses = [], []
    for name, report, run_meta in results:
        if isinstance(report, RunReport):
            statuses.append(report.status)
            runs.append({**report.public(), "exit_code": report.status.exit_code, "timing": run_meta})
        else:
            reason = f"{type(report).__name__}: {report}" if isinstance(report, BaseException) else str(run_meta.get("state_message"))
            statuses.append(Status.UNKNOWN)
            runs.append({"runbook": name, "system": args.system, "status": "UNKNOWN", "findings": [], "api_calls": 0,
                         "error": f"{name} {args.system} could not finish: {reason}", "exit_code": EXIT_UNKNOWN, "timing": run_meta})
    status = worst(statuses)
    if args.json:
        print(json.dumps({"runs": runs, "status": status.value, "exit_code": status.exit_code, "timing": meta}, default=str))
        return status.exit_code
    calls = sum(r["api_calls"] for r in runs)
    print(f"{status.value} - {len(runs)} runbooks on {args.system}: " + ", ".join(f"{r['runbook']} {r['status']}" for r in runs)
          + f" | api_calls={calls}")
    fancy = output.fancy(sys.stdout, args.plain)
    for (name, report, _), r in zip(results, runs):
        print()
        if isinstance(report, RunReport):
            output.print_report(report, fancy)
        else:
            print(output.error_line(r["error"]))
    print(f"  timing: total {meta['total_s']} s for {len(runs)} runbooks", file=sys.stderr)
    return status.exit_code


def go_offline(forced: bool, runbook: str, system: str, why: str | None = None) -> Any:
    """Run without orchestration when the Prefect server does not answer (or --offline): one line says so."""
    from opsbook import offline

    t = server.configure()
    if forced:
        why = "--offline"
    elif why is None:
        got = server.unanswered(t, offline.probe_timeout())
        if got is None or got[1]:  # it answers, or nothing listens on this machine's port: opsbook starts its server
            return None
        why = got[0]
    off = offline.start(why, runbook, system)
    print(f"opsbook: {why}; running {runbook} without orchestration, its records kept in {off.journal.path} "
          "(`opsbook replay` sends them to the Prefect server once it answers)", file=sys.stderr, flush=True)
    return off


def offline_meta(off: Any) -> dict[str, Any]:
    return {"api_url": None, "ui_url": None, "api_source": "offline", "server_started": False, "server_start_s": 0,
            "offline": {"reason": off.reason, "journal": str(off.journal.path), "replay": "opsbook replay"}}


def report_result(args: argparse.Namespace, runbook: str, report: Any, meta: dict[str, Any]) -> int:
    from opsbook import output
    from opsbook.report import RunReport

    if not isinstance(report, RunReport):
        reason = f"{type(report).__name__}: {report}" if isinstance(report, BaseException) else str(meta.get("state_message"))
        return _fail(args.json, runbook, args.system, f"{runbook} {args.system} could not finish: {reason}", meta)
    if args.json:
        print(json.dumps({**report.public(), "exit_code": report.status.exit_code, "timing": meta}, default=str))
    else:
        output.print_report(report, output.fancy(sys.stdout, args.plain))
        print(f"  timing: run {meta['wall_s']} s, total {meta['total_s']} s"
              + (f" (incl. {meta['server_start_s']} s starting the Prefect server)" if meta["server_started"] else ""), file=sys.stderr)
    return report.status.exit_code


def print_run_help(rb: Any) -> int:
    """`opsbook run --help` (every runbook) or `opsbook run RUNBOOK --help` (its parameters)."""

    if rb is None:
        run_parser().print_help()
        print("\nrunbooks (`opsbook run RUNBOOK --help` lists a runbook's parameters):")
        print_runbooks()
        return 0
    from opsbook import runner

    runner.import_prefect()
    flow = rb.load()
    print(f"usage: opsbook run {rb.name} --system NAME [--param KEY=VALUE ...] [--json] [--plain]"
          + (" [--execute [--yes]]" if rb.mutating else "") + " [--sandbox [--fault SYSTEM:FAULT]] [-v]\n")
    print(f"{rb.name} ({'mutating' if rb.mutating else 'read-only'}): {rb.summary}\n")
    doc = (flow.description or "").strip()
    if doc:
        print(doc + "\n")
    params = {k: v for k, v in runner.parameters(flow).items() if k not in SET_BY_CLI}
    print("parameters (--param KEY=VALUE; a string parameter takes VALUE as it is, any other reads it as JSON):")
    if not params:
        print("  none")
    for name, prop in params.items():
        default = "required" if prop["required"] else f"default {json.dumps(prop.get('default'))}"
        bounds = ", ".join(f"{k} {prop[k]}" for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength")
                           if k in prop)
        print(f"  {name:22} {runner.type_name(prop)}; {default}" + (f"; {bounds}" if bounds else ""))
        if prop.get("description"):
            print(f"  {'':22} {prop['description']}")
    if rb.mutating:
        print("\nA dry run unless --execute: --execute prints the plan and asks; --execute --yes approves the printed plan "
              "up front (a plan with a guessed target also needs --param accept_guess=true).")
    print("\nAWS: your standard credential chain (AWS_PROFILE, SSO, instance role), or --sandbox for the embedded sandbox.")
    print("\n" + EXIT_CODES)
    return 0


def print_runbooks() -> None:
    from opsbook.registry import RUNBOOKS

    for rb in RUNBOOKS.values():
        print(f"  {rb.name:30} {'mutating ' if rb.mutating else 'read-only'}  {rb.summary}")


def cmd_list(args: argparse.Namespace) -> int:
    from opsbook.inventory import InventoryError, known_systems, load_system

    print("runbooks:")
    print_runbooks()
    print("systems:")
    for name in known_systems():
        try:
            s = load_system(name)
            print(f"  {name:24} {s.region:15} {s.description}")
        except InventoryError as exc:
            print(f"  {name:24} BROKEN: {exc}")
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    """The runbook's IAM policy: with --system, on that inventory's resources (opsbook.iam_scope); without, on each
    resource type's pattern with every region, account and name as * (said on stderr)."""
    from opsbook import registry
    from opsbook.iam_scope import pattern_policy, scoped_policy
    from opsbook.inventory import load_system

    try:
        rb = registry.get(args.runbook)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    if args.system:
        system = load_system(args.system)
        policy = scoped_policy(rb.actions(), system, rb.copies())
        where = (f"account {system.account_id}" if system.account_id else
                 "the account of the credentials that use it (${aws:PrincipalAccount}: the inventory pins no account_id)")
        print(f"{rb.name} on {system.name}: resources of {system.region} in {where}", file=sys.stderr)
    else:
        policy = pattern_policy(rb.actions(), rb.copies())
        print(f"{rb.name}: every region, account and resource name is * here; `opsbook policy {rb.name} --system NAME` "
              "names the inventory's resources", file=sys.stderr)
    size = len(json.dumps(policy, separators=(",", ":")))
    if size > 6144:  # IAM counts a policy's characters without white space
        print(f"{size} characters: over IAM's 6,144 for a managed policy; attach it inline to the role (10,240 a role) "
              "or split its statements into two managed policies", file=sys.stderr)
    print(json.dumps(policy, indent=2))
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    t = server.target()
    if args.action == "start":
        started, took = server.ensure(t)
        print(f"Prefect server {'started' if started else 'already running'} at {t.ui_url} ({took:.1f} s; from {t.source})")
    elif args.action == "stop":
        print("stopped" if server.stop(t) else f"no server that opsbook started is running for {t.api_url}")
    else:
        up = server.healthy(t.api_url)
        print(f"{t.ui_url}: {'up' if up else 'down'} (from {t.source}; a server opsbook starts keeps its database in {server.database_dir(t)})")
        return 0 if up else EXIT_UNKNOWN
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Send the journals of runs made without the Prefect server (opsbook run --offline, or it did not answer)."""
    import httpx

    from opsbook import offline

    journals = offline.pending()
    if args.list or not journals:
        for j in journals:
            print(f"  {j.name}")
        print(f"{len(journals)} offline run(s) waiting in {offline.journal_dir()}", file=sys.stderr)
        return 0
    t = server.configure()
    server.ensure(t)  # a local server is started; a remote one that does not answer stops here (exit 3)
    key, _ = server.setting("PREFECT_API_KEY")
    sent = 0
    with httpx.Client(base_url=t.api_url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30) as client:
        for j in journals:
            try:
                lines = offline.replay_file(j, client)
            except offline.StillWriting as exc:
                print(f"skipped {exc}", file=sys.stderr)
                continue
            except httpx.HTTPError as exc:
                raise RuntimeError(f"replaying {j.name}: {type(exc).__name__}: {exc} ({t.api_url}); run `opsbook replay` "
                                   "again once the server answers (it resumes where it stopped)") from None
            sent += 1
            print(f"replayed {j.name}: {lines} records to {t.api_url}")
    print(f"{sent} offline run(s) now on {t.ui_url}/runs", file=sys.stderr)
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    if not 0 <= args.throttle_pct <= 100:
        raise UsageError(f"--throttle-pct must be between 0 and 100, not {args.throttle_pct:g}")
    return sandbox_module("cli").serve(args.systems, args.fault or [], args.latency_ms, args.scale,
                                       throttle=(args.throttle_pct, args.throttle_seed))


def cmd_serve(args: argparse.Namespace) -> int:
    """Register every deployment on the one Prefect server, read them back, then serve them from this process."""
    server.configure()
    from deployments import schedules
    from opsbook import runner
    from opsbook.inventory import known_systems

    if args.fault and not args.sandbox:
        raise UsageError("--fault needs --sandbox (faults are injected into the embedded sandbox only)")
    meta = runner.prepare_prefect(args.verbose)  # first: a server that is down stops here, before seeding anything
    print(f"opsbook: Prefect server {meta['api_url']} ({meta['api_source']}"
          + (f"; started in {meta['server_start_s']} s" if meta["server_started"] else "; already running") + ")",
          file=sys.stderr, flush=True)
    sb = start_sandbox(known_systems(), args.fault or []) if args.sandbox else None
    try:
        if sb is not None:
            print(f"opsbook: embedded AWS sandbox on {sb.endpoint} (moto, 127.0.0.1 only); runs started here use it", file=sys.stderr)
        if args.work_pool:
            names = schedules.deploy_to_work_pool(args.work_pool)
            print(f"opsbook: registered and read back {len(names)} deployments on work pool {args.work_pool!r} at "
                  f"{meta['api_url']}; start a worker: prefect worker start --pool {args.work_pool}", file=sys.stderr)
            return 0

        def announce(specs: list[dict[str, Any]]) -> None:
            for s in specs:
                print(f"  {s['runbook'] + '/' + s['name']:64} {s['cron'] or 'on demand':18} {s['timezone']}", file=sys.stderr)
            print(f"opsbook: serving {len(specs)} deployments ({sum(1 for s in specs if s['cron'])} scheduled), registered on "
                  f"{meta['api_url']} and read back from it", file=sys.stderr)
            print(f"opsbook: UI {meta['ui_url']}/deployments  (Ctrl-C stops serving; the Prefect server keeps running: "
                  "`opsbook server stop`)", file=sys.stderr, flush=True)

        schedules.serve(announce)
    finally:
        if sb is not None:
            sb.stop()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    server.configure()  # the demo's runs go to the same server as every other command's
    return sandbox_module("cli").demo(keep_server=args.keep_server, verbose=args.verbose)


# --- parsers ----------------------------------------------------------------------------------


def _add_run_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("runbook", nargs="*", metavar="RUNBOOK", help="the runbook (opsbook list); several: one process, one "
                   "resolution, a report each (mutating ones only plan)")
    r.add_argument("--system", help="inventory name (systems/NAME.yaml) or path")
    r.add_argument("--param", action="append", metavar="KEY=VALUE", help="a runbook parameter (JSON for lists, numbers, "
                   "booleans); `opsbook run RUNBOOK --help` lists them")
    r.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    r.add_argument("--plain", action="store_true", help="no colour or emoji (also: NO_COLOR set, or output not a terminal)")
    r.add_argument("--execute", action="store_true", help="mutating runbooks: act (default is a dry run)")
    r.add_argument("--yes", action="store_true", help="with --execute: approve the printed plan up front")
    r.add_argument("--sandbox", action="store_true", help="run against the embedded AWS sandbox (moto on 127.0.0.1, "
                   "seeded with the system), not your AWS account")
    r.add_argument("--fault", action="append", metavar="SYSTEM:FAULT", help="with --sandbox: inject a named fault first")
    r.add_argument("--offline", action="store_true", help="run without the Prefect server (what happens by itself when it "
                   "does not answer within OPSBOOK_PREFECT_TIMEOUT s): records kept for `opsbook replay`")
    r.add_argument("-v", "--verbose", action="store_true", help="show Prefect's task logs")
    r.add_argument("-h", "--help", action="store_true", help="show this help, or with RUNBOOK its parameters")


def run_parser() -> Parser:
    p = Parser(prog="opsbook run", add_help=False, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
               description="Run a runbook for a system, in this shell, reported to the Prefect server.")
    _add_run_arguments(p)
    return p


def build_parser() -> Parser:
    p = Parser(prog="opsbook", description="Operations runbooks as Prefect flows.", epilog=EXIT_CODES,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    r = sub.add_parser("run", help="run a runbook for a system (opsbook run RUNBOOK --help: its parameters)", add_help=False,
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_arguments(r)
    r.set_defaults(fn=cmd_run)
    sub.add_parser("list", help="runbooks and systems").set_defaults(fn=cmd_list)
    pol = sub.add_parser("policy", help="print the IAM policy a runbook needs")
    pol.add_argument("runbook")
    pol.add_argument("--system", help="scope the policy to this inventory's resources (ARNs in its region and account)")
    pol.set_defaults(fn=cmd_policy)
    rp = sub.add_parser("replay", help="send the records of runs made without the Prefect server to it, now that it answers")
    rp.add_argument("--list", action="store_true", help="only list what waits to be sent")
    rp.set_defaults(fn=cmd_replay)
    sv = sub.add_parser("server", help="the Prefect server opsbook reports to (PREFECT_API_URL, else a local one)")
    sv.add_argument("action", choices=["start", "stop", "status"])
    sv.set_defaults(fn=cmd_server)
    sb = sub.add_parser("sandbox", help="serve the embedded AWS sandbox in the foreground (prints the env to use it)")
    sb.add_argument("--systems", nargs="*", default=None, help="systems to seed (default: all)")
    sb.add_argument("--fault", action="append", metavar="SYSTEM:FAULT", help="inject a named fault")
    sb.add_argument("--latency-ms", type=float, default=0.0)
    sb.add_argument("--scale", type=int, default=1, help="10 = the benchmark's 10x HR system")
    sb.add_argument("--throttle-pct", type=float, default=0.0, metavar="PCT",
                    help="answer PCT %% of the AWS calls (after seeding) with each service's own throttling error")
    sb.add_argument("--throttle-seed", type=int, default=0, help="the seed of which calls are throttled (reproducible runs)")
    sb.set_defaults(fn=cmd_sandbox)
    se = sub.add_parser("serve", help="register every deployment on the Prefect server and serve them (schedules, UI runs)")
    se.add_argument("--work-pool", help="instead of serving, register the deployments on this process work pool")
    se.add_argument("--sandbox", action="store_true", help="runs use the embedded AWS sandbox (moto on 127.0.0.1), seeded with every system")
    se.add_argument("--fault", action="append", metavar="SYSTEM:FAULT", help="with --sandbox: inject a named fault")
    se.add_argument("-v", "--verbose", action="store_true")
    se.set_defaults(fn=cmd_serve)
    d = sub.add_parser("demo", help="sandbox + faults + daily-health for the four seed systems (+ reindex-case's plan for a closed LEH case)")
    d.add_argument("--keep-server", action="store_true", help="leave the Prefect server running to browse the runs")
    d.add_argument("-v", "--verbose", action="store_true")
    d.set_defaults(fn=cmd_demo)
    return p


def _fail(json_out: bool, runbook: str | None, system: str | None, message: str, meta: dict[str, Any] | None = None) -> int:
    """Could not run as asked: exit 3; stdout's first line says so (the Nagios line, or with --json one JSON object)."""
    from opsbook.masking import mask
    from opsbook.output import error_line

    message = mask(message)  # an exception's text can carry what AWS returned
    if json_out:
        print(f"opsbook: {message}", file=sys.stderr)
        print(json.dumps({"runbook": runbook, "system": system, "status": "UNKNOWN", "findings": [], "api_calls": 0,
                          "error": message, "exit_code": EXIT_UNKNOWN, **({"timing": meta} if meta else {})}, default=str))
    else:
        print(error_line(message))
    return EXIT_UNKNOWN


def end_now(args: argparse.Namespace, code: int) -> None:
    """``opsbook run`` ends as soon as its result is out: Prefect's queued logs and events are sent (bounded), then the
    process exits without Python's shutdown, which joins every idle thread Prefect and the task runners leave and
    drains Prefect's services again (0.6-0.7 s, measured, of any run that got there). A read-only run's calls still
    blocked past its deadline (already UNKNOWN in the report) are not waited for either."""
    if args.fn not in (cmd_run,):
        return
    try:
        collect = sys.modules.get("opsbook.collect")
        blocked = collect.abandoned() if collect is not None else []
        if blocked:
            print(f"opsbook: {len(blocked)} call(s) still blocked past the run's deadline abandoned, not waited for",
                  file=sys.stderr)
        if "prefect" in sys.modules:
            from opsbook import runner

            runner.flush_prefect(timeout=5)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException as exc:  # noqa: BLE001 (the result is out: say what may be missing, then end with its code)
        try:
            print(f"opsbook: the result is out, but ending cleanly failed ({type(exc).__name__}: {exc}); some of the run's "
                  "logs or events may not have reached the Prefect server", file=sys.stderr, flush=True)
        except BaseException:  # noqa: BLE001 (stderr itself is gone: a closed pipe; nothing left to tell)
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    from opsbook.inventory import InventoryError

    args = build_parser().parse_args(argv)
    json_out = getattr(args, "json", False)
    try:
        code = args.fn(args)
        if argv is None:  # this process is the command: it ends now, whatever is still blocked past a deadline
            end_now(args, code)
        return code
    except UsageError as exc:
        return _fail(json_out, getattr(args, "runbook", None), getattr(args, "system", None), f"error: {exc}")
    except InventoryError as exc:
        return _fail(json_out, getattr(args, "runbook", None), getattr(args, "system", None), str(exc))
    except KeyboardInterrupt:
        return _fail(json_out, getattr(args, "runbook", None), getattr(args, "system", None), "interrupted")
    except RuntimeError as exc:
        return _fail(json_out, getattr(args, "runbook", None), getattr(args, "system", None), str(exc))


if __name__ == "__main__":
    sys.exit(main())
