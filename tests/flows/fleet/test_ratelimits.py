"""The shared per-API rate limits (Prefect global concurrency limits on the test server): created once, kept,
repaired; leases in growing batches; the rate enforced across gates."""

from __future__ import annotations

import pytest

from flows.fleet.ratelimits import QUOTAS, Quota, QuotaGate, ensure_limits, limit_name

A = "111111111111"


@pytest.fixture
def harness(prefect_harness):
    return prefect_harness


def test_rate_limits_are_created_once_kept_and_repaired(harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    q = QUOTAS[("logs", "FilterLogEvents")]
    names = {limit_name("logs", "FilterLogEvents", "eu-north-1"): q, limit_name("cloudwatch", "GetMetricData", "eu-north-1"): QUOTAS[("cloudwatch", "GetMetricData")]}
    assert set(ensure_limits(names).values()) == {"created"}
    assert set(ensure_limits(names).values()) == {"kept"}
    with get_client(sync_client=True) as client:
        got = client.read_global_concurrency_limit_by_name("aws-logs-FilterLogEvents-eu-north-1")
        assert (got.limit, got.slot_decay_per_second) == (5, 5.0)
        client.update_global_concurrency_limit("aws-logs-FilterLogEvents-eu-north-1", GlobalConcurrencyLimitUpdate(limit=20))  # quota raised
        client.update_global_concurrency_limit("aws-cloudwatch-GetMetricData-eu-north-1", GlobalConcurrencyLimitUpdate(slot_decay_per_second=0))
    assert ensure_limits(names) == {"aws-logs-FilterLogEvents-eu-north-1": "kept", "aws-cloudwatch-GetMetricData-eu-north-1": "repaired"}
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("aws-logs-FilterLogEvents-eu-north-1").limit == 20  # the operator's value stays
        assert client.read_global_concurrency_limit_by_name("aws-cloudwatch-GetMetricData-eu-north-1").slot_decay_per_second == 50.0


def test_gate_leases_tokens_in_growing_batches_and_names_the_scope(harness):
    gate = QuotaGate(account=A, scope="account")
    for _ in range(20):
        gate("cloudwatch", "GetMetricData", "eu-central-1")
    gate("dynamodb", "DescribeTable", "eu-central-1")  # no published per-second quota to share: not gated
    name = f"aws-cloudwatch-GetMetricData-eu-central-1-{A}"
    assert gate.stats() == {name: {"calls": 20, "leases": 5}}  # 1+2+4+8+16 tokens, not 20 round trips
    assert limit_name("logs", "FilterLogEvents", "eu-west-1") == "aws-logs-FilterLogEvents-eu-west-1"
    slow = Quota("logs", "FilterLogEvents", 5.0, "")
    assert (slow.batch, slow.burst) == (3, 5)


def test_gate_enforces_the_rate_across_gates(harness):
    import time

    tiny = {("logs", "FilterLogEvents"): Quota("logs", "FilterLogEvents", 2.0, "test quota: 2/s")}
    gates = [QuotaGate(quotas=tiny), QuotaGate(quotas=tiny)]  # two runs sharing one limit
    t0 = time.monotonic()
    for i in range(8):
        gates[i % 2]("logs", "FilterLogEvents", "sa-east-1")
    elapsed = time.monotonic() - t0
    assert elapsed >= 2.0, f"8 calls at 2/s (burst 2) took {elapsed:.1f} s"  # (8 - burst 2) / 2 per s = 3 s, leases of 1
