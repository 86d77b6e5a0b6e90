"""restore-table's decisions (pure: no AWS, no Prefect, no clock): the restore point, the copy's name, the diff of the
copy against the live table and which items go back, the plans (items, switch, removal), consumers' reach, counts, RTO.
See flow.py's docstring for the procedure."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from opsbook import rto
from opsbook.findings import Finding, Status
from opsbook.mutation.core import Action, Identity, Plan
from tasks.iam_roles import RolePolicies

RUNBOOK = "restore-table"
LATEST = "latest"
ITEMS_KIND, SETTING_KIND, ENV_KIND, REMOVE_KIND, COPY_KIND = "table-items", "table-setting", "lambda-env", "table-copy-remove", "table-copy"
IAM = {ITEMS_KIND: "dynamodb:PutItem", SETTING_KIND: "dynamodb:UpdateTable", ENV_KIND: "lambda:UpdateFunctionConfiguration",
       REMOVE_KIND: "dynamodb:DeleteTable"}
ABSENT = "absent"
SETTINGS = ("ttl", "stream", "pitr", "tags")
GROUP_ITEMS, GROUP_BYTES = 10, 60_000  # one step writes at most this many items / bytes of images (records stay small)
RECORD_IMAGE_BYTES = 350_000  # an item whose images (restored and live) exceed this cannot be kept in a record (400 KB an item)
GROUP_KEY_BYTES = 1500  # its keys name its resource, which keys its lease (a DynamoDB key: at most 2048 bytes)
UPDATED_GUESSES = ("updated_at", "updatedAt", "modified_at", "modifiedAt", "last_modified", "lastModified")
TABLE_ACTIONS = ("GetItem", "BatchGetItem", "Query", "Scan", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem",
                 "ConditionCheckItem", "DescribeTable")
_BACKUP_ARN = re.compile(r"arn:aws[\w-]*:dynamodb:[\w-]+:\d{12}:table/([\w.-]+)/backup/[\w.-]+")


class RestoreError(ValueError):
    """What was asked cannot be restored (the runbook turns it into Refused, naming the way out)."""


class RestorePoint(BaseModel):
    asked: str
    kind: Literal["latest", "time", "backup"]
    at: datetime | None = None  # the time the copy's data is as of (a backup's creation time, the PITR time)
    arn: str | None = None

    def text(self) -> str:
        when = f" ({self.at.isoformat(timespec='seconds')})" if self.at else ""
        return {"backup": f"backup {self.arn}{when}", "time": f"point in time {self.asked}",
                "latest": f"the latest restorable time{when}"}[self.kind]


def parse_restore_point(value: str, table: str) -> RestorePoint:
    """``latest``, an ISO-8601 time with its zone (Z or +hh:mm), or the ARN of a backup of ``table``."""
    v = value.strip()
    if v == LATEST:
        return RestorePoint(asked=v, kind="latest")
    m = _BACKUP_ARN.fullmatch(v)
    if m:
        if m.group(1) != table:
            raise RestoreError(f"backup {v} is a backup of table {m.group(1)}, not of {table}")
        return RestorePoint(asked=v, kind="backup", arn=v)
    if v.startswith("arn:"):
        raise RestoreError(f"{v!r} is not a DynamoDB backup ARN (arn:aws:dynamodb:REGION:ACCOUNT:table/{table}/backup/ID)")
    try:
        at = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise RestoreError(f"restore_point {v!r}: give an ISO-8601 time (2026-12-04T09:30:00Z), latest, or a backup ARN") from None
    if at.tzinfo is None:
        raise RestoreError(f"restore_point {v!r} has no time zone: add Z (UTC) or +hh:mm")
    return RestorePoint(asked=v, kind="time", at=at.astimezone(UTC))


def point_key(point: RestorePoint) -> str:
    """The restore point normalised: a time in UTC ISO-8601 (so ...T09:30:00Z and ...T09:30:00+00:00 are one), a backup's ARN,
    ``latest``."""
    if point.kind == "time" and point.at is not None:
        return point.at.astimezone(UTC).isoformat()
    return point.arn if point.kind == "backup" and point.arn else point.asked.strip()


def _key_of(table: str, point: RestorePoint | str) -> str:
    if isinstance(point, RestorePoint):
        return point_key(point)
    try:
        return point_key(parse_restore_point(point, table))
    except RestoreError:
        return point.strip()


def copy_name(table: str, point: RestorePoint | str) -> str:
    """The restored copy's name: the same for the same table and (normalised) restore point, so a re-run finds it (never a
    second)."""
    digest = hashlib.sha256(f"{table}|{_key_of(table, point)}".encode()).hexdigest()[:10]
    return f"{table[:230]}-restore-{digest}"


def copy_tags(table: str, point: RestorePoint, started_epoch: float, run_id: str) -> dict[str, str]:
    tags = {"opsbook:restore-source": table, "opsbook:restore-point": point_key(point)[:256],
            "opsbook:restore-started": f"{started_epoch:.3f}", "opsbook:restore-run": run_id}
    if point.at is not None:
        tags["opsbook:restore-at"] = point.at.isoformat()
    return tags


def copy_of(tags: dict[str, str], table: str, point: RestorePoint) -> bool | None:
    """Is a table of the copy's name this table's copy at this point (True), another table (False), or untagged (None:
    its restore was started and the run stopped before tagging it, or it is still being created, when it cannot be tagged;
    the name derives from both, so it is taken as ours)?"""
    if not any(is_restore_tag(k) for k in tags):
        return None
    return (tags.get("opsbook:restore-source") == table
            and _key_of(table, tags.get("opsbook:restore-point", ""))[:256] == point_key(point)[:256])


def as_of_copy(point: RestorePoint, tags: dict[str, str]) -> RestorePoint:
    """The point with the time the copy was restored to (``latest`` restored days ago is as of then, not of now)."""
    raw = tags.get("opsbook:restore-at")
    if not raw:
        return point
    try:
        return point.model_copy(update={"at": datetime.fromisoformat(raw)})
    except ValueError:
        return point


def is_restore_tag(key: str) -> bool:
    return key.startswith("opsbook:restore-")


# --- items: canonical images, the diff, the groups -------------------------------------------------


def _b64(x: Any) -> str:
    return base64.b64encode(bytes(x)).decode() if isinstance(x, bytes | bytearray) else str(x)


def canon_value(v: dict[str, Any]) -> Any:
    """A DynamoDB-JSON value with set members sorted (so equal items print equal), binary (B, BS) as base64 text."""
    (t, x), = v.items()
    if t == "B":
        return {t: _b64(x)}
    if t == "BS":
        return {t: sorted(_b64(y) for y in x)}
    if t in ("SS", "NS"):
        return {t: sorted(x)}
    if t == "M":
        return {t: {k: canon_value(y) for k, y in sorted(x.items())}}
    if t == "L":
        return {t: [canon_value(y) for y in x]}
    return {t: x}


def canon(item: dict[str, Any] | None) -> Any:
    return None if item is None else {k: canon_value(v) for k, v in sorted(item.items())}


def decode_value(v: dict[str, Any]) -> Any:
    """A canonical value back into what DynamoDB takes: binary (B, BS) from base64 text to bytes."""
    (t, x), = v.items()
    if t == "B":
        return {t: base64.b64decode(x)}
    if t == "BS":
        return {t: [base64.b64decode(y) for y in x]}
    if t == "M":
        return {t: {k: decode_value(y) for k, y in x.items()}}
    if t == "L":
        return {t: [decode_value(y) for y in x]}
    return {t: x}


def decode(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """A canonical image (or key) as DynamoDB takes it (the writes)."""
    return None if item is None else {k: decode_value(v) for k, v in item.items()}


def dumps(x: Any) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"))


def key_of(item: dict[str, Any], key_names: list[str]) -> dict[str, Any]:
    return {k: item[k] for k in key_names}


def pk_text(key: dict[str, Any], pk: str) -> str:
    """The partition key's value as text (what ``keys=[...]`` names)."""
    return str(next(iter(canon_value(key[pk]).values())))


