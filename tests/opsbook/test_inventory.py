from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from opsbook.inventory import SYSTEMS_DIR, InventoryError, System, known_systems, load_file, load_system, name_matches, systems_dir

SEEDS = ["hr-resource-optimization", "leh", "t-developer", "todo-app"]
BASE = "region: us-east-1\nlambda_functions: [{name: f}]\n"  # the least an inventory declares: a region and one resource


def test_the_four_seed_systems_load():
    assert known_systems() == SEEDS
    hr = load_system("hr-resource-optimization")
    assert hr.region == "us-east-2" and hr.discovery.tags == {"Team": "Team2"}
    assert [f.name for f in hr.lambda_functions][:2] == ["ResumeParser", "AffinityScoreCalculator"]
    assert len(hr.lambda_functions) == 8 and len(hr.dynamodb_tables) == 6
    assert {t.name for t in hr.dynamodb_tables} >= {"Employees-Team2", "TechTrends-Team2"}
    td = load_system("t-developer")
    assert td.ecs_services[0].cluster == "t-developer-cluster-production"
    assert td.dynamodb_tables[0].created_at_attribute == "created_at"
    assert td.thresholds.pipeline_p95_slo_s == 45 and td.thresholds.error_rate_slo_pct == 2
    todo = load_system("todo-app")
    assert todo.lambda_functions[0].aliases == ["LIVE"] and todo.region == "ap-northeast-2"
    leh = load_system("leh")
    assert leh.sqs_queues[0].dlq and leh.region
    assert "REGION CHOSEN" in Path("systems/leh.yaml").read_text()


def _write(tmp_path, name, text):
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_file_and_field(tmp_path):
    p = _write(tmp_path, "x", "name: x\nregion: us-east-1\nlambda_functions:\n  - {name: f, memory: 3}\n")
    with pytest.raises(InventoryError) as exc:
        load_file(p)
    msg = str(exc.value)
    assert str(p) in msg and "lambda_functions.0.memory" in msg and "unknown field" in msg


def test_bad_region_timezone_and_missing_field(tmp_path):
    p = _write(tmp_path, "y", "name: y\nregion: Seoul\ntimezone: Mars/Base\n")
    msg = str(pytest.raises(InventoryError, load_file, p).value)
    assert "field region" in msg and "not an AWS region" in msg and "field timezone" in msg
    p = _write(tmp_path, "z", "name: z\n")
    assert "field region: Field required" in str(pytest.raises(InventoryError, load_file, p).value)


def test_thresholds_warn_above_crit_is_rejected(tmp_path):
    p = _write(tmp_path, "t", "name: t\nregion: us-east-1\nthresholds: {log_errors_warn: 10, log_errors_crit: 5}\n")
    assert "log_errors_warn must not exceed log_errors_crit" in str(pytest.raises(InventoryError, load_file, p).value)


def test_lambda_duration_thresholds_default_and_warn_above_crit_is_rejected(tmp_path):
    p = _write(tmp_path, "d", f"name: d\n{BASE}")
    th = load_file(p).thresholds
    assert (th.lambda_duration_warn_pct, th.lambda_duration_crit_pct) == (80, 95)
    p = _write(tmp_path, "e", "name: e\nregion: us-east-1\nthresholds: {lambda_duration_warn_pct: 96, lambda_duration_crit_pct: 95}\n")
    assert "lambda_duration_warn_pct must not exceed lambda_duration_crit_pct" in str(pytest.raises(InventoryError, load_file, p).value)
    p = _write(tmp_path, "f", "name: f\nregion: us-east-1\nthresholds: {lambda_duration_crit_pct: 120}\n")
    assert "lambda_duration_crit_pct" in str(pytest.raises(InventoryError, load_file, p).value)


def test_yaml_errors_and_name_mismatch(tmp_path):
    p = _write(tmp_path, "bad", "name: bad\nregion: [us-east-1\n")
    said = str(pytest.raises(InventoryError, load_file, p).value)
    assert "not valid YAML" in said and "line 2" in said and "region: [us-east-1" in said and "^" in said  # the line, pointed at
    p = _write(tmp_path, "other", "name: something\nregion: us-east-1\n")
    assert "must match the file name" in str(pytest.raises(InventoryError, load_file, p).value)


