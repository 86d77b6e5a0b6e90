import pytest
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
    """opsbook.iam._inert: an inventory, a finding or a report is wrapped in Prefect's ``opaque`` (resolved, not
    traversed: 40-80 ms a report of 300 findings); a list is left as it is."""
    from prefect.utilities.annotations import opaque

    from opsbook.findings import Finding, Status
    from opsbook.iam import _inert
    from opsbook.report import RunReport

    f = Finding(check="c", resource="r", status=Status.OK, summary="s")
    report = RunReport(runbook="daily-health", system="s", status=Status.OK, findings=[f], api_calls=0, duration_s=0.1)
    for value in (f, report):
        assert isinstance(_inert(value), opaque) and _inert(value).unwrap() is value
    for value in ([f, f], [], [f, "text"], ["a", "b"], {"f": f}, "text"):  # a list is walked: its items link upstream tasks
        assert _inert(value) is value


@pytest.mark.usefixtures("prefect_harness")
def test_a_task_fed_findings_unwalked_still_hangs_below_the_task_that_returned_them():
    """The run graph keeps its edges: a new list made of a task's findings (as the diagnose runbooks build) links the
    judge to that task (a list is walked), and a report links publish-report to judge though it is not walked. Each
    task reads the inputs Prefect recorded for it (TaskRunContext)."""
    from prefect import flow
    from prefect.context import TaskRunContext

    from opsbook.findings import Finding, Status
    from opsbook.iam import aws_task
    from opsbook.report import RunReport

    seen: dict[str, set[str]] = {}

    def record(name: str) -> None:
        run = TaskRunContext.get().task_run
        seen[name] = {str(x.id) for inputs in run.task_inputs.values() for x in inputs}
        seen[name + ":id"] = {str(run.id)}

    @aws_task(iam=[], name="produce", read_only=False)
    def produce() -> list[Finding]:
        record("produce")
        return [Finding(check="c", resource=f"r{i}", status=Status.OK, summary="s") for i in range(3)]

    @aws_task(iam=[], name="summarise", read_only=False)
    def summarise(findings: list[Finding]) -> RunReport:
        record("summarise")
        return RunReport(runbook="x", system="s", status=Status.OK, findings=findings, api_calls=0, duration_s=0.0)

    @aws_task(iam=[], name="publish", read_only=False)
    def publish(report: RunReport) -> int:
        record("publish")
        return len(report.findings)

    @flow
    def graph() -> int:
        made = produce.submit().result()
        extra = Finding(check="c", resource="lost", status=Status.UNKNOWN, summary="not read")
        report = summarise.submit(made[:1] + [extra] + made[1:]).result()  # a new list, as diagnose-api-5xx builds
        return publish.submit(report).result()

    assert graph() == 4
    assert seen["produce:id"] <= seen["summarise"]  # the list is walked: its items link the producer
    assert seen["summarise:id"] <= seen["publish"]  # the report is not walked, but it is summarise's own result
