"""opsbook/cli.py in this process: what the command line refuses, and what it prints, before any AWS call or server.

`opsbook run` as a user runs it (a subprocess against the sandbox and a local Prefect server, the exit code a monitor
reads, the pty prompt) is tests/e2e/test_cli.py; each case here would cost that file a process start (~2 s of imports)
for no more truth: these paths end in `main()` before anything is started.
"""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest

from opsbook import cli


def run_main(*argv: str) -> int:
    """cli.main as the console script calls it; argparse's own refusals leave through SystemExit (exit 3, not 2)."""
    try:
        return cli.main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture(autouse=True)
def prefect_points_nowhere():
    """The CLI checks that Prefect reads the server it chose (runner.import_prefect); in this process Prefect may
    already be imported by another test, so both are pointed at a port nothing listens on (a path that reached the
    server would fail loudly), and the environment the CLI writes to is put back afterwards."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = "http://127.0.0.1:9/api"
    with mock.patch.dict(os.environ, {"PREFECT_API_URL": url}), temporary_settings({PREFECT_API_URL: url}):
        yield


@pytest.fixture
def no_aws_reachable(monkeypatch):
    """Any AWS call would fail loudly: nothing listens on port 9."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "daily-health", "--system", "nope"], "known systems: hr-resource-optimization, leh, t-developer, todo-app"),
        (["run", "no-such-runbook", "--system", "leh"], "known runbooks: alarm-bridge, backup-verify, bill-shock-breaker"),
        (["run", "daily-health", "--system", "leh", "--yes"], "--yes only makes sense with --execute"),
        (["run", "daily-health", "--system", "leh", "--execute"], "read-only"),
        (["run", "daily-health"], "--system"),
        (["run", "daily-health", "--system", "leh", "--param", "novalue"], "KEY=VALUE"),
        (["run", "daily-health", "--system", "leh", "--fault", "leh:dlq-messages"], "--fault needs --sandbox"),
        (["run", "daily-health", "maintenance-audit", "--system", "leh", "--execute"], "a combined run only plans"),
        (["run", "daily-health", "daily-health", "--system", "leh"], "a runbook named twice"),
        (["run", "daily-health", "maintenance-audit", "--system", "leh", "--param", "nope=1"],
         "--param nope: none of daily-health, maintenance-audit has such a parameter"),
    ],
)
def test_usage_errors_exit_3_before_any_aws_call(capsys, no_aws_reachable, args, message):
    assert run_main(*args) == 3
    out = capsys.readouterr()
    assert out.out.startswith("UNKNOWN - opsbook: ") and message in out.out, out  # the monitor's first line says why
    assert "Traceback" not in out.out + out.err


@pytest.mark.parametrize(
    "runbook,param,message",
    [
        ("daily-health", "foo=1", "--param foo: daily-health has no such parameter; valid: "),
        ("emergency-rollback", "to_revision=abc", "--param to_revision='abc': "),
        ("emergency-rollback", "dry_run=false", "--param dry_run: set by opsbook itself"),
        ("emergency-rollback", "approver=mallory", "--param approver: set by opsbook itself"),
        ("maintenance-audit", "checks=logs-retention,log-retention", "--param checks='logs-retention,log-retention': Input should be"),
    ],
)
def test_bad_parameters_exit_3_with_one_json_object_and_no_aws_call(capsys, no_aws_reachable, runbook, param, message):
    """Checked against the flow's signature before any AWS call: no server, no credentials needed."""
    assert run_main("run", runbook, "--system", "todo-app", "--param", param, "--json") == 3
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.strip()]
    assert len(lines) == 1, out.out
    result = json.loads(lines[0])
    assert result["status"] == "UNKNOWN" and result["api_calls"] == 0 and message in result["error"], result
    assert "Traceback" not in out.err
    if "no such parameter" in message:
        assert "deadline_seconds" in result["error"]  # names the valid ones