def test_unknown_system_lists_known_ones():
    msg = str(pytest.raises(InventoryError, load_system, "nope").value)
    assert "unknown system 'nope'" in msg
    for s in SEEDS:
        assert s in msg
    assert f"looked in {SYSTEMS_DIR} (next to the opsbook package; OPSBOOK_SYSTEMS_DIR is not set)" in msg
    other = str(pytest.raises(InventoryError, load_system, "nope", Path("systems")).value)
    assert "known systems: " + ", ".join(SEEDS) + " (looked in systems (given by the caller))" in other


def test_the_systems_directory_rule():
    beside_tasks = Path(__file__).resolve().parents[2] / "systems"  # this checkout's systems/, next to tasks/
    assert systems_dir({}) == (beside_tasks, "next to the opsbook package; OPSBOOK_SYSTEMS_DIR is not set")
    assert systems_dir({"OPSBOOK_SYSTEMS_DIR": ""}) == systems_dir({})  # empty is unset
    assert systems_dir({"OPSBOOK_SYSTEMS_DIR": "/etc/opsbook"}) == (Path("/etc/opsbook"), "set by OPSBOOK_SYSTEMS_DIR")


def test_a_missing_inventory_directory_is_an_error_not_an_empty_list(tmp_path):
    with pytest.raises(InventoryError, match=f"no inventory directory at {tmp_path / 'gone'} \\(given by the caller\\)"):
        known_systems(tmp_path / "gone")
    assert known_systems(tmp_path) == []  # an existing, empty directory holds no systems
    _write(tmp_path, "a", f"name: a\n{BASE}")
    assert known_systems(tmp_path) == ["a"] and load_system("a", tmp_path).name == "a"


@pytest.mark.parametrize(
    "pattern,name,hit",
    [("team2", "lambda-errors-ResumeParser-Team2", True), ("team2", "TEAM2-x", True), ("team2", "team3", False),
     ("dynamodb-read-throttle-*", "dynamodb-read-throttle-Employees-Team2", True),
     ("dynamodb-read-throttle-*", "my-dynamodb-read-throttle-x", False), ("t-developer", "T-Developer-CPU", True)],
)
def test_alarm_filters_are_case_insensitive_substrings_or_globs(pattern, name, hit):
    assert name_matches(pattern, name) is hit


def test_yesterday_is_in_the_system_time_zone():
    s = System(name="s", region="us-east-1")
    assert s.timezone == "Asia/Seoul"
    # 2026-11-22 01:00 in Seoul is still 2026-11-21 in UTC: yesterday is the 21st in Seoul.
    now = datetime(2026, 11, 21, 16, 0, tzinfo=ZoneInfo("UTC"))
    start, end = s.yesterday(now)
    assert start.isoformat() == "2026-11-21T00:00:00+09:00" and end.isoformat() == "2026-11-22T00:00:00+09:00"


def test_all_log_groups_unions_function_groups_and_explicit_ones():
    s = System(name="s", region="us-east-1", lambda_functions=[{"name": "f"}], log_groups=[{"name": "/ecs/x"}, {"name": "/aws/lambda/f", "audit": True}])
    groups = {g.name: g for g in s.all_log_groups()}
    assert set(groups) == {"/aws/lambda/f", "/ecs/x"} and groups["/aws/lambda/f"].audit


def test_a_region_aws_lacks_a_cron_out_of_range_a_bad_schedule_zone_and_a_key_named_twice_are_refused(tmp_path):
    bad = {
        "region": ("name: region\nregion: us-nowhere-7\n", "not a region AWS has"),
        "cron": ("name: cron\nregion: us-east-1\nschedules:\n  daily-health: {cron: '99 99 * * *'}\n", "out of range"),
        "zone": ("name: zone\nregion: us-east-1\nschedules:\n  daily-health: {cron: '0 9 * * *', timezone: Mars/Base}\n",
                 "schedules.daily-health.timezone: Value error, unknown time zone 'Mars/Base'"),
        "twice": ("name: twice\nregion: us-east-1\nregion: us-west-2\n", "the key 'region' appears twice"),
        "listkey": ("name: listkey\n? [a, b]\n: 1\nregion: us-east-1\n", "not valid YAML"),  # said, not a TypeError
    }
    for name, (text, said) in bad.items():
        assert said in str(pytest.raises(InventoryError, load_file, _write(tmp_path, name, text)).value), name
    twin = _write(tmp_path, "twin", "name: twin\nregion: ap-northeast-2\nlambda_functions: [{name: f}]\nschedules:\n"
                  "  daily-health: {cron: '*/30 9-18 * * MON-FRI', timezone: Europe/Dublin}\n")
    assert load_file(twin).schedules["daily-health"].cron == "*/30 9-18 * * MON-FRI"


