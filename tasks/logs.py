"""CloudWatch Logs: count matching lines in a time window, over every page."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws, pii
from opsbook.components import judge_count
from opsbook.findings import Finding
from opsbook.iam import aws_task, declares
from opsbook.inventory import LogGroup, System
from opsbook.performance import agent_timings, judge_agents
from opsbook.pii import mask_log
from opsbook.resources import Discovered
from tasks.cloudwatch import minutes_window

# FilterLogEvents is allowed 5 requests a second per account and region, a
# hard quota (AWS knowledge center: cloudwatch-logs-throttling); honoured by
# default against real AWS (see aws.quotas_enabled).
FILTER_LOG_EVENTS_TPS = 5.0
FILTER_PAGE_MAX = 10_000  # events a FilterLogEvents page holds at most (its limit parameter)
ERROR_LINES_BUDGET = 10_000  # the default of Thresholds.error_lines_budget


def log_groups(system: System, found: Discovered) -> list[LogGroup]:
    """Every named or tag-discovered function's log group, plus named and discovered log groups."""
    groups = {g.name: g for g in system.all_log_groups()}
    for fn in found.lambda_functions:
        groups.setdefault(f"/aws/lambda/{fn}", LogGroup(name=f"/aws/lambda/{fn}"))
    for g in found.log_groups:
        groups.setdefault(g, LogGroup(name=g))
    return list(groups.values())


def count_matches(region: str, log_group: str, pattern: str, start: datetime, end: datetime, samples: int = 3) -> dict[str, Any]:
    """Count events matching ``pattern`` in [start, end) over all pages; keep a few masked samples."""
    c = aws.client("logs", region)
    lim = aws.limiter("filter_log_events", FILTER_LOG_EVENTS_TPS)
    kwargs: dict[str, Any] = dict(logGroupName=log_group, filterPattern=pattern,
                                  startTime=int(start.timestamp() * 1000), endTime=int(end.timestamp() * 1000) - 1)
    count, sample, pages = 0, [], 0
    while True:
        lim.acquire()
        page = c.filter_log_events(**kwargs)
        pages += 1
        events = page.get("events", [])
        count += len(events)
        for e in events[: max(0, samples - len(sample))]:
            sample.append(mask_log(e["message"].strip())[:200])
        token = page.get("nextToken")
        if not token or token == kwargs.get("nextToken"):
            break
        kwargs["nextToken"] = token
    return {"count": count, "samples": sample, "pages": pages}


@aws_task(iam=["logs:FilterLogEvents"], cache_policy=NO_CACHE)
def check_error_logs(system: System, found: Discovered, deadline: aws.Deadline, hours: float = 24) -> list[Finding]:
    end = datetime.now(timezone.utc)
    start = end - timedelta(hours=hours)
    groups = log_groups(system, found)
    th = system.thresholds
    res = aws.parallel(lambda g: count_matches(system.region, g.name, g.error_pattern, start, end), groups, deadline=deadline)
    return [judge_count("log-errors", g.name, r, aws.unreadable(e), th.log_errors_warn, th.log_errors_crit, "ERROR lines") for g, r, e in res]


@aws_task(iam=["logs:FilterLogEvents"], cache_policy=NO_CACHE)
def check_security_logs(system: System, deadline: aws.Deadline, hours: float = 24) -> list[Finding]:
    sec = system.security_logs
    if sec is None:
        return []
    end = datetime.now(timezone.utc)
    start = end - timedelta(hours=hours)
    th = system.thresholds
    jobs = [
        ("failed-logins", sec.failed_login_pattern, th.failed_logins_warn, th.failed_logins_crit, "failed logins"),
        ("rate-limit-events", sec.rate_limit_pattern, th.rate_limit_warn, th.rate_limit_crit, "rate-limit events"),
    ]
    res = aws.parallel(lambda j: count_matches(system.region, sec.log_group, j[1], start, end), jobs, deadline=deadline)
    return [judge_count(j[0], sec.log_group, r, aws.unreadable(e), j[2], j[3], j[4]) for j, r, e in res]


