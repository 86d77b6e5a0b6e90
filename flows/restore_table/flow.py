"""restore-table: bring a DynamoDB table's data back from a restore point, item by item or by switching, with an undo.

Source: 000 (``restore-table-to-point-in-time``) and 002 (``restore-table-from-backup``). The seeds stop at the
restore call into a new table; this runbook picks the restore point, restores a copy, verifies it, and puts the data
where the application reads it.

Parameters: ``table`` (a table of the inventory), ``restore_point`` (``latest``: the latest restorable time; an
ISO-8601 time with its zone; or the ARN of a backup of the table), ``mode`` (``items`` or ``switch``), ``keys``
(items: only these partition key values), ``remove_copy`` (delete the copy of that table and restore point instead),
``updated_attribute`` (items: the attribute holding an item's update time; empty: the usual names are tried).

The copy: ``<table>-restore-<digest of table and normalised restore point>``, tagged once ACTIVE ``opsbook:restore-source``/``-point``/
``-started``/``-run``. A re-run with the same table and restore point finds it and continues (waits for it, diffs it),
never restoring a second one; a table of that name that is not such a copy is refused. A dry run makes no copy: its
plan shows the restore and, once a copy exists, the writes. ``dry_run=false`` restores the copy before the approval
(a new table of the runbook's own; the live table is untouched), then plans and asks.

items: every item of the copy and of the live table (consistent scans; ``keys``: only those), diffed: an item deleted
since the restore point goes back (PutItem conditional on attribute_not_exists); a changed one goes back only when its
update time (``updated_attribute``) is not after the restore point, or when ``keys`` names it; a newer one, one of
unknown age and one added since are never touched, nor one whose TTL (the table's TTL attribute) is past (expired), nor
one too large to keep in a record (named in the plan). Writes go in groups (a step each, at most 10 items): each item
a conditional PutItem/DeleteItem in parallel, valid only while the live item is still as read; read back after. An
item changed since the plan is not written: the group is partially applied (a warning names it). Records keep each
group's previous images (binary as base64): undo goes item by item, an item still as restored gets its previous image
back (conditional), any other is named and left; a run killed inside a group is closed by the next from each item.

switch (the consumers' variables all or nothing; a deleted live table: its settings named, the cutover planned; a
consumer not read blocks it; stream event source mappings named for a person): copy onto the copy what a restore does not bring (TTL, stream, PITR, tags; auto scaling, alarms, resource
policies are named in the plan, not copied), count it, check each consumer (an inventory Lambda function whose
environment names the table) may use the copy (its role's policies allow on the copy what they allow on the table),
then rewrite each consumer's variable to the copy; verified by GetFunctionConfiguration. Writes after the restore point
are not in the copy (the plan says so). Undo sets the variables back.

Undo sets the variables back; writes made to the copy meanwhile stay only in it (the undo plan says so). A copy is removed
only with ``remove_copy=true``, never while a consumer's environment names it, and, once the records show a consumer was
switched onto it, only with ``force=true`` as well. RTO (the restore's
start, from the copy's tag, to usable data) is compared with the inventory's ``dr.rto_table_minutes``; on the sandbox
it is labelled so (moto restores at once, and its point-in-time restore copies the table as it is now: no history).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from prefect import flow
from prefect.cache_policies import NO_CACHE

from flows.restore_table import judge as j
from opsbook import aws
from opsbook.findings import Finding
from opsbook.iam import aws_task, declares
from opsbook.iam_scope import Copies
from opsbook.inventory import System, load_system
from opsbook.mutation.core import Applier, Identity, Plan, Record, Refused, undo_plan
from opsbook.mutation.session import (
    SESSION_TASKS,
    MutationSession,
    read_records,
    steps_policy,
)
from opsbook.mutation.verify import change_findings
from opsbook.params import (
    ApprovalTimeout,
    Approver,
    DryRun,
    Names,
    Param,
    SettleTimeout,
    SystemName,
    UndoRun,
)
from tasks import awslambda as lam
from tasks import dynamodb as ddb
from tasks.iam_roles import RolePolicies, read_role

RUNBOOK = j.RUNBOOK
PLANNED: dict[str, str] = {}  # items resource -> the images the approved plan read (what each conditional write expects)
PARTIAL: dict[str, str] = {}  # items resource -> what its last write left unwritten, and why (partially applied)


# --- the steps -----------------------------------------------------------------------------------


@declares(["dynamodb:BatchGetItem"])
def read_items(system: System, resource: str) -> str:
    table, keys = j.parse_items_resource(resource)
    return j.images_value(ddb.get_items(system, table, keys))


@declares(["dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"])
def write_items(system: System, resource: str, value: str) -> None:
    """Each item of the group to its image in ``value``, in parallel, each conditional on the live item being as planned;
    an item already there is skipped (a re-run), one changed since the plan is not written. Some written, some not: the
    step is partially applied (``PARTIAL`` names the ones not written, and why); none written: the step fails."""
    table, keys = j.parse_items_resource(resource)
    if resource not in PLANNED:
        raise RuntimeError(f"{resource}: no plan of this run read it: not written")
    target, planned = j.parse_images(value), j.parse_images(PLANNED[resource])
    now = ddb.get_items(system, table, keys)

    def one(i: int) -> str:
        step = j.item_step(j.canon(now[i]), planned[i], target[i])
        if step == "changed":
            return "changed since the plan: not overwritten"
        if step == "write":
            try:
                ddb.write_item_if(system, table, keys[i], j.decode(target[i]), now[i])
            except ClientError as exc:
                if aws.error_code(exc) == "ConditionalCheckFailedException":
                    return "changed while writing: not overwritten"
                raise
        return ""

    PARTIAL.pop(resource, None)
    not_written = {i: res or aws.describe_error(err) for i, res, err in aws.parallel(one, range(len(keys)), max_workers=8) if res or err}
    if len(not_written) == len(keys):
        raise RuntimeError(j.partial_detail(keys, not_written))
    if not_written:
        PARTIAL[resource] = j.partial_detail(keys, not_written)


def items_reached(system: System, resource: str, before: str, target: str) -> bool:
    return j.items_reached(before, target, read_items(system, resource))


def undo_items(resource: str, before: str, after: str, now: str) -> tuple[str, list[str]]:
    return j.undo_items(j.parse_items_resource(resource)[1], before, after, now)


@declares(["dynamodb:DescribeTimeToLive", "dynamodb:DescribeTable", "dynamodb:DescribeContinuousBackups", "dynamodb:ListTagsOfResource"])
def read_setting(system: System, resource: str) -> str:
    table, _, setting = resource.rpartition("/")
    return ddb.read_table_setting(system, table, setting)


@declares(["dynamodb:UpdateTimeToLive", "dynamodb:UpdateTable", "dynamodb:UpdateContinuousBackups", "dynamodb:TagResource"])
def set_setting(system: System, resource: str, value: str) -> None:
    table, _, setting = resource.rpartition("/")
    ddb.set_table_setting(system, table, setting, value)


@declares(["dynamodb:DescribeTable", "dynamodb:ListTagsOfResource"])
def read_copy_exists(system: System, copy: str) -> str:
    return "exists" if ddb.read_table_copy(system, copy).exists else j.ABSENT


@declares(["dynamodb:DeleteTable"])
def remove_copy_table(system: System, copy: str, value: str) -> None:
    if value != j.ABSENT:
        raise RuntimeError(f"{copy}: a removed copy cannot come back")
    ddb.delete_table(system, copy)


APPLIERS = {j.ITEMS_KIND: Applier(read=read_items, apply=write_items, reached=items_reached),
            j.SETTING_KIND: Applier(read=read_setting, apply=set_setting),
            j.ENV_KIND: Applier(read=lam.read_env_var, apply=lam.set_env_var),
            j.REMOVE_KIND: Applier(read=read_copy_exists, apply=remove_copy_table)}


# --- reading ---------------------------------------------------------------------------------------


@aws_task(iam=["dynamodb:DescribeBackup", "dynamodb:DescribeContinuousBackups", "dynamodb:DescribeTable",
               "dynamodb:ListTagsOfResource"], name="read-restore-point", cache_policy=NO_CACHE)
def read_point(system: System, table: str, point: j.RestorePoint, copy: str) -> tuple[j.RestorePoint, ddb.TableCopy]:
    """The restore point's time (a backup's creation, PITR's latest restorable time), checked usable; the copy as it is."""
    try:
        facts = ddb.restore_point_facts(system, table, point.arn)
    except ClientError as exc:
        raise Refused(f"{point.text()}: {aws.describe_error(exc)}; nothing was changed") from None
    if point.kind == "backup" and facts.get("status") != "AVAILABLE":
        raise Refused(f"backup {point.arn} is {facts.get('status')}, not AVAILABLE; nothing was changed")
    if point.kind != "backup" and facts.get("status") != "ENABLED":
        raise Refused(f"{table} has no point-in-time recovery (PITR {facts.get('status')}): give a backup ARN as restore_point; "
                      "nothing was changed")
    at = point.at if point.kind == "time" else facts.get("at")
    return point.model_copy(update={"at": at}), ddb.read_table_copy(system, copy)


