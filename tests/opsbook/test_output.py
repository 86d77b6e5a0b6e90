"""The shell's output: Nagios summary first, plain text unless a colour terminal."""

from __future__ import annotations

import io

from opsbook import output
from opsbook.findings import Finding, Status
from opsbook.report import RunReport


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def report(*findings: Finding, **kw) -> RunReport:
    from opsbook.findings import overall

    return RunReport(runbook="daily-health", system="todo-app", status=overall(list(findings)), findings=list(findings),
                     api_calls=12, duration_s=1.234, **kw)


OK = Finding(check="dynamodb-status", resource="sessions", status=Status.OK, summary="ACTIVE")
CRIT = Finding(check="dynamodb-status", resource="todos", status=Status.CRIT, summary="table not found")
WARN = Finding(check="dlq-depth", resource="dlq", status=Status.WARN, summary="4 messages waiting")


def test_first_line_is_the_nagios_summary_with_perfdata():
    r = report(OK, CRIT, WARN)
    line = output.nagios_line(r)
    assert line == ("CRIT - daily-health todo-app: todos: table not found | api_calls=12 duration_s=1.23 "
                    "crit=1 warn=1 unknown=0 ok=1")
    out = io.StringIO()
    output.print_report(r, rich=False, out=out)
    assert out.getvalue().splitlines()[0] == line


def test_healthy_twin_says_every_check_passed():
    assert output.nagios_line(report(OK)).startswith("OK - daily-health todo-app: every check passed | ")


def test_several_at_the_worst_status_are_counted_and_a_long_reason_stays_one_line():
    long = Finding(check="x", resource="r", status=Status.CRIT, summary="because\n" + "z" * 500)
    line = output.nagios_line(report(long, CRIT))
    assert "\n" not in line and "(+1 more CRIT)" in line and len(line.split(" | ")[0]) < 260


def test_a_dry_run_plan_says_nothing_changed():
    r = report(OK, outcome="planned", dry_run=True, plan={"actions": [{"resource": "svc", "current": "3", "target": "2",
                                                                        "iam_action": "ecs:UpdateService", "evidence": ""}],
                                                          "unchanged": [], "cannot": [], "notes": []})
    assert "[planned]: 1 change(s) planned, nothing changed (dry run" in output.nagios_line(r)


def test_colour_only_on_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert output.fancy(Tty()) is True
    assert output.fancy(io.StringIO()) is False  # piped
    assert output.fancy(Tty(), plain=True) is False  # --plain
    monkeypatch.setenv("NO_COLOR", "")  # any value, even empty, per no-color.org
    assert output.fancy(Tty()) is False
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert output.fancy(Tty()) is False


def test_plain_output_has_no_emoji_or_escape_codes_and_rich_has_both():
    plain, rich = io.StringIO(), io.StringIO()
    output.print_report(report(OK, CRIT, WARN), rich=False, out=plain)
    output.print_report(report(OK, CRIT, WARN), rich=True, out=rich)
    assert "\033[" not in plain.getvalue() and "🔴" not in plain.getvalue()
    assert "\033[31m" in rich.getvalue() and "🔴" in rich.getvalue()


def test_error_line_for_monitors():
    assert output.error_line("error: --param foo: no such parameter") == \
        "UNKNOWN - opsbook: error: --param foo: no such parameter | api_calls=0"


def test_a_pipe_in_a_finding_cannot_start_the_perfdata():
    piped = Finding(check="recent-errors", resource="fn", status=Status.CRIT, summary="KeyError | ValueError shapes")
    line = output.nagios_line(report(piped))
    assert line.count(" | ") == 1 and line.split(" | ")[1].startswith("api_calls=") and "KeyError / ValueError" in line


def test_secrets_in_an_error_are_masked_for_monitors():
    assert "AKIAIOSFODNN7EXAMPLE" not in output.error_line("boto said: key AKIAIOSFODNN7EXAMPLE refused")