def message_shape(line: str) -> str:
    """A masked line with its variable parts (numbers, hex ids) folded, to group like messages."""
    s = re.sub(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<id>", line, flags=re.I)
    s = re.sub(r"\b[0-9a-f]{12,}\b", "<hex>", s, flags=re.I)
    s = re.sub(r"\d+", "N", s)
    return re.sub(r"\s+", " ", s).strip()


def top_messages(samples: list[str], n: int = 3) -> list[dict[str, Any]]:
    counts = Counter(message_shape(s) for s in samples)
    return [{"message": shape, "count": c} for shape, c in counts.most_common(n)]


class LineBudget:
    """A total of log lines shared by concurrent readers of several log groups. Each group is sure of its share
    (total // groups), so one storming group cannot leave the others unread; the rest, and what a group that finished
    early leaves, goes to whoever asks first. Thread-safe."""

    def __init__(self, total: int, groups: list[str]) -> None:
        self.total = total
        share = total // max(1, len(groups))
        self._share = dict.fromkeys(groups, share)
        self._pool = total - share * len(groups)
        self._lock = threading.Lock()

    def room(self, group: str) -> int:
        with self._lock:
            return self._share.get(group, 0) + self._pool

    def take(self, group: str, wanted: int) -> int:
        """Lines granted (at most ``wanted``): the group's own share first, then the common pool."""
        with self._lock:
            own = min(self._share.get(group, 0), wanted)
            more = min(self._pool, wanted - own)
            if own:
                self._share[group] -= own
            self._pool -= more
            return own + more

    def release(self, group: str) -> None:
        """The group is done: what is left of its share goes to the pool."""
        with self._lock:
            self._pool += self._share.pop(group, 0)


@declares(["logs:FilterLogEvents"])
def read_error_lines(region: str, group: str, pattern: str, start: datetime, end: datetime, budget: LineBudget,
                     samples: int = 20) -> dict[str, Any]:
    """Every line matching ``pattern`` in [start, end), over every page, while ``budget`` grants lines: masked, with their
    timestamps. {"count": lines seen (a lower bound when "cut"), "lines": [(ms, masked line)] (the ones granted),
    "samples": the first ``samples`` of them, "pages", "cut": the budget stopped the read before the group's last line}."""
    c = aws.client("logs", region)
    lim = aws.limiter("filter_log_events", FILTER_LOG_EVENTS_TPS)
    kwargs: dict[str, Any] = dict(logGroupName=group, filterPattern=pattern,
                                  startTime=int(start.timestamp() * 1000), endTime=int(end.timestamp() * 1000) - 1)
    lines: list[tuple[int, str]] = []
    masked: dict[str, str] = {}  # an error storm repeats lines: mask each distinct one once
    seen, pages, cut = 0, 0, False
    try:
        while True:
            room = budget.room(group)
            if room <= 0:
                cut = True
                break
            lim.acquire()
            page = c.filter_log_events(**kwargs, limit=min(FILTER_PAGE_MAX, room))
            pages += 1
            events = page.get("events", [])
            seen += len(events)
            granted = budget.take(group, len(events))
            for e in events[:granted]:
                raw = e.get("message", "").strip()
                if raw not in masked:
                    masked[raw] = mask_log(raw)[:200]
                lines.append((e["timestamp"], masked[raw]))
            token = page.get("nextToken")
            if granted < len(events):
                cut = True
                break
            if not token or token == kwargs.get("nextToken"):
                break
            kwargs["nextToken"] = token
    finally:
        budget.release(group)
    return {"count": seen, "samples": [m for _, m in lines[:samples]], "pages": pages, "lines": lines, "cut": cut}


@aws_task(iam=["logs:FilterLogEvents"], name="recent-errors", cache_policy=NO_CACHE)
def count_recent_errors(system: System, found: Discovered, deadline: aws.Deadline, minutes: int = 60, samples: int = 20,
                        budget: int = ERROR_LINES_BUDGET) -> list[dict[str, Any]]:
    """Every ERROR line of the last ``minutes`` per function/log group, concurrently, at most ``budget`` lines in all (see
    LineBudget): [{"group", "result" (read_error_lines' answer, None if not read), "unreadable"}]. Ranking the lines'
    messages is the caller's (pure) business."""
    end = datetime.now(timezone.utc)
    start = end - timedelta(minutes=minutes)
    groups = log_groups(system, found)
    shared = LineBudget(budget, [g.name for g in groups])
    res = aws.parallel(lambda g: read_error_lines(system.region, g.name, g.error_pattern, start, end, shared, samples), groups, deadline=deadline)
    return [{"group": g.name, "result": r, "unreadable": aws.unreadable(e)} for g, r, e in res]


# --- Lambda's own log lines: "Task timed out after N seconds" and REPORT lines -----------------------

LAMBDA_TIMEOUT_PATTERN = '"Task timed out"'
# invocations (REPORT lines) and timeouts in one scan; told apart by classify_lambda_line
LAMBDA_INVOCATION_PATTERN = '?"Task timed out" ?"REPORT RequestId"'
_TIMEOUT_RE = re.compile(r"Task timed out after (\d+(?:\.\d+)?) seconds")
_REPORT_RE = re.compile(r"REPORT RequestId:.*?\bDuration: (\d+(?:\.\d+)?) ms")


def classify_lambda_line(message: str) -> tuple[str | None, float | None]:
    """('timeout', seconds) for a "Task timed out after N seconds" line, ('report', ms) for a REPORT line, else (None, None)."""
    m = _TIMEOUT_RE.search(message)
    if m:
        return "timeout", float(m.group(1))
    m = _REPORT_RE.search(message)
    if m:
        return "report", float(m.group(1))
    return None, None


@declares(["logs:FilterLogEvents"])
def scan_log(region: str, log_group: str, pattern: str, start: datetime, end: datetime) -> tuple[list[tuple[datetime, str]], int]:
    """Every event matching ``pattern`` in [start, end), over every page, at most 5 requests a second. ([(time, message)], pages)."""
    c = aws.client("logs", region)
    lim = aws.limiter("filter_log_events", FILTER_LOG_EVENTS_TPS)
    kwargs: dict[str, Any] = dict(logGroupName=log_group, filterPattern=pattern,
                                  startTime=int(start.timestamp() * 1000), endTime=max(int(end.timestamp() * 1000) - 1, int(start.timestamp() * 1000)))
    events: list[tuple[datetime, str]] = []
    pages = 0
    while True:
        lim.acquire()
        page = c.filter_log_events(**kwargs)
        pages += 1
        events += [(datetime.fromtimestamp(e["timestamp"] / 1000, timezone.utc), e.get("message", "")) for e in page.get("events", [])]
        token = page.get("nextToken")
        if not token or token == kwargs.get("nextToken"):
            return events, pages
        kwargs["nextToken"] = token


class LogScan(BaseModel):
    """The events one scan of a function's log group found (or why it could not be scanned)."""

    function: str
    log_group: str
    events: list[tuple[datetime, str]] = Field(default_factory=list)
    pages: int = 0
    error: str | None = None


@aws_task(iam=["logs:FilterLogEvents"], name="scan-lambda-timeouts", cache_policy=NO_CACHE)
def scan_timeouts(system: System, functions: list[str], start: datetime, deadline: aws.Deadline) -> list[LogScan]:
    """'Task timed out' lines in each function's log group from ``start`` until now (every page)."""
    groups = {f.name: f.log_group_name for f in system.lambda_functions}
    end = datetime.now(timezone.utc)

    def one(fn: str) -> LogScan:
        group = groups.get(fn, f"/aws/lambda/{fn}")
        events, pages = scan_log(system.region, group, LAMBDA_TIMEOUT_PATTERN, start, end)
        return LogScan(function=fn, log_group=group, events=events, pages=pages)

    out = []
    for fn, scan, err in aws.parallel(one, functions, deadline=deadline, max_workers=5):
        if err is not None:
            why = ("log group does not exist (the function never wrote a log line, or its log_group is wrong)"
                   if aws.is_not_found(err) else aws.describe_error(err))
            scan = LogScan(function=fn, log_group=groups.get(fn, f"/aws/lambda/{fn}"), error=why)
        out.append(scan)
    return out


# --- every matching line of a window (diagnose-api-5xx, diagnose-bedrock-throttling) ---------------------------

MAX_EVENTS = 20_000  # per log group and run; beyond it the count is a lower bound (said in the finding)


def read_events(region: str, group: str, pattern: str, start: datetime, end: datetime, max_events: int = MAX_EVENTS) -> tuple[list[dict[str, Any]], bool]:
    """Every matching event (timestamp, message) of [start, end) over all pages (up to max_events): (events, truncated)."""
    c = aws.client("logs", region)
    lim = aws.limiter("filter_log_events", FILTER_LOG_EVENTS_TPS)
    kwargs: dict[str, Any] = dict(logGroupName=group, filterPattern=pattern, startTime=int(start.timestamp() * 1000),
                                  endTime=int(end.timestamp() * 1000) - 1)
    out: list[dict[str, Any]] = []
    while True:
        lim.acquire()
        page = c.filter_log_events(**kwargs)
        out += [{"timestamp": e["timestamp"], "message": e["message"]} for e in page.get("events", [])]
        if len(out) >= max_events:
            return out[:max_events], True
        token = page.get("nextToken")
        if not token or token == kwargs.get("nextToken"):
            return out, False
        kwargs["nextToken"] = token


# --- a function's error lines by exception type ---------------------------------------------------------------

SAMPLES_PER_TYPE = 3
# What an error line contains (CloudWatch Logs terms are case-sensitive; moto matches everything for ?term patterns,
# which is harmless: every line is classified again here).
ERROR_FILTER = '?ERROR ?Error ?Exception ?"Task timed out" ?"Runtime exited" ?"not authorized"'
TIMEOUT = "Task timed out"
UNTYPED = "ERROR (no exception type)"
_AWS_CODE_RE = re.compile(r"An error occurred \((\w+)\)")
_RUNTIME_RE = re.compile(r"\b(Runtime\.\w+)")
_EXC_RE = re.compile(r"\b([A-Z][A-Za-z0-9_]*(?:Exception|Error|Fault))\b")
_DENIED_RE = re.compile(r"not authorized to perform:? (?P<action>[\w-]+:[\w*-]+)(?: on resource:? (?P<resource>[^\s,;]+))?")


def error_type(line: str) -> str | None:
    """The exception type a log line reports, or None for a line that is not an error."""
    if _TIMEOUT_RE.search(line):
        return TIMEOUT
    m = _AWS_CODE_RE.search(line)
    if m:
        return m.group(1)
    m = _RUNTIME_RE.search(line)
    if m:
        return m.group(1)
    if "Runtime exited" in line:
        return "Runtime.ExitError"
    m = _EXC_RE.search(line)
    if m:
        return m.group(1)
    if "ERROR" in line or "not authorized" in line:
        return UNTYPED
    return None


def is_access_denied(kind: str) -> bool:
    return kind in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "AuthorizationErrorException") or kind.endswith("AccessDenied")


