"""The sandbox's healthy ECS hour (sandbox/ecs_performance.py), pure parts: what the seed writes is what the rules read."""

from __future__ import annotations

from datetime import datetime, timezone

from opsbook.findings import Status
from opsbook.inventory import load_system
from opsbook.performance import agent_timings, judge_agents
from sandbox.ecs_performance import AGENTS, RUNS, healthy_datums, timing_lines
from tasks.cloudwatch import ALB_SERIES, alb_values
from tasks.elb import dimension_of

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def test_every_seeded_agent_line_parses_both_formats_and_is_within_its_target():
    lines = timing_lines(NOW)
    assert len(lines) == RUNS * len(AGENTS) and all(ts < NOW for ts, _ in lines)
    assert any(m.startswith("INFO {") for _, m in lines) and any("agent=" in m for _, m in lines)
    t = agent_timings(m for _, m in lines)
    assert t.unparsed == 0 and set(t.by_agent) == set(AGENTS) and t.pipeline_source == "runs" and len(t.pipeline) == RUNS
    td = load_system("t-developer")
    out = judge_agents("svc", "/ecs/x", t, td.thresholds, running=2)
    assert [f.status for f in out] == [Status.OK, Status.OK] and max(t.pipeline) < 45


def test_healthy_datums_are_under_the_targets():
    td = load_system("t-developer")
    s = td.ecs_services[0]
    data = healthy_datums(td, s, [{"Name": "TargetGroup", "Value": "targetgroup/x/1"}], NOW)
    cpu = [d["Value"] for d in data["AWS/ECS"] if d["MetricName"] == "CPUUtilization"]
    mem = [d["Value"] for d in data["AWS/ECS"] if d["MetricName"] == "MemoryUtilization"]
    assert max(cpu) <= 70 and max(mem) <= 80
    assert {d["MetricName"] for d in data["AWS/ApplicationELB"]} == {"RequestCount", "HealthyHostCount", "UnHealthyHostCount", "TargetResponseTime"}
    assert "AWS/ApplicationELB" not in healthy_datums(td, s, None, NOW)


def test_alb_dimensions_and_values():
    assert dimension_of("arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/tg/abc") == "targetgroup/tg/abc"
    assert dimension_of("arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/lb/def") == "app/lb/def"
    t1, t2 = datetime(2026, 1, 1, 11, 59, tzinfo=timezone.utc), datetime(2026, 1, 1, 11, 58, tzinfo=timezone.utc)
    data = {"t0_requests": [(t1, 100.0)], "t0_unhealthy": [(t1, 1.0), (t2, 0.0)], "t0_healthy": [(t1, 1.0), (t2, 2.0)]}
    assert alb_values(0, data) == {"requests": 100.0, "errors_5xx": None, "p95_s": None, "unhealthy": 1.0, "healthy": 1.0}  # newest first
    assert set(ALB_SERIES) == {"requests", "errors_5xx", "p95_s", "unhealthy", "healthy"}
