"""tasks/sqs.py's pure helpers: send entries, payload chunks, the pacer, the set-aside hold."""

from __future__ import annotations

import time

from tasks import sqs


def test_entries_keep_body_attributes_and_fifo_identity():
    msg = {"MessageId": "m-1", "Body": '{"case_id": "c"}', "Attributes": {"MessageGroupId": "c", "AWSTraceHeader": "Root=1-a"},
           "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "3", "StringListValues": []},
                                 "b": {"DataType": "Binary", "BinaryValue": b"\x00"}}}
    e = sqs.send_entry(msg, "0", fifo=True)
    assert e["MessageBody"] == msg["Body"] and e["MessageAttributes"] == {"n": {"DataType": "Number", "StringValue": "3"},
                                                                         "b": {"DataType": "Binary", "BinaryValue": b"\x00"}}
    assert (e["MessageGroupId"], e["MessageDeduplicationId"]) == ("c", "redrive-m-1")
    assert e["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"] == "Root=1-a"
    assert "MessageGroupId" not in sqs.send_entry(msg, "0", fifo=False)
    assert sqs.entry_bytes(e) == len(msg["Body"]) + len("n") + len("Number") + 1 + len("b") + len("Binary") + 1
    big = [{"Id": str(i), "MessageBody": "x" * 400} for i in range(10)]
    assert [len(c) for c in sqs.chunks_by_size(big, 1000)] == [2, 2, 2, 2, 2]
    assert [len(c) for c in sqs.chunks_by_size(big[:1], 10)] == [1] and sqs.chunks_by_size([], 10) == []


def test_pacer_spaces_what_was_sent():
    p = sqs.Pacer(100)
    assert p.wait() == 0
    p.spend(10)
    t0 = time.monotonic()
    p.wait()
    assert 0.08 <= time.monotonic() - t0 <= 0.3


def test_set_aside_messages_are_held_for_the_rest_of_the_run():
    job = sqs.RedriveJob(dlq="d", dlq_url="u", source="s", source_url="v", fifo=False, limit=1000, budget=1000, rate_per_s=10,
                         visibility_timeout_s=30, max_batch_bytes=262144)
    assert sqs.hold_s(job, 0) == 260 and sqs.hold_s(job, 1000) == 60
    assert sqs.hold_s(job.model_copy(update={"visibility_timeout_s": 600}), 1000) == 600
    assert sqs.hold_s(job.model_copy(update={"budget": 10**7, "rate_per_s": 1}), 0) == sqs.MAX_HOLD_S