class ErrorType(BaseModel):
    type: str
    count: int = 0
    samples: list[str] = Field(default_factory=list)
    top: list[dict[str, Any]] = Field(default_factory=list)
    denied: list[dict[str, Any]] = Field(default_factory=list)  # AccessDenied: action, resource, count
    timeout_after_s: float | None = None


class FunctionErrors(BaseModel):
    function: str
    group: str
    error: str | None = None
    missing_group: bool = False
    total: int = 0
    lines_read: int = 0
    truncated: bool = False
    types: list[ErrorType] = Field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(t.count for t in self.types if t.type == kind)


def classify(function: str, group: str, messages: list[str], lines_read: int, truncated: bool) -> FunctionErrors:
    """Group error lines by exception type; masked samples and top shapes per type."""
    by: dict[str, list[str]] = {}
    denied: dict[str, Counter[tuple[str, str | None]]] = {}
    timeouts: dict[str, float] = {}
    for raw in messages:
        line = raw.strip()
        kind = error_type(line)
        if kind is None:
            continue
        masked = mask_log(line)[:300]
        by.setdefault(kind, []).append(masked)
        if is_access_denied(kind) or (kind == UNTYPED and "not authorized" in line):
            m = _DENIED_RE.search(line)
            if m:
                denied.setdefault(kind, Counter())[(m.group("action"), (m.group("resource") or "").rstrip(".") or None)] += 1
        if kind == TIMEOUT:
            m = _TIMEOUT_RE.search(line)
            if m:
                timeouts[kind] = max(timeouts.get(kind, 0.0), float(m.group(1)))
    types = []
    for kind, lines in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        types.append(ErrorType(type=kind, count=len(lines), samples=lines[:SAMPLES_PER_TYPE], top=top_messages(lines),
                               denied=[{"action": a, "resource": r, "count": n} for (a, r), n in (denied.get(kind) or Counter()).most_common()],
                               timeout_after_s=timeouts.get(kind)))
    return FunctionErrors(function=function, group=group, total=sum(t.count for t in types), lines_read=lines_read, truncated=truncated, types=types)


