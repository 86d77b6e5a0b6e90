"""CloudWatch Logs: count matching lines in a time window, over every page."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.components import judge_count
from opsbook.findings import Finding
from opsbook.iam import aws_task
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
