"""fleet: one read-only runbook across many targets (account, assumed role, region, system).

The procedure, top to bottom:

1. Refuse a runbook that changes things (``opsbook.registry`` marks it ``mutating``; ``judge.refuse_mutating``):
   mutations run one system at a time, behind their own approval
   (``opsbook run NAME --system S``), never fanned out.
2. Read and validate the targets file (``flows/fleet/targets.py``; example: ``fleet/example.yaml``).
3. Create the shared per-API rate limits for every region of the fleet (idempotent).
4. One ``fleet-target`` flow run per target:
   - distributed (``deployment="fleet-target/fleet-target"``): ``run_deployment`` creates
     each run on a deployment of ``fleet_target`` in a work pool, and the pool's workers
     share them out (``prefect worker start --pool P --type process --limit N`` on any
     number of machines). The idempotency key is (this run, target): a retried fleet run
     never starts a target twice.
   - in-process (``deployment=None``, the default: no work pool needed): each target
     runs here, one after the other, as a subflow.
   Each ``fleet-target`` run assumes the target's role (STS AssumeRole, session name
   ``opsbook-fleet-<fleet run id>``, so CloudTrail in every account names the fleet run),
   checks that STS put it in the target's account, and runs the runbook as a subflow
   inside ``aws.assumed(role)`` (every client the runbook makes, in every task and
   thread, uses the role's credentials) and ``aws.gated(QuotaGate)`` (the rate limits
   below), against the system's inventory with the target's region and account. It
   returns the target's status, API calls and the worker that ran it. The run completes
   whenever it got the runbook's verdict, whatever it says (the runbook's own nested run
   ends Failed on CRIT, as always); it fails only when something broke.
5. Wait for every run (a progress artifact and a progress line on stderr), read each
   result, publish a table artifact (target, status, calls, worker; and the total)
   and the report. A target whose run could not finish or whose result cannot be read
   is UNKNOWN with the reason, never dropped. Any CRIT target ends the fleet Failed.

Per-API rate limits shared by every run (Prefect global concurrency limits used as
rate limits: ``limit`` = one second of tokens, ``slot_decay_per_second`` = the quota):

==================================  ==============================================  =========
AWS API (published quota)           Prefect limit                                   max lease
==================================  ==============================================  =========
logs FilterLogEvents 5/s            ``aws-logs-FilterLogEvents-<region>``           3
logs DescribeLogGroups 5/s          ``aws-logs-DescribeLogGroups-<region>``         3
logs StartQuery 5/s                 ``aws-logs-StartQuery-<region>``                3
logs GetLogEvents 25/s              ``aws-logs-GetLogEvents-<region>``              13
cloudwatch DescribeAlarms 9/s       ``aws-cloudwatch-DescribeAlarms-<region>``      5
cloudwatch GetMetricData 50/s       ``aws-cloudwatch-GetMetricData-<region>``       25
cloudwatch GetMetricStatistics 400  ``aws-cloudwatch-GetMetricStatistics-<region>``  200
==================================  ==============================================  =========

AWS applies these quotas per account and region. ``limit_scope="region"`` (default)
gives the whole fleet one budget per region: safe whatever the accounts (and it also
bounds the load the fleet itself puts on shared endpoints), at the price of speed when
many accounts share a region; ``limit_scope="account"`` appends the account id
(``...-<region>-<account>``), exactly AWS's scope. ``OPSBOOK_RATE_<OPERATION>``
(e.g. ``OPSBOOK_RATE_FILTER_LOG_EVENTS=10`` after a quota increase) changes the rate
used when a limit is created; an existing limit is kept as the operator set it.

Why this granularity: a lease per AWS call would add a Prefect API round trip (and
a database write) to every call; a slot held per target for its whole run would
bound concurrency, not rate, and idle the quota while the target does other work.
Instead each target's process leases tokens in growing batches (1, 2, 4, ... up to
half a second of quota) and spends them locally: a target making n calls of an API
costs about log2(max lease) + n/(max lease) round trips, a target making one call
costs one and wastes nothing. Unused tokens simply decay, so the quota is never
exceeded; the most a process can waste is its last lease minus one. APIs not listed
have quotas in the hundreds or thousands a second, far above what a fleet of
read-only runbooks calls; botocore's retries absorb an occasional throttle there.

Results across machines: a ``fleet-target`` run persists its result; the fleet run
reads it back. On one machine that is the local result storage; with workers on
several machines, point every worker and the fleet run at shared result storage
(``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK=s3-bucket/<block>``), or a target shows
UNKNOWN ("result not readable").

IAM: the fleet's own credentials need ``sts:AssumeRole`` on the targets' roles
(``opsbook policy fleet``); each target role needs the runbook's read-only policy
(``opsbook policy RUNBOOK``) and a trust policy for the fleet's principal.

Deploy ``fleet_target`` to a pool (``deploy_target(pool)`` below does this):
``flow.from_source(<checkout>, "flows/fleet/flow.py:fleet_target").deploy("fleet-target",
work_pool_name=pool)``, start workers (``prefect worker start --pool POOL --type process
--limit N``), then ``opsbook run fleet --system S --param deployment=fleet-target/fleet-target``
(``--system`` keeps that system's targets; ``--param targets_file=PATH`` names another file).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed

from flows.fleet.judge import (
    RUNBOOK,
    TARGET_FLOW,
    calls_by_operation,
    check_account,
    judge_targets,
    outcome_fields,
    refuse_mutating,
    target_rows,
    unknown_result,
)
from flows.fleet.ratelimits import LimitScope, QuotaGate, ensure_limits, limits_for
from flows.fleet.targets import ROOT, FleetError, Target, TargetResult, load_targets
from opsbook import aws, registry
from opsbook.findings import Status, overall
from opsbook.iam import aws_task
from opsbook.inventory import SYSTEMS_DIR, load_system
from opsbook.masking import mask
from opsbook.params import Param
from opsbook.report import RunReport, publish_report, result_of

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# --- one target ------------------------------------------------------------------------------


@aws_task(iam=["sts:AssumeRole"], name="assume-target-role", cache_policy=NO_CACHE, persist_result=False)
def assume_target_role(target: Target, session_name: str, duration_s: int = 3600) -> aws.AssumedRole:
    """STS AssumeRole into the target's account; the account STS names must be the target's."""
    role = aws.assume_role(target.role_arn, session_name, target.region, external_id=target.external_id,
                           duration_s=duration_s)
    check_account(target, role.account)
    return role


@task(name="target-inventory", cache_policy=NO_CACHE)
def target_inventory(target: Target, workdir: str) -> str:
    """The runbook's ``system`` argument: the inventory name when it already names the target's
    region (and account, if pinned), else a copy with the target's region and account under ``workdir``."""
    inv = load_system(target.system)
    if inv.region == target.region and inv.account_id in (None, target.account_id):
        return target.system
    raw = yaml.safe_load((Path(SYSTEMS_DIR) / f"{target.system}.yaml").read_text(encoding="utf-8"))
    raw["region"], raw["account_id"] = target.region, target.account_id
    path = Path(workdir) / f"{target.system}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    load_system(str(path))  # still a valid inventory
    return str(path)