@aws_task(iam=["logs:FilterLogEvents"], cache_policy=NO_CACHE)
def read_function_errors(system: System, functions: list[str], deadline: aws.Deadline, minutes: int = 60) -> dict[str, FunctionErrors]:
    """The window's error lines of each function's log group, grouped by exception type."""
    groups = {f.name: f.log_group_name for f in system.lambda_functions}
    start, end = minutes_window(minutes)

    def one(fn: str) -> FunctionErrors:
        group = groups.get(fn, f"/aws/lambda/{fn}")
        events, truncated = read_events(system.region, group, ERROR_FILTER, start, end)
        return classify(fn, group, [e["message"] for e in events], len(events), truncated)

    out = {}
    for fn, res, err in aws.parallel(one, functions, deadline=deadline, max_workers=8):
        group = groups.get(fn, f"/aws/lambda/{fn}")
        if err is None:
            out[fn] = res
        elif aws.is_not_found(err):
            out[fn] = FunctionErrors(function=fn, group=group, missing_group=True,
                                     error="log group does not exist (the function never ran, or logs elsewhere)")
        else:
            out[fn] = FunctionErrors(function=fn, group=group, error=aws.describe_error(err))
    return out


# --- ThrottlingException lines of a function (Bedrock callers) -------------------------------------------------

