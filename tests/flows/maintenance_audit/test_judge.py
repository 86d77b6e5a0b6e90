"""maintenance-audit's judge, fed data and thresholds directly (no sandbox, no Prefect): every check at its thresholds,
each fault with its healthy twin, unreadable data UNKNOWN (never OK), and the plan of the safe fixes."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from flows.maintenance_audit import judge as j
from opsbook.findings import Status
from opsbook.inventory import Audit, LambdaFunction, System
from opsbook.mutation.core import Identity, Record
from tasks.acm import CertificateState
from tasks.awslambda import FunctionInfo, FunctionRuntime
from tasks.ec2 import IngressRule, SecurityGroup
from tasks.ecr import ImageScan
from tasks.iam_roles import RoleUse
from tasks.kms import KeyRotation
from tasks.logs import AuditSample, LogGroupState
from tasks.rds import RdsSnapshots
from tasks.s3 import TmpPrefix
from tasks.secretsmanager import SecretRotation
from tasks.tagging import ResourceTags

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
IDENT = Identity(account="123456789012", arn="arn:aws:sts::123456789012:user/t", region="ap-northeast-2")


def inv(**audit) -> System:
    return System(name="sys", region="ap-northeast-2", audit=Audit(**audit))


def test_human_bytes():
    assert [j.human_bytes(n) for n in (0, 1023, 1024, 5 * 1024**2, 3 * 1024**5)] == ["0 B", "1023 B", "1.0 KiB", "5.0 MiB", "3072.0 TiB"]


def test_log_retention_at_the_policy_and_either_side():
    g = LogGroupState(name="/g", retention_days=30, stored_bytes=2048)
    assert j.judge_log_retention(g, 30).status is Status.OK
    assert j.judge_log_retention(g.model_copy(update={"retention_days": 29}), 30).status is Status.OK
    f = j.judge_log_retention(g.model_copy(update={"retention_days": 31}), 30)
    assert f.status is Status.WARN and "exceeds the policy's 30" in f.summary and "put-retention-policy" in f.summary
    f = j.judge_log_retention(g.model_copy(update={"retention_days": 3653, "audit": True}), 30)
    assert f.status is Status.OK and "never shortened" in f.summary  # an audit group keeps its long retention
    f = j.judge_log_retention(g.model_copy(update={"retention_days": None}), 30)
    assert f.status is Status.WARN and "no retention" in f.summary and "2.0 KiB stored" in f.summary and "set retention to 30 days" in f.summary


def test_log_group_missing_or_unreadable():
    assert j.judge_log_retention(LogGroupState(name="/g", error="AccessDenied"), 30).status is Status.UNKNOWN
    f = j.judge_log_retention(LogGroupState(name="/g", exists=False), 30)
    assert f.status is Status.WARN and "does not exist" in f.summary
    f = j.judge_log_retention(LogGroupState(name="/aws/lambda/f", exists=False, named=False), 30)
    assert f.status is Status.OK and "not created yet" in f.summary


def test_tmp_prefix_rule_and_old_objects():
    bad = TmpPrefix(bucket="b", prefix="tmp/", objects=2, old_objects=2, old_bytes=10, oldest_days=30.0, limit_days=7)
    life, age = j.judge_tmp(bad)
    assert (life.status, age.status) == (Status.WARN, Status.WARN)
    assert "put-bucket-lifecycle-configuration" in life.summary and age.summary.startswith("2 of 2 objects older than 7 days")
    good = TmpPrefix(bucket="b", prefix="tmp/", rule_id="expire-tmp", rule_days=7, objects=2, limit_days=8)
    life, age = j.judge_tmp(good)
    assert (life.status, life.summary) == (Status.OK, "lifecycle rule expire-tmp expires tmp/ after 7 days") and age.status is Status.OK
    stuck = good.model_copy(update={"old_objects": 1, "oldest_days": 9.0})
    assert "the lifecycle rule is not expiring them" in j.judge_tmp(stuck)[1].summary


def test_tmp_prefix_unreadable_is_unknown():
    assert [f.status for f in j.judge_tmp(TmpPrefix(bucket="b", prefix="tmp/", error="AccessDenied"))] == [Status.UNKNOWN]
    life, age = j.judge_tmp(TmpPrefix(bucket="b", prefix="tmp/", lifecycle_error="AccessDenied"))
    assert life.status is Status.UNKNOWN and age.status is Status.OK


def test_audit_sample():
    assert j.judge_audit_sample(AuditSample(log_group="/a", error="boom")).status is Status.UNKNOWN
    f = j.judge_audit_sample(AuditSample(log_group="/a", read=10, sampled=5))
    assert f.status is Status.OK and "no personal data or secret in a sample of 5 of 10 events of the last 7 days" in f.summary
    hits = [{"stream": "s1", "timestamp": 0, "kinds": ["rrn"], "excerpt": "****"}, {"stream": "s2", "timestamp": 0, "kinds": ["card", "secret"], "excerpt": "x"}]
    f = j.judge_audit_sample(AuditSample(log_group="/a", read=10, sampled=5, truncated=True, hits=hits))
    assert f.status is Status.CRIT and f.summary.startswith("2 event(s) with card, rrn, secret") and "s1 @1970-01-01T00:00:00+00:00" in f.summary
    assert "(read stopped at the cap)" in f.summary


def test_runtime_deprecation_at_each_threshold():
    table = {"python3.8": date(2025, 6, 1), "python3.11": date(2025, 7, 1)}
    today = NOW.date()
    at = j.judge_runtime(FunctionRuntime(function="f", runtime="python3.8"), table, 30, today)
    assert at.status is Status.CRIT and "deprecated on 2025-06-01 (0 days ago)" in at.summary
    assert j.judge_runtime(FunctionRuntime(function="f", runtime="python3.11"), table, 30, today).status is Status.WARN  # in 30 days
    assert j.judge_runtime(FunctionRuntime(function="f", runtime="python3.11"), table, 29, today).status is Status.OK
    assert j.judge_runtime(FunctionRuntime(function="f", runtime="python3.13"), table, 30, today).summary == "python3.13: no deprecation date known"
    assert "runtime is in the image" in j.judge_runtime(FunctionRuntime(function="f", package_type="Image"), table, 30, today).summary
    assert j.judge_runtime(FunctionRuntime(function="f", error="denied"), table, 30, today).status is Status.UNKNOWN


def test_deprecations_inventory_overrides_the_table():
    table = j.deprecations(inv(runtime_deprecations={"python3.12": "2030-01-01", "python3.8": "2099-01-01"}))
    assert table["python3.12"] == date(2030, 1, 1) and table["python3.8"] == date(2099, 1, 1) and table["java8"] == date(2024, 1, 8)


def test_role_unused_at_the_limit():
    used = RoleUse(role="r", last_used=NOW - timedelta(days=90))
    assert j.judge_role(used, 90, NOW).status is Status.WARN
    assert j.judge_role(used, 91, NOW).status is Status.OK
    assert j.judge_role(RoleUse(role="r", created=NOW - timedelta(days=10)), 90, NOW).status is Status.OK  # new, never used
    f = j.judge_role(RoleUse(role="r", created=NOW - timedelta(days=90)), 90, NOW)
    assert f.status is Status.WARN and f.summary.startswith("never used (created 90 days ago")
    assert "created ? days ago" in j.judge_role(RoleUse(role="r"), 90, NOW).summary
    assert j.judge_role(RoleUse(role="r", error="denied"), 90, NOW).status is Status.UNKNOWN


def test_tags():
    f = j.judge_tags(ResourceTags(kind="s3", name="b", tags={"Team": "x"}), ["Team", "Env"])
    assert (f.status, f.resource, f.details) == (Status.WARN, "s3:b", {"missing": ["Env"]})
    assert "no tags at all" in j.judge_tags(ResourceTags(kind="s3", name="b"), ["Team"]).summary
    assert j.judge_tags(ResourceTags(kind="s3", name="b", tags={"Team": "x", "Env": "p"}), ["Team", "Env"]).status is Status.OK


def test_kms_rotation():
    assert j.judge_kms(KeyRotation(alias="alias/a", key_id="k", enabled=True)).status is Status.OK
    f = j.judge_kms(KeyRotation(alias="alias/a", key_id="k", enabled=False))
    assert f.status is Status.WARN and "rotation disabled" in f.summary
    assert j.judge_kms(KeyRotation(alias="alias/a", error="alias not found")).status is Status.UNKNOWN


def test_secret_rotation_at_the_limit():
    s = SecretRotation(secret="s", rotation_enabled=True, last_rotated=NOW - timedelta(days=90))
    assert j.judge_secret(s, 90, NOW).status is Status.OK
    f = j.judge_secret(s, 89, NOW)
    assert f.status is Status.WARN and f.summary == "last rotated 90 days ago (limit 89 days)"
    f = j.judge_secret(SecretRotation(secret="s", created=NOW - timedelta(days=200)), 90, NOW)
    assert f.status is Status.WARN and "never rotated (created 200 days ago)" in f.summary and "rotation is not configured" in f.summary
    assert j.judge_secret(SecretRotation(secret="s"), 90, NOW).status is Status.WARN  # no date at all: never OK
    assert j.judge_secret(SecretRotation(secret="s", error="denied"), 90, NOW).status is Status.UNKNOWN


@pytest.mark.parametrize("rules, status, text", [
    ([IngressRule(protocol="tcp", from_port=22, to_port=22, cidr="0.0.0.0/0")], Status.CRIT, "tcp/22 from 0.0.0.0/0"),
    ([IngressRule(protocol="-1", cidr="::/0")], Status.CRIT, "all traffic from ::/0"),
    ([IngressRule(protocol="tcp", from_port=3389, to_port=3389, cidr="0.0.0.0/0")], Status.CRIT, "tcp/3389 from 0.0.0.0/0"),
    ([IngressRule(protocol="tcp", from_port=443, to_port=443, cidr="0.0.0.0/0")], Status.WARN, "tcp/443 from 0.0.0.0/0"),
    ([IngressRule(protocol="tcp", from_port=8000, to_port=8080, cidr="0.0.0.0/0")], Status.WARN, "tcp/8000-8080 from 0.0.0.0/0"),
    ([IngressRule(protocol="tcp", from_port=22, to_port=22, cidr="10.0.0.0/8")], Status.OK, "no inbound rule open to the internet"),
])
def test_security_group_open_to_the_world(rules, status, text):
    f = j.judge_security_group(SecurityGroup(group_id="sg-1", name="web", ingress=rules))
    assert f.status is status and text in f.summary and f.resource == "web (sg-1)"


def test_certificate_expiry_at_each_threshold():
    cert = CertificateState(domain="d", arn="arn:c", status="ISSUED", not_after=NOW + timedelta(days=30))
    assert j.judge_certificate(cert, 30, NOW).status is Status.WARN
    assert j.judge_certificate(cert, 29, NOW).status is Status.OK
    f = j.judge_certificate(cert.model_copy(update={"not_after": NOW}), 30, NOW)
    assert f.status is Status.CRIT and "expired on 2025-06-01" in f.summary
    assert "request-certificate" in j.judge_certificate(CertificateState(domain="d"), 30, NOW).summary
    assert j.judge_certificate(CertificateState(domain="d", arn="arn:c"), 30, NOW).status is Status.UNKNOWN  # no NotAfter
    assert j.judge_certificate(CertificateState(domain="d", error="denied"), 30, NOW).status is Status.UNKNOWN


def test_image_scan():
    def f(**kw):
        return j.judge_image_scan(ImageScan(repository="r", image="latest", **kw))

    assert f(counts={"CRITICAL": 2, "HIGH": 1}).status is Status.CRIT
    assert f(counts={"HIGH": 3}).status is Status.WARN
    assert (f(counts={"LOW": 1}).status, f(counts={"LOW": 1}).summary) == (Status.OK, "latest image latest: no CRITICAL or HIGH findings (LOW 1)")
    assert f(reason="the latest image has never been scanned").status is Status.UNKNOWN  # never OK without data
    assert f(exists=False).status is Status.WARN and f(error="denied").status is Status.UNKNOWN


def test_judge_dispatches_and_a_failed_read_is_unknown():
    system = inv(log_retention_days=30)
    states = {"logs": [LogGroupState(name="/g", retention_days=30)], "kms": RuntimeError("throttled"),
              "rds": [RdsSnapshots(instance="db", max_age_hours=26, latest_id="s1", latest=NOW - timedelta(hours=2), retention_days=7)]}
    found = {(f.check, f.resource): f.status for f in j.judge(system, states, NOW)}
    assert found == {("logs-retention", "/g"): Status.OK, ("kms", "(whole check)"): Status.UNKNOWN, ("rds-snapshot", "db"): Status.OK}
    assert j.judge(system, {}, NOW) == []


def test_plan_sets_missing_retention_and_enables_rotation_only():
    groups = [LogGroupState(name="/none", stored_bytes=1024), LogGroupState(name="/set", retention_days=14),
              LogGroupState(name="/gone", exists=False), LogGroupState(name="/err", error="denied")]
    keys = [KeyRotation(alias="alias/off", key_id="k1", enabled=False), KeyRotation(alias="alias/on", key_id="k2", enabled=True),
            KeyRotation(alias="alias/err", error="denied")]
    plan = j.decide(inv(log_retention_days=30), IDENT, groups, keys, fix=True)
    assert [(a.kind, a.resource, a.current, a.target) for a in plan.actions] == [
        ("logs-retention", "/none", "none", "30"), ("kms-rotation", "alias/off", "DISABLED", "ENABLED")]
    assert plan.unchanged == ["/set: retention 14 days", "alias/on: rotation ENABLED"]
    report_only = j.decide(inv(log_retention_days=30), IDENT, groups, keys, fix=False)
    assert report_only.actions == [] and any(n.startswith("fix=false: not planned") for n in report_only.notes)
    assert j.decide(inv(), IDENT, [], [], fix=True).actions == []


def test_fix_findings_text_and_which_checks_a_fix_replaces():
    r = Record(runbook="maintenance-audit", system="sys", resource="/g", kind="logs-retention", before="none", after="30", status="verified")
    assert j.fix_what(r) == "retention 30 days" and j.fix_what(r.model_copy(update={"kind": "kms-rotation"})) == "enable key rotation"
    assert j.fixed_check("logs-retention") and j.fixed_check("kms-rotation") and not j.fixed_check("s3-tmp-age")


# --- Lambda memory/timeout against the inventory's expected_* ------------------------------------------------------


def sized(**kw) -> System:
    fns = [LambdaFunction(name="big", expected_memory_mb=1024, expected_timeout_s=300), LambdaFunction(name="mem", expected_memory_mb=512),
           LambdaFunction(name="free"), LambdaFunction(name="queued", expected_timeout_s=60, sqs_source="jobs")]
    return System(name="sys", region="ap-northeast-2", lambda_functions=fns, **kw)


def info(name: str, memory: int | None = 1024, timeout: int | None = 300, **kw) -> FunctionInfo:
    return FunctionInfo(function=name, exists=True, memory_mb=memory, timeout_s=timeout, **kw)


def test_config_drift_names_both_values_exactly_at_the_expected_is_ok():
    spec = sized().lambda_functions[0]
    [f] = j.judge_config_drift(info("big"), spec)
    assert f.status is Status.OK and f.summary == "memory 1024 MB, timeout 300 s, as the inventory expects"
    [f] = j.judge_config_drift(info("big", memory=256), spec)
    assert f.status is Status.WARN and f.summary.startswith("memory 256 MB, expected 1024 MB: changed outside the inventory")
    [f] = j.judge_config_drift(info("big", memory=2048, timeout=30), spec)  # more than expected is drift too
    assert f.status is Status.WARN and f.summary.startswith("memory 2048 MB, expected 1024 MB; timeout 30 s, expected 300 s")
    assert f.value == 2 and "update the inventory's expected_* instead" in f.summary
    [f] = j.judge_config_drift(info("mem", memory=512, timeout=3), sized().lambda_functions[1])  # only memory is expected
    assert f.status is Status.OK and f.summary == "memory 512 MB, as the inventory expects"


def test_config_drift_unreadable_missing_and_undeclared():
    spec = sized().lambda_functions[0]
    [f] = j.judge_config_drift(FunctionInfo(function="big", error="GetFunctionConfiguration: access denied"), spec)
    assert f.status is Status.UNKNOWN and "access denied" in f.summary  # never OK unread
    [f] = j.judge_config_drift(info("big", memory=None), spec)
    assert f.status is Status.UNKNOWN and "no memory" in f.summary
    [f] = j.judge_config_drift(FunctionInfo(function="big"), spec)
    assert f.status is Status.WARN and "does not exist" in f.summary
    assert j.judge_config_drift(info("free", memory=128), sized().lambda_functions[2]) == []  # no expected_*: not judged
    assert j.judge_config_drift(info("stranger"), None) == []
    found = j.judge(sized(), {"lambda-config": [info("big", timeout=30), info("free")]}, NOW)
    assert [(f.check, f.resource, f.status) for f in found] == [("lambda-config-drift", "big", Status.WARN)]
    assert j.judge(sized(), {"lambda-config": RuntimeError("throttled")}, NOW)[0].status is Status.UNKNOWN


def test_plan_sets_drifted_memory_and_timeout_back_memory_first():
    functions = [info("big", memory=256, timeout=30), info("mem", memory=512), info("queued", timeout=30),
                 FunctionInfo(function="gone"), info("free", memory=128), FunctionInfo(function="err", error="denied")]
    plan = j.decide(sized(), IDENT, [], [], fix=True, functions=functions)
    assert [(a.kind, a.resource, a.current, a.target) for a in plan.actions] == [
        ("lambda-memory", "big", "256", "1024"), ("lambda-timeout", "big", "30", "300"), ("lambda-timeout", "queued", "30", "60")]
    assert all(a.iam_action == "lambda:UpdateFunctionConfiguration" and a.reversible for a in plan.actions)
    assert "the inventory expects memory 1024 MB (expected_memory_mb), configured memory 256 MB (undo: back to 256)" == plan.actions[0].evidence
    assert "fed by jobs" in plan.actions[2].evidence
    assert plan.unchanged == ["mem: memory 512 MB, as expected"]
    assert j.decide(sized(), IDENT, [], [], fix=True, functions=[info("big")]).actions == []  # the healthy twin
    report_only = j.decide(sized(), IDENT, [], [], fix=False, functions=functions)
    assert report_only.actions == [] and "big: lambda-memory 256 -> 1024" in report_only.notes[0]


def test_fix_text_of_a_size_and_the_drift_check_is_replaced():
    r = Record(runbook="maintenance-audit", system="sys", resource="big", kind="lambda-memory", before="256", after="1024", status="verified")
    assert j.fix_what(r) == "memory 1024 MB (was 256)"
    assert j.fix_what(r.model_copy(update={"kind": "lambda-timeout", "before": "30", "after": "300"})) == "timeout 300 s (was 30)"
    assert j.fixed_check("lambda-config-drift") and not j.fixed_check("lambda-runtime")


def test_the_kinds_each_read_needs_are_kinds_the_resolver_knows():
    from flows.maintenance_audit.judge import ALL_KINDS, CHECK_READS, READ_KINDS, kinds_for, reads_for
    from opsbook.resources import KINDS

    assert set(ALL_KINDS) == set(KINDS) and set(READ_KINDS) <= set(CHECK_READS.values())
    assert kinds_for(reads_for(["logs-retention"])) == {"lambda", "logs"}
    assert kinds_for(reads_for(["kms-rotation"])) == set()
    assert kinds_for(reads_for(["required-tags", "kms-rotation"])) == set(KINDS)
    assert reads_for([]) is None


def test_a_check_asked_for_that_the_inventory_configures_nothing_for_is_unknown_never_ok():
    """checks=kms-rotation on a system naming no KMS key: nothing was read, so UNKNOWN naming why; the scope finding lists
    only what ran (the healthy twin: a configured check asked for is in it)."""
    from flows.maintenance_audit.judge import scope_finding
    from opsbook.findings import Status
    from opsbook.inventory import load_system

    inv = load_system("todo-app")
    out = scope_finding(inv, ["kms-rotation"], {"logs", "runtimes"})
    assert [(f.check, f.status) for f in out] == [("kms-rotation", Status.UNKNOWN)] and "configures nothing" in out[0].summary
    both = scope_finding(inv, ["kms-rotation", "logs-retention"], {"logs", "runtimes"})
    assert [(f.check, f.status) for f in both] == [("audit-scope", Status.OK), ("kms-rotation", Status.UNKNOWN)]
    assert both[0].details == {"checks": ["logs-retention"], "not_run": ["lambda-runtime"]}
    assert scope_finding(inv, [], {"logs"}) == []
