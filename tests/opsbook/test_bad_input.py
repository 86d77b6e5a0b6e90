"""Bad inventories and bad parameters through `opsbook run` in this process (issue 19, item 4): each is refused with
exit 3, one line on stdout (the Nagios line, or with --json one JSON object) naming the field and the fix, and not one
AWS call. The fast case runs in `make test`; the battery of ~40 in `make chaos`."""

from __future__ import annotations

import json
import os
from unittest import mock

import pytest

from opsbook import aws, cli

BASE = "region: us-east-1\nlambda_functions: [{name: f}]\n"


@pytest.fixture(autouse=True)
def nothing_reachable():
    """Prefect and AWS both point at a port nothing listens on (a path that got that far would fail loudly, and count)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = "http://127.0.0.1:9/api"
    env = {"PREFECT_API_URL": url, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    with mock.patch.dict(os.environ, env), temporary_settings({PREFECT_API_URL: url}):
        yield


def refused(capsys, argv: list[str]) -> tuple[int, list[str], int]:
    """Exit code, the non-empty stdout lines and the AWS calls made while `opsbook` ran ``argv``."""
    before = aws.PROCESS_CALLS.total
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    out = capsys.readouterr().out
    return code, [line for line in out.splitlines() if line.strip()], aws.PROCESS_CALLS.total - before


def inventory(tmp_path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_bad_inventory_and_a_bad_parameter_exit_3_in_one_line_with_no_aws_call(capsys, tmp_path):
    bad = inventory(tmp_path, "shell", f"name: shell\n{BASE}dynamodb_tables: [{{name: 'x; rm -rf /'}}]\n")
    code, lines, calls = refused(capsys, ["run", "daily-health", "--system", bad])
    assert (code, len(lines), calls) == (3, 1, 0), lines
    assert lines[0].startswith("UNKNOWN - opsbook: ") and "field dynamodb_tables.0.name" in lines[0] and "use 3-255 of" in lines[0]
    code, lines, calls = refused(capsys, ["run", "scale-service", "--system", "t-developer", "--param", "desired=-3", "--json"])
    assert (code, len(lines), calls) == (3, 1, 0), lines
    said = json.loads(lines[0])
    assert said["status"] == "UNKNOWN" and said["exit_code"] == 3 and said["api_calls"] == 0
    assert said["error"].startswith("error: --param desired=-3: Input should be greater than or equal to -1")
    good = inventory(tmp_path, "good", f"name: good\n{BASE}")  # the twin: it gets past validation, to the credentials
    code, lines, calls = refused(capsys, ["run", "daily-health", "--system", good, "--param", "deadline_seconds=-1"])
    assert code == 3 and "--param deadline_seconds=-1: Input should be greater than 0" in lines[0] and calls == 0


# (what, inventory YAML under `name: NAME` or None for a shipped system, the runbook, its --param values, what stdout says)
RUN_ID = "1f0c2b8e-5d2a-4c6e-9b1a-2f3d4e5f6a7b"
BATTERY = [
    ("cron out of range", BASE + "schedules: {daily-health: {cron: '99 99 * * *'}}", "daily-health", [], "out of range"),
    ("region AWS lacks", "region: us-nowhere-7\nlambda_functions: [{name: f}]", "daily-health", [], "not a region AWS has"),
    ("key named twice", BASE + "region: us-west-2", "daily-health", [], "appears twice"),
    ("schedule time zone", BASE + "schedules: {daily-health: {cron: '0 9 * * *', timezone: Mars/Base}}", "daily-health", [],
     "unknown time zone"),
    ("schedule for an unknown runbook", BASE + "schedules: {dayly-health: {cron: '0 9 * * *'}}", "daily-health", [],
     "unknown runbook 'dayly-health'"),
    ("alarm rule for an unknown runbook", BASE + "alarms: {runbooks: {'x*': restart}}", "daily-health", [], "unknown runbook 'restart'"),
    ("threshold 1e30", BASE + "thresholds: {queue_age_crit_minutes: 1.0e+30}", "daily-health", [], "thresholds.queue_age_crit_minutes"),
    ("threshold 1e30 int", BASE + "thresholds: {log_errors_crit: 1.0e+30}", "daily-health", [], "thresholds.log_errors_crit"),
    ("threshold inf", BASE + "thresholds: {slow_response_crit_s: .inf}", "daily-health", [], "finite number"),
    ("threshold nan", BASE + "thresholds: {agent_execution_target_s: .nan}", "daily-health", [], "finite number"),
    ("warn above crit", BASE + "thresholds: {dlq_messages_warn: 500}", "daily-health", [], "dlq_messages_warn must not exceed"),
    ("percent above 100", BASE + "thresholds: {ecs_cpu_target_pct: 170}", "daily-health", [], "thresholds.ecs_cpu_target_pct"),
    ("negative minutes", BASE + "escalation: [{level: P1, who: me, respond_within_minutes: -5}]", "emergency-check", [],
     "escalation.0.respond_within_minutes"),
    ("min above max tasks", BASE + "ecs_services: [{cluster: c, service: s, min_tasks: 9, max_tasks: 2}]", "scale-service", [],
     "min_tasks must not exceed max_tasks"),
    ("retention CloudWatch lacks", BASE + "audit: {log_retention_days: 45}", "maintenance-audit", [], "audit.log_retention_days"),
    ("shell in a table name", BASE + "dynamodb_tables: [{name: 'x; rm -rf /'}]", "daily-health", [], "dynamodb_tables.0.name"),
    ("command substitution in a function", "region: us-east-1\nlambda_functions: [{name: '$(id)'}]", "daily-health", [],
     "lambda_functions.0.name"),
    ("backticks in a log group", BASE + "log_groups: [{name: '/app/`reboot`'}]", "daily-health", [], "log_groups.0.name"),
    ("space in a queue", BASE + "sqs_queues: [{name: 'jobs queue'}]", "dlq-redrive", [], "sqs_queues.0.name"),
    ("bucket with a space", BASE + "s3_buckets: [{name: 'my bucket'}]", "backup-verify", [], "s3_buckets.0.name"),
    ("pipe in a cluster", BASE + "ecs_services: [{cluster: 'c|sh', service: s}]", "restart-service", [], "ecs_services.0.cluster"),
    ("uppercase domain", BASE + "opensearch_domains: [{name: Cases}]", "daily-health", [], "opensearch_domains.0.name"),
    ("ampersands in a topic", BASE + "notifications: {sns_topic: 'a&&b'}", "daily-health", [], "notifications.sns_topic"),
    ("declares nothing", "region: us-east-1", "daily-health", [], "declares nothing to check"),
    ("declares nothing, empty tags", "region: us-east-1\ndiscovery: {tags: {}}", "daily-health", [], "declares nothing to check"),
    ("unknown field", BASE + "dynamodb_tables: [{name: todos, backup_requird: true}]", "daily-health", [], "unknown field"),
    ("not YAML", "region: [us-east-1", "daily-health", [], "not valid YAML"),
    ("bad account id", BASE + "account_id: '12345'", "daily-health", [], "field account_id"),
    ("name not the file's", None, "daily-health", [], "must match the file name"),
    ("desired below -1", "t-developer", "scale-service", ["desired=-3"], "--param desired=-3"),
    ("delta beyond 5000", "t-developer", "scale-service", ["delta=99999"], "--param delta=99999"),
    ("read units 1e15", "t-developer", "scale-service", ["read_units=1e15"], "--param read_units="),
    ("to_revision below 0", "todo-app", "emergency-rollback", ["to_revision=-3"], "--param to_revision=-3"),
    ("to_revision 1e15", "todo-app", "emergency-rollback", ["to_revision=1000000000000000"], "--param to_revision="),
    ("deadline 1e308", "todo-app", "emergency-check", ["deadline_seconds=1e308"], "--param deadline_seconds="),
    ("deadline negative", "todo-app", "emergency-check", ["deadline_seconds=-1"], "--param deadline_seconds=-1"),
    ("deadline NaN", "todo-app", "daily-health", ["deadline_seconds=NaN"], "--param deadline_seconds=nan"),
    ("deadline Infinity", "todo-app", "diagnose-api-5xx", ["deadline_seconds=Infinity"], "--param deadline_seconds=inf"),
    ("undo_run not a run id", "t-developer", "scale-service", ["undo_run=not-a-run-id"], "is not a flow run id"),
    ("undo_run shell", "t-developer", "security-incident", ["undo_run=$(rm -rf /)"], "is not a flow run id"),
    ("undo_run one digit long", "hr-resource-optimization", "remediate-lambda-timeout", [f"undo_run={RUN_ID}0"], "is not a flow run id"),
    ("max_messages negative", "leh", "dlq-redrive", ["max_messages=-1"], "--param max_messages=-1"),
    ("weeks_back beyond a year", "todo-app", "weekly-report", ["weeks_back=53"], "--param weeks_back=53"),
    ("unknown parameter", "todo-app", "daily-health", ["foo=1"], "no such parameter"),
    ("ill-typed parameter", "todo-app", "emergency-rollback", ["to_revision=abc"], "--param to_revision='abc'"),
]


def _argv(tmp_path, i: int, case: tuple, json_out: bool) -> list[str]:
    what, text, runbook, params, _ = case
    if text is None:
        system = inventory(tmp_path, f"file-{i}", f"name: other\n{BASE}")
    elif "\n" in text or ":" in text:
        system = inventory(tmp_path, f"bad-{i}", f"name: bad-{i}\n{text}\n")
    else:
        system = text  # a shipped system, with bad parameters
    argv = ["run", runbook, "--system", system] + [a for p in params for a in ("--param", p)]
    return argv + (["--json"] if json_out else [])


@pytest.mark.chaos
def test_bad_input_battery_every_one_refused_in_one_line_before_any_aws_call(capsys, tmp_path, figure):
    refusals, wrong = 0, []
    for i, case in enumerate(BATTERY):
        for json_out in (False, True):
            code, lines, calls = refused(capsys, _argv(tmp_path, i, case, json_out))
            said = json.loads(lines[0])["error"] if json_out and len(lines) == 1 else " ".join(lines)
            ok = code == 3 and len(lines) == 1 and calls == 0 and case[-1] in said
            ok = ok and (not json_out or json.loads(lines[0])["exit_code"] == 3) and (json_out or lines[0].startswith("UNKNOWN - "))
            refusals += ok
            if not ok:
                wrong.append((case[0], json_out, code, calls, lines))
    total = 2 * len(BATTERY)
    with capsys.disabled():
        print(f"\nbad-input battery: {refusals}/{total} refused before any AWS call ({len(BATTERY)} inputs, plain and --json)")
    figure(f"bad-input battery: {refusals}/{total} refused before any AWS call ({len(BATTERY)} inputs, plain and --json)")
    assert len(BATTERY) >= 40 and not wrong, wrong