# --- issue 19: validated before any call -------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "systems").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_inventory_loads(path):
    """The healthy twin of every rule below: the inventories in systems/ pass every check."""
    assert load_file(path).name == path.stem


def _refused(tmp_path, name: str, body: str) -> str:
    """The one-line message an inventory ``name`` with ``body`` (besides its name) is refused with."""
    with pytest.raises(InventoryError) as exc:
        load_file(_write(tmp_path, name, f"name: {name}\n{body}"))
    said = str(exc.value)
    assert "\n" not in said, said
    return said


def test_a_schedule_or_an_alarm_rule_naming_an_unknown_runbook_names_the_field_the_name_and_the_valid_ones(tmp_path):
    said = _refused(tmp_path, "s", BASE + "schedules:\n  daily-helth: {cron: '0 9 * * *'}\n")
    assert "field schedules.daily-helth: unknown runbook 'daily-helth' (did you mean daily-health?" in said
    assert "runbooks: alarm-bridge, backup-verify," in said and "weekly-report)" in said
    said = _refused(tmp_path, "k", BASE + "schedules:\n  nightly: {cron: '0 1 * * *', runbook: rm -rf}\n")
    assert "field schedules.nightly.runbook: unknown runbook 'rm -rf'" in said
    said = _refused(tmp_path, "a", BASE + "alarms:\n  runbooks: {'x-*': emergency-chek}\n")
    assert "field alarms.runbooks.x-*: unknown runbook 'emergency-chek' (did you mean emergency-check?" in said
    twin = _write(tmp_path, "twin", BASE + "name: twin\nschedules:\n  escalate: {runbook: bill-shock-breaker}\n"
                  "  daily-health: {cron: '0 9 * * *'}\nalarms:\n  runbooks: {'x-*': emergency-check}\n")
    assert load_file(twin).schedules["escalate"].runbook == "bill-shock-breaker"


def test_an_inventory_declaring_nothing_is_refused_a_tag_rule_or_one_resource_is_enough(tmp_path):
    said = _refused(tmp_path, "empty", "region: us-east-1\nschedules:\n  daily-health: {cron: '0 9 * * *'}\n")
    assert "declares nothing to check: add resources under lambda_functions, dynamodb_tables" in said
    assert "or a discovery tag rule under discovery.tags" in said
    assert "declares nothing" in _refused(tmp_path, "notags", "region: us-east-1\ndiscovery: {tags: {}}\n")
    for name, body in {"tags": "discovery: {tags: {Team: Team2}}\n", "probe": "endpoints: [{name: h, url: 'https://x.example/h'}]\n",
                       "table": "dynamodb_tables: [{name: todos}]\n", "alarm": "alarms: {declared: [{name: api-5xx}]}\n"}.items():
        assert load_file(_write(tmp_path, name, f"name: {name}\nregion: us-east-1\n{body}")).name == name


