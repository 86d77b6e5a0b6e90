from prefect import flow

from opsbook.iam import aws_task
from opsbook.inventory import System, load_system


def test_an_inventory_reaches_an_aws_task_as_it_is_without_prefect_walking_it(prefect_harness, monkeypatch):
    walked = []
    iterate = System.__iter__
    monkeypatch.setattr(System, "__iter__", lambda self: walked.append(self.name) or iterate(self))  # how Prefect walks a model

    received = []

    @aws_task(iam=[], name="echo")
    def echo(system: System, other: object = None) -> object:
        received.append(system)
        return other

    @flow
    def run(system: System) -> tuple:
        walked.clear()  # the flow's own parameters are Prefect's to check
        first = echo.submit(system, other=[1])  # positional
        second = echo(system=system, other=first)  # by name; a future in another argument still resolves
        return system, second, list(walked)

    system, second, walked_by_tasks = run(load_system("todo-app"))
    assert second == [1] and len(received) == 2 and all(r is system for r in received)
    assert walked_by_tasks == []  # submitted, run and resolved without a walk over the inventory's fields


def test_findings_and_reports_are_handed_to_tasks_unwalked_and_other_lists_are_not():
    """opsbook.iam._inert: an inventory, a finding, a report or a list of findings is wrapped in Prefect's ``opaque``
    (resolved, not traversed: 40-80 ms a report of 300 findings); a plain list or a mixed one is left as it is."""
    from prefect.utilities.annotations import opaque

    from opsbook.findings import Finding, Status
    from opsbook.iam import _inert
    from opsbook.report import RunReport

    f = Finding(check="c", resource="r", status=Status.OK, summary="s")
    report = RunReport(runbook="daily-health", system="s", status=Status.OK, findings=[f], api_calls=0, duration_s=0.1)
    for value in (f, [f, f], report):
        assert isinstance(_inert(value), opaque) and _inert(value).unwrap() is value
    for value in ([], [f, "text"], ["a", "b"], {"f": f}, "text"):
        assert _inert(value) is value
