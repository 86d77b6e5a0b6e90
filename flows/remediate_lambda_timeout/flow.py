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

from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import (
    Applier,
    Approval,
    Identity,
    Plan,
    Record,
    Refused,
    apply_plan,
    drift,
    undo_plan,
)
from opsbook.mutation.session import (
    SESSION_TASKS,
    MutationSession,
    mark_verified,
    read_records,
)
from opsbook.params import (
    ApprovalTimeout,
    Approver,
    DryRun,
    Names,
    Param,
    SystemName,
    UndoRun,
)
from tasks import lambda_tuning as lt

RUNBOOK = "remediate-lambda-timeout"
READ_DEADLINE_S = 120.0
VERIFY_TIMEOUT_S = 60.0
CHECK = "lambda-timeouts"


# --- deciding (pure) ---------------------------------------------------------------------------


def select(inv: System, functions: list[str] | None) -> tuple[list[str], list[str]]:
    """(the inventory's functions to check, asked-for names the inventory does not have)."""
    names = [f.name for f in inv.lambda_functions]
    if not functions:
        return names, []
    return [n for n in names if n in functions], [n for n in functions if n not in names]


@task(name="judge-lambda-timeouts", cache_policy=NO_CACHE)
def judge(inv: System, configs: list[lt.FunctionConfig], scans: list[lt.TimeoutScan] | BaseException,
          stats: list[lt.DurationStats] | BaseException, queues: list[lt.QueueState] | BaseException) -> list[lt.Diagnosis]:
    """A diagnosis per function; a read that failed as a whole makes every function it covers UNKNOWN (never a fix)."""
    by_scan = {} if isinstance(scans, BaseException) else {s.function: s for s in scans}
    by_stats = {} if isinstance(stats, BaseException) else {s.function: s for s in stats}
    qs: dict[str, lt.QueueState] = {}
    if isinstance(queues, BaseException):
        names = {q for c in configs for q in lt.queue_sources(next((f for f in inv.lambda_functions if f.name == c.name), None), c)}
        qs = {n: lt.QueueState(name=n, error=aws.describe_error(queues)) for n in names}
    else:
        qs = {q.name: q for q in queues}
    out = []
    for cfg in configs:
        scan = by_scan.get(cfg.name)
        if scan is None and isinstance(scans, BaseException):
            scan = lt.TimeoutScan(function=cfg.name, log_group="?", since=datetime.now(timezone.utc), error=aws.describe_error(scans))
        st: Any = stats if isinstance(stats, BaseException) else by_stats.get(cfg.name)
        out.append(lt.diagnose(inv, cfg, scan, st, qs))
    return out


@task(name="plan-lambda-fixes", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, diagnoses: list[lt.Diagnosis]) -> Plan:
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    plan.actions = lt.order_actions([a for d in diagnoses for a in d.actions])
    for d in diagnoses:
        if d.unchanged:
            plan.unchanged.append(d.unchanged)
        plan.cannot += d.cannot
        plan.notes += d.notes
        if d.verdict == "unreadable":
            plan.notes.append(f"{d.function}: not judged ({d.finding.summary}); nothing planned for it")
    if any(a.kind == lt.VISIBILITY_KIND for a in plan.actions):
        plan.notes.append("queue visibility timeouts are raised before the function timeouts they cover (and lowered after them on undo)")
    plan.notes.append(f"timeouts count from each function's last configuration change; policy: headroom x{inv.remediation.lambda_timeout_headroom:g}, "
                      f"timeout <= {inv.remediation.lambda_max_timeout_s} s, memory <= {inv.remediation.lambda_max_memory_mb} MB, "
                      f"queue visibility >= {inv.remediation.sqs_visibility_factor:g}x timeout")
    return plan


# --- tasks that touch AWS ---------------------------------------------------------------------------