THROTTLE_PATTERN = "ThrottlingException"
THROTTLE_SAMPLES = 3
BEDROCK_PROVIDERS = "anthropic|amazon|meta|cohere|ai21|mistral|stability|deepseek|writer|openai|qwen"
_MODEL_RE = re.compile(rf"\b(?:(?P<geo>us|eu|apac|global|us-gov)\.)?(?P<id>(?:{BEDROCK_PROVIDERS})\.[a-z0-9][a-z0-9.\-]*(?::\d+)?)", re.I)
_MAX_RETRIES_RE = re.compile(r"reached max retries: (\d+)")
_RETRY_WORD_RE = re.compile(r"\b(retry|retrying|retried|backing off|backoff|attempt \d+)\b", re.I)
_REQUEST_ID_RE = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)


class LogTarget(BaseModel):
    """A function and the log group it writes to."""

    function: str
    group: str


def model_of(line: str) -> str | None:
    """The Bedrock model or inference profile id a line names (e.g. us.anthropic.claude-3-5-sonnet-20240620-v1:0)."""
    m = _MODEL_RE.search(line)
    if not m:
        return None
    mid = m.group("id").rstrip(".-")
    return f"{m.group('geo')}.{mid}" if m.group("geo") else mid


class ThrottleStats(BaseModel):
    function: str
    group: str
    error: str | None = None
    count: int = 0
    requests: int = 0  # distinct request ids among the lines (0: the lines carry none)
    per_minute: dict[str, int] = Field(default_factory=dict)  # "YYYY-MM-DDTHH:MMZ" -> lines
    peak_minute: str | None = None
    peak_count: int = 0
    models: dict[str, int] = Field(default_factory=dict)
    max_retries_seen: int | None = None  # botocore's "reached max retries: N"
    app_retries: int = 0  # requests with more than one throttle line, or lines saying retry
    samples: list[str] = Field(default_factory=list)
    truncated: bool = False

    @property
    def retries_visible(self) -> bool:
        return bool(self.max_retries_seen) or self.app_retries > 0


