"""opsbook/collect.py: what the process may leave behind when it ends (the deadline runner's threads)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from opsbook import collect


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(collect.DeadlineTaskRunner, "_pools", [])
    return collect.DeadlineTaskRunner._pools


def test_idle_threads_of_a_finished_pool_are_not_called_abandoned(pools) -> None:
    pool = ThreadPoolExecutor(max_workers=4)
    list(pool.map(lambda x: x, range(8)))  # every worker started, none busy
    pools.append(pool)
    pool.shutdown(wait=False, cancel_futures=True)  # what DeadlineTaskRunner.cancel_all does
    assert collect.abandoned() == []


def test_a_thread_still_blocked_in_a_call_is_abandoned_and_the_idle_one_is_not(pools) -> None:
    release = threading.Event()
    pool = ThreadPoolExecutor(max_workers=2)
    blocked = pool.submit(release.wait, 30)
    pool.submit(lambda: None).result()
    pools.append(pool)
    pool.shutdown(wait=False, cancel_futures=True)
    try:
        left = collect.abandoned()
        assert len(left) == 1 and left[0].is_alive()
    finally:
        release.set()
    assert blocked.result(timeout=5) is True
