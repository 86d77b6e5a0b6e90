"""The performance rules (opsbook/performance.py): ECS utilisation, ALB target group, agents' execution times."""

from __future__ import annotations

import pytest

from opsbook.findings import Status
from opsbook.inventory import Thresholds
from opsbook.performance import (AgentTimings, TargetGroupMetrics, agent_timings, judge_agents, judge_target_group, judge_utilisation,
                                 latency_target_s, nearest_rank, parse_timing, seconds)

SVC = "t-developer-cluster-production/t-developer-service-production"
TD = Thresholds(pipeline_p95_slo_s=45, error_rate_slo_pct=2)


def by(findings, check):
    hits = [f for f in findings if f.check == check]
    assert len(hits) == 1, hits
    return hits[0]


# --- nearest rank ---------------------------------------------------------------------------------


def test_nearest_rank_is_cloudwatchs_and_empty_is_none():
    assert nearest_rank([]) is None
    assert nearest_rank([7.0]) == 7.0
    assert nearest_rank(list(range(1, 21))) == 19  # ceil(0.95 * 20) = 19th
    assert nearest_rank(list(range(1, 101))) == 95
    assert nearest_rank([3.0, 1.0, 2.0], 50) == 2.0


# --- ECS utilisation --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,value,target,status", [
    ("cpu", 35.0, 70, Status.OK), ("cpu", 70.0, 70, Status.OK), ("cpu", 70.1, 70, Status.WARN), ("cpu", 100.0, 70, Status.WARN),
    ("memory", 80.0, 80, Status.OK), ("memory", 80.5, 80, Status.WARN), ("memory", 0.0, 80, Status.OK)])
def test_utilisation_over_its_target_is_warn_at_it_is_within(kind, value, target, status):
    f = judge_utilisation(SVC, kind, value, target, running=2)
    assert f.status is status and f.check == f"ecs-{kind}" and f.resource == SVC and f.value == value
    assert f"{value:.1f} %" in f.summary and f"target {target} %" in f.summary
    if status is Status.WARN:
        assert "over its target" in f.summary and "scale" in f.summary


def test_utilisation_without_a_datapoint_while_tasks_run_is_unknown_with_the_reason():
    f = judge_utilisation(SVC, "cpu", None, 70, running=2)
    assert f.status is Status.UNKNOWN and "no CPUUtilization datapoint in the last 1 h although 2 task(s) run" in f.summary
    f = judge_utilisation(SVC, "memory", None, 80, running=None)
    assert f.status is Status.UNKNOWN and "MemoryUtilization" in f.summary and "task count is unknown" in f.summary


def test_utilisation_of_a_service_running_no_task_is_not_a_blind_spot_and_unreadable_is_unknown():
    f = judge_utilisation(SVC, "cpu", None, 70, running=0)
    assert f.status is Status.OK and "no task running" in f.summary
    f = judge_utilisation(SVC, "cpu", 99.0, 70, running=2, unreadable="GetMetricData: AccessDenied")
    assert f.status is Status.UNKNOWN and "AccessDenied" in f.summary


# --- ALB target group ----------------------------------------------------------------------------


def tg(**kw) -> TargetGroupMetrics:
    base = {"target_group": "tg", "service": SVC, "requests": 1000.0, "errors_5xx": None, "p95_s": 20.0, "unhealthy": 0.0, "healthy": 2.0}
    return TargetGroupMetrics(**{**base, **kw})


def test_a_healthy_target_group_is_three_ok_lines():
    out = judge_target_group(tg(), "tg", SVC, TD)
    assert [f.check for f in out] == ["alb-latency", "alb-5xx", "alb-unhealthy"] and all(f.status is Status.OK for f in out)
    assert "p95 20.00 s" in out[0].summary and "target 45 s, CRIT past 60 s" in out[0].summary
    assert out[1].value == 0 and "0 target 5XX of 1000 requests" in out[1].summary  # no 5XX datapoint: ALB publishes no zero


@pytest.mark.parametrize("p95,status", [(45.0, Status.OK), (45.01, Status.WARN), (60.0, Status.WARN), (60.5, Status.CRIT)])
def test_response_time_p95_warn_over_the_target_crit_past_60_s(p95, status):
    f = by(judge_target_group(tg(p95_s=p95), "tg", SVC, TD), "alb-latency")
    assert f.status is status and f.value == p95
    if status is Status.CRIT:
        assert "responses > 60 s" in f.summary


