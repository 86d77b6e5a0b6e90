"""DynamoDB capacity: the DescribeTable answer as a TableCapacity, its value format, and AWS's limits on changing it (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from opsbook.mutation.core import Action, Identity, Plan
from tasks import dynamodb
from tasks.dynamodb import (
    TableCapacity,
    capacity_value,
    decrease_blocked_until,
    is_decrease,
    parse_capacity,
    switch_blocked_until,
    table_capacity,
    undo_within_limits,
)

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
ME = Identity(account="123456789012", arn="arn:aws:sts::123456789012:user/x", region="us-east-1")


def test_describe_table_as_capacity():
    switched = NOW - timedelta(hours=3)
    cap = table_capacity({"Table": {
        "TableName": "T", "TableStatus": "ACTIVE", "BillingModeSummary": {"BillingMode": "PROVISIONED", "LastUpdateToPayPerRequestDateTime": switched},
        "ProvisionedThroughput": {"ReadCapacityUnits": 5, "WriteCapacityUnits": 7, "NumberOfDecreasesToday": 2,
                                  "LastDecreaseDateTime": NOW.timestamp()},
        "GlobalSecondaryIndexes": [{"IndexName": "z", "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 2}},
                                   {"IndexName": "a", "IndexStatus": "CREATING", "ProvisionedThroughput": {"ReadCapacityUnits": 3, "WriteCapacityUnits": 4}}]}})
    assert cap.value == "PROVISIONED r=5 w=7; a r=3 w=4; z r=1 w=2" and not cap.active and cap.units("z", "write") == 2
    assert (cap.last_to_on_demand, cap.last_decrease, cap.decreases_today) == (switched, NOW, 2)
    legacy = table_capacity({"Table": {"TableName": "L", "OnDemandThroughput": {"MaxReadRequestUnits": -1, "MaxWriteRequestUnits": 50}}})
    assert legacy.mode == "PROVISIONED" and legacy.status == "?" and (legacy.on_demand_max_read, legacy.on_demand_max_write) == (None, 50)
    on_demand = table_capacity({"Table": {"TableName": "O", "TableStatus": "ACTIVE", "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
                                          "ProvisionedThroughput": {"ReadCapacityUnits": 0, "WriteCapacityUnits": 0}}})
    assert on_demand.value == "PAY_PER_REQUEST" and on_demand.active


def test_capacity_values_round_trip_and_bad_ones_are_refused():
    v = capacity_value("PROVISIONED", 5, 6, {"b": (1, 2), "a": (3, 4)})
    assert v == "PROVISIONED r=5 w=6; a r=3 w=4; b r=1 w=2" and parse_capacity(v) == ("PROVISIONED", (5, 6), {"a": (3, 4), "b": (1, 2)})
    assert parse_capacity("PAY_PER_REQUEST") == ("PAY_PER_REQUEST", None, {})
    for bad in ("PROVISIONED r=5", "a r=1 w=2", ""):
        with pytest.raises(ValueError, match="not a capacity value"):
            parse_capacity(bad)


def test_what_counts_as_a_decrease():
    assert is_decrease("PROVISIONED r=5 w=9", "PROVISIONED r=5 w=8")
    assert is_decrease("PROVISIONED r=5 w=5; i r=5 w=5", "PROVISIONED r=9 w=9; i r=4 w=9")
    assert not is_decrease("PROVISIONED r=5 w=5", "PROVISIONED r=5 w=5")
    assert not is_decrease("PAY_PER_REQUEST", "PROVISIONED r=1 w=1") and not is_decrease("PROVISIONED r=9 w=9", "PAY_PER_REQUEST")


def cap(**kw) -> TableCapacity:
    return TableCapacity(table="T", status="ACTIVE", mode="PROVISIONED", read=5, write=5, **kw)


def test_switch_to_on_demand_once_in_24_h():
    assert switch_blocked_until(cap(), NOW) is None
    assert switch_blocked_until(cap(last_to_on_demand=NOW - timedelta(hours=23)), NOW) == NOW + timedelta(hours=1)
    assert switch_blocked_until(cap(last_to_on_demand=NOW - timedelta(hours=24)), NOW) is None


@pytest.mark.parametrize(("done", "last", "blocked"), [
    (3, timedelta(minutes=1), None),  # 4 a UTC day at any time
    (4, timedelta(minutes=59), NOW + timedelta(minutes=1)),  # then one an hour
    (4, timedelta(hours=1), None),
    (27, timedelta(hours=5), datetime(2026, 3, 3, tzinfo=timezone.utc)),  # 27 a day at most
    (27, timedelta(days=1), None),  # yesterday's decreases do not count today
])
def test_decrease_limits(done, last, blocked):
    assert decrease_blocked_until(cap(decreases_today=done, last_decrease=NOW - last), NOW) == blocked


def test_undo_within_limits_moves_refused_changes_to_cannot_and_reads_only_when_a_limit_applies():
    read: list[str] = []

    def describe(table: str) -> TableCapacity:
        read.append(table)
        return cap(decreases_today=27, last_decrease=NOW, last_to_on_demand=NOW - timedelta(hours=1))

    actions = [Action(kind="dynamodb-capacity", resource="A", current="PROVISIONED r=9 w=9", target="PROVISIONED r=5 w=5", iam_action="x"),
               Action(kind="dynamodb-capacity", resource="B", current="PROVISIONED r=5 w=5", target="PAY_PER_REQUEST", iam_action="x"),
               Action(kind="dynamodb-capacity", resource="C", current="PAY_PER_REQUEST", target="PROVISIONED r=5 w=5", iam_action="x"),
               Action(kind="autoscaling-bounds", resource="table/D x", current="min=1 max=9", target="min=1 max=5", iam_action="x")]
    plan = undo_within_limits(Plan(runbook="rb", system="s", identity=ME, actions=actions), describe, NOW)
    assert [a.resource for a in plan.actions] == ["C", "table/D x"] and read == ["A", "B"]
    assert "A: undo lowers provisioned capacity" in plan.cannot[0] and "possible at 2026-03-03T00:00" in plan.cannot[0]
    assert "B: undo switches it to on-demand" in plan.cannot[1] and "possible at 2026-03-03T11:00" in plan.cannot[1]
    assert "allowed any time" in plan.actions[0].evidence and "by its own policy" in plan.actions[1].evidence
    ok = undo_within_limits(Plan(runbook="rb", system="s", identity=ME, actions=actions[:1]), lambda t: cap(), NOW)
    assert "a decrease (AWS allows 4 a UTC day" in ok.actions[0].evidence


def test_to_document_gives_plain_json():
    item = {"n": {"N": "2.5"}, "k": {"N": "7"}, "ss": {"SS": ["b", "a"]}, "m": {"M": {"x": {"BOOL": True}}},
            "b": {"B": b"\x00\x01"}, "l": {"L": [{"N": "1"}, {"S": "s"}, {"NULL": True}]}}
    assert dynamodb.to_document(item) == {"n": 2.5, "k": 7, "ss": ["a", "b"], "m": {"x": True}, "b": "AAE=", "l": [1, "s", None]}


# --- restore-table's item writes (in-process moto): a conditional write never overwrites what it did not read ---------


def test_conditional_item_writes_and_reads_in_key_order(aws_mock):
    import boto3
    from botocore.exceptions import ClientError

    from opsbook.inventory import System

    system = System(name="t", region="us-east-1")
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(TableName="T", BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    a = {"id": {"S": "a"}, "v": {"N": "1"}, "s": {"SS": ["x", "y"]}}
    ka, kb = {"id": {"S": "a"}}, {"id": {"S": "b"}}
    dynamodb.write_item_if(system, "T", ka, a, None)  # absent as read: written
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        dynamodb.write_item_if(system, "T", ka, a, None)  # it exists now: never overwritten
    newer = {**a, "v": {"N": "2"}}
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        dynamodb.write_item_if(system, "T", ka, newer, {**a, "v": {"N": "9"}})  # not what was read: nothing written
    dynamodb.write_item_if(system, "T", ka, newer, a)
    assert dynamodb.get_items(system, "T", [kb, ka]) == [None, newer]
    dynamodb.write_item_if(system, "T", ka, None, newer)  # an undo of a put-back item: deleted while still as written
    assert dynamodb.get_items(system, "T", [ka]) == [None]
    assert dynamodb.key_names(system, "T") == ["id"]
    assert dynamodb.read_table_setting(system, "T", "ttl") == "off"
    dynamodb.set_table_setting(system, "T", "ttl", "attribute exp")
    assert dynamodb.read_table_setting(system, "T", "ttl") == "attribute exp"