# what AWS requires on the target table for a restore, besides the restore action itself (as dr-test's restore_table)
RESTORE_TARGET_IAM = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Query",
                      "dynamodb:Scan", "dynamodb:BatchWriteItem"]


@aws_task(iam=["dynamodb:RestoreTableFromBackup", "dynamodb:RestoreTableToPointInTime", "dynamodb:TagResource", "dynamodb:DescribeTable",
               "dynamodb:ListTagsOfResource", *RESTORE_TARGET_IAM], name="restore-copy", cache_policy=NO_CACHE, read_only=False)
def ensure_copy(system: System, table: str, point: j.RestorePoint, copy: str, run_id: str, timeout_s: float) -> tuple[ddb.TableCopy, float, bool]:
    """The copy restored (or the one an earlier run started: continued, waited for while CREATING) and ACTIVE, then tagged
    (DynamoDB refuses tags while CREATING; ``latest``'s restore-at from its RestoreSummary): (copy, restore start, made now)."""
    cp = ddb.read_table_copy(system, copy)
    if cp.exists and j.copy_of(cp.tags, table, point) is False:
        raise Refused(f"{copy} exists and is not a copy of {table} at {point.asked} (tags {cp.tags}): not used; nothing was changed")
    made = not cp.exists
    started = time.time()
    if made:
        ddb.start_table_restore(system, table, copy, point.arn, point.at if point.kind == "time" else None)
    status = ddb.wait_table_active(system, table, copy, timeout_s, RUNBOOK)
    if status != "ACTIVE":
        raise Refused(f"{copy} is {status} after {timeout_s:g} s: run again to continue with it (it is never restored twice)")
    cp = ddb.read_table_copy(system, copy)
    ours = j.copy_of(cp.tags, table, point)
    if ours is False:
        raise Refused(f"{copy} is not a copy of {table} at {point.asked} (tags {cp.tags}): not used; nothing was changed")
    if ours is None:  # restored now, or by a run that stopped before tagging it: its RTO counts from its creation
        at = cp.restore_at if point.kind == "latest" and cp.restore_at else point.at
        started = started if made else (cp.created or started)
        ddb.tag_table(system, copy, j.copy_tags(table, point.model_copy(update={"at": at}), started, run_id))
        cp = ddb.read_table_copy(system, copy)
    else:
        started = float(cp.tags.get("opsbook:restore-started") or started)
    return cp, started, made


