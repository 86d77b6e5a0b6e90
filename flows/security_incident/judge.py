"""security-incident's judgement (pure: no AWS, no clock): what the inventory allows to contain, the plan
(rotate, lock, disable) from what was read, what an undo may put back (locks and users, never rotations),
the deny-all policy, and the findings and message lines of the records.

Three rules hold everywhere here:

- a secret's value is never seen: only version ids (``SecretState.value``);
- a Cognito username is personal data: everything the run shows names a user by a pseudonym
  (``tasks.cognito.subject_id``); only the ``subjects`` mapping handed to the act and the durable
  record keep the username;
- a bucket's previous policy is kept exactly as S3 returned it (the action's ``current`` and the
  record's ``before``), so the undo puts back the same bytes.
"""

from __future__ import annotations

import fnmatch
import json
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from opsbook.escalation import breach_level, breach_line
from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import EscalationLevel, System
from opsbook.masking import mask
from opsbook.mutation.core import Action, Identity, Plan, Record
from tasks.cognito import UserState, pool_of
from tasks.s3 import NO_POLICY, BucketState
from tasks.secretsmanager import VIA_PUT, VIA_ROTATE, SecretState

RUNBOOK = "security-incident"
ROTATE, LOCK, DISABLE, SIGN_OUT = "secret-rotation", "bucket-lock", "cognito-user-disabled", "cognito-sign-out"
SUBJECTS = f"{RUNBOOK}:subjects"  # durable items mapping a user's pseudonym to the username (for the undo)
DENY_SID = "OpsbookEmergencyDenyAll"
ROTATED_RECENTLY_S = 3600  # a re-run within this time does not rotate again what this runbook just rotated
IRREVERSIBLE = {
    ROTATE: "a rotated secret is never put back: the old credential is presumed compromised and must not come back "
            "(rotate again for a newer value)",
    SIGN_OUT: "signed-out sessions cannot be restored; after the undo the user signs in again",
}


# --- what is allowed --------------------------------------------------------------------------------


def allowed_secrets(system: System) -> list[str]:
    return list(system.security.secrets or system.audit.secrets)


def allowed_buckets(system: System) -> list[str]:
    return list(system.security.buckets or [b.name for b in system.s3_buckets])


def match_secret(requested: str, allowed: list[str]) -> str | None:
    """The inventory entry a requested secret name or ARN stands for, or None.

    An ARN matches an entry by its name part (Secrets Manager appends ``-`` and
    6 random characters to the name in the ARN)."""
    for entry in allowed:
        if requested == entry:
            return entry
        if requested.startswith("arn:") and ":secret:" in requested:
            tail = requested.split(":secret:", 1)[1]
            if tail == entry or re.fullmatch(re.escape(entry) + r"-[A-Za-z0-9]{6}", tail):
                return entry
    return None


def match_bucket(requested: str, allowed: list[str]) -> str | None:
    name = requested.removeprefix("arn:aws:s3:::").removeprefix("s3://").rstrip("/")
    return name if name in allowed else None


def subject_label(index: int, username: str) -> str:
    """How a requested user is named before it is resolved (no username)."""
    return f"disable_users[{index}] ({username[:1]}***)"


def security_escalation(system: System) -> tuple[EscalationLevel | None, str]:
    """The inventory's escalation entry for a security incident (a suspected breach), and the line to send: the level
    marked ``breach: true``; else (an inventory written before the marker) one named or described as security."""
    marked = breach_level(system)
    if marked is not None:
        return marked, breach_line(marked)
    for e in system.escalation:
        text = f"{e.level} {e.when}".lower()
        if "security" in text or "보안" in text:
            return e, f"escalate to {e.level}: {e.who} (respond within {e.respond_within_minutes} min)"
    if system.escalation:
        first = min(system.escalation, key=lambda e: e.respond_within_minutes)
        return None, (f"the inventory has no escalation level for security incidents (a level named 'security' or with "
                      f"'security' in `when`); its most urgent is {first.level}: {first.who} "
                      f"({first.respond_within_minutes} min): escalate there and add a security level")
    return None, "the inventory names no escalation levels: add one for security incidents"


# --- the deny-all policy ---------------------------------------------------------------------------


def partition_of(arn: str) -> str:
    parts = arn.split(":")
    return parts[1] if len(parts) > 2 and parts[0] == "arn" else "aws"


