"""maintenance-audit's suspected breach: a security group open to the internet on SSH names the inventory's breach
level (t-developer: security, 보안 담당자 + 경영진) and pages it, on a dry run too; the group open only inside (its twin)
names nobody and pages nothing."""

from __future__ import annotations

import pytest
import yaml

from flows.maintenance_audit.flow import maintenance_audit
from opsbook import paging as pg
from opsbook.escalation import CHECK as ESCALATION
from opsbook.findings import Status
from opsbook.inventory import SYSTEMS_DIR
from opsbook.report import RunReport
from sandbox import audits as sa
from sandbox.receiver import Receiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

TD = "t-developer"


def test_an_ssh_group_open_to_the_world_escalates_to_the_breach_level_and_pages(seeded, sandbox, tmp_path):
    from prefect.variables import Variable

    td = seeded(TD)
    with Receiver() as rx:
        inv = yaml.safe_load((SYSTEMS_DIR / f"{TD}.yaml").read_text())
        inv["notifications"]["paging"] = {"kind": "webhook", "url": rx.url}
        path = tmp_path / f"{TD}.yaml"
        path.write_text(yaml.safe_dump(inv, allow_unicode=True))
        Variable.unset(pg.state_key("maintenance-audit", TD))

        def run() -> RunReport:
            report = maintenance_audit(system=str(path), return_state=True).result(raise_on_failure=False)
            assert isinstance(report, RunReport), report
            return report

        sa.security_group(sandbox, td, "t-developer-internal", open_port=None)
        twin = run()
        assert twin.outcome == "planned" and [f for f in twin.findings if f.check == ESCALATION] == []
        assert not [e for e in rx.events if e["check"] == "security-group-open"]

        sa.security_group(sandbox, td, "t-developer-ssh", open_port=22)
        report = run()
        sg = next(f for f in report.findings if f.check == "security-group-open" and f.resource.startswith("t-developer-ssh"))
        assert sg.status is Status.CRIT and report.status is Status.CRIT
        [esc] = [f for f in report.findings if f.check == ESCALATION]
        assert esc.summary.startswith("escalate to security: 보안 담당자 + 경영진 (respond within 0 min): suspected breach "
                                      f"(security-group-open {sg.resource}")
        [ev] = [e for e in rx.events if e["check"] == "security-group-open"]
        assert ev["event_action"] == "trigger" and ev["resource"] == sg.resource and ev["escalation"] == esc.summary
        assert ev["dedup_key"] == pg.dedup_key(TD, "maintenance-audit", pg.fingerprint("security-group-open", sg.resource))
        assert any(k.startswith("security-group-open t-developer-ssh") for k in report.notification["paging"]["triggered"])
