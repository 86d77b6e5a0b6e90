"""tasks/opensearch.py's pure helpers."""

from __future__ import annotations

from tasks import opensearch


def test_chunks_do_not_read_ahead():
    seen = []

    def items():
        for i in range(5):
            seen.append(i)
            yield i

    it = opensearch.chunks(items(), 2)
    assert next(it) == [0, 1] and seen == [0, 1]
    assert list(it) == [[2, 3], [4]] and list(opensearch.chunks([], 3)) == []


def test_importing_the_opensearch_tasks_does_not_load_opensearch_py():
    """A system without OpenSearch never pays for opensearch-py (~20 ms of every run's start): it is loaded by the runs
    that talk to a cluster (checked in a fresh interpreter: this one may have loaded it for another test)."""
    import subprocess
    import sys

    code = ("import sys, flows.daily_health.flow, tasks.opensearch as t; assert 'opensearchpy' not in sys.modules; "
            "t._ose(); assert 'opensearchpy' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
