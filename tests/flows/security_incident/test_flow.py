"""security-incident against the sandbox: each containment planned, dry-run, applied, verified and undone;
requests outside the inventory refused; no break-glass role, no lock; re-runs change nothing; secret values
and usernames never shown."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import boto3
import pytest

from flows.security_incident import flow as si
from flows.security_incident import judge as sec
from flows.security_incident.flow import security_incident
from opsbook import aws
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.mutation import statestore
from opsbook.mutation.core import Action, Identity, Plan, Refused, ShellApproval, shell_approval
from opsbook.report import RunReport
from sandbox import security as ssec
from tasks.cognito import read_users
from tasks.s3 import NO_POLICY, read_bucket_policies
from tests.helpers import inbox

pytestmark = pytest.mark.usefixtures("prefect_harness")

TD, TODO, HR, LEH = "t-developer", "todo-app", "hr-resource-optimization", "leh"
TD_SECRET, TD_BUCKET = "t-developer/production/api-keys", "t-developer-projects-production"
TD_GLASS = "arn:aws:iam::123456789012:role/t-developer-break-glass"
ME = Identity(account="123456789012", arn="arn:aws:sts::123456789012:user/moto", region="us-east-1")


def run(system: str, approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = security_incident(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def kinds(report: RunReport) -> list[tuple[str, str]]:
    return [(a["kind"], a["resource"]) for a in report.plan["actions"]]


def statuses(report: RunReport) -> list[tuple[str, str, str]]:
    return [(r["kind"], r["resource"], r["status"]) for r in report.records]


def not_ok(report: RunReport) -> list[tuple[str, str, str]]:
    return sorted((f.check, f.resource, f.status.value) for f in report.findings if f.status is not Status.OK)


def artifacts_text(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert arts, "the run published no artifacts"
    return "\n".join(json.dumps(a.data) if not isinstance(a.data, str) else a.data for a in arts) + \
        "\n".join(a.description or "" for a in arts)


def assert_covered(report: RunReport, *must: str) -> None:
    policy = set(policy_for(si.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert set(must) <= used <= policy, (set(must) - used, used - policy)
    assert report.undeclared_iam_actions == []


# --- t-developer: rotate without a rotation Lambda, lock a bucket with a policy -----------------------


def test_dry_run_then_rotate_and_lock_applied_verified_rerun_safe_and_the_undo_restores_only_the_lock(seeded, sandbox):
    td = seeded(TD)
    made = ssec.incident(sandbox, td)
    # the dry run plans what the inventory allows, refuses the rest and changes nothing
    before_stages = ssec.stages(sandbox, td, TD_SECRET)
    report = run(TD, rotate_secrets=[TD_SECRET, "prod/other"], lock_buckets=[TD_BUCKET, "other-bucket"], disable_users=["x@example.com"])
    assert report.outcome == "planned" and report.dry_run and report.records == []
    assert kinds(report) == [(sec.ROTATE, TD_SECRET), (sec.LOCK, TD_BUCKET)]
    rot, lock = report.plan["actions"]
    assert rot["current"] == f"AWSCURRENT {made['secrets'][0]['version']}" and rot["target"] == "new AWSCURRENT version via PutSecretValue"
    assert rot["reversible"] is False and "the credential at its issuer does NOT change" in rot["evidence"]
    assert lock["current"] == made["policies"][TD_BUCKET]  # the exact previous text
    assert lock["target"] == sec.deny_policy(TD_BUCKET, [TD_GLASS]) and lock["iam_action"] == "s3:PutBucketPolicy"
    assert "caller is NOT exempt" in lock["evidence"]
    cannot = report.plan["cannot"]
    assert [c.split(":")[0] for c in cannot] == ["prod/other", "other-bucket", "disable_users[0] (x***)"]
    assert any("must be run as a break-glass role (arn:aws:iam::123456789012:role/t-developer-break-glass)" in n for n in report.plan["notes"])
    assert any(n.startswith("escalate to security: 보안 담당자 + 경영진") for n in report.plan["notes"])
    assert report.status is Status.WARN and not_ok(report) == [("security-incident-plan", c.split(": ")[0], "WARN") for c in sorted(cannot)]
    assert ssec.stages(sandbox, td, TD_SECRET) == before_stages and ssec.read_bucket_policy(sandbox, td, TD_BUCKET) == made["policies"][TD_BUCKET]

    # executed
    old_version = made["secrets"][0]["version"]
    old_value = ssec.secret_value(sandbox, td, TD_SECRET)
    previous = made["policies"][TD_BUCKET]
    messages = inbox(sandbox, td.region, ":t-developer-alerts-production")
    s3 = boto3.client("s3", region_name=td.region, endpoint_url=sandbox.endpoint)
    s3.put_object(Bucket=TD_BUCKET, Key="projects/p1.json", Body=b"{}")

    done = run(TD, rotate_secrets=[TD_SECRET], lock_buckets=[TD_BUCKET], dry_run=False, approval="yes", approver="sec-kim")
    assert statuses(done) == [(sec.ROTATE, TD_SECRET, "verified"), (sec.LOCK, TD_BUCKET, "verified")], done.records
    assert done.outcome == "done-with-warnings" and not_ok(done) == [("break-glass", TD_BUCKET, "WARN")]
    rot, lock = done.records
    # rotation: AWSCURRENT moved, the value changed, the old version has no label left
    stages = ssec.stages(sandbox, td, TD_SECRET)
    new_version = next(v for v, s in stages.items() if "AWSCURRENT" in s)
    assert new_version != old_version and stages[old_version] == [] and not any("AWSPREVIOUS" in s for s in stages.values())
    assert (rot["before"], rot["after"]) == (f"AWSCURRENT {old_version}", f"AWSCURRENT {new_version}")
    assert "AWSPREVIOUS removed from" in rot["detail"] and "the new value differs" in rot["detail"]
    new_value = ssec.secret_value(sandbox, td, TD_SECRET)
    assert new_value != old_value and set(json.loads(new_value)) == set(json.loads(old_value))
    assert json.loads(new_value)["host"] == "api.example.com"  # connection settings kept
    # lock: the deny policy is in place, the record keeps the previous text exactly, objects are denied
    assert ssec.read_bucket_policy(sandbox, td, TD_BUCKET) == sec.deny_policy(TD_BUCKET, [TD_GLASS])
    assert lock["before"] == previous and "must be run as a break-glass role" in lock["detail"]
    with pytest.raises(Exception, match="403|AccessDenied|Forbidden"):
        s3.get_object(Bucket=TD_BUCKET, Key="projects/p1.json")  # moto enforces Principal * denies on objects
    durable = {(r["kind"], r["resource"]): r for r in statestore.read_records(td) if r.get("flow_run_id") == done.flow_run_id}
    assert durable[(sec.LOCK, TD_BUCKET)]["before"] == previous and durable[(sec.ROTATE, TD_SECRET)]["approver"] == "sec-kim"
    # notified, with the security escalation; no secret value anywhere
    [msg] = messages()
    assert "escalate to security: 보안 담당자 + 경영진" in msg["Message"] and "locked (deny-all)" in msg["Message"]
    shown = json.dumps(done.public()) + artifacts_text(done.flow_run_id) + msg["Message"]
    for v in list(json.loads(old_value).values()) + list(json.loads(new_value).values()):
        if isinstance(v, str) and v != "api.example.com":
            assert v not in shown
    assert_covered(done, "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage", "s3:PutBucketPolicy")

    again = run(TD, rotate_secrets=[TD_SECRET], lock_buckets=[TD_BUCKET], dry_run=False, approval="yes")
    assert again.outcome == "nothing-to-do" and again.records == [] and again.status is Status.OK
    assert any(u.startswith(f"{TD_BUCKET}: already locked") for u in again.plan["unchanged"])
    assert any(u.startswith(f"{TD_SECRET}: rotated by this runbook 0 min ago") for u in again.plan["unchanged"])
    assert ssec.stages(sandbox, td, TD_SECRET) == stages

    undo = run(TD, undo_run=done.flow_run_id, dry_run=False, approval="yes", approver="sec-kim")
    assert statuses(undo) == [(sec.LOCK, TD_BUCKET, "verified")]
    assert ssec.read_bucket_policy(sandbox, td, TD_BUCKET) == previous  # byte for byte
    assert [c for c in undo.plan["cannot"] if c.startswith(f"{TD_SECRET}: {sec.ROTATE} has no undo")]
    assert "the old credential is presumed compromised and must not come back" in undo.plan["cannot"][0]
    assert ssec.secret_value(sandbox, td, TD_SECRET) == new_value  # the old value never comes back
    assert s3.get_object(Bucket=TD_BUCKET, Key="projects/p1.json")["Body"].read() == b"{}"

    again = run(TD, undo_run=done.flow_run_id)
    assert again.plan["actions"] == [] and any("already back at" in u for u in again.plan["unchanged"])


def test_a_secret_with_a_rotation_lambda_is_rotated_by_it_and_a_broken_one_is_crit(seeded, sandbox):
    td = seeded(TD)
    made = ssec.incident(sandbox, td, rotation="lambda")
    old_version = made["secrets"][0]["version"]
    report = run(TD, rotate_secrets=[TD_SECRET], dry_run=False, approval="yes", settle_timeout_s=20)
    assert report.plan["actions"][0]["target"] == "new AWSCURRENT version via RotateSecret"
    assert statuses(report) == [(sec.ROTATE, TD_SECRET, "verified")] and report.status is Status.OK, not_ok(report)
    assert ssec.rotation_calls(sandbox, td, TD_SECRET) == 1 and report.api_calls_by_operation.get("secretsmanager:PutSecretValue") is None
    stages = ssec.stages(sandbox, td, TD_SECRET)
    assert stages[old_version] == [] and report.records[0]["after"] != f"AWSCURRENT {old_version}"
    assert_covered(report, "secretsmanager:RotateSecret", "secretsmanager:UpdateSecretVersionStage")

    ssec.rotation_lambda(sandbox, td, TD_SECRET, fail=True)
    broken = run(TD, rotate_secrets=[TD_SECRET], rotate_again=True, dry_run=False, approval="yes", settle_timeout_s=2)
    assert statuses(broken) == [(sec.ROTATE, TD_SECRET, "applied")] and broken.status is Status.CRIT
    assert "the rotation did not finish; the old credential is still current" in broken.records[0]["detail"]
    assert ("secret-rotation", TD_SECRET, "CRIT") in not_ok(broken)
    pending = run(TD, rotate_secrets=[TD_SECRET], rotate_again=True)  # the stuck rotation blocks another
    assert pending.plan["actions"] == [] and "a rotation is already in progress" in pending.plan["cannot"][0]


def test_a_failed_step_is_recorded_and_the_others_still_contain(seeded, sandbox):
    td = seeded(TD)
    ssec.incident(sandbox, td)
    ssec.secret_writes_fail(sandbox, td, TD_SECRET)
    report = run(TD, rotate_secrets=[TD_SECRET], lock_buckets=[TD_BUCKET], dry_run=False, approval="yes")
    assert statuses(report) == [(sec.ROTATE, TD_SECRET, "failed"), (sec.LOCK, TD_BUCKET, "verified")]
    assert report.outcome == "failed" and report.status is Status.CRIT
    assert "Access to KMS is not allowed" in report.records[0]["detail"] and report.records[0]["after"] is None
    assert sec.is_our_lock(ssec.read_bucket_policy(sandbox, td, TD_BUCKET))  # the lock is not reopened because the rotation failed


# --- hr: bare break-glass name; a bucket with a policy and one without -------------------------------


def test_nothing_requested_unknown_undo_then_locks_with_and_without_a_previous_policy_are_undone_exactly(seeded, sandbox):
    hr = seeded(HR)
    report = run(HR)
    assert report.outcome == "nothing-to-do" and report.status is Status.OK
    [f] = report.findings
    assert f.check == "security-request" and "hr-reports-bucket-team2" in f.summary and "Cognito pool: none" in f.summary
    nope = run(HR, undo_run=str(uuid.uuid4()))  # a run id with no record of this runbook
    assert "no security-incident record of this run" in nope.plan["cannot"][0]
    mixed = run(HR, undo_run=str(uuid.uuid4()), lock_buckets=["hr-reports-bucket-team2"])
    assert mixed.outcome == "refused" and "cannot be combined" in mixed.findings[-1].summary
    # a bucket with a policy and one without: locked, then put back exactly
    made = ssec.incident(sandbox, hr)
    with_policy, without = "hr-resumes-bucket-team2", "hr-reports-bucket-team2"
    assert made["policies"][without] is None
    done = run(HR, lock_buckets=f"{with_policy}, {without}", dry_run=False, approval="yes")  # the shell's comma form
    glass = "arn:aws:iam::123456789012:role/hr-break-glass-team2"  # completed with the caller's account
    assert statuses(done) == [(sec.LOCK, with_policy, "verified"), (sec.LOCK, without, "verified")]
    assert done.records[1]["before"] == NO_POLICY and ssec.read_bucket_policy(sandbox, hr, without) == sec.deny_policy(without, [glass])
    undo = run(HR, undo_run=done.flow_run_id, dry_run=False, approval="yes")
    actions = {a["resource"]: a for a in undo.plan["actions"]}
    assert actions[without]["iam_action"] == "s3:DeleteBucketPolicy" and actions[with_policy]["iam_action"] == "s3:PutBucketPolicy"
    assert sorted(statuses(undo)) == sorted([(sec.LOCK, with_policy, "verified"), (sec.LOCK, without, "verified")])
    assert ssec.read_bucket_policy(sandbox, hr, with_policy) == made["policies"][with_policy]
    assert ssec.read_bucket_policy(sandbox, hr, without) is None
    assert_covered(undo, "s3:PutBucketPolicy", "s3:DeleteBucketPolicy")


def test_an_unreadable_policy_is_unknown_and_not_locked(seeded, sandbox):
    td = seeded(TD)
    ssec.incident(sandbox, td)
    ssec.policy_unreadable(sandbox, td, TD_BUCKET)
    [state] = read_bucket_policies.fn(td, [TD_BUCKET], aws.Deadline(10))
    assert state.policy is None and "access denied" in state.error
    [f] = sec.read_findings([], [state], [])
    assert (f.check, f.resource, f.status) == ("bucket-policy-read", TD_BUCKET, Status.UNKNOWN)  # the plan: test_judge


# --- todo-app / leh: Cognito users ---------------------------------------------------------------------


def test_users_are_disabled_signed_out_masked_and_re_enabled_by_the_undo(seeded, sandbox):
    todo = seeded(TODO)
    ssec.cognito_users(sandbox, todo, ["suspicious-user@example.com", "kim.minsu@example.com", "already-off"], disabled=("already-off",))
    asked = ["suspicious-user@example.com", "kim.minsu@example.com", "already-off", "nobody-here"]
    dry = run(TODO, disable_users=asked)
    assert [a["kind"] for a in dry.plan["actions"]] == [sec.DISABLE, sec.DISABLE]
    assert all(a["resource"].startswith("todo-app-users/") and "***#" in a["resource"] for a in dry.plan["actions"])
    assert any(u.endswith("already disabled") for u in dry.plan["unchanged"])
    assert dry.plan["cannot"] == [f"disable_users[3] (n***): no such user in the pool todo-app-users ({ssec.pool_id(sandbox, todo)}); not disabled"]
    assert any(n.startswith("escalate to security: 보안팀 (security@company.com)") for n in dry.plan["notes"])
    assert ssec.user_enabled(sandbox, todo, "suspicious-user@example.com")

    done = run(TODO, disable_users=asked, dry_run=False, approval="yes")
    assert [(k, s) for k, _, s in statuses(done)] == [(sec.DISABLE, "verified"), (sec.SIGN_OUT, "applied")] * 2
    assert not ssec.user_enabled(sandbox, todo, "suspicious-user@example.com") and not ssec.user_enabled(sandbox, todo, "kim.minsu@example.com")
    shown = json.dumps(done.public()) + json.dumps(done.plan) + artifacts_text(done.flow_run_id)
    for name in ("suspicious", "kim.minsu", "example.com", "nobody-here"):
        assert name not in shown, name
    subjects = [r for r in statestore.read_records(todo) if r.get("runbook") == sec.SUBJECTS]
    assert sorted(r["username"] for r in subjects) == ["kim.minsu@example.com", "suspicious-user@example.com"]  # only the durable record
    assert_covered(done, "cognito-idp:AdminDisableUser", "cognito-idp:AdminUserGlobalSignOut")

    again = run(TODO, disable_users=asked[:2], dry_run=False, approval="yes")
    assert again.outcome == "nothing-to-do" and len(again.plan["unchanged"]) == 2

    undo = run(TODO, undo_run=done.flow_run_id, dry_run=False, approval="yes")
    assert [(k, s) for k, _, s in statuses(undo)] == [(sec.DISABLE, "verified")] * 2 and undo.plan["cannot"] == []
    assert sum(f"{sec.SIGN_OUT} has no undo" in n for n in undo.plan["notes"]) == 2
    assert ssec.user_enabled(sandbox, todo, "suspicious-user@example.com") and ssec.user_enabled(sandbox, todo, "kim.minsu@example.com")
    assert not ssec.user_enabled(sandbox, todo, "already-off")  # never touched
    assert_covered(undo, "cognito-idp:AdminEnableUser")


def test_leh_resolves_its_pool_by_name_and_names_its_lv3_escalation(seeded, sandbox):
    leh = seeded(LEH)
    ssec.cognito_users(sandbox, leh, ["uploader-77"])
    users = read_users.fn(leh, ["uploader-77", "ghost"], aws.Deadline(10))
    assert users[0].enabled is True and users[0].pool_id == ssec.pool_id(sandbox, leh) and users[1].error.startswith("no such user")
    plan, subjects = sec.decide(leh, ME, sec.Requests(users=["uploader-77", "ghost"]), [], [], users, [], False, "r1", datetime.now(timezone.utc))
    [a] = plan.actions
    assert a.resource.startswith("leh-users/u***#") and a.iam_action == "cognito-idp:AdminDisableUser"
    assert subjects[a.resource]["username"] == "uploader-77" and plan.cannot[0].startswith("disable_users[1] (g***): no such user")
    assert sec.security_escalation(leh)[1].startswith("escalate to Lv3: CTO / PM")


def test_a_change_since_the_plan_is_refused(seeded, sandbox):
    td = seeded(TD)
    ssec.incident(sandbox, td)
    plan = Plan(runbook=sec.RUNBOOK, system=TD, identity=ME, actions=[
        Action(kind=sec.LOCK, resource=TD_BUCKET, current=NO_POLICY, target="{}", iam_action="s3:PutBucketPolicy")])
    with pytest.raises(Refused, match="was \\(no bucket policy\\) when planned"):
        si.check_drift.fn(td, plan, {})
