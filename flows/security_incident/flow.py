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

import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from flows.security_incident.judge import (
    DISABLE,
    IRREVERSIBLE,
    LOCK,
    ROTATE,
    RUNBOOK,
    SIGN_OUT,
    SUBJECTS,
    Requests,
    caller_exempt,
    decide,
    describe,
    exempt_in,
    is_our_lock,
    lock_read_back,
    nothing_requested,
    read_findings,
    resolve_requests,
    result_findings,
    same_policy,
    security_escalation,
    undo_fixups,
)
from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import unknown
from opsbook.iam import aws_task
from opsbook.inventory import System, load_system
from opsbook.masking import mask
from opsbook.mutation import statestore, steps
from opsbook.mutation.core import Applier, Approval, Identity, Plan, Record, Refused, drift, undo_plan
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records
from opsbook.params import ApprovalTimeout, Approver, DryRun, Names, Param, RunId, SettleTimeout, SystemName
from tasks.cognito import UserState, read_user, read_users, set_user, sign_out_everywhere
from tasks.s3 import NO_POLICY, BucketState, read_bucket_policies, read_policy, set_policy
from tasks.secretsmanager import VIA_PUT, VIA_ROTATE, SecretState, SecurityError, complete_rotation, read_secret_version, read_secrets, rotate

READ_DEADLINE_S = 60.0
UndoLocks = RunId("The flow run id of an earlier run: put back its bucket locks and disabled users (never its rotations); "
                  "empty: a normal run")


def appliers(subjects: dict[str, dict[str, str]], lenient: bool = False) -> dict[str, Applier]:
    """How each kind is read and set. ``subjects``: pseudonym -> {pool_id, username}.

    ``lenient`` (the undo's plan): a read that fails gives ``unreadable (why)``,
    which undo_plan then reports as a resource it cannot put back."""

    def guard(read: Callable[[System, str], str], kind: str) -> Callable[[System, str], str]:
        def wrapped(system: System, resource: str) -> str:
            try:
                return read(system, resource)
            except Exception as exc:
                if not lenient:
                    raise
                why = aws.describe_error(exc) if not isinstance(exc, KeyError) else f"no username recorded for {resource}"
                if kind == LOCK and aws.error_code(exc) in ("AccessDenied", "AccessDeniedException"):
                    why += "; the bucket is locked against this caller: run the undo as a break-glass role"
                return f"unreadable ({why})"
        return wrapped

    def user_read(system: System, resource: str) -> str:
        s = subjects[resource]
        return "enabled" if read_user(system, s["pool_id"], s["username"])[1] else "disabled"

    def user_apply(system: System, resource: str, value: str) -> None:
        s = subjects[resource]
        set_user(system, s["pool_id"], s["username"], value == "enabled")

    def no_apply(system: System, resource: str, value: str) -> None:
        raise SecurityError("a secret rotation is never undone: the old credential must not come back")

    def rotated(system: System, resource: str, before: str, target: str) -> bool:
        """A rotation's step was taken: AWSCURRENT is readable and no longer the version before (a value that could not be
        read proves nothing)."""
        now = guard(read_secret_version, ROTATE)(system, resource)
        return not now.startswith("unreadable") and now != before

    def locked(system: System, resource: str, before: str, target: str) -> bool:
        """The policy is the target, as S3 gives it back (reformatted): compared as JSON."""
        now = guard(read_policy, LOCK)(system, resource)
        return not now.startswith("unreadable") and same_policy(now, target)

    return {ROTATE: Applier(read=guard(read_secret_version, ROTATE), apply=no_apply, reached=rotated),
            LOCK: Applier(read=guard(read_policy, LOCK), apply=set_policy, reached=locked),
            DISABLE: Applier(read=guard(user_read, DISABLE), apply=user_apply)}


# --- tasks ----------------------------------------------------------------------------------------


@task(name="plan-containment", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, req: Requests, secrets: list[SecretState], buckets: list[BucketState],
              users: list[UserState], records: list[dict[str, Any]], rotate_again: bool, run_id: str) -> tuple[Plan, dict]:
    return decide(inv, identity, req, secrets, buckets, users, records, rotate_again, run_id, datetime.now(timezone.utc))


