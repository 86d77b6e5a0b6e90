"""dlq-redrive against the sandbox: plan, move 1,000 without loss, filters, breakers, no consumer, the
approval's bound, a refilling DLQ, and a kill part-way. The pure parts: test_judge.py and tests/tasks/test_sqs.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest

from flows.dlq_redrive import flow as rd
from flows.dlq_redrive import judge as rj
from flows.dlq_redrive.flow import dlq_redrive
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.inventory import load_system
from opsbook.mutation.core import ShellApproval, shell_approval
from opsbook.report import RunReport
from sandbox import leh_queues
from tests.helpers import wait_paused

pytestmark = pytest.mark.usefixtures("prefect_harness")
DLQ, SRC = "leh-ai-jobs-dlq", "leh-ai-jobs"
ROOT = Path(__file__).resolve().parents[3]  # the project root (tests/opsbook would shadow opsbook from tests/)


def run(approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):  # the shell's --execute [--yes]; None: the UI form
        state = dlq_redrive(system="leh", return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    return report


def execute(**params) -> RunReport:
    return run(dry_run=False, approval="yes", approver="oncall-kim", **{"rate_per_s": 3000, **params})


def finding(report: RunReport, check: str):
    [f] = [f for f in report.findings if f.check == check]
    return f


def key(body: str, attrs: dict) -> tuple:
    return body, tuple(sorted((k, v["DataType"], v.get("StringValue") or bytes(v.get("BinaryValue", b""))) for k, v in attrs.items()))


@pytest.fixture
def leh(seeded, sandbox):
    inv = seeded("leh")
    leh_queues.consumer_mapping(sandbox, inv)
    return inv


# --- against the sandbox ------------------------------------------------------------------------


def test_dry_run_plans_and_moves_nothing(leh, sandbox):
    leh_queues.fill_dlq(sandbox, leh, 40)
    report = run()
    assert report.outcome == "planned" and report.status is Status.OK and report.dry_run, report.findings
    [a] = report.plan["actions"]
    assert (a["kind"], a["resource"], a["current"], a["target"], a["iam_action"], a["reversible"]) == (
        "sqs-redrive", DLQ, "40 messages", f"moved to {SRC}", "sqs:SendMessage", False)
    assert "duplicates at most one batch (10 messages)" in a["evidence"] and "Enabled" in a["evidence"]
    notes = "\n".join(report.plan["notes"])
    assert re.search(r'sample 5/5: case case-\d{4}, evidence ev-\d{6}, received 1x, \d+ s old: \{"evidence_id"', notes) and "[EMAIL]" in notes
    assert "@example.com" not in json.dumps(report.plan) and "none OPEN" in notes and "at most 40 message(s) moved" in notes
    assert leh_queues.depth(sandbox, leh, DLQ) == {"visible": 40, "in_flight": 0}  # peeked, not taken
    assert leh_queues.depth(sandbox, leh, SRC)["visible"] == 0 and report.records == []


def test_execute_moves_1000_preserving_bodies_and_attributes(leh, sandbox, capsys):
    filled = leh_queues.fill_dlq(sandbox, leh, 1000)
    report = execute()
    assert report.outcome == "done" and report.status is Status.OK, [f for f in report.findings if f.status is not Status.OK]
    assert leh_queues.depth(sandbox, leh, DLQ) == {"visible": 0, "in_flight": 0}
    arrived = leh_queues.read_all(sandbox, leh, SRC)
    assert len(arrived) == 1000
    assert {key(m["body"], m["attributes"]) for m in arrived} == {key(b, a) for b, a in filled["sent"]}
    [rec] = report.records
    assert (rec["status"], rec["resource"], rec["before"], rec["after"], rec["approver"]) == (
        "applied", DLQ, "1000 messages", f"1000 moved to {SRC}", "oncall-kim")
    assert finding(report, "redrive-moved").value == 1000 and finding(report, "redrive-duplicates").value == 0
    assert finding(report, "dlq-depth").value == 0 and finding(report, "source-depth").value == 1000
    assert finding(report, "redrive-api-calls").value <= 0.35
    assert "opsbook: dlq-redrive: leh-ai-jobs-dlq -> leh-ai-jobs: moved 1000/1000" in capsys.readouterr().err
    # every call made is covered by the policy `opsbook policy dlq-redrive` prints
    policy = set(policy_for(rd.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert {"sqs:SendMessage", "sqs:DeleteMessage", "lambda:ListEventSourceMappings"} <= used and used <= policy, used - policy
    assert report.undeclared_iam_actions == []
    from opsbook.cli import main

    assert main(["policy", "dlq-redrive"]) == 0
    assert {a for s in json.loads(capsys.readouterr().out)["Statement"] for a in s["Action"]} == policy  # by resource type


def test_case_filter_moves_only_that_case(leh, sandbox):
    leh_queues.fill_dlq(sandbox, leh, 200, cases=10)
    report = execute(case_id="case-0003")
    assert report.outcome == "done", report.findings
    arrived = leh_queues.read_all(sandbox, leh, SRC)
    assert len(arrived) == 20 and {json.loads(m["body"])["case_id"] for m in arrived} == {"case-0003"}
    assert leh_queues.depth(sandbox, leh, DLQ) == {"visible": 180, "in_flight": 0}  # set aside, visible again
    aside = finding(report, "redrive-set-aside")
    assert aside.value == 180 and aside.details["by_reason"] == {"filter": 180}


def test_open_breaker_case_is_skipped_and_stays(leh, sandbox):
    leh_queues.set_breaker(sandbox, leh, "case-0002", "OPEN")
    leh_queues.set_breaker(sandbox, leh, "case-0004", "CLOSED")
    leh_queues.fill_dlq(sandbox, leh, 100, cases=10)
    report = execute()
    assert "case case-0002: breaker OPEN: its messages are set aside and stay in the DLQ" in report.plan["notes"]
    stayed = leh_queues.read_all(sandbox, leh, DLQ)
    assert len(stayed) == 10 and {json.loads(m["body"])["case_id"] for m in stayed} == {"case-0002"}
    assert len(leh_queues.read_all(sandbox, leh, SRC)) == 90
    assert finding(report, "redrive-set-aside").details["by_reason"] == {"breaker-open": 10}
    assert report.records[0]["detail"].startswith("90 moved, 10 skipped, 0 failed")
    # filtering on an OPEN case cannot move anything
    again = execute(case_id="case-0002")
    assert again.outcome == "nothing-to-do" and "case-0002: its breaker is OPEN" in again.plan["cannot"][0]


def test_max_messages_then_an_empty_dlq(leh, sandbox):
    leh_queues.fill_dlq(sandbox, leh, 30)
    report = execute(max_messages=12)
    assert report.plan["actions"][0]["target"] == f"12 of them moved to {SRC}" and report.records[0]["after"] == f"12 moved to {SRC}"
    assert leh_queues.depth(sandbox, leh, DLQ)["visible"] == 18 and len(leh_queues.read_all(sandbox, leh, SRC, hold_s=1)) == 12
    execute()
    empty = execute()
    assert empty.outcome == "nothing-to-do" and empty.status is Status.OK and empty.plan["unchanged"] == [f"{DLQ}: empty, nothing to move"]


def test_no_enabled_consumer_cannot_move(leh, sandbox):  # no mapping at all: test_judge.py
    leh_queues.consumer_mapping(sandbox, leh, enabled=False)
    leh_queues.fill_dlq(sandbox, leh, 20)
    report = execute()
    assert report.outcome == "nothing-to-do" and report.status is Status.WARN and report.plan["actions"] == []
    [cannot] = report.plan["cannot"]
    assert cannot.startswith("leh-ai-worker: ") and "is Disabled, not Enabled" in cannot
    assert "nothing consumes leh-ai-jobs" in cannot and finding(report, "dlq-redrive-plan").status is Status.WARN
    assert leh_queues.depth(sandbox, leh, DLQ)["visible"] == 20 and leh_queues.depth(sandbox, leh, SRC)["visible"] == 0


@pytest.mark.parametrize("retry_works", [True, False])
def test_an_error_after_a_send_stops_the_run_and_counts_duplicates(leh, sandbox, monkeypatch, retry_works):
    from botocore.exceptions import ClientError

    from tasks import sqs

    leh_queues.fill_dlq(sandbox, leh, 30)
    real, calls = sqs.delete_batch, []

    def flaky(region, url, handles):
        calls.append(len(handles))
        if len(calls) == 2 or (len(calls) == 3 and not retry_works):
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}, "DeleteMessageBatch")
        return real(region, url, handles)

    monkeypatch.setattr(sqs, "delete_batch", flaky)
    report = execute()
    assert report.outcome == "failed" and report.status is Status.CRIT
    assert "stopped by an error: DeleteMessageBatch: ServiceUnavailable" in finding(report, "redrive-moved").summary
    assert report.records[0]["status"] == "failed" and report.records[0]["after"] == f"20 moved to {SRC}"
    assert finding(report, "redrive-duplicates").value == (0 if retry_works else 10)
    assert len(leh_queues.read_all(sandbox, leh, SRC)) == 20
    assert leh_queues.depth(sandbox, leh, DLQ) == {"visible": 10, "in_flight": 0 if retry_works else 10}


def test_approval_is_bound_to_the_planned_count(leh, sandbox):
    from prefect.flow_runs import resume_flow_run

    leh_queues.fill_dlq(sandbox, leh, 100)
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("report", run(dry_run=False, approval_timeout_s=60,
                                                                     rate_per_s=3000)), daemon=True)
    t.start()
    run_id = wait_paused()
    leh_queues.fill_dlq(sandbox, leh, 30, start=100)  # more dead letters arrive while the plan waits for approval
    resume_flow_run(run_id, run_input={"approve": True, "approver": "alice", "reason": "INC-7 outage over"})
    t.join(60)
    report = out["report"]
    assert report.plan["actions"][0]["current"] == "100 messages" and report.approval["approver"] == "alice"
    assert len(leh_queues.read_all(sandbox, leh, SRC)) == 100
    assert leh_queues.depth(sandbox, leh, DLQ) == {"visible": 30, "in_flight": 0}
    dlq = finding(report, "dlq-depth")
    assert dlq.status is Status.WARN and "30 arrived during the run and were not moved" in dlq.summary
    assert report.outcome == "done-with-warnings"


def test_a_dlq_that_refills_as_fast_as_it_drains_stops_with_a_warning(leh, sandbox, monkeypatch):
    monkeypatch.setattr(rj, "REFILL_WINDOW_S", 1.0)
    leh_queues.fill_dlq(sandbox, leh, 300)
    stop = threading.Event()

    def failing_again():  # the worker still fails: messages come back faster than they are moved
        n = 1000
        while not stop.is_set() and n < 3000:
            leh_queues.fill_dlq(sandbox, leh, 20, start=n, workers=2)
            n += 20
            time.sleep(0.1)

    t = threading.Thread(target=failing_again, daemon=True)
    t.start()
    try:
        report = execute(rate_per_s=50)
    finally:
        stop.set()
        t.join(10)
    refill = finding(report, "redrive-refill")
    assert refill.status is Status.WARN and "refills as fast as it drains" in refill.summary
    assert finding(report, "redrive-moved").value < 300 and report.outcome == "done-with-warnings"


def test_a_lost_lease_stops_the_move_before_the_next_batch(leh, sandbox, monkeypatch):
    """A run that lost its lease (stalled past its TTL, another run took over) moves no further batch."""
    from opsbook.mutation import statestore, steps

    leh_queues.fill_dlq(sandbox, leh, 100)
    real, checks = steps.Journal.check, []

    def check(self, resource):
        checks.append(resource)
        if len(checks) > 4:  # the intent's check, then three batches: then another run holds the DLQ
            raise statestore.LeaseLost(f"the lease on {resource} was taken over by run other")
        real(self, resource)

    monkeypatch.setattr(steps.Journal, "check", check)
    report = execute()
    [rec] = report.records
    moved = finding(report, "redrive-moved").value
    assert 0 < moved <= 30 and "taken over by run other" in rec["detail"], rec  # at most the three batches before it
    left = leh_queues.depth(sandbox, leh, DLQ)
    assert left["visible"] + left["in_flight"] == 100 - moved  # nothing lost


# kill trials mid-move (early, middle, late): `make chaos`, with the kill battery at the step's boundaries
@pytest.mark.chaos
@pytest.mark.parametrize("kill_after", [10, 150, 300, 600])
def test_a_kill_mid_redrive_loses_nothing_and_duplicates_at_most_one_batch(leh, sandbox, kill_after):
    from prefect.settings import PREFECT_API_URL

    filled = leh_queues.fill_dlq(sandbox, leh, 1000)
    env = {**os.environ, **sandbox.env(), "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "opsbook.cli", "run", "dlq-redrive", "--system", "leh", "--execute", "--yes", "--json",
           "--param", "rate_per_s=200", "--param", "visibility_timeout_s=2"]
    sqs = boto3.client("sqs", region_name=leh.region, endpoint_url=sandbox.endpoint)
    src = sqs.get_queue_url(QueueName=SRC)["QueueUrl"]
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=devnull, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                moved = int(sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])
                if moved >= kill_after:
                    break
                time.sleep(0.02)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            proc.kill()  # SIGKILL: no cleanup, no release
            proc.wait(10)
            killed_at = time.time()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        err = proc.stderr.read().decode()
    if kill_after >= 300:  # a kill within the first batches can come before the first progress line
        assert "opsbook: dlq-redrive: leh-ai-jobs-dlq -> leh-ai-jobs: moved" in err  # progress on the shell
    until = time.monotonic() + 30  # the batch in hand is visible again after its 2 s visibility timeout
    while leh_queues.depth(sandbox, leh, DLQ)["in_flight"] and time.monotonic() < until:
        time.sleep(0.2)
    assert leh_queues.depth(sandbox, leh, DLQ)["in_flight"] == 0
    dlq, source = leh_queues.read_all(sandbox, leh, DLQ), leh_queues.read_all(sandbox, leh, SRC)
    assert kill_after <= len(source) < 1000
    everything = [key(m["body"], m["attributes"]) for m in dlq + source]
    assert set(everything) == {key(b, a) for b, a in filled["sent"]}  # none lost, none altered
    assert len(everything) - 1000 <= 10  # a kill between send and delete duplicates at most one batch
    # the killed run's lease is kept by a heartbeat in short steps: the DLQ is free again within a minute
    lease = boto3.client("dynamodb", region_name=leh.region, endpoint_url=sandbox.endpoint).get_item(
        TableName="opsbook-state", Key={"pk": {"S": f"lease#{DLQ}"}, "sk": {"S": "lease"}})["Item"]
    assert float(lease["expires_at"]["N"]) - killed_at <= leh.mutations.lease_ttl_s + 1


def test_fifo_keeps_groups_order_and_gets_new_dedup_ids(sandbox, tmp_path):
    inv_file = tmp_path / "fifo-jobs.yaml"
    inv_file.write_text("name: fifo-jobs\nregion: ap-northeast-2\nlambda_functions: [{name: fifo-worker, sqs_source: jobs.fifo}]\n"
                        "sqs_queues: [{name: jobs.fifo, dlq: jobs-dlq.fifo}]\n")
    inv = load_system(str(inv_file))
    kw = dict(region_name=inv.region, endpoint_url=sandbox.endpoint)
    sqs, lam, iam = boto3.client("sqs", **kw), boto3.client("lambda", **kw), boto3.client("iam", **kw)
    for q in ("jobs-dlq.fifo", "jobs.fifo"):
        sqs.create_queue(QueueName=q, Attributes={"FifoQueue": "true"})
    role = iam.create_role(RoleName="fifo-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lam.create_function(FunctionName="fifo-worker", Runtime="python3.12", Role=role, Handler="h.h", Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18})
    leh_queues.consumer_mapping(sandbox, inv)
    leh_queues.fill_dlq(sandbox, inv, 30, cases=3, workers=1)  # in order; FIFO: group = case, dedup id = evidence id
    # sample_size=0: after a VisibilityTimeout=0 receive, moto (unlike SQS) keeps those FIFO messages "pending" and
    # hands out the rest of their group first, which would scramble the order before the runbook sees it.
    with shell_approval("yes"):
        state = dlq_redrive(system=str(inv_file), dry_run=False, rate_per_s=3000, sample_size=0, return_state=True)
    report = state.result(raise_on_failure=False)
    assert report.outcome == "done" and report.records[0]["after"] == "30 moved to jobs.fifo", report.findings
    assert any("no breaker table" in n for n in report.plan["notes"])
    src = sqs.get_queue_url(QueueName="jobs.fifo")["QueueUrl"]
    got = []
    while msgs := sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, AttributeNames=["All"], VisibilityTimeout=60).get("Messages"):
        got += msgs  # a FIFO group in flight blocks the rest of the group: delete what was read
        sqs.delete_message_batch(QueueUrl=src, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])
    assert len(got) == 30 and {m["Attributes"]["MessageDeduplicationId"][:8] for m in got} == {"redrive-"}
    for case in ("case-0000", "case-0001", "case-0002"):
        mine = [json.loads(m["Body"])["evidence_id"] for m in got if m["Attributes"]["MessageGroupId"] == case]
        assert len(mine) == 10 and mine == sorted(mine)  # order within the group kept
