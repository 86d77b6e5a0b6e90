"""dlq-redrive's judge without the sandbox: the plan's refusals and notes, which messages move, the refill
verdict at its window, the findings after moving."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from flows.dlq_redrive import judge as j
from opsbook.findings import Status
from opsbook.inventory import BillShock, SqsQueue, System
from opsbook.mutation.core import Identity, Refused
from tasks.awslambda import Consumer
from tasks.sqs import QueueState, RedriveJob, RedriveResult

ID = Identity(account="123456789012", arn="arn:aws:sts::123456789012:assumed-role/x/y", region="ap-northeast-2")
Q = SqsQueue(name="jobs", dlq="jobs-dlq", consumer_function="worker")
SYS = System(name="t", region="ap-northeast-2", sqs_queues=[Q], bill_shock=BillShock())


def qs(name: str, visible: int = 0, in_flight: int = 0, **kw) -> QueueState:
    base = dict(name=name, url=f"https://q/{name}", arn=f"arn:aws:sqs:r:1:{name}", fifo=False, visible=visible, in_flight=in_flight,
                retention_s=1209600 if name.endswith("dlq") else 345600, visibility_timeout_s=30, max_message_bytes=262144)
    return QueueState(**{**base, **kw})


def enabled() -> Consumer:
    return Consumer(function="worker", queue_arn="arn", mapping_uuid="m-1", state="Enabled", mappings=1)


def plan(reads=None, breakers=None, system=SYS, **kw):
    reads = {"dlq": qs("jobs-dlq", 40), "source": qs("jobs"), "sample": [], "consumer": enabled(), **(reads or {})}
    args = dict(max_messages=None, rate=50.0, rate_from="the inventory's redrive_rate_per_s", case_id=None, evidence_id=None,
                visibility_timeout_s=30)
    return j.decide(system, ID, Q, kw.pop("function", "worker"), reads, breakers or {}, **{**args, **kw})


def test_a_readable_dlq_with_an_enabled_consumer_plans_the_move():
    p = plan()
    [a] = p.actions
    assert (a.kind, a.resource, a.current, a.target, a.reversible) == ("sqs-redrive", "jobs-dlq", "40 messages", "moved to jobs", False)
    assert "duplicates at most one batch (10 messages)" in a.evidence and "mapping m-1 Enabled" in a.evidence
    assert "at most 40 message(s) moved and 40 handled" in p.notes[0] and "about 1 s for 40" in p.notes[1]


def test_empty_dlq_is_unchanged_and_max_messages_bounds_the_count():
    assert plan({"dlq": qs("jobs-dlq")}).unchanged == ["jobs-dlq: empty, nothing to move"]
    assert plan(max_messages=12).actions[0].target == "12 of them moved to jobs"
    assert plan(max_messages=40).actions[0].target == "moved to jobs" and plan(max_messages=41).actions[0].target == "moved to jobs"
    assert j.planned_limit(40, None) == 40 and j.planned_limit(40, 12) == 12 and j.planned_limit(40, 0) == 40


def test_unreadable_or_missing_queues_cannot_move():
    missing = ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue", "Message": "x"}}, "GetQueueUrl")
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetQueueAttributes")
    p = plan({"dlq": missing, "source": denied})
    assert p.actions == [] and p.cannot[0] == "jobs-dlq: the dead-letter queue does not exist"
    assert p.cannot[1].startswith("jobs: could not read the source queue (GetQueueAttributes: access denied")


@pytest.mark.parametrize("consumer, words", [
    (Consumer(function="worker", queue_arn="arn", mappings=0), "no event source mapping from jobs"),
    (Consumer(function="worker", queue_arn="arn", mapping_uuid="m-1", state="Disabled", mappings=1),
     "its event source mapping m-1 from jobs is Disabled, not Enabled"),
    (RuntimeError("boom"), "could not read its event source mappings (RuntimeError: boom)"),
])
def test_no_enabled_consumer_cannot_move(consumer, words):
    p = plan({"consumer": consumer})
    assert p.actions == [] and p.cannot[0].startswith("worker: ") and words in p.cannot[0]
    if not isinstance(consumer, BaseException):
        assert "nothing consumes jobs, so moved messages would wait there and expire after 4.0 d" in p.cannot[0]
    none = plan(function=None)
    assert "the inventory names no consumer function" in none.cannot[0] and none.actions == []


def test_fifo_mismatch_and_unreadable_breakers_cannot_move():
    assert "jobs-dlq: FIFO but jobs is standard" in plan({"dlq": qs("jobs-dlq", 5, fifo=True)}).cannot[0]
    p = plan(breakers=RuntimeError("throttled"))
    assert p.cannot == ["leh-circuit-breakers: could not read the case breakers (RuntimeError: throttled); moving without "
                        "them could restart the spend they stopped"]


def test_breaker_notes_and_an_open_filtered_case():
    s = [j.Sampled(message_id="1", case_id="c1", evidence_id="e", receive_count=2, age_s=90, body="{}"),
         j.Sampled(message_id="2", case_id="c2", evidence_id=None, receive_count=1, age_s=None, body="x")]
    p = plan({"sample": s}, breakers={"c2": "OPEN"})
    assert "case c2: breaker OPEN: its messages are set aside and stay in the DLQ" in p.notes and p.actions
    assert "sample 1/2: case c1, evidence e, received 2x, 2 min old: {}" in p.notes and "sample 2/2: case c2, evidence -, received 1x: x" in p.notes
    assert "breakers of the 2 sampled case(s): none OPEN (re-read while moving)" in plan({"sample": s}).notes
    shut = plan(breakers={"c2": "OPEN"}, case_id="c2")
    assert shut.actions == [] and shut.cannot[0].startswith("c2: its breaker is OPEN")
    plain = System(name="t", region="ap-northeast-2", sqs_queues=[Q])
    assert any("no breaker table" in n for n in plan(system=plain).notes)
    unsampled = plan({"sample": RuntimeError("x")})
    assert unsampled.actions and "jobs-dlq: could not sample messages" in unsampled.notes[0]


def test_which_messages_move():
    assert j.parse_body('{"case_id": 7, "evidence_id": "e"}') == ("7", "e")
    assert j.parse_body("not json") == (None, None) and j.parse_body("[1]") == (None, None)
    assert j.hold_back("c", "e", None, None, None) is None
    assert j.hold_back("c", "e", "d", None, None) == "filter" and j.hold_back("c", "e", "c", "f", None) == "filter"
    assert j.hold_back("c", "e", "c", "e", {"c": "OPEN"}) == "breaker-open"
    assert j.hold_back("c", "e", None, None, {"c": "HALF_OPEN"}) is None and j.hold_back(None, None, None, None, {"c": "OPEN"}) is None
    s = j.sample_of({"MessageId": "m", "Body": '{"case_id": "c", "note": "mail kim@example.com"}',
                     "Attributes": {"SentTimestamp": "1000", "ApproximateReceiveCount": "3"}}, now_ms=61_000)
    assert (s.case_id, s.evidence_id, s.receive_count, s.age_s) == ("c", None, 3, 60.0) and "kim@example.com" not in s.body


def test_refill_verdict_at_its_window():
    draining = [(0, 1000, 0), (30, 700, 300), (61, 400, 600)]
    assert j.refill_verdict(draining) is None
    refilling = [(0, 1000, 0), (30, 1000, 300), (61, 1010, 600)]
    assert "refills as fast as it drains: 610 message(s) arrived while 600 were moved" in j.refill_verdict(refilling)
    assert j.refill_verdict(refilling[:2]) is None  # too few samples
    assert j.refill_verdict([(0, 1000, 0), (30, 1000, 300), (59, 1010, 600)]) is None  # the window has not passed
    assert j.refill_verdict([(0, 1000, 0), (30, 1000, 300), (60, 1000, 600)]) is not None  # exactly at it: arrived == drained
    assert j.refill_verdict([(0, 1000, 0), (30, 1000, 300), (60, 999, 600)]) is None


def test_queue_choice_is_explicit():
    two = System(name="t", region="ap-northeast-2", sqs_queues=[Q, SqsQueue(name="b", dlq="b-dlq")])
    assert j.pick_queue(SYS, None) is Q and j.pick_queue(two, "b-dlq").name == "b"
    with pytest.raises(Refused, match="not a queue with a dead-letter queue"):
        j.pick_queue(SYS, "nope")
    with pytest.raises(Refused, match="2 queues with a dead-letter queue; choose one"):
        j.pick_queue(two, None)
    with pytest.raises(Refused, match="no SQS queue with a dead-letter queue"):
        j.pick_queue(System(name="t", region="ap-northeast-2"), None)
    assert j.queue_arn(ID, "jobs") == "arn:aws:sqs:ap-northeast-2:123456789012:jobs"


def test_findings_after_moving():
    job = RedriveJob(dlq="jobs-dlq", dlq_url="u", source="jobs", source_url="s", fifo=False, limit=100, budget=100, rate_per_s=50,
                     visibility_timeout_s=30, max_batch_bytes=262144)
    ok = RedriveResult(moved=100, seconds=2.0, stop_reason="moved the 100 message(s) planned", calls={"sqs:ReceiveMessage": 10})
    after = {"dlq": qs("jobs-dlq"), "source": qs("jobs", 100)}
    f = {x.check: x for x in j.judge("jobs-dlq", "jobs", job, ok, (qs("jobs-dlq", 100), qs("jobs")), after, 40)}
    assert {c: x.status for c, x in f.items()} == {c: Status.OK for c in
                                                   ("redrive-moved", "redrive-set-aside", "redrive-duplicates", "dlq-depth", "source-depth", "redrive-api-calls")}
    assert "moved 100 of 100 planned in 2.0 s (50 msg/s" in f["redrive-moved"].summary and f["redrive-api-calls"].value == 0.1
    bad = RedriveResult(moved=20, error="x", duplicates=10, set_aside={"send-failed:E": 1, "filter": 2}, refill="refills")
    g = {x.check: x for x in j.judge("jobs-dlq", "jobs", job, bad, (qs("jobs-dlq", 100), qs("jobs")),
                                     {"dlq": qs("jobs-dlq", 81), "source": RuntimeError("gone")}, 40)}
    assert g["redrive-moved"].status is Status.CRIT and g["redrive-refill"].status is Status.WARN
    assert g["redrive-set-aside"].status is Status.WARN and "outside the filter: 2" in g["redrive-set-aside"].summary
    assert g["redrive-duplicates"].status is Status.WARN and g["source-depth"].status is Status.UNKNOWN
    assert g["dlq-depth"].status is Status.WARN and "1 arrived during the run and were not moved" in g["dlq-depth"].summary