@aws_task(iam=["s3:GetBucketPolicy", "cognito-idp:AdminGetUser"], name="plan-undo", cache_policy=NO_CACHE)
def plan_undo(inv: System, identity: Identity, records: list[dict[str, Any]], run_id: str) -> tuple[Plan, dict]:
    """The inverse of run ``run_id`` from its durable records, read against the state now."""
    subjects = recorded_subjects(records, run_id)
    plan = undo_plan(inv, RUNBOOK, identity, records, run_id, appliers(subjects, lenient=True),
                     {LOCK: "s3:PutBucketPolicy", DISABLE: "cognito-idp:AdminEnableUser"}, irreversible=IRREVERSIBLE)
    return undo_fixups(plan), subjects


def recorded_subjects(records: list[dict[str, Any]], run_id: str | None = None) -> dict[str, dict[str, str]]:
    """pseudonym -> who is behind it, as run ``run_id`` (any run: the newest) recorded before it acted."""
    out: dict[str, dict[str, str]] = {}
    for r in records:  # newest first: the first word on a pseudonym wins
        if r.get("runbook") == SUBJECTS and (run_id is None or r.get("flow_run_id") == run_id):
            out.setdefault(r["resource"], {"pool_id": r["pool_id"], "pool_name": r.get("pool_name", ""), "username": r["username"]})
    return out


@aws_task(iam=["secretsmanager:DescribeSecret", "s3:GetBucketPolicy", "cognito-idp:AdminGetUser"], name="check-drift", cache_policy=NO_CACHE)
def check_drift(inv: System, plan: Plan, subjects: dict) -> None:
    drifted = drift(inv, plan, appliers(subjects))
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


def _rotate(inv: System, a: Any, base: dict[str, Any]) -> list[Record]:
    via = VIA_ROTATE if VIA_ROTATE in a.target else VIA_PUT
    new, detail = rotate(inv, a.resource, via, a.current.removeprefix("AWSCURRENT "))
    after = f"{'AWSPENDING' if via == VIA_ROTATE else 'AWSCURRENT'} {new}"
    return [Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=after, status="applied", detail=detail)]


def _lock(inv: System, a: Any, base: dict[str, Any], identity: Identity, run_id: str) -> list[Record]:
    set_policy(inv, a.resource, a.target)
    detail = "deny-all policy put" if is_our_lock(a.target) else (
        "bucket policy deleted" if a.target == NO_POLICY else "previous policy put back")
    exempt = exempt_in(a.target)
    if is_our_lock(a.target) and not caller_exempt(identity.arn, exempt):
        detail += (f"; the caller {identity.arn} is not exempt: the undo (undo_run={run_id}) must be run as a "
                   f"break-glass role ({', '.join(exempt)})")
    return [Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=a.target, status="applied", detail=detail)]


def _disable(inv: System, a: Any, base: dict[str, Any], s: dict[str, str]) -> list[Record]:
    """Disable (or, for the undo, enable) the user; a disable is followed by a global sign-out."""
    enable = a.target == "enabled"
    set_user(inv, s["pool_id"], s["username"], enable)
    out = [Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=a.target, status="applied",
                  detail="AdminEnableUser" if enable else "AdminDisableUser")]
    if enable:
        return out
    try:
        sign_out_everywhere(inv, s["pool_id"], s["username"])
        out.append(Record(**base, resource=a.resource, kind=SIGN_OUT, before="sessions as issued", after="signed out everywhere",
                          status="applied", detail="AdminUserGlobalSignOut: refresh tokens revoked (Cognito shows no sessions "
                                                   "to read back); not reversible"))
    except Exception as exc:
        out.append(Record(**base, resource=a.resource, kind=SIGN_OUT, before="sessions as issued", after=None, status="failed",
                          detail=f"{aws.describe_error(exc)}; the user is disabled but may keep refresh tokens: run again or "
                                 "sign them out by hand"))
    return out


@aws_task(iam=["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue",
               "secretsmanager:RotateSecret", "kms:Decrypt", "kms:GenerateDataKey", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy",
               "cognito-idp:AdminDisableUser", "cognito-idp:AdminEnableUser", "cognito-idp:AdminUserGlobalSignOut"],
          name="apply-containment", cache_policy=NO_CACHE, read_only=False)