def _here() -> dict[str, Any]:
    return {"worker": os.environ.get("PREFECT__WORKER_NAME") or "in-process", "host": socket.gethostname(),
            "pid": os.getpid(), "ppid": os.getppid()}


@task(name="target-result", cache_policy=NO_CACHE)
def target_result(target: Target, runbook: str, outcome: RunReport | str, identity: str | None, calls: aws.CallLog,
                  gate: QuotaGate | None, started: float) -> TargetResult:
    """The runbook's report reduced to what the fleet shows; ``outcome`` is the report, or why there is none (UNKNOWN)."""
    return TargetResult(
        target=target.key, account_id=target.account_id, region=target.region, system=target.system, runbook=runbook,
        **outcome_fields(target, runbook, outcome, calls.by_operation()), identity=identity,
        flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None, rate_limits=gate.stats() if gate else {},
        duration_s=round(time.monotonic() - started, 2), **_here())


def _reason(state: Any, value: Any) -> str:
    if isinstance(value, BaseException):
        return aws.describe_error(value)
    return str(state.message or f"ended {state.type.value} without a result")


def _target_run_name() -> str:
    p = flow_run.parameters
    t = p.get("target")
    key = t.key if isinstance(t, Target) else Target.model_validate(t).key if isinstance(t, dict) else "?"
    return f"{p.get('runbook', '?')} {key}"


