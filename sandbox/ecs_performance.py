"""An ECS service's last hour, as CloudWatch and its log would show it: healthy by default, with named faults.

moto runs no task and publishes no AWS/ECS or AWS/ApplicationELB metric, so ``seed_service_performance`` (called by
``seed_system`` for every service the inventory names) puts what a healthy service would have:

- for a service with a ``target_group``, its metrics under the dimensions of the ALB that sandbox/alb.py put in front
  of it (``seed_system`` seeds the load balancers first);
- AWS/ECS CPUUtilization and MemoryUtilization under the inventory's targets (``HEALTHY_CPU`` / ``HEALTHY_MEMORY`` of
  them), AWS/ApplicationELB requests, response times (raw values: the percentile patch of sandbox.metrics answers
  their p95), host counts, no 5XX;
- the agents' ``execution_time`` lines in the service's ``log_group`` (JSON and key=value, a run id each), every agent
  and the pipeline under their targets.

Faults on top (sandbox.faults registers them): ``tdev-cpu-hot`` / ``tdev-memory-hot`` (CPU or memory peaks over its
target), ``tdev-slow-agent`` (one agent's runs take longer than its target), ``tdev-alb-5xx`` (target 5XX over the error
SLO), ``tdev-slow-responses`` (the response time p95 past 60 s), ``tdev-unhealthy-hosts`` (the newest minute has unhealthy
hosts). Datapoints are placed minutes before now: the checks read the last hour, so a sandbox kept longer than an hour
reads UNKNOWN (tasks run and publish nothing), as a real service that stopped publishing would.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.inventory import EcsService, System
from sandbox.metrics import RAW_VALUES, enable_percentiles, spread
from sandbox.server import Sandbox, sandbox_client
from tasks.elb import dimension_of

# 001's T-Developer pipeline: its agents and what each takes, healthy (seconds; together about 19 s, the SLO is 45 s)
AGENTS = {"nl_input": 1.2, "ui_selection": 0.8, "parser": 1.5, "component_decision": 2.0, "match_rate": 1.0, "search": 3.0,
          "generation": 6.5, "assembly": 2.5, "download": 0.6}
RUNS = 12  # healthy pipeline runs in the hour
MINUTES_AGO = (50, 30, 10)  # when the healthy datapoints are
HEALTHY_CPU, HEALTHY_MEMORY = 0.5, 0.7  # x the targets
REQUESTS = 400.0  # per datapoint
RESPONSE_P95_SHARE = 0.45  # x the latency target (or of the CRIT threshold when the inventory names none)


def _dims(**kw: str) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in kw.items()]


def _ago(now: datetime, minutes: float) -> datetime:
    return now - timedelta(minutes=minutes)


def ecs_dims(s: EcsService) -> list[dict[str, str]]:
    return _dims(ClusterName=s.cluster, ServiceName=s.service)


def alb_dims(sb: Sandbox, system: System, s: EcsService) -> list[dict[str, str]]:
    """The dimensions of the target group the seed made (sandbox/alb.py), looked up."""
    elb = sandbox_client(sb, "elbv2", system.region)
    tg = elb.describe_target_groups(Names=[s.target_group])["TargetGroups"][0]
    return _dims(TargetGroup=dimension_of(tg["TargetGroupArn"]), LoadBalancer=dimension_of(tg["LoadBalancerArns"][0]))


def _value(name: str, dims: list[dict[str, str]], ts: datetime, v: float, unit: str) -> dict[str, Any]:
    return {"MetricName": name, "Dimensions": dims, "Timestamp": ts, "Value": round(v, 3), "Unit": unit}


def healthy_datums(system: System, s: EcsService, alb: list[dict[str, str]] | None, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """Namespace -> the healthy last hour of one service (pure)."""
    th, tasks = system.thresholds, s.min_tasks or 2
    ecs = ecs_dims(s)
    out: dict[str, list[dict[str, Any]]] = {"AWS/ECS": [], "AWS/ApplicationELB": []}
    for k, m in enumerate(MINUTES_AGO):
        ts = _ago(now, m)
        out["AWS/ECS"] += [_value("CPUUtilization", ecs, ts, th.ecs_cpu_target_pct * HEALTHY_CPU * (1 + 0.05 * k), "Percent"),
                           _value("MemoryUtilization", ecs, ts, th.ecs_memory_target_pct * HEALTHY_MEMORY * (1 + 0.03 * k), "Percent")]
        if alb:
            target = (th.api_p95_slo_ms / 1000 if th.api_p95_slo_ms else th.pipeline_p95_slo_s) or th.slow_response_crit_s
            out["AWS/ApplicationELB"] += [
                _value("RequestCount", alb, ts, REQUESTS, "Count"), _value("HealthyHostCount", alb, ts, tasks, "Count"),
                _value("UnHealthyHostCount", alb, ts, 0, "Count"),
                {"MetricName": "TargetResponseTime", "Dimensions": alb, "Timestamp": ts, "Values": spread(target * RESPONSE_P95_SHARE),
                 "Unit": "Seconds"}]
    return {ns: d for ns, d in out.items() if d}


def timing_lines(now: datetime, runs: int = RUNS, agents: dict[str, float] | None = None, prefix: str = "run") -> list[tuple[datetime, str]]:
    """``runs`` pipeline runs over the last 55 minutes: a line per agent (JSON for even runs, key=value for odd ones)."""
    out = []
    for r in range(runs):
        start = _ago(now, 55 - r * 50 / max(runs, 1))
        for a, (agent, base) in enumerate((agents or AGENTS).items()):
            took = round(base * (0.8 + 0.4 * ((r * 7 + a * 3) % 10) / 9), 2)  # 0.8 .. 1.2 x its base
            ts = start + timedelta(seconds=a)
            if r % 2 == 0:
                msg = "INFO " + json.dumps({"event": "agent_completed", "agent": agent, "execution_time": took, "request_id": f"{prefix}-{r}"})
            else:
                msg = f"INFO agent completed agent={agent} execution_time={took} request_id={prefix}-{r}"
            out.append((ts, msg))
    return out


def _put_lines(sb: Sandbox, system: System, group: str, stream: str, lines: list[tuple[datetime, str]]) -> None:
    from sandbox.faults import _put

    _put(sb, system, group, stream, lines, create_group=True)


def seed_service_performance(sb: Sandbox, system: System, now: datetime | None = None) -> dict[str, Any]:
    """Every named ECS service's healthy last hour (see the module docstring); returns the datums put and lines written."""
    enable_percentiles()
    now = now or datetime.now(timezone.utc)
    cw = sandbox_client(sb, "cloudwatch", system.region)
    made = {"datums": 0, "lines": 0, "load_balancers": 0}
    for s in system.ecs_services:
        alb = None
        if s.target_group and not s.target_group.startswith("arn:"):
            alb = alb_dims(sb, system, s)  # the ALB sandbox/alb.py put in front of it (seed_system, before this)
            made["load_balancers"] += 1
        for ns, data in healthy_datums(system, s, alb, now).items():
            cw.put_metric_data(Namespace=ns, MetricData=data)
            made["datums"] += len(data)
        if s.log_group:
            lines = timing_lines(now)
            _put_lines(sb, system, s.log_group, "agents", lines)
            made["lines"] += len(lines)
    return made


