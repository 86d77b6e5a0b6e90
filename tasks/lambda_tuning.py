"""Lambda timeouts: read the evidence, judge it, size a fix, and the appliers that set it.

Sources: 000 문제 1 (Lambda 함수 타임아웃: "Task timed out" lines in the last
hour, Duration Average/Maximum, then a longer timeout or more memory) and 002
문제 2 (간헐적 5XX: memory 512, timeout 30 for todo-api behind API Gateway).

Reading (tasks, each declaring its IAM actions):
- ``read_configs``: GetFunctionConfiguration (timeout, memory, LastModified)
  and ListEventSourceMappings (the SQS queues that feed the function);
- ``scan_timeouts``: FilterLogEvents ``"Task timed out"`` over every page, at
  most 5 requests a second (the published quota, through ``aws.limiter``);
- ``read_duration_metrics``: one batched GetMetricData for every function
  (AWS/Lambda Invocations, Errors, Duration Average and Maximum);
- ``read_queues``: GetQueueAttributes VisibilityTimeout of those queues.

Only timeouts at the function's *current* setting count: a line is counted
when it is newer than the last configuration change (LastModified, or the
last change opsbook recorded) and says "after N seconds" with N the current
timeout. Older lines are reported as earlier, never as the basis of a fix, so
running again after a fix plans nothing.

Judging and sizing (pure functions, unit-tested without AWS): ``diagnose``
gives a verdict per function and the actions its fix needs; see its docstring
for the rules and bounds.
"""

from __future__ import annotations

import math
import re
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task, declares
from opsbook.inventory import LambdaFunction, System
from opsbook.mutation.core import Action, Applier
from opsbook.pii import mask_log
from tasks.cloudwatch import get_metric_data
from tasks.logs import FILTER_LOG_EVENTS_TPS

TIMEOUT_KIND, MEMORY_KIND, VISIBILITY_KIND = "lambda-timeout", "lambda-memory", "sqs-visibility"
IAM = {TIMEOUT_KIND: "lambda:UpdateFunctionConfiguration", MEMORY_KIND: "lambda:UpdateFunctionConfiguration",
       VISIBILITY_KIND: "sqs:SetQueueAttributes"}

LAMBDA_MIN_TIMEOUT_S, LAMBDA_MAX_TIMEOUT_S = 1, 900
LAMBDA_MIN_MEMORY_MB, LAMBDA_MAX_MEMORY_MB = 128, 10240
ONE_VCPU_MB = 1769  # Lambda gives a full vCPU at 1769 MB; above it, more vCPUs (only multi-threaded code gains)
MEMORY_STEP_MB = 64
SQS_MAX_VISIBILITY_S = 43200  # 12 h
HANG_FRACTION = 0.25  # the invocations that did not time out average below this share of the timeout: a hang
NEAR_FRACTION = 0.8  # a healthy function whose longest run is above this share of its timeout is "close"

TIMEOUT_PATTERN = '"Task timed out"'
# after a change: invocations (REPORT lines) and timeouts in one scan; classified here (see classify)
OBSERVE_PATTERN = '?"Task timed out" ?"REPORT RequestId"'
_TIMEOUT_RE = re.compile(r"Task timed out after (\d+(?:\.\d+)?) seconds")
_REPORT_RE = re.compile(r"REPORT RequestId:.*?\bDuration: (\d+(?:\.\d+)?) ms")


# --- models ------------------------------------------------------------------------------------


class FunctionConfig(BaseModel):
    name: str
    timeout_s: int | None = None
    memory_mb: int | None = None
    state: str | None = None
    last_update_status: str | None = None
    last_modified: datetime | None = None
    queues: list[str] = Field(default_factory=list, description="SQS queues with an event source mapping to the function")
    mapping_error: str | None = None
    error: str | None = None
    missing: bool = False


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


class DurationStats(BaseModel):
    function: str
    since: datetime
    invocations: float = 0
    errors: float = 0
    avg_ms: float | None = None
    max_ms: float | None = None
    datapoints: int = 0