def test_latency_target_is_the_apis_else_the_pipelines_and_without_one_only_crit():
    assert latency_target_s(Thresholds(api_p95_slo_ms=3000, pipeline_p95_slo_s=45)) == 3.0
    assert latency_target_s(TD) == 45 and latency_target_s(Thresholds()) is None
    f = by(judge_target_group(tg(p95_s=50.0), "tg", SVC, Thresholds()), "alb-latency")
    assert f.status is Status.OK and "no latency target in the inventory" in f.summary
    assert by(judge_target_group(tg(p95_s=61.0), "tg", SVC, Thresholds()), "alb-latency").status is Status.CRIT


@pytest.mark.parametrize("errors,status", [(20.0, Status.OK), (21.0, Status.WARN), (50.0, Status.WARN), (51.0, Status.CRIT)])
def test_5xx_share_warn_over_the_error_slo_crit_past_5_pct(errors, status):
    f = by(judge_target_group(tg(errors_5xx=errors), "tg", SVC, TD), "alb-5xx")
    assert f.status is status and f.value == errors / 10
    assert f"{errors:.0f} target 5XX of 1000 requests" in f.summary


def test_requests_without_a_response_time_p95_are_unknown_not_idle():
    f = by(judge_target_group(tg(p95_s=None), "tg", SVC, TD), "alb-latency")
    assert f.status is Status.UNKNOWN and "1000 requests in the last 1 h but no TargetResponseTime p95" in f.summary


def test_5xx_without_requests_is_a_warning_and_no_traffic_is_ok():
    f = by(judge_target_group(tg(requests=None, errors_5xx=3.0, p95_s=None), "tg", SVC, TD), "alb-5xx")
    assert f.status is Status.WARN and "no RequestCount" in f.summary
    out = judge_target_group(tg(requests=None, p95_s=None), "tg", SVC, TD)
    assert all(f.status is Status.OK for f in out) and "no request in the last 1 h" in out[0].summary


def test_unhealthy_hosts_are_a_warning():
    f = by(judge_target_group(tg(unhealthy=1.0, healthy=1.0), "tg", SVC, TD), "alb-unhealthy")
    assert f.status is Status.WARN and f.value == 1 and "1 unhealthy, 1 healthy" in f.summary


def test_no_alb_metric_at_all_or_unreadable_is_unknown_never_ok():
    out = judge_target_group(tg(requests=None, p95_s=None, unhealthy=None, healthy=None), "tg", SVC, TD)
    assert [f.status for f in out] == [Status.UNKNOWN] * 3 and all("dimensions do not match" in f.summary for f in out)
    out = judge_target_group(None, "tg", SVC, TD, "target group tg not found")
    assert [f.status for f in out] == [Status.UNKNOWN] * 3 and "not found" in out[0].summary
    out = judge_target_group(tg(), "tg", SVC, TD, "GetMetricData: Throttling")
    assert [f.status for f in out] == [Status.UNKNOWN] * 3


# --- agents --------------------------------------------------------------------------------------


@pytest.mark.parametrize("line,want", [
    ('{"level": "INFO", "agent": "planner", "execution_time": 3.2, "request_id": "r1"}', ("planner", 3.2, "r1")),
    ('2026-12-04T10:00:00Z INFO {"agent": "coder", "execution_time": "4.5s"}', ("coder", 4.5, None)),
    ('{"msg": "done", "extra": {"agent": "tester", "execution_time": 1}}', ("tester", 1.0, None)),
    ("INFO agent=reviewer execution_time=7.25 pipeline_id=p-9", ("reviewer", 7.25, "p-9")),
    ('INFO agent="ui designer" execution_time=1200ms', ("ui designer", 1.2, None)),
    ("INFO agent: planner, execution_time: 2", ("planner", 2.0, None)),
    ("INFO agent=planner took long", None),  # no execution_time
    ("INFO execution_time=3.2", None),  # no agent
    ("INFO agent=planner execution_time=slow", None),  # not seconds
    ('{"agent": "planner", "execution_time": -1}', None),
    ('{"agent": "planner", "execution_time": true}', None),
    ("", None),
])
def test_parse_timing_reads_json_fields_and_key_value(line, want):
    assert parse_timing(line) == want


def test_seconds():
    assert seconds(3) == 3.0 and seconds("2.5") == 2.5 and seconds("2500ms") == 2.5 and seconds("9 seconds") == 9.0
    assert seconds(None) is None and seconds("nan") is None and seconds(float("inf")) is None


