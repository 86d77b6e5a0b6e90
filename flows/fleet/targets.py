"""fleet's targets: where a system runs (AWS account, the role to assume there, region, system inventory
name), read and validated from a targets file, and what one target's run reports back.

    role_name: opsbook-readonly          # optional: role_arn for targets that give none
    session_duration_s: 3600             # optional: AssumeRole DurationSeconds
    targets:
      - {account_id: "111111111111", region: ap-northeast-2, system: todo-app}
      - {account_id: "222222222222", role_arn: "arn:aws:iam::222222222222:role/ops-read",
         region: us-east-2, system: hr-resource-optimization, external_id: "..."}
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from opsbook.findings import Status
from opsbook.inventory import Region, known_systems

ROOT = Path(__file__).resolve().parents[2]
ROLE_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}$")


class FleetError(ValueError):
    """A targets file that cannot be used, or a runbook the fleet refuses; the message says what to change."""


# --- targets ---------------------------------------------------------------------------------


class Target(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: str = Field(pattern=r"^\d{12}$", description="the AWS account the system runs in")
    role_arn: str = Field(description="the role opsbook assumes in that account (read-only: see `opsbook policy RUNBOOK`)")
    region: Region
    system: str = Field(description="inventory name (systems/NAME.yaml)")
    external_id: str | None = Field(None, description="sts:ExternalId, when the role's trust policy requires one")

    @field_validator("system")
    @classmethod
    def _system(cls, v: str) -> str:
        known = known_systems()
        if v not in known:
            raise ValueError(f"unknown system {v!r}; known systems: {', '.join(known)}")
        return v

    @model_validator(mode="after")
    def _role_in_account(self) -> Target:
        m = ROLE_ARN_RE.match(self.role_arn)
        if not m:
            raise ValueError(f"role_arn {self.role_arn!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
        if m.group(2) != self.account_id:
            raise ValueError(f"role_arn {self.role_arn!r} is in account {m.group(2)}, not the target's account {self.account_id}")
        return self

    @property
    def key(self) -> str:
        """The target's name in tables, run names and idempotency keys."""
        return f"{self.system}@{self.account_id}/{self.region}"


class TargetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role_name: str | None = Field(None, pattern=r"^[A-Za-z0-9_+=,.@/-]{1,512}$",
                                  description="role for targets without role_arn: arn:aws:iam::<account_id>:role/<role_name>")
    session_duration_s: int = Field(3600, ge=900, le=43200)
    targets: list[Target] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _default_role(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("role_name") and isinstance(raw.get("targets"), list):
            raw = dict(raw)
            raw["targets"] = [
                {**t, "role_arn": f"arn:aws:iam::{t.get('account_id')}:role/{raw['role_name']}"}
                if isinstance(t, dict) and "role_arn" not in t else t
                for t in raw["targets"]
            ]
        return raw

    @model_validator(mode="after")
    def _unique(self) -> TargetsFile:
        seen = Counter(t.key for t in self.targets)
        dupes = sorted(k for k, n in seen.items() if n > 1)
        if dupes:
            raise ValueError(f"each (system, account, region) may appear once; repeated: {', '.join(dupes)}")
        return self


def resolve_path(path: str | Path) -> Path:
    """An absolute path, or relative to the working directory, else to the opsbook checkout."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return ROOT / p


def load_targets(path: str | Path, system: str | None = None) -> TargetsFile:
    """Read and validate a targets file; ``system`` keeps only that system's targets."""
    p = resolve_path(path)
    if not p.exists():
        raise FleetError(f"targets file {path!s} not found (looked in {Path.cwd()} and {ROOT}); see fleet/example.yaml")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise FleetError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise FleetError(f"{p}: must be a mapping with a `targets` list, got {type(raw).__name__}")
    try:
        fleet = TargetsFile.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{p}: {exc.error_count()} problem(s):"]
        for e in exc.errors():
            where = ".".join(f"[{x}]" if isinstance(x, int) else str(x) for x in e["loc"]).replace(".[", "[") or "(top level)"
            lines.append(f"  {where}: {e['msg']}")
        raise FleetError("\n".join(lines)) from None
    if system is not None:
        kept = [t for t in fleet.targets if t.system == system]
        if not kept:
            raise FleetError(f"{p}: no target runs system {system!r}; systems in the file: "
                             f"{', '.join(sorted({t.system for t in fleet.targets}))}")
        fleet = fleet.model_copy(update={"targets": kept})
    return fleet


class TargetResult(BaseModel):
    """What one target's run reports back to the fleet (here, not in flows/fleet/flow.py, which a worker loads
    from its file path: a result written by a worker's process deserialises under the same class path in the fleet's process)."""

    target: str
    account_id: str
    region: str
    system: str
    runbook: str
    status: Status
    headline: str
    counts: dict[str, int] = Field(default_factory=dict)  # the runbook's findings by status
    api_calls: int = 0
    api_calls_by_operation: dict[str, int] = Field(default_factory=dict)
    identity: str | None = None  # the assumed-role ARN STS returned
    worker: str | None = None  # the work pool worker that ran it, or "in-process"
    host: str | None = None
    pid: int | None = None
    ppid: int | None = None  # a process worker is the parent of the run's process
    flow_run_id: str | None = None
    runbook_flow_run_id: str | None = None
    rate_limits: dict[str, dict[str, int]] = Field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None
