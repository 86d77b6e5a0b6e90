"""tasks/logs.py: like log lines grouped by their shape; the error lines of a window read page by page up to a line budget (moto)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3

import tasks.logs as logs_tasks
from tasks.logs import LineBudget, message_shape, read_error_lines, top_messages


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


def plant(group: str, n: int, now: datetime) -> None:
    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    logs.put_log_events(logGroupName=group, logStreamName="s", logEvents=[
        {"timestamp": int((now - timedelta(minutes=50 - i)).timestamp() * 1000), "message": f"ERROR job {i} failed for kim.minsu@example.com"}
        for i in range(n)])


def test_read_error_lines_reads_every_page_until_the_budget(aws_mock, monkeypatch):
    monkeypatch.setattr(logs_tasks, "FILTER_PAGE_MAX", 10)  # pages of 10 lines: 25 lines are 3 pages
    now = datetime.now(timezone.utc)
    plant("/g", 25, now)
    start = now - timedelta(hours=1)
    whole = read_error_lines("us-east-1", "/g", "ERROR", start, now, LineBudget(100, ["/g"]), samples=3)
    assert (whole["count"], whole["pages"], whole["cut"], len(whole["lines"])) == (25, 3, False, 25)
    assert whole["samples"] == [f"ERROR job {i} failed for [EMAIL]" for i in range(3)]  # masked before it leaves the task
    assert [ms for ms, _ in whole["lines"]] == sorted(ms for ms, _ in whole["lines"])
    cut = read_error_lines("us-east-1", "/g", "ERROR", start, now, LineBudget(15, ["/g"]))
    assert (cut["count"], cut["pages"], cut["cut"], len(cut["lines"])) == (15, 2, True, 15)  # asked for no more than the budget left
    exact = read_error_lines("us-east-1", "/g", "ERROR", start, now, LineBudget(25, ["/g"]))
    assert exact["cut"] is False and len(exact["lines"]) == 25  # the last page fits exactly: not cut
    spent = LineBudget(1, ["/g", "/h"])
    assert spent.take("/h", 1) == 1
    nothing = read_error_lines("us-east-1", "/g", "ERROR", start, now, spent)
    assert (nothing["count"], nothing["pages"], nothing["cut"]) == (0, 0, True)  # the budget was spent elsewhere: not read, said


def test_log_retention_is_read_fifty_groups_a_call_and_a_missing_group_is_said_missing(sandbox):
    """read_log_group_batch over the sandbox (moto with DescribeLogGroups' logGroupIdentifiers): 120 groups, 3 calls."""
    from opsbook import aws
    from opsbook.inventory import load_system

    system = load_system("hr-resource-optimization")
    c = boto3.client("logs", region_name=system.region)
    names = [f"/aws/lambda/audit-{i:03d}" for i in range(120)]
    for n in names[:-1]:  # the last one does not exist
        c.create_log_group(logGroupName=n)
    c.put_retention_policy(logGroupName=names[5], retentionInDays=30)
    calls = aws.start_call_log()
    groups = [(n, False, True) for n in names]
    states = [s for i in range(0, len(groups), logs_tasks.DESCRIBE_BATCH)
              for s in logs_tasks.read_log_group_batch(system, groups[i:i + logs_tasks.DESCRIBE_BATCH])]
    assert calls.by_operation() == {"logs:DescribeLogGroups": 3}
    assert [s.name for s in states] == names
    assert states[5].retention_days == 30 and states[6].retention_days is None and all(s.exists for s in states[:-1])
    assert not states[-1].exists and states[-1].error is None


def test_a_batch_answer_without_the_groups_details_is_read_group_by_group(sandbox, monkeypatch):
    """Should DescribeLogGroups answer logGroupIdentifiers with names only (as it answers logGroupNamePattern), a group
    with a retention must not read as "never expires": the batch is read again group by group."""
    from opsbook import aws
    from opsbook.inventory import load_system

    system = load_system("hr-resource-optimization")
    c = boto3.client("logs", region_name=system.region)
    for n in ("/aws/lambda/kept", "/aws/lambda/forever"):
        c.create_log_group(logGroupName=n)
    c.put_retention_policy(logGroupName="/aws/lambda/kept", retentionInDays=30)
    paginate = aws.paginate

    def trimmed(client, op, key, **kw):
        for g in paginate(client, op, key, **kw):
            yield {k: v for k, v in g.items() if k in ("arn", "creationTime", "logGroupName")} if "logGroupIdentifiers" in kw else g

    monkeypatch.setattr(logs_tasks.aws, "paginate", trimmed)
    calls = aws.start_call_log()
    states = logs_tasks.read_log_group_batch(system, [("/aws/lambda/kept", False, True), ("/aws/lambda/forever", False, True)])
    assert [(s.name, s.retention_days) for s in states] == [("/aws/lambda/kept", 30), ("/aws/lambda/forever", None)]
    assert calls.by_operation() == {"logs:DescribeLogGroups": 3}  # the batch, then one a group