# (the YAML under the file's name and BASE, the field named, what is said)
BAD_THRESHOLDS = [
    ("thresholds: {log_errors_crit: 1.0e+30}", "thresholds.log_errors_crit", "exceeded maximum size"),  # pydantic's own int limit
    ("thresholds: {log_errors_crit: 1.0e+15}", "thresholds.log_errors_crit", "less than or equal to 1000000000"),
    ("thresholds: {queue_age_crit_minutes: 1.0e+30}", "thresholds.queue_age_crit_minutes", "less than or equal to 20160"),
    ("thresholds: {queue_age_crit_minutes: .inf}", "thresholds.queue_age_crit_minutes", "finite number"),
    ("thresholds: {slow_response_crit_s: .nan}", "thresholds.slow_response_crit_s", "finite number"),
    ("thresholds: {availability_slo_pct: 100.5}", "thresholds.availability_slo_pct", "less than or equal to 100"),
    ("thresholds: {error_rate_slo_pct: -1}", "thresholds.error_rate_slo_pct", "greater than 0"),
    ("thresholds: {dlq_messages_warn: 0}", "thresholds.dlq_messages_warn", "greater than or equal to 1"),
    ("thresholds: {failed_logins_warn: 300}", "thresholds", "failed_logins_warn must not exceed failed_logins_crit (300 > 200)"),
    ("thresholds: {queue_age_warn_minutes: 90}", "thresholds", "queue_age_warn_minutes must not exceed queue_age_crit_minutes"),
    ("thresholds: {agent_execution_target_s: 90}", "thresholds", "agent_execution_target_s must not exceed slow_response_crit_s"),
    ("endpoints: [{name: h, url: 'https://x.example/h', latency_warn_ms: 5000}]", "endpoints.0",
     "latency_warn_ms must not exceed latency_crit_ms"),
    ("endpoints: [{name: h, url: 'https://x.example/h', tls_expiry_crit_days: 40}]", "endpoints.0",
     "tls_expiry_crit_days must not exceed tls_expiry_warn_days"),  # days left: fewer is worse
    ("endpoints: [{name: h, url: 'https://x.example/h', tls_expiry_warn_days: 100000}]", "endpoints.0.tls_expiry_warn_days", "825"),
    ("ecs_services: [{cluster: c, service: s, min_tasks: 5, max_tasks: 2}]", "ecs_services.0", "min_tasks must not exceed max_tasks"),
    ("ecs_services: [{cluster: c, service: s, max_tasks: -1}]", "ecs_services.0.max_tasks", "greater than or equal to 0"),
    ("dynamodb_tables: [{name: todos, backup_max_age_hours: 1.0e+30}]", "dynamodb_tables.0.backup_max_age_hours", "8784"),
    ("bill_shock: {case_budget_tokens: 1.0e+15}", "bill_shock.case_budget_tokens", "less than or equal to"),
    ("bill_shock: {spike_factor: 1.0e+30}", "bill_shock.spike_factor", "less than or equal to 1000"),
    ("escalation: [{level: P1, who: me, respond_within_minutes: -5}]", "escalation.0.respond_within_minutes", "greater than or equal to 0"),
    ("audit: {log_retention_days: 45}", "audit.log_retention_days", "not 45: use 60?"),
    ("remediation: {dynamodb_max_capacity_units: 1.0e+15}", "remediation.dynamodb_max_capacity_units", "less than or equal to"),
    ("stuck_processing: {unprocessed_warn: 30}", "stuck_processing", "unprocessed_warn must not exceed unprocessed_crit (30 > 20)"),
    ("dr: {rto_table_minutes: 0}", "dr.rto_table_minutes", "greater than 0"),
]


@pytest.mark.parametrize("yaml_text,field,said", BAD_THRESHOLDS, ids=[b[1] + ":" + b[0].split(":")[-1].strip(" {}]") for b in BAD_THRESHOLDS])
def test_a_threshold_out_of_bounds_or_out_of_order_is_refused_naming_the_field(tmp_path, yaml_text, field, said):
    msg = _refused(tmp_path, "t", BASE + yaml_text + "\n")
    assert f"field {field}: " in msg and said in msg, msg


def test_thresholds_at_their_bounds_and_equal_warn_and_crit_load(tmp_path):
    """The twins: a WARN equal to its CRIT, the bounds themselves, the retention values CloudWatch takes."""
    body = BASE + ("thresholds: {log_errors_warn: 7, log_errors_crit: 7, availability_slo_pct: 100, queue_age_crit_minutes: 20160}\n"
                   "endpoints: [{name: h, url: 'https://x.example/h', tls_expiry_warn_days: 7, tls_expiry_crit_days: 7}]\n"
                   "ecs_services: [{cluster: c, service: s, min_tasks: 0, max_tasks: 0}]\naudit: {log_retention_days: 3653}\n")
    s = load_file(_write(tmp_path, "ok", "name: ok\n" + body))
    assert s.thresholds.log_errors_crit == 7 and s.audit.log_retention_days == 3653 and s.ecs_services[0].max_tasks == 0


def test_every_number_in_the_inventory_is_bounded_above_and_every_warn_has_its_crit_checked():
    """A new numeric field without an upper bound (1e30 would pass) or a warn/crit pair outside the generic check fails here."""
    import types
    import typing

    from opsbook.docs import models_in

    models, unbounded = [System], []
    for model in models:
        for name, field in model.model_fields.items():
            models += [m for m in models_in(field.annotation) if m not in models]
            union = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
            kinds = {field.annotation} | (set(typing.get_args(field.annotation)) if union else set())
            if kinds & {int, float} and not any(getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None
                                                for m in field.metadata):
                unbounded.append(f"{model.__name__}.{name}")
    assert unbounded == []
    from opsbook.inventory import Endpoint, Thresholds

    assert ("tls_expiry_crit_days", "tls_expiry_warn_days") in Endpoint.order_rules()
    assert {("log_errors_warn", "log_errors_crit"), ("lambda_duration_warn_pct", "lambda_duration_crit_pct")} <= set(Thresholds.order_rules())


