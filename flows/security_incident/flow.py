"""security-incident: contain a suspected breach: rotate secrets, lock buckets, disable users.

Sources: 001 보안 인시던트 대응 (의심스러운 활동: ``aws secretsmanager rotate-secret``;
데이터 유출 의심: ``aws s3api put-bucket-policy --policy file://emergency-deny-policy.json``),
002 Cognito 사용자 관리 (``admin-get-user``, ``admin-disable-user``) and the
escalation entry for security incidents. Only what the inventory allows is
touched (``security.secrets`` else ``audit.secrets``; ``security.buckets`` else
every ``s3_buckets`` entry; the inventory's Cognito pool); anything else is
refused in the plan's ``cannot`` with the reason.

Steps: confirm identity -> read (DescribeSecret, GetBucketPolicy, AdminGetUser;
never a secret's value) -> plan -> (dry run ends here) -> approve -> leases ->
drift check -> record who is disabled (durable, for the undo) -> act ->
finish rotations (bounded wait with progress) and read back -> record ->
notify the system's SNS topic, naming its security escalation entry.

- Rotate a secret: with rotation configured (a rotation Lambda or managed
  rotation) RotateSecret, else a new random value of the same shape
  (PutSecretValue). Done when AWSCURRENT moved to a new version whose value
  differs; then AWSPREVIOUS is taken off the old version so no label fetches
  the old credential. Never undone (``undo_run`` refuses it with the reason).
- Lock a bucket: the policy is read exactly and kept in the action and the
  record; a deny-all policy (every principal but the break-glass roles) is
  put. No break-glass role: not planned. Undo: the previous text exactly, or
  DeleteBucketPolicy where there was none.
- Disable a user: AdminDisableUser, then AdminUserGlobalSignOut (not
  reversible). Undo: AdminEnableUser.

Each change is independent: a failure is recorded and the rest still run;
nothing is undone on a failure, because reopening a bucket since a user could
not be disabled would weaken the containment. Re-running is safe: a locked
bucket, a disabled user and a secret this runbook rotated in the last hour are
"unchanged" (``rotate_again=true`` rotates again).

API calls (sandbox, one of each): STS 1, records 1-2, DescribeSecret 1 a secret,
GetBucketPolicy 1 a bucket, ListUserPools 1 page + AdminGetUser 1 a user; acting
adds per secret 4-6 (+1 a poll), per bucket 2, per user 3, plus leases, records and SNS.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.masking import mask
from opsbook.mutation import statestore
from opsbook.mutation.core import (
    Action,
    Approval,
    Identity,
    Plan,
    Record,
    Refused,
    drift,
    undo_plan,
)
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records
from opsbook.params import (
    ApprovalTimeout,
    Approver,
    DryRun,
    Names,
    Param,
    SettleTimeout,
    SystemName,
)
from tasks import security as sec
from tasks.security import (
    DISABLE,
    LOCK,
    NO_POLICY,
    ROTATE,
    RUNBOOK,
    SIGN_OUT,
    SUBJECTS,
    VIA_PUT,
    VIA_ROTATE,
    BucketState,
    SecretState,
    UserState,
)

READ_DEADLINE_S = 60.0
ROTATED_RECENTLY_S = 3600  # a re-run within this time does not rotate again what this runbook just rotated
IRREVERSIBLE = {
    ROTATE: "a rotated secret is never put back: the old credential is presumed compromised and must not come back "
            "(rotate again for a newer value)",
    SIGN_OUT: "signed-out sessions cannot be restored; after the undo the user signs in again",
}


# --- deciding (pure: unit-tested without AWS) ----------------------------------------------------


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
    allowed_s, allowed_b = sec.allowed_secrets(inv), sec.allowed_buckets(inv)
    for s in rotate_secrets:
        entry = sec.match_secret(s, allowed_s)
        if entry is None:
            req.refused.append(f"{s}: not a secret this runbook may rotate for {inv.name} (security.secrets, else audit.secrets: "
                               f"{', '.join(allowed_s) or 'none'}); add it to the inventory first")
        elif entry not in [e for _, e in req.secrets]:
            req.secrets.append((s, entry))
    for b in lock_buckets:
        name = sec.match_bucket(b, allowed_b)
        if name is None:
            req.refused.append(f"{b}: not a bucket this runbook may lock for {inv.name} (security.buckets, else s3_buckets: "
                               f"{', '.join(allowed_b) or 'none'}); add it to the inventory first")
        elif name not in req.buckets:
            req.buckets.append(name)
    if disable_users and sec.pool_of(inv) == (None, None):
        req.refused += [f"{sec.subject_label(i, u)}: {inv.name}'s inventory names no Cognito user pool (cognito.user_pool_name "
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
    subjects: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    for s in secrets:
        if s.error:
            plan.cannot.append(f"{s.requested}: could not read it ({s.error}); not rotated")
            continue
        if s.name in seen:
            continue
        seen.add(s.name)
        if s.entry and s.entry not in (s.name, s.arn):
            plan.cannot.append(f"{s.requested}: resolves to {s.name} ({s.arn}), not the inventory's {s.entry}; not rotated")
            continue
        if s.deleted:
            plan.cannot.append(f"{s.name}: is scheduled for deletion; restore it first (RestoreSecret) if it must be rotated")
            continue
        if s.current_version is None:
            plan.cannot.append(f"{s.name}: has no AWSCURRENT version (no value stored yet): nothing to rotate")
            continue
        if s.rotates and s.pending_version:
            plan.cannot.append(f"{s.name}: a rotation is already in progress (AWSPENDING on {s.pending_version}, AWSCURRENT on "
                               f"{s.current_version}); read the rotation function's log, then finish or cancel it (CancelRotateSecret)")
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
    partition = sec.partition_of(identity.arn)
    exempt = [sec.role_arn(r, identity.account, partition) for r in inv.security.break_glass_roles]
    exempt_caller = sec.caller_exempt(identity.arn, exempt)
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
        target = sec.deny_policy(b.bucket, exempt, partition)
        if sec.same_policy(b.policy, target):
            plan.unchanged.append(f"{b.bucket}: already locked (deny-all except {', '.join(exempt)})")
            continue
        locking = True
        evidence = (f"deny s3:* on the bucket and its objects to every principal except {', '.join(exempt)} (ArnNotLike "
                    f"aws:PrincipalArn); previous policy: {'none' if b.policy == NO_POLICY else f'{len(b.policy)} bytes'}, kept "
                    "exactly in the record for the undo; Block Public Access is not touched")
        if sec.is_our_lock(b.policy):
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
    for u in users:
        label = sec.subject_label(u.index, req.users[u.index]) if u.index < len(req.users) else f"disable_users[{u.index}]"
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
    if any(a.kind == DISABLE for a in plan.actions):
        plan.notes.append("access and ID tokens already issued stay valid until they expire (1 h by default) at APIs that check "
                          "JWTs themselves: put them on the application's token blacklist (002 JWT 토큰 검증)")
    if any(a.kind == ROTATE for a in plan.actions):
        plan.notes.append("001's session invalidation (`curl .../admin/invalidate-sessions`) is the application's own endpoint: "
                          "this runbook does not call it")
    return plan, subjects


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
        what = ("locked (deny-all)" if sec.is_our_lock(r.after or "") else
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
        if r.kind == LOCK and r.status in ("applied", "verified") and sec.is_our_lock(r.after or "") \
                and not sec.caller_exempt(caller.arn, exempt_in(r.after or "")):
            out.append(Finding(check="break-glass", resource=r.resource, status=Status.WARN,
                               summary=f"the caller {caller.arn} is not exempt from the lock: run the undo as a break-glass role "
                                       f"({', '.join(exempt_in(r.after or ''))})"))
    return out


# --- tasks ----------------------------------------------------------------------------------------


@task(name="plan-containment", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, req: Requests, secrets: list[SecretState], buckets: list[BucketState],
              users: list[UserState], records: list[dict[str, Any]], rotate_again: bool, run_id: str) -> tuple[Plan, dict]:
    return decide(inv, identity, req, secrets, buckets, users, records, rotate_again, run_id, datetime.now(timezone.utc))


@aws_task(iam=["s3:GetBucketPolicy", "cognito-idp:AdminGetUser"], name="plan-undo", cache_policy=NO_CACHE)
def plan_undo(inv: System, identity: Identity, records: list[dict[str, Any]], run_id: str) -> tuple[Plan, dict]:
    """The inverse of run ``run_id`` from its durable records, read against the state now."""
    subjects = {r["resource"]: {"pool_id": r["pool_id"], "pool_name": r.get("pool_name", ""), "username": r["username"]}
                for r in records if r.get("runbook") == SUBJECTS and r.get("flow_run_id") == run_id}
    plan = undo_plan(inv, RUNBOOK, identity, records, run_id, sec.appliers(subjects, lenient=True),
                     {LOCK: "s3:PutBucketPolicy", DISABLE: "cognito-idp:AdminEnableUser"}, irreversible=IRREVERSIBLE)
    return undo_fixups(plan), subjects


@aws_task(iam=["secretsmanager:DescribeSecret", "s3:GetBucketPolicy", "cognito-idp:AdminGetUser"], name="check-drift", cache_policy=NO_CACHE)
def check_drift(inv: System, plan: Plan, subjects: dict) -> None:
    drifted = drift(inv, plan, sec.appliers(subjects))
    if drifted:
        raise Refused("the state changed since the plan was made; nothing was changed (run again to plan afresh): "
                      + mask("; ".join(d[:300] for d in drifted)))


@aws_task(iam=["dynamodb:PutItem", "dynamodb:DescribeTable", "dynamodb:CreateTable"], name="record-subjects", cache_policy=NO_CACHE,
          read_only=False)
def record_subjects(inv: System, plan: Plan, subjects: dict, run_id: str) -> int:
    """Before acting: the durable record of who is behind each pseudonym (the undo needs the username).
    If it cannot be written, nothing is changed: a disabled user could not be re-enabled by the undo."""
    n = 0
    for a in plan.actions:
        if a.kind == DISABLE:
            s = subjects[a.resource]
            statestore.put_record(inv, {"runbook": SUBJECTS, "system": inv.name, "resource": a.resource, "kind": "cognito-subject",
                                        "pool_id": s["pool_id"], "pool_name": s["pool_name"], "username": s["username"],
                                        "flow_run_id": run_id, "at": datetime.now(timezone.utc).isoformat(timespec="microseconds")}, 900 + n)
            n += 1
    return n


@aws_task(iam=["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue",
               "secretsmanager:RotateSecret", "kms:Decrypt", "kms:GenerateDataKey", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy",
               "cognito-idp:AdminDisableUser", "cognito-idp:AdminEnableUser", "cognito-idp:AdminUserGlobalSignOut"],
          name="apply-containment", cache_policy=NO_CACHE, read_only=False)
def apply_actions(inv: System, plan: Plan, subjects: dict, approval: Approval, identity: Identity, run_id: str) -> list[Record]:
    """Each action in order; each is independent: a failure is recorded and the rest still run (nothing is reopened)."""
    base = dict(runbook=RUNBOOK, system=inv.name, flow_run_id=run_id, approver=approval.approver, approved_via=approval.via,
                caller_arn=identity.arn, plan_fingerprint=plan.fingerprint)
    records: list[Record] = []
    for a in plan.actions:
        try:
            if a.kind == ROTATE:
                via = VIA_ROTATE if VIA_ROTATE in a.target else VIA_PUT
                new, detail = sec.rotate(inv, a.resource, via, a.current.removeprefix("AWSCURRENT "))
                after = f"{'AWSPENDING' if via == VIA_ROTATE else 'AWSCURRENT'} {new}"
                records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=after, status="applied", detail=detail))
            elif a.kind == LOCK:
                sec.set_policy(inv, a.resource, a.target)
                detail = "deny-all policy put" if sec.is_our_lock(a.target) else (
                    "bucket policy deleted" if a.target == NO_POLICY else "previous policy put back")
                exempt = exempt_in(a.target)
                if sec.is_our_lock(a.target) and not sec.caller_exempt(identity.arn, exempt):
                    detail += (f"; the caller {identity.arn} is not exempt: the undo (undo_run={run_id}) must be run as a "
                               f"break-glass role ({', '.join(exempt)})")
                records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=a.target, status="applied", detail=detail))
            elif a.kind == DISABLE:
                s = subjects[a.resource]
                enable = a.target == "enabled"
                sec.set_user(inv, s["pool_id"], s["username"], enable)
                records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=a.target, status="applied",
                                      detail="AdminEnableUser" if enable else "AdminDisableUser"))
                if not enable:
                    try:
                        sec.sign_out_everywhere(inv, s["pool_id"], s["username"])
                        records.append(Record(**base, resource=a.resource, kind=SIGN_OUT, before="sessions as issued",
                                              after="signed out everywhere", status="applied",
                                              detail="AdminUserGlobalSignOut: refresh tokens revoked (Cognito shows no sessions "
                                                     "to read back); not reversible"))
                    except Exception as exc:
                        records.append(Record(**base, resource=a.resource, kind=SIGN_OUT, before="sessions as issued", after=None,
                                              status="failed", detail=f"{aws.describe_error(exc)}; the user is disabled but may keep "
                                              "refresh tokens: run again or sign them out by hand"))
            else:
                raise ValueError(f"unknown action kind {a.kind}")
        except Exception as exc:  # recorded (the run ends failed); the other actions are independent
            records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=None, status="failed",
                                  detail=mask(aws.describe_error(exc))))
    return records


@aws_task(iam=["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:UpdateSecretVersionStage", "kms:Decrypt"],
          name="finish-rotations", cache_policy=NO_CACHE, read_only=False)
def finish_rotations(inv: System, records: list[Record], timeout_s: float, poll_s: float = 1.0) -> list[Record]:
    """Wait (bounded, with progress) until each rotated secret's AWSCURRENT moved and its value changed; take AWSPREVIOUS
    off the old version. A rotation that does not finish stays ``applied`` with the reason."""
    todo = [i for i, r in enumerate(records) if r.kind == ROTATE and r.status == "applied"]
    if not todo:
        return records
    out = list(records)
    progress = create_progress_artifact(progress=0.0, description=f"{RUNBOOK}: finishing {len(todo)} secret rotation(s)")
    for n, i in enumerate(todo):
        r = records[i]
        old, new = (r.before or "").split(" ", 1)[-1], (r.after or "").split(" ", 1)[-1]

        def waiting(waited: float, why: str, n: int = n, name: str = r.resource) -> None:
            update_progress_artifact(progress, progress=100.0 * (n + min(1.0, waited / max(timeout_s, 1))) / len(todo))
            print(f"opsbook: {RUNBOOK}: {n}/{len(todo)} rotations finished; {name}: {why} ({waited:.0f}/{timeout_s:g} s)", file=sys.stderr)

        try:
            ok, now, detail = sec.complete_rotation(inv, r.resource, old, new, timeout_s, waiting, poll_s)
            out[i] = r.model_copy(update={"status": "verified" if ok else "applied", "after": now if ok else r.after,
                                          "detail": f"{r.detail}; {detail}"})
        except Exception as exc:
            out[i] = r.model_copy(update={"detail": f"{r.detail}; could not finish or read back the rotation: {aws.describe_error(exc)}"})
        update_progress_artifact(progress, progress=100.0 * (n + 1) / len(todo))
    return out


@aws_task(iam=["s3:GetBucketPolicy", "cognito-idp:AdminGetUser"], name="verify-containment", cache_policy=NO_CACHE)
def verify_changes(inv: System, records: list[Record], subjects: dict) -> list[Record]:
    """Read every applied lock and user change back: ``verified`` when AWS shows the target."""
    out = []
    for r in records:
        if r.status != "applied" or r.kind not in (LOCK, DISABLE):
            out.append(r)
            continue
        try:
            if r.kind == LOCK:
                now = sec.read_policy(inv, r.resource)
                want = r.after or ""
                if now == want:
                    out.append(r.model_copy(update={"status": "verified", "detail": f"{r.detail}; read back: exactly the policy put"
                                                    if want != NO_POLICY else f"{r.detail}; read back: no bucket policy"}))
                elif sec.is_our_lock(want) and sec.same_policy(now, want):  # S3 re-formatted it: the record keeps S3's text for the undo
                    out.append(r.model_copy(update={"status": "verified", "after": now,
                                                    "detail": f"{r.detail}; read back: the same policy, as S3 formats it"}))
                elif sec.same_policy(now, want):
                    out.append(r.model_copy(update={"detail": f"{r.detail}; read back: the same policy document but not the same bytes"}))
                else:
                    out.append(r.model_copy(update={"detail": f"{r.detail}; read back: a different policy ({len(now)} bytes) than the one put"}))
            else:
                s = subjects[r.resource]
                enabled = sec.read_user(inv, s["pool_id"], s["username"])[1]
                ok = enabled == (r.after == "enabled")
                out.append(r.model_copy(update={"status": "verified" if ok else "applied",
                                                "detail": f"{r.detail}; read back: {'enabled' if enabled else 'disabled'}"}))
        except Exception as exc:
            why = aws.describe_error(exc)
            if r.kind == LOCK and aws.error_code(exc) in ("AccessDenied", "AccessDeniedException"):
                why += " (expected when the lock applies to this caller: read it back as a break-glass role)"
            out.append(r.model_copy(update={"detail": f"{r.detail}; not read back: {why}"}))
    return out


# --- the runbook ------------------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def security_incident(
    system: SystemName,
    rotate_secrets: Annotated[Names, Param("Secrets Manager secrets to rotate now (names the inventory allows)")] = [],  # noqa: B006
    lock_buckets: Annotated[Names, Param("S3 buckets to lock: deny all access but the break-glass roles (buckets the inventory "
                                         "allows)")] = [],  # noqa: B006 (validated into a new list)
    disable_users: Annotated[Names, Param("Cognito users (usernames or e-mail addresses) of the system's user pool to disable")] = [],  # noqa: B006
    undo_run: Annotated[str, Param("The flow run id of an earlier run: put back its bucket locks and disabled users (never its "
                                   "rotations); empty: a normal run")] = "",
    rotate_again: Annotated[bool, Param("Rotate a secret even when this runbook rotated it moments ago")] = False,
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    settle_timeout_s: SettleTimeout = 0,
) -> Any:
    """Contain a security incident: rotate secrets, lock buckets (deny-all but break-glass), disable Cognito users.

    Only what the inventory allows; the rest is refused in the plan with the
    reason. dry_run (default) ends after the plan. Otherwise the run asks for
    approval (a form on the paused run in the UI; the shell's prompt or --yes), acts, reads back,
    records and notifies the system's topic with its security escalation entry.
    ``undo_run=<flow run id>`` plans the inverse of that run instead: locks and
    disables are put back; rotations never are (the old credential stays dead).
    """
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
    with session:
        identity = session.identity()
        records = future_value(read_records.submit(inv))
        _, escalation = sec.security_escalation(inv)
        if undo_run:
            if rotate_secrets or lock_buckets or disable_users:
                raise Refused("undo_run cannot be combined with rotate_secrets, lock_buckets or disable_users: run them separately")
            if isinstance(records, BaseException):
                raise Refused(f"cannot read the records of run {undo_run} in {inv.mutations.state_table} "
                              f"({aws.describe_error(records)}); nothing was changed")
            plan, subjects = plan_undo.submit(inv, identity, records, undo_run).result()
        else:
            if isinstance(records, BaseException):  # only "rotated a moment ago" depends on them: rotations are planned anyway
                session.report.findings.append(unknown("records", inv.mutations.state_table, f"{aws.describe_error(records)}; "
                                                       "a secret this runbook rotated a moment ago would be rotated again"))
                records = []
            req = resolve_requests(inv, rotate_secrets, lock_buckets, disable_users)
            deadline = aws.Deadline(READ_DEADLINE_S)
            futures = {"secrets": sec.read_secrets.submit(inv, req.secrets, deadline),
                       "buckets": sec.read_bucket_policies.submit(inv, req.buckets, deadline),
                       "users": sec.read_users.submit(inv, req.users, deadline)}
            states = {k: future_value(f) for k, f in futures.items()}
            for k, v in states.items():
                if isinstance(v, BaseException):  # the whole read failed: every request of that kind is UNKNOWN
                    session.report.findings.append(unknown(f"read-{k}", inv.name, aws.describe_error(v)))
                    states[k] = []
            session.report.findings += read_findings(states["secrets"], states["buckets"], states["users"])
            plan, subjects = make_plan.submit(inv, identity, req, states["secrets"], states["buckets"], states["users"],
                                              records, rotate_again, session.run_id).result()
            if req.empty:
                session.report.findings.append(Finding(
                    check="security-request", resource=inv.name, status=Status.OK,
                    summary=f"nothing requested: give rotate_secrets (allowed: {', '.join(sec.allowed_secrets(inv)) or 'none'}), "
                            f"lock_buckets (allowed: {', '.join(sec.allowed_buckets(inv)) or 'none'}), disable_users (Cognito pool: "
                            f"{next((p for p in sec.pool_of(inv) if p), 'none')}) or undo_run"))
        plan.notes.append(escalation)
        if session.gate(plan):
            settle = settle_timeout_s or inv.mutations.settle_timeout_s
            session.lease(inv.mutations.lease_ttl_s + settle)
            check_drift.submit(inv, plan, subjects).result()
            record_subjects.submit(inv, plan, subjects, session.run_id).result()
            done = apply_actions.submit(inv, plan, subjects, session.approval, identity, session.run_id).result()
            done = finish_rotations.submit(inv, done, settle).result()
            done = verify_changes.submit(inv, done, subjects).result()
            session.record(done)
            session.report.findings += result_findings(done, identity)
            session.done(all(r.status != "failed" for r in done))
            session.notify(session.report.outcome, [escalation] + [describe(r) for r in done])
    return session.finish()


def read_findings(secrets: list[SecretState], buckets: list[BucketState], users: list[UserState]) -> list[Finding]:
    """A read that failed (not a resource that does not exist) is UNKNOWN with its reason."""
    out = [unknown("secret-read", s.requested, s.error) for s in secrets if s.error and "ResourceNotFound" not in s.error]
    out += [unknown("bucket-policy-read", b.bucket, b.error) for b in buckets if b.error and "NoSuchBucket" not in b.error]
    out += [unknown("cognito-user-read", f"disable_users[{u.index}]", mask(u.error)) for u in users
            if u.error and not u.error.startswith(("no such user", "Cognito user pool")) and "names no Cognito" not in u.error]
    return out


TASKS = [sec.read_secrets, sec.read_bucket_policies, sec.read_users, plan_undo, check_drift, record_subjects, apply_actions,
         finish_rotations, verify_changes] + SESSION_TASKS
