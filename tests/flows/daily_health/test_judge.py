"""daily-health's judging: how a run ends, from its findings and the inventory's coverage (no sandbox, no Prefect run).
The component rules themselves: tests/opsbook/test_components.py."""

from __future__ import annotations

import pytest

from flows.daily_health.judge import ends_failed
from opsbook.findings import Finding, Status, overall
from opsbook.inventory import System
from opsbook.resources import Discovered, coverage


def F(status: str) -> Finding:
    return Finding(check="c", resource="r", status=Status(status), summary=status)


@pytest.mark.parametrize(("statuses", "status", "failed"), [
    ([], Status.UNKNOWN, False),  # nothing checked is never OK
    (["OK", "OK"], Status.OK, False),
    (["OK", "UNKNOWN"], Status.UNKNOWN, False),
    (["UNKNOWN", "WARN"], Status.WARN, False),
    (["WARN", "CRIT", "OK"], Status.CRIT, True),
])
def test_the_worst_finding_sets_the_run_and_only_crit_fails_it(statuses, status, failed):
    run = overall([F(s) for s in statuses])
    assert run is status and ends_failed(run) is failed


def test_an_inventory_that_resolves_to_nothing_is_crit():
    ghost = System.model_validate({"name": "ghost", "region": "eu-west-1", "discovery": {"tags": {"Team": "Nobody"}}})
    found = coverage(ghost, Discovered(enabled=True))
    assert [(f.check, f.status) for f in found] == [("discovery", Status.WARN), ("discovery", Status.CRIT)]
    assert "resolves to no resources" in found[1].summary and ends_failed(overall(found))


def test_discovery_that_could_not_run_is_unknown_and_named_resources_still_count():
    named = System.model_validate({"name": "s", "region": "us-east-1", "lambda_functions": [{"name": "f"}], "discovery": {"tags": {"T": "x"}}})
    found = coverage(named, Discovered(enabled=True, error="GetResources: access denied"))
    assert [(f.check, f.status) for f in found] == [("discovery", Status.UNKNOWN)] and "access denied" in found[0].summary
    assert coverage(named, Discovered(enabled=True, lambda_functions=["g"])) == []  # the healthy twin
    assert coverage(named, Discovered()) == []  # no tags: named resources alone
