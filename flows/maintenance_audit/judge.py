"""maintenance-audit, judged (pure: no AWS, no Prefect, no clock; ``now`` is passed in): what was read -> findings, and
the safe fixes (missing log retention, KMS key rotation) -> a plan. Every other finding says what to do by hand."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timezone
from typing import Any

from opsbook.collect import judge_states
from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import LambdaFunction, System
from opsbook.mutation.core import Action, Identity, Plan, Record
from opsbook.snapshots import judge_rds
from tasks.acm import CertificateState
from tasks.awslambda import CONFIG_IAM, MEMORY_KIND, TIMEOUT_KIND, FunctionInfo, FunctionRuntime
from tasks.ec2 import SecurityGroup
from tasks.ecr import ImageScan
from tasks.iam_roles import RoleUse
from tasks.kms import DISABLED, ENABLED, KeyRotation
from tasks.logs import AUDIT_LOOKBACK_DAYS, NO_RETENTION, AuditSample, LogGroupState
from tasks.s3 import TmpPrefix
from tasks.secretsmanager import SecretRotation
from tasks.tagging import ResourceTags

RUNBOOK = "maintenance-audit"
RETENTION, KMS_ROTATION = "logs-retention", "kms-rotation"  # action kinds (and the checks they fix)
DRIFT = "lambda-config-drift"  # the check whose fixes are MEMORY_KIND and TIMEOUT_KIND actions

# Each check (as the report names it) and the read it judges: ``checks=[...]`` runs only those (None: the inventory's).
CHECK_READS: dict[str, str] = {
    RETENTION: "logs", "s3-tmp-lifecycle": "tmp", "s3-tmp-age": "tmp", "audit-log-pii": "audit-log", "lambda-runtime": "runtimes",
    DRIFT: "lambda-config", "iam-role-unused": "iam", "required-tags": "tags", KMS_ROTATION: "kms", "secret-rotation": "secrets",
    "security-group-open": "security-groups", "rds-snapshot": "rds", "acm-certificate-expiry": "certificates",
    "ecr-image-scan": "ecr-scans",
}

# AWS Lambda runtime deprecation dates (docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html, as published by
# 2025-11: python3.9 moved to 2025-12-15, nodejs18.x deprecated 2025-09-01). Inventory `audit.runtime_deprecations` overrides.
RUNTIME_DEPRECATIONS: dict[str, str] = {
    "python2.7": "2021-07-15", "python3.6": "2022-07-18", "python3.7": "2023-12-04", "python3.8": "2024-10-14",
    "python3.9": "2025-12-15", "python3.10": "2026-06-30", "python3.11": "2026-06-30",
    "nodejs12.x": "2023-03-31", "nodejs14.x": "2023-12-04", "nodejs16.x": "2024-06-12", "nodejs18.x": "2025-09-01",
    "java8": "2024-01-08", "go1.x": "2024-01-08", "ruby2.7": "2023-12-07", "dotnet6": "2024-12-20", "dotnetcore3.1": "2023-04-03",
    "provided": "2024-01-08",
}
# Suspected breach at CRIT (opsbook.escalation): a security group open to the internet on SSH, RDP or everything, and
# personal data or secrets in the audit log (003: 데이터 유출 -> Lv3). The IAM role check only ever WARNs (unused roles).
BREACH_CHECKS = frozenset({"security-group-open", "audit-log-pii"})
WORLD = ("0.0.0.0/0", "::/0")  # a source range open to the whole internet (IPv4, IPv6)
RISKY = ("all traffic", "tcp/22 ", "tcp/3389 ")  # open to the world: CRIT (anything else open: WARN)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def judge_log_retention(s: LogGroupState, target_days: int) -> Finding:
    check = "logs-retention"
    if s.error:
        return unknown(check, s.name, s.error)
    if not s.exists:
        if s.named:
            return Finding(check=check, resource=s.name, status=Status.WARN,
                           summary="the log group named in the inventory does not exist; check the name (nothing to set)")
        return Finding(check=check, resource=s.name, status=Status.OK,
                       summary="not created yet (Lambda creates it on the first invocation, with no retention: the next run sets it)")
    details = {"retention_days": s.retention_days, "stored_bytes": s.stored_bytes, "target_days": target_days, "audit": s.audit}
    if s.retention_days is None:
        return Finding(check=check, resource=s.name, status=Status.WARN, details=details, value=s.stored_bytes,
                       summary=f"no retention: logs are kept (and billed) forever, {human_bytes(s.stored_bytes)} stored; "
                               f"fix: set retention to {target_days} days (planned; undo: delete the retention policy)")
    if s.retention_days > target_days:
        if s.audit:
            return Finding(check=check, resource=s.name, status=Status.OK, details=details, value=s.retention_days,
                           summary=f"audit log group keeps {s.retention_days} days (policy {target_days} days for other logs); "
                                   "never shortened by this runbook")
        share = 1 - target_days / s.retention_days
        return Finding(check=check, resource=s.name, status=Status.WARN, details=details, value=s.retention_days,
                       summary=f"retention {s.retention_days} days exceeds the policy's {target_days}: shortening it would delete every event "
                               f"older than {target_days} days, up to about {human_bytes(s.stored_bytes * share)} of the "
                               f"{human_bytes(s.stored_bytes)} stored (estimate, if evenly spread); not automatic: confirm nobody needs "
                               f"them, then aws logs put-retention-policy --log-group-name {s.name} --retention-in-days {target_days}")
    return Finding(check=check, resource=s.name, status=Status.OK, details=details, value=s.retention_days,
                   summary=f"retention {s.retention_days} days (policy {target_days})")


def lifecycle_instructions(s: TmpPrefix, days: int) -> str:
    return ("aws s3api put-bucket-lifecycle-configuration --bucket " + s.bucket + " --lifecycle-configuration "
            "'{\"Rules\":[{\"ID\":\"expire-tmp\",\"Status\":\"Enabled\",\"Filter\":{\"Prefix\":\"" + s.prefix + "\"},"
            "\"Expiration\":{\"Days\":" + str(days) + "}}]}' (this REPLACES the bucket's lifecycle rules: merge with the existing ones)")


def judge_tmp(s: TmpPrefix) -> list[Finding]:
    res = f"{s.bucket}/{s.prefix}"
    if s.error:
        return [unknown("s3-tmp-lifecycle", res, s.error)]
    out = []
    if s.lifecycle_error:
        out.append(unknown("s3-tmp-lifecycle", res, s.lifecycle_error))
    elif s.rule_days is None:
        out.append(Finding(check="s3-tmp-lifecycle", resource=res, status=Status.WARN,
                           summary=f"no enabled lifecycle rule expires {s.prefix}: temporary objects are never deleted; fix: "
                                   + lifecycle_instructions(s, s.limit_days)))
    else:
        out.append(Finding(check="s3-tmp-lifecycle", resource=res, status=Status.OK, value=s.rule_days,
                           summary=f"lifecycle rule {s.rule_id or '(no id)'} expires {s.prefix} after {s.rule_days} days"))
    details = {"objects": s.objects, "old_objects": s.old_objects, "old_bytes": s.old_bytes, "limit_days": s.limit_days}
    if s.old_objects:
        why = ("the lifecycle rule is not expiring them: check its filter and status" if s.rule_days else "no rule expires them")
        out.append(Finding(check="s3-tmp-age", resource=res, status=Status.WARN, value=s.old_objects, details=details,
                           summary=f"{s.old_objects} of {s.objects} objects older than {s.limit_days} days ({human_bytes(s.old_bytes)}, oldest "
                                   f"{s.oldest_days:.0f} days); {why}; delete them after checking nothing still reads them"))
    else:
        out.append(Finding(check="s3-tmp-age", resource=res, status=Status.OK, value=0, details=details,
                           summary=f"no object under {s.prefix} older than {s.limit_days} days ({s.objects} objects)"))
    return out


def judge_audit_sample(s: AuditSample) -> Finding:
    check = "audit-log-pii"
    if s.error:
        return unknown(check, s.log_group, s.error)
    window = f"{s.sampled} of {s.read} events of the last {AUDIT_LOOKBACK_DAYS} days" + (" (read stopped at the cap)" if s.truncated else "")
    if not s.hits:
        return Finding(check=check, resource=s.log_group, status=Status.OK, value=0, details={"read": s.read, "sampled": s.sampled},
                       summary=f"no personal data or secret in a sample of {window}")
    kinds = sorted({k for h in s.hits for k in h["kinds"]})
    where = "; ".join(f"{h['stream']} @{datetime.fromtimestamp(h['timestamp'] / 1000, timezone.utc).isoformat(timespec='seconds')} "
                      f"{'+'.join(h['kinds'])}: {h['excerpt']}" for h in s.hits[:5])
    return Finding(check=check, resource=s.log_group, status=Status.CRIT, value=len(s.hits),
                   details={"read": s.read, "sampled": s.sampled, "hits": s.hits},
                   summary=f"{len(s.hits)} event(s) with {', '.join(kinds)} in a sample of {window}: {where}"
                           f"{' …' if len(s.hits) > 5 else ''}; stop logging them at the source, then treat it as a possible leak (Lv3)")


def deprecations(system: System) -> dict[str, date]:
    merged = {**RUNTIME_DEPRECATIONS, **system.audit.runtime_deprecations}
    return {k: date.fromisoformat(v) for k, v in merged.items()}


def judge_runtime(s: FunctionRuntime, table: dict[str, date], warn_days: int, today: date) -> Finding:
    check = "lambda-runtime"
    if s.error:
        return unknown(check, s.function, s.error)
    if s.runtime is None:
        return Finding(check=check, resource=s.function, status=Status.OK, summary=f"{s.package_type or 'Image'} package: runtime is in the image")
    when = table.get(s.runtime)
    if when is None:
        return Finding(check=check, resource=s.function, status=Status.OK, summary=f"{s.runtime}: no deprecation date known")
    days = (when - today).days
    if days <= 0:
        return Finding(check=check, resource=s.function, status=Status.CRIT, value=days,
                       summary=f"{s.runtime} was deprecated on {when} ({-days} days ago): no security patches; upgrade the runtime")
    if days <= warn_days:
        return Finding(check=check, resource=s.function, status=Status.WARN, value=days,
                       summary=f"{s.runtime} is deprecated on {when} (in {days} days, warn at {warn_days}); plan the upgrade")
    return Finding(check=check, resource=s.function, status=Status.OK, value=days, summary=f"{s.runtime}: deprecated on {when} ({days} days)")


# --- Lambda memory and timeout against the inventory's expected_* (000 성능 최적화) ---------------------------------

SIZE_FIELDS = {MEMORY_KIND: ("memory_mb", "expected_memory_mb", "memory", "MB"), TIMEOUT_KIND: ("timeout_s", "expected_timeout_s", "timeout", "s")}


def size_text(kind: str, value: int | str | None, word: bool = True) -> str:
    """'memory 1024 MB', 'timeout 300 s' (without the word: '1024 MB')."""
    _, _, name, unit = SIZE_FIELDS[kind]
    return f"{name} {value} {unit}" if word else f"{value} {unit}"


def declared(spec: LambdaFunction | None) -> list[str]:
    """The kinds whose value the inventory declares for the function (none: not judged)."""
    return [k for k, (_, expected_field, _, _) in SIZE_FIELDS.items() if spec is not None and getattr(spec, expected_field) is not None]


def as_configured(s: FunctionInfo, spec: LambdaFunction) -> str:
    """'memory 1024 MB, timeout 300 s': the settings the inventory declares, as the function has them."""
    return ", ".join(size_text(k, getattr(s, SIZE_FIELDS[k][0])) for k in declared(spec))


def size_drift(s: FunctionInfo, spec: LambdaFunction) -> list[tuple[str, int | None, int]]:
    """(kind, configured, expected) of each setting the inventory expects and the function does not have; memory first."""
    out = []
    for kind, (field, expected_field, _, _) in SIZE_FIELDS.items():
        want, have = getattr(spec, expected_field), getattr(s, field)
        if want is not None and have != want:
            out.append((kind, have, want))
    return out


def judge_config_drift(s: FunctionInfo, spec: LambdaFunction | None) -> list[Finding]:
    """The configured memory/timeout against the inventory's ``expected_*``: a difference is WARN naming both values (the fix
    is planned); unreadable UNKNOWN; a function without ``expected_*`` is not judged."""
    if spec is None or not declared(spec):
        return []
    if s.error:
        return [unknown(DRIFT, s.function, s.error)]
    if not s.exists:
        return [Finding(check=DRIFT, resource=s.function, status=Status.WARN,
                        summary="the function named in the inventory does not exist; check the name (nothing to compare)")]
    drift = size_drift(s, spec)
    if any(have is None for _, have, _ in drift):
        return [unknown(DRIFT, s.function, "GetFunctionConfiguration returned no " + " or ".join(SIZE_FIELDS[k][2] for k, h, _ in drift if h is None))]
    details = {"memory_mb": s.memory_mb, "timeout_s": s.timeout_s, "expected_memory_mb": spec.expected_memory_mb,
               "expected_timeout_s": spec.expected_timeout_s}
    if drift:
        what = "; ".join(f"{size_text(k, have)}, expected {size_text(k, want, word=False)}" for k, have, want in drift)
        return [Finding(check=DRIFT, resource=s.function, status=Status.WARN, value=len(drift), details=details,
                        summary=f"{what}: changed outside the inventory; fix: set back to the expected value(s) (planned; undo: the "
                                "previous value). If the change was deliberate (e.g. remediate-lambda-timeout raised it), update "
                                "the inventory's expected_* instead of approving")]
    return [Finding(check=DRIFT, resource=s.function, status=Status.OK, value=0, details=details,
                    summary=f"{as_configured(s, spec)}, as the inventory expects")]


def drift_actions(inv: System, functions: Iterable[FunctionInfo]) -> tuple[list[Action], list[str]]:
    """Set each drifted memory/timeout back to the inventory's value (memory first); unreadable or missing: no action.
    (actions, functions already as expected)."""
    specs = {f.name: f for f in inv.lambda_functions}
    actions: list[Action] = []
    same: list[str] = []
    for s in functions:
        spec = specs.get(s.function)
        if spec is None or not declared(spec) or s.error or not s.exists:
            continue
        drift = size_drift(s, spec)
        if any(have is None for _, have, _ in drift):
            continue
        if not drift:
            same.append(f"{s.function}: {as_configured(s, spec)}, as expected")
        queue = f"; it is fed by {spec.sqs_source}: keep its VisibilityTimeout >= 6x the timeout" if spec.sqs_source else ""
        for kind, have, want in drift:
            actions.append(Action(kind=kind, resource=s.function, current=str(have), target=str(want), iam_action=CONFIG_IAM,
                                  evidence=f"the inventory expects {size_text(kind, want)} ({SIZE_FIELDS[kind][1]}), configured "
                                           f"{size_text(kind, have)} (undo: back to {have}){queue if kind == TIMEOUT_KIND else ''}"))
    return actions, same


def judge_role(s: RoleUse, unused_days: int, now: datetime) -> Finding:
    check = "iam-role-unused"
    if s.error:
        return unknown(check, s.role, s.error)
    if s.last_used is not None:
        age = (now - s.last_used).days
        if age >= unused_days:
            return Finding(check=check, resource=s.role, status=Status.WARN, value=age,
                           summary=f"last used {age} days ago ({s.last_used.date()}; limit {unused_days}): remove it or its permissions if nothing needs it")
        return Finding(check=check, resource=s.role, status=Status.OK, value=age, summary=f"last used {age} days ago")
    created = (now - s.created).days if s.created else None
    if created is not None and created < unused_days:
        return Finding(check=check, resource=s.role, status=Status.OK, summary=f"never used; created {created} days ago (limit {unused_days})")
    return Finding(check=check, resource=s.role, status=Status.WARN,
                   summary=f"never used (created {created if created is not None else '?'} days ago; limit {unused_days}): "
                           "remove it if nothing needs it (IAM records use from 2020-04 in most regions)")


def judge_tags(s: ResourceTags, required: list[str]) -> Finding:
    res = f"{s.kind}:{s.name}"
    if s.error:
        return unknown("required-tags", res, s.error)
    missing = [t for t in required if t not in s.tags]
    if missing:
        return Finding(check="required-tags", resource=res, status=Status.WARN, details={"missing": missing},
                       summary=f"missing tag(s) {', '.join(missing)}" + ("" if s.tags else " (no tags at all)"))
    return Finding(check="required-tags", resource=res, status=Status.OK, summary=f"carries {', '.join(required)}")


def judge_kms(s: KeyRotation) -> Finding:
    if s.error:
        return unknown("kms-rotation", s.alias, s.error)
    if s.enabled:
        return Finding(check="kms-rotation", resource=s.alias, status=Status.OK, summary=f"automatic rotation enabled ({s.key_id})")
    return Finding(check="kms-rotation", resource=s.alias, status=Status.WARN,
                   summary=f"automatic key rotation disabled ({s.key_id}); fix: enable it (planned; undo: disable it)")


def judge_secret(s: SecretRotation, max_days: int, now: datetime) -> Finding:
    check = "secret-rotation"
    if s.error:
        return unknown(check, s.secret, s.error)
    last = s.last_rotated or s.created
    age = (now - last).days if last else None
    what = f"last rotated {age} days ago" if s.last_rotated else f"never rotated (created {age} days ago)"
    if age is None or age > max_days:
        hint = "" if s.rotation_enabled else "; rotation is not configured: aws secretsmanager rotate-secret --rotation-lambda-arn ..."
        return Finding(check=check, resource=s.secret, status=Status.WARN, value=age, summary=f"{what} (limit {max_days} days){hint}")
    return Finding(check=check, resource=s.secret, status=Status.OK, value=age, summary=f"{what} (limit {max_days} days)")


def open_rules(g: SecurityGroup) -> list[str]:
    """The group's inbound rules whose source is 0.0.0.0/0 or ::/0, as "tcp/22 from 0.0.0.0/0" / "all traffic from ::/0"."""
    out = []
    for r in g.ingress:
        if r.cidr not in WORLD:
            continue
        ports = "all" if r.protocol == "-1" else f"{r.from_port}-{r.to_port}" if r.from_port != r.to_port else str(r.from_port)
        out.append(f"{'all traffic' if r.protocol == '-1' else r.protocol + '/' + ports} from {r.cidr}")
    return out