@aws_task(iam=["dynamodb:Scan", "dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive"], name="diff-items", cache_policy=NO_CACHE)
def diff(system: System, table: str, copy: str, point: j.RestorePoint, updated_attribute: str, keys: list[str]
         ) -> tuple[list[j.ItemDiff], list[str]]:
    """The copy's items against the live table's; an item whose TTL (the live table's TTL attribute) is past is expired."""
    names = ddb.key_names(system, table)
    restored, live = ddb.scan_items(system, copy), ddb.scan_items(system, table)
    attr = updated_attribute or j.guess_updated_attribute(restored + live)
    ttl = j.ttl_attribute(ddb.read_table_setting(system, table, "ttl"))
    return j.diff_items(restored, live, names, point.at, attr, keys, ttl, datetime.now(UTC)), names


@aws_task(iam=["lambda:GetFunctionConfiguration", "dynamodb:DescribeTable", "iam:ListAttachedRolePolicies", "iam:ListRolePolicies",
               "iam:GetRolePolicy", "iam:GetPolicy", "iam:GetPolicyVersion"], name="read-consumers", cache_policy=NO_CACHE)
def read_consumers(system: System, table: str, copy: str) -> list[j.Consumer]:
    """The inventory's Lambda functions whose environment names the table (or already the copy), with their roles' policies."""
    def one(fn: str) -> list[j.Consumer]:
        env, role = lam.read_environment(system, fn)
        found = [j.Consumer(function=fn, variable=k, value=v, role=role) for k, v in sorted(env.items()) if v in (table, copy)]
        for c in found:
            try:
                c.policies = read_role(system.region, role)
            except Exception as exc:
                c.policies = RolePolicies(role=role, error=aws.describe_error(exc))
        return found

    out: list[j.Consumer] = []
    for fn, res, err in aws.parallel(one, [f.name for f in system.lambda_functions], max_workers=4):
        out += res if err is None else [j.Consumer(function=fn, variable="?", value="?", error=aws.describe_error(err))]
    return out