# --- faults ---------------------------------------------------------------------------------------


def _service(system: System, fault: str, what: str = "", needs: str | None = None) -> EcsService:
    """The first named ECS service (with the field ``needs`` set, when given)."""
    for s in system.ecs_services:
        if needs is None or getattr(s, needs):
            return s
    raise ValueError(f"fault {fault!r} needs an ECS service{what} in the inventory of {system.name}")


def _hot(sb: Sandbox, system: System, fault: str, kind: str, pct: float, minutes_ago: float) -> dict[str, Any]:
    s = _service(system, fault)
    th = system.thresholds
    metric, target = {"cpu": ("CPUUtilization", th.ecs_cpu_target_pct), "memory": ("MemoryUtilization", th.ecs_memory_target_pct)}[kind]
    sandbox_client(sb, "cloudwatch", system.region).put_metric_data(
        Namespace="AWS/ECS", MetricData=[_value(metric, ecs_dims(s), _ago(datetime.now(timezone.utc), minutes_ago), pct, "Percent")])
    return {"resource": f"{s.cluster}/{s.service}", "pct": pct, "target_pct": target}


def cpu_hot(sb: Sandbox, system: System, pct: float = 92.0, minutes_ago: float = 5) -> dict[str, Any]:
    """The service's CPU peaks at ``pct`` % ``minutes_ago`` minutes ago (001 P1: over the 70 % target)."""
    return _hot(sb, system, "tdev-cpu-hot", "cpu", pct, minutes_ago)