def test_healthy_twin_valid_parameter_passes_validation():
    from opsbook import registry, runner

    flow = registry.get("emergency-rollback").load()
    assert runner.validate(flow, "emergency-rollback", {"system": "todo-app", "to_revision": "41"})["to_revision"] == 41
    audit = registry.get("maintenance-audit").load()
    assert runner.validate(audit, "maintenance-audit", {"system": "todo-app", "checks": "logs-retention, kms-rotation"})["checks"] == [
        "logs-retention", "kms-rotation"]


def test_run_help_lists_the_runbooks_parameters_and_exit_codes(capsys):
    assert run_main("run", "emergency-rollback", "--help") == 0
    text = capsys.readouterr().out
    assert "emergency-rollback (mutating)" in text and "to_revision" in text and "integer" in text
    assert "force " in text and "default false" in text
    for hidden in ("  system ", "  dry_run ", "  approval "):  # set by the CLI, not by --param
        assert hidden not in text
    assert "exit codes" in text and "3  UNKNOWN" in text
    assert run_main("--help") == 0
    assert "exit codes" in (top := capsys.readouterr().out) and "2  CRIT" in top
    assert run_main("run", "--help") == 0
    every = capsys.readouterr().out
    assert "daily-health" in every and "--sandbox" in every


def test_no_credentials_is_one_line_naming_the_sandbox_never_a_silent_switch(capsys, monkeypatch, tmp_path):
    """`opsbook run` goes to real AWS unless told otherwise; without credentials it says so and how to try the sandbox."""
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("OPSBOOK_HOME", str(tmp_path))
    assert run_main("run", "daily-health", "--system", "leh") == 3
    out = capsys.readouterr().out
    assert out.startswith("UNKNOWN - opsbook: error: no AWS credentials found") and "--sandbox" in out
    assert not (tmp_path / "prefect").exists()  # stopped before starting any server


