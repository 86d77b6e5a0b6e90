"""Performance rules of a container service (001 P1 서비스 성능 저하, 성능 모니터링): pure, like opsbook.components.

- ECS utilisation: CPUUtilization and MemoryUtilization, the Maximum over the last hour, against the inventory's
  targets (``thresholds.ecs_cpu_target_pct`` / ``ecs_memory_target_pct``; 001: CPU < 70 %, memory < 80 %).
- ALB target group: TargetResponseTime p95 against the latency target (``api_p95_slo_ms``, else the pipeline's
  ``pipeline_p95_slo_s``) and CRIT past the P1 symptom (``slow_response_crit_s``: responses > 60 s); the 5XX
  share of requests against ``error_rate_slo_pct`` (CRIT past 001's "높은 에러율 (> 5%)"); unhealthy hosts.
- Agents: the service's log lines carrying ``agent`` and ``execution_time`` (seconds; JSON fields or key=value),
  each agent's p95 against ``agent_execution_target_s`` (001: each agent < 10 s), the pipeline's p95 against
  ``pipeline_p95_slo_s`` (45 s); CRIT past ``slow_response_crit_s``.

A value AT its target is within it (a target-tracking policy holds the service there); only above is flagged.
No datapoint where the service runs tasks is UNKNOWN with the reason (the metric is not published, or the
dimensions do not match); a service that runs no task has nothing to measure (its ecs-service finding says why).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import Thresholds
from opsbook.pii import mask_log

HIGH_ERROR_RATE_PCT = 5.0  # 001 성능 이슈 대응: "높은 에러율 (> 5%)"
DEFAULT_ERROR_RATE_PCT = 2.0  # 001 SLO: 에러율 < 2 %, when the inventory names none
PIPELINE_AGENTS = ("pipeline", "total")  # a line for the whole run carries one of these as its agent
RUN_ID_FIELDS = ("pipeline_id", "run_id", "request_id", "project_id", "trace_id")


def nearest_rank(values: Iterable[float], pct: float = 95.0) -> float | None:
    """CloudWatch's percentile of values published one by one (nearest rank); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def _over(value: float, target: float | None, crit: float | None) -> Status:
    if crit is not None and value > crit:
        return Status.CRIT
    if target is not None and value > target:
        return Status.WARN
    return Status.OK


# --- ECS utilisation -----------------------------------------------------------------------------

UTILISATION = {"cpu": ("CPUUtilization", "CPU"), "memory": ("MemoryUtilization", "memory")}


def judge_utilisation(service: str, kind: str, maximum: float | None, target_pct: float, running: int | None,
                      unreadable: str | None = None, hours: float = 1) -> Finding:
    """One service's CPU or memory (``kind``) Maximum over the window against its target: above is WARN."""
    metric, label = UTILISATION[kind]
    check = f"ecs-{kind}"
    if unreadable is not None:
        return unknown(check, service, unreadable)
    window = f"the last {hours:g} h"
    details: dict[str, Any] = {"metric": f"AWS/ECS {metric}", "statistic": "Maximum", "target_pct": target_pct, "running": running,
                               "window_hours": hours}
    if maximum is None:
        if running == 0:
            return Finding(check=check, resource=service, status=Status.OK, details=details,
                           summary=f"no task running, no {label} to measure (see ecs-service)")
        tasks = f"{running} task(s) run" if running else "the service's task count is unknown"
        return Finding(check=check, resource=service, status=Status.UNKNOWN, details=details,
                       summary=f"could not be read: no {metric} datapoint in {window} although {tasks} (the metric is not "
                               f"published, or its ClusterName/ServiceName dimensions do not match)")
    details["max_pct"] = round(maximum, 1)
    text = f"{label} peaked at {maximum:.1f} % over {window} (target {target_pct:g} %)"
    if maximum > target_pct:
        return Finding(check=check, resource=service, status=Status.WARN, value=round(maximum, 1), details=details,
                       summary=f"{text}: over its target; 001 P1: read the error log, then scale (scale-service)")
    return Finding(check=check, resource=service, status=Status.OK, value=round(maximum, 1), details=details, summary=text)


# --- ALB target group ----------------------------------------------------------------------------


