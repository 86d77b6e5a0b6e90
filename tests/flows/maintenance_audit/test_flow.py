"""maintenance-audit against the sandbox: each check flags its scenario and passes its look-alike; retention is planned on a
dry run, applied with approval, read back and not planned again; the calls made are covered by the runbook's policy."""

from __future__ import annotations

from datetime import datetime, timezone

import boto3
import pytest

from flows.maintenance_audit import flow as ma
from flows.maintenance_audit.flow import maintenance_audit
from flows.maintenance_audit.judge import judge
from opsbook import aws
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.mutation.core import ShellApproval, shell_approval
from opsbook.report import RunReport
from opsbook.resources import resolve
from sandbox import audits as sa
from sandbox.backups import create_rds_instance
from tasks.acm import read_certificates
from tasks.awslambda import read_runtimes
from tasks.ec2 import read_security_groups
from tasks.ecr import read_image_scans
from tasks.iam_roles import read_iam_roles
from tasks.kms import read_kms_rotation
from tasks.logs import read_log_retention, sample_audit_logs
from tasks.s3 import read_tmp_prefixes
from tasks.secretsmanager import read_secret_rotation
from tasks.tagging import resource_tags

pytestmark = pytest.mark.usefixtures("prefect_harness")

HR, TD, LEH = "hr-resource-optimization", "t-developer", "leh"