def apply_actions(inv: System, plan: Plan, subjects: dict, approval: Approval, identity: Identity, run_id: str) -> list[Record]:
    """Each action in order; each is independent: a failure is recorded and the rest still run (nothing is reopened)."""
    base = dict(runbook=RUNBOOK, system=inv.name, flow_run_id=run_id, approver=approval.approver, approved_via=approval.via,
                caller_arn=identity.arn, plan_fingerprint=plan.fingerprint)
    journal = steps.active(run_id)
    records: list[Record] = []
    for a in plan.actions:
        # each action a step of the mechanism: its intent durably before the call, its outcome after (a killed run's
        # open step is closed by the next run from the live state: a rotation is never taken twice for want of a record)
        intent = steps.intend(journal, Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=a.target,
                                              status="applied"), "applied")
        try:
            if a.kind == ROTATE:
                taken = _rotate(inv, a, base)
            elif a.kind == LOCK:
                taken = _lock(inv, a, base, identity, run_id)
            elif a.kind == DISABLE:
                taken = _disable(inv, a, base, subjects[a.resource])
            else:
                raise ValueError(f"unknown action kind {a.kind}")
        except Exception as exc:  # recorded (the run ends failed); the other actions are independent
            records.append(steps.failed(journal, intent, exc, mask(aws.describe_error(exc))))
            continue
        first = taken[0].model_copy(update={"step_id": intent.step_id})
        records += [steps.done(journal, first)] + taken[1:]
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
            ok, now, detail = complete_rotation(inv, r.resource, old, new, timeout_s, waiting, poll_s)
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
                out.append(lock_read_back(r, read_policy(inv, r.resource)))
            else:
                s = subjects[r.resource]
                enabled = read_user(inv, s["pool_id"], s["username"])[1]
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
    undo_run: UndoLocks = "",
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
        # a killed run's open step, read with the subjects it recorded; the records then say how it ended
        if not isinstance(records, BaseException) and session.recover(appliers(recorded_subjects(records), lenient=True)):
            records = future_value(read_records.submit(inv))
        _, escalation = security_escalation(inv)
        if undo_run:
            if rotate_secrets or lock_buckets or disable_users:
                raise Refused("undo_run cannot be combined with rotate_secrets, lock_buckets or disable_users: run them separately")
            if isinstance(records, BaseException):
                raise Refused(f"cannot read the records of run {undo_run} in {inv.mutations.state_table} "
                              f"({aws.describe_error(records)}); nothing was changed")
            plan, subjects = plan_undo.submit(inv, identity, records, undo_run).result()
        else:
            plan, subjects = plan_containment(session, inv, identity, records, rotate_secrets, lock_buckets, disable_users,
                                              rotate_again)
        plan.notes.append(escalation)
        if session.gate(plan):
            settle = settle_timeout_s or inv.mutations.settle_timeout_s
            session.lease()
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


def plan_containment(session: MutationSession, inv: System, identity: Identity, records: list[dict[str, Any]] | BaseException,
                     rotate_secrets: list[str], lock_buckets: list[str], disable_users: list[str],
                     rotate_again: bool) -> tuple[Plan, dict]:
    """A normal run up to the plan: what is allowed, read it (never a value), judge, plan."""
    if isinstance(records, BaseException):  # only "rotated a moment ago" depends on them: rotations are planned anyway
        session.report.findings.append(unknown("records", inv.mutations.state_table, f"{aws.describe_error(records)}; "
                                               "a secret this runbook rotated a moment ago would be rotated again"))
        records = []
    req = resolve_requests(inv, rotate_secrets, lock_buckets, disable_users)
    deadline = aws.Deadline(READ_DEADLINE_S)
    futures = {"secrets": read_secrets.submit(inv, req.secrets, deadline),
               "buckets": read_bucket_policies.submit(inv, req.buckets, deadline),
               "users": read_users.submit(inv, req.users, deadline)}
    states = {k: future_value(f) for k, f in futures.items()}
    for k, v in states.items():
        if isinstance(v, BaseException):  # the whole read failed: every request of that kind is UNKNOWN
            session.report.findings.append(unknown(f"read-{k}", inv.name, aws.describe_error(v)))
            states[k] = []
    session.report.findings += read_findings(states["secrets"], states["buckets"], states["users"])
    plan, subjects = make_plan.submit(inv, identity, req, states["secrets"], states["buckets"], states["users"],
                                      records, rotate_again, session.run_id).result()
    if req.empty:
        session.report.findings.append(nothing_requested(inv))
    return plan, subjects


TASKS = [read_secrets, read_bucket_policies, read_users, plan_undo, check_drift, record_subjects, apply_actions,
         finish_rotations, verify_changes] + SESSION_TASKS