class ItemDiff(BaseModel):
    key: dict[str, Any]
    restored: dict[str, Any] | None
    live: dict[str, Any] | None
    verdict: Literal["deleted", "changed", "newer", "unknown-age", "added", "expired"]
    why: str = ""

    @property
    def writes(self) -> bool:
        return self.verdict in ("deleted", "changed")


def item_time(item: dict[str, Any] | None, attr: str | None) -> datetime | None:
    """The item's update time from ``attr``: ISO-8601 text, or epoch seconds / milliseconds; None when it has none."""
    if not item or not attr or attr not in item:
        return None
    (t, x), = item[attr].items()
    try:
        if t == "N":
            n = float(x)
            return datetime.fromtimestamp(n / 1000 if n > 1e11 else n, tz=UTC)
        if t == "S":
            at = datetime.fromisoformat(str(x).replace("Z", "+00:00"))
            return at if at.tzinfo else at.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
    return None


def guess_updated_attribute(items: list[dict[str, Any]]) -> str | None:
    """The first of the usual update-time attribute names the items carry."""
    return next((a for a in UPDATED_GUESSES if any(a in it for it in items)), None)


def _changed(key: dict[str, Any], restored: dict[str, Any], live: dict[str, Any], at: datetime | None, attr: str | None,
             named: bool) -> ItemDiff:
    live_t, restored_t = item_time(live, attr), item_time(restored, attr)
    if live_t is not None and at is not None and live_t > at and live_t != restored_t:
        return ItemDiff(key=key, restored=restored, live=live, verdict="newer",
                        why=f"{attr} {live_t.isoformat(timespec='seconds')} is after the restore point: a newer write, never overwritten")
    if live_t is not None and at is not None:
        return ItemDiff(key=key, restored=restored, live=live, verdict="changed",
                        why=f"changed without a newer {attr} ({live_t.isoformat(timespec='seconds')}, not after the restore point)")
    if named:
        return ItemDiff(key=key, restored=restored, live=live, verdict="changed",
                        why="named in keys=[...]; no update time tells whether the live item is newer")
    return ItemDiff(key=key, restored=restored, live=live, verdict="unknown-age",
                    why=("no update-time attribute (updated_attribute=...)" if not attr or live_t is None else "no restore time known")
                        + " tells whether the live item is newer: not overwritten; name it in keys=[...] to put it back")