class QueueState(BaseModel):
    name: str
    visibility_s: int | None = None
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


# --- small helpers -------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """Lambda's LastModified ('2024-05-01T18:27:43.112+0000', or moto's nanosecond ISO form) as aware UTC."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    s = str(value).strip().replace("Z", "+00:00")
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?([+-]\d{2}:?\d{2})?$", s)
    if not m:
        return None
    frac = (m.group(2) or ".0")[:7]
    tz = m.group(3) or "+00:00"
    if ":" not in tz:
        tz = tz[:3] + ":" + tz[3:]
    return datetime.fromisoformat(m.group(1) + frac + tz).astimezone(timezone.utc)


def ceil_minute(t: datetime) -> datetime:
    floor = t.replace(second=0, microsecond=0)
    return floor if floor == t else floor + timedelta(minutes=1)


def queue_name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


def classify(message: str) -> tuple[str | None, float | None]:
    """('timeout', seconds) for a "Task timed out after N seconds" line, ('report', ms) for a REPORT line, else (None, None)."""
    m = _TIMEOUT_RE.search(message)
    if m:
        return "timeout", float(m.group(1))
    m = _REPORT_RE.search(message)
    if m:
        return "report", float(m.group(1))
    return None, None


def api_caps(system: System) -> dict[str, tuple[int, str]]:
    """function -> (the longest timeout it may have, the API that bounds it): strictly below the integration timeout."""
    out: dict[str, tuple[int, str]] = {}
    for api in system.api_gateway_apis:
        cap = max(LAMBDA_MIN_TIMEOUT_S, api.integration_timeout_s - 1)
        for fn in api.functions:
            if fn not in out or cap < out[fn][0]:
                out[fn] = (cap, f"{api.name} (integration timeout {api.integration_timeout_s} s)")
    return out


def queue_sources(fn: LambdaFunction | None, cfg: FunctionConfig | None) -> list[str]:
    names = ([fn.sqs_source] if fn and fn.sqs_source else []) + (cfg.queues if cfg else [])
    return list(dict.fromkeys(names))


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


# --- reading ---------------------------------------------------------------------------------------


@declares(["lambda:GetFunctionConfiguration", "lambda:ListEventSourceMappings"])
def read_config(region: str, name: str) -> FunctionConfig:
    c = aws.client("lambda", region)
    try:
        cfg = c.get_function_configuration(FunctionName=name)
    except Exception as exc:
        if aws.is_not_found(exc):
            return FunctionConfig(name=name, missing=True, error="the function does not exist (check the inventory name and region)")
        return FunctionConfig(name=name, error=aws.describe_error(exc))
    out = FunctionConfig(name=name, timeout_s=cfg.get("Timeout"), memory_mb=cfg.get("MemorySize"), state=cfg.get("State"),
                         last_update_status=cfg.get("LastUpdateStatus"), last_modified=parse_time(cfg.get("LastModified")))
    try:
        arns = [m.get("EventSourceArn", "") for m in aws.paginate(c, "list_event_source_mappings", "EventSourceMappings", FunctionName=name)]
        out.queues = [queue_name(a) for a in arns if a.startswith("arn:") and a.split(":")[2] == "sqs"]
    except Exception as exc:  # the inventory's sqs_source still applies; the gap is reported
        out.mapping_error = aws.describe_error(exc)
    return out


@aws_task(iam=["lambda:GetFunctionConfiguration", "lambda:ListEventSourceMappings"], name="read-lambda-configs", cache_policy=NO_CACHE)
def read_configs(system: System, names: list[str], deadline: aws.Deadline) -> list[FunctionConfig]:
    out = []
    for name, cfg, err in aws.parallel(lambda n: read_config(system.region, n), names, deadline=deadline):
        out.append(cfg if err is None else FunctionConfig(name=name, error=aws.describe_error(err)))
    return out


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


