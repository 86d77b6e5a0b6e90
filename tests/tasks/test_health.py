"""tasks/health.py: which component checks a system gets (no AWS, no Prefect run: the tasks' submit is recorded)."""

from __future__ import annotations

from typing import Any

import pytest

from opsbook import aws
from opsbook.inventory import load_system
from tasks import health

SEEDS = ["hr-resource-optimization", "leh", "t-developer", "todo-app"]
INVENTORY_ONLY = {"dlq": "check_dlqs", "endpoints": "check_endpoints", "security-logs": "check_security_logs"}


class Recorder:
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    def submit(self, *args: Any, **kwargs: Any) -> str:
        self.seen.append(self.name)
        return self.name


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch):
    seen: list[str] = []
    for attr in dir(health):
        if hasattr(getattr(health, attr), "submit"):
            monkeypatch.setattr(health, attr, Recorder(attr, seen))

    def checks(system: str, logs: bool = True) -> dict[str, Any]:
        seen.clear()
        return health.submit_checks(load_system(system), "found", aws.Deadline(60), logs)

    return checks


@pytest.mark.parametrize("system", SEEDS)
def test_a_check_of_what_only_some_inventories_declare_runs_exactly_for_those(submitted, system: str) -> None:
    inv = load_system(system)
    declared = {"dlq": any(q.dlq for q in inv.sqs_queues), "endpoints": bool(inv.endpoints), "security-logs": inv.security_logs is not None}
    checks = submitted(system)
    for key, task in INVENTORY_ONLY.items():
        assert (key in checks) is declared[key], (system, key)
        if key in checks:
            assert checks[key] == task
    # the checks that also read what tag discovery found always run: an inventory that names none may still have some
    assert {"lambda", "dynamodb", "opensearch", "apigateway", "ecs", "s3", "alarms", "ecs-utilisation", "log-errors"} <= set(checks)


def test_every_inventory_only_check_is_declared_by_some_seed_and_missing_from_another(submitted) -> None:
    """The healthy twin of each: among the seeds each such check is both submitted and left out."""
    runs = {s: set(submitted(s)) for s in SEEDS}
    for key in INVENTORY_ONLY:
        assert any(key in r for r in runs.values()) and any(key not in r for r in runs.values()), key


def test_without_the_24h_scans_no_log_checks_are_submitted(submitted) -> None:
    checks = submitted("t-developer", logs=False)
    assert "security-logs" not in checks and "log-errors" not in checks and "lambda-duration" not in checks
    assert "security-logs" in submitted("t-developer", logs=True)