def ttl_attribute(setting: str) -> str | None:
    """The TTL attribute of a table's ttl setting (``read_table_setting``: off | attribute NAME)."""
    return (setting.removeprefix("attribute ").strip() or None) if setting.startswith("attribute ") else None


def expired(item: dict[str, Any] | None, ttl_attr: str | None, now: datetime | None) -> str | None:
    """Why the item's TTL is past (DynamoDB would delete it again), or None (no TTL, not a number, in the future)."""
    if not item or not ttl_attr or now is None or "N" not in item.get(ttl_attr, {}):
        return None
    try:
        at = float(item[ttl_attr]["N"])
    except ValueError:
        return None
    if at >= now.timestamp():
        return None
    return (f"its TTL {ttl_attr}={item[ttl_attr]['N']} ({datetime.fromtimestamp(at, tz=UTC).isoformat(timespec='seconds')}) is past: "
            "expired, never put back")


def _expire(d: ItemDiff, ttl_attr: str | None, now: datetime | None) -> ItemDiff:
    why = expired(d.restored, ttl_attr, now) if d.writes else None
    return d.model_copy(update={"verdict": "expired", "why": why}) if why else d


def diff_items(restored: list[dict[str, Any]], live: list[dict[str, Any]], key_names: list[str], at: datetime | None,
               updated_attribute: str | None, keys: list[str] | None = None, ttl_attr: str | None = None,
               clock: datetime | None = None) -> list[ItemDiff]:
    """Every item that differs between the copy (as at the restore point) and the live table, with its verdict:
    deleted (in the copy only: goes back), changed (goes back: older than the restore point, or named), newer (changed
    after the restore point: never overwritten), unknown-age (no time tells: not overwritten unless named), added (in the
    live table only: written after the restore point, never touched), expired (would go back, but its TTL ``ttl_attr`` is
    before ``clock``, the time now: never written, even when named). ``keys``: only these partition key values."""
    pk = key_names[0]
    wanted = set(keys or [])
    by_key = {dumps(canon(key_of(it, key_names))): it for it in live}
    seen: set[str] = set()
    out: list[ItemDiff] = []
    for it in restored:
        k = key_of(it, key_names)
        if wanted and pk_text(k, pk) not in wanted:
            continue
        ks = dumps(canon(k))
        seen.add(ks)
        now = by_key.get(ks)
        if now is None:
            out.append(ItemDiff(key=k, restored=it, live=None, verdict="deleted", why="in the copy, not in the live table"))
        elif canon(now) != canon(it):
            out.append(_changed(k, it, now, at, updated_attribute, bool(wanted)))
    for ks, it in by_key.items():
        if ks not in seen and (not wanted or pk_text(key_of(it, key_names), pk) in wanted):
            out.append(ItemDiff(key=key_of(it, key_names), restored=None, live=it, verdict="added",
                                why="written after the restore point: not in the copy, never touched"))
    return sorted((_expire(d, ttl_attr, clock) for d in out), key=lambda d: dumps(canon(d.key)))