def role_arn(entry: str, account: str, partition: str = "aws") -> str:
    """A break-glass role as an ARN: a bare name (or path/name) is completed with the caller's account."""
    if entry.startswith("arn:"):
        return entry
    return f"arn:{partition}:iam::{account}:role/{entry.strip('/')}"


def deny_policy(bucket: str, exempt_arns: list[str], partition: str = "aws") -> str:
    """Deny every S3 action on the bucket and its objects to every principal except the break-glass roles."""
    if not exempt_arns:
        raise ValueError("a deny-all policy without a break-glass role would lock everyone out")
    arn = f"arn:{partition}:s3:::{bucket}"
    doc = {"Version": "2012-10-17", "Statement": [{
        "Sid": DENY_SID, "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": [arn, f"{arn}/*"],
        "Condition": {"ArnNotLike": {"aws:PrincipalArn": sorted(exempt_arns)}}}]}
    return json.dumps(doc, separators=(",", ":"))


def same_policy(a: str, b: str) -> bool:
    """Exactly the same text, or the same JSON document (S3 may re-format what it stores)."""
    if a == b:
        return True
    if NO_POLICY in (a, b):
        return False
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


def is_our_lock(policy: str) -> bool:
    try:
        stmts = json.loads(policy).get("Statement", [])
    except (ValueError, AttributeError):
        return False
    return any(isinstance(s, dict) and s.get("Sid") == DENY_SID for s in (stmts if isinstance(stmts, list) else [stmts]))


def caller_exempt(caller_arn: str, exempt_arns: list[str]) -> bool:
    """Does ``aws:PrincipalArn`` of this caller match one of the break-glass ARN patterns (ArnLike)?

    An assumed-role session (``arn:aws:sts::A:assumed-role/NAME/session``) is the
    role ``arn:aws:iam::A:role/[path/]NAME``; STS drops the path, so a pattern
    matches when its account and role name match."""
    parts = caller_arn.split(":", 5)
    if len(parts) < 6:
        return False
    partition, service, account, res = parts[1], parts[2], parts[4], parts[5]
    if service == "sts" and res.startswith("assumed-role/"):
        name = res.split("/")[1]
        principal = f"arn:{partition}:iam::{account}:role/{name}"
        for p in exempt_arns:
            if fnmatch.fnmatchcase(principal, p):
                return True
            pp = p.split(":", 5)
            if len(pp) == 6 and pp[5].startswith("role/") and fnmatch.fnmatchcase(account, pp[4]) \
                    and fnmatch.fnmatchcase(name, pp[5].rsplit("/", 1)[-1]):
                return True
        return False
    return any(fnmatch.fnmatchcase(caller_arn, p) for p in exempt_arns)


# --- deciding ---------------------------------------------------------------------------------------


class Requests(BaseModel):
    """What was asked, split into what the inventory allows and what it refuses (with why)."""

    secrets: list[tuple[str, str]] = Field(default_factory=list, description="(requested id, inventory entry)")
    buckets: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list, description="usernames: personal data, never shown")
    refused: list[str] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.secrets or self.buckets or self.users or self.refused)


def resolve_requests(inv: System, rotate_secrets: list[str], lock_buckets: list[str], disable_users: list[str]) -> Requests:
    req = Requests()
    allowed_s, allowed_b = allowed_secrets(inv), allowed_buckets(inv)
    for s in rotate_secrets:
        entry = match_secret(s, allowed_s)
        if entry is None:
            req.refused.append(f"{s}: not a secret this runbook may rotate for {inv.name} (security.secrets, else audit.secrets: "
                               f"{', '.join(allowed_s) or 'none'}); add it to the inventory first")
        elif entry not in [e for _, e in req.secrets]:
            req.secrets.append((s, entry))
    for b in lock_buckets:
        name = match_bucket(b, allowed_b)
        if name is None:
            req.refused.append(f"{b}: not a bucket this runbook may lock for {inv.name} (security.buckets, else s3_buckets: "
                               f"{', '.join(allowed_b) or 'none'}); add it to the inventory first")
        elif name not in req.buckets:
            req.buckets.append(name)
    if disable_users and pool_of(inv) == (None, None):
        req.refused += [f"{subject_label(i, u)}: {inv.name}'s inventory names no Cognito user pool (cognito.user_pool_name "
                        "or user_pool_id): no user of it can be disabled" for i, u in enumerate(disable_users)]
    elif disable_users:
        req.users = list(dict.fromkeys(disable_users))
    return req


