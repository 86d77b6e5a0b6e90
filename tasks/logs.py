"""CloudWatch Logs: count matching lines in a time window, over every page."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.components import judge_count
from opsbook.findings import Finding
from opsbook.iam import aws_task, declares
from opsbook.inventory import LogGroup, System
from opsbook.pii import mask_log
from opsbook.resources import Discovered

# FilterLogEvents is allowed 5 requests a second per account and region, a
# hard quota (AWS knowledge center: cloudwatch-logs-throttling); honoured by
# default against real AWS (see aws.quotas_enabled).
FILTER_LOG_EVENTS_TPS = 5.0


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


@aws_task(iam=["logs:FilterLogEvents"], name="recent-errors", cache_policy=NO_CACHE)
def count_recent_errors(system: System, found: Discovered, deadline: aws.Deadline, minutes: int = 60, samples: int = 20) -> list[dict[str, Any]]:
    """ERROR lines of the last ``minutes`` per function/log group, with up to ``samples`` masked lines and their
    top message shapes: [{"group", "result" (count_matches' answer + "top", None if not read), "unreadable"}]."""
    end = datetime.now(timezone.utc)
    start = end - timedelta(minutes=minutes)
    groups = log_groups(system, found)
    res = aws.parallel(lambda g: count_matches(system.region, g.name, g.error_pattern, start, end, samples=samples), groups, deadline=deadline)
    return [{"group": g.name, "result": r | {"top": top_messages(r["samples"])} if r is not None else None, "unreadable": aws.unreadable(e)}
            for g, r, e in res]


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
