"""Run reports: the result every runbook returns, its artifacts and its JSON form."""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from typing import Any, ClassVar

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.findings import Finding, Status, overall
from opsbook.iam import aws_task
from opsbook.inventory import System
from opsbook.masking import mask, mask_obj
from opsbook.unfinished import explain

ICON = {Status.OK: "✅", Status.WARN: "⚠️", Status.CRIT: "🔴", Status.UNKNOWN: "❔"}
ORDER = {Status.CRIT: 0, Status.WARN: 1, Status.UNKNOWN: 2, Status.OK: 3}


class RunReport(BaseModel):
    opsbook_inert: ClassVar[bool] = True  # holds no Prefect future: task arguments pass it unwalked (opsbook.iam)
    runbook: str
    system: str
    status: Status
    findings: list[Finding]
    api_calls: int
    api_calls_by_operation: dict[str, int] = Field(default_factory=dict)
    api_retries: int = 0  # of api_calls, the attempts botocore sent again (throttled, or a transient error)
    api_retries_by_operation: dict[str, int] = Field(default_factory=dict)
    duration_s: float = 0.0
    region: str = ""
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    notification: dict[str, Any] | None = None
    undeclared_iam_actions: list[str] = Field(default_factory=list)
    # mutating runbooks
    outcome: str | None = None
    dry_run: bool | None = None
    plan: dict[str, Any] | None = None
    approval: dict[str, Any] | None = None
    records: list[dict[str, Any]] = Field(default_factory=list)

    def count_calls(self, calls: Any, started: float) -> None:
        """The run's AWS calls (an ``opsbook.aws.CallLog``): every attempt, by operation, the retries among them, undeclared
        IAM actions; and its duration."""
        self.api_calls = calls.total
        self.api_calls_by_operation = calls.by_operation()
        self.api_retries = calls.retries_total
        self.api_retries_by_operation = calls.retries_by_operation()
        self.undeclared_iam_actions = sorted(calls.undeclared)
        self.duration_s = round(time.monotonic() - started, 2)

    def counts(self) -> dict[str, int]:
        c = Counter(f.status.value for f in self.findings)
        return {s.value: c.get(s.value, 0) for s in Status}

    def headline(self) -> str:
        c = self.counts()
        outcome = f" [{self.outcome}]" if self.outcome else ""
        return (f"{self.runbook} {self.system}: {self.status.value}{outcome} "
                f"({c['CRIT']} CRIT, {c['WARN']} WARN, {c['UNKNOWN']} UNKNOWN, {c['OK']} OK; "
                f"{self.api_calls} API calls{retries_note(self)}, {self.duration_s:.1f} s)")

    def public(self) -> dict[str, Any]:
        """The JSON result: every text that can carry data read from AWS is masked
        (findings, notification, records, the plan and the approval's reason); identifiers and URLs that opsbook made are not."""
        out = self.model_dump(mode="json")
        for key in ("findings", "notification", "records", "plan", "approval"):
            out[key] = mask_obj(out[key])
        return out


def retries_note(report: RunReport) -> str:
    """" (12 of them retries)" after the count of API calls, when botocore sent any call again."""
    return f" ({report.api_retries} of them retries)" if report.api_retries else ""


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (ORDER[f.status], f.check, f.resource))


def finding_lines(findings: list[Finding]) -> list[str]:
    """Findings as a markdown list, status and reason first, then the check and the resource.

    Not a table: the Prefect UI neither wraps nor widens a table's cells (``.p-table-data``:
    ``white-space: nowrap; overflow: hidden``, in markdown and table artifacts alike), so the
    reason for a CRIT, the longest cell, was cut off; a list item wraps and keeps it whole."""
    return [f"- {ICON[f.status]} **{f.status.value}**: {' '.join(mask(f.summary).split())} · {f.check} `{f.resource}`"
            for f in findings]


def markdown(report: RunReport) -> str:
    c = report.counts()
    lines = [
        f"# {ICON[report.status]} {report.runbook} · {report.system}: **{report.status.value}**",
        "",
        f"{c['CRIT']} CRIT · {c['WARN']} WARN · {c['UNKNOWN']} UNKNOWN · {c['OK']} OK — "
        f"{len(report.findings)} findings, {report.api_calls} AWS API calls{retries_note(report)}, {report.duration_s:.1f} s, region {report.region}",
        "",
    ]
    bad = [f for f in sort_findings(report.findings) if f.status is not Status.OK]
    lines += finding_lines(bad) if bad else ["Everything checked is OK."]
    checks = Counter(f.check for f in report.findings)
    lines += ["", "Checks run: " + ", ".join(f"{k} ({v})" for k, v in sorted(checks.items()))]
    if report.notification and report.notification.get("kind"):
        n = report.notification
        lines += ["", f"Notification: {n['kind']} sent to {', '.join(n['sent']) or 'nobody'}" + (f"; errors: {'; '.join(n['errors'])}" if n["errors"] else "")]
    if report.notification and report.notification.get("paging"):
        lines += ["", paging_line(report.notification["paging"])]
    lines += ["", "Every finding is in the table artifact with the same key plus `-findings`."]
    return "\n".join(lines)


