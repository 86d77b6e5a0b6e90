"""maintenance-audit covers the resolved set (named and tag-discovered, what daily-health covers): every fault planted on
HR's named and tag-discovered resources is found, its healthy twin reports none of them, and a named table that does not
exist is reported once, as missing, and not audited further."""

from __future__ import annotations

import pytest

from flows.maintenance_audit import flow as ma
from flows.maintenance_audit.flow import maintenance_audit
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.inventory import load_system
from opsbook.report import RunReport
from sandbox import audits as sa

pytestmark = pytest.mark.usefixtures("prefect_harness")

HR = "hr-resource-optimization"


def run(system: str) -> RunReport:
    report = maintenance_audit(system=system, return_state=True).result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


@pytest.mark.parametrize("faulty", [True, False], ids=["faults", "healthy-twin"])
def test_every_fault_on_named_and_tag_discovered_resources_is_found(seeded, sandbox, faulty):
    hr = seeded(HR)
    planted = sa.audit_hygiene(sandbox, hr, faulty=faulty)["planted"]
    report = run(HR)
    flagged = {(f.check, f.resource): f for f in report.findings if f.status is not Status.OK}
    if faulty:
        assert len(planted) == 12  # 5 runtimes (1 named, 1 named and untagged, 3 tag-discovered), 4 retentions, 3 missing Team tags
        assert [p for p in planted if p not in flagged] == [], sorted(flagged)
        assert flagged[("lambda-runtime", f"{HR}-discovered-1")].status is Status.CRIT  # nodejs14.x, found by its tag only
        assert "missing tag(s) Team" in flagged[("required-tags", "dynamodb:Employees-Team2")].summary
    else:
        assert sorted(flagged) == [], [(c, r, f.summary) for (c, r), f in flagged.items()]
    checked = {(f.check, f.resource) for f in report.findings}
    assert ("lambda-runtime", f"{HR}-discovered-3") in checked and ("logs-retention", f"/{HR}/discovered-0") in checked
    policy = set(policy_for(ma.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert used <= policy, used - policy


def test_a_named_table_that_does_not_exist_is_reported_once_and_not_audited(seeded, sandbox, monkeypatch):
    hr = seeded(HR)
    sa.audit_hygiene(sandbox, hr, faulty=False)
    ghost = hr.dynamodb_tables[0].model_copy(update={"name": "Ghost-Team2"})
    with_ghost = hr.model_copy(update={"dynamodb_tables": [*hr.dynamodb_tables, ghost]})
    monkeypatch.setattr(ma, "load_system", lambda name: with_ghost if name == HR else load_system(name))
    report = run(HR)
    about = [f for f in report.findings if "Ghost-Team2" in f.resource]
    assert [(f.check, f.status) for f in about] == [("inventory", Status.WARN)], [(f.check, f.resource, f.summary) for f in about]
    assert "named in the inventory but does not exist" in about[0].summary
    assert report.status is Status.WARN and [f for f in report.findings if f.status is not Status.OK] == about