class TargetGroupMetrics(BaseModel):
    """A target group's numbers over the window (None: no datapoint)."""

    target_group: str
    service: str
    requests: float | None = None
    errors_5xx: float | None = None
    p95_s: float | None = None
    unhealthy: float | None = None  # the newest minute
    healthy: float | None = None  # the newest minute
    dimensions: dict[str, str] = Field(default_factory=dict)

    @property
    def published(self) -> bool:
        """ALB publishes the host counts every minute for a target group behind a load balancer, traffic or not."""
        return self.unhealthy is not None or self.healthy is not None


def latency_target_s(th: Thresholds) -> float | None:
    """The response-time target: the API's p95 SLO, else the pipeline's (001: 응답시간 < 45초 (P95))."""
    if th.api_p95_slo_ms is not None:
        return th.api_p95_slo_ms / 1000
    return th.pipeline_p95_slo_s


def _no_alb_data(m: TargetGroupMetrics) -> str:
    return (f"no AWS/ApplicationELB host count for target group {m.target_group} in the window (service {m.service}): the target "
            "group is behind no load balancer, or its TargetGroup/LoadBalancer dimensions do not match")


def judge_target_group(m: TargetGroupMetrics | None, tg: str, service: str, th: Thresholds, unreadable: str | None = None,
                       hours: float = 1) -> list[Finding]:
    """alb-latency (p95), alb-5xx (share of requests) and alb-unhealthy (the newest minute's count) of one target group."""
    checks = ("alb-latency", "alb-5xx", "alb-unhealthy")
    if m is None or unreadable is not None:
        return [unknown(c, tg, unreadable or f"target group {tg} could not be read (service {service})") for c in checks]
    if not m.published and m.p95_s is None and not m.requests and not m.errors_5xx:
        return [Finding(check=c, resource=tg, status=Status.UNKNOWN, summary=f"could not be read: {_no_alb_data(m)}",
                        details={"service": service, **m.dimensions}) for c in checks]
    window = f"the last {hours:g} h"
    base = {"service": service, "window_hours": hours, **m.dimensions}
    return [_latency(m, tg, th, window, base), _errors(m, tg, th, window, base), _unhealthy(m, tg, window, base)]


def _latency(m: TargetGroupMetrics, tg: str, th: Thresholds, window: str, base: dict[str, Any]) -> Finding:
    target, crit = latency_target_s(th), th.slow_response_crit_s
    details = {**base, "p95_s": m.p95_s, "target_s": target, "crit_s": crit}
    if m.p95_s is None and m.requests:
        return Finding(check="alb-latency", resource=tg, status=Status.UNKNOWN, details=details,
                       summary=f"could not be read: {m.requests:.0f} requests in {window} but no TargetResponseTime p95 (no percentile answered)")
    if m.p95_s is None:
        return Finding(check="alb-latency", resource=tg, status=Status.OK, details=details,
                       summary=f"no request in {window} (no TargetResponseTime datapoint; the host counts are published)")
    goal = f"target {target:g} s, CRIT past {crit:g} s" if target is not None else f"no latency target in the inventory; CRIT past {crit:g} s"
    text = f"TargetResponseTime p95 {m.p95_s:.2f} s over {window} (service {m.service}; {goal})"
    status = _over(m.p95_s, target, crit)
    if status is Status.CRIT:
        text += ": 001 P1 서비스 성능 저하 (responses > 60 s): check CPU/memory, the error log, then scale"
    elif status is Status.WARN:
        text += ": over its target"
    return Finding(check="alb-latency", resource=tg, status=status, value=round(m.p95_s, 3), details=details, summary=text)


def _errors(m: TargetGroupMetrics, tg: str, th: Thresholds, window: str, base: dict[str, Any]) -> Finding:
    warn = th.error_rate_slo_pct if th.error_rate_slo_pct is not None else DEFAULT_ERROR_RATE_PCT
    crit = max(warn, HIGH_ERROR_RATE_PCT)
    errors = m.errors_5xx or 0.0  # ALB publishes no HTTPCode_Target_5XX_Count for a minute without one
    details = {**base, "errors_5xx": errors, "requests": m.requests, "warn_pct": warn, "crit_pct": crit}
    if not m.requests:
        if errors:
            return Finding(check="alb-5xx", resource=tg, status=Status.WARN, value=errors, details=details,
                           summary=f"{errors:.0f} target 5XX in {window} and no RequestCount to weigh them against (service {m.service})")
        return Finding(check="alb-5xx", resource=tg, status=Status.OK, value=0, details=details, summary=f"no request in {window}")
    pct = 100.0 * errors / m.requests
    details["pct"] = round(pct, 2)
    text = (f"{errors:.0f} target 5XX of {m.requests:.0f} requests ({pct:.2f} %) over {window} "
            f"(service {m.service}; target {warn:g} %, CRIT past {crit:g} %)")
    status = _over(pct, warn, crit)
    if status is not Status.OK:
        text += ": read the service's error log (diagnose, then roll back or scale)"
    return Finding(check="alb-5xx", resource=tg, status=status, value=round(pct, 2), details=details, summary=text)


