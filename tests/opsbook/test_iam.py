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
