"""tasks/logs.py's pure helpers: like log lines grouped by their shape."""

from __future__ import annotations

from tasks.logs import message_shape, top_messages


def test_message_shapes_group_like_lines():
    lines = ["ERROR timeout after 30 s #1", "ERROR timeout after 31 s #2", "ERROR db 0a1b2c3d4e5f6a7b gone"]
    assert message_shape(lines[0]) == message_shape(lines[1]) == "ERROR timeout after N s #N"
    assert message_shape(lines[2]) == "ERROR db <hex> gone"
    assert top_messages(lines)[0] == {"message": "ERROR timeout after N s #N", "count": 2}
    assert top_messages([]) == []