def count_timeouts(fn: str, log_group: str, events: list[tuple[datetime, str]], since: datetime, timeout_s: int | None,
                   pages: int) -> TimeoutScan:
    """Timeouts at the current setting since the last change; the rest are ``earlier``."""
    scan = TimeoutScan(function=fn, log_group=log_group, since=since, pages=pages)
    for at, msg in events:
        kind, seconds = classify(msg)
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


@aws_task(iam=["logs:FilterLogEvents"], name="scan-lambda-timeouts", cache_policy=NO_CACHE)
def scan_timeouts(system: System, configs: list[FunctionConfig], since: dict[str, datetime], window_start: datetime,
                  deadline: aws.Deadline) -> list[TimeoutScan]:
    """'Task timed out' lines in each function's log group over the window (every page; the earlier ones are kept apart)."""
    groups = {f.name: f.log_group_name for f in system.lambda_functions}
    end = datetime.now(timezone.utc)
    todo = [c for c in configs if c.error is None]

    def one(cfg: FunctionConfig) -> TimeoutScan:
        group = groups.get(cfg.name, f"/aws/lambda/{cfg.name}")
        events, pages = scan_log(system.region, group, TIMEOUT_PATTERN, window_start, end)
        return count_timeouts(cfg.name, group, events, since[cfg.name], cfg.timeout_s, pages)

    out = []
    for cfg, scan, err in aws.parallel(one, todo, deadline=deadline, max_workers=5):
        if err is not None:
            group = groups.get(cfg.name, f"/aws/lambda/{cfg.name}")
            why = ("log group does not exist (the function never wrote a log line, or its log_group is wrong)"
                   if aws.is_not_found(err) else aws.describe_error(err))
            scan = TimeoutScan(function=cfg.name, log_group=group, since=since[cfg.name], error=why)
        out.append(scan)
    return out


def metric_queries(names: list[str]) -> list[dict[str, Any]]:
    out = []
    for i, fn in enumerate(names):
        for metric, stat, key in (("Invocations", "Sum", "inv"), ("Errors", "Sum", "err"), ("Duration", "Average", "avg"),
                                  ("Duration", "Maximum", "max")):
            out.append({"Id": f"f{i}_{key}", "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": "AWS/Lambda", "MetricName": metric, "Dimensions": [{"Name": "FunctionName", "Value": fn}]},
                "Period": 60, "Stat": stat}})
    return out


def summarize(fn: str, since: datetime, series: dict[str, list[tuple[datetime, float]]], i: int) -> DurationStats:
    """One function's numbers over its window: sums, the maximum, and the average weighted by each minute's invocations."""
    inv = dict(series.get(f"f{i}_inv", []))
    avg = series.get(f"f{i}_avg", [])
    mx = [v for _, v in series.get(f"f{i}_max", [])]
    stats = DurationStats(function=fn, since=since, invocations=sum(inv.values()), errors=sum(v for _, v in series.get(f"f{i}_err", [])),
                          max_ms=max(mx) if mx else None, datapoints=len(inv))
    if avg:
        weights = [inv.get(t, 0.0) for t, _ in avg]
        total = sum(weights)
        stats.avg_ms = (sum(w * v for w, (_, v) in zip(weights, avg)) / total) if total else sum(v for _, v in avg) / len(avg)
    return stats


@aws_task(iam=["cloudwatch:GetMetricData"], name="read-lambda-metrics", cache_policy=NO_CACHE)
def read_duration_metrics(system: System, since: dict[str, datetime]) -> list[DurationStats]:
    """One GetMetricData request for every function (batched by 500 queries), per function window.

    Each function is read from its own start (a minute boundary after its last change): functions are grouped by start."""
    end = datetime.now(timezone.utc)
    by_start: dict[datetime, list[str]] = {}
    for fn, t in since.items():
        by_start.setdefault(ceil_minute(t), []).append(fn)
    out: dict[str, DurationStats] = {}
    for start, names in by_start.items():
        if (end - start).total_seconds() < 60:  # changed less than a minute ago: no full minute to read yet
            out.update({fn: DurationStats(function=fn, since=start) for fn in names})
            continue
        series = get_metric_data(system.region, metric_queries(names), start, end)
        out.update({fn: summarize(fn, start, series, i) for i, fn in enumerate(names)})
    return [out[fn] for fn in since]


@declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes"])
def read_visibility(region: str, name: str) -> int:
    c = aws.client("sqs", region)
    url = c.get_queue_url(QueueName=name)["QueueUrl"]
    return int(c.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]["VisibilityTimeout"])


@aws_task(iam=["sqs:GetQueueUrl", "sqs:GetQueueAttributes"], name="read-source-queues", cache_policy=NO_CACHE)
def read_queues(system: System, configs: list[FunctionConfig], deadline: aws.Deadline) -> list[QueueState]:
    fns = {f.name: f for f in system.lambda_functions}
    names = list(dict.fromkeys(q for c in configs for q in queue_sources(fns.get(c.name), c)))
    out = []
    for name, vis, err in aws.parallel(lambda n: read_visibility(system.region, n), names, deadline=deadline):
        if err is None:
            out.append(QueueState(name=name, visibility_s=vis))
        else:
            out.append(QueueState(name=name, error="the queue does not exist" if aws.is_not_found(err) else aws.describe_error(err)))
    return out


# --- judging and sizing (pure) ------------------------------------------------------------------------


def _fmt_s(ms: float | None) -> str:
    return "?" if ms is None else f"{ms / 1000:.2f} s"


def memory_target(current_mb: int, needed_s: float, allowed_s: float, max_mb: int) -> int:
    """More memory is more CPU: scale by how much faster it must run (needed / allowed), up to a 64 MB step, within bounds."""
    ratio = max(needed_s / max(allowed_s, 1), 1.0)
    target = math.ceil(current_mb * ratio / MEMORY_STEP_MB) * MEMORY_STEP_MB
    target = max(target, current_mb + MEMORY_STEP_MB)
    return min(target, max_mb, LAMBDA_MAX_MEMORY_MB)