def minute_of(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def summarize_throttles(t: LogTarget, events: list[dict[str, Any]], truncated: bool = False) -> ThrottleStats:
    lines = [e for e in events if THROTTLE_PATTERN in e["message"]]
    per_minute = Counter(minute_of(e["timestamp"]) for e in lines)
    rids = Counter(m.group(0).lower() for e in lines for m in [_REQUEST_ID_RE.search(e["message"])] if m)
    retries = [int(m.group(1)) for e in lines for m in [_MAX_RETRIES_RE.search(e["message"])] if m]
    models = Counter(x for e in lines for x in [model_of(e["message"])] if x)
    worded = sum(1 for e in lines if _RETRY_WORD_RE.search(e["message"]))
    pk = max(per_minute.items(), key=lambda kv: (kv[1], kv[0])) if per_minute else (None, 0)
    return ThrottleStats(function=t.function, group=t.group, count=len(lines), requests=len(rids), per_minute=dict(sorted(per_minute.items())),
                         peak_minute=pk[0], peak_count=pk[1], models=dict(models.most_common()), max_retries_seen=max(retries) if retries else None,
                         app_retries=sum(1 for n in rids.values() if n > 1) + worded,
                         samples=[mask_log(e["message"].strip())[:300] for e in lines[:THROTTLE_SAMPLES]], truncated=truncated)


@aws_task(iam=["logs:FilterLogEvents"], cache_policy=NO_CACHE)
def read_throttles(system: System, targets: list[LogTarget], deadline: aws.Deadline, minutes: int = 60) -> dict[str, ThrottleStats]:
    """ThrottlingException lines of the window per function, every page."""
    start, end = minutes_window(minutes)

    def one(t: LogTarget) -> ThrottleStats:
        events, truncated = read_events(system.region, t.group, THROTTLE_PATTERN, start, end)
        return summarize_throttles(t, events, truncated)

    out = {}
    for t, res, err in aws.parallel(one, targets, deadline=deadline, max_workers=8):
        if err is None:
            out[t.function] = res
        elif aws.is_not_found(err):
            out[t.function] = ThrottleStats(function=t.function, group=t.group, error="log group does not exist (never invoked, or logs elsewhere)")
        else:
            out[t.function] = ThrottleStats(function=t.function, group=t.group, error=aws.describe_error(err))
    return out


# --- retention and audit-log samples -------------------------------------------------------------

NO_RETENTION = "none"  # a group's retention as one comparable value when it has none (kept forever)
AUDIT_LOOKBACK_DAYS = 7
AUDIT_MAX_EVENTS_READ = 10_000  # a bound on what one run reads a log group for its sample


class LogGroupState(BaseModel):
    name: str
    audit: bool = False
    named: bool = True  # listed in the inventory (else a function's default group)
    exists: bool = True
    retention_days: int | None = None
    stored_bytes: int = 0
    error: str | None = None


class AuditSample(BaseModel):
    log_group: str
    read: int = 0
    sampled: int = 0
    truncated: bool = False
    hits: list[dict[str, Any]] = Field(default_factory=list)  # masked excerpts only (opsbook.pii.hits)
    error: str | None = None


def log_groups_of(system: System, found: Discovered) -> list[tuple[str, bool, bool]]:
    """(name, audit, named in the inventory) for every named or tag-discovered function's group, the inventory's groups
    and the tag-discovered ones."""
    explicit = {g.name for g in system.log_groups}
    return [(g.name, g.audit, g.name in explicit) for g in log_groups(system, found)]


def read_log_group(system: System, name: str, audit: bool, named: bool) -> LogGroupState:
    c = aws.client("logs", system.region)
    for g in aws.paginate(c, "describe_log_groups", "logGroups", logGroupNamePrefix=name):
        if g["logGroupName"] == name:
            return LogGroupState(name=name, audit=audit, named=named, retention_days=g.get("retentionInDays"), stored_bytes=g.get("storedBytes", 0))
    return LogGroupState(name=name, audit=audit, named=named, exists=False)


DESCRIBE_BATCH = 50  # DescribeLogGroups' logGroupIdentifiers takes up to 50 names


def read_log_group_batch(system: System, groups: list[tuple[str, bool, bool]]) -> list[LogGroupState]:
    """Up to 50 log groups in one DescribeLogGroups (``logGroupIdentifiers``: names in this account); a group the
    answer does not hold does not exist."""
    c = aws.client("logs", system.region)
    got = list(aws.paginate(c, "describe_log_groups", "logGroups", logGroupIdentifiers=[g[0] for g in groups]))
    if any("storedBytes" not in g and "metricFilterCount" not in g for g in got):
        # an answer cut down to name, ARN and creation time (as AWS answers a logGroupNamePattern): its retention would
        # read as "never expires"; read each group in full instead
        return [read_log_group(system, *g) for g in groups]
    seen = {g["logGroupName"]: g for g in got}
    return [LogGroupState(name=n, audit=a, named=named, retention_days=seen[n].get("retentionInDays"), stored_bytes=seen[n].get("storedBytes", 0))
            if n in seen else LogGroupState(name=n, audit=a, named=named, exists=False) for n, a, named in groups]


@aws_task(iam=["logs:DescribeLogGroups"], name="read-log-retention", cache_policy=NO_CACHE)
def read_log_retention(system: System, found: Discovered, deadline: aws.Deadline, only: list[str] | None = None) -> list[LogGroupState]:
    """Every log group's retention and size: 50 groups a DescribeLogGroups call (its quota is 5 calls a second), the
    batches read concurrently; a batch that failed makes each of its groups UNKNOWN with the reason."""
    groups = [g for g in log_groups_of(system, found) if only is None or g[0] in only]
    batches = [groups[i:i + DESCRIBE_BATCH] for i in range(0, len(groups), DESCRIBE_BATCH)]
    return [s for batch, states, err in aws.parallel(lambda b: read_log_group_batch(system, b), batches, deadline=deadline)
            for s in (states if err is None else [LogGroupState(name=n, audit=a, named=named, error=aws.describe_error(err)) for n, a, named in batch])]


def read_audit_events(system: System, group: str, now: datetime) -> AuditSample:
    """The last AUDIT_LOOKBACK_DAYS of events (capped), a seeded sample of them, and the personal data or secrets it holds (masked)."""
    c = aws.client("logs", system.region)
    start = int((now - timedelta(days=AUDIT_LOOKBACK_DAYS)).timestamp() * 1000)
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start, "endTime": int(now.timestamp() * 1000)}
    truncated = False
    while True:
        page = c.filter_log_events(**kwargs)
        events += [{k: e.get(k) for k in ("logStreamName", "timestamp", "message", "eventId")} for e in page.get("events", [])]
        token = page.get("nextToken")
        if not token:
            break
        if len(events) >= AUDIT_MAX_EVENTS_READ:
            truncated = True
            break
        kwargs["nextToken"] = token
    picked = pii.sample(events, system.audit.audit_sample_size, system.audit.audit_sample_seed)
    return AuditSample(log_group=group, read=len(events), sampled=len(picked), truncated=truncated, hits=pii.hits(group, picked))