def groups(diffs: list[ItemDiff], max_items: int = GROUP_ITEMS, max_bytes: int = GROUP_BYTES) -> list[list[ItemDiff]]:
    """The writes in groups (one step each): at most ``max_items`` items or ``max_bytes`` of images a group."""
    out: list[list[ItemDiff]] = []
    size = keys = 0
    for d in (d for d in diffs if d.writes):
        n, k = len(dumps(canon(d.restored))) + len(dumps(canon(d.live))), len(dumps(canon(d.key))) + 1
        if not out or len(out[-1]) >= max_items or size + n > max_bytes or keys + k > GROUP_KEY_BYTES:
            out.append([])
            size = keys = 0
        out[-1].append(d)
        size, keys = size + n, keys + k
    return out


def items_resource(table: str, keys: list[dict[str, Any]]) -> str:
    """A group's resource: the table and its items' keys (DynamoDB JSON), so any run can read it again."""
    return f"{table}/items {dumps([canon(k) for k in keys])}"


def parse_items_resource(resource: str) -> tuple[str, list[dict[str, Any]]]:
    """(table, the keys as DynamoDB takes them: binary decoded)."""
    table, _, keys = resource.partition("/items ")
    return table, [decode(k) or {} for k in json.loads(keys)]


def image_bytes(d: ItemDiff) -> int:
    return len(dumps(canon(d.restored))) + len(dumps(canon(d.live)))


def images_value(images: list[dict[str, Any] | None]) -> str:
    """A group's value: its items' images in key order (null: no such item)."""
    return dumps([canon(i) for i in images])


def parse_images(value: str) -> list[dict[str, Any] | None]:
    return json.loads(value)


def item_step(now: Any, planned: Any, target: Any) -> Literal["already", "write", "changed"]:
    """One item of a group being written (canonical images): already at its image (a re-run: skipped), still as the plan
    read it (written, conditionally), or changed since the plan (never overwritten)."""
    if now == target:
        return "already"
    return "write" if now == planned else "changed"


def partial_detail(keys: list[dict[str, Any]], not_written: dict[int, str]) -> str:
    """A group some of whose items were not written: how many were, and each one that was not, with the reason."""
    return (f"partially applied: {len(keys) - len(not_written)} of {len(keys)} item(s) written; not written: "
            + "; ".join(f"{dumps(canon(keys[i]))} ({why})" for i, why in sorted(not_written.items())))


def items_reached(before: str, target: str, now: str) -> bool:
    """A group a stopped run left open: taken (and closed as such) when any of its items reads as its restored image; the
    others read as the plan found them (not written) or as someone else left them (said by the undo, item by item)."""
    b, t, n = parse_images(before), parse_images(target), parse_images(now)
    return any(x == y and x != z for x, y, z in zip(n, t, b, strict=False))


def undo_items(keys: list[dict[str, Any]], before: str, after: str, now: str) -> tuple[str, list[str]]:
    """Undo of a group, item by item: (the images to write, the items that cannot be undone and why). An item still at its
    restored image gets its previous image back; one already at its previous image (never written, or put back) is left;
    any other was changed since and is left as it is, named."""
    b, a, n = parse_images(before), parse_images(after), parse_images(now)
    out, cannot = [], []
    for k, was, restored, is_now in zip(keys, b, a, n, strict=False):
        if is_now == restored and is_now != was:
            out.append(was)
        else:
            out.append(is_now)
            if is_now != was:
                cannot.append(f"{dumps(canon(k))} is not the restored image the run wrote (changed since, or never written by it): "
                              "not undone; look at it by hand")
    return dumps(out), cannot


