"""remediate-lambda-timeout, judging and sizing (pure: no AWS, no clock; unit-tested in tests/flows/remediate_lambda_timeout/test_judge.py).

Only timeouts at the function's *current* setting count: a line is counted
when it is newer than the last configuration change (LastModified, or the
last change opsbook recorded) and says "after N seconds" with N the current
timeout. Older lines are reported as earlier, never as the basis of a fix, so
running again after a fix plans nothing.

``diagnose`` gives a verdict per function and the actions its fix needs (see
its docstring for the rules and bounds); ``plan_fixes`` orders them into the
plan; ``after_change`` and ``fix_findings`` report what the change did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import LambdaFunction, System
from opsbook.mutation.core import Action, Identity, Plan, Record
from opsbook.pii import mask_log
from tasks.awslambda import CONFIG_IAM, MEMORY_KIND, TIMEOUT_KIND, FunctionConfig, parse_time
from tasks.cloudwatch import DurationStats
from tasks.logs import LogScan, classify_lambda_line
from tasks.sqs import MAX_VISIBILITY_S, VISIBILITY_IAM, VISIBILITY_KIND, QueueVisibility

RUNBOOK = "remediate-lambda-timeout"
CHECK = "lambda-timeouts"
IAM = {TIMEOUT_KIND: CONFIG_IAM, MEMORY_KIND: CONFIG_IAM, VISIBILITY_KIND: VISIBILITY_IAM}

LAMBDA_MIN_TIMEOUT_S, LAMBDA_MAX_TIMEOUT_S = 1, 900
LAMBDA_MIN_MEMORY_MB, LAMBDA_MAX_MEMORY_MB = 128, 10240
ONE_VCPU_MB = 1769  # Lambda gives a full vCPU at 1769 MB; above it, more vCPUs (only multi-threaded code gains)
MEMORY_STEP_MB = 64
HANG_FRACTION = 0.25  # the invocations that did not time out average below this share of the timeout: a hang
NEAR_FRACTION = 0.8  # a healthy function whose longest run is above this share of its timeout is "close"


# --- models ------------------------------------------------------------------------------------


class TimeoutScan(BaseModel):
    function: str
    log_group: str
    since: datetime
    count: int = 0
    earlier: int = 0
    longest_s: float | None = None
    samples: list[str] = Field(default_factory=list)
    pages: int = 0
    error: str | None = None


class Observation(BaseModel):
    function: str
    since: datetime
    invocations: int = 0
    timeouts: int = 0
    longest_ms: float | None = None
    samples: list[str] = Field(default_factory=list)
    error: str | None = None


class Diagnosis(BaseModel):
    function: str
    verdict: Literal["timing-out", "hang", "healthy", "no-data", "unreadable"]
    finding: Finding
    actions: list[Action] = Field(default_factory=list)
    unchanged: str | None = None
    cannot: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    extra_findings: list[Finding] = Field(default_factory=list)


# --- what to read -------------------------------------------------------------------------------


def select(inv: System, functions: list[str] | None) -> tuple[list[str], list[str]]:
    """(the inventory's functions to check, asked-for names the inventory does not have)."""
    names = [f.name for f in inv.lambda_functions]
    if not functions:
        return names, []
    return [n for n in names if n in functions], [n for n in functions if n not in names]


def queue_sources(fn: LambdaFunction | None, cfg: FunctionConfig | None) -> list[str]:
    names = ([fn.sqs_source] if fn and fn.sqs_source else []) + (cfg.queues if cfg else [])
    return list(dict.fromkeys(names))


def all_queues(system: System, configs: list[FunctionConfig]) -> list[str]:
    """Every queue feeding one of these functions (the inventory's sqs_source and the event source mappings), once."""
    fns = {f.name: f for f in system.lambda_functions}
    return list(dict.fromkeys(q for c in configs for q in queue_sources(fns.get(c.name), c)))


def last_change(records: list[dict[str, Any]], runbook: str, resource: str) -> datetime | None:
    """When ``runbook`` last changed ``resource`` (records newest first)."""
    for r in records:
        if r.get("runbook") == runbook and r.get("resource") == resource and r.get("status") in ("applied", "verified", "undone"):
            return parse_time(r.get("at"))
    return None


def since_for(cfg: FunctionConfig, records: list[dict[str, Any]], runbook: str, window_start: datetime) -> datetime:
    """Evidence counts from the latest of: the window's start, the last configuration change, opsbook's last change."""
    points = [window_start] + [t for t in (cfg.last_modified, last_change(records, runbook, cfg.name)) if t]
    return max(points)


def api_caps(system: System) -> dict[str, tuple[int, str]]:
    """function -> (the longest timeout it may have, the API that bounds it): strictly below the integration timeout."""
    out: dict[str, tuple[int, str]] = {}
    for api in system.api_gateway_apis:
        cap = max(LAMBDA_MIN_TIMEOUT_S, api.integration_timeout_s - 1)
        for fn in api.functions:
            if fn not in out or cap < out[fn][0]:
                out[fn] = (cap, f"{api.name} (integration timeout {api.integration_timeout_s} s)")
    return out


# --- counting log lines -------------------------------------------------------------------------


def count_timeouts(log: LogScan, since: datetime, timeout_s: int | None) -> TimeoutScan:
    """Timeouts at the current setting since the last change; the rest are ``earlier``."""
    scan = TimeoutScan(function=log.function, log_group=log.log_group, since=since, pages=log.pages, error=log.error)
    for at, msg in log.events:
        kind, seconds = classify_lambda_line(msg)
        if kind != "timeout" or seconds is None:
            continue
        current = timeout_s is None or abs(seconds - timeout_s) < 1.0
        if at >= since and current:
            scan.count += 1
            scan.longest_s = max(scan.longest_s or 0.0, seconds)
            if len(scan.samples) < 3:
                scan.samples.append(mask_log(msg.strip())[:200])
        else:
            scan.earlier += 1
    return scan


def observation(fn: str, since: datetime, events: list[tuple[datetime, str]]) -> Observation:
    """Invocations (REPORT lines) and timeouts since the change."""
    obs = Observation(function=fn, since=since)
    for at, msg in events:
        if at < since:
            continue
        kind, value = classify_lambda_line(msg)
        if kind == "timeout":
            obs.timeouts += 1
            if len(obs.samples) < 3:
                obs.samples.append(mask_log(msg.strip())[:200])
        elif kind == "report" and value is not None:
            obs.invocations += 1
            obs.longest_ms = max(obs.longest_ms or 0.0, value)
    obs.invocations = max(obs.invocations, obs.timeouts)
    return obs


# --- judging and sizing ---------------------------------------------------------------------------


def _fmt_s(ms: float | None) -> str:
    return "?" if ms is None else f"{ms / 1000:.2f} s"


def memory_target(current_mb: int, needed_s: float, allowed_s: float, max_mb: int) -> int:
    """More memory is more CPU: scale by how much faster it must run (needed / allowed), up to a 64 MB step, within bounds."""
    ratio = max(needed_s / max(allowed_s, 1), 1.0)
    target = math.ceil(current_mb * ratio / MEMORY_STEP_MB) * MEMORY_STEP_MB
    target = max(target, current_mb + MEMORY_STEP_MB)
    return min(target, max_mb, LAMBDA_MAX_MEMORY_MB)


@dataclass
class _Case:
    """One function's evidence while it is judged; ``details`` become the finding's."""

    system: System
    name: str
    details: dict[str, Any]
    timeout_s: int = 0
    memory_mb: int = 0
    sources: list[str] = field(default_factory=list)
    earlier: str = ""
    numbers: str = ""
    extra: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def out(self, verdict: str, status: Status, summary: str, value: float | None = None, **kw: Any) -> Diagnosis:
        return Diagnosis(function=self.name, verdict=verdict, **kw,  # type: ignore[arg-type]
                         finding=Finding(check=CHECK, resource=self.name, status=status, summary=summary[:600], value=value, details=self.details))

    def done(self, verdict: str, status: Status, summary: str, value: float | None = None, **kw: Any) -> Diagnosis:
        """A verdict that carries the queue findings and notes gathered so far."""
        return self.out(verdict, status, summary, value=value, extra_findings=self.extra, notes=self.notes, **kw)


def diagnose(system: System, cfg: FunctionConfig, scan: TimeoutScan | None, stats: DurationStats | str | None,
             queues: dict[str, QueueVisibility]) -> Diagnosis:
    """The verdict on one function and, when it times out for lack of time, the actions that fix it.

    ``stats``: the function's durations, or why they could not be read.

    - configuration, logs or metrics unreadable, or no invocation in the window: UNKNOWN, no fix;
    - no timeout at the current setting: OK, left alone (with its numbers);
    - timeouts while the other invocations average below 25 % of the timeout:
      a downstream call hanging (WARN): raising the timeout would only make it
      hang longer, so nothing is planned and the finding says what to look at;
    - otherwise (WARN, fixed): timeout = longest observed duration x
      ``remediation.lambda_timeout_headroom``, rounded up, within Lambda's
      1..900 s, ``remediation.lambda_max_timeout_s``, strictly below the
      integration timeout of every API Gateway API in front of it, and such that
      a feeding queue can keep VisibilityTimeout >= ``sqs_visibility_factor`` x
      timeout (12 h at most). A queue whose visibility is too short for the new
      timeout gets its own action, applied first (and undone last): capping the
      timeout instead would leave the timeouts. When a bound stops the timeout
      short of what is needed, more memory (more CPU) is proposed, scaled by
      how much faster it must run, within 128..10240 MB and
      ``remediation.lambda_max_memory_mb``. A function behind an API whose
      timeout is not below the API's is aligned below it: the API answers 504
      at its own limit, so a longer function timeout only keeps running after
      the client is gone.
    """
    case = _Case(system=system, name=cfg.name, details={"function": cfg.name})
    blind = _unreadable(case, cfg, scan, stats)
    if blind is not None:
        return blind
    assert scan is not None and isinstance(stats, DurationStats)
    _gather(case, cfg, scan, stats, queues)
    quiet = _quiet(case, scan, stats)
    if quiet is not None:
        return quiet
    k = scan.count
    n = max(stats.invocations, k)
    head = f"{k} timeout(s) in {n:g} invocation(s) since {scan.since:%Y-%m-%d %H:%M} UTC ({100 * k / n:.0f}%): {case.numbers}"
    hang = _hang(case, stats, head, k, n)
    if hang is not None:
        return hang
    return _size_fix(case, scan, stats, queues, head, k, n)


def _unreadable(case: _Case, cfg: FunctionConfig, scan: TimeoutScan | None, stats: DurationStats | str | None) -> Diagnosis | None:
    """UNKNOWN when the configuration, the timeouts or the durations could not be read (nothing is proposed blind)."""
    d = case.details
    if cfg.error:
        return case.out("unreadable", Status.UNKNOWN, f"could not be read: {cfg.error}")
    d.update(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, state=cfg.state, last_update_status=cfg.last_update_status)
    if cfg.last_update_status == "InProgress":
        return case.out("unreadable", Status.UNKNOWN, "a configuration update is in progress: the numbers would mix two settings; run again when it is done")
    if scan is None or scan.error:
        return case.out("unreadable", Status.UNKNOWN, f"timeouts could not be counted: {scan.error if scan else 'no scan'}; nothing is proposed without them")
    d.update(timeouts=scan.count, earlier_timeouts=scan.earlier, since=scan.since.isoformat(timespec="seconds"), samples=scan.samples)
    if not isinstance(stats, DurationStats):
        why = stats if isinstance(stats, str) else "no metrics read"
        return case.out("unreadable", Status.UNKNOWN, f"Duration metrics could not be read ({why}); {scan.count} timeout(s) in the logs since "
                        f"{scan.since:%H:%M} UTC; nothing is proposed without the durations", value=scan.count)
    d.update(invocations=stats.invocations, errors=stats.errors, avg_ms=stats.avg_ms, max_ms=stats.max_ms)
    return None


def _gather(case: _Case, cfg: FunctionConfig, scan: TimeoutScan, stats: DurationStats, queues: dict[str, QueueVisibility]) -> None:
    """The numbers every summary shows, and the feeding queues' visibility against the current timeout."""
    pol, name = case.system.remediation, case.name
    case.timeout_s, case.memory_mb = cfg.timeout_s or 0, cfg.memory_mb or 0
    timeout_s = case.timeout_s
    case.earlier = (f"; {scan.earlier} earlier timeout(s) before the last change ({scan.since:%Y-%m-%d %H:%M} UTC) or at another setting, not counted"
                    if scan.earlier else "")
    case.numbers = (f"{stats.invocations:g} invocation(s), {stats.errors:g} error(s), Duration avg {_fmt_s(stats.avg_ms)}, max {_fmt_s(stats.max_ms)}; "
                    f"timeout {timeout_s} s, memory {case.memory_mb} MB")
    case.sources = queue_sources(next((f for f in case.system.lambda_functions if f.name == name), None), cfg)
    if cfg.mapping_error:
        case.notes.append(f"{name}: event source mappings could not be listed ({cfg.mapping_error}); only the inventory's sqs_source was considered")
    for q in case.sources:
        qs = queues.get(q)
        if qs and qs.visibility_s is not None and timeout_s:
            if qs.visibility_s < timeout_s:
                case.extra.append(Finding(check="lambda-queue-visibility", resource=q, status=Status.WARN, value=qs.visibility_s,
                                          summary=f"VisibilityTimeout {qs.visibility_s} s is shorter than {name}'s timeout {timeout_s} s: a message "
                                                  f"still being processed becomes visible again and is processed twice; raise it to >= "
                                                  f"{math.ceil(pol.sqs_visibility_factor * timeout_s)} s ({pol.sqs_visibility_factor:g}x the timeout)"))
            elif qs.visibility_s < pol.sqs_visibility_factor * timeout_s:
                case.notes.append(f"{q}: VisibilityTimeout {qs.visibility_s} s is below {pol.sqs_visibility_factor:g}x {name}'s timeout "
                                  f"({math.ceil(pol.sqs_visibility_factor * timeout_s)} s, AWS's advice for SQS-fed functions)")


def _quiet(case: _Case, scan: TimeoutScan, stats: DurationStats) -> Diagnosis | None:
    """No invocation (UNKNOWN), or no timeout at the current setting (OK, left alone)."""
    name, timeout_s, earlier = case.name, case.timeout_s, case.earlier
    if stats.invocations <= 0:
        if scan.count:
            return case.done("no-data", Status.UNKNOWN, f"{scan.count} timeout(s) in the logs since {scan.since:%H:%M} UTC but no Invocations "
                             f"datapoint (metrics lag a few minutes): run again in a few minutes; nothing is proposed without the durations{earlier}",
                             value=scan.count)
        return case.done("no-data", Status.UNKNOWN, f"no invocation since {scan.since:%Y-%m-%d %H:%M} UTC: nothing to judge "
                         f"(timeout {timeout_s} s, memory {case.memory_mb} MB); run again once it has traffic{earlier}", value=0,
                         unchanged=f"{name}: no invocation to judge")
    cap_api = api_caps(case.system).get(name)
    if scan.count == 0 and cap_api and timeout_s > cap_api[0]:
        case.notes.append(f"{name}: its timeout {timeout_s} s is not below {cap_api[1]}: the API gives up first; not changed while it does "
                          f"not time out (align it to <= {cap_api[0]} s with its next change)")
    if scan.count:
        return None
    close = ""
    if stats.max_ms is not None and timeout_s and stats.max_ms >= NEAR_FRACTION * timeout_s * 1000:
        close = f"; the longest run used {stats.max_ms / 10 / timeout_s:.0f}% of the timeout: close, watch it"
    return case.done("healthy", Status.OK, f"no timeout since {scan.since:%Y-%m-%d %H:%M} UTC: {case.numbers}{close}{earlier}", value=0,
                     unchanged=f"{name}: no timeout (timeout {timeout_s} s, memory {case.memory_mb} MB, max {_fmt_s(stats.max_ms)})")


def _hang(case: _Case, stats: DurationStats, head: str, k: int, n: float) -> Diagnosis | None:
    """Timeouts while the other invocations are fast: a downstream call hanging, not a timeout too short."""
    timeout_s = case.timeout_s
    if stats.avg_ms is None or n <= k or not timeout_s:
        return None
    others_ms = max(0.0, (stats.avg_ms * n - k * timeout_s * 1000) / (n - k))
    case.details["others_avg_ms"] = round(others_ms, 1)
    if others_ms >= HANG_FRACTION * timeout_s * 1000:
        return None
    return case.out("hang", Status.WARN,
                    f"{head}. The other invocations average {_fmt_s(others_ms)} ({100 * others_ms / (timeout_s * 1000):.0f}% of the timeout): "
                    "the timeouts look like a downstream call hanging (a database, HTTP or Bedrock call without its own timeout), "
                    "not a function too slow for its timeout; a longer timeout would only make them hang longer, so none is proposed. "
                    "Find the call in X-Ray traces or the log lines before each timeout, give the client a timeout shorter than the "
                    f"function's, and retry with backoff{case.earlier}", value=k, extra_findings=case.extra,
                    notes=case.notes + [f"{case.name}: timeouts with durations far below the timeout: not raised (see the finding)"])


@dataclass
class _Sizing:
    longest_s: float
    needed: int
    cap: int
    bound_kind: str
    bound_why: str

    @property
    def target(self) -> int:
        return min(self.needed, self.cap)

    @property
    def bound_hit(self) -> bool:
        return self.needed > self.cap


def _sizing(case: _Case, scan: TimeoutScan, stats: DurationStats) -> _Sizing:
    """The timeout needed (longest run x headroom) and the tightest bound on it: Lambda, policy, API in front, queue visibility."""
    pol = case.system.remediation
    longest_s = max((stats.max_ms or 0) / 1000, scan.longest_s or 0, float(case.timeout_s))
    needed = max(LAMBDA_MIN_TIMEOUT_S, math.ceil(longest_s * pol.lambda_timeout_headroom))
    bounds: list[tuple[int, str, str]] = [(LAMBDA_MAX_TIMEOUT_S, "lambda", "Lambda's limit of 900 s"),
                                          (pol.lambda_max_timeout_s, "policy", f"the policy's lambda_max_timeout_s {pol.lambda_max_timeout_s} s")]
    cap_api = api_caps(case.system).get(case.name)
    if cap_api:
        bounds.append((cap_api[0], "api", f"API Gateway {cap_api[1]}: a function behind it must time out before it, at most {cap_api[0]} s"))
    if case.sources:
        sqs_cap = int(MAX_VISIBILITY_S // pol.sqs_visibility_factor)
        bounds.append((sqs_cap, "sqs", f"SQS's 12 h visibility limit / {pol.sqs_visibility_factor:g}"))
    cap, bound_kind, bound_why = min(bounds, key=lambda b: b[0])
    return _Sizing(longest_s=longest_s, needed=needed, cap=cap, bound_kind=bound_kind, bound_why=bound_why)


def _visibility(case: _Case, queues: dict[str, QueueVisibility], target: int) -> tuple[list[Action], list[str]]:
    """A queue feeding the function must keep its messages invisible for factor x the new timeout: its actions, or why not."""
    pol, name, timeout_s = case.system.remediation, case.name, case.timeout_s
    actions: list[Action] = []
    cannot: list[str] = []
    for q in case.sources:
        qs = queues.get(q)
        want = min(MAX_VISIBILITY_S, math.ceil(pol.sqs_visibility_factor * target))
        if qs is None or qs.visibility_s is None:
            if target > timeout_s:
                cannot.append(f"{name}: its queue {q} could not be read ({qs.error if qs else 'not read'}): a longer timeout needs "
                              f"VisibilityTimeout >= {want} s there, so the timeout is not raised blind")
            continue
        if target > timeout_s and qs.visibility_s < want:
            actions.append(Action(kind=VISIBILITY_KIND, resource=q, current=str(qs.visibility_s), target=str(want), iam_action=IAM[VISIBILITY_KIND],
                                  evidence=f"feeds {name}, whose timeout goes {timeout_s} -> {target} s: VisibilityTimeout must stay >= "
                                           f"{pol.sqs_visibility_factor:g}x the timeout or messages still in work are delivered twice; raised "
                                           "(applied first, undone last) rather than capping the timeout, which would leave the timeouts. "
                                           "A failed message now waits this long before its retry"))
    return actions, cannot


def _timeout_action(case: _Case, s: _Sizing, k: int, n: float, why_needed: str) -> Action | None:
    """A longer timeout, or one aligned below the API in front."""
    name, timeout_s = case.name, case.timeout_s
    if s.target > timeout_s:
        return Action(kind=TIMEOUT_KIND, resource=name, current=str(timeout_s), target=str(s.target), iam_action=IAM[TIMEOUT_KIND],
                      evidence=f"{k} timeout(s) in {n:g} invocation(s); {why_needed}" + (f"; capped at {s.cap} s by {s.bound_why}" if s.bound_hit else ""))
    if s.bound_kind == "api" and timeout_s > s.cap:
        return Action(kind=TIMEOUT_KIND, resource=name, current=str(timeout_s), target=str(s.cap), iam_action=IAM[TIMEOUT_KIND],
                      evidence=f"aligned below {s.bound_why}: the API answers 504 at its limit, so a longer function timeout only "
                               "keeps running (and billing) after the client is gone, and its own timeout line never matches the 5XX")
    return None


def _memory_fix(case: _Case, s: _Sizing, why_needed: str) -> tuple[Action | None, str]:
    """When a bound stops the timeout short: more memory (more CPU), or (no action, why only the code can fix it)."""
    pol, name, memory_mb = case.system.remediation, case.name, case.memory_mb
    max_mb = min(pol.lambda_max_memory_mb, LAMBDA_MAX_MEMORY_MB)
    if memory_mb >= max_mb:
        return None, (f"{name}: needs {s.needed} s but {s.bound_why}, and memory is already at the policy's maximum {max_mb} MB: only the "
                      "code can fix it (fewer calls, queries, parallel work, or an asynchronous design)")
    allowed = max(s.target, 1)
    mem = memory_target(memory_mb, s.needed, allowed, pol.lambda_max_memory_mb)
    vcpu = (f"; above {ONE_VCPU_MB} MB Lambda adds vCPUs, which only multi-threaded code uses" if mem > ONE_VCPU_MB else "")
    cant = ("a longer timeout cannot help: " if s.bound_kind == "api" else "the timeout cannot go further: ")
    action = Action(kind=MEMORY_KIND, resource=name, current=str(memory_mb), target=str(mem), iam_action=IAM[MEMORY_KIND],
                    evidence=f"{cant}{why_needed}, but {s.bound_why}. More memory brings proportionally more CPU: "
                             f"{memory_mb} -> {mem} MB (x{s.needed / allowed:.2f}, needed / allowed{', capped by the policy' if mem >= pol.lambda_max_memory_mb else ''})"
                             f"{vcpu}; if the time goes to waiting on another service, fix that instead")
    return action, f"memory {memory_mb} -> {mem} MB ({cant.rstrip(': ')})"


def _size_fix(case: _Case, scan: TimeoutScan, stats: DurationStats, queues: dict[str, QueueVisibility], head: str, k: int, n: float) -> Diagnosis:
    """Too slow for its timeout: the queue, timeout and memory actions that fix it, within the bounds."""
    pol = case.system.remediation
    s = _sizing(case, scan, stats)
    case.details.update(needed_timeout_s=s.needed, cap_s=s.cap, bound=s.bound_kind if s.bound_hit else None)
    why_needed = (f"longest run {s.longest_s:.2f} s x headroom {pol.lambda_timeout_headroom:g} = {s.needed} s "
                  "(durations stop at the timeout, so the real need may be longer: the next run checks again)")
    actions, cannot = _visibility(case, queues, s.target)
    if cannot and s.target > case.timeout_s:
        return case.done("timing-out", Status.WARN, f"{head}. Not fixed: " + "; ".join(cannot), value=k, cannot=cannot)
    timeout = _timeout_action(case, s, k, n, why_needed)
    actions += [timeout] if timeout else []
    fix_words = []
    if s.bound_hit:
        memory, words = _memory_fix(case, s, why_needed)
        if memory is None:
            cannot.append(words)
        else:
            actions.append(memory)
            fix_words.append(words)
    for a in actions:
        if a.kind == TIMEOUT_KIND:
            fix_words.insert(0, f"timeout {a.current} -> {a.target} s")
        elif a.kind == VISIBILITY_KIND:
            fix_words.append(f"{a.resource} visibility {a.current} -> {a.target} s")
    summary = f"{head}. " + ("Proposed: " + "; ".join(fix_words) if fix_words else "Nothing can be proposed") + (". " + "; ".join(cannot) if cannot else "")
    return case.done("timing-out", Status.WARN, summary + case.earlier, value=k, actions=actions, cannot=cannot)


def diagnose_all(inv: System, configs: list[FunctionConfig], logs: list[LogScan] | str, since: dict[str, datetime],
                 stats: list[DurationStats] | str, queues: list[QueueVisibility] | str, now: datetime) -> list[Diagnosis]:
    """A diagnosis per function; a read that failed as a whole (its error text instead of the data) makes every function it
    covers UNKNOWN (never a fix)."""
    by_log = {} if isinstance(logs, str) else {s.function: s for s in logs}
    by_stats = {} if isinstance(stats, str) else {s.function: s for s in stats}
    if isinstance(queues, str):
        qs = {n: QueueVisibility(name=n, error=queues) for n in all_queues(inv, configs)}
    else:
        qs = {q.name: q for q in queues}
    out = []
    for cfg in configs:
        log = by_log.get(cfg.name)
        scan = count_timeouts(log, since[cfg.name], cfg.timeout_s) if log is not None else None
        if scan is None and isinstance(logs, str):
            scan = TimeoutScan(function=cfg.name, log_group="?", since=now, error=logs)
        st = stats if isinstance(stats, str) else by_stats.get(cfg.name)
        out.append(diagnose(inv, cfg, scan, st, qs))
    return out


# --- the plan ---------------------------------------------------------------------------------------


def order_actions(actions: list[Action]) -> list[Action]:
    """Queues first (a longer function timeout must never outlast its queue's visibility), one action per resource and kind
    (the largest target when two functions share a queue), then memory before timeout per function."""
    vis: dict[str, Action] = {}
    rest: list[Action] = []
    for a in actions:
        if a.kind == VISIBILITY_KIND:
            if a.resource not in vis or int(a.target) > int(vis[a.resource].target):
                vis[a.resource] = a
        else:
            rest.append(a)
    rank = {MEMORY_KIND: 0, TIMEOUT_KIND: 1}
    return list(vis.values()) + sorted(rest, key=lambda a: (a.resource, rank.get(a.kind, 2)))


def plan_fixes(inv: System, identity: Identity, diagnoses: list[Diagnosis]) -> Plan:
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    plan.actions = order_actions([a for d in diagnoses for a in d.actions])
    for d in diagnoses:
        if d.unchanged:
            plan.unchanged.append(d.unchanged)
        plan.cannot += d.cannot
        plan.notes += d.notes
        if d.verdict == "unreadable":
            plan.notes.append(f"{d.function}: not judged ({d.finding.summary}); nothing planned for it")
    if any(a.kind == VISIBILITY_KIND for a in plan.actions):
        plan.notes.append("queue visibility timeouts are raised before the function timeouts they cover (and lowered after them on undo)")
    plan.notes.append(f"timeouts count from each function's last configuration change; policy: headroom x{inv.remediation.lambda_timeout_headroom:g}, "
                      f"timeout <= {inv.remediation.lambda_max_timeout_s} s, memory <= {inv.remediation.lambda_max_memory_mb} MB, "
                      f"queue visibility >= {inv.remediation.sqs_visibility_factor:g}x timeout")
    return plan


def unknown_functions(inv: System, strangers: list[str]) -> list[Finding]:
    return [unknown(CHECK, n, f"not a function of {inv.name}'s inventory (its functions: "
                              f"{', '.join(f.name for f in inv.lambda_functions) or 'none'})") for n in strangers]


# --- after the change ----------------------------------------------------------------------------------


def observation_finding(obs: Observation, observe_s: float) -> Finding:
    d = obs.model_dump(mode="json")
    if obs.error:
        return unknown("lambda-after-change", obs.function, f"{obs.error}; run the runbook again to check for new timeouts")
    if obs.timeouts:
        return Finding(check="lambda-after-change", resource=obs.function, status=Status.WARN, value=obs.timeouts, details=d,
                       summary=f"still timing out after the change: {obs.timeouts} timeout(s) in {max(obs.invocations, obs.timeouts)} invocation(s) "
                               f"since {obs.since:%H:%M:%S} UTC; e.g. {obs.samples[0] if obs.samples else ''}. Run again to size the next step "
                               "(the durations are now measured against the new setting), or look at the code and its downstream calls")
    if obs.invocations == 0:
        return Finding(check="lambda-after-change", resource=obs.function, status=Status.UNKNOWN, value=0, details=d,
                       summary=f"no new invocation in the {observe_s:g} s watched since the change at {obs.since:%H:%M:%S} UTC: "
                               "not yet confirmed; run the runbook again later (it plans nothing more if no timeout follows)")
    return Finding(check="lambda-after-change", resource=obs.function, status=Status.OK, value=0, details=d,
                   summary=f"{obs.invocations} invocation(s) since the change at {obs.since:%H:%M:%S} UTC, none timed out"
                           + (f" (longest {obs.longest_ms / 1000:.2f} s)" if obs.longest_ms is not None else ""))


def fix_findings(records: list[Record]) -> list[Finding]:
    out = []
    for r in records:
        unit = " s" if r.kind in (TIMEOUT_KIND, VISIBILITY_KIND) else " MB"
        status = {"verified": Status.OK, "applied": Status.WARN, "undone": Status.WARN, "not-attempted": Status.WARN}.get(r.status, Status.CRIT)
        out.append(Finding(check="lambda-fix", resource=r.resource, status=status,
                           summary=f"{r.kind} {r.before}{unit} -> {r.after or r.before}{unit}: {r.status}; {r.detail}".rstrip("; ")))
    return out


def after_change(findings: list[Finding], observations: list[Observation], records: list[Record], observe_s: float) -> list[Finding]:
    """Each changed function's finding becomes its state after the change (what the watch saw), keeping what was found before."""
    obs = {o.function: observation_finding(o, observe_s) for o in observations}
    changes: dict[str, list[str]] = {}
    for r in records:
        if r.kind != VISIBILITY_KIND and r.status in ("applied", "verified"):
            changes.setdefault(r.resource, []).append(f"{'timeout' if r.kind == TIMEOUT_KIND else 'memory'} {r.before} -> {r.after}")
    out = []
    for f in findings:
        if f.check == CHECK and f.resource in obs:
            o = obs[f.resource]
            out.append(Finding(check=CHECK, resource=f.resource, status=o.status, value=o.value,
                               summary=(f"changed ({', '.join(changes.get(f.resource, []))}); after the change: {o.summary}. "
                                        f"Before: {f.summary}")[:900],
                               details={**f.details, "after_change": o.details}))
        else:
            out.append(f)
    return out