def _unhealthy(m: TargetGroupMetrics, tg: str, window: str, base: dict[str, Any]) -> Finding:
    details = {**base, "unhealthy": m.unhealthy, "healthy": m.healthy}
    if not m.published:
        return Finding(check="alb-unhealthy", resource=tg, status=Status.UNKNOWN, details=details, summary=f"could not be read: {_no_alb_data(m)}")
    bad, good = int(m.unhealthy or 0), int(m.healthy or 0)
    text = f"{bad} unhealthy, {good} healthy host(s) in the newest minute (service {m.service})"
    if bad > 0:
        return Finding(check="alb-unhealthy", resource=tg, status=Status.WARN, value=bad, details=details,
                       summary=f"{text}: the load balancer routes around them; see alb-targets for why")
    return Finding(check="alb-unhealthy", resource=tg, status=Status.OK, value=0, details=details, summary=text)


# --- agents' execution_time lines ----------------------------------------------------------------

_KV = re.compile(r"""(?<![\w.-])["']?(?P<key>[A-Za-z_][\w.-]*)["']?\s*[=:]\s*(?P<val>"[^"]*"|'[^']*'|[^\s,;}\]]+)""")
_SECONDS = re.compile(r"^\s*(?P<n>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(?P<unit>ms|s|sec|secs|seconds)?\s*$")