# (the YAML, the field named): shell text and names each service refuses
SHELL = "'x; rm -rf /'"
BAD_NAMES = [
    (f"lambda_functions: [{{name: {SHELL}}}]", "lambda_functions.0.name"),
    ("lambda_functions: [{name: f, aliases: ['$(id)']}]", "lambda_functions.0.aliases.0"),
    ("lambda_functions: [{name: f, aliases: ['42']}]", "lambda_functions.0.aliases.0"),  # a version number, not an alias
    ("lambda_functions: [{name: f, log_group: '/aws/lambda/f `id`'}]", "lambda_functions.0.log_group"),
    ("lambda_functions: [{name: " + "f" * 65 + "}]", "lambda_functions.0.name"),
    ("dynamodb_tables: [{name: ab}]", "dynamodb_tables.0.name"),  # DynamoDB: at least 3
    (f"dynamodb_tables: [{{name: {SHELL}}}]", "dynamodb_tables.0.name"),
    ("s3_buckets: [{name: my_bucket-}]", "s3_buckets.0.name"),  # the legacy rule too: ends with a letter or digit
    ("s3_buckets: [{name: 'my bucket'}]", "s3_buckets.0.name"),
    ("s3_buckets: [{name: 'bucket..two'}]", "s3_buckets.0.name"),
    ("s3_buckets: [{name: 192.168.1.10}]", "s3_buckets.0.name"),
    ("sqs_queues: [{name: 'jobs queue'}]", "sqs_queues.0.name"),
    ("sqs_queues: [{name: jobs, dlq: 'jobs|dlq'}]", "sqs_queues.0.dlq"),
    ("log_groups: [{name: '/app/$(whoami)'}]", "log_groups.0.name"),
    ("ecs_services: [{cluster: 'c;reboot', service: s}]", "ecs_services.0.cluster"),
    ("ecs_services: [{cluster: c, service: s, target_group: tg_with_underscore}]", "ecs_services.0.target_group"),
    ("opensearch_domains: [{name: Cases}]", "opensearch_domains.0.name"),
    ("opensearch_domains: [{name: cases, indices: ['Evidence']}]", "opensearch_domains.0.indices.0"),
    ("api_gateway_apis: [{name: 'api; curl evil.sh'}]", "api_gateway_apis.0.name"),
    ("api_gateway_apis: [{name: api, stage: 'prod stage'}]", "api_gateway_apis.0.stage"),
    ("rds_instances: [{identifier: db--one}]", "rds_instances.0.identifier"),
    ("notifications: {sns_topic: 'alerts&&true'}", "notifications.sns_topic"),
    ("notifications: {sns_topic: 'arn:aws:sns:us-east-1:12345:alerts'}", "notifications.sns_topic"),  # a short account
    ("alarms: {declared: [{name: \"bad\\u0007bell\"}]}", "alarms.declared.0.name"),
    ("audit: {kms_key_aliases: [hr-key]}", "audit.kms_key_aliases.0"),  # alias/ missing
    ("audit: {ecr_repositories: [Backend]}", "audit.ecr_repositories.0"),
    ("audit: {secrets: ['api keys']}", "audit.secrets.0"),
    ("audit: {certificate_domains: ['leh example com']}", "audit.certificate_domains.0"),
    ("security: {break_glass_roles: ['role name']}", "security.break_glass_roles.0"),
    ("discovery: {tags: {'Team;x': a}}", "discovery.tags.Team;x.[key]"),
    ("mutations: {state_table: 'opsbook state'}", "mutations.state_table"),
    ("bill_shock: {worker_function: '`reboot`'}", "bill_shock.worker_function"),
    ("cognito: {user_pool_id: pool}", "cognito.user_pool_id"),
]


