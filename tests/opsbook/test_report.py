"""opsbook/report.py: the report artifacts keep each finding's reason readable in the Prefect UI."""

from __future__ import annotations

from opsbook.findings import Finding, Status
from opsbook.report import RunReport, finding_rows, markdown

LONG = ("ECS service t-developer-cluster-production/t-developer-service-production runs 0 of 2 tasks: the last 3 tasks "
        "stopped with 'CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref "
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/t-developer:2025-06-01'; the previous deployment is INACTIVE; "
        "roll back with emergency-rollback or fix the image tag in the task definition; escalate to L2 within 15 minutes")


def report(*findings: Finding) -> RunReport:
    return RunReport(runbook="daily-health", system="t-developer", status=Status.CRIT, findings=list(findings), api_calls=3)


def test_a_long_crit_reason_stays_whole_and_comes_first():
    crit = Finding(check="ecs-service", resource="t-developer-cluster-production/t-developer-service-production",
                   status=Status.CRIT, summary=LONG)
    md = markdown(report(Finding(check="lambda-state", resource="f", status=Status.OK, summary="Active"), crit))
    [line] = [ln for ln in md.splitlines() if ln.startswith("- 🔴")]
    assert line.startswith("- 🔴 **CRIT**: " + LONG)  # status, then the whole reason, then where
    assert line.endswith("· ecs-service `t-developer-cluster-production/t-developer-service-production`")
    assert "|---" not in md  # a table cell is cut off in the UI (nowrap, overflow hidden): no table


def test_multi_line_reasons_stay_one_item_and_all_ok_says_so():
    md = markdown(report(Finding(check="c", resource="r", status=Status.WARN, summary="first line\nsecond line")))
    assert "- ⚠️ **WARN**: first line second line · c `r`" in md
    ok = markdown(report(Finding(check="c", resource="r", status=Status.OK, summary="fine")))
    assert "Everything checked is OK." in ok and "**OK**" not in ok


def test_the_table_artifact_has_status_and_summary_first():
    rows = finding_rows([Finding(check="c", resource="r", status=Status.CRIT, summary=LONG, value=1)])
    assert list(rows[0]) == ["status", "summary", "check", "resource", "value"] and rows[0]["summary"] == LONG
