"""Findings, the result every check produces, and how a run's status is derived."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Status(str, Enum):
    OK = "OK"
    WARN = "WARN"
    CRIT = "CRIT"
    UNKNOWN = "UNKNOWN"

    @property
    def exit_code(self) -> int:
        """Nagios plugin convention."""
        return {"OK": 0, "WARN": 1, "CRIT": 2, "UNKNOWN": 3}[self.value]


# CRIT > WARN > UNKNOWN > OK: a run is CRIT if any finding is CRIT, else WARN if
# any is WARN, else UNKNOWN if any is UNKNOWN, else OK.
_RANK = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARN: 2, Status.CRIT: 3}


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True)
    opsbook_inert: ClassVar[bool] = True  # holds no Prefect future: task arguments pass it unwalked (opsbook.iam)

    check: str
    resource: str
    status: Status
    summary: str
    value: float | int | None = None
    details: dict[str, Any] = Field(default_factory=dict)


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe of some statuses, in the run's order: OK < UNKNOWN < WARN < CRIT (a known WARN outranks an UNKNOWN)."""
    return max(statuses, key=_RANK.__getitem__)


def overall(findings: list[Finding]) -> Status:
    """The run's status. No findings at all is UNKNOWN: nothing was checked."""
    if not findings:
        return Status.UNKNOWN
    return max((f.status for f in findings), key=_RANK.__getitem__)


def by_threshold(count: int, warn: int, crit: int) -> Status:
    if count >= crit:
        return Status.CRIT
    if count >= warn:
        return Status.WARN
    return Status.OK


def unknown(check: str, resource: str, reason: str) -> Finding:
    return Finding(check=check, resource=resource, status=Status.UNKNOWN, summary=f"could not be read: {reason}")
