"""remediate-lambda-timeout: find the functions that time out, size a fix, apply it behind approval, watch it work.

Sources: 000 문제 1 Lambda 함수 타임아웃 ("Task timed out" in the last hour,
Duration Average/Maximum; then a longer timeout as the stopgap, more memory
for speed, the code as the real fix) and 002 문제 2 간헐적 5XX (todo-api:
memory 512, timeout 30). Unlike the seeds' fixed numbers (timeout 300, memory
2048 whatever happened) the fix is sized from what was measured and kept
within the bounds that make a timeout meaningful: Lambda's limits, the
inventory's ``remediation`` policy, the integration timeout of an API Gateway
API in front of the function (a longer timeout cannot help there: more memory,
more CPU, is proposed instead) and the visibility timeout of a queue feeding
it (raised with it, by its own action). Timeouts while the other invocations
are fast are a downstream hang: said so, never "fixed" by a longer timeout.

Steps: confirm identity -> read each function's configuration and event source
mappings -> concurrently: count "Task timed out" lines (FilterLogEvents, 5/s),
Duration/Invocations/Errors (one GetMetricData), the feeding queues'
VisibilityTimeout -> judge (a finding per function) -> plan -> (dry run ends
here) -> approve -> leases -> drift check -> act (UpdateFunctionConfiguration,
waiting for LastUpdateStatus Successful; a failure part-way undoes the rest in
reverse) -> read back (verify) -> record -> watch new invocations for
``observe_s`` seconds -> notify. ``undo_run`` plans the inverse of an earlier
run instead, through the same approval path.

API calls: 2 a function (GetFunctionConfiguration, ListEventSourceMappings), 1+
FilterLogEvents pages a function, 1 GetMetricData for all (one more per distinct
evidence start, when functions changed within the window), 2 a feeding queue,
plus the session's (identity, records, leases, SNS); acting: 3 an action (read,
update, wait) and 1 a function per poll while watching (every ~10 % of
``observe_s``, at least 1 s, at most 15 s).
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from flows.remediate_lambda_timeout import judge as j
from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Applier, Identity, Plan, undo_plan
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records, steps_policy
from opsbook.params import ApprovalTimeout, Approver, DryRun, Names, Param, SystemName, UndoRun
from tasks.awslambda import MEMORY_KIND, TIMEOUT_KIND, config_reader, config_setter, config_settled, read_configs
from tasks.cloudwatch import read_duration_metrics
from tasks.logs import LAMBDA_INVOCATION_PATTERN, scan_log, scan_timeouts
from tasks.sqs import VISIBILITY_KIND, queue_visibility_settled, read_queue_visibility, read_queues, set_queue_visibility

RUNBOOK = j.RUNBOOK
READ_DEADLINE_S = 120.0
VERIFY_TIMEOUT_S = 60.0
CHECK = j.CHECK
APPLIERS = {
    TIMEOUT_KIND: Applier(read=config_reader("Timeout"), apply=config_setter("Timeout"), settled=config_settled("Timeout")),
    MEMORY_KIND: Applier(read=config_reader("MemorySize"), apply=config_setter("MemorySize"), settled=config_settled("MemorySize")),
    VISIBILITY_KIND: Applier(read=read_queue_visibility, apply=set_queue_visibility, settled=queue_visibility_settled),
}


# --- collecting and judging ---------------------------------------------------------------------


def _error(value: Any) -> Any:
    """A read that failed as a whole as its error text (the judge's input), else the value."""
    return aws.describe_error(value) if isinstance(value, BaseException) else value


@task(name="judge-lambda-timeouts", cache_policy=NO_CACHE)
def judge(inv: System, configs: list, logs: Any, since: dict[str, datetime], stats: Any, queues: Any) -> list[j.Diagnosis]:
    """A diagnosis per function; a read that failed as a whole makes every function it covers UNKNOWN (never a fix)."""
    return j.diagnose_all(inv, configs, _error(logs), since, _error(stats), _error(queues), datetime.now(timezone.utc))


@task(name="plan-lambda-fixes", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, diagnoses: list[j.Diagnosis]) -> Plan:
    return j.plan_fixes(inv, identity, diagnoses)


def diagnose_functions(inv: System, session: MutationSession, names: list[str], records_f: Any, window_minutes: int) -> list[j.Diagnosis]:
    """Read the configurations, then concurrently the timeouts in the logs, the durations and the feeding queues; judge."""
    deadline = aws.Deadline(READ_DEADLINE_S)
    configs = read_configs.submit(inv, names, deadline).result()
    records = future_value(records_f)
    if isinstance(records, BaseException):
        session.report.findings.append(unknown("records", inv.mutations.state_table, f"{aws.describe_error(records)}; "
                                               "timeouts count from each function's LastModified only"))
        records = []
    window_start = datetime.now(timezone.utc) - timedelta(minutes=window_minutes)
    readable = [c for c in configs if c.error is None]
    since = {c.name: j.since_for(c, records, RUNBOOK, window_start) for c in readable}
    logs_f = scan_timeouts.submit(inv, [c.name for c in readable], window_start, deadline)
    stats_f = read_duration_metrics.submit(inv, since)
    queues_f = read_queues.submit(inv, j.all_queues(inv, readable), deadline)
    return judge.submit(inv, configs, future_value(logs_f), since, future_value(stats_f), future_value(queues_f)).result()


def plan_functions(inv: System, session: MutationSession, identity: Identity, functions: list[str], records_f: Any,
                   window_minutes: int) -> Plan:
    names, strangers = j.select(inv, functions)
    session.report.findings += j.unknown_functions(inv, strangers)
    if not names:
        if not strangers:
            session.report.findings.append(Finding(check="coverage", resource=inv.name, status=Status.OK, value=0,
                                                   summary=f"{inv.name}'s inventory names no Lambda function: nothing to check"))
        return Plan(runbook=RUNBOOK, system=inv.name, identity=identity, notes=["no Lambda function to check"])
    diagnoses = diagnose_functions(inv, session, names, records_f, window_minutes)
    session.report.findings += [d.finding for d in diagnoses] + [f for d in diagnoses for f in d.extra_findings]
    return make_plan.submit(inv, identity, diagnoses).result()


# --- tasks that touch AWS ---------------------------------------------------------------------------


@aws_task(iam=["lambda:GetFunctionConfiguration", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="plan-lambda-undo", cache_policy=NO_CACHE)
def plan_undo(inv: System, identity: Identity, records: list[dict[str, Any]], run_id: str) -> Plan:
    return undo_plan(inv, RUNBOOK, identity, records, run_id, APPLIERS, j.IAM)






def observe_once(region: str, fn: str, log_group: str, since: datetime) -> j.Observation:
    events, _ = scan_log(region, log_group, LAMBDA_INVOCATION_PATTERN, since, datetime.now(timezone.utc) + timedelta(seconds=1))
    return j.observation(fn, since, events)


@aws_task(iam=["logs:FilterLogEvents"], name="watch-after-change", cache_policy=NO_CACHE)
def observe_changes(inv: System, functions: list[str], since: datetime, observe_s: float) -> list[j.Observation]:
    """Watch new invocations for ``observe_s`` seconds (bounded, with progress); a function that times out again is settled early."""
    groups = {f.name: f.log_group_name for f in inv.lambda_functions}
    poll_s = min(15.0, max(1.0, observe_s / 10))
    progress = create_progress_artifact(progress=0.0, description=f"{RUNBOOK}: watching {len(functions)} function(s) for {observe_s:g} s")
    started = time.monotonic()
    latest: dict[str, j.Observation] = {}
    watching = list(functions)
    while True:
        for fn, obs, err in aws.parallel(lambda f: observe_once(inv.region, f, groups.get(f, f"/aws/lambda/{f}"), since), watching, max_workers=5):
            latest[fn] = obs if err is None else j.Observation(function=fn, since=since, error=aws.describe_error(err))
        watching = [f for f in watching if not latest[f].timeouts]
        elapsed = time.monotonic() - started
        update_progress_artifact(progress, progress=100.0 * min(1.0, elapsed / max(observe_s, 1e-9)))
        print(f"opsbook: {RUNBOOK}: watching after the change, {elapsed:.0f}/{observe_s:g} s: "
              + "; ".join(f"{o.function}: {o.invocations} invocation(s), {o.timeouts} timeout(s)" for o in latest.values()), file=sys.stderr)
        if not watching or elapsed >= observe_s:
            break
        time.sleep(min(poll_s, max(0.0, observe_s - elapsed)))
    update_progress_artifact(progress, progress=100.0)
    return [latest[f] for f in functions]


def act(inv: System, session: MutationSession, identity: Identity, plan: Plan, observe_s: int, undo_run: str) -> None:
    """Leases, drift check, apply, read back, record, watch (or say what the undo put back), notify."""
    settle = inv.mutations.settle_timeout_s
    done, ok = session.act(identity)
    if ok:  # after a failure part-way what was applied has been undone: there is nothing to read back
        done = session.settle(done, min(VERIFY_TIMEOUT_S, settle))
    session.record(done)  # durable before the watch, which can take minutes
    session.report.findings += j.fix_findings(done)
    changed = list(dict.fromkeys(r.resource for r in done if r.kind != VISIBILITY_KIND and r.status == "verified"))
    if ok and changed and not undo_run:
        observations = observe_changes.submit(inv, changed, datetime.now(timezone.utc), float(observe_s)).result()
        session.report.findings = j.after_change(session.report.findings, observations, done, observe_s)
    elif undo_run:
        session.report.findings.append(Finding(check="undo", resource=undo_run, status=Status.OK if ok else Status.CRIT,
                                               summary=f"{'put back' if ok else 'could not put back'} what run {undo_run} changed: "
                                                       + "; ".join(f"{r.resource} {r.kind} {r.before} -> {r.after} ({r.status})" for r in done)))
    session.conclude(done, ok and all(r.status not in ("failed", "undo-failed") for r in done))


# --- the runbook --------------------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def remediate_lambda_timeout(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    functions: Annotated[Names, Param("Only these of the inventory's Lambda functions (a comma-separated string on the shell); "
                                      "empty: all of them")] = [],  # noqa: B006 (validated into a new list)
    window_minutes: Annotated[int, Param("How far back timeouts are counted, in minutes", ge=1, le=1440)] = 60,
    observe_s: Annotated[int, Param("After a change, how long to watch new invocations for timeouts, in seconds", ge=0, le=3600)] = 300,
    undo_run: UndoRun = "",
) -> Any:
    """Diagnose the system's Lambda timeouts and fix the ones a longer timeout or more memory can fix.

    ``functions`` restricts the run to some of the inventory's functions;
    ``window_minutes`` is how far back the evidence is read (the seed's hour);
    ``observe_s`` bounds the watch for new invocations after a change.
    dry_run (default) ends after the plan. Otherwise the run asks for approval
    (a form on the paused run in the UI; the shell's prompt or --yes), applies, reads back,
    records, watches and notifies. ``undo_run`` (a flow run id this runbook
    printed) plans putting back what that run changed instead.
    """
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s, appliers=APPLIERS)
    with session:
        identity = session.identity()
        records_f = read_records.submit(inv)
        if undo_run:
            plan = plan_undo.submit(inv, identity, records_f.result(), undo_run).result()
        else:
            plan = plan_functions(inv, session, identity, functions, records_f, window_minutes)
        if session.gate(plan):
            act(inv, session, identity, plan, observe_s, undo_run)
    return session.finish()


TASKS = [read_configs, scan_timeouts, read_duration_metrics, read_queues, plan_undo, observe_changes,
         steps_policy(APPLIERS)] + SESSION_TASKS
