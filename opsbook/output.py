"""What `opsbook run` prints on the shell.

The first line on stdout is the Nagios plugin summary that monitors read
(``STATUS - text | perfdata``), then the plan, the records and every finding
that is not OK, one a line. Colour and emoji only on a terminal without
``NO_COLOR`` (https://no-color.org) and without ``--plain``; piped output is
plain text. Everything shown is masked as the JSON result is.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from opsbook.findings import Status
from opsbook.masking import mask

COLOUR = {Status.OK: "32", Status.WARN: "33", Status.CRIT: "31", Status.UNKNOWN: "35"}
REASON_MAX = 160


def fancy(stream: TextIO = sys.stdout, plain: bool = False) -> bool:
    """Colour and emoji: a terminal, no NO_COLOR (any value), no TERM=dumb, no --plain."""
    return not plain and stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def status_word(status: Status, rich: bool) -> str:
    from opsbook.report import ICON

    if not rich:
        return f"{status.value:7}"
    return f"{ICON[status]} \033[{COLOUR[status]}m{status.value:7}\033[0m"


def _one_line(text: str, limit: int = REASON_MAX) -> str:
    """One line for a monitor: no line breaks, no '|' (what follows it is perfdata), at most ``limit`` characters."""
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reason(report: Any) -> str:
    """Why the run has its status, in a few words: the worst finding, or what a mutating run did."""
    from opsbook.report import sort_findings  # here, not at the top: an error line must not wait for Prefect's import

    worst = [f for f in sort_findings(report.findings) if f.status is report.status and f.status is not Status.OK]
    if worst:
        more = f" (+{len(worst) - 1} more {report.status.value})" if len(worst) > 1 else ""
        return _one_line(mask(f"{worst[0].resource}: {worst[0].summary}")) + more
    if report.plan is not None and report.dry_run and report.plan.get("actions"):
        return f"{len(report.plan['actions'])} change(s) planned, nothing changed (dry run: add --execute to act)"
    if report.records:
        return f"{len(report.records)} change(s) recorded"
    return "every check passed" if report.findings else "nothing was checked"


def perfdata(report: Any) -> str:
    c = report.counts()
    retries = f"api_retries={report.api_retries} " if getattr(report, "api_retries", 0) else ""  # only when there were any
    return (f"api_calls={report.api_calls} {retries}duration_s={report.duration_s:.2f} "
            f"crit={c['CRIT']} warn={c['WARN']} unknown={c['UNKNOWN']} ok={c['OK']}")


def nagios_line(report: Any) -> str:
    """``CRIT - daily-health todo-app: todos: table not found | api_calls=10 duration_s=0.84 crit=1 warn=0 unknown=0 ok=9``"""
    outcome = f" [{report.outcome}]" if report.outcome else ""
    return f"{report.status.value} - {report.runbook} {report.system}{outcome}: {reason(report)} | {perfdata(report)}"


def error_line(message: str) -> str:
    """A run that could not run as asked, for a monitor: UNKNOWN, the reason, zero calls."""
    return f"UNKNOWN - opsbook: {_one_line(mask(message), 400)} | api_calls=0"


def print_report(report: Any, rich: bool, out: TextIO = sys.stdout) -> None:
    from opsbook.report import sort_findings

    print(nagios_line(report), file=out)
    if report.plan is not None:
        plan = report.plan
        print(f"plan ({'dry run' if report.dry_run else 'executed'}):", file=out)
        for a in plan["actions"]:
            guess = "  [GUESS]" if a.get("guess") else ""
            print(mask(f"  {a['resource']}: {a['current']} -> {a['target']}  [{a['iam_action']}]{guess} {a['evidence']}").rstrip(), file=out)
        for label, key in (("unchanged", "unchanged"), ("CANNOT", "cannot"), ("note", "notes")):
            for item in plan.get(key, []):
                print(mask(f"  {label}: {item}"), file=out)
        if report.dry_run and plan["actions"]:
            print("  (dry run: nothing changed; add --execute to act)", file=out)
    for r in report.records:
        print(mask(f"  {r['status']:13} {r['resource']}: {r['before']} -> {r['after']} {r['detail']}").rstrip(), file=out)
    bad = [f for f in sort_findings(report.findings) if f.status is not Status.OK]
    width = max([len(f.check) for f in bad] + [10])
    for f in bad:
        print(f"  {status_word(f.status, rich)} {f.check:{width}} {mask(f.resource)}: {mask(f.summary)}", file=out)
    c = report.counts()
    print(f"{c['CRIT']} CRIT, {c['WARN']} WARN, {c['UNKNOWN']} UNKNOWN, {c['OK']} OK; "
          f"{report.api_calls} AWS API calls" + (f" ({report.api_retries} of them retries)" if getattr(report, "api_retries", 0) else "")
          + f", {report.duration_s:.1f} s", file=out)
    if report.flow_run_url:
        print(f"run in the Prefect UI: {report.flow_run_url}", file=out)
