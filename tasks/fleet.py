"""Fleet targets and the per-API rate limits every fleet run shares.

A target is one place a system runs: (AWS account, the role to assume there,
region, system inventory name). A targets file lists them:

    role_name: opsbook-readonly          # optional: role_arn for targets that give none
    session_duration_s: 3600             # optional: AssumeRole DurationSeconds
    targets:
      - {account_id: "111111111111", region: ap-northeast-2, system: todo-app}
      - {account_id: "222222222222", role_arn: "arn:aws:iam::222222222222:role/ops-read",
         region: us-east-2, system: hr-resource-optimization, external_id: "..."}

Rate limits: every AWS API with a published per-second quota that the
read-only runbooks call often gets a Prefect global concurrency limit used as
a rate limit (``slot_decay_per_second`` = the quota), named
``aws-<service>-<Operation>-<region>`` (``limit_scope="account"`` appends the
account id: AWS applies these quotas per account and region, so the region-wide
name is the conservative choice: the whole fleet shares one budget per region).
See ``QUOTAS`` for the mapping. ``QuotaGate`` leases tokens from those limits
in growing batches (1, 2, 4, ... up to ``Quota.batch``, half a second of quota)
and spends them locally, so a run's calls cost a few Prefect round trips, not one
each.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from botocore import xform_name
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from opsbook.findings import Status
from opsbook.inventory import Region, known_systems
from tasks.cloudwatch import GET_METRIC_DATA_TPS
from tasks.logs import FILTER_LOG_EVENTS_TPS

ROOT = Path(__file__).resolve().parent.parent
ROLE_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}$")
LimitScope = Literal["region", "account"]


class FleetError(ValueError):
    """A targets file that cannot be used; the message names the file, the entry and the field."""


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
    """What one target's run reports back to the fleet (here, not in flows/fleet/flow.py, so that a result
    written by a worker's process deserialises under the same class path in the fleet's process)."""

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


# --- per-API quotas as Prefect rate limits -------------------------------------------------


@dataclass(frozen=True)
class Quota:
    service: str  # botocore service name
    operation: str
    tps: float  # the published default, per account and region
    source: str

    @property
    def rate(self) -> float:
        """The quota in use: OPSBOOK_RATE_<OPERATION> (the same override aws.limiter honours) or the published one."""
        env = os.environ.get(f"OPSBOOK_RATE_{xform_name(self.operation).upper()}")
        return float(env) if env else self.tps

    @property
    def batch(self) -> int:
        """The largest lease: half a second of quota (at least one token). See QuotaGate."""
        return max(1, math.ceil(self.rate / 2))

    @property
    def burst(self) -> int:
        """The limit's slots: one second's worth, and never less than one lease."""
        return max(self.batch, math.ceil(self.rate))


# The APIs the read-only runbooks call per resource or per log group, with the published defaults
# (Service Quotas: "CloudWatch Logs" and "CloudWatch" API rate quotas, per account and Region). Calls
# to APIs not listed here (DescribeTable, GetFunction, ...) have quotas in the hundreds or thousands a
# second, far above what a fleet of runbooks makes; botocore's retries absorb the occasional throttle.
QUOTAS: dict[tuple[str, str], Quota] = {
    (q.service, q.operation): q
    for q in [
        Quota("logs", "FilterLogEvents", FILTER_LOG_EVENTS_TPS, "CloudWatch Logs: FilterLogEvents 5 TPS"),
        Quota("logs", "DescribeLogGroups", 5.0, "CloudWatch Logs: DescribeLogGroups 5 TPS"),
        Quota("logs", "GetLogEvents", 25.0, "CloudWatch Logs: GetLogEvents 25 TPS"),
        Quota("logs", "StartQuery", 5.0, "CloudWatch Logs Insights: StartQuery 5 TPS"),
        Quota("cloudwatch", "GetMetricData", GET_METRIC_DATA_TPS, "CloudWatch: GetMetricData 50 TPS"),
        Quota("cloudwatch", "DescribeAlarms", 9.0, "CloudWatch: DescribeAlarms 9 TPS"),
        Quota("cloudwatch", "GetMetricStatistics", 400.0, "CloudWatch: GetMetricStatistics 400 TPS"),
    ]
}


def limit_name(service: str, operation: str, region: str, account: str | None = None) -> str:
    """``aws-logs-FilterLogEvents-ap-northeast-2`` (``-<account>`` appended for the account scope)."""
    return f"aws-{service}-{operation}-{region}" + (f"-{account}" if account else "")


def limits_for(regions: list[str], accounts: list[str] | None = None) -> dict[str, Quota]:
    """Every limit a fleet over these regions (and accounts, for the account scope) may use."""
    scopes = [(r, a) for r in sorted(set(regions)) for a in (sorted(set(accounts)) if accounts else [None])]
    return {limit_name(q.service, q.operation, r, a): q for q in QUOTAS.values() for r, a in scopes}


def ensure_limits(limits: dict[str, Quota]) -> dict[str, str]:
    """Create the rate limits that do not exist; keep the ones that do (an operator may have raised a
    limit after a quota increase), repairing only what makes them unusable as rate limits (no slot
    decay, inactive). Safe to call from many runs at once. Returns name -> created|kept|repaired."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    out: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for name, q in sorted(limits.items()):
            try:
                current = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
                        name=name, limit=q.burst, slot_decay_per_second=q.rate, active=True))
                    out[name] = "created"
                    continue
                except ObjectAlreadyExists:  # another run created it a moment ago
                    current = client.read_global_concurrency_limit_by_name(name)
            fix: dict[str, Any] = {}
            if not current.slot_decay_per_second:
                fix["slot_decay_per_second"] = q.rate
            if not current.active:
                fix["active"] = True
            if current.limit < q.batch:
                fix["limit"] = q.burst
            if fix:
                client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(**fix))
            out[name] = "repaired" if fix else "kept"
    return out


