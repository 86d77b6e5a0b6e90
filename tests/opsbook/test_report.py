"""opsbook/report.py: the report artifacts keep each finding's reason readable in the Prefect UI."""

from __future__ import annotations

import uuid

from opsbook import report as report_module
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


def _report(run_id: str | None, status: Status = Status.CRIT) -> RunReport:
    return RunReport(runbook="daily-health", system="todo-app", status=status, api_calls=3, flow_run_id=run_id,
                     findings=[Finding(check="tables", resource="todo", status=status, summary="todo: missing")])


def test_a_report_prefect_lost_on_the_way_back_is_the_one_this_process_published():
    """The final state update outlived the API timeout (a locked database), the retry got the server's copy without
    data: the run's report is still the one it published, not 'did not finish'."""
    from prefect.states import Failed

    run_id = str(uuid.uuid4())
    published = _report(run_id)
    report_module._remember(published)
    lost = Failed(message=published.headline())
    lost.state_details.flow_run_id = uuid.UUID(run_id)
    assert report_module.result_of(lost) is published


def test_a_state_with_its_report_or_of_a_run_that_published_none_is_taken_as_it_is():
    from prefect.states import Completed, Failed

    kept = _report(str(uuid.uuid4()), Status.OK)
    assert report_module.result_of(Completed(data=kept)) is kept
    report_module._remember(_report(str(uuid.uuid4())))   # another run's report is never taken for this one
    crashed = Failed(message="boom", data=RuntimeError("boom"))
    crashed.state_details.flow_run_id = uuid.uuid4()
    result = report_module.result_of(crashed)
    assert isinstance(result, RuntimeError) and str(result) == "boom"


def test_a_run_that_failed_after_publishing_keeps_its_error():
    from prefect.states import Failed

    run_id = str(uuid.uuid4())
    report_module._remember(_report(run_id, Status.OK))
    crashed = Failed(message="notify task raised after the report was published")
    crashed.state_details.flow_run_id = uuid.UUID(run_id)
    result = report_module.result_of(crashed)
    assert not isinstance(result, RunReport) and "notify task raised" in str(result)


def test_only_the_last_reports_are_kept():
    ids = [str(uuid.uuid4()) for _ in range(report_module._KEEP + 5)]
    for run_id in ids:
        report_module._remember(_report(run_id))
    assert ids[0] not in report_module._PUBLISHED and ids[-1] in report_module._PUBLISHED
    assert len(report_module._PUBLISHED) == report_module._KEEP