@aws_task(iam=["lambda:GetFunctionConfiguration", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="plan-lambda-undo", cache_policy=NO_CACHE)
def plan_undo(inv: System, identity: Identity, records: list[dict[str, Any]], run_id: str) -> Plan:
    return undo_plan(inv, RUNBOOK, identity, records, run_id, lt.APPLIERS, lt.IAM)


@aws_task(iam=["lambda:GetFunctionConfiguration", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="check-lambda-drift", cache_policy=NO_CACHE)
def check_drift(inv: System, plan: Plan) -> None:
    drifted = drift(inv, plan, lt.APPLIERS)
    if drifted:
        raise Refused("the state changed since the plan was made; nothing was changed (run again to plan afresh): " + "; ".join(drifted))


@aws_task(iam=["lambda:GetFunctionConfiguration", "lambda:UpdateFunctionConfiguration", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
               "sqs:SetQueueAttributes"], name="apply-lambda-fixes", cache_policy=NO_CACHE, read_only=False)
def apply_fixes(inv: System, plan: Plan, approval: Approval, identity: Identity, run_id: str) -> tuple[list[Record], bool]:
    """Every action in order, each waiting until Lambda reports the update Successful; on a failure the applied ones are undone in reverse."""
    progress = create_progress_artifact(progress=0.0, description=f"{RUNBOOK}: applying {len(plan.actions)} change(s)")
    total = len(plan.actions)
    done = {"n": 0}

    def tracked(kind: str, ap: Applier) -> Applier:
        def apply(system: System, resource: str, value: str) -> None:
            print(f"opsbook: {RUNBOOK}: {resource}: {kind} -> {value} ({done['n'] + 1}/{total})", file=sys.stderr)
            ap.apply(system, resource, value)
            done["n"] += 1
            update_progress_artifact(progress, progress=100.0 * min(1.0, done["n"] / max(total, 1)))

        return Applier(read=ap.read, apply=apply)

    result = apply_plan(inv, plan, {k: tracked(k, a) for k, a in lt.APPLIERS.items()}, approval, run_id, identity)
    update_progress_artifact(progress, progress=100.0)
    return result


@aws_task(iam=["lambda:GetFunctionConfiguration", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="verify-lambda-fixes", cache_policy=NO_CACHE)
def verify_fixes(inv: System, records: list[Record], timeout_s: float) -> list[Record]:
    """Read every applied value back until it shows the target (and the update is no longer in progress), bounded."""
    pending = {(r.kind, r.resource): r.after or "" for r in records if r.status == "applied"}
    seen: dict[tuple[str, str], tuple[bool, str]] = {}
    started = time.monotonic()
    while pending:
        for key, target in list(pending.items()):
            try:
                value, how = lt.read_back(inv, *key)
            except Exception as exc:  # a read that fails is "not verified, and why", never dropped
                value, how = None, f"could not be read: {aws.describe_error(exc)}"
            seen[key] = (value == target, how)
            if value == target:
                del pending[key]
        if not pending or time.monotonic() - started >= timeout_s:
            break
        time.sleep(1.0)
    return mark_verified(records, seen, timeout_s)


@aws_task(iam=["logs:FilterLogEvents"], name="watch-after-change", cache_policy=NO_CACHE)
def observe_changes(inv: System, functions: list[str], since: datetime, observe_s: float) -> list[lt.Observation]:
    """Watch new invocations for ``observe_s`` seconds (bounded, with progress); a function that times out again is settled early."""
    groups = {f.name: f.log_group_name for f in inv.lambda_functions}
    poll_s = min(15.0, max(1.0, observe_s / 10))
    progress = create_progress_artifact(progress=0.0, description=f"{RUNBOOK}: watching {len(functions)} function(s) for {observe_s:g} s")
    started = time.monotonic()
    latest: dict[str, lt.Observation] = {}
    watching = list(functions)
    while True:
        for fn, obs, err in aws.parallel(lambda f: lt.observe_once(inv.region, f, groups.get(f, f"/aws/lambda/{f}"), since), watching, max_workers=5):
            latest[fn] = obs if err is None else lt.Observation(function=fn, since=since, error=aws.describe_error(err))
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


# --- reporting helpers ---------------------------------------------------------------------------------


def fix_findings(records: list[Record]) -> list[Finding]:
    out = []
    for r in records:
        unit = " s" if r.kind in (lt.TIMEOUT_KIND, lt.VISIBILITY_KIND) else " MB"
        status = {"verified": Status.OK, "applied": Status.WARN, "undone": Status.WARN, "not-attempted": Status.WARN}.get(r.status, Status.CRIT)
        out.append(Finding(check="lambda-fix", resource=r.resource, status=status,
                           summary=f"{r.kind} {r.before}{unit} -> {r.after or r.before}{unit}: {r.status}; {r.detail}".rstrip("; ")))
    return out


def after_change(findings: list[Finding], observations: list[lt.Observation], records: list[Record], observe_s: float) -> list[Finding]:
    """Each changed function's finding becomes its state after the change (what the watch saw), keeping what was found before."""
    obs = {o.function: lt.observation_finding(o, observe_s) for o in observations}
    changes: dict[str, list[str]] = {}
    for r in records:
        if r.kind != lt.VISIBILITY_KIND and r.status in ("applied", "verified"):
            changes.setdefault(r.resource, []).append(f"{'timeout' if r.kind == lt.TIMEOUT_KIND else 'memory'} {r.before} -> {r.after}")
    out = []
    for f in findings:
        if f.check == CHECK and f.resource in obs:
            o = obs[f.resource]
            out.append(Finding(check=CHECK, resource=f.resource, status=o.status, value=o.value,
                               summary=(f"changed ({', '.join(changes.get(f.resource, []))}); after the change: {o.summary}. "
                                        f"Before: {f.summary}")[:900],
                               details={**f.details, "after_change": o.details}))
        else:
            out.append(f)
    return out


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
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
    with session:
        identity = session.identity()
        records_f = read_records.submit(inv)
        if undo_run:
            plan = plan_undo.submit(inv, identity, records_f.result(), undo_run).result()
        else:
            names, strangers = select(inv, functions)
            session.report.findings += [unknown(CHECK, n, f"not a function of {inv.name}'s inventory (its functions: "
                                                           f"{', '.join(f.name for f in inv.lambda_functions) or 'none'})") for n in strangers]
            if not names:
                if not strangers:
                    session.report.findings.append(Finding(check="coverage", resource=inv.name, status=Status.OK, value=0,
                                                           summary=f"{inv.name}'s inventory names no Lambda function: nothing to check"))
                plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity, notes=["no Lambda function to check"])
            else:
                deadline = aws.Deadline(READ_DEADLINE_S)
                configs = lt.read_configs.submit(inv, names, deadline).result()
                records = future_value(records_f)
                if isinstance(records, BaseException):
                    session.report.findings.append(unknown("records", inv.mutations.state_table, f"{aws.describe_error(records)}; "
                                                           "timeouts count from each function's LastModified only"))
                    records = []
                window_start = datetime.now(timezone.utc) - timedelta(minutes=window_minutes)
                since = {c.name: lt.since_for(c, records, RUNBOOK, window_start) for c in configs if c.error is None}
                readable = [c for c in configs if c.error is None]
                scans_f = lt.scan_timeouts.submit(inv, readable, since, window_start, deadline)
                stats_f = lt.read_duration_metrics.submit(inv, since)
                queues_f = lt.read_queues.submit(inv, readable, deadline)
                diagnoses = judge.submit(inv, configs, future_value(scans_f), future_value(stats_f), future_value(queues_f)).result()
                session.report.findings += [d.finding for d in diagnoses] + [f for d in diagnoses for f in d.extra_findings]
                plan = make_plan.submit(inv, identity, diagnoses).result()
        if session.gate(plan):
            settle = inv.mutations.settle_timeout_s
            session.lease(inv.mutations.lease_ttl_s + settle + observe_s)
            check_drift.submit(inv, plan).result()
            done, ok = apply_fixes.submit(inv, plan, session.approval, identity, session.run_id).result()
            if ok:  # after a failure part-way what was applied has been undone: there is nothing to read back
                done = verify_fixes.submit(inv, done, min(VERIFY_TIMEOUT_S, settle)).result()
            session.record(done)  # durable before the watch, which can take minutes
            session.report.findings += fix_findings(done)
            changed = list(dict.fromkeys(r.resource for r in done if r.kind != lt.VISIBILITY_KIND and r.status == "verified"))
            if ok and changed and not undo_run:
                observations = observe_changes.submit(inv, changed, datetime.now(timezone.utc), float(observe_s)).result()
                session.report.findings = after_change(session.report.findings, observations, done, observe_s)
            elif undo_run:
                session.report.findings.append(Finding(check="undo", resource=undo_run, status=Status.OK if ok else Status.CRIT,
                                                       summary=f"{'put back' if ok else 'could not put back'} what run {undo_run} changed: "
                                                               + "; ".join(f"{r.resource} {r.kind} {r.before} -> {r.after} ({r.status})" for r in done)))
            session.done(ok and all(r.status not in ("failed", "undo-failed") for r in done))
            session.notify(session.report.outcome, [f"{r.resource}: {r.kind} {r.before} -> {r.after}: {r.status} {r.detail}".strip() for r in done])
    return session.finish()


TASKS = [lt.read_configs, lt.scan_timeouts, lt.read_duration_metrics, lt.read_queues, plan_undo, check_drift, apply_fixes,
         verify_fixes, observe_changes] + SESSION_TASKS