@flow(name=TARGET_FLOW, flow_run_name=_target_run_name, persist_result=True, result_serializer="json",
      validate_parameters=True, timeout_seconds=1800, log_prints=False)
def fleet_target(runbook: str, target: Target, fleet_run: str | None = None, params: dict[str, Any] | None = None,
                 rate_limits: bool = True, limit_scope: LimitScope = "region", session_duration_s: int = 3600,
                 lease_timeout_s: float = 300.0) -> Any:
    """Run a read-only runbook for one target: assume its role, run with its credentials and region."""
    started = time.monotonic()
    logger = get_run_logger()
    refuse_mutating(runbook, params)
    calls = aws.start_call_log()
    session = f"opsbook-fleet-{fleet_run or flow_run.get_id() or 'local'}"
    role_future = assume_target_role.submit(target, session, session_duration_s)
    role_future.wait()
    gate = QuotaGate(target.account_id, limit_scope, lease_timeout_s) if rate_limits else None
    if not role_future.state.is_completed():
        reason = _reason(role_future.state, role_future.state.result(raise_on_failure=False))
        return target_result(target, runbook, f"not run: could not assume {target.role_arn}: {reason}", None, calls, gate, started)
    role = role_future.result()
    workdir = tempfile.mkdtemp(prefix="opsbook-fleet-inv-")
    try:
        system_arg = target_inventory(target, workdir)
        flow_fn = registry.get(runbook).load()
        with aws.assumed(role), (aws.gated(gate) if gate is not None else nullcontext()):
            state = flow_fn(system=system_arg, **(params or {}), return_state=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = result_of(state)
    outcome = report if isinstance(report, RunReport) else f"{runbook} did not finish: {_reason(state, report)}"
    result = target_result(target, runbook, outcome, role.arn, calls, gate, started)  # the credentials stay here
    logger.info("%s: %s (%s, %d API calls)", target.key, result.status.value, result.worker, result.api_calls)
    return result


# --- the fleet -------------------------------------------------------------------------------


@task(name="load-fleet", cache_policy=NO_CACHE)
def load_fleet(targets_file: str, system: str | None) -> list[Target]:
    return load_targets(targets_file, system).targets


@task(name="ensure-rate-limits", cache_policy=NO_CACHE)
def ensure_rate_limits(targets: list[Target], scope: LimitScope) -> dict[str, str]:
    regions = [t.region for t in targets]
    accounts = [t.account_id for t in targets] if scope == "account" else None
    return ensure_limits(limits_for(regions, accounts))


@task(name="start-target-runs", cache_policy=NO_CACHE)
def start_target_runs(deployment: str, runbook: str, targets: list[Target], child_params: dict[str, Any]) -> dict[str, str]:
    """One flow run per target on the deployment (idempotent per fleet run and target); key -> run id."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise FleetError(f"deployment {deployment!r} not found: deploy fleet_target to a work pool first "
                             "(flows.fleet.deploy_target(pool)), or run in-process with deployment=None") from None
    if dep.work_pool_name is None:
        raise FleetError(f"deployment {deployment!r} has no work pool; deploy it with work_pool_name=<pool>")
    parent = str(flow_run.get_id() or "local")
    runs: dict[str, str] = {}
    for t in targets:
        fr = run_deployment(deployment, parameters={"runbook": runbook, "target": t.model_dump(mode="json"),
                                                    "fleet_run": parent, **child_params},
                            timeout=0, idempotency_key=f"{parent}:{t.key}", flow_run_name=f"{runbook} {t.key}",
                            tags=["fleet", runbook, t.system])
        runs[t.key] = str(fr.id)
    print(f"opsbook: fleet: {len(runs)} target runs queued on work pool {dep.work_pool_name!r}", file=sys.stderr)
    return runs


def _read_result(t: Target, runbook: str, fr: Any) -> TargetResult:
    state = fr.state
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - the reason becomes the target's UNKNOWN finding
        return unknown_result(t, runbook, f"run {state.type.value} but its result is not readable ({type(exc).__name__}: {exc}); "
                        "give the workers and the fleet run shared result storage (PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK)", str(fr.id))
    if isinstance(result, TargetResult):
        return result
    if isinstance(result, dict):  # a result written by a different version of opsbook: validate, do not trust the type
        try:
            return TargetResult.model_validate(result.get("data", result))
        except ValueError as exc:
            return unknown_result(t, runbook, f"run {state.type.value} but its result is not a fleet-target result: {exc}", str(fr.id))
    return unknown_result(t, runbook, f"run {state.type.value}: {_reason(state, result)}", str(fr.id))


@task(name="wait-for-targets", cache_policy=NO_CACHE)
def wait_for_targets(runs: dict[str, str], targets: list[Target], runbook: str, timeout_s: float, poll_s: float) -> list[TargetResult]:
    """Poll the runs until all are final (bounded, with progress); read each result."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    by_key = {t.key: t for t in targets}
    started = time.monotonic()
    progress = create_progress_artifact(progress=0.0, description=f"fleet: {len(runs)} {runbook} target runs")
    latest: dict[str, Any] = {}
    last_line = 0.0
    ids = list(runs.values())
    with get_client(sync_client=True) as client:
        while True:
            for i in range(0, len(ids), 200):
                chunk = [UUID(x) for x in ids[i:i + 200]]
                for fr in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=200):
                    latest[str(fr.id)] = fr
            done = sum(1 for fr in latest.values() if fr.state and fr.state.type.value in FINAL_STATES)
            running = sum(1 for fr in latest.values() if fr.state and fr.state.type.value == "RUNNING")
            elapsed = time.monotonic() - started
            update_progress_artifact(progress, progress=100.0 * done / max(len(runs), 1))
            if done == len(runs) or elapsed >= timeout_s:
                break
            if time.monotonic() - last_line >= 5:
                hint = "" if done or running else " (none started yet: is a worker polling the pool?)"
                print(f"opsbook: fleet: {done}/{len(runs)} targets finished, {running} running, {elapsed:.0f}/{timeout_s:.0f} s{hint}",
                      file=sys.stderr)
                last_line = time.monotonic()
            time.sleep(poll_s)
    update_progress_artifact(progress, progress=100.0)
    out = []
    for key, run_id in runs.items():
        fr = latest.get(run_id)
        if fr is None or fr.state is None:
            out.append(unknown_result(by_key[key], runbook, "its flow run could not be read from the Prefect API", run_id))
        elif fr.state.type.value not in FINAL_STATES:
            out.append(unknown_result(by_key[key], runbook, f"still {fr.state.type.value} after {timeout_s:.0f} s "
                                "(no worker took it, or it runs long); it was left running", run_id))
        else:
            out.append(_read_result(by_key[key], runbook, fr))
    return out


