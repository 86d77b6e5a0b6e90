"""restore-table against the sandbox (moto): items from a backup (exactly the deleted items come back, a live item changed
after the restore point is untouched, a re-run does nothing, undo puts the previous images back); switch (a consumer whose
role cannot reach the copy is not switched; its twin is, then undone; the copy is removed only once nobody points at it)."""

from __future__ import annotations

import json

import boto3
import pytest

from flows.restore_table import flow as rt
from flows.restore_table import judge as j
from flows.restore_table.flow import restore_table
from opsbook.findings import Status
from opsbook.iam import iam_action, policy_for
from opsbook.mutation.core import ShellApproval, shell_approval
from opsbook.report import RunReport
from sandbox.faults import apply_fault

pytestmark = pytest.mark.usefixtures("prefect_harness")

TODO, TABLE, FN = "todo-app", "todos", "todo-api"


def run(approval: ShellApproval | None = None, **params) -> RunReport:
    with shell_approval(approval):
        state = restore_table(system=TODO, return_state=True, **params)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, RunReport), report
    assert report.undeclared_iam_actions == []
    policy = set(policy_for(rt.TASKS)["Statement"][0]["Action"])
    used = {iam_action(*op.split(":")) for op in report.api_calls_by_operation} - {None}
    assert used <= policy, used - policy
    return report


def test_restoring_the_copy_declares_what_aws_requires_on_the_target_table():
    declared = set(policy_for([rt.ensure_copy])["Statement"][0]["Action"])
    assert {"dynamodb:RestoreTableFromBackup", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:GetItem",
            "dynamodb:Query", "dynamodb:Scan", "dynamodb:BatchWriteItem"} <= declared


def item(i: int, title: str) -> dict:
    return {"id": {"S": f"t{i}"}, "title": {"S": title}}


def items(ddb, table: str = TABLE) -> dict[str, dict]:
    return {it["id"]["S"]: it for it in ddb.scan(TableName=table, ConsistentRead=True)["Items"]}


def test_items_from_a_backup_exactly_the_deleted_come_back_newer_untouched_rerun_nothing_undo(seeded, sandbox):
    inv = seeded(TODO)
    ddb = boto3.client("dynamodb", region_name=inv.region, endpoint_url=sandbox.endpoint)
    lost = apply_fault(sandbox, inv, "table-items-deleted")  # t00, t01 deleted after the backup; t05 edited, t16 added since
    arn = lost["backup_arn"]
    before = items(ddb)
    assert set(lost["deleted"]) == {"t00", "t01"} and not set(lost["deleted"]) & set(before)

    dry = run(table=TABLE, restore_point=arn)  # no copy yet: the plan shows the restore only
    assert dry.outcome == "planned" and [a["kind"] for a in dry.plan["actions"]] == [j.COPY_KIND]
    copy = j.copy_name(TABLE, arn)
    assert copy not in ddb.list_tables()["TableNames"]

    done = run("yes", table=TABLE, restore_point=arn, dry_run=False)
    assert done.outcome == "done", done.findings
    [action] = done.plan["actions"]
    assert action["kind"] == j.ITEMS_KIND and json.loads(action["current"]) == [None, None]
    after = items(ddb)
    assert set(after) == set(before) | {"t00", "t01"} and after["t01"]["title"]["S"] == "task 1"
    assert after["t00"]["blob"]["B"] == b"\x00\xff" and sorted(after["t00"]["tags"]["BS"]) == [b"a", b"b"]  # binary back as it was
    assert after["t05"] == before["t05"] and after["t16"] == before["t16"]  # the newer and the added item untouched
    assert any("newer" in u and "id=t05" in u for u in done.plan["unchanged"])
    assert lost["expired"] not in after and any(f"id={lost['expired']}" in u and "is past: expired" in u for u in done.plan["unchanged"])
    assert [r["status"] for r in done.records if r["kind"] == j.ITEMS_KIND] == ["verified"]
    rto = next(f for f in done.findings if f.check == "restore-rto")
    assert rto.status is Status.OK and "sandbox RTO" in rto.summary
    tags = {t["Key"]: t["Value"] for t in ddb.list_tags_of_resource(ResourceArn=ddb.describe_table(TableName=copy)["Table"]["TableArn"])["Tags"]}
    assert tags["opsbook:restore-source"] == TABLE and tags["opsbook:restore-point"] == arn

    again = run("yes", table=TABLE, restore_point=arn, dry_run=False)  # the same copy, nothing left to write
    assert again.outcome == "nothing-to-do", again.findings
    assert [t for t in ddb.list_tables()["TableNames"] if t.startswith(f"{TABLE}-restore-")] == [copy]

    undo = run("yes", undo_run=done.flow_run_id, dry_run=False)
    assert undo.outcome == "done", undo.findings
    assert items(ddb) == before  # the previous images (no t00, t01) are back

    latest = run("yes", table=TABLE, restore_point="latest", dry_run=False)  # moto's PITR copies the table as it is now
    assert latest.outcome == "nothing-to-do", latest.findings
    assert any("sandbox: moto's point-in-time restore copies the table as it is now" in n for n in latest.plan["notes"])
    desc = ddb.describe_table(TableName=j.copy_name(TABLE, "latest"))["Table"]  # latest: as of the copy's RestoreDateTime
    tags = {t["Key"]: t["Value"] for t in ddb.list_tags_of_resource(ResourceArn=desc["TableArn"])["Tags"]}
    assert tags["opsbook:restore-at"] == desc["RestoreSummary"]["RestoreDateTime"].isoformat()


