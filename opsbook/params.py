"""How a runbook's parameters appear in the Prefect UI's run form (and in ``opsbook run RUNBOOK --help``).

Every flow parameter is ``Annotated[T, Param("what it does", ge=.., le=..)] = default``:
calling the flow directly keeps plain Python defaults. Measured with Prefect 3.8.8
(``prefect.utilities.callables.parameter_schema``, the schema stored on the deployment):

- bounds inside ``Annotated`` (``ge``, ``le``, ``min_length``) reach the form as
  minimum/maximum and ``validate_parameters`` enforces them;
- a ``description`` inside ``Annotated`` does not: Prefect wraps every parameter
  in a ``Field`` of its own whose description (the docstring's ``Args:`` entry,
  else None) wins. ``json_schema_extra`` is merged instead, so ``Param`` puts
  the description there as well;
- ``T | None = None`` becomes ``anyOf: [T, null]`` with ``default: null``: the UI
  shows a "T | None" switch whose None side reads 'Property is type "None"', and
  a non-required field with a default of null is sent as null, which the server
  then refuses for a plain type. So a parameter that may be left out defaults to
  an ordinary value meaning "not given" (0, "" or []) and says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field


def Param(description: str, **constraints: Any) -> Any:  # noqa: N802 (used like pydantic's Field)
    """``Field(description=..., **constraints)`` whose description also reaches Prefect's form."""
    return Field(description=description, json_schema_extra={"description": description}, **constraints)


def _names(value: Any) -> Any:
    """The shell gives a list as one string ("a,b"); None (a caller's "not given") is the empty list."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        return value  # not a list: pydantic says what is wrong with it
    return [v.strip() if isinstance(v, str) else v for v in items if not isinstance(v, str) or v.strip()]


# A list of names: the form's list input; "a,b" from the shell (--param tables=a,b) or None from a caller also do.
Names = Annotated[list[str], BeforeValidator(_names)]


def Choices(values: Iterable[str]) -> Any:  # noqa: N802 (a type, like Names)
    """A list of names taken from ``values`` only (the form offers them; "a,b" from the shell; anything else is refused
    before the run, naming the valid ones)."""
    return Annotated[list[Literal[tuple(sorted(values))]], BeforeValidator(_names)]  # type: ignore[misc]

# The parameters most runbooks share.
SystemName = Annotated[str, Param("The system: the name of its inventory in systems/ (e.g. todo-app), or the path of an inventory "
                                  "YAML file", min_length=1)]
DryRun = Annotated[bool, Param("Plan only (the default): nothing is changed. Off: the run pauses for approval of the plan "
                               "(a form on the paused run: Resume), then acts")]
Approver = Annotated[str, Param("Who is recorded as approving when no form is shown (scheduled and policy-approved runs, "
                                "e.g. 'schedule'); empty: the approval form asks for a name")]
ApprovalTimeout = Annotated[int, Param("Seconds the run waits for approval before it gives up, changing nothing; "
                                       "0: the inventory's mutations.approval_timeout_s", ge=0, le=7 * 86400)]
SettleTimeout = Annotated[int, Param("Seconds to wait after acting for the change to settle; 0: the inventory's "
                                     "mutations.settle_timeout_s", ge=0, le=6 * 3600)]
# A Prefect flow run id (a UUID), or empty. The pattern also reaches the form (the UI refuses another value there).
RUN_ID_PATTERN = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"


def _run_id(value: str) -> str:
    if not re.fullmatch(RUN_ID_PATTERN, value):
        raise ValueError(f"{value[:60]!r} is not a flow run id: give the UUID of the earlier run (like "
                         "1f0c2b8e-5d2a-4c6e-9b1a-2f3d4e5f6a7b: its page in the Prefect UI, or flow_run_id in its --json "
                         "output), or leave it empty for a normal run")
    return value


def RunId(description: str) -> Any:  # noqa: N802 (a type, like Param)
    """A str parameter holding a flow run id or nothing, checked before the run does anything (a typo never reaches AWS)."""
    field = Field(description=description, json_schema_extra={"description": description, "pattern": RUN_ID_PATTERN})
    return Annotated[str, field, AfterValidator(_run_id)]


UndoRun = RunId("The flow run id of an earlier run of this runbook: plan putting back what that run changed instead; "
                "empty: a normal run")

Deadline = Annotated[float, Param("Seconds the run may spend reading AWS; what is not read by then is UNKNOWN", gt=0, le=900)]