@aws_task(iam=["dynamodb:DescribeTimeToLive", "dynamodb:DescribeTable", "dynamodb:DescribeContinuousBackups",
               "dynamodb:ListTagsOfResource", "dynamodb:Scan", "dynamodb:DescribeBackup", "dynamodb:BatchGetItem",
               "lambda:ListEventSourceMappings"], name="read-switch-state", cache_policy=NO_CACHE)
def read_switch_state(system: System, table: str, copy: str, point: j.RestorePoint
                      ) -> tuple[dict[str, tuple[str, str]], str | None, Finding, list[str]]:
    """Each setting on the table and on the copy, the table's ARN (None: the live table is gone, the classic disaster), the
    copy's count finding, the event source mappings on the table's stream. A setting of the table that cannot be read is
    "unreadable: why" (the plan names it)."""
    settings: dict[str, tuple[str, str]] = {}
    for s in j.SETTINGS:
        try:
            src = ddb.read_table_setting(system, table, s)
        except Exception as exc:
            src = f"unreadable: {aws.describe_error(exc)}"
        settings[s] = (src, ddb.read_table_setting(system, copy, s))
    c = aws.client("dynamodb", system.region)
    try:
        desc = c.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if aws.error_code(exc) != "ResourceNotFoundException":
            raise
        desc = {}
    arn: str | None = desc.get("TableArn")
    try:
        expected = ddb.restore_point_facts(system, table, point.arn).get("item_count") if point.arn else None
        sample = ddb.sample_differences(c, table, copy, ddb.key_names(system, table), system.dr.sample_items) if arn else None
        counted = j.count_finding(copy, ddb.scan_count(c, copy), expected, ddb.scan_count(c, table) if arn else None, point.kind,
                                  sample=sample)
    except Exception as exc:
        counted = j.count_finding(copy, None, None, None, point.kind, aws.describe_error(exc))
    return settings, arn, counted, stream_mappings(system, desc.get("LatestStreamArn"))


def stream_mappings(system: System, stream: str | None) -> list[str]:
    """The event source mappings reading ``stream`` (function, UUID, state), or why they could not be listed."""
    if not stream:
        return []
    try:
        maps = aws.paginate(aws.client("lambda", system.region), "list_event_source_mappings", "EventSourceMappings", EventSourceArn=stream)
        return [f"{m.get('FunctionArn', '?').rsplit(':', 1)[-1]} (event source mapping {m.get('UUID')}, {m.get('State')})" for m in maps]
    except (ClientError, BotoCoreError) as exc:
        return [f"its event source mappings could not be listed ({aws.describe_error(exc)}): look at them"]


# --- planning --------------------------------------------------------------------------------------