def test_switch_refused_while_the_role_cannot_reach_the_copy_then_switched_undone_and_the_copy_removed(seeded, sandbox):
    inv = seeded(TODO)
    kw = {"region_name": inv.region, "endpoint_url": sandbox.endpoint}
    ddb, lam = boto3.client("dynamodb", **kw), boto3.client("lambda", **kw)
    ddb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})
    ddb.put_item(TableName=TABLE, Item=item(1, "kept"))
    consumer = apply_fault(sandbox, inv, "table-consumer")  # the fault: its role is allowed on the table's ARN only
    account = boto3.client("sts", **kw).get_caller_identity()["Account"]
    assert consumer["allowed"].endswith(f":table/{TABLE}")
    arn = ddb.list_backups(TableName=TABLE)["BackupSummaries"][0]["BackupArn"]  # the seed's backup
    copy = j.copy_name(TABLE, arn)

    blocked = run("yes", table=TABLE, restore_point=arn, mode="switch", dry_run=False)
    reach = next(f for f in blocked.findings if f.check == "restore-consumer-reach")
    assert reach.status is Status.CRIT and f"table/{copy}" in reach.summary
    assert not [a for a in blocked.plan["actions"] if a["kind"] == j.ENV_KIND]
    assert lam.get_function_configuration(FunctionName=FN)["Environment"]["Variables"]["TABLE_NAME"] == TABLE

    apply_fault(sandbox, inv, "table-consumer", allow=f"arn:aws:dynamodb:{inv.region}:{account}:table/{TABLE}*")  # the twin: in reach
    done = run("yes", table=TABLE, restore_point=arn, mode="switch", dry_run=False)
    assert done.outcome == "done", done.findings
    assert any("writes made to todos after" in n and "NOT in the copy" in n for n in done.plan["notes"])
    counted = next(f for f in done.findings if f.check == "restore-copy-count")  # the item written after the seed's backup
    assert counted.status is Status.OK and "holds 0 items; the backup says 0; the live table has 1" in counted.summary
    assert "1 of 1 live items sampled read otherwise in the copy" in counted.summary
    assert lam.get_function_configuration(FunctionName=FN)["Environment"]["Variables"] == {"TABLE_NAME": copy}
    assert ddb.describe_time_to_live(TableName=copy)["TimeToLiveDescription"]["AttributeName"] == "expires"
    assert ddb.describe_continuous_backups(TableName=copy)["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"][
        "PointInTimeRecoveryStatus"] == "ENABLED"

    in_use = run("yes", table=TABLE, restore_point=arn, remove_copy=True, dry_run=False)
    assert any("still in use by todo-api" in c for c in in_use.plan["cannot"]) and copy in ddb.list_tables()["TableNames"]

    undo = run("yes", undo_run=done.flow_run_id, dry_run=False)
    assert undo.outcome == "done", undo.findings
    assert any(f"stay only in {copy}" in n for n in undo.plan["notes"])
    assert lam.get_function_configuration(FunctionName=FN)["Environment"]["Variables"]["TABLE_NAME"] == TABLE
    used = run("yes", table=TABLE, restore_point=arn, remove_copy=True, dry_run=False)  # it may hold writes made while switched
    assert any("switched onto it" in c and "force=true" in c for c in used.plan["cannot"]) and copy in ddb.list_tables()["TableNames"]
    removed = run("yes", table=TABLE, restore_point=arn, remove_copy=True, force=True, dry_run=False)
    assert removed.outcome == "done", removed.findings
    assert copy not in ddb.list_tables()["TableNames"]