@pytest.mark.parametrize("yaml_text,field", BAD_NAMES, ids=[b[1] for b in BAD_NAMES])
def test_a_name_the_service_would_refuse_is_refused_naming_the_field_and_the_rule(tmp_path, yaml_text, field):
    msg = _refused(tmp_path, "n", BASE.replace("lambda_functions: [{name: f}]\n", "") + "endpoints: [{name: h, url: 'https://x.example'}]\n"
                   + yaml_text + "\n")
    assert f"field {field}: Value error, " in msg and " is not a" in msg and "; use " in msg, msg


def test_shell_text_is_said_with_the_characters_that_are_not_allowed(tmp_path):
    msg = _refused(tmp_path, "n", BASE + f"dynamodb_tables: [{{name: {SHELL}}}]\n")
    assert "field dynamodb_tables.0.name: Value error, 'x; rm -rf /' is not a DynamoDB table name: '; ' not allowed; use 3-255 of" in msg


def test_names_as_aws_allows_them_load_arns_fifo_and_the_longest(tmp_path):
    body = ("region: us-east-1\n"
            "lambda_functions: [{name: 'arn:aws:lambda:us-east-1:123456789012:function:todo-api', aliases: [LIVE, v2_blue]},"
            " {name: " + "f" * 64 + ", log_group: '/aws/lambda/x#1_.-'}]\n"
            "sqs_queues: [{name: jobs.fifo, dlq: jobs-dlq.fifo}]\n"
            "dynamodb_tables: [{name: " + "T" * 255 + "}, {name: a.b_c-d}]\n"
            "s3_buckets: [{name: abc}, {name: my.bucket-1}, {name: Legacy_Logs_2017}]\n"  # a legacy us-east-1 name
            "ecs_services: [{cluster: c, service: s, target_group: "
            "'arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg-a/0123456789abcdef'}]\n"
            "api_gateway_apis: [{name: Todo API v2, stage: $default_not}]\n".replace("$default_not", "live_2")
            + "notifications: {sns_topic: 'arn:aws:sns:us-east-1:123456789012:alerts.fifo'}\n"
            "security: {break_glass_roles: ['arn:aws:iam::123456789012:role/ops/break-glass', hr-break-glass-team2]}\n"
            "audit: {kms_key_aliases: [alias/aws/s3], secrets: ['arn:aws:secretsmanager:us-east-1:123456789012:secret:db/pw-AbC1'],"
            " certificate_domains: ['*.example.com']}\n"
            "cognito: {user_pool_name: LEH users, user_pool_id: us-east-1_AbC123}\n"
            "discovery: {tags: {'aws:cloudformation:stack-name': 'todo app'}}\n")
    s = load_file(_write(tmp_path, "names", "name: names\n" + body))
    assert s.api_gateway_apis[0].name == "Todo API v2" and s.sqs_queues[0].dlq == "jobs-dlq.fifo"


def _botocore_shape(service: str, shape: str) -> dict:
    import botocore.loaders

    return botocore.loaders.Loader().load_service_model(service, "service-2")["shapes"][shape]


def test_the_naming_rules_are_botocores_where_its_service_model_has_one():
    """Never looser than botocore's shape (length within its min..max; every name the rule takes matches its pattern),
    one stated exception: the seed's OpenSearch domain has 30 characters, 28 are AWS's maximum."""
    import re

    from opsbook import inventory as inv

    rules = [r for r in vars(inv).values() if isinstance(r, inv.NameRule) and r.botocore]
    assert len(rules) >= 15
    samples = {r: [] for r in rules}
    for r in rules:  # names the rule takes: the shipped inventories' and the shortest/longest of its own examples
        samples[r] += [v for v in ("abc", "a" * r.max_length, "Team2-x_1.y", "alias/hr-x", "ap-northeast-2_AbC123", "LEH users",
                                   "employee_profiles", "/aws/lambda/f") if _takes(r, v)]
    for r in rules:
        service, shape_name = r.botocore.split()
        shape = _botocore_shape(service, shape_name)
        top = 28 if r is inv.OPENSEARCH_DOMAIN else r.max_length
        assert shape.get("min", 0) <= r.min_length and top <= shape.get("max", 10**9), (r.what, shape)
        for v in samples[r]:
            if "pattern" in shape and len(v) <= top:
                assert re.fullmatch(shape["pattern"], v), (r.what, v, shape["pattern"])


def _takes(rule, value: str) -> bool:
    try:
        rule(value)
    except ValueError:
        return False
    return True