def judge_security_group(g: SecurityGroup) -> Finding:
    res = f"{g.name} ({g.group_id})"
    rules = open_rules(g)
    if not rules:
        return Finding(check="security-group-open", resource=res, status=Status.OK, summary="no inbound rule open to the internet")
    status = Status.CRIT if any(r.startswith(RISKY) for r in rules) else Status.WARN
    return Finding(check="security-group-open", resource=res, status=status, value=len(rules),
                   summary="open to the internet: " + "; ".join(rules) + "; restrict the source (not changed automatically)")


def judge_certificate(s: CertificateState, warn_days: int, now: datetime) -> Finding:
    check = "acm-certificate-expiry"
    if s.error:
        return unknown(check, s.domain, s.error)
    if s.arn is None:
        return Finding(check=check, resource=s.domain, status=Status.WARN,
                       summary="no ACM certificate in this region covers the domain: check the inventory's name, or request one "
                               f"(aws acm request-certificate --domain-name {s.domain} --validation-method DNS) or check where it is served from")
    if s.not_after is None:
        return unknown(check, s.domain, f"{s.arn}: DescribeCertificate returned no NotAfter (status {s.status})")
    days = (s.not_after - now).total_seconds() / 86400
    details = {"arn": s.arn, "status": s.status, "not_after": s.not_after.isoformat(), "in_use_by": s.in_use_by, "warn_days": warn_days}
    when = s.not_after.date().isoformat()
    if days <= 0:
        return Finding(check=check, resource=s.domain, status=Status.CRIT, value=int(days), details=details,
                       summary=f"certificate expired on {when} ({int(-days)} days ago; {s.arn}, used by {s.in_use_by}): "
                               "clients reject it; renew or re-import it now and attach it where it is used")
    if days <= warn_days:
        return Finding(check=check, resource=s.domain, status=Status.WARN, value=int(days), details=details,
                       summary=f"certificate expires on {when} (in {int(days)} days, warn at {warn_days}; {s.arn}): "
                               "check DNS validation for managed renewal, or re-import an imported one")
    return Finding(check=check, resource=s.domain, status=Status.OK, value=int(days), details=details,
                   summary=f"certificate valid until {when} ({int(days)} days)")