def paging_line(p: dict[str, Any]) -> str:
    """What the paging channel got this run (opsbook.paging.page_findings' result)."""
    done = [f"triggered {', '.join(p['triggered'])}"] if p.get("triggered") else []
    done += [f"resolved {', '.join(p['resolved'])}"] if p.get("resolved") else []
    text = f"Paging ({p.get('channel', 'channel')}): " + ("; ".join(done) or f"nothing new ({p.get('open', 0)} incident(s) open)")
    return text + (f"; errors: {'; '.join(p['errors'])}" if p.get("errors") else "")


def findings_section(report: RunReport, skip: tuple[str, ...] = ()) -> list[str]:
    """The counts line and every finding (but the ``skip`` checks) as ``finding_lines``, in the report's order."""
    c = report.counts()
    lines = [f"{c['CRIT']} CRIT · {c['WARN']} WARN · {c['UNKNOWN']} UNKNOWN · {c['OK']} OK — {len(report.findings)} findings, "
             f"{report.api_calls} AWS API calls{retries_note(report)}, {report.duration_s:.1f} s, region {report.region}", ""]
    return lines + finding_lines([f for f in report.findings if f.check not in skip])


def finding_rows(findings: list[Finding]) -> list[dict[str, Any]]:
    """The rows of a findings table artifact, masked: status and summary first (the UI cuts long cells off at the
    right edge; the report artifact has each summary whole)."""
    return [mask_obj({"status": f.status.value, "summary": f.summary, "check": f.check, "resource": f.resource, "value": f.value})
            for f in findings]


# The reports this process published, by flow run id (the last few): a run's report survives Prefect losing it on the way
# back. That happens when the final state update outlives the API's request timeout (the server's database locked by
# other writers): the client retries, the server already holds the final state and answers with its own copy, which
# carries no data. The run finished; only its result went missing in transit.
_PUBLISHED: OrderedDict[str, RunReport] = OrderedDict()
_PUBLISHED_LOCK = threading.Lock()
_KEEP = 64


def _remember(report: RunReport) -> None:
    if report.flow_run_id:
        with _PUBLISHED_LOCK:
            _PUBLISHED[report.flow_run_id] = report
            _PUBLISHED.move_to_end(report.flow_run_id)
            while len(_PUBLISHED) > _KEEP:
                _PUBLISHED.popitem(last=False)


def result_of(state: Any) -> Any:
    """A finished flow run's result (its RunReport, or why there is none): the state's data, else the report this process
    published for that run (see ``_PUBLISHED``) when the state is the one the run ended with after publishing it:
    Completed, or Failed with the report's headline (CRIT). A run that failed otherwise after publishing keeps its error;
    one that ended on Prefect's "Run is in PENDING state" (a step it needed failed) names that step and its error."""
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - a state without data raises MissingResult; the report may still be here
        result = exc
    if isinstance(result, RunReport):
        return result
    run_id = getattr(state.state_details, "flow_run_id", None)
    with _PUBLISHED_LOCK:
        report = _PUBLISHED.get(str(run_id)) if run_id else None
    if report is not None and (state.is_completed() or state.message == report.headline()):
        return report
    return explain(result, run_id) if isinstance(result, BaseException) else result  # never "Run is in PENDING state"


def publish_artifacts(report: RunReport, md: str) -> RunReport:
    """The report's markdown artifact and its findings table (``KEY-findings``), masked."""
    _remember(report)
    key = artifact_key(report.runbook, report.system)
    create_markdown_artifact(key=key, markdown=md, description=mask(report.headline()))
    rows = finding_rows(sort_findings(report.findings))
    create_table_artifact(key=f"{key}-findings", table=rows, description=f"{len(rows)} findings; each summary whole in {key}")
    return report


def artifact_key(runbook: str, system: str) -> str:
    return f"{runbook}-{system}".lower().replace("_", "-")


@aws_task(iam=[], name="publish-report", read_only=False, cache_policy=NO_CACHE)
def publish_report(report: RunReport) -> RunReport:
    return publish_artifacts(report, markdown(report))


def run_url() -> str | None:
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url
    return f"{ui}/runs/flow-run/{flow_run.get_id()}" if ui and flow_run.get_id() else None


@aws_task(iam=[], name="judge", read_only=False, cache_policy=NO_CACHE)
def judge(runbook: str, system: System, findings: list[Finding], calls: aws.CallLog, started: float) -> RunReport:
    return RunReport(
        runbook=runbook, system=system.name, status=overall(findings), findings=findings, region=system.region,
        api_calls=calls.total, api_calls_by_operation=calls.by_operation(), duration_s=round(time.monotonic() - started, 2),
        api_retries=calls.retries_total, api_retries_by_operation=calls.retries_by_operation(),
        flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None, flow_run_url=run_url(),
        undeclared_iam_actions=sorted(calls.undeclared),
    )


def finish_read_only(runbook: str, inv: System, findings: list[Finding], calls: aws.CallLog, started: float, publish: Any,
                     logger: Any) -> Any:
    """A read-only runbook's last steps: the report (the ``judge`` task), its artifacts (``publish``, the runbook's own
    task), a log line; CRIT ends the run Failed with the report as its data."""
    from prefect.states import Failed

    report = judge.submit(runbook, inv, findings, calls, started).result()
    report.count_calls(calls, started)
    publish.submit(report).result()
    logger.info("%s | %s", report.headline(), mask(report.findings[0].summary) if report.findings else "")
    return Failed(message=report.headline(), data=report) if report.status is Status.CRIT else report