def seconds(value: Any) -> float | None:
    """An execution_time as seconds: a number, or a string such as "3.2", "3.2s", "3200ms"; None when not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
    else:
        m = _SECONDS.match(str(value))
        if not m:
            return None
        v = float(m.group("n")) / (1000 if m.group("unit") == "ms" else 1)
    return v if math.isfinite(v) and v >= 0 else None


def _json_fields(message: str) -> dict[str, Any] | None:
    start = message.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(message[start:])
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    flat = dict(obj)
    for v in obj.values():  # one level down too: {"level": "INFO", "extra": {"agent": ..., "execution_time": ...}}
        if isinstance(v, dict):
            flat = {**v, **flat}
    return flat


def parse_timing(message: str) -> tuple[str, float, str | None] | None:
    """(agent, seconds, run id or None) of a line carrying ``agent`` and ``execution_time`` (JSON or key=value); else None."""
    fields = _json_fields(message)
    if fields is None or "agent" not in fields or "execution_time" not in fields:
        fields = {m.group("key"): m.group("val").strip("\"'") for m in _KV.finditer(message)}
    agent, took = fields.get("agent"), seconds(fields.get("execution_time"))
    if agent is None or took is None or not str(agent).strip():
        return None
    run = next((str(fields[k]) for k in RUN_ID_FIELDS if fields.get(k) not in (None, "")), None)
    return str(agent).strip(), took, run


class AgentTimings(BaseModel):
    """What a window's lines say: seconds per agent, the pipeline's runs, and the lines that said nothing."""

    by_agent: dict[str, list[float]] = Field(default_factory=dict)
    pipeline: list[float] = Field(default_factory=list)
    pipeline_source: str | None = None  # "lines" (agent pipeline/total) or "runs" (agents' times added by run id)
    lines: int = 0
    unparsed: int = 0
    unparsed_sample: list[str] = Field(default_factory=list)


def agent_timings(messages: Iterable[str]) -> AgentTimings:
    """Parse every line: the agents' times, and the pipeline's from its own lines or, without them, from the agents'
    times added up per run id."""
    out = AgentTimings()
    runs: dict[str, float] = {}
    whole: list[float] = []
    for msg in messages:
        out.lines += 1
        got = parse_timing(msg)
        if got is None:
            out.unparsed += 1
            if len(out.unparsed_sample) < 3:
                out.unparsed_sample.append(mask_log(msg.strip())[:200])
            continue
        agent, took, run = got
        if agent.lower() in PIPELINE_AGENTS:
            whole.append(took)
            continue
        out.by_agent.setdefault(agent, []).append(took)
        if run is not None:
            runs[run] = runs.get(run, 0.0) + took
    if whole:
        out.pipeline, out.pipeline_source = whole, "lines"
    elif runs:
        out.pipeline, out.pipeline_source = list(runs.values()), "runs"
    return out


def judge_agents(service: str, group: str, t: AgentTimings | None, th: Thresholds, running: int | None, unreadable: str | None = None,
                 truncated: bool = False, minutes: int = 60) -> list[Finding]:
    """One finding per agent over its target (WARN; CRIT past slow_response_crit_s), one OK line for the agents within it,
    and the pipeline's p95 against pipeline_p95_slo_s. No timing line while tasks run is UNKNOWN."""
    if unreadable is not None or t is None:
        return [unknown("agent-time", service, unreadable or f"log group {group} could not be read")]
    window = f"the last {minutes} min"
    cut = f" (the first {t.lines} lines of the window only: the read was bounded)" if truncated else ""
    base = {"service": service, "log_group": group, "lines": t.lines, "unparsed": t.unparsed, "truncated": truncated, "window_minutes": minutes}
    if not t.by_agent and not t.pipeline:
        if t.lines:
            return [Finding(check="agent-time", resource=service, status=Status.UNKNOWN, details={**base, "unparsed_sample": t.unparsed_sample},
                            summary=f"could not be read: {t.lines} line(s) in {group} carry execution_time but none an agent and seconds, "
                                    f"e.g. {t.unparsed_sample[0] if t.unparsed_sample else '?'}")]
        if running == 0:
            return [Finding(check="agent-time", resource=service, status=Status.OK, details=base,
                            summary=f"no task running, no agent timing in {group} (see ecs-service)")]
        tasks = f"{running} task(s) run" if running else "the service's task count is unknown"
        return [Finding(check="agent-time", resource=service, status=Status.UNKNOWN, details=base,
                        summary=f"could not be read: no line with agent and execution_time in {group} over {window} although {tasks}")]
    target, crit = th.agent_execution_target_s, th.slow_response_crit_s
    out: list[Finding] = []
    fine: dict[str, float] = {}
    for agent, values in sorted(t.by_agent.items()):
        p95 = nearest_rank(values) or 0.0
        status = _over(p95, target, crit)
        if status is Status.OK:
            fine[agent] = round(p95, 2)
            continue
        out.append(Finding(check="agent-time", resource=agent, status=status, value=round(p95, 2),
                           details={**base, "agent": agent, "p95_s": round(p95, 2), "max_s": round(max(values), 2), "runs": len(values),
                                    "target_s": target, "crit_s": crit},
                           summary=f"agent {agent} execution_time p95 {p95:.2f} s over {window} ({len(values)} runs, max {max(values):.2f} s; "
                                   f"target {target:g} s, CRIT past {crit:g} s; service {service}){cut}: the pipeline's bottleneck"))
    if fine:
        slowest = max(fine, key=fine.__getitem__)
        out.append(Finding(check="agent-time", resource=service, status=Status.OK, value=len(fine),
                           details={**base, "p95_s": fine, "target_s": target},
                           summary=f"{len(fine)} agent(s) within {target:g} s p95 over {window} (slowest {slowest}: {fine[slowest]:.2f} s){cut}"
                                   + (f"; {len(out)} over it above" if out else "")))
    if t.pipeline:
        out.append(_pipeline(service, t, th, window, cut, base))
    return out


def _pipeline(service: str, t: AgentTimings, th: Thresholds, window: str, cut: str, base: dict[str, Any]) -> Finding:
    p95 = nearest_rank(t.pipeline) or 0.0
    slo, crit = th.pipeline_p95_slo_s, th.slow_response_crit_s
    how = "its own lines" if t.pipeline_source == "lines" else "the agents' times added up per run"
    goal = f"SLO {slo:g} s, CRIT past {crit:g} s" if slo is not None else f"no pipeline SLO in the inventory; CRIT past {crit:g} s"
    status = _over(p95, slo, crit)
    text = f"pipeline execution_time p95 {p95:.2f} s over {window} ({len(t.pipeline)} runs, from {how}; {goal}){cut}"
    if status is not Status.OK:
        text += ": over its target; the slowest agents are the agent-time findings"
    return Finding(check="pipeline-time", resource=service, status=status, value=round(p95, 2), summary=text,
                   details={**base, "p95_s": round(p95, 2), "runs": len(t.pipeline), "slo_s": slo, "crit_s": crit, "source": t.pipeline_source})