def judge_image_scan(s: ImageScan) -> Finding:
    check = "ecr-image-scan"
    if s.error:
        return unknown(check, s.repository, s.error)
    if not s.exists:
        return Finding(check=check, resource=s.repository, status=Status.WARN,
                       summary="the repository named in the inventory does not exist; check the name")
    if s.reason:
        where = f"{s.repository}:{s.image}" if s.image else s.repository
        return unknown(check, s.repository, f"{where}: no scan findings ({s.reason})")
    crit, high = s.counts.get("CRITICAL", 0), s.counts.get("HIGH", 0)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items())) or "no findings"
    details = {"image": s.image, "counts": s.counts}
    if crit:
        return Finding(check=check, resource=s.repository, status=Status.CRIT, value=crit, details=details,
                       summary=f"latest image {s.image}: {counts}; rebuild on patched base images/packages and redeploy")
    if high:
        return Finding(check=check, resource=s.repository, status=Status.WARN, value=high, details=details,
                       summary=f"latest image {s.image}: {counts}; plan the patch and rebuild")
    return Finding(check=check, resource=s.repository, status=Status.OK, value=0, details=details,
                   summary=f"latest image {s.image}: no CRITICAL or HIGH findings ({counts})")


def judge(inv: System, states: dict[str, Any], now: datetime) -> list[Finding]:
    """A finding per resource and check; a read task that failed as a whole is UNKNOWN with its reason."""
    a = inv.audit
    table = deprecations(inv)
    specs = {f.name: f for f in inv.lambda_functions}
    judges: dict[str, Any] = {
        "logs": lambda s: [judge_log_retention(s, a.log_retention_days)],
        "tmp": judge_tmp,
        "audit-log": lambda s: [judge_audit_sample(s)],
        "runtimes": lambda s: [judge_runtime(s, table, a.runtime_warn_days, now.date())],
        "iam": lambda s: [judge_role(s, a.iam_unused_days, now)],
        "tags": lambda s: [judge_tags(s, a.required_tags)],
        "kms": lambda s: [judge_kms(s)],
        "secrets": lambda s: [judge_secret(s, a.secret_rotation_max_days, now)],
        "security-groups": lambda s: [judge_security_group(s)],
        "rds": lambda s: [judge_rds(s, now)],
        "certificates": lambda s: [judge_certificate(s, a.certificate_warn_days, now)],
        "ecr-scans": lambda s: [judge_image_scan(s)],
        "lambda-config": lambda s: judge_config_drift(s, specs.get(s.function)),
    }
    return judge_states(states, judges, lambda name: name)