def _counts(diffs: list[ItemDiff]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in diffs:
        out[d.verdict] = out.get(d.verdict, 0) + 1
    return out


def _show(d: ItemDiff, pk: str) -> str:
    return f"{pk}={pk_text(d.key, pk)}" + (f" ({d.why})" if d.why else "")


def plan_items(system_name: str, identity: Identity, table: str, point: RestorePoint, copy: str, diffs: list[ItemDiff],
               key_names: list[str], notes: list[str]) -> Plan:
    """Conditional writes of the deleted and changed items, grouped; newer and added ones listed, never touched."""
    plan = Plan(runbook=RUNBOOK, system=system_name, identity=identity, notes=list(notes))
    pk, c = key_names[0], _counts(diffs)
    plan.notes.append(f"{table}: diffed against {copy} ({point.text()}): {c.get('deleted', 0)} deleted, {c.get('changed', 0)} changed "
                      f"(put back), {c.get('newer', 0)} newer and {c.get('unknown-age', 0)} of unknown age (kept), {c.get('added', 0)} "
                      "added since (kept)" + (f", {c['expired']} expired (TTL past: never put back)" if c.get("expired") else ""))
    for d in diffs:
        if not d.writes:
            plan.unchanged.append(f"{table}: {_show(d, pk)}")
    big = [d for d in diffs if d.writes and image_bytes(d) > RECORD_IMAGE_BYTES]
    plan.cannot += [f"{table}: {pk}={pk_text(d.key, pk)}: its images ({image_bytes(d) // 1000} KB) are too large to keep in a record "
                    f"for undo (at most {RECORD_IMAGE_BYTES // 1000} KB): not written; put it back by hand from {copy}" for d in big]
    for g in groups([d for d in diffs if d not in big]):
        keys = [d.key for d in g]
        deleted = sum(1 for d in g if d.live is None)
        plan.actions.append(Action(
            kind=ITEMS_KIND, resource=items_resource(table, keys), current=images_value([d.live for d in g]),
            target=images_value([d.restored for d in g]), iam_action=IAM[ITEMS_KIND],
            evidence=f"{len(g)} item(s) of {pk} " + ", ".join(pk_text(k, pk) for k in keys) + f" as in {copy}: {deleted} deleted, "
                     f"{len(g) - deleted} changed since the restore point; each a conditional PutItem (the live item still as read, "
                     "or attribute_not_exists), in parallel, read back; undo puts the previous images back"))
    if not plan.actions and not diffs:
        plan.unchanged.append(f"{table}: every item {'named ' if c else ''}reads as in {copy}")
    return plan


# --- switch: settings, consumers, the cutover ------------------------------------------------------


class Consumer(BaseModel):
    function: str
    variable: str
    value: str
    role: str = ""
    policies: RolePolicies | None = None
    error: str | None = None


def sibling_arn(copy_arn: str, table: str) -> str:
    """The ARN ``table`` has (or had: a deleted table) in the copy's account and region."""
    return f"{copy_arn.rpartition('/')[0]}/{table}" if "/" in copy_arn else copy_arn


def missing_access(rp: RolePolicies, source_arn: str, copy_arn: str) -> list[str]:
    """The DynamoDB actions the role allows on the live table (or its indexes, ``<arn>/index/*``) but not on the copy's
    (denied, or no Allow covers it)."""
    out = []
    for suffix, label in (("", ""), ("/index/*", " on its indexes")):
        for a in TABLE_ACTIONS:
            action = f"dynamodb:{a}"
            allow_src, deny_src = rp.allows(action, source_arn + suffix)
            if not allow_src or deny_src:
                continue
            allow, deny = rp.allows(action, copy_arn + suffix)
            if not allow or deny:
                out.append(action + label)
    return out


def reach_findings(consumers: list[Consumer], source_arn: str, copy_arn: str) -> list[Finding]:
    out = []
    for c in consumers:
        res = f"{c.function}/env/{c.variable}"
        if c.error:  # which variable names the table is not known: nothing may be switched (consumers never split)
            out.append(Finding(check="restore-consumer-reach", resource=c.function, status=Status.UNKNOWN,
                               summary=f"{c.function}: its configuration could not be read ({c.error}): not known whether it reads "
                                       "the table; no consumer switched"))
            continue
        if c.policies is None or c.policies.error:
            why = c.policies.error if c.policies else "no role read"
            out.append(Finding(check="restore-consumer-reach", resource=res, status=Status.UNKNOWN,
                               summary=f"{c.function}: its role's policies could not be read ({why}): not switched"))
            continue
        missing = missing_access(c.policies, source_arn, copy_arn)
        if not any(c.policies.allows(f"dynamodb:{a}", source_arn)[0] for a in TABLE_ACTIONS):
            missing = missing or ["(no DynamoDB action on the live table either)"]
        ok = not missing
        out.append(Finding(check="restore-consumer-reach", resource=res, status=Status.OK if ok else Status.CRIT,
                           summary=f"{c.function} (role {c.policies.role}) " + ("may use the copy as it uses the live table" if ok else
                                   f"may not {', '.join(missing)} on {copy_arn}: extend its policy, then run again; not switched")))
    return out


NOT_COPIED = ("auto scaling (Application Auto Scaling targets and policies of the table: set them on the copy by hand, if it is "
              "provisioned)", "CloudWatch alarms (they keep watching the live table: re-create them for the copy)",
              "the resource policy and global-table replicas, if any")


def plan_switch(system_name: str, identity: Identity, table: str, point: RestorePoint, copy: str,
                settings: dict[str, tuple[str, str]], consumers: list[Consumer], reach: list[Finding], notes: list[str],
                mappings: list[str] | None = None) -> Plan:
    """Settings the restore did not bring copied onto the copy, then each consumer's environment variable rewritten to the
    copy's name, only when every consumer can reach it (a consumer not read blocks them all). ``mappings``: the event source
    mappings on the live table's stream, named for a person (not moved)."""
    plan = Plan(runbook=RUNBOOK, system=system_name, identity=identity, notes=list(notes))
    when = point.at.isoformat(timespec="seconds") if point.at else "the restore point"
    plan.notes.append(f"cutover from {table} to {copy} ({point.text()}): writes made to {table} after {when} are NOT in the copy; "
                      f"they stay in {table} (merge them by hand, or use mode=items instead)")
    plan.notes.append("not copied by this runbook: " + "; ".join(NOT_COPIED))
    for s in SETTINGS:
        src, now = settings.get(s, ("?", "?"))
        if src == now:
            plan.unchanged.append(f"{copy}/{s}: {now} as on {table}")
        elif src.startswith("unreadable"):
            plan.cannot.append(f"{copy}/{s}: {table}'s {s} could not be read ({src}): not copied")
        else:
            plan.actions.append(Action(kind=SETTING_KIND, resource=f"{copy}/{s}", current=now, target=src, iam_action=IAM[SETTING_KIND],
                                       reversible=False, evidence=f"{table} has {s} {src}; a restore does not bring it"))
    if not consumers:
        plan.cannot.append(f"{table}: no Lambda function of the inventory names it in an environment variable: nothing to switch "
                           "(the application must be pointed at the copy by hand)")
    plan.cannot += [f"{table}'s stream: {m}: not moved by this runbook (point it at {copy}'s stream by hand, once the stream is "
                    "copied, or keep it)" for m in mappings or []]
    blocked = [f for f in reach if f.status is not Status.OK]
    plan.cannot += [f"{f.resource}: {f.summary}" for f in blocked]
    for c in consumers:
        res = f"{c.function}/env/{c.variable}"
        if c.error:
            continue
        if c.value == copy:
            plan.unchanged.append(f"{res}: already {copy}")
        elif not blocked:
            plan.actions.append(Action(kind=ENV_KIND, resource=res, current=c.value, target=copy, iam_action=IAM[ENV_KIND],
                                       evidence=f"{c.function} reads the table from {c.variable}; undo sets it back to {c.value}"))
    if blocked:
        plan.actions = [a for a in plan.actions if a.kind != ENV_KIND]
    return plan


def switched_onto(records: list[dict[str, Any]], copy: str) -> list[str]:
    """Each consumer the records show was ever switched onto ``copy`` (``function/env/VAR (run ID)``): it may hold writes
    made while they used it, which are nowhere else."""
    return sorted({f"{r['resource']} (run {r.get('flow_run_id') or '?'})" for r in records
                   if r.get("runbook") == RUNBOOK and r.get("kind") == ENV_KIND and r.get("after") == copy
                   and r.get("status") in ("applied", "verified")})


def switch_undo_notes(actions: list[Action]) -> list[str]:
    """What an undo of a switch does not bring back: writes made to the copy while the consumers used it."""
    copies = sorted({a.current for a in actions if a.kind == ENV_KIND and a.current != a.target})
    return [f"writes made to {c} while the consumers used it stay only in {c}: setting them back does not copy them to "
            f"{a_target(actions, c)} (not counted; compare the tables and merge by hand before remove_copy)" for c in copies]


def a_target(actions: list[Action], copy: str) -> str:
    return next(a.target for a in actions if a.kind == ENV_KIND and a.current == copy)


def plan_remove(system_name: str, identity: Identity, table: str, copy: str, exists: bool, pointing: list[str],
                ours: bool | None = True, switched: list[str] | None = None, force: bool = False) -> Plan:
    """The copy deleted, never while a consumer points at it, never a table tagged as something else, and, when the records
    show a consumer was ever switched onto it (``switched``: it may hold writes nowhere else), only with ``force``."""
    plan = Plan(runbook=RUNBOOK, system=system_name, identity=identity)
    if not exists:
        plan.unchanged.append(f"{copy}: no such table (already removed, or never restored)")
    elif ours is False:
        plan.cannot.append(f"{copy}: its tags say it is not the copy of {table} at this restore point: not removed")
    elif pointing:
        plan.cannot.append(f"{copy}: still in use by {', '.join(pointing)}: not removed (undo the switch first)")
    elif switched and not force:
        plan.cannot.append(f"{copy}: the records show {', '.join(switched)} switched onto it: writes made to it then are only in "
                           f"it: not removed (merge them into {table}, then give force=true to remove it anyway)")
    else:
        was = (f"; force=true: removed although {', '.join(switched)} used it (writes made to it then are lost)" if switched else
               "; no consumer points at it")
        plan.actions.append(Action(kind=REMOVE_KIND, resource=copy, current="exists", target=ABSENT, iam_action=IAM[REMOVE_KIND],
                                   reversible=False, evidence=f"the copy of {table} made by this runbook{was}"))
    return plan


# --- verifying -------------------------------------------------------------------------------------


def count_finding(copy: str, count: int | None, expected: int | None, live_now: int | None, kind: str, error: str | None = None,
                  sample: tuple[int, int] | None = None) -> Finding:
    """The copy's items counted by scan against the backup's count (a backup), or beside the live table's (PITR: informative);
    ``sample``: (live items sampled, how many read otherwise in the copy: changed or added after the restore point)."""
    if error or count is None:
        return Finding(check="restore-copy-count", resource=copy, status=Status.UNKNOWN, summary=f"{copy}: not counted ({error}): not verified")
    sampled = (f"; {sample[1]} of {sample[0]} live items sampled read otherwise in the copy (written after the restore point)"
               if sample else "")
    live = f"the live table has {live_now}" if live_now is not None else "the live table is gone"
    details = {"expected": expected, "live": live_now, "sampled": sample[0] if sample else None, "differ": sample[1] if sample else None}
    if kind == "backup" and expected is not None:
        ok = count == expected
        return Finding(check="restore-copy-count", resource=copy, status=Status.OK if ok else Status.WARN, value=count, details=details,
                       summary=f"{copy} holds {count} items; the backup says {expected}" + ("" if ok else
                               " (a backup's ItemCount can lag by hours: look at it before switching)") + f"; {live}"
                               + sampled)
    return Finding(check="restore-copy-count", resource=copy, status=Status.OK, value=count, details=details,
                   summary=f"{copy} holds {count} items; {live} now (writes after the restore point differ)" + sampled)


def rto_finding(table: str, seconds: float, target_minutes: float | None, sandbox: bool) -> Finding:
    """Restore start -> data usable, against the inventory's RTO target; sandbox figures say so (opsbook.rto)."""
    return rto.rto_finding(table, seconds, target_minutes, sandbox, span="from the restore's start to usable data",
                           sandbox_why="moto restores at once")


class Unreadable(BaseModel):
    what: str
    error: str


def unreadable_finding(table: str, u: Unreadable) -> Finding:
    return Finding(check="restore-diff", resource=table, status=Status.UNKNOWN,
                   summary=f"{u.what} could not be read ({u.error}): nothing planned, not known to be complete")