def test_broken_inventory_fails_with_file_field_and_problem(capsys, tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: broken\nregion: us-east-1\ndynamodb_tables:\n  - {name: t, backup_requird: true}\n")
    assert run_main("run", "daily-health", "--system", str(p), "--json") == 3
    err = capsys.readouterr().err
    assert str(p) in err and "dynamodb_tables.0.backup_requird" in err and "unknown field" in err


def test_list_and_policy(capsys):
    assert run_main("list") == 0
    out = capsys.readouterr().out
    assert "daily-health" in out and "todo-app" in out
    assert run_main("policy", "daily-health") == 0
    policy = json.loads(capsys.readouterr().out)
    assert "logs:FilterLogEvents" in {a for s in policy["Statement"] for a in s["Action"]}


def test_sandbox_throttle_share_out_of_range_is_refused_before_anything_starts(capsys):
    assert run_main("sandbox", "--throttle-pct", "120") == 3
    assert "--throttle-pct must be between 0 and 100, not 120" in capsys.readouterr().out  # the one UNKNOWN line


def test_sandbox_throttle_share_reaches_the_sandbox_healthy_twin():
    with mock.patch("sandbox.cli.serve", return_value=0) as serve:
        assert run_main("sandbox", "--systems", "todo-app", "--throttle-pct", "20", "--throttle-seed", "7") == 0
    assert serve.call_args.kwargs["throttle"] == (20.0, 7)


def test_plain_parameters_are_stored_as_they_are_and_anything_else_goes_through_prefect() -> None:
    """opsbook.runner.plain_parameters: a runbook's parameters (strings, numbers, booleans, lists) skip Prefect's
    serializer (which imports FastAPI for it); a value that is not plain JSON still gets Prefect's treatment."""
    from datetime import datetime, timezone

    from opsbook import runner

    seen = []

    class FakeFlow:
        def serialize_parameters(self, parameters):
            seen.append(parameters)
            return {k: f"<{type(v).__name__}>" for k, v in parameters.items()}

    flow = runner.plain_parameters(FakeFlow())
    assert runner.plain_parameters(flow) is flow
    plain = {"system": "hr", "dry_run": True, "deadline_seconds": 20.5, "checks": ["logs", "kms"], "extra": {"a": [1, None]}}
    assert flow.serialize_parameters(plain) == plain and seen == []
    when = datetime(2026, 12, 4, tzinfo=timezone.utc)
    assert flow.serialize_parameters({"system": "hr", "at": when}) == {"system": "<str>", "at": "<datetime>"}
    assert seen == [{"system": "hr", "at": when}]


@pytest.mark.parametrize("env, param, checked, sandbox, runbook, started", [
    ({}, [], False, False, "daily-health", True),
    ({"OPSBOOK_EARLY_DISCOVERY": "off"}, [], False, False, "daily-health", False),
    ({}, ["checks=logs-retention"], False, False, "maintenance-audit", False),  # a parameter not checked yet: no call
    ({}, ["checks=logs-retention"], True, False, "maintenance-audit", True),
    ({}, [], False, True, "daily-health", False),  # the embedded sandbox is not up yet
    ({}, [], False, False, "restart-service", False),  # its discovery comes after acting, not first
    ({}, ["undo_run=0190f2c4-1b7e-7000-8000-000000000001"], True, False, "maintenance-audit", False),  # reads its records
    ({"refuse": "the OpenSearch domain is off this machine"}, [], False, False, "daily-health", False),  # loopback-only
])
def test_the_early_discovery_starts_only_when_nothing_left_can_refuse_the_run(monkeypatch, env, param, checked, sandbox, runbook,
                                                                              started):
    import argparse

    from opsbook import loopback, registry, resources

    seen = []
    monkeypatch.setattr(resources, "prefetch", lambda inv: seen.append(inv.name) or True)
    refusal = env.pop("refuse", None)
    monkeypatch.setattr(loopback, "preflight", lambda *a, **k: refusal)
    monkeypatch.delenv("OPSBOOK_EARLY_DISCOVERY", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    args = argparse.Namespace(param=param, sandbox=sandbox, help=False, system="hr-resource-optimization")
    assert cli.start_discovery_early([registry.get(runbook)], args, checked=checked) is started
    assert seen == (["hr-resource-optimization"] if started else [])


def test_a_runbook_that_may_discover_early_takes_no_required_parameter_but_system():
    """The early discovery of a run without --param starts before the flow is imported: safe only because nothing
    required can then be missing (a runbook with a required parameter must not be discovers_first)."""
    from opsbook import registry, runner

    for rb in registry.all_runbooks() if hasattr(registry, "all_runbooks") else registry._catalogue().values():
        if rb.discovers_first:
            required = {k for k, p in runner.parameters(rb.load()).items() if p["required"]}
            assert required == {"system"}, (rb.name, required)


def test_a_combined_run_refused_for_a_missing_parameter_made_no_call(capsys, no_aws_reachable, monkeypatch):
    """opsbook run daily-health reindex-case: reindex-case needs case_id; the early discovery must not have started."""
    from opsbook import loopback, resources

    started = []
    monkeypatch.setattr(resources, "prefetch", lambda inv: started.append(inv.name) or True)
    monkeypatch.setattr(loopback, "preflight", lambda *a, **k: None)  # nothing else would hold it back
    assert run_main("run", "daily-health", "reindex-case", "--system", "leh", "--json") == 3
    assert "case_id" in capsys.readouterr().out and started == []


def test_a_run_whose_ending_fails_still_exits_with_its_code_and_says_what_may_be_missing(monkeypatch, capsys):
    """end_now: the result is out; a flush that raises (a closed pipe, a dead server) neither turns into a traceback nor
    changes the exit code, and stderr says the run's logs may be incomplete."""
    import argparse

    from opsbook import runner

    exits = []
    monkeypatch.setattr(cli.os, "_exit", exits.append)
    monkeypatch.setattr(runner, "flush_prefect", lambda timeout=0: (_ for _ in ()).throw(RuntimeError("server gone")))
    monkeypatch.setitem(__import__("sys").modules, "prefect", __import__("sys").modules.get("prefect") or object())
    cli.end_now(argparse.Namespace(fn=cli.cmd_run), 2)
    assert exits == [2] and "ending cleanly failed (RuntimeError: server gone)" in capsys.readouterr().err
    cli.end_now(argparse.Namespace(fn=cli.cmd_list), 0)  # other commands end as Python ends them
    assert exits == [2]