def last_rotation(records: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for r in records:  # newest first
        if r.get("runbook") == RUNBOOK and r.get("kind") == ROTATE and r.get("resource") == name and r.get("status") in ("applied", "verified"):
            return r
    return None


def _age_s(at: str | None, now: datetime) -> float | None:
    try:
        return (now - datetime.fromisoformat(str(at))).total_seconds()
    except (TypeError, ValueError):
        return None


def decide(inv: System, identity: Identity, req: Requests, secrets: list[SecretState], buckets: list[BucketState],
           users: list[UserState], records: list[dict[str, Any]], rotate_again: bool, run_id: str,
           now: datetime) -> tuple[Plan, dict[str, dict[str, str]]]:
    """(plan, subjects: pseudonym -> pool and username, for the users the plan acts on)."""
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity, cannot=list(req.refused))
    seen: set[str] = set()
    plan_rotations(plan, secrets, records, rotate_again, now, seen)
    plan_locks(plan, inv, identity, buckets, run_id)
    subjects = plan_disables(plan, req, users, seen)
    if any(a.kind == DISABLE for a in plan.actions):
        plan.notes.append("access and ID tokens already issued stay valid until they expire (1 h by default) at APIs that check "
                          "JWTs themselves: put them on the application's token blacklist (002 JWT 토큰 검증)")
    if any(a.kind == ROTATE for a in plan.actions):
        plan.notes.append("001's session invalidation (`curl .../admin/invalidate-sessions`) is the application's own endpoint: "
                          "this runbook does not call it")
    return plan, subjects


def _cannot_rotate(s: SecretState) -> str | None:
    """Why this secret is not rotated (None: it may be)."""
    if s.entry and s.entry not in (s.name, s.arn):
        return f"{s.requested}: resolves to {s.name} ({s.arn}), not the inventory's {s.entry}; not rotated"
    if s.deleted:
        return f"{s.name}: is scheduled for deletion; restore it first (RestoreSecret) if it must be rotated"
    if s.current_version is None:
        return f"{s.name}: has no AWSCURRENT version (no value stored yet): nothing to rotate"
    if s.rotates and s.pending_version:
        return (f"{s.name}: a rotation is already in progress (AWSPENDING on {s.pending_version}, AWSCURRENT on "
                f"{s.current_version}); read the rotation function's log, then finish or cancel it (CancelRotateSecret)")
    return None


def plan_rotations(plan: Plan, secrets: list[SecretState], records: list[dict[str, Any]], rotate_again: bool, now: datetime,
                   seen: set[str]) -> None:
    """A rotation per readable secret, unless this runbook rotated it less than an hour ago (and rotate_again is off)."""
    for s in secrets:
        if s.error:
            plan.cannot.append(f"{s.requested}: could not read it ({s.error}); not rotated")
            continue
        if s.name in seen:
            continue
        seen.add(s.name)
        why_not = _cannot_rotate(s)
        if why_not:
            plan.cannot.append(why_not)
            continue
        last = last_rotation(records, s.name)
        age = _age_s(last.get("at"), now) if last else None
        if last and last.get("after") == s.value and age is not None and age < ROTATED_RECENTLY_S and not rotate_again:
            plan.unchanged.append(f"{s.name}: rotated by this runbook {age / 60:.0f} min ago (run {last.get('flow_run_id')}, now "
                                  f"{s.value}); pass rotate_again=true to rotate once more")
            continue
        if s.rotates:
            via = VIA_ROTATE
            how = (f"rotation is configured ({s.rotation_lambda or 'managed rotation'}"
                   f"{'' if s.rotation_enabled else ', automatic rotation off'}): RotateSecret runs it now")
        else:
            via = VIA_PUT
            how = ("no rotation configured: a new random value of the same shape (JSON keys kept, credential strings replaced) "
                   "is put as AWSCURRENT; the credential at its issuer does NOT change by this: revoke the old key there and "
                   "register the new value, or clients of the secret fail to authenticate")
        plan.actions.append(Action(kind=ROTATE, resource=s.name, current=s.value, target=f"new AWSCURRENT version via {via}",
                                   iam_action=f"secretsmanager:{via}", reversible=False,
                                   evidence=f"{how}; then AWSPREVIOUS is taken off the old version; NOT reversible: the old "
                                            "credential never comes back; no value is shown or logged, only version ids"))