class QuotaGate:
    """Before each AWS call of a listed API: take a token from the shared Prefect rate limit.

    Tokens are leased in batches that grow while the calls continue (1, 2, 4, ... up to
    ``Quota.batch``) and spent locally: n calls cost about log2(batch) + n/batch round trips
    to the Prefect API instead of n, and a process wastes at most its last lease minus one
    (unused tokens decay; the quota is never exceeded). A lease blocks (up to ``timeout_s``)
    while the fleet is at the quota. Limits are created on first use in the process if
    missing. A lease that cannot be had raises, so the check that made the call reports
    UNKNOWN with the reason rather than calling AWS unthrottled.
    """

    def __init__(self, account: str | None = None, scope: LimitScope = "region", timeout_s: float = 300.0,
                 quotas: dict[tuple[str, str], Quota] | None = None) -> None:
        self.account = account if scope == "account" else None
        self.timeout_s = timeout_s
        self.quotas = QUOTAS if quotas is None else quotas
        self._tokens: dict[str, int] = defaultdict(int)
        self._next: dict[str, int] = defaultdict(lambda: 1)
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._ensured: set[str] = set()
        self.leases: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def __call__(self, service: str, operation: str, region: str | None) -> None:
        q = self.quotas.get((service, operation))
        if q is None or not region:
            return
        name = limit_name(service, operation, region, self.account)
        with self._guard:
            lock = self._locks[name]
        with lock:  # threads of one process share its lease; the others wait for it
            if self._tokens[name] <= 0:
                self._lease(name, q)
            self._tokens[name] -= 1
            self.calls[name] += 1

    def _lease(self, name: str, q: Quota) -> None:
        from prefect.concurrency.sync import rate_limit

        if name not in self._ensured:
            ensure_limits({name: q})
            self._ensured.add(name)
        size = min(self._next[name], q.batch)
        try:
            rate_limit(name, occupy=size, timeout_seconds=self.timeout_s, strict=True)
        except TimeoutError:
            raise TimeoutError(f"no slot of the rate limit {name} within {self.timeout_s:.0f} s: the fleet is at "
                               f"the {q.rate:g}/s quota; run fewer targets at once or raise the limit") from None
        self.leases[name] += 1
        self._tokens[name] += size
        self._next[name] = min(size * 2, q.batch)

    def stats(self) -> dict[str, dict[str, int]]:
        return {n: {"calls": self.calls[n], "leases": self.leases[n]} for n in sorted(self.calls)}