def dry_copy_plan(inv: System, identity: Identity, table: str, point: j.RestorePoint, copy: str, mode: str) -> Plan:
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    plan.actions.append(j.Action(kind=j.COPY_KIND, resource=copy, current=j.ABSENT, target=f"restored from {point.asked}",
                                 iam_action="dynamodb:RestoreTableFromBackup" if point.arn else "dynamodb:RestoreTableToPointInTime",
                                 reversible=False, evidence=f"a new table restored from {point.text()}, tagged with {table} and the "
                                 "restore point; the live table is untouched"))
    then = ("diff it against the live table and plan the writes back" if mode == "items" else
            "copy its settings, check the consumers and plan the cutover")
    plan.notes.append(f"dry run: no copy yet. With dry_run=false the run restores {copy} first (before the approval: a table of "
                      f"its own), then {then} for approval")
    return plan


def plan_forward(session: MutationSession, inv: System, identity: Identity, table: str, point: j.RestorePoint, mode: str,
                 keys: list[str], updated_attribute: str, settle_s: float) -> tuple[Plan, float | None, bool]:
    """(the plan, the restore's start epoch, made now) for items or switch; the copy made first unless a dry run."""
    copy = j.copy_name(table, point)
    point, cp = read_point.submit(inv, table, point, copy).result()
    notes = []
    if aws.is_loopback_url(aws.endpoint_url()) and point.kind != "backup":
        notes.append("sandbox: moto's point-in-time restore copies the table as it is now (it keeps no history): the copy shows "
                     "no item as it was; prove a restore with a backup ARN")
    if session.dry_run and not cp.exists:
        return dry_copy_plan(inv, identity, table, point, copy, mode), None, False
    started, made = None, False
    if not session.dry_run:
        if not cp.exists:  # the intent, durably, before the restore call: a kill after it leaves a trace of the copy
            session.record([Record(runbook=RUNBOOK, system=inv.name, resource=copy, kind=j.COPY_KIND, before=j.ABSENT,
                                   after=f"restored from {point.asked}", status="intended", flow_run_id=session.run_id,
                                   caller_arn=identity.arn, detail=f"restore of {table} from {point.text()} about to start")])
        cp, started, made = ensure_copy.submit(inv, table, point, copy, session.run_id, settle_s).result()
        if made:
            session.record([Record(runbook=RUNBOOK, system=inv.name, resource=copy, kind=j.COPY_KIND, before=j.ABSENT,
                                   after=f"restored from {point.asked}", status="applied", flow_run_id=session.run_id,
                                   caller_arn=identity.arn, detail=f"copy of {table} from {point.text()}")])
    point = j.as_of_copy(point, cp.tags)
    notes.append(f"{copy}: {'restored by this run' if made else 'the copy an earlier run restored: continued, not restored again'} "
                 f"({point.text()})")
    if mode == "items":
        try:
            diffs, names = diff.submit(inv, table, copy, point, updated_attribute, keys).result()
        except Exception as exc:  # a side that cannot be read is UNKNOWN, never "nothing to do"
            found = j.unreadable_finding(table, j.Unreadable(what=f"{table} or {copy}", error=aws.describe_error(exc)))
            session.report.findings.append(found)
            return Plan(runbook=RUNBOOK, system=inv.name, identity=identity, notes=notes, cannot=[f"{table}: {found.summary}"]), started, made
        return j.plan_items(inv.name, identity, table, point, copy, diffs, names, notes), started, made
    settings, arn, counted, mappings = read_switch_state.submit(inv, table, copy, point).result()
    session.report.findings.append(counted)
    if arn is None:
        notes.append(f"{table} no longer exists: its settings cannot be copied (named below); the consumers are checked against "
                     "its ARN as their policies name it, and the cutover is planned")
    consumers = read_consumers.submit(inv, table, copy).result()
    reach = j.reach_findings([c for c in consumers if c.value == table or c.error], arn or j.sibling_arn(cp.arn or "", table),
                             cp.arn or "")
    session.report.findings += reach
    return j.plan_switch(inv.name, identity, table, point, copy, settings, consumers, reach, notes, mappings), started, made