def plan_locks(plan: Plan, inv: System, identity: Identity, buckets: list[BucketState], run_id: str) -> None:
    """A deny-all lock per bucket whose policy was read, when the inventory names a break-glass role."""
    partition = partition_of(identity.arn)
    exempt = [role_arn(r, identity.account, partition) for r in inv.security.break_glass_roles]
    exempt_caller = caller_exempt(identity.arn, exempt)
    locking = False
    for b in buckets:
        if b.error or b.policy is None:
            plan.cannot.append(f"{b.bucket}: could not read its bucket policy ({b.error}); without it the lock could not be "
                               "undone exactly: not locked")
            continue
        if not exempt:
            plan.cannot.append(f"{b.bucket}: the inventory names no break-glass role (security.break_glass_roles): a deny-all "
                               "policy would lock the team out (only the account's root user could remove it); add one and run again")
            continue
        target = deny_policy(b.bucket, exempt, partition)
        if same_policy(b.policy, target):
            plan.unchanged.append(f"{b.bucket}: already locked (deny-all except {', '.join(exempt)})")
            continue
        locking = True
        evidence = (f"deny s3:* on the bucket and its objects to every principal except {', '.join(exempt)} (ArnNotLike "
                    f"aws:PrincipalArn); previous policy: {'none' if b.policy == NO_POLICY else f'{len(b.policy)} bytes'}, kept "
                    "exactly in the record for the undo; Block Public Access is not touched")
        if is_our_lock(b.policy):
            evidence += ("; the bucket already carries an opsbook emergency deny with other exemptions: the pre-incident policy "
                         "is in the record of the run that put it (undo that run to restore it)")
        if not exempt_caller:
            evidence += "; the caller is NOT exempt: undo as a break-glass role"
        plan.actions.append(Action(kind=LOCK, resource=b.bucket, current=b.policy, target=target, iam_action="s3:PutBucketPolicy",
                                   evidence=evidence))
    if locking:
        plan.notes.append("a locked bucket denies every principal but the break-glass roles, the application, replication and "
                          "CloudFront included: whatever uses it stops until the undo")
        if not exempt_caller:
            plan.notes.append(f"the caller {identity.arn} is not exempt from the deny: once locked it cannot read or change the "
                              f"bucket; the undo (undo_run={run_id}) must be run as a break-glass role ({', '.join(exempt)}); the "
                              "account's root user can always delete a bucket policy as a last resort")


def plan_disables(plan: Plan, req: Requests, users: list[UserState], seen: set[str]) -> dict[str, dict[str, str]]:
    """A disable per enabled user found; returns pseudonym -> pool and username for them (personal data: never shown)."""
    subjects: dict[str, dict[str, str]] = {}
    for u in users:
        label = subject_label(u.index, req.users[u.index]) if u.index < len(req.users) else f"disable_users[{u.index}]"
        if u.error:
            plan.cannot.append(f"{label}: {u.error}; not disabled")
            continue
        if u.subject in seen:
            continue
        seen.add(u.subject)
        if not u.enabled:
            plan.unchanged.append(f"{u.subject}: already disabled")
            continue
        subjects[u.subject] = {"pool_id": u.pool_id, "pool_name": u.pool_name, "username": u.username}
        plan.actions.append(Action(kind=DISABLE, resource=u.subject, current="enabled", target="disabled",
                                   iam_action="cognito-idp:AdminDisableUser",
                                   evidence=f"{label}: AdminDisableUser, then AdminUserGlobalSignOut (every refresh token revoked: "
                                            "not reversible); the undo re-enables the user, who signs in again"))
    return subjects


def undo_fixups(plan: Plan) -> Plan:
    """undo_plan's plan, made precise: the IAM action and evidence per target, a sign-out as a note (not a refusal)."""
    for a in plan.actions:
        if a.kind == LOCK:
            a.iam_action = "s3:DeleteBucketPolicy" if a.target == NO_POLICY else "s3:PutBucketPolicy"
            a.evidence += ("; the bucket had no policy before: delete it" if a.target == NO_POLICY else
                           f"; put back the previous policy exactly ({len(a.target)} bytes)")
        elif a.kind == DISABLE:
            a.iam_action = "cognito-idp:AdminEnableUser" if a.target == "enabled" else "cognito-idp:AdminDisableUser"
    keep = []
    for c in plan.cannot:
        (plan.notes if f": {SIGN_OUT} has no undo" in c else keep).append(c)
    plan.cannot = keep
    return plan


