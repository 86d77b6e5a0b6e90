"""What a runbook is to the framework (name, flow module, mutating, where it applies) and the lookup by name.

The catalogue itself is ``flows.CATALOGUE`` (flows/__init__.py): the framework knows no runbook; it reads
the list the flows package declares, when first asked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opsbook.inventory import System


def always(system: System) -> str | None:
    return None


def needs(what: str, test: Callable[[System], Any]) -> Callable[[System], str | None]:
    """An applicability rule: None when the runbook applies to the system, else why not."""
    return lambda system: None if test(system) else f"the inventory names no {what}"


@dataclass(frozen=True)
class Runbook:
    name: str
    module: str
    attr: str
    mutating: bool
    summary: str
    applies: Callable[[System], str | None] = always
    discovers_first: bool = False  # its first read is the system's tag discovery: `opsbook run` may start it early

    def why_not(self, system: System) -> str | None:
        """None when the runbook has something to work on in this system (a deployment is built), else the reason."""
        return self.applies(system)

    def load(self) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)

    def tasks(self) -> list[Any]:
        return list(getattr(importlib.import_module(self.module), "TASKS", []))

    def copies(self) -> list[Any]:
        """The resources the runbook makes for itself and removes (``IAM_COPIES``: opsbook.iam_scope.Copies), where its
        destructive actions are allowed."""
        return list(getattr(importlib.import_module(self.module), "IAM_COPIES", []))

    def actions(self) -> list[str]:
        """Every IAM action its tasks declare."""
        return sorted({a for t in self.tasks() for a in getattr(t, "iam_actions", ())})


CATALOGUE_MODULE = "flows"  # the package that declares CATALOGUE: list[Runbook]


def _catalogue() -> dict[str, Runbook]:
    declared = importlib.import_module(CATALOGUE_MODULE)
    return {rb.name: rb for rb in declared.CATALOGUE}


def __getattr__(name: str) -> Any:
    if name == "RUNBOOKS":
        return _catalogue()
    raise AttributeError(name)


def get(name: str) -> Runbook:
    runbooks = _catalogue()
    if name not in runbooks:
        raise KeyError(f"unknown runbook {name!r}; known runbooks: {', '.join(sorted(runbooks))}")
    return runbooks[name]
