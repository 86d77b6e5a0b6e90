"""maintenance-audit: the monthly maintenance and security audit of one system.

Sources: 000 데이터 정리 (log retention 30 days) and 보안 운영 (IAM roles,
tags, Lambda runtimes, KMS rotation), 001 월간 유지보수 (log cleanup) and 일일
보안 점검 (security groups, secrets rotation), 003 정기 점검 (S3 tmp/ lifecycle,
RDS snapshots, audit-log PII sampling).

Steps: confirm identity -> read concurrently (log retention, tmp/ prefixes,
an audit-log sample, Lambda runtimes, IAM roles, tags, KMS, secrets, security
groups, RDS snapshots, ACM certificates, ECR image scans) -> judge (pure, a finding per resource and check, each
saying what to do) -> plan the fixes -> (dry run ends here) -> approve ->
leases -> drift check -> act -> read back -> record -> notify.

Fixes (``fix=True``): set retention to ``audit.log_retention_days`` on log
groups that have none (undo: DeleteRetentionPolicy) and enable rotation of the
``kms_key_aliases`` keys (undo: DisableKeyRotation). Shortening a retention,
deleting tmp/ objects, lifecycle rules, roles, tags, runtimes, secrets and
security groups are findings with instructions, never automatic. Running again
once fixed plans nothing.

API calls: 1+ a log group, 1 + pages a tmp/ prefix, pages of FilterLogEvents an
audit group (capped), 1 a function, ListRoles pages + 1 a matching role, pages
of GetResources, ListAliases + 1 a key, 1 a secret, DescribeSecurityGroups
pages, 1 + pages an RDS instance, ListCertificates pages + 1 a matching
certificate, DescribeImages pages + 1 an ECR repository, plus the session's and 2-3 a fix.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.mutation.core import (
    Action,
    Approval,
    Identity,
    Plan,
    Record,
    Refused,
    drift,
)
from opsbook.mutation.session import SESSION_TASKS, MutationSession, mark_verified
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SystemName
from tasks import audits as au
from tasks.audits import (
    APPLIERS,
    KMS_ROTATION,
    NONE,
    RETENTION,
    KeyRotation,
    LogGroupState,
    read_certificates,
    read_iam_roles,
    read_image_scans,
    read_kms_rotation,
    read_log_retention,
    read_resource_tags,
    read_runtimes,
    read_secret_rotation,
    read_security_groups,
    read_tmp_prefixes,
    sample_audit_logs,
)
from tasks.backups import judge_rds, read_rds_snapshots

RUNBOOK = "maintenance-audit"
READ_DEADLINE_S = 120.0
VERIFY_TIMEOUT_S = 30.0


# --- deciding (pure) ------------------------------------------------------------------------


def judge(inv: System, states: dict[str, Any], now: datetime) -> list[Finding]:
    """A finding per resource and check; a read task that failed as a whole is UNKNOWN with its reason."""
    a = inv.audit
    table = au.deprecations(inv)
    out: list[Finding] = []
    for name, value in states.items():
        if isinstance(value, BaseException):
            out.append(unknown(f"{name}", "(whole check)", aws.describe_error(value)))
            continue
        for s in value:
            if name == "logs":
                out.append(au.judge_log_retention(s, a.log_retention_days))
            elif name == "tmp":
                out += au.judge_tmp(s)
            elif name == "audit-log":
                out.append(au.judge_audit_sample(s))
            elif name == "runtimes":
                out.append(au.judge_runtime(s, table, a.runtime_warn_days, now.date()))
            elif name == "iam":
                out.append(au.judge_role(s, a.iam_unused_days, now))
            elif name == "tags":
                out.append(au.judge_tags(s, a.required_tags))
            elif name == "kms":
                out.append(au.judge_kms(s))
            elif name == "secrets":
                out.append(au.judge_secret(s, a.secret_rotation_max_days, now))
            elif name == "security-groups":
                out.append(au.judge_security_group(s))
            elif name == "rds":
                out.append(judge_rds(s, now))
            elif name == "certificates":
                out.append(au.judge_certificate(s, a.certificate_warn_days, now))
            elif name == "ecr-scans":
                out.append(au.judge_image_scan(s))
    return out


def decide(inv: System, identity: Identity, groups: list[LogGroupState], keys: list[KeyRotation], fix: bool) -> Plan:
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    target = str(inv.audit.log_retention_days)
    wanted: list[Action] = []
    for g in groups:
        if g.error or not g.exists:
            continue
        if g.retention_days is None:
            wanted.append(Action(kind=RETENTION, resource=g.name, current=NONE, target=target, iam_action="logs:PutRetentionPolicy",
                                 evidence=f"no retention ({au.human_bytes(g.stored_bytes)} stored); events older than {target} days will be "
                                          "deleted by CloudWatch Logs (undo: delete the retention policy, before they age out)"))
        else:
            plan.unchanged.append(f"{g.name}: retention {g.retention_days} days")
    for k in keys:
        if k.error or k.enabled is None:
            continue
        if k.enabled:
            plan.unchanged.append(f"{k.alias}: rotation ENABLED")
        else:
            wanted.append(Action(kind=KMS_ROTATION, resource=k.alias, current="DISABLED", target="ENABLED", iam_action="kms:EnableKeyRotation",
                                 evidence=f"key {k.key_id}: yearly automatic rotation off (undo: disable rotation)"))
    plan.propose(wanted, fix)
    plan.notes.append("shortening a retention, tmp/ objects and lifecycle rules, IAM roles, tags, runtimes, secrets, security groups and "
                      "RDS snapshots are never changed by this runbook: their findings say what to do")
    return plan


# --- tasks ------------------------------------------------------------------------------------


@task(name="plan-maintenance-fixes", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, groups: list[LogGroupState], keys: list[KeyRotation], fix: bool) -> Plan:
    return decide(inv, identity, groups, keys, fix)


@aws_task(iam=["logs:DescribeLogGroups", "kms:ListAliases", "kms:GetKeyRotationStatus"], name="check-maintenance-drift", cache_policy=NO_CACHE)
def check_drift(system: System, plan: Plan) -> None:
    drifted = drift(system, plan, APPLIERS)
    if drifted:
        raise Refused("the state changed since the plan was made; nothing was changed (run again to plan afresh): " + "; ".join(drifted))


@aws_task(iam=["logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy", "kms:ListAliases", "kms:EnableKeyRotation", "kms:DisableKeyRotation"],
          name="apply-maintenance-fixes", cache_policy=NO_CACHE, read_only=False)
def apply_fixes(system: System, plan: Plan, approval: Approval, identity: Identity, run_id: str) -> list[Record]:
    """Every fix in order; each is independent, so a failure is recorded and the rest still run."""
    base = dict(runbook=plan.runbook, system=plan.system, flow_run_id=run_id, approver=approval.approver, approved_via=approval.via,
                caller_arn=identity.arn, plan_fingerprint=plan.fingerprint)
    records = []
    for a in plan.actions:
        try:
            APPLIERS[a.kind].apply(system, a.resource, a.target)
            records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=a.target, status="applied"))
        except Exception as exc:  # recorded and reported (the run ends failed)
            records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=None, status="failed",
                                  detail=aws.describe_error(exc)))
    return records


@aws_task(iam=["logs:DescribeLogGroups", "kms:ListAliases", "kms:GetKeyRotationStatus"], name="verify-maintenance-fixes", cache_policy=NO_CACHE)
def verify_fixes(system: System, records: list[Record], timeout_s: float) -> list[Record]:
    applied = [(r.kind, r.resource, r.after or "") for r in records if r.status == "applied"]
    return mark_verified(records, au.wait_verified(system, applied, timeout_s), timeout_s)


def fix_findings(records: list[Record]) -> list[Finding]:
    out = []
    for r in records:
        what = f"retention {r.after} days" if r.kind == RETENTION else "enable key rotation"
        status = {"verified": Status.OK, "applied": Status.WARN}.get(r.status, Status.CRIT)
        out.append(Finding(check="maintenance-fix", resource=r.resource, status=status, summary=f"{what}: {r.status}; {r.detail}".rstrip("; ")))
    return out


def replace_findings(findings: list[Finding], fresh: list[Finding], resources: set[str]) -> list[Finding]:
    """The report shows the state after the fixes: re-read findings replace those of the fixed resources."""
    return [f for f in findings if not (f.resource in resources and f.check in ("logs-retention", "kms-rotation"))] + fresh


# --- the runbook --------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def maintenance_audit(
    system: SystemName,
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    fix: Annotated[bool, Param("Plan the safe fixes (missing log retention, KMS key rotation); off: report only, the would-be fixes listed in the plan's notes")] = True,
) -> Any:
    """Audit the system's maintenance and security hygiene (read-only) and, with ``fix`` (default), plan the safe fixes.

    dry_run (default) ends after the plan. Otherwise the run asks for approval,
    then sets the missing log retentions and enables KMS key rotation, reads
    each back, records and notifies. Everything else is a finding with instructions.
    """
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
    with session:
        identity = session.identity()
        deadline = aws.Deadline(READ_DEADLINE_S)
        a = inv.audit
        futures: dict[str, Any] = {"logs": read_log_retention.submit(inv, deadline)}
        if any(b.tmp_prefix for b in inv.s3_buckets):
            futures["tmp"] = read_tmp_prefixes.submit(inv, deadline)
        if any(g.audit for g in inv.log_groups):
            futures["audit-log"] = sample_audit_logs.submit(inv, deadline)
        if inv.lambda_functions:
            futures["runtimes"] = read_runtimes.submit(inv, deadline)
        if a.iam_role_patterns:
            futures["iam"] = read_iam_roles.submit(inv, deadline)
        if a.required_tags:
            futures["tags"] = read_resource_tags.submit(inv)
        if a.kms_key_aliases:
            futures["kms"] = read_kms_rotation.submit(inv, deadline)
        if a.secrets:
            futures["secrets"] = read_secret_rotation.submit(inv, deadline)
        if a.security_group_patterns:
            futures["security-groups"] = read_security_groups.submit(inv)
        if inv.rds_instances:
            futures["rds"] = read_rds_snapshots.submit(inv, deadline)
        if a.certificate_domains:
            futures["certificates"] = read_certificates.submit(inv, deadline)
        if a.ecr_repositories:
            futures["ecr-scans"] = read_image_scans.submit(inv, deadline)
        states = {k: future_value(f) for k, f in futures.items()}
        now = datetime.now(timezone.utc)
        session.report.findings += judge(inv, states, now)
        groups = states["logs"] if isinstance(states["logs"], list) else []
        keys = states.get("kms") if isinstance(states.get("kms"), list) else []
        plan = make_plan.submit(inv, identity, groups, keys, fix).result()
        if session.gate(plan):
            session.lease()
            check_drift.submit(inv, plan).result()
            done = apply_fixes.submit(inv, plan, session.approval, identity, session.run_id).result()
            done = verify_fixes.submit(inv, done, min(VERIFY_TIMEOUT_S, inv.mutations.settle_timeout_s)).result()
            fixed_groups = sorted({x.resource for x in plan.actions if x.kind == RETENTION})
            fixed_keys = sorted({x.resource for x in plan.actions if x.kind == KMS_ROTATION})
            reread = {"logs": read_log_retention.submit(inv, aws.Deadline(READ_DEADLINE_S), fixed_groups)}
            if fixed_keys:
                reread["kms"] = read_kms_rotation.submit(inv, aws.Deadline(READ_DEADLINE_S), fixed_keys)
            after = {k: future_value(f) for k, f in reread.items()}
            session.record(done)
            for k, resources in (("logs", fixed_groups), ("kms", fixed_keys)):
                if k not in after:
                    continue
                if isinstance(after[k], BaseException):
                    session.report.findings += [unknown(f"{k}-reread", r, aws.describe_error(after[k])) for r in resources]
                else:
                    session.report.findings = replace_findings(session.report.findings, judge(inv, {k: after[k]}, datetime.now(timezone.utc)),
                                                               set(resources))
            session.report.findings += fix_findings(done)
            session.done(all(r.status != "failed" for r in done))
            session.notify(session.report.outcome, [f"{r.resource}: {r.kind} {r.before} -> {r.after}: {r.status} {r.detail}".strip() for r in done])
    return session.finish()


TASKS = [read_log_retention, read_tmp_prefixes, sample_audit_logs, read_runtimes, read_iam_roles, read_resource_tags, read_kms_rotation,
         read_secret_rotation, read_security_groups, read_rds_snapshots, read_certificates, read_image_scans,
         check_drift, apply_fixes, verify_fixes] + SESSION_TASKS