def test_a_group_half_written_is_partially_applied_and_undo_puts_back_exactly_the_written_items(seeded, sandbox, monkeypatch):
    inv = seeded(TODO)
    ddb = boto3.client("dynamodb", region_name=inv.region, endpoint_url=sandbox.endpoint)
    lost = apply_fault(sandbox, inv, "table-items-deleted", items=12, deleted=10)  # t00..t09: one group of 10
    before = items(ddb)
    foreign = {"id": {"S": "t03"}, "title": {"S": "re-created by someone else"}}

    once = [True]

    def changed_between_plan_and_write(system, resource, value):  # after approval and the drift check (once: not in the undo)
        if once.pop() if once else False:
            ddb.put_item(TableName=TABLE, Item=foreign)
        rt.write_items(system, resource, value)

    monkeypatch.setitem(rt.APPLIERS, j.ITEMS_KIND, rt.Applier(read=rt.read_items, apply=changed_between_plan_and_write,
                                                              reached=rt.items_reached))
    done = run("yes", table=TABLE, restore_point=lost["backup_arn"], dry_run=False)
    assert done.outcome == "done-with-warnings", done.findings
    [rec] = [r for r in done.records if r["kind"] == j.ITEMS_KIND]
    assert rec["status"] == "applied" and "partially applied: 9 of 10" in rec["detail"] and '"t03"' in rec["detail"]
    after = items(ddb)
    assert after["t03"] == foreign and {f"t{i:02d}" for i in range(10)} <= set(after)

    undo = run("yes", undo_run=done.flow_run_id, dry_run=False)
    assert undo.outcome == "done-with-warnings", undo.findings  # the plan names t03: it cannot be undone
    assert any('"t03"' in c and "not undone" in c for c in undo.plan["cannot"])
    assert items(ddb) == before | {"t03": foreign}  # exactly the 9 written are gone again; t03 left as someone left it


def test_switch_when_the_live_table_was_deleted_plans_the_cutover_and_names_the_settings_it_cannot_copy(seeded, sandbox):
    inv = seeded(TODO)
    kw = {"region_name": inv.region, "endpoint_url": sandbox.endpoint}
    ddb, lam = boto3.client("dynamodb", **kw), boto3.client("lambda", **kw)
    account = boto3.client("sts", **kw).get_caller_identity()["Account"]
    apply_fault(sandbox, inv, "table-consumer", allow=f"arn:aws:dynamodb:{inv.region}:{account}:table/{TABLE}*")
    arn = ddb.list_backups(TableName=TABLE)["BackupSummaries"][0]["BackupArn"]
    ddb.delete_table(TableName=TABLE)  # the classic disaster

    done = run("yes", table=TABLE, restore_point=arn, mode="switch", dry_run=False)
    assert done.outcome == "done-with-warnings", done.findings
    assert any(f"{TABLE} no longer exists" in n for n in done.plan["notes"])
    assert any("/ttl:" in c and "could not be read" in c for c in done.plan["cannot"])
    assert next(f for f in done.findings if f.check == "restore-consumer-reach").status is Status.OK
    assert lam.get_function_configuration(FunctionName=FN)["Environment"]["Variables"]["TABLE_NAME"] == j.copy_name(TABLE, arn)