@aws_task(iam=["logs:FilterLogEvents"], name="sample-audit-logs", cache_policy=NO_CACHE)
def sample_audit_logs(system: System, deadline: aws.Deadline) -> list[AuditSample]:
    now = datetime.now(timezone.utc)
    groups = [g.name for g in system.log_groups if g.audit]
    return [s if err is None else AuditSample(log_group=g, error=aws.describe_error(err))
            for g, s, err in aws.parallel(lambda g: read_audit_events(system, g, now), groups, deadline=deadline)]


@declares(["logs:DescribeLogGroups"])
def read_retention(system: System, group: str) -> str:
    s = read_log_group(system, group, False, True)
    if not s.exists:
        raise RuntimeError(f"log group {group} does not exist")
    return str(s.retention_days) if s.retention_days is not None else NO_RETENTION


@declares(["logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy"])
def set_retention(system: System, group: str, value: str) -> None:
    c = aws.client("logs", system.region)
    if value == NO_RETENTION:
        c.delete_retention_policy(logGroupName=group)
    else:
        c.put_retention_policy(logGroupName=group, retentionInDays=int(value))


# --- agents' execution_time lines of an ECS service (001 성능 이슈 대응 1: 병목 에이전트 식별) -----------------------------

TIMING_PATTERN = "execution_time"  # the seed's own filter (aws logs filter-log-events --filter-pattern "execution_time")
TIMING_LINES_MAX = 5_000  # per service and run; beyond it the p95s are of the first lines only (said in the findings)
TIMING_WINDOW_MINUTES = 60


