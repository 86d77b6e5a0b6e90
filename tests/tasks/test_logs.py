"""tasks/logs.py's pure helpers: like log lines grouped by their shape."""

from __future__ import annotations

from tasks.logs import LineBudget, message_shape, top_messages


def test_message_shapes_group_like_lines():
    lines = ["ERROR timeout after 30 s #1", "ERROR timeout after 31 s #2", "ERROR db 0a1b2c3d4e5f6a7b gone"]
    assert message_shape(lines[0]) == message_shape(lines[1]) == "ERROR timeout after N s #N"
    assert message_shape(lines[2]) == "ERROR db <hex> gone"
    assert top_messages(lines)[0] == {"message": "ERROR timeout after N s #N", "count": 2}
    assert top_messages([]) == []


def test_line_budget_gives_each_group_its_share_then_the_pool():
    b = LineBudget(10, ["/a", "/b", "/c"])  # shares of 3, a pool of 1
    assert b.room("/a") == 4 and b.take("/a", 100) == 4 and b.room("/a") == 0
    assert b.take("/b", 2) == 2 and b.room("/b") == 1  # its own share still holds 1; the pool is empty
    b.release("/c")  # /c found nothing: its share goes to the pool
    assert b.room("/a") == 3 and b.take("/a", 5) == 3
    assert b.take("/b", 5) == 1 and b.take("/b", 5) == 0
    assert b.take("/unknown", 1) == 0
    assert LineBudget(2, ["/a", "/b", "/c"]).room("/a") == 2  # fewer lines than groups: all in the pool
