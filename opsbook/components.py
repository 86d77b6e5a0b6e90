"""Health rules of one component: pure, shared by every runbook that checks health.

The check tasks in tasks/<service>.py read (daily-health, emergency-check and a mutation's verify step
submit them through tasks/health.py); these rules turn what they read into findings. No AWS, no Prefect,
no clock: a rule that needs the time is given ``now``.

What a rule is given: the answer read (a describe/get result, a count, a datapoint), and ``unreadable``,
the reason the read failed (access denied, throttled, unreachable), which is always UNKNOWN, never OK.
No answer and no reason means the resource is not there: CRIT when the inventory names it.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from opsbook.findings import Finding, Status, by_threshold, unknown, worst
from opsbook.inventory import DeclaredAlarm, DynamoTable, S3Bucket, System, name_matches


def _missing(named: bool) -> str:
    return "named in the inventory but does not exist" if named else "not found"


# --- ECS ----------------------------------------------------------------------------------------


def judge_service(cluster: str, name: str, svc: dict[str, Any] | None, named: bool, unreadable: str | None = None,
                  cluster_missing: bool = False) -> Finding:
    """Running vs desired tasks and the primary deployment's rollout (DescribeServices' answer)."""
    check, resource = "ecs-service", f"{cluster}/{name}"
    if unreadable is not None:
        return unknown(check, resource, unreadable)
    if cluster_missing:
        return Finding(check=check, resource=resource, status=Status.CRIT, summary=f"cluster {cluster} does not exist")
    if svc is None or svc.get("status") == "INACTIVE":
        return Finding(check=check, resource=resource, status=Status.CRIT,
                       summary=("named in the inventory but " if named else "") + ("does not exist" if svc is None else "is INACTIVE (deleted)"))
    running, desired, pending = svc.get("runningCount", 0), svc.get("desiredCount", 0), svc.get("pendingCount", 0)
    deps = svc.get("deployments", [])
    primary = next((d for d in deps if d.get("status") == "PRIMARY"), {})
    rollout = primary.get("rolloutState")
    details = {"running": running, "desired": desired, "pending": pending, "deployments": len(deps),
               "rollout_state": rollout, "task_definition": svc.get("taskDefinition")}
    if rollout == "FAILED":
        return Finding(check=check, resource=resource, status=Status.CRIT, value=running, details=details,
                       summary=f"deployment FAILED: {primary.get('rolloutStateReason', '')}".strip())
    if desired > 0 and running == 0:
        return Finding(check=check, resource=resource, status=Status.CRIT, value=running, details=details, summary=f"0 of {desired} tasks running")
    if running < desired:
        return Finding(check=check, resource=resource, status=Status.WARN, value=running, details=details, summary=f"{running} of {desired} tasks running ({pending} pending)")
    if len(deps) > 1 or rollout == "IN_PROGRESS":
        return Finding(check=check, resource=resource, status=Status.WARN, value=running, details=details, summary=f"{running}/{desired} running; a deployment is in progress ({len(deps)} deployments)")
    return Finding(check=check, resource=resource, status=Status.OK, value=running, details=details, summary=f"{running}/{desired} tasks running, deployment steady")


def td_revision(arn: str) -> tuple[str, int]:
    """arn:aws:ecs:...:task-definition/family:12 -> ("family", 12)."""
    family_rev = arn.rsplit("/", 1)[-1]
    family, _, rev = family_rev.rpartition(":")
    return family, int(rev)


# --- ALB ----------------------------------------------------------------------------------------


def judge_targets(tg: str, service: str, targets: list[dict[str, Any]] | None, unreadable: str | None = None) -> Finding:
    """0 healthy targets: CRIT (the ALB answers 503, the service is down); some unhealthy: WARN."""
    check = "alb-targets"
    if targets is None:
        return unknown(check, tg, unreadable or f"target group {tg} could not be read (service {service})")
    states = Counter(t.get("TargetHealth", {}).get("State", "unknown") for t in targets)
    healthy, total = states.get("healthy", 0), len(targets)
    bad = [f"{t['Target']['Id']}: {t['TargetHealth'].get('State')} ({t['TargetHealth'].get('Reason') or t['TargetHealth'].get('Description') or '-'})"
           for t in targets if t.get("TargetHealth", {}).get("State") != "healthy"]
    details = {"service": service, "healthy": healthy, "total": total, "states": dict(states), "unhealthy": bad[:10]}
    if total == 0:
        return Finding(check=check, resource=tg, status=Status.CRIT, value=0, details=details,
                       summary=f"no target registered (service {service}): the ALB has nowhere to send traffic")
    if healthy == 0:
        return Finding(check=check, resource=tg, status=Status.CRIT, value=0, details=details,
                       summary=f"0 of {total} targets healthy (service {service}): " + "; ".join(bad[:3]))
    if healthy < total:
        return Finding(check=check, resource=tg, status=Status.WARN, value=healthy, details=details,
                       summary=f"{healthy} of {total} targets healthy (service {service}): " + "; ".join(bad[:3]))
    return Finding(check=check, resource=tg, status=Status.OK, value=healthy, details=details,
                   summary=f"{healthy}/{total} targets healthy (service {service})")


# --- DynamoDB -----------------------------------------------------------------------------------

BAD_TABLE_STATUSES = {"DELETING", "INACCESSIBLE_ENCRYPTION_CREDENTIALS", "ARCHIVING", "ARCHIVED"}


def judge_table(name: str, desc: dict[str, Any] | None, named: bool, unreadable: str | None = None) -> Finding:
    """ACTIVE is OK; deleting, archived or its key lost is CRIT; any other status (UPDATING...) WARN."""
    check = "dynamodb-status"
    if unreadable is not None:
        return unknown(check, name, unreadable)
    if desc is None:
        return Finding(check=check, resource=name, status=Status.CRIT, summary=_missing(named))
    t = desc.get("Table", {})
    status = t.get("TableStatus")
    details = {"status": status, "billing_mode": t.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"),
               "size_bytes": t.get("TableSizeBytes"), "item_count_estimate": t.get("ItemCount")}
    if status == "ACTIVE":
        return Finding(check=check, resource=name, status=Status.OK, summary="ACTIVE", details=details)
    if status in BAD_TABLE_STATUSES:
        return Finding(check=check, resource=name, status=Status.CRIT, summary=f"status {status}", details=details)
    if status is None:
        return Finding(check=check, resource=name, status=Status.UNKNOWN, summary="DescribeTable returned no TableStatus", details=details)
    return Finding(check=check, resource=name, status=Status.WARN, summary=f"status {status} (not ACTIVE)", details=details)


def judge_created(system: System, table: DynamoTable, count: int | None, unreadable: str | None, now: datetime) -> Finding:
    """Items created yesterday (the system's time zone) below the table's minimum: WARN."""
    check = "dynamodb-items-yesterday"
    day = system.yesterday(now)[0].date().isoformat()
    if count is None:
        return unknown(check, table.name, unreadable or "the scan returned no count")
    if count < table.min_items_yesterday:
        return Finding(check=check, resource=table.name, status=Status.WARN, value=count,
                       summary=f"{count} items created on {day} ({system.timezone}); expected at least {table.min_items_yesterday}")
    return Finding(check=check, resource=table.name, status=Status.OK, value=count, summary=f"{count} items created on {day} ({system.timezone})")


def judge_backup(table: DynamoTable, info: dict[str, Any] | None, unreadable: str | None, now: datetime) -> Finding:
    """An on-demand backup within the table's limit is OK; else current PITR is WARN; else CRIT."""
    check = "dynamodb-backup"
    if info is None:
        return unknown(check, table.name, unreadable or "no backup information")
    max_age = timedelta(hours=table.backup_max_age_hours)
    latest = info["latest_backup"]
    age_h = (now - latest).total_seconds() / 3600 if latest else None
    pitr_ok = info["pitr"] == "ENABLED" and info["latest_restorable"] is not None and now - info["latest_restorable"] < timedelta(hours=1)
    details = {"pitr": info["pitr"], "latest_backup": latest.isoformat() if latest else None}
    if latest and now - latest <= max_age:
        return Finding(check=check, resource=table.name, status=Status.OK, value=round(age_h, 1), details=details,
                       summary=f"latest on-demand backup {age_h:.1f} h old; PITR {info['pitr']}")
    if pitr_ok:
        return Finding(check=check, resource=table.name, status=Status.WARN, value=round(age_h, 1) if age_h else None, details=details,
                       summary=f"no on-demand backup within {table.backup_max_age_hours:g} h, but PITR is enabled and current")
    what = f"latest on-demand backup {age_h:.1f} h old" if latest else "no on-demand backup in 35 days"
    return Finding(check=check, resource=table.name, status=Status.CRIT, value=round(age_h, 1) if age_h else None, details=details,
                   summary=f"{what} and PITR {info['pitr'] or 'unknown'}: no recent backup (limit {table.backup_max_age_hours:g} h)")


# --- S3 -----------------------------------------------------------------------------------------


def judge_bucket_absent(name: str, named: bool, unreadable: str | None) -> Finding:
    """HeadBucket failed: the bucket is not there (CRIT), or could not be read (UNKNOWN)."""
    if unreadable is not None:
        return unknown("s3-storage", name, unreadable)
    return Finding(check="s3-storage", resource=name, status=Status.CRIT, summary=_missing(named))


def judge_storage(b: S3Bucket, size: float | None, objects: float | None, unreadable: str | None = None) -> Finding:
    """Storage from the daily metrics; at or above the bucket's size_warn_gb: WARN. No datapoint is UNKNOWN."""
    check = "s3-storage"
    if unreadable is not None:
        return unknown(check, b.name, unreadable)
    if size is None:
        return unknown(check, b.name, "no BucketSizeBytes datapoint in the last 3 days (S3 publishes storage metrics once a day; a new bucket has none yet)")
    gb = size / 1024**3
    details = {"size_bytes": int(size), "objects": int(objects) if objects is not None else None}
    text = f"{gb:,.2f} GiB" + (f", {int(objects):,} objects" if objects is not None else "")
    if b.size_warn_gb and gb >= b.size_warn_gb:
        return Finding(check=check, resource=b.name, status=Status.WARN, value=int(size), details=details, summary=f"{text}: above {b.size_warn_gb:g} GiB")
    return Finding(check=check, resource=b.name, status=Status.OK, value=int(size), details=details, summary=text)


# --- SQS ----------------------------------------------------------------------------------------


def judge_dlq(name: str, depth: dict[str, int] | None, unreadable: str | None, warn: int, crit: int) -> Finding:
    """Messages waiting (visible + in flight) in a dead-letter queue, against the system's thresholds."""
    check = "dlq-depth"
    if unreadable is not None:
        return unknown(check, name, unreadable)
    if depth is None:
        return Finding(check=check, resource=name, status=Status.CRIT, summary="dead-letter queue named in the inventory does not exist")
    n = depth["visible"] + depth["in_flight"]
    summary = f"{n} message(s) waiting in the dead-letter queue" + ("; see dlq-redrive" if n else "")
    return Finding(check=check, resource=name, status=by_threshold(n, warn, crit), value=n, summary=summary, details=depth)


# --- CloudWatch Logs ----------------------------------------------------------------------------


def log_group_unread(check: str, group: str, unreadable: str | None) -> Finding:
    """A log group that could not be counted is UNKNOWN (one never written to does not exist yet)."""
    return unknown(check, group, unreadable or "log group does not exist (never written to, or wrong name)")


def judge_count(check: str, log_group: str, res: dict[str, Any] | None, unreadable: str | None, warn: int, crit: int, what: str) -> Finding:
    """Matching lines of the last 24 h against the warn/crit thresholds, with one masked example."""
    if res is None:
        return log_group_unread(check, log_group, unreadable)
    n = res["count"]
    summary = f"{n} {what} in the last 24 h"
    if n and res["samples"]:
        summary += f"; e.g. {res['samples'][0]}"
    return Finding(check=check, resource=log_group, status=by_threshold(n, warn, crit), value=n, summary=summary[:400],
                   details={"samples": res["samples"], "warn": warn, "crit": crit})


# --- CloudWatch alarms --------------------------------------------------------------------------

PRIORITY_STATUS = {"P0": Status.CRIT, "P1": Status.CRIT, "P2": Status.WARN, "P3": Status.WARN}


def alarm_priority(system: System, alarm_name: str) -> str | None:
    for pattern, prio in system.alarms.priorities.items():
        if name_matches(pattern, alarm_name):
            return prio
    return None


def judge_alarms(system: System, alarms: list[dict[str, Any]]) -> list[Finding]:
    """The system's alarms in ALARM: CRIT for P0/P1 or no priority, WARN for P2/P3; none firing is one OK."""
    mine = [a for a in alarms if system.alarms.matches(a["AlarmName"])]
    if not mine:
        return [Finding(check="alarms", resource="alarms", status=Status.OK, value=0,
                        summary=f"no alarm in ALARM matching {system.alarms.name_filters}")]
    out = []
    for a in sorted(mine, key=lambda a: a["AlarmName"]):
        prio = alarm_priority(system, a["AlarmName"])
        status = PRIORITY_STATUS.get(prio or "", Status.CRIT)
        since = a.get("StateUpdatedTimestamp")
        out.append(Finding(check="alarms", resource=a["AlarmName"], status=status, value=1,
                           summary=f"in ALARM{f' ({prio})' if prio else ''}: {a.get('StateReason', '')}"[:300],
                           details={"priority": prio, "since": since.isoformat() if since else None}))
    return out


# --- declared alarms (the alarms the seed calls for) ---------------------------------------------


def declared_names(system: System, found: Any) -> list[tuple[str, DeclaredAlarm, str | None]]:
    """Every declared alarm as (name or glob, declaration, the resource it watches): a template gives one alarm per
    resource of its kind, named and tag-discovered (``found``: the run's discovery; an API is expanded by its name,
    which tag discovery does not give)."""
    kinds: dict[str, list[str]] = {
        "{function}": [f.name for f in system.lambda_functions] + list(getattr(found, "lambda_functions", [])),
        "{table}": [t.name for t in system.dynamodb_tables] + list(getattr(found, "dynamodb_tables", [])),
        "{api}": [a.name for a in system.api_gateway_apis],
        "{queue}": [q.name for q in system.sqs_queues] + list(getattr(found, "sqs_queues", [])),
        "{service}": [s.service for s in system.ecs_services] + [svc for _, svc in getattr(found, "ecs_services", [])],
        "{domain}": [d.name for d in system.opensearch_domains] + list(getattr(found, "opensearch_domains", [])),
    }
    out: list[tuple[str, DeclaredAlarm, str | None]] = []
    seen: set[str] = set()
    for d in system.alarms.declared:
        ph = d.placeholder
        for resource in dict.fromkeys(kinds[ph]) if ph else [None]:
            name = d.name.replace(ph, resource) if ph and resource else d.name
            if name not in seen:
                seen.add(name)
                out.append((name, d, resource))
    return out


def _for_how_long(minutes: float) -> str:
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h" if minutes < 48 * 60 else f"{minutes / 1440:.1f} days"


def _alarm_problems(system: System, alarm: dict[str, Any], topics: dict[str, bool | str],
                    now: datetime) -> list[tuple[Status, str]]:
    """What is wrong with one existing declared alarm: state, actions, the topics its actions notify."""
    name, state = alarm["AlarmName"], alarm.get("StateValue")
    out: list[tuple[Status, str]] = []
    if state == "ALARM" and not system.alarms.matches(name):  # those the name filters match are reported as firing already
        prio = alarm_priority(system, name)
        out.append((PRIORITY_STATUS.get(prio or "", Status.CRIT), f"in ALARM{f' ({prio})' if prio else ''}: {alarm.get('StateReason', '')}"))
    if state == "INSUFFICIENT_DATA":
        since = alarm.get("StateUpdatedTimestamp")
        minutes = (now - since).total_seconds() / 60 if since else None
        if minutes is None or minutes >= system.alarms.insufficient_data_warn_minutes:
            how_long = f"for {_for_how_long(minutes)} (since {since:%Y-%m-%d %H:%M} UTC)" if minutes is not None else "(since when unknown)"
            out.append((Status.WARN, f"in INSUFFICIENT_DATA {how_long}: its metric stopped or never started, so it cannot fire"))
    actions = alarm.get("AlarmActions") or []
    if not actions:
        out.append((Status.WARN, "has no alarm actions: nobody is notified when it fires"))
    elif alarm.get("ActionsEnabled") is False:
        out.append((Status.WARN, "its actions are disabled: nobody is notified when it fires"))
    for arn in actions:
        seen = topics.get(arn, True)
        if seen is False:
            out.append((Status.WARN, f"its action topic {arn} does not exist: the notification goes nowhere"))
        elif isinstance(seen, str):
            out.append((Status.UNKNOWN, f"its action topic {arn} could not be read: {seen}"))
    return out


def judge_declared_alarms(system: System, declared: list[tuple[str, DeclaredAlarm, str | None]], alarms: dict[str, dict[str, Any]],
                          topics: dict[str, bool | str], now: datetime) -> list[Finding]:
    """Each declared alarm: missing, firing (when the name filters do not already report it), INSUFFICIENT_DATA for
    longer than the inventory allows, no or disabled actions, an action topic that does not exist. One finding per alarm
    with a problem, named after it; the rest are one OK line. ``alarms``: every alarm read, by name; ``topics``: SNS topic
    ARN -> exists (True/False) or why it could not be read."""
    out: list[Finding] = []
    fine: list[str] = []
    judged: set[str] = set()  # an alarm two declarations match (a name and a glob) is judged once
    for name, decl, resource in declared:
        source = f" ({decl.source})" if decl.source else ""
        matching = [a for n, a in sorted(alarms.items()) if name_matches(name, n)] if decl.is_pattern else [alarms[name]] if name in alarms else []
        if not matching:
            what = f"no alarm matches {name}" if decl.is_pattern else "does not exist"
            watched = f" for {resource}" if resource else ""
            out.append(Finding(check="alarms", resource=name, status=Status.WARN, value=0, details={"declared": decl.name, "watches": resource},
                               summary=f"declared alarm{watched} {what}{source}: nothing pages anyone when it should fire"))
            continue
        for a in matching:
            if a["AlarmName"] in judged:
                continue
            judged.add(a["AlarmName"])
            problems = _alarm_problems(system, a, topics, now)
            if not problems:
                fine.append(a["AlarmName"])
                continue
            status = worst(s for s, _ in problems)
            out.append(Finding(check="alarms", resource=a["AlarmName"], status=status, value=len(problems),
                               summary=("; ".join(p for _, p in problems) + source)[:400],
                               details={"declared": decl.name, "state": a.get("StateValue"), "actions": a.get("AlarmActions") or [],
                                        "actions_enabled": a.get("ActionsEnabled")}))
    if fine:
        out.append(Finding(check="alarms", resource="declared alarms", status=Status.OK, value=len(fine), details={"alarms": sorted(fine)[:200]},
                           summary=f"{len(fine)} declared alarm(s) exist, with actions and data" + (f"; {len(out)} with a problem above" if out else "")))
    return out


# --- Lambda -------------------------------------------------------------------------------------

def judge_function(name: str, cfg: dict[str, Any] | None, named: bool, unreadable: str | None = None) -> Finding:
    """Active and its last update Successful is OK; Failed is CRIT; Pending/Inactive or updating WARN."""
    check = "lambda-state"
    if unreadable is not None:
        return unknown(check, name, unreadable)
    if cfg is None:
        return Finding(check=check, resource=name, status=Status.CRIT, summary=_missing(named))
    state = cfg.get("State")
    update = cfg.get("LastUpdateStatus")
    details = {"state": state, "last_update_status": update, "runtime": cfg.get("Runtime"),
               "memory_mb": cfg.get("MemorySize"), "timeout_s": cfg.get("Timeout")}
    if state is None:
        return Finding(check=check, resource=name, status=Status.UNKNOWN, summary="GetFunction returned no State", details=details)
    if state == "Failed" or update == "Failed":
        reason = cfg.get("StateReason") or cfg.get("LastUpdateStatusReason") or ""
        return Finding(check=check, resource=name, status=Status.CRIT, summary=f"state {state}, last update {update}: {reason}".strip(), details=details)
    if state != "Active":
        return Finding(check=check, resource=name, status=Status.WARN, summary=f"state {state} (not Active)", details=details)
    if update == "InProgress":
        return Finding(check=check, resource=name, status=Status.WARN, summary="Active, an update is in progress", details=details)
    return Finding(check=check, resource=name, status=Status.OK, summary=f"Active ({cfg.get('Runtime')})", details=details)


def judge_alias(resource: str, alias: dict[str, Any] | None, unreadable: str | None = None) -> Finding:
    """An alias the inventory names must exist (``resource``: function:alias)."""
    if unreadable is not None:
        return unknown("lambda-alias", resource, unreadable)
    if alias is None:
        return Finding(check="lambda-alias", resource=resource, status=Status.CRIT, summary="alias named in the inventory does not exist")
    return Finding(check="lambda-alias", resource=resource, status=Status.OK, summary=f"alias points to version {alias['FunctionVersion']}",
                   details={"version": alias["FunctionVersion"]})


def judge_duration(name: str, timeout_s: int | None, p99_ms: float | None, warn_pct: float, crit_pct: float, hours: float,
                   unreadable: str | None = None) -> Finding:
    """Duration p99 over the window against the configured timeout: at or above ``crit_pct`` % CRIT (invocations are about
    to time out), at or above ``warn_pct`` % WARN; no datapoint is an idle function (OK, said so); unreadable UNKNOWN."""
    check = "lambda-duration"
    if unreadable is not None:
        return unknown(check, name, unreadable)
    if not timeout_s:
        return unknown(check, name, "the function's configured timeout was not in its configuration")
    window = f"the last {hours:g} h"
    if p99_ms is None:
        return Finding(check=check, resource=name, status=Status.OK, details={"timeout_s": timeout_s, "window_hours": hours},
                       summary=f"no invocations in the window (no Duration datapoint in {window}; timeout {timeout_s} s)")
    pct = 100.0 * p99_ms / (timeout_s * 1000)
    details = {"p99_ms": round(p99_ms, 1), "timeout_s": timeout_s, "pct": round(pct, 1), "warn_pct": warn_pct, "crit_pct": crit_pct,
               "window_hours": hours}
    text = f"Duration p99 {p99_ms / 1000:.2f} s over {window} = {pct:.0f} % of its {timeout_s} s timeout (WARN at {warn_pct:g} %, CRIT at {crit_pct:g} %)"
    if pct >= crit_pct:
        return Finding(check=check, resource=name, status=Status.CRIT, value=round(pct, 1), details=details,
                       summary=f"{text}: its slowest invocations end at the timeout; see remediate-lambda-timeout")
    if pct >= warn_pct:
        return Finding(check=check, resource=name, status=Status.WARN, value=round(pct, 1), details=details,
                       summary=f"{text}: close to timing out; find what got slower, or raise the timeout (remediate-lambda-timeout)")
    return Finding(check=check, resource=name, status=Status.OK, value=round(pct, 1), details=details, summary=text)


# --- API Gateway --------------------------------------------------------------------------------


def judge_apis(named: list[str], tagged: list[str], apis: list[dict[str, Any]]) -> list[Finding]:
    """Each named REST API exists exactly once (none: CRIT, several: WARN); each tagged id is still listed."""
    by_name: dict[str, list[dict]] = {}
    for a in apis:
        by_name.setdefault(a["name"], []).append(a)
    findings: list[Finding] = []
    seen: set[str] = set()
    for want in named:
        matches = by_name.get(want, [])
        if not matches:
            findings.append(Finding(check="apigateway-present", resource=want, status=Status.CRIT, summary="named in the inventory but no REST API has that name"))
        elif len(matches) > 1:
            ids = [m["id"] for m in matches]
            seen.update(ids)
            findings.append(Finding(check="apigateway-present", resource=want, status=Status.WARN, summary=f"{len(matches)} REST APIs share this name ({', '.join(ids)}): ambiguous", details={"ids": ids}))
        else:
            seen.add(matches[0]["id"])
            findings.append(Finding(check="apigateway-present", resource=want, status=Status.OK, summary=f"present (id {matches[0]['id']})", details={"id": matches[0]["id"]}))
    by_id = {a["id"]: a for a in apis}
    for api_id in tagged:
        if api_id in seen:
            continue
        a = by_id.get(api_id)
        if a is None:
            findings.append(Finding(check="apigateway-present", resource=api_id, status=Status.WARN, summary="tagged API no longer listed by GetRestApis"))
        else:
            findings.append(Finding(check="apigateway-present", resource=a["name"], status=Status.OK, summary=f"present (id {api_id}, found by tag)", details={"id": api_id}))
    return findings


# --- OpenSearch ---------------------------------------------------------------------------------


def judge_domain(name: str, st: dict[str, Any] | None, named: bool, unreadable: str | None = None) -> Finding:
    """The domain (management API): being deleted is CRIT, a configuration change in progress WARN."""
    check = "opensearch-domain"
    if unreadable is not None:
        return unknown(check, name, unreadable)
    if st is None:
        return Finding(check=check, resource=name, status=Status.CRIT, summary=_missing(named))
    if st.get("Deleted"):
        return Finding(check=check, resource=name, status=Status.CRIT, summary="domain is being deleted")
    if st.get("Processing") or st.get("UpgradeProcessing"):
        return Finding(check=check, resource=name, status=Status.WARN, summary="configuration change in progress (Processing)")
    return Finding(check=check, resource=name, status=Status.OK, summary=f"domain ready ({st.get('EngineVersion', '?')})")


def judge_cluster(domain: str, cluster: dict[str, Any] | None, unreadable: str | None = None) -> Finding:
    """The cluster's own health: green OK, yellow WARN, red CRIT, with the unassigned shards and why.
    No answer and no reason: the domain has no endpoint to ask (UNKNOWN)."""
    check = "opensearch-health"
    if cluster is None:
        return unknown(check, domain, unreadable or "no endpoint: the domain has none yet and the inventory gives no endpoint override")
    h = cluster["health"]
    status, unassigned = h.get("status"), int(h.get("unassigned_shards", 0))
    details = {"status": status, "nodes": h.get("number_of_nodes"), "active_shards": h.get("active_shards"),
               "unassigned_shards": unassigned,
               "unassigned": [f"{s['index']}[{s['shard']}]{s['prirep']} {s.get('unassigned.reason') or ''}".strip() for s in cluster["unassigned"][:10]]}
    explain = cluster.get("explain") or {}
    why = explain.get("allocate_explanation") or (explain.get("unassigned_info") or {}).get("reason")
    if status == "green":
        return Finding(check=check, resource=domain, status=Status.OK, value=unassigned, summary="cluster green", details=details)
    text = f"cluster {status}, {unassigned} unassigned shard(s)"
    if details["unassigned"]:
        text += f": {', '.join(details['unassigned'][:3])}"
    if why:
        text += f" ({why})"
    if status == "red":
        return Finding(check=check, resource=domain, status=Status.CRIT, value=unassigned, summary=text + "; see remediate-opensearch-red", details=details)
    if status == "yellow":
        return Finding(check=check, resource=domain, status=Status.WARN, value=unassigned, summary=text, details=details)
    return Finding(check=check, resource=domain, status=Status.UNKNOWN, value=unassigned, summary=f"unexpected cluster status {status!r}", details=details)
