"""The per-API rate limits every fleet run shares.

Every AWS API with a published per-second quota that the read-only runbooks call often gets a Prefect global
concurrency limit used as a rate limit (``slot_decay_per_second`` = the quota), named
``aws-<service>-<Operation>-<region>`` (``limit_scope="account"`` appends the account id: AWS applies these
quotas per account and region, so the region-wide name is the conservative choice: the whole fleet shares one
budget per region). See ``QUOTAS`` for the mapping. ``QuotaGate`` leases tokens from those limits in growing
batches (1, 2, 4, ... up to ``Quota.batch``, half a second of quota) and spends them locally, so a run's calls
cost a few Prefect round trips, not one each.
"""

from __future__ import annotations

import math
import os
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from botocore import xform_name

from tasks.cloudwatch import GET_METRIC_DATA_TPS
from tasks.logs import FILTER_LOG_EVENTS_TPS

LimitScope = Literal["region", "account"]


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
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
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