def exempt_in(policy: str) -> list[str]:
    try:
        stmt = json.loads(policy)["Statement"][0]
        arns = stmt["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    except (ValueError, KeyError, IndexError, TypeError):
        return []
    return [arns] if isinstance(arns, str) else list(arns)


def describe(r: Record) -> str:
    """One line per record for messages: no policy bodies, no values, pseudonyms only."""
    if r.kind == LOCK:
        what = ("locked (deny-all)" if is_our_lock(r.after or "") else
                "policy deleted (there was none before)" if r.after == NO_POLICY else f"previous policy put back ({len(r.after or '')} bytes)")
        return f"{r.kind} of {r.resource} {r.status}: {what}; {r.detail}".rstrip("; ")
    return f"{r.kind} of {r.resource} {r.status}: {r.before} -> {r.after}; {r.detail}".rstrip("; ")


def result_findings(records: list[Record], caller: Identity) -> list[Finding]:
    out = []
    for r in records:
        if r.kind == SIGN_OUT:
            status = Status.OK if r.status in ("applied", "verified") else Status.CRIT
        elif r.status == "verified":
            status = Status.OK
        elif r.status == "applied":
            status = Status.CRIT if r.kind == ROTATE else Status.WARN  # a rotation that did not finish leaves the old credential current
        else:
            status = Status.CRIT
        out.append(Finding(check=r.kind, resource=r.resource, status=status, summary=mask(describe(r))))
        if r.kind == LOCK and r.status in ("applied", "verified") and is_our_lock(r.after or "") \
                and not caller_exempt(caller.arn, exempt_in(r.after or "")):
            out.append(Finding(check="break-glass", resource=r.resource, status=Status.WARN,
                               summary=f"the caller {caller.arn} is not exempt from the lock: run the undo as a break-glass role "
                                       f"({', '.join(exempt_in(r.after or ''))})"))
    return out


def read_findings(secrets: list[SecretState], buckets: list[BucketState], users: list[UserState]) -> list[Finding]:
    """A read that failed (not a resource that does not exist) is UNKNOWN with its reason."""
    out = [unknown("secret-read", s.requested, s.error) for s in secrets if s.error and "ResourceNotFound" not in s.error]
    out += [unknown("bucket-policy-read", b.bucket, b.error) for b in buckets if b.error and "NoSuchBucket" not in b.error]
    out += [unknown("cognito-user-read", f"disable_users[{u.index}]", mask(u.error)) for u in users
            if u.error and not u.error.startswith(("no such user", "Cognito user pool")) and "names no Cognito" not in u.error]
    return out


def nothing_requested(inv: System) -> Finding:
    return Finding(check="security-request", resource=inv.name, status=Status.OK,
                   summary=f"nothing requested: give rotate_secrets (allowed: {', '.join(allowed_secrets(inv)) or 'none'}), "
                           f"lock_buckets (allowed: {', '.join(allowed_buckets(inv)) or 'none'}), disable_users (Cognito pool: "
                           f"{next((p for p in pool_of(inv) if p), 'none')}) or undo_run")


def lock_read_back(r: Record, now: str) -> Record:
    """An applied lock (or its undo) against the policy read back: ``verified`` when it is the one put."""
    want = r.after or ""
    if now == want:
        return r.model_copy(update={"status": "verified", "detail": f"{r.detail}; read back: exactly the policy put"
                                    if want != NO_POLICY else f"{r.detail}; read back: no bucket policy"})
    if is_our_lock(want) and same_policy(now, want):  # S3 re-formatted it: the record keeps S3's text for the undo
        return r.model_copy(update={"status": "verified", "after": now, "detail": f"{r.detail}; read back: the same policy, as S3 formats it"})
    if same_policy(now, want):
        return r.model_copy(update={"detail": f"{r.detail}; read back: the same policy document but not the same bytes"})
    return r.model_copy(update={"detail": f"{r.detail}; read back: a different policy ({len(now)} bytes) than the one put"})
