"""Escalation of a suspected breach (pure): the level each seed gives for it, from the inventory's ``breach: true``."""

from __future__ import annotations

import pytest

from opsbook.escalation import CHECK, breach_escalation, breach_level, breach_line
from opsbook.findings import Finding, Status
from opsbook.inventory import InventoryError, System, load_system

CHECKS = {"security-group-open", "failed-logins"}


def f(check: str, status: Status, resource: str = "r") -> Finding:
    return Finding(check=check, resource=resource, status=status, summary="x")


@pytest.mark.parametrize(("system", "level", "who"), [
    ("hr-resource-optimization", "L4", "CTO"),  # 000: L3 -> L4 on 보안 침해 의심 (not L1, the first level)
    ("t-developer", "security", "보안 담당자 + 경영진"),  # 001: 보안 이슈: 즉시 보안 담당자 + 경영진
    ("todo-app", "security", "보안팀 (security@company.com) + 레벨 3 아키텍트/CTO"),  # 002: 보안팀과 레벨 3에 동시 통보
    ("leh", "Lv3", "CTO / PM"),  # 003: 데이터 유출, 보안 사고
])
def test_each_seed_marks_its_breach_level(system, level, who):
    inv = load_system(system)
    assert breach_level(inv).level == level and breach_level(inv).who == who
    [esc] = breach_escalation(inv, [f("security-group-open", Status.CRIT, "sg-1"), f("lambda-state", Status.CRIT)], CHECKS)
    assert esc.check == CHECK and esc.status is Status.CRIT and esc.value == 1
    assert esc.summary.startswith(f"escalate to {level}: {who} (respond within") and "suspected breach (security-group-open sg-1)" in esc.summary
    assert esc.details["escalation"]["level"] == level and esc.details["findings"] == ["security-group-open sg-1"]


def test_hr_breach_goes_to_l4_cto():
    hr = load_system("hr-resource-optimization")
    assert breach_line(breach_level(hr)) == "escalate to L4: CTO (respond within 120 min): suspected breach"
    assert breach_escalation(hr, [f("failed-logins", Status.CRIT)], CHECKS)[0].summary.startswith("escalate to L4: CTO")


def test_only_crit_findings_of_the_breach_checks_escalate():
    hr = load_system("hr-resource-optimization")
    assert breach_escalation(hr, [f("security-group-open", Status.WARN), f("failed-logins", Status.UNKNOWN),
                                  f("security-group-open", Status.OK), f("dynamodb-status", Status.CRIT)], CHECKS) == []
    assert breach_escalation(hr, [], CHECKS) == []
    many = [f("security-group-open", Status.CRIT, f"sg-{i}") for i in range(7)]
    [esc] = breach_escalation(hr, many, CHECKS)
    assert esc.value == 7 and "(+2 more)" in esc.summary and len(esc.details["findings"]) == 7


def test_an_unmarked_inventory_says_so_and_names_its_most_urgent_level():
    hr = load_system("hr-resource-optimization")
    unmarked = hr.model_copy(update={"escalation": [e.model_copy(update={"breach": False}) for e in hr.escalation]})
    [esc] = breach_escalation(unmarked, [f("failed-logins", Status.CRIT)], CHECKS)
    assert esc.details["escalation"] is None and "marks no escalation level for a breach" in esc.summary
    assert "its most urgent is L1" in esc.summary  # said, never silently sent there
    [bare] = breach_escalation(hr.model_copy(update={"escalation": []}), [f("failed-logins", Status.CRIT)], CHECKS)
    assert "names no escalation levels" in bare.summary


def test_two_levels_marked_breach_are_refused(tmp_path):
    import yaml

    from opsbook.inventory import SYSTEMS_DIR, load_file

    inv = yaml.safe_load((SYSTEMS_DIR / "hr-resource-optimization.yaml").read_text())
    inv["escalation"][2]["breach"] = True
    path = tmp_path / "hr.yaml"
    path.write_text(yaml.safe_dump(inv, allow_unicode=True))
    with pytest.raises(InventoryError, match="only one level may be marked breach: true"):
        load_file(path)
    assert isinstance(load_system("leh"), System)