@aws_task(iam=["logs:FilterLogEvents"], cache_policy=NO_CACHE)
def check_agent_times(system: System, states: list[Finding], deadline: aws.Deadline, minutes: int = TIMING_WINDOW_MINUTES) -> list[Finding]:
    """Each ECS service with a log_group: its lines carrying agent and execution_time over the last hour (FilterLogEvents,
    every page up to TIMING_LINES_MAX), each agent's p95 and the pipeline's against the inventory's targets. ``states``:
    check_services' findings (a service that runs tasks and logs no timing is UNKNOWN; one that runs none is not)."""
    svcs = [s for s in system.ecs_services if s.log_group]
    if not svcs:
        return []
    running = {f.resource: f.details.get("running") for f in states if f.check == "ecs-service"}
    end = datetime.now(timezone.utc)
    start = end - timedelta(minutes=minutes)
    res = aws.parallel(lambda s: read_events(system.region, s.log_group or "", TIMING_PATTERN, start, end, TIMING_LINES_MAX), svcs, deadline=deadline)
    out: list[Finding] = []
    for svc, got, err in res:
        name = f"{svc.cluster}/{svc.service}"
        if err is not None:
            why = f"log group {svc.log_group}: {aws.describe_error(err)}"
            out += judge_agents(name, svc.log_group or "", None, system.thresholds, running.get(name), why)
            continue
        events, truncated = got or ([], False)
        timings = agent_timings(e["message"] for e in events)
        out += judge_agents(name, svc.log_group or "", timings, system.thresholds, running.get(name), None, truncated, minutes)
    return out


# --- a queue-fed worker's errors: the provider's and its own (daily-health, emergency-check, diagnose-stuck-processing) ---

from opsbook.processing import consumer_queues, judge_worker_errors, settings  # noqa: E402  (this section is appended)

WORKER_MAX_EVENTS = 2_000  # per worker and run: enough to split and sample; beyond it the counts are lower bounds


def read_worker_lines(system: System, group: str, hours: float, now: datetime) -> tuple[list[tuple[datetime, str]], bool]:
    events, truncated = read_events(system.region, group, settings(system).worker_error_filter, now - timedelta(hours=hours), now,
                                    max_events=WORKER_MAX_EVENTS)
    return [(datetime.fromtimestamp(e["timestamp"] / 1000, timezone.utc), mask_log(e["message"])) for e in events], truncated


@aws_task(iam=["logs:FilterLogEvents"], name="check-worker-errors", cache_policy=NO_CACHE)
def check_worker_errors(system: System, deadline: aws.Deadline, hours: float = 24) -> list[Finding]:
    """Each queue-fed worker's error lines of the last ``hours`` (its log group), split into the external provider's
    (stuck_processing.external_error_patterns: 429, 5xx, timeouts) and its own, with a masked sample of each."""
    cfg, th = settings(system), system.thresholds
    groups = {f.name: f.log_group_name for f in system.lambda_functions}
    workers = list(dict.fromkeys(fn for _, fn in consumer_queues(system)))
    now = datetime.now(timezone.utc)
    out = []
    for fn, res, err in aws.parallel(lambda f: read_worker_lines(system, groups.get(f, f"/aws/lambda/{f}"), hours, now), workers, deadline=deadline):
        group = groups.get(fn, f"/aws/lambda/{fn}")
        lines, truncated = res if res is not None else (None, False)
        out.append(judge_worker_errors(fn, group, lines, aws.unreadable(err), cfg.external_error_patterns, cfg.provider, hours,
                                       th.log_errors_warn, th.log_errors_crit, truncated, missing_group=err is not None and aws.is_not_found(err)))
    return out
