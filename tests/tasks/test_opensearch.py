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