def run_in_process(runbook: str, targets: list[Target], child_params: dict[str, Any]) -> list[TargetResult]:
    """Each target as a subflow here, one after the other (no work pool needed)."""
    parent = str(flow_run.get_id() or "local")
    progress = create_progress_artifact(progress=0.0, description=f"fleet: {len(targets)} {runbook} targets, in-process")
    out = []
    for i, t in enumerate(targets, 1):
        state = fleet_target(runbook=runbook, target=t, fleet_run=parent, **child_params, return_state=True)
        result = state.result(raise_on_failure=False)
        out.append(result if isinstance(result, TargetResult)
                   else unknown_result(t, runbook, f"fleet-target {state.type.value}: {_reason(state, result)}"))
        update_progress_artifact(progress, progress=100.0 * i / len(targets))
        print(f"opsbook: fleet: {i}/{len(targets)} targets done ({t.key}: {out[-1].status.value})", file=sys.stderr)
    return out


@task(name="fleet-report", cache_policy=NO_CACHE)
def fleet_report(runbook: str, system: str | None, results: list[TargetResult], limits: dict[str, str], started: float) -> RunReport:
    """One finding per target, the table artifact (target, status, calls, worker) and the total."""
    findings = judge_targets(runbook, results, limits)
    total = sum(r.api_calls for r in results)
    workers = sorted({r.worker for r in results if r.worker})
    create_table_artifact(key=f"fleet-{runbook}-targets", table=target_rows(results, findings),
                          description=mask(f"{runbook} over {len(results)} targets: {total} AWS API calls, workers: {', '.join(workers)}"))
    return RunReport(runbook=RUNBOOK, system=system or "all", status=overall(findings), findings=findings,
                     api_calls=total, api_calls_by_operation=calls_by_operation(results), duration_s=round(time.monotonic() - started, 2),
                     region=",".join(sorted({r.region for r in results})),
                     flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None)


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7200)
def fleet(
    runbook: Annotated[str, Param("The read-only runbook to run on every target (e.g. daily-health)", min_length=1)] = "daily-health",
    targets_file: Annotated[str, Param("The targets file: accounts, regions, roles and systems (see fleet/example.yaml)",
                                       min_length=1)] = "fleet/example.yaml",
    system: Annotated[str, Param("Only the targets of this system; empty: every target of the file")] = "",
    deployment: Annotated[str, Param("A fleet-target deployment (e.g. fleet-target/fleet-target) that spreads the targets over "
                                     "its work pool; empty: run them here, one after the other")] = "",
    params: Annotated[dict[str, Any], Param("Parameters for the runbook on every target (e.g. {\"notify\": false})")] = {},  # noqa: B006
    rate_limits: Annotated[bool, Param("Share per-API rate limits between the targets of an account (Prefect global "
                                       "concurrency limits)")] = True,
    limit_scope: Annotated[LimitScope, Param("What shares one rate limit: every target of an account in a region, or of the "
                                             "whole account")] = "region",
    timeout_s: Annotated[float, Param("Seconds to wait for the targets' runs on the work pool", gt=0, le=7200)] = 3600.0,
    poll_s: Annotated[float, Param("Seconds between reads of the targets' runs on the work pool", gt=0, le=60)] = 1.0,
) -> Any:
    """Fan a read-only runbook out over the targets file (only ``system``'s targets when given);
    ``deployment`` (e.g. "fleet-target/fleet-target") spreads the targets over a work pool,
    empty runs them here one by one. CRIT on any target ends the run Failed."""
    system_n, deployment_n = system or None, deployment or None  # "" (not given) as None below
    started = time.monotonic()
    logger = get_run_logger()
    refuse_mutating(runbook, params)
    targets = load_fleet(targets_file, system_n)
    limits = ensure_rate_limits.submit(targets, limit_scope) if rate_limits else None
    child = {"params": params or {}, "rate_limits": rate_limits, "limit_scope": limit_scope}
    if deployment_n:
        runs = start_target_runs.submit(deployment_n, runbook, targets, child, wait_for=[limits] if limits else None)
        results = wait_for_targets(runs, targets, runbook, timeout_s, poll_s)
    else:
        if limits:
            limits.wait()
        results = run_in_process(runbook, targets, child)
    report = fleet_report(runbook, system_n, results, limits.result() if limits else {}, started)
    publish_report.submit(report).result()
    logger.info(report.headline())
    if report.status is Status.CRIT:
        return Failed(message=report.headline(), data=report)
    return report


def deploy_target(pool: str, name: str = TARGET_FLOW, source: str | Path = ROOT, **kwargs: Any) -> str:
    """Register the fleet_target deployment on a work pool (from this checkout); returns its id."""
    dep_id = flow.from_source(source=str(source), entrypoint="flows/fleet/flow.py:fleet_target").deploy(
        name=name, work_pool_name=pool, build=False, push=False, print_next_steps=False,
        tags=["fleet"], description="one target of the fleet runbook (see flows/fleet/flow.py)", **kwargs)
    return str(dep_id)


TASKS = [assume_target_role]
