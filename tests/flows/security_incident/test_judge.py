"""security-incident's judgement without AWS or Prefect: what is allowed, the plan from what was read,
the deny-all policy, what an undo may put back (never a rotation), and the findings of the records."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from flows.security_incident import judge as j
from opsbook.findings import Status
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Action, Identity, Plan, Record
from tasks.cognito import UserState
from tasks.s3 import NO_POLICY, BucketState
from tasks.secretsmanager import SecretState

TD, TODO, HR, LEH = "t-developer", "todo-app", "hr-resource-optimization", "leh"
TD_SECRET, TD_BUCKET = "t-developer/production/api-keys", "t-developer-projects-production"
TD_GLASS = "arn:aws:iam::123456789012:role/t-developer-break-glass"
ME = Identity(account="123456789012", arn="arn:aws:sts::123456789012:user/moto", region="us-east-1")
GLASS_ME = Identity(account="123456789012", arn="arn:aws:sts::123456789012:assumed-role/t-developer-break-glass/alice",
                    region="us-east-1")
NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


def decide(inv, req, secrets=(), buckets=(), users=(), records=(), rotate_again=False, identity=ME, now=NOW):
    return j.decide(inv, identity, req, list(secrets), list(buckets), list(users), list(records), rotate_again, "r1", now)


def secret(**kw) -> SecretState:
    return SecretState(**{"requested": TD_SECRET, "entry": TD_SECRET, "name": TD_SECRET, "arn": "arn", "current_version": "v2", **kw})


def record(kind: str, status: str, after: str | None, resource: str = "x", before: str | None = "b") -> Record:
    return Record(runbook=j.RUNBOOK, system=TD, flow_run_id="r1", caller_arn=ME.arn, resource=resource, kind=kind,
                  before=before, after=after, status=status)


# --- what is allowed ------------------------------------------------------------------------------


def test_requests_outside_the_inventory_are_refused_with_the_reason():
    td, todo = load_system(TD), load_system(TODO)
    arn = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{TD_SECRET}-AbC123"
    req = j.resolve_requests(td, [TD_SECRET, arn, "prod/other"], [TD_BUCKET, "someone-elses-bucket"], ["bob@example.com"])
    assert req.secrets == [(TD_SECRET, TD_SECRET)] and req.buckets == [TD_BUCKET] and req.users == []
    assert [r.split(":")[0] for r in req.refused] == ["prod/other", "someone-elses-bucket", "disable_users[0] (b***)"]
    assert "security.secrets, else audit.secrets: t-developer/production/api-keys" in req.refused[0]
    assert "names no Cognito user pool" in req.refused[2] and "bob@example.com" not in " ".join(req.refused)
    req = j.resolve_requests(todo, [TD_SECRET], ["todo-app-prod-frontend"], ["a", "a", "b"])
    assert "none" in req.refused[0] and req.buckets == ["todo-app-prod-frontend"] and req.users == ["a", "b"]


def test_secret_arns_match_by_name_and_six_characters_only_and_buckets_by_name():
    assert j.match_secret(f"arn:aws:secretsmanager:r:1:secret:{TD_SECRET}-AbC123", [TD_SECRET]) == TD_SECRET
    assert j.match_secret(f"arn:aws:secretsmanager:r:1:secret:{TD_SECRET}-AbC12", [TD_SECRET]) is None  # 5 characters
    assert j.match_secret(f"arn:aws:secretsmanager:r:1:secret:{TD_SECRET}-other-AbC123", [TD_SECRET]) is None
    assert j.match_bucket("s3://b/", ["b"]) == j.match_bucket("arn:aws:s3:::b", ["b"]) == "b"
    assert j.match_bucket("c", ["b"]) is None


def test_nothing_requested_is_empty_and_names_what_may_be_asked():
    hr = load_system(HR)
    req = j.resolve_requests(hr, [], [], [])
    assert req.empty
    plan, subjects = decide(hr, req)
    assert plan.actions == plan.cannot == plan.unchanged == plan.notes == [] and subjects == {}
    f = j.nothing_requested(hr)
    assert f.status is Status.OK and "hr-reports-bucket-team2" in f.summary and "Cognito pool: none" in f.summary


def test_security_escalation_entry_of_each_seed_system():
    entry, line = j.security_escalation(load_system(TD))
    assert entry.level == "security" and "보안 담당자" in line and "within 0 min" in line
    assert j.security_escalation(load_system(LEH))[0].level == "Lv3"  # 'security incident' in when
    assert j.security_escalation(load_system(LEH))[1].startswith("escalate to Lv3: CTO / PM")
    entry, line = j.security_escalation(load_system(TODO))  # 002: 보안팀과 레벨 3에 동시 통보
    assert entry.level == "security" and line.startswith("escalate to security: 보안팀") and line.endswith(": suspected breach")
    hr = j.security_escalation(load_system(HR))  # 000: L3 -> L4 on 보안 침해 의심, not the first level
    assert hr[0].level == "L4" and hr[1] == "escalate to L4: CTO (respond within 120 min): suspected breach"
    unmarked = load_system(TODO).model_copy(update={"escalation": load_system(TODO).escalation[:4]})
    entry, line = j.security_escalation(unmarked)
    assert entry is None and "no escalation level for security" in line and "P0" in line
    bare = load_system(TODO).model_copy(update={"escalation": []})
    assert j.security_escalation(bare) == (None, "the inventory names no escalation levels: add one for security incidents")


# --- the deny-all policy ----------------------------------------------------------------------------


def test_deny_policy_exempts_only_the_break_glass_roles_and_names_are_completed():
    doc = json.loads(j.deny_policy("bkt", ["arn:aws:iam::1:role/b", "arn:aws:iam::1:role/a"]))
    [s] = doc["Statement"]
    assert (s["Effect"], s["Principal"], s["Action"]) == ("Deny", "*", "s3:*")
    assert s["Resource"] == ["arn:aws:s3:::bkt", "arn:aws:s3:::bkt/*"]
    assert s["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": ["arn:aws:iam::1:role/a", "arn:aws:iam::1:role/b"]}}
    with pytest.raises(ValueError, match="lock everyone out"):
        j.deny_policy("bkt", [])
    assert j.role_arn("todo-app-break-glass", "999999999999") == "arn:aws:iam::999999999999:role/todo-app-break-glass"
    assert j.role_arn(TD_GLASS, "999999999999") == TD_GLASS
    assert j.role_arn("ops/glass", "1", "aws-cn") == "arn:aws-cn:iam::1:role/ops/glass"
    assert j.partition_of("arn:aws-cn:sts::1:assumed-role/x/y") == "aws-cn" and j.partition_of("nonsense") == "aws"


@pytest.mark.parametrize("caller, exempt", [
    ("arn:aws:sts::123456789012:assumed-role/t-developer-break-glass/alice", True),
    ("arn:aws:sts::123456789012:assumed-role/t-developer-admin/alice", False),
    ("arn:aws:sts::999999999999:assumed-role/t-developer-break-glass/alice", False),  # another account's role of that name
    ("arn:aws:iam::123456789012:user/alice", False),
    ("arn:aws:iam::123456789012:root", False),
    ("arn:aws:sts::123456789012:user/moto", False),
    ("not-an-arn", False),
])
def test_caller_exemption_follows_arnlike_on_the_role(caller, exempt):
    assert j.caller_exempt(caller, [TD_GLASS]) is exempt
    assert j.caller_exempt("arn:aws:sts::123456789012:assumed-role/glass/x", ["arn:aws:iam::123456789012:role/ops/glass"])


def test_same_policy_our_lock_and_its_exemptions():
    lock = j.deny_policy("b", [TD_GLASS])
    assert j.same_policy(lock, json.dumps(json.loads(lock), indent=2)) and not j.same_policy(lock, NO_POLICY)
    assert j.same_policy(NO_POLICY, NO_POLICY) and not j.same_policy("not json", "{}")
    assert j.is_our_lock(lock) and not j.is_our_lock('{"Statement": {"Sid": "Other"}}') and not j.is_our_lock(NO_POLICY)
    assert j.exempt_in(lock) == [TD_GLASS] and j.exempt_in(NO_POLICY) == [] and j.exempt_in("{}") == []


# --- the plan ------------------------------------------------------------------------------------------


def test_no_break_glass_role_means_no_lock():
    raw = yaml.safe_load(Path("systems/t-developer.yaml").read_text())
    raw["security"]["break_glass_roles"] = []
    td = System.model_validate(raw)
    plan, _ = decide(td, j.Requests(buckets=[TD_BUCKET]), buckets=[BucketState(bucket=TD_BUCKET, policy=NO_POLICY)])
    assert plan.actions == [] and len(plan.cannot) == 1
    assert plan.cannot[0].startswith(f"{TD_BUCKET}: the inventory names no break-glass role") and "lock the team out" in plan.cannot[0]


def test_an_unreadable_policy_is_not_locked_and_its_read_is_unknown():
    td = load_system(TD)
    state = BucketState(bucket=TD_BUCKET, error="GetBucketPolicy: access denied (x); grant the IAM action")
    plan, _ = decide(td, j.Requests(buckets=[TD_BUCKET]), buckets=[state])
    assert plan.actions == [] and "could not read its bucket policy" in plan.cannot[0] and "not locked" in plan.cannot[0]
    [f] = j.read_findings([], [state], [])
    assert (f.check, f.resource, f.status) == ("bucket-policy-read", TD_BUCKET, Status.UNKNOWN)
    gone = BucketState(bucket="gone", error="GetBucketPolicy: NoSuchBucket: nope")
    assert j.read_findings([], [gone], []) == []  # a bucket that does not exist is a refusal in the plan, not UNKNOWN


def test_a_lock_is_planned_with_the_exact_previous_policy_and_an_already_locked_bucket_is_unchanged():
    td = load_system(TD)
    previous = '{"Version":"2012-10-17","Statement":[]}'
    plan, _ = decide(td, j.Requests(buckets=[TD_BUCKET]), buckets=[BucketState(bucket=TD_BUCKET, policy=previous)])
    [a] = plan.actions
    assert (a.kind, a.current, a.target) == (j.LOCK, previous, j.deny_policy(TD_BUCKET, [TD_GLASS]))
    assert "caller is NOT exempt" in a.evidence and any("must be run as a break-glass role" in n for n in plan.notes)
    plan, _ = decide(td, j.Requests(buckets=[TD_BUCKET]), buckets=[BucketState(bucket=TD_BUCKET, policy=previous)], identity=GLASS_ME)
    assert "NOT exempt" not in plan.actions[0].evidence and not any("must be run as" in n for n in plan.notes)
    locked = BucketState(bucket=TD_BUCKET, policy=j.deny_policy(TD_BUCKET, [TD_GLASS]))
    plan, _ = decide(td, j.Requests(buckets=[TD_BUCKET]), buckets=[locked])
    assert plan.actions == [] and plan.unchanged[0].startswith(f"{TD_BUCKET}: already locked") and plan.notes == []
    other = BucketState(bucket=TD_BUCKET, policy=j.deny_policy(TD_BUCKET, ["arn:aws:iam::1:role/other"]))
    [a] = decide(td, j.Requests(buckets=[TD_BUCKET]), buckets=[other])[0].actions
    assert "already carries an opsbook emergency deny" in a.evidence


def test_decide_does_not_rotate_twice_within_the_hour_unless_asked():
    td = load_system(TD)
    rec = {"runbook": j.RUNBOOK, "kind": j.ROTATE, "resource": TD_SECRET, "status": "verified", "after": "AWSCURRENT v2",
           "at": "2026-01-01T11:30:00+00:00", "flow_run_id": "r1"}
    req = j.Requests(secrets=[(TD_SECRET, TD_SECRET)])
    plan, _ = decide(td, req, [secret()], records=[rec])
    assert plan.actions == [] and "30 min ago" in plan.unchanged[0] and "rotate_again=true" in plan.unchanged[0]
    assert len(decide(td, req, [secret()], records=[rec], rotate_again=True)[0].actions) == 1
    at = datetime(2026, 1, 1, 11, 30, tzinfo=timezone.utc)
    assert decide(td, req, [secret()], records=[rec], now=at + timedelta(seconds=3599))[0].actions == []  # just under the hour
    assert len(decide(td, req, [secret()], records=[rec], now=at + timedelta(seconds=3600))[0].actions) == 1  # exactly an hour
    moved = dict(rec, after="AWSCURRENT v1")  # rotated since by someone else: AWSCURRENT is not what this runbook left
    assert len(decide(td, req, [secret()], records=[moved])[0].actions) == 1
    failed = dict(rec, status="failed")
    assert len(decide(td, req, [secret()], records=[failed])[0].actions) == 1


def test_a_rotation_is_never_reversible_and_goes_through_the_rotation_function_when_there_is_one():
    td = load_system(TD)
    req = j.Requests(secrets=[(TD_SECRET, TD_SECRET)])
    plan, _ = decide(td, req, [secret()])
    [a] = plan.actions
    assert (a.kind, a.current, a.target, a.iam_action) == (j.ROTATE, "AWSCURRENT v2", "new AWSCURRENT version via PutSecretValue",
                                                           "secretsmanager:PutSecretValue")
    assert a.reversible is False and "the credential at its issuer does NOT change" in a.evidence
    assert any("invalidate-sessions" in n for n in plan.notes)
    [a] = decide(td, req, [secret(rotation_lambda="arn:aws:lambda:r:1:function:rot")])[0].actions
    assert a.target == "new AWSCURRENT version via RotateSecret" and "automatic rotation off" in a.evidence
    assert "cannot" not in j.IRREVERSIBLE[j.ROTATE] and "never put back" in j.IRREVERSIBLE[j.ROTATE]


@pytest.mark.parametrize("state, why", [
    (secret(error="DescribeSecret: access denied"), "could not read it (DescribeSecret: access denied); not rotated"),
    (secret(entry="other-secret"), "not the inventory's other-secret; not rotated"),
    (secret(deleted=True), "is scheduled for deletion"),
    (secret(current_version=None), "has no AWSCURRENT version"),
    (secret(rotation_enabled=True, pending_version="v3"), "a rotation is already in progress (AWSPENDING on v3"),
])
def test_secrets_that_cannot_be_rotated_say_why(state, why):
    plan, _ = decide(load_system(TD), j.Requests(secrets=[(TD_SECRET, TD_SECRET)]), [state])
    assert plan.actions == [] and len(plan.cannot) == 1 and why in plan.cannot[0]


def test_a_pending_version_without_a_rotation_function_does_not_block_and_duplicates_count_once():
    plan, _ = decide(load_system(TD), j.Requests(), [secret(pending_version="v3"), secret(requested="arn-form")])
    assert [a.resource for a in plan.actions] == [TD_SECRET] and plan.cannot == []


def test_users_are_disabled_by_pseudonym_and_the_rest_says_why():
    leh = load_system(LEH)
    found = UserState(index=0, subject="leh-users/u***#1", pool_id="p", pool_name="leh-users", username="uploader-77", enabled=True)
    twice = found.model_copy(update={"index": 1})
    off = UserState(index=2, subject="leh-users/o***#2", pool_id="p", pool_name="leh-users", username="off", enabled=False)
    ghost = UserState(index=3, pool_id="p", pool_name="leh-users", error="no such user in the pool leh-users (p)")
    req = j.Requests(users=["uploader-77", "Uploader-77", "off", "ghost"])
    plan, subjects = decide(leh, req, users=[found, twice, off, ghost])
    [a] = plan.actions
    assert (a.kind, a.resource, a.iam_action) == (j.DISABLE, "leh-users/u***#1", "cognito-idp:AdminDisableUser")
    assert subjects == {a.resource: {"pool_id": "p", "pool_name": "leh-users", "username": "uploader-77"}}
    assert plan.unchanged == ["leh-users/o***#2: already disabled"]
    assert plan.cannot == ["disable_users[3] (g***): no such user in the pool leh-users (p); not disabled"]
    assert any("token blacklist" in n for n in plan.notes)
    assert "uploader" not in json.dumps(plan.model_dump(mode="json"))
    unread = UserState(index=0, error="AdminGetUser: access denied (no grant); grant the IAM action")
    [f] = j.read_findings([], [], [unread])
    assert (f.status, f.resource) == (Status.UNKNOWN, "disable_users[0]") and "access denied" in f.summary
    assert j.read_findings([], [], [ghost]) == []


# --- undo, read back, findings ---------------------------------------------------------------------------


def test_undo_fixups_name_the_exact_call_and_a_sign_out_is_a_note():
    plan = Plan(runbook=j.RUNBOOK, system=TD, identity=ME, actions=[
        Action(kind=j.LOCK, resource="a", current="x", target=NO_POLICY, iam_action="s3:PutBucketPolicy"),
        Action(kind=j.LOCK, resource="b", current="x", target='{"p":1}', iam_action="s3:PutBucketPolicy"),
        Action(kind=j.DISABLE, resource="u", current="disabled", target="enabled", iam_action="?")],
        cannot=[f"u: {j.SIGN_OUT} has no undo: ...", f"s: {j.ROTATE} has no undo: {j.IRREVERSIBLE[j.ROTATE]}"])
    out = j.undo_fixups(plan)
    assert [a.iam_action for a in out.actions] == ["s3:DeleteBucketPolicy", "s3:PutBucketPolicy", "cognito-idp:AdminEnableUser"]
    assert "had no policy before: delete it" in out.actions[0].evidence and "exactly (7 bytes)" in out.actions[1].evidence
    assert out.notes == [f"u: {j.SIGN_OUT} has no undo: ..."] and out.cannot[0].startswith(f"s: {j.ROTATE} has no undo")


def test_a_lock_read_back_is_verified_only_when_it_is_the_policy_put():
    lock = j.deny_policy("b", [TD_GLASS])
    r = record(j.LOCK, "applied", lock, "b")
    assert j.lock_read_back(r, lock).status == "verified"
    pretty = json.dumps(json.loads(lock), indent=1)
    again = j.lock_read_back(r, pretty)
    assert again.status == "verified" and again.after == pretty and "as S3 formats it" in again.detail
    back = record(j.LOCK, "applied", '{"a": 1}', "b")
    assert j.lock_read_back(back, '{"a":1}').status == "applied"  # the undo's policy: the same document is not the same bytes
    assert "a different policy (2 bytes)" in j.lock_read_back(r, "{}").detail
    assert j.lock_read_back(record(j.LOCK, "applied", NO_POLICY, "b"), NO_POLICY).detail.endswith("read back: no bucket policy")


def test_result_findings_a_rotation_not_finished_is_crit_and_an_unexempt_caller_is_warned():
    lock = j.deny_policy("b", [TD_GLASS])
    records = [record(j.ROTATE, "applied", "AWSPENDING v3", "s"), record(j.ROTATE, "verified", "AWSCURRENT v3", "s2"),
               record(j.LOCK, "verified", lock, "b"), record(j.LOCK, "applied", NO_POLICY, "c"),
               record(j.DISABLE, "failed", None, "u"), record(j.SIGN_OUT, "applied", "signed out everywhere", "u"),
               record(j.SIGN_OUT, "failed", None, "v")]
    got = [(f.check, f.resource, f.status) for f in j.result_findings(records, ME)]
    assert got == [(j.ROTATE, "s", Status.CRIT), (j.ROTATE, "s2", Status.OK), (j.LOCK, "b", Status.OK),
                   ("break-glass", "b", Status.WARN), (j.LOCK, "c", Status.WARN), (j.DISABLE, "u", Status.CRIT),
                   (j.SIGN_OUT, "u", Status.OK), (j.SIGN_OUT, "v", Status.CRIT)]
    assert "break-glass" not in [f.check for f in j.result_findings(records, GLASS_ME)]
    assert j.describe(records[2]).startswith(f"{j.LOCK} of b verified: locked (deny-all)")
    assert "policy deleted (there was none before)" in j.describe(records[3]) and lock not in j.describe(records[2])