def decide(inv: System, identity: Identity, groups: Iterable[LogGroupState], keys: Iterable[KeyRotation], fix: bool,
           functions: Iterable[FunctionInfo] = ()) -> Plan:
    """Set the policy's retention on groups that have none; enable rotation of keys that have it off; set a function's
    drifted memory/timeout back to the inventory's. Unreadable: no action."""
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    target = str(inv.audit.log_retention_days)
    wanted: list[Action] = []
    for g in groups:
        if g.error or not g.exists:
            continue
        if g.retention_days is None:
            wanted.append(Action(kind=RETENTION, resource=g.name, current=NO_RETENTION, target=target, iam_action="logs:PutRetentionPolicy",
                                 evidence=f"no retention ({human_bytes(g.stored_bytes)} stored); events older than {target} days will be "
                                          "deleted by CloudWatch Logs (undo: delete the retention policy, before they age out)"))
        else:
            plan.unchanged.append(f"{g.name}: retention {g.retention_days} days")
    for k in keys:
        if k.error or k.enabled is None:
            continue
        if k.enabled:
            plan.unchanged.append(f"{k.alias}: rotation {ENABLED}")
        else:
            wanted.append(Action(kind=KMS_ROTATION, resource=k.alias, current=DISABLED, target=ENABLED, iam_action="kms:EnableKeyRotation",
                                 evidence=f"key {k.key_id}: yearly automatic rotation off (undo: disable rotation)"))
    sized, same = drift_actions(inv, functions)
    wanted += sized
    plan.unchanged += same
    plan.propose(wanted, fix)
    plan.notes.append("shortening a retention, tmp/ objects and lifecycle rules, IAM roles, tags, runtimes, secrets, security groups and "
                      "RDS snapshots are never changed by this runbook: their findings say what to do")
    return plan