def run(system: str, approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = maintenance_audit(system=system, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def judged(inv, name: str, task, *args) -> dict[tuple[str, str], tuple[str, str]]:
    """One collector (IAM still checked) and its judge, without a flow run: (check, resource) -> (status, summary)."""
    states = {name: task.fn(inv, *args)}
    return {(f.check, f.resource): (f.status.value, f.summary) for f in judge(inv, states, datetime.now(timezone.utc))}


def test_leh_collectors_retention_tmp_audit_sample_and_certificates(seeded, sandbox):
    """The collectors read the sandbox's shapes right (the judging's edges are test_judge's)."""
    from opsbook.inventory import Audit

    leh = seeded(LEH)
    sa.log_group(sandbox, leh, "/leh/audit", retention_days=3653, events=["x" * 1000])
    found = judged(leh, "logs", read_log_retention, resolve.fn(leh), aws.Deadline(30))
    status, text = found[("logs-retention", "/aws/lambda/leh-ai-worker")]
    assert status == "WARN" and "no retention" in text and "set retention to 30 days" in text
    status, text = found[("logs-retention", "/leh/audit")]
    assert status == "OK" and "never shortened" in text  # audit group keeps its long retention

    res = "leh-evidence-uploads/tmp/"
    sa.tmp_objects(sandbox, leh, count=2, days_old=30)
    found = judged(leh, "tmp", read_tmp_prefixes, aws.Deadline(30))
    assert found[("s3-tmp-lifecycle", res)][0] == "WARN" and "put-bucket-lifecycle-configuration" in found[("s3-tmp-lifecycle", res)][1]
    status, text = found[("s3-tmp-age", res)]
    assert status == "WARN" and text.startswith("2 of 2 objects older than 7 days")

    sa.audit_events(sandbox, leh, ["rrn", "rrn-bad-date", "card", "card-bad-luhn", "password", "clean"])
    found = judged(leh, "audit-log", sample_audit_logs, aws.Deadline(30))
    status, text = found[("audit-log-pii", "/leh/audit")]
    assert status == "CRIT" and text.startswith("3 event(s) with card, rrn, secret"), text  # the look-alikes are not counted
    for value in ("900101-1234568", "4111 1111 1111 1111", "hunter2secret"):
        assert value not in text
    assert "audit-rrn-rrn-bad-date" in text  # where: the stream

    domains = ["leh.example.com", "old.leh.example.com", "soon.leh.example.com", "none.leh.example.com"]
    inv = leh.model_copy(update={"audit": Audit(**{**leh.audit.model_dump(), "certificate_domains": domains, "certificate_warn_days": 30})})
    sa.certificate(sandbox, inv, "old.leh.example.com", days_left=-3)
    sa.certificate(sandbox, inv, "soon.leh.example.com", days_left=10)
    sa.certificate(sandbox, inv, "leh.example.com", days_left=5)
    sa.certificate(sandbox, inv, "leh.example.com", days_left=200)  # the renewal supersedes the old one
    found = judged(inv, "certificates", read_certificates, aws.Deadline(30))
    assert {r: s for (c, r), (s, _) in found.items()} == {"old.leh.example.com": "CRIT", "soon.leh.example.com": "WARN",
                                                          "none.leh.example.com": "WARN", "leh.example.com": "OK"}
    assert "request-certificate" in found[("acm-certificate-expiry", "none.leh.example.com")][1]


def test_hr_collectors_retention_runtimes_roles_tags(seeded, sandbox):
    hr = seeded(HR)
    sa.log_group(sandbox, hr, "/aws/lambda/ResumeParser", retention_days=365, events=["y" * 2048])
    sa.log_group(sandbox, hr, "/aws/lambda/TechTrendCollector", retention_days=14)
    found = judged(hr, "logs", read_log_retention, resolve.fn(hr), aws.Deadline(30))
    status, text = found[("logs-retention", "/aws/lambda/ResumeParser")]
    assert status == "WARN" and "would delete every event older than 30 days" in text and "KiB stored" in text
    assert found[("logs-retention", "/aws/lambda/TechTrendCollector")][0] == "OK"

    sa.function_runtime(sandbox, hr, "ResumeParser", "python3.8")
    found = judged(hr, "runtimes", read_runtimes, resolve.fn(hr), aws.Deadline(30))
    assert found[("lambda-runtime", "ResumeParser")][0] == "CRIT" and "deprecated on 2024-10-14" in found[("lambda-runtime", "ResumeParser")][1]
    assert found[("lambda-runtime", "AffinityScoreCalculator")][0] == "OK"  # python3.12

    sa.role(sandbox, hr, "Team2-old-role", used_days_ago=200)
    sa.role(sandbox, hr, "Team2-busy-role", used_days_ago=1)
    sa.role(sandbox, hr, "Team2-never-role")
    sa.role(sandbox, hr, "other-role", used_days_ago=500)  # no pattern match: not audited
    found = judged(hr, "iam", read_iam_roles, aws.Deadline(30))
    assert {r: s for (c, r), (s, _) in found.items()} == {"Team2-old-role": "WARN", "Team2-busy-role": "OK", "Team2-never-role": "WARN"}

    boto3.client("s3", region_name=hr.region, endpoint_url=sandbox.endpoint).delete_bucket_tagging(Bucket="hr-frontend-bucket-team2")
    found = {(f.check, f.resource): (f.status.value, f.summary) for f in judge(hr, {"tags": resource_tags(resolve.fn(hr, tags=True))}, datetime.now(timezone.utc))}
    bad = sorted(r for (c, r), (s, _) in found.items() if s != "OK")
    assert bad == ["s3:hr-frontend-bucket-team2"] and len(found) == 8 + 6 + 4


def test_td_collectors_kms_secrets_security_groups_image_scans(seeded, sandbox):
    from opsbook.inventory import Audit

    td = seeded(TD)
    repos = ["td-crit", "td-high", "td-clean", "td-unscanned", "td-missing"]
    inv = td.model_copy(update={"audit": Audit(**{**td.audit.model_dump(), "kms_key_aliases": ["alias/td-data", "alias/td-logs"],
                                                  "ecr_repositories": repos})})
    sa.kms_key(sandbox, inv, "alias/td-data", rotation=False)
    sa.kms_key(sandbox, inv, "alias/td-logs", rotation=True)
    found = judged(inv, "kms", read_kms_rotation, aws.Deadline(30))
    assert found[("kms-rotation", "alias/td-data")][0] == "WARN" and found[("kms-rotation", "alias/td-logs")][0] == "OK"

    sa.secret(sandbox, td, "t-developer/production/api-keys", created_days_ago=200)
    found = judged(td, "secrets", read_secret_rotation, aws.Deadline(30))
    assert found[("secret-rotation", "t-developer/production/api-keys")][0] == "WARN"

    sa.security_group(sandbox, td, "t-developer-ssh", open_port=22)
    sa.security_group(sandbox, td, "t-developer-internal", open_port=None)
    found = judged(td, "security-groups", read_security_groups)
    by_name = {r.split(" ")[0]: s for (c, r), (s, _) in found.items()}
    assert by_name == {"t-developer-ssh": "CRIT", "t-developer-internal": "OK"}
    assert "from 0.0.0.0/0" in next(t for (c, r), (s, t) in found.items() if r.startswith("t-developer-ssh"))

    sa.ecr_image(sandbox, inv, "td-crit", counts={"CRITICAL": 2, "HIGH": 1})
    sa.ecr_image(sandbox, inv, "td-high", counts={"HIGH": 3, "MEDIUM": 4})
    sa.ecr_image(sandbox, inv, "td-clean", counts={"LOW": 1})
    sa.ecr_image(sandbox, inv, "td-unscanned", scan=False)
    found = judged(inv, "ecr-scans", read_image_scans, aws.Deadline(30))
    status, text = found[("ecr-image-scan", "td-crit")]
    assert status == "CRIT" and "CRITICAL 2" in text and "HIGH 1" in text, text
    assert found[("ecr-image-scan", "td-high")][0] == "WARN"
    assert found[("ecr-image-scan", "td-clean")] == ("OK", "latest image latest: no CRITICAL or HIGH findings (LOW 1)")
    status, text = found[("ecr-image-scan", "td-unscanned")]
    assert status == "UNKNOWN" and "never been scanned" in text, text  # never OK without data
    status, text = found[("ecr-image-scan", "td-missing")]
    assert status == "WARN" and "does not exist" in text, text


def test_dry_run_plans_approval_applies_and_a_second_run_plans_nothing(seeded, sandbox):
    leh = seeded(LEH)
    create_rds_instance(sandbox, leh, "leh-db")
    sa.tmp_rule(sandbox, leh)
    sa.log_group(sandbox, leh, "/leh/audit", retention_days=3653)
    sa.certificate(sandbox, leh, "leh.example.com", days_left=200)
    logs = boto3.client("logs", region_name=leh.region, endpoint_url=sandbox.endpoint)

    def retention():
        return {g["logGroupName"]: g.get("retentionInDays") for g in logs.describe_log_groups()["logGroups"]}

    dry = run(LEH)
    assert dry.outcome == "planned" and dry.records == []
    assert [(a["kind"], a["resource"], a["current"], a["target"]) for a in dry.plan["actions"]] == [
        ("logs-retention", "/aws/lambda/leh-ai-worker", "none", "30")]
    assert retention()["/aws/lambda/leh-ai-worker"] is None  # a dry run changes nothing
    assert {f.check for f in dry.findings} >= {"logs-retention", "s3-tmp-lifecycle", "s3-tmp-age", "audit-log-pii", "lambda-runtime", "rds-snapshot"}

    no_fix = run(LEH, fix=False)
    assert no_fix.plan["actions"] == [] and any(n.startswith("fix=false: not planned") for n in no_fix.plan["notes"])

    done = run(LEH, dry_run=False, approval="yes", approver="kim")
    assert done.outcome == "done" and done.status is Status.OK, [(f.check, f.resource, f.summary) for f in done.findings if f.status is not Status.OK]
    assert [(r["resource"], r["kind"], r["status"]) for r in done.records] == [("/aws/lambda/leh-ai-worker", "logs-retention", "verified")]
    assert retention() == {"/aws/lambda/leh-ai-worker": 30, "/leh/audit": 3653}
    policy = set(policy_for(ma.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in done.api_calls_by_operation} - {None}
    assert {"logs:PutRetentionPolicy", "logs:FilterLogEvents", "s3:GetLifecycleConfiguration"} <= used <= policy, used - policy
    assert done.undeclared_iam_actions == []

    again = run(LEH, dry_run=False, approval="yes")
    assert again.outcome == "nothing-to-do" and again.plan["actions"] == []


def test_ecr_clean_image_in_a_flow_run_is_not_flagged_and_iam_covered(seeded, sandbox):
    td = seeded(TD)
    repo = td.audit.ecr_repositories[0]
    sa.ecr_image(sandbox, td, repo, tag="v1", counts={"MEDIUM": 1})
    report = run(TD)
    found = {(f.check, f.resource): f for f in report.findings}
    assert found[("ecr-image-scan", repo)].status is Status.OK, found[("ecr-image-scan", repo)].summary
    policy = set(policy_for(ma.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert {"ecr:DescribeImages", "ecr:DescribeImageScanFindings"} <= used <= policy, used - policy
    assert report.undeclared_iam_actions == []


def test_lambda_memory_timeout_drift_dry_run_plans_approval_fixes_undo_puts_back_and_the_twins_are_left_alone(seeded, sandbox):
    hr = seeded(HR)  # seeded as the inventory expects (ResumeParser 1024 MB / 300 s, QuantitativeAnalysis 512 MB / 120 s)
    sa.function_config(sandbox, hr, "ResumeParser", memory_mb=256, timeout_s=30)
    sa.function_config(sandbox, hr, "QuantitativeAnalysis", timeout_s=60)
    lam = boto3.client("lambda", region_name=hr.region, endpoint_url=sandbox.endpoint)

    def sizes(fn):
        c = lam.get_function_configuration(FunctionName=fn)
        return c["MemorySize"], c["Timeout"]

    def sized(report):
        return [(a["kind"], a["resource"], a["current"], a["target"]) for a in report.plan["actions"] if a["kind"].startswith("lambda-")]

    dry = run(HR)
    drift = {f.resource: f for f in dry.findings if f.check == "lambda-config-drift"}
    assert len(drift) == 8 and drift["ResumeParser"].status is Status.WARN
    assert drift["ResumeParser"].summary.startswith("memory 256 MB, expected 1024 MB; timeout 30 s, expected 300 s")
    assert drift["QuantitativeAnalysis"].summary.startswith("timeout 60 s, expected 120 s")
    twins = [f for r, f in drift.items() if r not in ("ResumeParser", "QuantitativeAnalysis")]
    assert all(f.status is Status.OK and f.summary.endswith("as the inventory expects") for f in twins)
    assert sized(dry) == [("lambda-memory", "ResumeParser", "256", "1024"), ("lambda-timeout", "ResumeParser", "30", "300"),
                          ("lambda-timeout", "QuantitativeAnalysis", "60", "120")]
    assert sizes("ResumeParser") == (256, 30) and dry.records == []  # a dry run changes nothing

    done = run(HR, dry_run=False, approval="yes", approver="kim")
    assert done.outcome == "done", [(f.check, f.resource, f.summary) for f in done.findings if f.status is not Status.OK]
    assert sizes("ResumeParser") == (1024, 300) and sizes("QuantitativeAnalysis") == (512, 120)
    assert [(r["resource"], r["kind"], r["before"], r["after"], r["status"]) for r in done.records if r["kind"].startswith("lambda-")] == [
        ("ResumeParser", "lambda-memory", "256", "1024", "verified"), ("ResumeParser", "lambda-timeout", "30", "300", "verified"),
        ("QuantitativeAnalysis", "lambda-timeout", "60", "120", "verified")]
    after = [f for f in done.findings if f.check == "lambda-config-drift"]
    assert len(after) == 8 and all(f.status is Status.OK for f in after)  # re-read after the fix
    fixes = sorted(f.summary for f in done.findings if f.check == "maintenance-fix" and f.resource == "ResumeParser")
    assert fixes[0].startswith("memory 1024 MB (was 256): verified") and fixes[1].startswith("timeout 300 s (was 30): verified"), fixes
    policy = set(policy_for(ma.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in done.api_calls_by_operation} - {None}
    assert "lambda:UpdateFunctionConfiguration" in used and used <= policy, used - policy
    assert done.undeclared_iam_actions == []

    again = run(HR)
    assert sized(again) == []  # fixed: nothing planned

    undo = run(HR, dry_run=False, approval="yes", undo_run=done.flow_run_id)
    assert sizes("ResumeParser") == (256, 30) and sizes("QuantitativeAnalysis") == (512, 60)
    assert {(r["resource"], r["kind"], r["after"], r["status"]) for r in undo.records if r["kind"].startswith("lambda-")} == {
        ("ResumeParser", "lambda-memory", "256", "verified"), ("ResumeParser", "lambda-timeout", "30", "verified"),
        ("QuantitativeAnalysis", "lambda-timeout", "60", "verified")}
    assert undo.outcome == "done" and undo.undeclared_iam_actions == []


def test_checks_limits_the_reads_the_findings_and_the_plan_to_the_checks_asked_for(seeded, sandbox):
    """checks=[logs-retention]: only the log groups are read (no log scan, no S3, no Lambda, no RDS), only retention is
    judged and planned, and the run says which configured checks it left out; the twin asks for the S3 checks only."""
    leh = seeded(LEH)
    create_rds_instance(sandbox, leh, "leh-db")
    sa.tmp_rule(sandbox, leh)
    sa.log_group(sandbox, leh, "/leh/audit", retention_days=3653)
    whole = run(LEH)
    only = run(LEH, checks=["logs-retention"])
    assert {f.check for f in only.findings} == {"logs-retention", "audit-scope"}
    assert [f for f in only.findings if f.check == "logs-retention"] == [f for f in whole.findings if f.check == "logs-retention"]
    scope = next(f for f in only.findings if f.check == "audit-scope")
    assert scope.details["checks"] == ["logs-retention"] and {"lambda-runtime", "rds-snapshot", "s3-tmp-age", "audit-log-pii"} <= set(
        scope.details["not_run"]) and "logs-retention" not in scope.details["not_run"]
    assert [(a["kind"], a["resource"]) for a in only.plan["actions"]] == [("logs-retention", "/aws/lambda/leh-ai-worker")]
    # the named functions are looked up (their log groups are audited), the named tables, queues and buckets are not
    assert set(only.api_calls_by_operation) <= {"logs:DescribeLogGroups", "resourcegroupstaggingapi:GetResources", "sts:GetCallerIdentity",
                                                "lambda:GetFunction"}
    assert {"dynamodb:DescribeTable", "sqs:GetQueueUrl", "s3:GetBucketTagging"} <= set(whole.api_calls_by_operation)
    assert only.api_calls < whole.api_calls
    assert not any(f.check == "audit-scope" for f in whole.findings)  # the whole audit says nothing of a scope

    s3 = run(LEH, checks=["s3-tmp-lifecycle", "s3-tmp-age"])
    assert {f.check for f in s3.findings} == {"s3-tmp-lifecycle", "s3-tmp-age", "audit-scope"} and s3.plan["actions"] == []
    assert "logs:DescribeLogGroups" not in s3.api_calls_by_operation
