"""CloudWatch Logs: count matching lines in a time window, over every page."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws, pii
from opsbook.findings import Finding, by_threshold, unknown
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


def judge_count(check: str, log_group: str, res: dict[str, Any] | None, err: BaseException | None, warn: int, crit: int, what: str) -> Finding:
    if err is not None:
        if aws.is_not_found(err):
            return unknown(check, log_group, "log group does not exist (never written to, or wrong name)")
        return unknown(check, log_group, aws.describe_error(err))
    assert res is not None
    n = res["count"]
    status = by_threshold(n, warn, crit)
    summary = f"{n} {what} in the last 24 h"
    if n and res["samples"]:
        summary += f"; e.g. {res['samples'][0]}"
    return Finding(check=check, resource=log_group, status=status, value=n, summary=summary[:400], details={"samples": res["samples"], "warn": warn, "crit": crit})


@aws_task(iam=["logs:FilterLogEvents"], cache_policy=NO_CACHE)
def check_error_logs(system: System, found: Discovered, deadline: aws.Deadline, hours: float = 24) -> list[Finding]:
    end = datetime.now(timezone.utc)
    start = end - timedelta(hours=hours)
    groups = log_groups(system, found)
    th = system.thresholds
    res = aws.parallel(lambda g: count_matches(system.region, g.name, g.error_pattern, start, end), groups, deadline=deadline)
    return [judge_count("log-errors", g.name, r, e, th.log_errors_warn, th.log_errors_crit, "ERROR lines") for g, r, e in res]


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
    return [judge_count(j[0], sec.log_group, r, e, j[2], j[3], j[4]) for j, r, e in res]


def message_shape(line: str) -> str:
    """A masked line with its variable parts (numbers, hex ids) folded, to group like messages."""
    s = re.sub(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<id>", line, flags=re.I)
    s = re.sub(r"\b[0-9a-f]{12,}\b", "<hex>", s, flags=re.I)
    s = re.sub(r"\d+", "N", s)
    return re.sub(r"\s+", " ", s).strip()


def top_messages(samples: list[str], n: int = 3) -> list[dict[str, Any]]:
    counts = Counter(message_shape(s) for s in samples)
    return [{"message": shape, "count": c} for shape, c in counts.most_common(n)]


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


def log_groups_of(system: System) -> list[tuple[str, bool, bool]]:
    """(name, audit, named in the inventory) for every function's group and the inventory's groups."""
    explicit = {g.name for g in system.log_groups}
    return [(g.name, g.audit, g.name in explicit) for g in system.all_log_groups()]


def read_log_group(system: System, name: str, audit: bool, named: bool) -> LogGroupState:
    c = aws.client("logs", system.region)
    for g in aws.paginate(c, "describe_log_groups", "logGroups", logGroupNamePrefix=name):
        if g["logGroupName"] == name:
            return LogGroupState(name=name, audit=audit, named=named, retention_days=g.get("retentionInDays"), stored_bytes=g.get("storedBytes", 0))
    return LogGroupState(name=name, audit=audit, named=named, exists=False)


@aws_task(iam=["logs:DescribeLogGroups"], name="read-log-retention", cache_policy=NO_CACHE)
def read_log_retention(system: System, deadline: aws.Deadline, only: list[str] | None = None) -> list[LogGroupState]:
    groups = [g for g in log_groups_of(system) if only is None or g[0] in only]
    return [s if err is None else LogGroupState(name=g[0], audit=g[1], named=g[2], error=aws.describe_error(err))
            for g, s, err in aws.parallel(lambda g: read_log_group(system, *g), groups, deadline=deadline)]


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


def read_retention(system: System, group: str) -> str:
    s = read_log_group(system, group, False, True)
    if not s.exists:
        raise RuntimeError(f"log group {group} does not exist")
    return str(s.retention_days) if s.retention_days is not None else NO_RETENTION


def set_retention(system: System, group: str, value: str) -> None:
    c = aws.client("logs", system.region)
    if value == NO_RETENTION:
        c.delete_retention_policy(logGroupName=group)
    else:
        c.put_retention_policy(logGroupName=group, retentionInDays=int(value))