def fix_what(r: Record) -> str:
    if r.kind in SIZE_FIELDS:
        return f"{size_text(r.kind, r.after)} (was {r.before})"
    return f"retention {r.after} days" if r.kind == RETENTION else "enable key rotation"


def fixed_check(check: str) -> bool:
    """The checks a fix changes: their findings are replaced by the re-read ones."""
    return check in (RETENTION, KMS_ROTATION, DRIFT)


# The named resources each read needs the resolver to look up (opsbook.resources.KINDS); "tags" needs every kind.
READ_KINDS: dict[str, tuple[str, ...]] = {"logs": ("lambda", "logs"), "tmp": ("s3",), "audit-log": ("logs",), "runtimes": ("lambda",),
                                          "lambda-config": ("lambda",)}
ALL_KINDS = ("lambda", "dynamodb", "s3", "sqs", "logs")


def kinds_for(reads: set[str]) -> set[str]:
    """The kinds of named resource the resolver must look up for these reads."""
    return set(ALL_KINDS) if "tags" in reads else {k for r in reads for k in READ_KINDS.get(r, ())}


def reads_for(checks: Iterable[str]) -> set[str] | None:
    """The reads that the checks asked for need (None: no choice made, every read the inventory configures)."""
    wanted = set(checks)
    return {CHECK_READS[c] for c in wanted} if wanted else None


def scope_finding(inv: System, checks: Iterable[str], configured: Iterable[str]) -> list[Finding]:
    """What a run limited to some checks covered: the asked checks that ran, the inventory's checks it left out (no
    finding says OK about them: they were not looked at), and each asked check the inventory configures nothing for
    (UNKNOWN: asked, but nothing was read)."""
    asked, have = sorted(set(checks)), set(configured)
    if not asked:
        return []
    ran = [c for c in asked if CHECK_READS[c] in have]
    skipped = sorted({c for c, r in CHECK_READS.items() if r in have} - set(asked))
    out = [unknown(c, inv.name, "asked for (checks=...), but the inventory configures nothing for it to read "
                                "(docs/inventory.md: audit.*); not checked") for c in asked if c not in ran]
    if ran:
        out.insert(0, Finding(check="audit-scope", resource=inv.name, status=Status.OK, details={"checks": ran, "not_run": skipped},
                              summary=f"only {', '.join(ran)} ran, as asked (checks=...); not run: {', '.join(skipped) or 'nothing else configured'}"))
    return out
