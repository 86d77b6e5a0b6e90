"""tasks/dynamodb.py's pure helpers: DynamoDB JSON to plain JSON documents."""

from __future__ import annotations

from tasks import dynamodb


def test_to_document_gives_plain_json():
    item = {"n": {"N": "2.5"}, "k": {"N": "7"}, "ss": {"SS": ["b", "a"]}, "m": {"M": {"x": {"BOOL": True}}},
            "b": {"B": b"\x00\x01"}, "l": {"L": [{"N": "1"}, {"S": "s"}, {"NULL": True}]}}
    assert dynamodb.to_document(item) == {"n": 2.5, "k": 7, "ss": ["a", "b"], "m": {"x": True}, "b": "AAE=", "l": [1, "s", None]}