def diagnose(system: System, cfg: FunctionConfig, scan: TimeoutScan | None, stats: DurationStats | BaseException | None,
             queues: dict[str, QueueState]) -> Diagnosis:
    """The verdict on one function and, when it times out for lack of time, the actions that fix it.

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
    pol = system.remediation
    fn_spec = next((f for f in system.lambda_functions if f.name == cfg.name), None)
    name = cfg.name
    check = "lambda-timeouts"
    d: dict[str, Any] = {"function": name}

    def out(verdict: str, status: Status, summary: str, value: float | None = None, **kw: Any) -> Diagnosis:
        return Diagnosis(function=name, verdict=verdict, finding=Finding(check=check, resource=name, status=status, summary=summary[:600],
                                                                        value=value, details=d), **kw)

    if cfg.error:
        return out("unreadable", Status.UNKNOWN, f"could not be read: {cfg.error}")
    d.update(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb, state=cfg.state, last_update_status=cfg.last_update_status)
    if cfg.last_update_status == "InProgress":
        return out("unreadable", Status.UNKNOWN, "a configuration update is in progress: the numbers would mix two settings; run again when it is done")
    if scan is None or scan.error:
        return out("unreadable", Status.UNKNOWN, f"timeouts could not be counted: {scan.error if scan else 'no scan'}; nothing is proposed without them")
    d.update(timeouts=scan.count, earlier_timeouts=scan.earlier, since=scan.since.isoformat(timespec="seconds"), samples=scan.samples)
    if isinstance(stats, BaseException) or stats is None:
        why = aws.describe_error(stats) if isinstance(stats, BaseException) else "no metrics read"
        return out("unreadable", Status.UNKNOWN, f"Duration metrics could not be read ({why}); {scan.count} timeout(s) in the logs since "
                   f"{scan.since:%H:%M} UTC; nothing is proposed without the durations", value=scan.count)
    d.update(invocations=stats.invocations, errors=stats.errors, avg_ms=stats.avg_ms, max_ms=stats.max_ms)
    timeout_s, memory_mb = cfg.timeout_s or 0, cfg.memory_mb or 0
    earlier = (f"; {scan.earlier} earlier timeout(s) before the last change ({scan.since:%Y-%m-%d %H:%M} UTC) or at another setting, not counted"
               if scan.earlier else "")
    numbers = (f"{stats.invocations:g} invocation(s), {stats.errors:g} error(s), Duration avg {_fmt_s(stats.avg_ms)}, max {_fmt_s(stats.max_ms)}; "
               f"timeout {timeout_s} s, memory {memory_mb} MB")
    extra: list[Finding] = []
    notes: list[str] = []
    sources = queue_sources(fn_spec, cfg)
    if cfg.mapping_error:
        notes.append(f"{name}: event source mappings could not be listed ({cfg.mapping_error}); only the inventory's sqs_source was considered")
    for q in sources:
        qs = queues.get(q)
        if qs and qs.visibility_s is not None and timeout_s:
            if qs.visibility_s < timeout_s:
                extra.append(Finding(check="lambda-queue-visibility", resource=q, status=Status.WARN, value=qs.visibility_s,
                                     summary=f"VisibilityTimeout {qs.visibility_s} s is shorter than {name}'s timeout {timeout_s} s: a message "
                                             f"still being processed becomes visible again and is processed twice; raise it to >= "
                                             f"{math.ceil(pol.sqs_visibility_factor * timeout_s)} s ({pol.sqs_visibility_factor:g}x the timeout)"))
            elif qs.visibility_s < pol.sqs_visibility_factor * timeout_s:
                notes.append(f"{q}: VisibilityTimeout {qs.visibility_s} s is below {pol.sqs_visibility_factor:g}x {name}'s timeout "
                             f"({math.ceil(pol.sqs_visibility_factor * timeout_s)} s, AWS's advice for SQS-fed functions)")

    if stats.invocations <= 0:
        if scan.count:
            return out("no-data", Status.UNKNOWN, f"{scan.count} timeout(s) in the logs since {scan.since:%H:%M} UTC but no Invocations datapoint "
                       f"(metrics lag a few minutes): run again in a few minutes; nothing is proposed without the durations{earlier}",
                       value=scan.count, extra_findings=extra, notes=notes)
        return out("no-data", Status.UNKNOWN, f"no invocation since {scan.since:%Y-%m-%d %H:%M} UTC: nothing to judge "
                   f"(timeout {timeout_s} s, memory {memory_mb} MB); run again once it has traffic{earlier}", value=0,
                   unchanged=f"{name}: no invocation to judge", extra_findings=extra, notes=notes)

    cap_api = api_caps(system).get(name)
    if scan.count == 0 and cap_api and timeout_s > cap_api[0]:
        notes.append(f"{name}: its timeout {timeout_s} s is not below {cap_api[1]}: the API gives up first; not changed while it does "
                     f"not time out (align it to <= {cap_api[0]} s with its next change)")
    if scan.count == 0:
        close = ""
        if stats.max_ms is not None and timeout_s and stats.max_ms >= NEAR_FRACTION * timeout_s * 1000:
            close = f"; the longest run used {stats.max_ms / 10 / timeout_s:.0f}% of the timeout: close, watch it"
        return out("healthy", Status.OK, f"no timeout since {scan.since:%Y-%m-%d %H:%M} UTC: {numbers}{close}{earlier}", value=0,
                   unchanged=f"{name}: no timeout (timeout {timeout_s} s, memory {memory_mb} MB, max {_fmt_s(stats.max_ms)})",
                   extra_findings=extra, notes=notes)

    k = scan.count
    n = max(stats.invocations, k)
    head = f"{k} timeout(s) in {n:g} invocation(s) since {scan.since:%Y-%m-%d %H:%M} UTC ({100 * k / n:.0f}%): {numbers}"
    if stats.avg_ms is not None and n > k and timeout_s:
        others_ms = max(0.0, (stats.avg_ms * n - k * timeout_s * 1000) / (n - k))
        d["others_avg_ms"] = round(others_ms, 1)
        if others_ms < HANG_FRACTION * timeout_s * 1000:
            return out("hang", Status.WARN,
                       f"{head}. The other invocations average {_fmt_s(others_ms)} ({100 * others_ms / (timeout_s * 1000):.0f}% of the timeout): "
                       "the timeouts look like a downstream call hanging (a database, HTTP or Bedrock call without its own timeout), "
                       "not a function too slow for its timeout; a longer timeout would only make them hang longer, so none is proposed. "
                       "Find the call in X-Ray traces or the log lines before each timeout, give the client a timeout shorter than the "
                       f"function's, and retry with backoff{earlier}", value=k, extra_findings=extra,
                       notes=notes + [f"{name}: timeouts with durations far below the timeout: not raised (see the finding)"])

    # too slow for its timeout: size the fix
    longest_s = max((stats.max_ms or 0) / 1000, scan.longest_s or 0, float(timeout_s))
    needed = max(LAMBDA_MIN_TIMEOUT_S, math.ceil(longest_s * pol.lambda_timeout_headroom))
    bounds: list[tuple[int, str, str]] = [(LAMBDA_MAX_TIMEOUT_S, "lambda", "Lambda's limit of 900 s"),
                                          (pol.lambda_max_timeout_s, "policy", f"the policy's lambda_max_timeout_s {pol.lambda_max_timeout_s} s")]
    if cap_api:
        bounds.append((cap_api[0], "api", f"API Gateway {cap_api[1]}: a function behind it must time out before it, at most {cap_api[0]} s"))
    if sources:
        sqs_cap = int(SQS_MAX_VISIBILITY_S // pol.sqs_visibility_factor)
        bounds.append((sqs_cap, "sqs", f"SQS's 12 h visibility limit / {pol.sqs_visibility_factor:g}"))
    cap, bound_kind, bound_why = min(bounds, key=lambda b: b[0])
    target = min(needed, cap)
    bound_hit = needed > cap
    d.update(needed_timeout_s=needed, cap_s=cap, bound=bound_kind if bound_hit else None)
    actions: list[Action] = []
    cannot: list[str] = []
    why_needed = (f"longest run {longest_s:.2f} s x headroom {pol.lambda_timeout_headroom:g} = {needed} s "
                  "(durations stop at the timeout, so the real need may be longer: the next run checks again)")

    # a queue feeding it must keep its messages invisible for factor x the new timeout
    vis_actions: list[Action] = []
    for q in sources:
        qs = queues.get(q)
        want = min(SQS_MAX_VISIBILITY_S, math.ceil(pol.sqs_visibility_factor * target))
        if qs is None or qs.visibility_s is None:
            if target > timeout_s:
                cannot.append(f"{name}: its queue {q} could not be read ({qs.error if qs else 'not read'}): a longer timeout needs "
                              f"VisibilityTimeout >= {want} s there, so the timeout is not raised blind")
            continue
        if target > timeout_s and qs.visibility_s < want:
            vis_actions.append(Action(kind=VISIBILITY_KIND, resource=q, current=str(qs.visibility_s), target=str(want), iam_action=IAM[VISIBILITY_KIND],
                                      evidence=f"feeds {name}, whose timeout goes {timeout_s} -> {target} s: VisibilityTimeout must stay >= "
                                               f"{pol.sqs_visibility_factor:g}x the timeout or messages still in work are delivered twice; raised "
                                               "(applied first, undone last) rather than capping the timeout, which would leave the timeouts. "
                                               "A failed message now waits this long before its retry"))
    if cannot and target > timeout_s:
        return out("timing-out", Status.WARN, f"{head}. Not fixed: " + "; ".join(cannot), value=k, cannot=cannot, extra_findings=extra, notes=notes)
    actions += vis_actions

    if target > timeout_s:
        actions.append(Action(kind=TIMEOUT_KIND, resource=name, current=str(timeout_s), target=str(target), iam_action=IAM[TIMEOUT_KIND],
                              evidence=f"{k} timeout(s) in {n:g} invocation(s); {why_needed}" + (f"; capped at {cap} s by {bound_why}" if bound_hit else "")))
    elif bound_kind == "api" and timeout_s > cap:
        actions.append(Action(kind=TIMEOUT_KIND, resource=name, current=str(timeout_s), target=str(cap), iam_action=IAM[TIMEOUT_KIND],
                              evidence=f"aligned below {bound_why}: the API answers 504 at its limit, so a longer function timeout only "
                                       "keeps running (and billing) after the client is gone, and its own timeout line never matches the 5XX"))
    fix_words = []
    if bound_hit:
        allowed = max(target, 1)
        if memory_mb >= min(pol.lambda_max_memory_mb, LAMBDA_MAX_MEMORY_MB):
            cannot.append(f"{name}: needs {needed} s but {bound_why}, and memory is already at the policy's maximum "
                          f"{min(pol.lambda_max_memory_mb, LAMBDA_MAX_MEMORY_MB)} MB: only the code can fix it (fewer calls, queries, "
                          "parallel work, or an asynchronous design)")
        else:
            mem = memory_target(memory_mb, needed, allowed, pol.lambda_max_memory_mb)
            vcpu = (f"; above {ONE_VCPU_MB} MB Lambda adds vCPUs, which only multi-threaded code uses" if mem > ONE_VCPU_MB else "")
            cant = ("a longer timeout cannot help: " if bound_kind == "api" else "the timeout cannot go further: ")
            actions.append(Action(kind=MEMORY_KIND, resource=name, current=str(memory_mb), target=str(mem), iam_action=IAM[MEMORY_KIND],
                                  evidence=f"{cant}{why_needed}, but {bound_why}. More memory brings proportionally more CPU: "
                                           f"{memory_mb} -> {mem} MB (x{needed / allowed:.2f}, needed / allowed{', capped by the policy' if mem >= pol.lambda_max_memory_mb else ''})"
                                           f"{vcpu}; if the time goes to waiting on another service, fix that instead"))
            fix_words.append(f"memory {memory_mb} -> {mem} MB ({cant.rstrip(': ')})")
    for a in actions:
        if a.kind == TIMEOUT_KIND:
            fix_words.insert(0, f"timeout {a.current} -> {a.target} s")
        elif a.kind == VISIBILITY_KIND:
            fix_words.append(f"{a.resource} visibility {a.current} -> {a.target} s")
    summary = f"{head}. " + ("Proposed: " + "; ".join(fix_words) if fix_words else "Nothing can be proposed") + (". " + "; ".join(cannot) if cannot else "")
    return out("timing-out", Status.WARN, summary + earlier, value=k, actions=actions, cannot=cannot, extra_findings=extra, notes=notes)


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


# --- observing after a change -----------------------------------------------------------------------


def observe_once(region: str, fn: str, log_group: str, since: datetime) -> Observation:
    events, _ = scan_log(region, log_group, OBSERVE_PATTERN, since, datetime.now(timezone.utc) + timedelta(seconds=1))
    obs = Observation(function=fn, since=since)
    for at, msg in events:
        if at < since:
            continue
        kind, value = classify(msg)
        if kind == "timeout":
            obs.timeouts += 1
            if len(obs.samples) < 3:
                obs.samples.append(mask_log(msg.strip())[:200])
        elif kind == "report" and value is not None:
            obs.invocations += 1
            obs.longest_ms = max(obs.longest_ms or 0.0, value)
    obs.invocations = max(obs.invocations, obs.timeouts)
    return obs


# --- appliers ----------------------------------------------------------------------------------------


def _wait_updated(system: System, fn: str, timeout_s: float) -> dict[str, Any]:
    """Wait (bounded) until the function's last update is no longer InProgress; raise when it Failed."""
    c = aws.client("lambda", system.region)
    started = time.monotonic()
    polls = 0
    while True:
        cfg = c.get_function_configuration(FunctionName=fn)
        status = cfg.get("LastUpdateStatus", "Successful")
        if status == "Failed":
            raise RuntimeError(f"{fn}: the configuration update failed: {cfg.get('LastUpdateStatusReason') or cfg.get('LastUpdateStatusReasonCode') or '?'}")
        if status != "InProgress":
            return cfg
        elapsed = time.monotonic() - started
        if elapsed >= timeout_s:
            raise TimeoutError(f"{fn}: LastUpdateStatus still InProgress after {timeout_s:g} s")
        print(f"opsbook: {fn}: waiting for the configuration update (LastUpdateStatus InProgress, {elapsed:.0f}/{timeout_s:g} s)", file=sys.stderr)
        time.sleep(min(0.25 * 2 ** polls, 2.0, max(0.1, timeout_s - elapsed)))  # 0.25, 0.5, 1, 2, 2, ... s
        polls += 1