def memory_hot(sb: Sandbox, system: System, pct: float = 91.0, minutes_ago: float = 5) -> dict[str, Any]:
    """The service's memory peaks at ``pct`` % (over the 80 % target)."""
    return _hot(sb, system, "tdev-memory-hot", "memory", pct, minutes_ago)


def slow_agent(sb: Sandbox, system: System, agent: str = "generation", seconds: float = 25.0, runs: int = RUNS) -> dict[str, Any]:
    """``runs`` more runs of ``agent`` taking ``seconds`` each, in the last hour: its p95 goes to ``seconds``."""
    s = _service(system, "tdev-slow-agent", " with a log_group", "log_group")
    now = datetime.now(timezone.utc)
    lines = [(_ago(now, 45 - r * 40 / runs), f"INFO agent completed agent={agent} execution_time={seconds} request_id=slow-{r}") for r in range(runs)]
    _put_lines(sb, system, s.log_group or "", "agents-slow", lines)
    return {"resource": agent, "service": f"{s.cluster}/{s.service}", "seconds": seconds, "runs": runs,
            "target_s": system.thresholds.agent_execution_target_s}


def _alb_put(sb: Sandbox, system: System, fault: str, data: list[tuple[str, float | list[float], str]], minutes_ago: float) -> EcsService:
    s = _service(system, fault, " with a target_group", "target_group")
    dims, ts = alb_dims(sb, system, s), _ago(datetime.now(timezone.utc), minutes_ago)
    datums = [{"MetricName": m, "Dimensions": dims, "Timestamp": ts, "Unit": unit, **({"Values": v} if isinstance(v, list) else {"Value": v})}
              for m, v, unit in data]
    sandbox_client(sb, "cloudwatch", system.region).put_metric_data(Namespace="AWS/ApplicationELB", MetricData=datums)
    return s


def alb_5xx(sb: Sandbox, system: System, errors: float = 40.0, minutes_ago: float = 10) -> dict[str, Any]:
    """``errors`` target 5XX in one minute of the last hour (of the seed's 3 x 400 requests: 40 is 3.3 %)."""
    s = _alb_put(sb, system, "tdev-alb-5xx", [("HTTPCode_Target_5XX_Count", errors, "Count")], minutes_ago)
    return {"resource": s.target_group, "errors": errors, "requests": REQUESTS * len(MINUTES_AGO)}


def slow_responses(sb: Sandbox, system: System, seconds: float = 65.0, minutes_ago: float = 8) -> dict[str, Any]:
    """As many responses of ``seconds`` as the seed's healthy ones, in one minute: the hour's p95 goes to ``seconds``
    (001 P1: responses > 60 s)."""
    s = _alb_put(sb, system, "tdev-slow-responses", [("TargetResponseTime", [seconds] * RAW_VALUES * len(MINUTES_AGO), "Seconds")], minutes_ago)
    return {"resource": s.target_group, "seconds": seconds}


def unhealthy_hosts(sb: Sandbox, system: System, unhealthy: int = 1, minutes_ago: float = 1) -> dict[str, Any]:
    """The newest minute: ``unhealthy`` of the service's hosts fail their health checks."""
    tasks = next((s.min_tasks or 2 for s in system.ecs_services if s.target_group), 2)
    s = _alb_put(sb, system, "tdev-unhealthy-hosts", [("UnHealthyHostCount", float(unhealthy), "Count"),
                                                      ("HealthyHostCount", float(max(tasks - unhealthy, 0)), "Count")], minutes_ago)
    return {"resource": s.target_group, "unhealthy": unhealthy}


SCENARIOS = {"tdev-cpu-hot": cpu_hot, "tdev-memory-hot": memory_hot, "tdev-slow-agent": slow_agent, "tdev-alb-5xx": alb_5xx,
             "tdev-slow-responses": slow_responses, "tdev-unhealthy-hosts": unhealthy_hosts}
