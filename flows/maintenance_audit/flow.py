"""maintenance-audit: the monthly maintenance and security audit of one system.

Sources: 000 데이터 정리 (log retention 30 days) and 보안 운영 (IAM roles,
tags, Lambda runtimes, KMS rotation), 001 월간 유지보수 (log cleanup) and 일일
보안 점검 (security groups, secrets rotation), 003 정기 점검 (S3 tmp/ lifecycle,
RDS snapshots, audit-log PII sampling).

Steps: confirm identity -> resolve the system's resources once (named and
tag-discovered, the set daily-health checks; a named one that does not exist is
reported once and not audited further) -> read concurrently (log retention, tmp/ prefixes,
an audit-log sample, Lambda runtimes, IAM roles, tags, KMS, secrets, security
groups, RDS snapshots, ACM certificates, ECR image scans, Lambda memory/timeout) -> judge (pure, a finding per resource and check, each
saying what to do) -> plan the fixes -> (dry run ends here) -> approve ->
leases -> drift check -> act -> read back -> record -> notify. A security
group open to the internet (CRIT) or personal data in the audit log names the
inventory's breach escalation level; CRIT findings page the inventory's paging
channel once per incident, on dry runs too (they are what was found, not what
was changed).

Fixes (``fix=True``): set retention to ``audit.log_retention_days`` on log
groups that have none (undo: DeleteRetentionPolicy) and enable rotation of the
``kms_key_aliases`` keys (undo: DisableKeyRotation), and set a function's
memory/timeout back to its ``expected_memory_mb``/``expected_timeout_s`` when
it drifted (undo: the previous value; 000 성능 최적화). Shortening a retention,
deleting tmp/ objects, lifecycle rules, roles, tags, runtimes, secrets and
security groups are findings with instructions, never automatic. Running again
once fixed plans nothing; ``undo_run=<flow run id>`` plans putting back what
that run fixed (its durable records), behind approval.

API calls: pages of GetResources (discovery) + 1-2 a named resource discovery did not see, 1 per 50 log groups, 1 + pages a tmp/ prefix, pages of FilterLogEvents an
audit group (capped), 1 a function, ListRoles pages + 1 a matching role, ListAliases + 1 a key, 1 a secret, DescribeSecurityGroups
pages, 1 + pages an RDS instance, ListCertificates pages + 1 a matching
certificate, DescribeImages pages + 1 an ECR repository, 1 a function with
``expected_*``, plus the session's and 2-3 a fix.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.maintenance_audit.judge import (BREACH_CHECKS, CHECK_READS, KMS_ROTATION, RETENTION, RUNBOOK, decide, fix_what, fixed_check, judge,
                                          kinds_for, reads_for, scope_finding)
from opsbook import aws
from opsbook.collect import future_value
from opsbook.escalation import breach_escalation
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Applier, Identity, Plan, undo_plan
from opsbook.mutation.fixes import act, conclude
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records, steps_policy
from opsbook.paging import page_report
from opsbook.params import ApprovalTimeout, Approver, Choices, DryRun, Param, SystemName, UndoRun
from opsbook.resources import KINDS, Resolved, resolution_findings, resolve, resolved_or_named
from tasks.acm import read_certificates
from tasks.awslambda import (CONFIG_IAM, MEMORY_KIND, TIMEOUT_KIND, FunctionInfo, config_reader, config_setter, config_settled,
                             function_names, read_function_sizes, read_lambda_configs)
from tasks.ec2 import read_security_groups
from tasks.ecr import read_image_scans
from tasks.iam_roles import read_iam_roles
from tasks.kms import KeyRotation, read_key_rotation, read_kms_rotation, set_key_rotation
from tasks.logs import LogGroupState, read_log_retention, read_retention, sample_audit_logs, set_retention
from tasks.rds import read_rds_snapshots
from tasks.s3 import read_tmp_prefixes
from tasks.secretsmanager import read_secret_rotation
from tasks.tagging import resource_tags

READ_DEADLINE_S = 120.0
VERIFY_TIMEOUT_S = 30.0
APPLIERS = {
    RETENTION: Applier(read=read_retention, apply=set_retention),
    KMS_ROTATION: Applier(read=read_key_rotation, apply=set_key_rotation),
    MEMORY_KIND: Applier(read=config_reader("MemorySize"), apply=config_setter("MemorySize"), settled=config_settled("MemorySize")),
    TIMEOUT_KIND: Applier(read=config_reader("Timeout"), apply=config_setter("Timeout"), settled=config_settled("Timeout")),
}
UNDO_IAM = {RETENTION: "logs:DeleteRetentionPolicy", KMS_ROTATION: "kms:DisableKeyRotation", MEMORY_KIND: CONFIG_IAM, TIMEOUT_KIND: CONFIG_IAM}


# --- collect ------------------------------------------------------------------------------------


def resolved(inv: System, only: set[str] | None = None) -> Resolved:
    """The run's resources, resolved once (a resolution that failed as a whole: the named ones, and the reason). With
    ``only`` some reads, only the kinds of named resource they need are looked up (the rest are not read at all)."""
    tags = bool(inv.audit.required_tags) and (only is None or "tags" in only)
    if only is not None:
        needed = kinds_for(only)
        inv = inv.model_copy(update={field: [] for kind, (field, _) in KINDS.items() if kind not in needed})
    return resolved_or_named(inv, future_value(resolve.submit(inv, aws.Deadline(READ_DEADLINE_S), tags=tags)))


def configured(inv: System, found: Resolved) -> set[str]:
    """The reads this inventory configures (the others have nothing to read)."""
    a = inv.audit
    has = {"logs": True, "tmp": any(b.tmp_prefix for b in inv.s3_buckets), "audit-log": any(g.audit for g in inv.log_groups),
           "runtimes": bool(function_names(inv, found)),
           "lambda-config": any(f.expected_memory_mb or f.expected_timeout_s for f in inv.lambda_functions),
           "iam": bool(a.iam_role_patterns), "kms": bool(a.kms_key_aliases), "secrets": bool(a.secrets),
           "security-groups": bool(a.security_group_patterns), "rds": bool(inv.rds_instances),
           "certificates": bool(a.certificate_domains), "ecr-scans": bool(a.ecr_repositories), "tags": bool(a.required_tags)}
    return {k for k, v in has.items() if v}


def read_all(inv: System, found: Resolved, only: set[str] | None = None) -> dict[str, Any]:
    """Every concern the inventory configures (``only``: those of them), over the resolved resources (``inv`` without
    the missing ones), read concurrently; a read task that failed is its exception (UNKNOWN)."""
    deadline = aws.Deadline(READ_DEADLINE_S)
    wanted = configured(inv, found) & (only if only is not None else set(CHECK_READS.values()))
    reads: list[tuple[str, Any, tuple]] = [
        ("logs", read_log_retention, (inv, found, deadline)),
        ("tmp", read_tmp_prefixes, (inv, deadline)),
        ("audit-log", sample_audit_logs, (inv, deadline)),
        ("lambda", read_lambda_configs, (inv, found, deadline)),
        ("iam", read_iam_roles, (inv, deadline)),
        ("kms", read_kms_rotation, (inv, deadline)),
        ("secrets", read_secret_rotation, (inv, deadline)),
        ("security-groups", read_security_groups, (inv,)),
        ("rds", read_rds_snapshots, (inv, deadline)),
        ("certificates", read_certificates, (inv, deadline)),
        ("ecr-scans", read_image_scans, (inv, deadline)),
    ]
    lambda_checks = wanted & {"runtimes", "lambda-config"}  # one read of each function serves both Lambda checks
    futures = {name: t.submit(*args) for name, t, args in reads if name in wanted or (name == "lambda" and lambda_checks)}
    tags = {"tags": resource_tags(found)} if "tags" in wanted else {}  # read by the resolution: no call of its own
    states = {k: future_value(f) for k, f in futures.items()}
    lam = states.pop("lambda", None)
    for key in lambda_checks:
        states[key] = lam if isinstance(lam, BaseException) else lam[key]
    return states | tags


def reread(inv: System, found: Resolved, fixed: dict[str, list[str]]) -> dict[str, Any]:
    """The fixed log groups, keys and functions read again, for the report to show the state after the fixes."""
    futures = {"logs": read_log_retention.submit(inv, found, aws.Deadline(READ_DEADLINE_S), fixed["logs"])}
    if fixed["kms"]:
        futures["kms"] = read_kms_rotation.submit(inv, aws.Deadline(READ_DEADLINE_S), fixed["kms"])
    if fixed["lambda-config"]:
        futures["lambda-config"] = read_function_sizes.submit(inv, aws.Deadline(READ_DEADLINE_S), fixed["lambda-config"])
    return {k: future_value(f) for k, f in futures.items()}


# --- plan, act, verify --------------------------------------------------------------------------


@task(name="plan-maintenance-fixes", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, groups: list[LogGroupState], keys: list[KeyRotation], fix: bool,
              functions: list[FunctionInfo] | None = None) -> Plan:
    return decide(inv, identity, groups, keys, fix, functions or [])


@aws_task(iam=[], name="plan-maintenance-undo", cache_policy=NO_CACHE)
def plan_undo(inv: System, identity: Identity, records: list[dict[str, Any]], run_id: str) -> Plan:
    """The inverse of run ``run_id``'s fixes (its durable records); the steps' read functions declare their IAM actions."""
    return undo_plan(inv, RUNBOOK, identity, records, run_id, APPLIERS, UNDO_IAM)


def put_back(session: MutationSession, inv: System, run_id: str) -> Any:
    """``undo_run``: plan putting back what an earlier run fixed (a retention, a key's rotation, a function's memory or
    timeout), behind approval like any plan; each step read back, recorded, notified."""
    with session:
        identity = session.identity()
        plan = plan_undo.submit(inv, identity, read_records.submit(inv).result(), run_id).result()
        if session.gate(plan):
            done = act(session, identity, VERIFY_TIMEOUT_S)
            session.record(done)
            ok = all(r.status not in ("failed", "undo-failed") for r in done)
            session.report.findings.append(Finding(check="undo", resource=run_id, status=Status.OK if ok else Status.CRIT,
                                                   summary=f"{'put back' if ok else 'could not put back'} what run {run_id} changed: "
                                                           + "; ".join(f"{r.resource} {r.kind} {r.before} -> {r.after} ({r.status})" for r in done)))
            session.conclude(done, ok)
    return session.finish()





# --- the runbook --------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def maintenance_audit(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    fix: Annotated[bool, Param("Plan the safe fixes (missing log retention, KMS key rotation, a Lambda memory/timeout back to the "
                               "inventory's expected value); off: report only, the would-be fixes listed in the plan's notes")] = True,
    undo_run: UndoRun = "",
    checks: Annotated[Choices(CHECK_READS), Param("Only these checks, as the report names them (e.g. logs-retention,kms-rotation): "
                                                   "only their reads are made and only their fixes planned; empty (the default): "
                                                   "every check the inventory configures")] = [],  # noqa: B006 (pydantic copies it)
) -> Any:
    """Audit the system's maintenance and security hygiene (read-only) and, with ``fix`` (default), plan the safe fixes.

    dry_run (default) ends after the plan. Otherwise the run asks for approval,
    then sets the missing log retentions, enables KMS key rotation and sets
    drifted Lambda memory/timeout back to the inventory's, reads each back,
    records and notifies. Everything else is a finding with instructions.
    ``undo_run`` (a flow run id of this runbook) plans putting back what that run fixed instead.
    """
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s, appliers=APPLIERS)
    if undo_run:
        return put_back(session, inv, undo_run)
    with session:
        identity = session.identity()
        only = reads_for(checks)
        found = resolved(inv, only)
        session.report.findings += resolution_findings(inv, found)
        inv = found.present(inv)  # the missing ones are reported above, once, and not audited further
        states = read_all(inv, found, only)
        session.report.findings += scope_finding(inv, checks, configured(inv, found))
        session.report.findings += judge(inv, states, datetime.now(timezone.utc))
        session.report.findings += breach_escalation(inv, session.report.findings, BREACH_CHECKS)
        groups = states.get("logs") if isinstance(states.get("logs"), list) else []
        keys = states.get("kms") if isinstance(states.get("kms"), list) else []
        functions = states.get("lambda-config") if isinstance(states.get("lambda-config"), list) else []
        plan = make_plan.submit(inv, identity, groups, keys, fix, functions).result()
        if session.gate(plan):
            done = act(session, identity, VERIFY_TIMEOUT_S)
            fixed = {"logs": sorted({x.resource for x in plan.actions if x.kind == RETENTION}),
                     "kms": sorted({x.resource for x in plan.actions if x.kind == KMS_ROTATION}),
                     "lambda-config": sorted({x.resource for x in plan.actions if x.kind in (MEMORY_KIND, TIMEOUT_KIND)})}
            conclude(session, done, reread(inv, found, fixed), fixed, lambda st: judge(inv, st, datetime.now(timezone.utc)), fixed_check, "maintenance-fix", fix_what)
    page_report(session.report, inv, RUNBOOK)
    return session.finish()


TASKS = [resolve, read_log_retention, read_tmp_prefixes, sample_audit_logs, read_lambda_configs, read_iam_roles, read_kms_rotation,
         read_secret_rotation, read_security_groups, read_rds_snapshots, read_certificates, read_image_scans, read_function_sizes,
         plan_undo, steps_policy(APPLIERS)] + SESSION_TASKS
