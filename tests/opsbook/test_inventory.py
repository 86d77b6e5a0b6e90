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