def test_agent_timings_pipeline_from_its_own_lines_else_added_up_per_run():
    lines = [f"agent=planner execution_time={t} run_id=r{i}" for i, t in enumerate((2, 3))] + \
            [f"agent=coder execution_time={t} run_id=r{i}" for i, t in enumerate((5, 6))] + ["agent=x execution_time=oops"]
    t = agent_timings(lines)
    assert t.by_agent == {"planner": [2.0, 3.0], "coder": [5.0, 6.0]} and t.pipeline_source == "runs" and sorted(t.pipeline) == [7.0, 9.0]
    assert t.lines == 5 and t.unparsed == 1 and t.unparsed_sample == ["agent=x execution_time=oops"]
    t = agent_timings(lines + ["agent=pipeline execution_time=30", "agent=total execution_time=31"])
    assert t.pipeline == [30.0, 31.0] and t.pipeline_source == "lines" and "pipeline" not in t.by_agent


def test_agents_within_target_are_one_ok_line_and_the_slow_one_is_named_with_value_and_target():
    lines = [f"agent=planner execution_time={t} run_id=r{i}" for i, t in enumerate([2.0] * 19 + [10.0])]  # p95 (19th of 20) = 2.0
    lines += [f"agent=coder execution_time={t} run_id=r{i}" for i, t in enumerate([25.0] * 20)]
    out = judge_agents(SVC, "/ecs/x", agent_timings(lines), TD, running=2)
    slow = [f for f in out if f.status is not Status.OK]
    assert len(slow) == 1 and slow[0].check == "agent-time" and slow[0].resource == "coder" and slow[0].status is Status.WARN
    assert "agent coder execution_time p95 25.00 s" in slow[0].summary and "target 10 s, CRIT past 60 s" in slow[0].summary
    ok = [f for f in out if f.check == "agent-time" and f.status is Status.OK][0]
    assert ok.resource == SVC and ok.value == 1 and "1 agent(s) within 10 s p95" in ok.summary and "1 over it above" in ok.summary
    pipe = by(out, "pipeline-time")
    assert pipe.status is Status.OK and pipe.value == 27.0  # 2 + 25 a run (one run 10 + 25: the 20th of 20), under 45 s
    assert "SLO 45 s" in pipe.summary


@pytest.mark.parametrize("took,status", [(10.0, Status.OK), (10.5, Status.WARN), (60.0, Status.WARN), (61.0, Status.CRIT)])
def test_agent_exactly_at_target_is_within_past_60_s_crit(took, status):
    out = judge_agents(SVC, "/ecs/x", agent_timings([f"agent=a execution_time={took}"]), TD, running=2)
    assert out[0].status is status and ("pipeline-time" not in {f.check for f in out})  # no run id, no pipeline line


@pytest.mark.parametrize("took,status", [(45.0, Status.OK), (46.0, Status.WARN), (61.0, Status.CRIT)])
def test_pipeline_p95_against_its_slo(took, status):
    out = judge_agents(SVC, "/ecs/x", agent_timings([f'{{"agent": "pipeline", "execution_time": {took}}}']), TD, running=2)
    f = by(out, "pipeline-time")
    assert f.status is status and f.value == took and f.resource == SVC and "from its own lines" in f.summary
    assert [x.check for x in out] == ["pipeline-time"]


def test_no_timing_line_while_tasks_run_is_unknown_none_running_is_not_and_unparsable_is_unknown():
    f = judge_agents(SVC, "/ecs/x", AgentTimings(), TD, running=2)[0]
    assert f.status is Status.UNKNOWN and "no line with agent and execution_time in /ecs/x" in f.summary and "2 task(s) run" in f.summary
    assert judge_agents(SVC, "/ecs/x", AgentTimings(), TD, running=0)[0].status is Status.OK
    assert judge_agents(SVC, "/ecs/x", AgentTimings(), TD, running=None)[0].status is Status.UNKNOWN
    f = judge_agents(SVC, "/ecs/x", agent_timings(["execution_time went up for user kim@example.com"]), TD, running=2)[0]
    assert f.status is Status.UNKNOWN and "carry execution_time but none an agent" in f.summary and "kim@example.com" not in f.summary
    f = judge_agents(SVC, "/ecs/x", None, TD, running=2, unreadable="log group /ecs/x: ResourceNotFoundException")[0]
    assert f.status is Status.UNKNOWN and "ResourceNotFoundException" in f.summary


def test_a_bounded_read_says_so():
    out = judge_agents(SVC, "/ecs/x", agent_timings(["agent=a execution_time=1"] * 3), TD, running=2, truncated=True)
    assert "the first 3 lines of the window only" in out[0].summary and out[0].details["truncated"] is True