@aws_task(iam=["dynamodb:BatchGetItem", "lambda:GetFunctionConfiguration"], name="plan-undo", cache_policy=NO_CACHE)
def plan_undo(inv: System, identity: Identity, records: list[dict[str, Any]], run_id: str) -> Plan:
    steps = {k: a for k, a in APPLIERS.items() if k in (j.ITEMS_KIND, j.ENV_KIND)}
    kept = {j.SETTING_KIND: "settings copied onto the copy stay on it", j.REMOVE_KIND: "a removed copy cannot come back",
            j.COPY_KIND: "the copy is kept (remove_copy=true removes it)"}
    plan = undo_plan(inv, RUNBOOK, identity, records, run_id, steps, j.IAM, irreversible=kept, parts={j.ITEMS_KIND: undo_items})
    plan.notes += [c for c in plan.cannot if any(f"{k} has no undo" in c for k in kept)]
    plan.cannot = [c for c in plan.cannot if c not in plan.notes]
    plan.notes += j.switch_undo_notes(plan.actions)
    return plan


# --- acting and verifying ----------------------------------------------------------------------------


@aws_task(iam=["dynamodb:BatchGetItem", "lambda:GetFunctionConfiguration", "dynamodb:DescribeTable", "dynamodb:ListTagsOfResource",
               "dynamodb:DescribeTimeToLive", "dynamodb:DescribeContinuousBackups"], name="verify-restore", cache_policy=NO_CACHE)
def verify(system: System, records: list[Record]) -> list[Record]:
    """Each applied step read back: at its target -> verified; otherwise it stays applied and says what is there."""
    out = []
    for r in records:
        if r.status != "applied":
            out.append(r)
            continue
        if r.resource in PARTIAL:  # applied, partially: it stays applied (a warning) and names the items not written
            out.append(r.model_copy(update={"detail": PARTIAL[r.resource]}))
            continue
        now = APPLIERS[r.kind].read(system, r.resource)
        out.append(r.model_copy(update={"status": "verified", "detail": "read back"} if now == r.after else
                                {"detail": f"read back as {now[:200]}, not the target"}))
    return out


def act(session: MutationSession, inv: System, identity: Identity) -> bool:
    """After approval: the steps (item groups and settings independent: what was written stays, recorded, for undo; the
    consumers' variables all or nothing: a failed one sets back those switched, so consumers never split between two
    tables), read back, record, notify. True when every step is verified (or an item group partially applied)."""
    assert session.plan is not None
    PLANNED.update({a.resource: a.current for a in session.plan.actions if a.kind == j.ITEMS_KIND})
    for a in session.plan.actions:
        PARTIAL.pop(a.resource, None)
    done, ok = session.act(identity, undo_on_failure=(j.ENV_KIND,))  # consumers all or nothing; items and settings independent
    done = verify.submit(inv, done).result()
    session.record(done)
    session.report.findings += change_findings("restore-step", done)
    good = ok and all(r.status == "verified" or r.resource in PARTIAL for r in done)  # partial: done with warnings
    session.conclude(done, good)
    return good


# --- the runbook ------------------------------------------------------------------------------------