def _reader(key: str) -> Any:
    @declares(["lambda:GetFunctionConfiguration"])
    def read(system: System, fn: str) -> str:
        return str(aws.client("lambda", system.region).get_function_configuration(FunctionName=fn)[key])

    return read


def _setter(key: str) -> Any:
    @declares(["lambda:GetFunctionConfiguration", "lambda:UpdateFunctionConfiguration"])
    def apply(system: System, fn: str, value: str) -> None:
        """Idempotent: waits for any update in progress, sets the value if it differs, waits until Successful."""
        settle = min(float(system.mutations.settle_timeout_s), 300.0)
        cfg = _wait_updated(system, fn, settle)
        if str(cfg[key]) == value:
            return
        aws.client("lambda", system.region).update_function_configuration(FunctionName=fn, **{key: int(value)})
        _wait_updated(system, fn, settle)

    return apply


@declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes"])
def read_queue_visibility(system: System, queue: str) -> str:
    return str(read_visibility(system.region, queue))


@declares(["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SetQueueAttributes"])
def set_queue_visibility(system: System, queue: str, value: str) -> None:
    if read_queue_visibility(system, queue) == value:
        return
    c = aws.client("sqs", system.region)
    c.set_queue_attributes(QueueUrl=c.get_queue_url(QueueName=queue)["QueueUrl"], Attributes={"VisibilityTimeout": value})


APPLIERS = {
    TIMEOUT_KIND: Applier(read=_reader("Timeout"), apply=_setter("Timeout")),
    MEMORY_KIND: Applier(read=_reader("MemorySize"), apply=_setter("MemorySize")),
    VISIBILITY_KIND: Applier(read=read_queue_visibility, apply=set_queue_visibility),
}


@declares(["lambda:GetFunctionConfiguration", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"])
def read_back(system: System, kind: str, resource: str) -> tuple[str, str]:
    """(value, how it reads) for the verification: a Lambda value counts once its update is no longer in progress."""
    if kind == VISIBILITY_KIND:
        v = read_queue_visibility(system, resource)
        return v, f"VisibilityTimeout {v} s"
    cfg = aws.client("lambda", system.region).get_function_configuration(FunctionName=resource)
    key = "Timeout" if kind == TIMEOUT_KIND else "MemorySize"
    status = cfg.get("LastUpdateStatus", "Successful")
    value = str(cfg[key]) if status == "Successful" else f"{cfg[key]} ({status})"
    return value, f"{key} {cfg[key]}{' s' if key == 'Timeout' else ' MB'}, LastUpdateStatus {status}"
