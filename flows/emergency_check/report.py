"""emergency-check's report: the verdict first, then the findings by severity (markdown and table artifacts)."""

from __future__ import annotations

from collections import Counter

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.emergency_check.judge import TOP_CHECK, VERDICT
from opsbook.findings import Finding, Status
from opsbook.masking import mask
from opsbook.report import (
    ICON,
    RunReport,
    artifact_key,
    finding_lines,
    finding_rows,
    sort_findings,
)


def ordered(findings: list[Finding]) -> list[Finding]:
    """The verdict first, then the findings by severity (CRIT, WARN, UNKNOWN, OK)."""
    return [f for f in findings if f.check == VERDICT] + sort_findings([f for f in findings if f.check != VERDICT])


def emergency_markdown(report: RunReport) -> str:
    v = next((f for f in report.findings if f.check == VERDICT), None)
    c = report.counts()
    lines = [f"# {ICON[report.status]} {report.runbook} · {report.system}: **{v.details['priority'] if v else '?'}**", ""]
    if v is not None:
        lines += [f"**Incident priority {v.details['priority']}** — {mask(v.summary)}", ""]
        for r in v.details["reasons"][:10]:
            lines.append(f"- {mask(r)}")
        lines.append("")
    lines += top_error_lines(report)
    lines += [f"{c['CRIT']} CRIT · {c['WARN']} WARN · {c['UNKNOWN']} UNKNOWN · {c['OK']} OK — {len(report.findings)} findings, "
              f"{report.api_calls} AWS API calls, {report.duration_s:.1f} s, region {report.region}", ""]
    bad = [f for f in ordered(report.findings) if f.status is not Status.OK and f.check != VERDICT]
    lines += finding_lines(bad) if bad else ["Everything checked is OK."]
    checks = Counter(f.check for f in report.findings)
    lines += ["", "Checks run: " + ", ".join(f"{k} ({n})" for k, n in sorted(checks.items()))]
    return "\n".join(lines)


def top_error_lines(report: RunReport) -> list[str]:
    """The window's most frequent error messages over every log group (the ranking finding), as a list: none without errors."""
    f = next((x for x in report.findings if x.check == TOP_CHECK), None)
    if f is None or not f.details.get("top_messages"):
        return []
    d = f.details
    lines = [f"**Top error messages, last {d['window_minutes']} min** ({d['lines_ranked']} ERROR lines ranked, {d['messages']} distinct "
             f"messages, numbers and ids folded)", ""]
    if d.get("budget_reached"):
        lines += [f"{ICON[Status.UNKNOWN]} ranked the first {d['lines_ranked']} of ≥{d['lines_seen']} lines; the budget ({d['budget']} lines) "
                  f"was reached (cut: {', '.join(d['cut_groups'])})", ""]
    for i, t in enumerate(d["top_messages"], 1):
        lines.append(f"{i}. ×{t['count']} {' '.join(mask(t['message']).split())} — first {t['first_seen']}, last {t['last_seen']} · "
                     f"{', '.join(t['groups'])}")
    return lines + [""]


@task(name="publish-emergency-report", cache_policy=NO_CACHE)
def publish(report: RunReport) -> RunReport:
    key = artifact_key(report.runbook, report.system)
    create_markdown_artifact(key=key, markdown=emergency_markdown(report), description=mask(report.headline()))
    rows = finding_rows(ordered(report.findings))
    create_table_artifact(key=f"{key}-findings", table=rows, description=f"{len(rows)} findings; each summary whole in {key}")
    return report