def check_table(inv: System, table: str, mode: str, restore_point: str) -> j.RestorePoint:
    names = [t.name for t in inv.dynamodb_tables]
    if table not in names:
        raise j.RestoreError(f"{table!r} is not a DynamoDB table of {inv.name} (its tables: {', '.join(names) or 'none'})")
    if mode not in ("items", "switch"):
        raise j.RestoreError(f"mode {mode!r}: items or switch")
    return j.parse_restore_point(restore_point, table)


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def restore_table(
    system: SystemName,
    table: Annotated[str, Param("The DynamoDB table to restore (a table of the inventory; not needed with undo_run)")] = "",
    restore_point: Annotated[str, Param("latest (the latest restorable time), an ISO-8601 time with its zone "
                                        "(2026-12-04T09:30:00Z), or the ARN of a backup of the table", min_length=1)] = j.LATEST,
    mode: Annotated[Literal["items", "switch"], Param("items: write back the items deleted or changed since the restore point "
                                                      "(never a newer one); switch: point the consumers at the restored copy")] = "items",
    keys: Annotated[Names, Param("items: only these partition key values (a JSON list, or a,b); empty: every item")] = [],  # noqa: B006
    remove_copy: Annotated[bool, Param("Remove the copy of this table and restore point instead (never while a consumer "
                                       "points at it)")] = False,
    updated_attribute: Annotated[str, Param("items: the attribute holding an item's update time (ISO-8601 or epoch); empty: "
                                            "updated_at, updatedAt, modified_at, ... when the items have one")] = "",
    force: Annotated[bool, Param("remove_copy: remove the copy even though the records show a consumer was switched onto it "
                                 "(writes made to it while switched are lost)")] = False,
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    settle_timeout_s: SettleTimeout = 0,
    undo_run: UndoRun = "",
) -> Any:
    """Restore a DynamoDB table to a point in time or from a backup into a tagged copy (``<table>-restore-<digest>``: a
    re-run continues with it, never a second one), then write back the lost items (items) or point the consumers at the
    copy (switch). Which to use, and what each touches: docs/restores.md.

    items: the copy diffed against the live table; deleted items and items changed without a newer update time are put
    back (conditional PutItem, in parallel, groups of 10 with progress); newer, added and unknown-age items are never
    touched (keys=[...] names the ones to put back regardless of age). switch: TTL, stream, PITR and tags copied onto the
    copy, counted and sampled, each consumer's role checked against the copy's ARN, then the consumers' environment
    variable rewritten; writes after the restore point are not in the copy (the plan says so).

    dry_run (default) ends after the plan and makes no copy. Otherwise the copy is restored first (a table of its own),
    then the run asks for approval (a form on the paused run in the UI; the shell's prompt or --yes), writes, reads back,
    records and notifies, with the RTO against dr.rto_table_minutes. ``undo_run``: the previous item images or
    environment values of that run back. ``remove_copy``: the copy deleted, never while a consumer names it (nor, without ``force``, once one was switched onto it)."""
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s, appliers=APPLIERS)
    with session:
        identity = session.identity()
        started: float | None = None
        made = False
        if undo_run:
            plan = plan_undo.submit(inv, identity, read_records.submit(inv).result(), undo_run).result()
        else:
            try:
                point = check_table(inv, table.strip(), mode, restore_point)
            except j.RestoreError as exc:
                raise Refused(f"{exc}; nothing was changed") from None
            if remove_copy:
                plan = plan_removal(inv, identity, table.strip(), point, force)
            else:
                plan, started, made = plan_forward(session, inv, identity, table.strip(), point, mode, keys, updated_attribute.strip(),
                                                   settle_timeout_s or inv.mutations.settle_timeout_s)
        acted = session.gate(plan) and act(session, inv, identity)
        if started is not None and (made or acted):
            session.report.findings.append(j.rto_finding(table, time.time() - started, inv.dr.rto_table_minutes,
                                                         aws.is_loopback_url(aws.endpoint_url())))
    return session.finish()


def plan_removal(inv: System, identity: Identity, table: str, point: j.RestorePoint, force: bool) -> Plan:
    copy = j.copy_name(table, point)
    cp = read_copy_task.submit(inv, copy).result()
    pointing = [f"{c.function} ({c.variable})" for c in read_consumers.submit(inv, table, copy).result() if c.value == copy]
    switched = j.switched_onto(read_records.submit(inv).result(), copy)
    return j.plan_remove(inv.name, identity, table, copy, cp.exists, pointing, j.copy_of(cp.tags, table, point), switched, force)


@aws_task(iam=["dynamodb:DescribeTable", "dynamodb:ListTagsOfResource"], name="read-copy", cache_policy=NO_CACHE)
def read_copy_task(system: System, copy: str) -> ddb.TableCopy:
    return ddb.read_table_copy(system, copy)


TASKS = [read_point, ensure_copy, diff, read_consumers, read_switch_state, plan_undo, verify, read_copy_task,
         steps_policy(APPLIERS)] + SESSION_TASKS

# the copies it restores into (j.copy_name) and, once tagged with their source (j.copy_tags), may remove
IAM_COPIES = [Copies("dynamodb:table", "*-restore-*", lambda s, a: [f"{t.name[:230]}-restore-*" for t in s.dynamodb_tables],
                     tag="opsbook:restore-source", tag_values=lambda s: [t.name for t in s.dynamodb_tables])]
