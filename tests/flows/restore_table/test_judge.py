"""restore-table's pure decisions: the restore point, the copy's name, the diff rules, the groups, the plans, reach, RTO."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from flows.restore_table import judge as j
from opsbook.findings import Status
from opsbook.mutation.core import Identity
from tasks.iam_roles import RolePolicies, statements_of

ID = Identity(account="123456789012", arn="arn:aws:iam::123456789012:user/ops", region="us-east-2")
ARN = "arn:aws:dynamodb:us-east-2:123456789012:table/todos/backup/01700000000000-abcdef12"
AT = datetime(2026, 1, 1, tzinfo=timezone.utc)
KEY = ["id"]


def it(i: str, title: str = "x", updated: str | None = None, **more) -> dict:
    out = {"id": {"S": i}, "title": {"S": title}, **more}
    if updated:
        out["updated_at"] = {"S": updated}
    return out


# --- the restore point and the copy ------------------------------------------------------------


def test_restore_points_parse():
    assert j.parse_restore_point("latest", "todos").kind == "latest"
    p = j.parse_restore_point(ARN, "todos")
    assert (p.kind, p.arn) == ("backup", ARN)
    t = j.parse_restore_point("2026-01-01T09:00:00+09:00", "todos")
    assert t.kind == "time" and t.at == AT


@pytest.mark.parametrize(("value", "says"), [
    (ARN.replace("table/todos", "table/other"), "a backup of table other, not of todos"),
    ("arn:aws:s3:::bucket", "not a DynamoDB backup ARN"),
    ("2026-01-01T00:00:00", "has no time zone"),
    ("yesterday", "give an ISO-8601 time"),
])
def test_bad_restore_points_are_refused_saying_why(value, says):
    with pytest.raises(j.RestoreError, match=says):
        j.parse_restore_point(value, "todos")


def test_the_copy_name_is_stable_per_table_and_point_and_differs_between_points():
    a = j.copy_name("todos", ARN)
    assert a == j.copy_name("todos", f" {ARN} ") and a.startswith("todos-restore-")
    assert a != j.copy_name("todos", "latest") and len(j.copy_name("t" * 255, "latest")) <= 255


def test_one_restore_point_written_two_ways_is_one_copy_and_its_tags_match_either():
    z, plus = "2026-12-04T09:30:00Z", "2026-12-04T18:30:00+09:00"
    assert j.copy_name("todos", z) == j.copy_name("todos", plus) == j.copy_name("todos", j.parse_restore_point(plus, "todos"))
    assert j.copy_name("todos", z) != j.copy_name("todos", "2026-12-04T09:31:00Z")
    tags = j.copy_tags("todos", j.parse_restore_point(z, "todos"), 1.0, "r1")
    assert tags["opsbook:restore-point"] == "2026-12-04T09:30:00+00:00"
    assert j.copy_of(tags, "todos", j.parse_restore_point(plus, "todos")) is True
    assert j.copy_of(tags | {"opsbook:restore-point": z}, "todos", j.parse_restore_point(plus, "todos")) is True  # tagged as asked
    assert j.copy_of(tags, "todos", j.parse_restore_point("latest", "todos")) is False
    assert j.copy_of({}, "todos", j.parse_restore_point(z, "todos")) is None  # CREATING, or not tagged yet


# --- the diff --------------------------------------------------------------------------------------


def verdicts(diffs):
    return {d.key["id"]["S"]: d.verdict for d in diffs}


def test_deleted_items_go_back_added_ones_are_never_touched_equal_ones_are_not_listed():
    diffs = j.diff_items([it("a"), it("b"), it("c")], [it("a"), it("d")], KEY, AT, None)
    assert verdicts(diffs) == {"b": "deleted", "c": "deleted", "d": "added"}
    assert [d.writes for d in diffs] == [True, True, False]


def test_changed_before_the_restore_point_goes_back_changed_after_is_never_overwritten():
    restored = [it("old", "good", "2025-12-31T00:00:00Z"), it("new", "good", "2025-12-31T00:00:00Z")]
    live = [it("old", "damaged", "2025-12-31T00:00:00Z"),  # changed, its update time not after the restore point
            it("new", "edited", "2026-01-02T00:00:00Z")]  # a newer write
    diffs = j.diff_items(restored, live, KEY, AT, "updated_at")
    assert verdicts(diffs) == {"old": "changed", "new": "newer"}
    assert "never overwritten" in diffs[0].why
    named = j.diff_items(restored, live, KEY, AT, "updated_at", keys=["new"])  # naming it does not overwrite a newer item
    assert verdicts(named) == {"new": "newer"}


def test_epoch_update_times_are_read_in_seconds_and_milliseconds():
    s, ms = int(AT.timestamp()) + 60, (int(AT.timestamp()) + 60) * 1000
    for v in (s, ms):
        diffs = j.diff_items([it("a", "x", upd={"N": "1"})], [it("a", "y", upd={"N": str(v)})], KEY, AT, "upd")
        assert verdicts(diffs) == {"a": "newer"}


def test_without_an_update_time_a_changed_item_is_kept_unless_named():
    restored, live = [it("a", "good"), it("b", "good")], [it("a", "bad"), it("b", "bad")]
    assert verdicts(j.diff_items(restored, live, KEY, AT, None)) == {"a": "unknown-age", "b": "unknown-age"}
    assert verdicts(j.diff_items(restored, live, KEY, AT, None, keys=["a"])) == {"a": "changed"}


def test_keys_filter_and_empty_tables():
    assert verdicts(j.diff_items([it("a"), it("b")], [], KEY, AT, None, keys=["b"])) == {"b": "deleted"}
    assert j.diff_items([], [], KEY, AT, None) == []
    assert j.diff_items([it("a", tags={"SS": ["x", "y"]})], [it("a", tags={"SS": ["y", "x"]})], KEY, AT, None) == []  # set order


def test_composite_keys_match_on_both_attributes():
    r = [{"pk": {"S": "u"}, "sk": {"N": "1"}}, {"pk": {"S": "u"}, "sk": {"N": "2"}}]
    diffs = j.diff_items(r, r[:1], ["pk", "sk"], AT, None)
    assert [(d.verdict, d.key) for d in diffs] == [("deleted", {"pk": {"S": "u"}, "sk": {"N": "2"}})]


def test_the_usual_update_attribute_is_guessed():
    assert j.guess_updated_attribute([it("a"), it("b", updated="2026-01-01T00:00:00Z")]) == "updated_at"
    assert j.guess_updated_attribute([it("a")]) is None


def test_an_item_whose_ttl_is_past_is_expired_never_put_back_even_when_named():
    now = datetime(2026, 6, 1, tzinfo=AT.tzinfo)
    old, fresh = {"expires": {"N": "1700000000"}}, {"expires": {"N": "4102444800"}}
    restored = [it("a", **old), it("b", **fresh), it("c", "was", "2025-01-01T00:00:00Z", **old), it("d")]
    live = [it("c", "now", "2025-06-01T00:00:00Z", **old)]
    d = {x.key["id"]["S"]: x for x in j.diff_items(restored, live, KEY, AT, "updated_at", None, "expires", now)}
    assert {k: x.verdict for k, x in d.items()} == {"a": "expired", "b": "deleted", "c": "expired", "d": "deleted"}
    assert "expires=1700000000 (2023-11-14T22:13:20+00:00) is past" in d["a"].why and not d["a"].writes
    assert verdicts(j.diff_items(restored, live, KEY, AT, "updated_at", ["a"], "expires", now)) == {"a": "expired"}
    assert verdicts(j.diff_items(restored, live, KEY, AT, "updated_at", None, None, now))["a"] == "deleted"  # no TTL on the table
    assert j.ttl_attribute("attribute expires") == "expires" and j.ttl_attribute("off") is None
    plan = j.plan_items("todo-app", ID, "todos", j.parse_restore_point(ARN, "todos"), "todos-restore-x", list(d.values()), KEY, [])
    assert [json.loads(a.resource.partition(" ")[2]) for a in plan.actions] == [[{"id": {"S": "b"}}, {"id": {"S": "d"}}]]
    assert any("id=a" in u and "expired" in u for u in plan.unchanged) and "2 expired (TTL past" in plan.notes[-1]


# --- groups and the plan ---------------------------------------------------------------------------


def test_writes_are_grouped_by_count_and_size_and_the_resource_reads_back():
    diffs = j.diff_items([it(f"k{i:02d}") for i in range(23)], [], KEY, AT, None)
    gs = j.groups(diffs)
    assert [len(g) for g in gs] == [10, 10, 3]
    assert [len(g) for g in j.groups(diffs, max_bytes=200)] == [5, 5, 5, 5, 3]  # about 40 bytes an image
    res = j.items_resource("todos", [d.key for d in gs[2]])
    assert j.parse_items_resource(res) == ("todos", [{"id": {"S": f"k{i}"}} for i in (20, 21, 22)])


def test_items_plan_writes_only_deleted_and_changed_and_lists_the_rest():
    point = j.RestorePoint(asked=ARN, kind="backup", arn=ARN, at=AT)
    diffs = j.diff_items([it("a"), it("b", "good", "2025-01-01T00:00:00Z"), it("c", "good", "2025-01-01T00:00:00Z")],
                         [it("b", "bad", "2025-01-01T00:00:00Z"), it("c", "new", "2026-02-01T00:00:00Z"), it("d")], KEY, AT, "updated_at")
    plan = j.plan_items("todo-app", ID, "todos", point, "todos-restore-x", diffs, KEY, [])
    [a] = plan.actions
    assert a.kind == j.ITEMS_KIND and json.loads(a.current) == [None, j.canon(it("b", "bad", "2025-01-01T00:00:00Z"))]
    assert json.loads(a.target) == [j.canon(it("a")), j.canon(it("b", "good", "2025-01-01T00:00:00Z"))]
    assert "1 deleted, 1 changed (put back), 1 newer" in plan.notes[-1] and "1 added since" in plan.notes[-1]
    assert any("id=c" in u for u in plan.unchanged) and any("id=d" in u for u in plan.unchanged)


def test_nothing_differs_nothing_planned():
    plan = j.plan_items("s", ID, "todos", j.RestorePoint(asked="latest", kind="latest"), "copy", [], KEY, [])
    assert plan.actions == [] and "every item reads as in copy" in plan.unchanged[0]


def test_an_unreadable_side_is_unknown():
    f = j.unreadable_finding("todos", j.Unreadable(what="the copy todos-restore-x", error="AccessDenied"))
    assert f.status is Status.UNKNOWN and "not known to be complete" in f.summary


def test_binary_attributes_are_base64_in_images_and_bytes_again_for_the_writes():
    item = it("a", blob={"B": b"\x00\xff"}, set={"BS": [b"b", b"a"]}, m={"M": {"x": {"B": b"\x01"}}}, l={"L": [{"B": b"\x02"}]})
    [img] = j.parse_images(j.images_value([item]))
    assert img["blob"] == {"B": "AP8="} and img["set"] == {"BS": ["YQ==", "Yg=="]}
    back = j.decode(img)
    assert back["blob"] == {"B": b"\x00\xff"} and back["set"] == {"BS": [b"a", b"b"]} and back["m"]["M"]["x"] == {"B": b"\x01"}
    assert back["l"] == {"L": [{"B": b"\x02"}]} and j.canon(back) == img
    key = {"id": {"B": b"\x07"}}
    assert j.parse_items_resource(j.items_resource("t", [key])) == ("t", [key]) and j.pk_text(key, "id") == "Bw=="


def test_an_item_too_large_for_a_record_is_refused_in_the_plan():
    big = it("a", blob={"S": "x" * (j.RECORD_IMAGE_BYTES + 1)})
    diffs = j.diff_items([big, it("b")], [], KEY, AT, None)
    plan = j.plan_items("s", ID, "todos", j.parse_restore_point(ARN, "todos"), "c", diffs, KEY, [])
    assert [json.loads(a.resource.partition(" ")[2]) for a in plan.actions] == [[{"id": {"S": "b"}}]]
    assert len(plan.cannot) == 1 and "id=a" in plan.cannot[0] and "too large" in plan.cannot[0]


# --- a group written item by item: partial outcomes, a kill inside it, its undo ---------------------


def test_each_item_of_a_group_is_written_skipped_or_refused_on_its_own():
    restored, planned = j.canon(it("a", "back")), None
    assert j.item_step(None, planned, restored) == "write"
    assert j.item_step(restored, planned, restored) == "already"  # a re-run
    assert j.item_step(j.canon(it("a", "someone else")), planned, restored) == "changed"
    keys = [{"id": {"S": k}} for k in ("a", "b", "c")]
    detail = j.partial_detail(keys, {1: "changed since the plan: not overwritten"})
    assert detail.startswith("partially applied: 2 of 3 item(s) written; not written: ")
    assert '{"id":{"S":"b"}} (changed since the plan: not overwritten)' in detail and '"a"' not in detail


def test_a_group_half_written_by_a_killed_run_counts_as_taken_never_as_someone_elses():
    before = j.images_value([None, None, None])
    target = j.images_value([it("a"), it("b"), it("c")])
    assert j.items_reached(before, target, j.images_value([it("a"), None, None]))
    assert j.items_reached(before, target, target)
    assert not j.items_reached(before, target, before)  # stopped before writing any
    assert not j.items_reached(before, target, j.images_value([it("a", "other"), None, None]))


def test_undo_puts_back_exactly_the_items_still_as_restored_and_names_the_others():
    keys = [{"id": {"S": k}} for k in ("a", "b", "c", "d")]
    before = j.images_value([None, it("b", "old"), None, None])
    after = j.images_value([it("a"), it("b"), it("c"), it("d")])
    now = j.images_value([it("a"), it("b"), it("c", "someone else"), None])  # d: never written (refused) or put back
    target, cannot = j.undo_items(keys, before, after, now)
    assert json.loads(target) == [None, j.canon(it("b", "old")), j.canon(it("c", "someone else")), None]
    assert len(cannot) == 1 and '"c"' in cannot[0] and "not undone" in cannot[0]
    assert j.undo_items(keys, before, after, before) == (before, [])  # all back already: nothing to write


# --- switch ------------------------------------------------------------------------------------------


SRC, COPY = "arn:aws:dynamodb:us-east-2:1:table/todos", "arn:aws:dynamodb:us-east-2:1:table/todos-restore-x"


def role(resource: str, deny: str | None = None) -> RolePolicies:
    stmts = [{"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:PutItem"], "Resource": resource}]
    if deny:
        stmts.append({"Effect": "Deny", "Action": "dynamodb:PutItem", "Resource": deny})
    return RolePolicies(role="r", statements=statements_of("p", {"Statement": stmts}))


def test_reach_needs_on_the_copy_what_the_role_has_on_the_table():
    assert j.missing_access(role(SRC), SRC, COPY) == ["dynamodb:GetItem", "dynamodb:PutItem"]
    assert j.missing_access(role("arn:aws:dynamodb:us-east-2:1:table/todos*"), SRC, COPY) == []
    assert j.missing_access(role("*", deny=COPY), SRC, COPY) == ["dynamodb:PutItem"]


def test_reach_findings_and_the_switch_plan():
    c = j.Consumer(function="api", variable="TABLE", value="todos", role="r", policies=role(SRC))
    point = j.RestorePoint(asked=ARN, kind="backup", arn=ARN, at=AT)
    settings = {"ttl": ("attribute exp", "off"), "stream": ("off", "off"), "pitr": ("ENABLED", "DISABLED"), "tags": ("{}", "{}")}
    [bad] = j.reach_findings([c], SRC, COPY)
    assert bad.status is Status.CRIT
    plan = j.plan_switch("s", ID, "todos", point, "todos-restore-x", settings, [c], [bad], [])
    assert [a.kind for a in plan.actions] == [j.SETTING_KIND, j.SETTING_KIND] and plan.cannot
    ok = c.model_copy(update={"policies": role("*")})
    [good] = j.reach_findings([ok], SRC, COPY)
    plan = j.plan_switch("s", ID, "todos", point, "todos-restore-x", settings, [ok], [good], [])
    env = [a for a in plan.actions if a.kind == j.ENV_KIND]
    assert [(a.resource, a.current, a.target) for a in env] == [("api/env/TABLE", "todos", "todos-restore-x")]
    assert any("NOT in the copy" in n for n in plan.notes) and any("auto scaling" in n for n in plan.notes)
    unread = c.model_copy(update={"policies": RolePolicies(role="r", error="AccessDenied")})
    assert j.reach_findings([unread], SRC, COPY)[0].status is Status.UNKNOWN


def test_reach_also_needs_the_copys_indexes_where_the_role_uses_the_tables():
    rp = RolePolicies(role="r", statements=statements_of("p", {"Statement": [
        {"Effect": "Allow", "Action": "dynamodb:*", "Resource": [SRC, COPY]},
        {"Effect": "Allow", "Action": "dynamodb:Query", "Resource": f"{SRC}/index/*"}]}))
    assert j.missing_access(rp, SRC, COPY) == ["dynamodb:Query on its indexes"]
    assert j.missing_access(role("arn:aws:dynamodb:us-east-2:1:table/todos*"), SRC, COPY) == []


def test_a_consumer_not_read_is_unknown_and_blocks_the_switch_and_stream_mappings_are_named():
    point = j.RestorePoint(asked=ARN, kind="backup", arn=ARN, at=AT)
    ok = j.Consumer(function="api", variable="TABLE", value="todos", role="r", policies=role("*"))
    lost = j.Consumer(function="worker", variable="?", value="?", error="AccessDenied")
    reach = j.reach_findings([ok, lost], SRC, COPY)
    assert [(f.resource, f.status) for f in reach] == [("api/env/TABLE", Status.OK), ("worker", Status.UNKNOWN)]
    assert "configuration could not be read (AccessDenied)" in reach[1].summary
    plan = j.plan_switch("s", ID, "todos", point, "todos-restore-x", {}, [ok, lost], reach, [], ["indexer (event source mapping u1, Enabled)"])
    assert not [a for a in plan.actions if a.kind == j.ENV_KIND] and not any("/env/?" in a.resource for a in plan.actions)
    assert any(c.startswith("worker: ") for c in plan.cannot)
    assert any("stream: indexer (event source mapping u1, Enabled): not moved" in c for c in plan.cannot)


def test_a_copy_is_never_removed_while_in_use():
    assert j.plan_remove("s", ID, "todos", "copy", True, ["api (TABLE)"]).cannot
    assert [a.kind for a in j.plan_remove("s", ID, "todos", "copy", True, []).actions] == [j.REMOVE_KIND]
    assert j.plan_remove("s", ID, "todos", "copy", False, []).actions == []
    assert j.plan_remove("s", ID, "todos", "copy", True, [], ours=False).cannot


def test_a_copy_a_consumer_was_switched_onto_is_removed_only_with_force_and_its_undo_says_what_stays_in_it():
    recs = [{"runbook": j.RUNBOOK, "kind": j.ENV_KIND, "resource": "fn/env/T", "after": "c", "status": "verified", "flow_run_id": "r1"},
            {"runbook": j.RUNBOOK, "kind": j.ENV_KIND, "resource": "fn/env/T", "after": "todos", "status": "verified", "flow_run_id": "r2"},
            {"runbook": j.RUNBOOK, "kind": j.ENV_KIND, "resource": "g/env/T", "after": None, "status": "failed", "flow_run_id": "r1"}]
    switched = j.switched_onto(recs, "c")
    assert switched == ["fn/env/T (run r1)"] and j.switched_onto(recs, "other") == []
    refused = j.plan_remove("todo-app", ID, "todos", "c", True, [], True, switched)
    assert not refused.actions and "fn/env/T (run r1) switched onto it" in refused.cannot[0] and "force=true" in refused.cannot[0]
    forced = j.plan_remove("todo-app", ID, "todos", "c", True, [], True, switched, force=True)
    assert [a.kind for a in forced.actions] == [j.REMOVE_KIND] and "lost" in forced.actions[0].evidence
    assert [a.kind for a in j.plan_remove("todo-app", ID, "todos", "c", True, [], True, []).actions] == [j.REMOVE_KIND]
    back = [j.Action(kind=j.ENV_KIND, resource="fn/env/T", current="c", target="todos", iam_action="x")]
    [note] = j.switch_undo_notes(back)
    assert "stay only in c" in note and "to todos" in note


def test_a_deleted_live_table_has_its_arn_beside_the_copys_and_its_count_says_gone():
    copy_arn = "arn:aws:dynamodb:us-east-2:123456789012:table/todos-restore-abc"
    assert j.sibling_arn(copy_arn, "todos") == "arn:aws:dynamodb:us-east-2:123456789012:table/todos"
    f = j.count_finding("c", 3, 3, None, "backup")
    assert f.status is Status.OK and "the live table is gone" in f.summary


def test_counts_and_rto():
    assert j.count_finding("c", 5, 5, 7, "backup").status is Status.OK
    assert j.count_finding("c", 4, 5, 7, "backup").status is Status.WARN
    assert j.count_finding("c", None, None, None, "backup", "AccessDenied").status is Status.UNKNOWN
    assert j.count_finding("c", 4, None, 7, "latest").status is Status.OK
    assert "2 of 5 live items sampled read otherwise" in j.count_finding("c", 5, 5, 7, "backup", sample=(5, 2)).summary
    assert "sandbox RTO" in j.rto_finding("t", 2.0, 30, True).summary
    assert j.rto_finding("t", 2000.0, 30, False).status is Status.WARN
    assert j.rto_finding("t", 2.0, None, False).status is Status.OK


def test_a_table_of_the_copys_name_is_ours_only_by_its_tags_untagged_is_taken_as_ours():
    point = j.parse_restore_point("latest", "todos")
    tags = j.copy_tags("todos", point.model_copy(update={"at": AT}), 1.0, "run")
    assert j.copy_of(tags, "todos", point) is True
    assert j.copy_of(tags, "other", point) is False
    assert j.copy_of({"team": "x"}, "todos", point) is None  # stopped before tagging: the name derives from both
    assert j.as_of_copy(point, tags).at == AT  # latest restored earlier is as of then
    assert j.as_of_copy(point, {}).at is None


def test_long_keys_make_smaller_groups_so_a_resource_fits_a_lease_key():
    diffs = j.diff_items([it("k" * 400 + str(i)) for i in range(5)], [], KEY, AT, None)
    gs = j.groups(diffs)
    assert [len(g) for g in gs] == [3, 2]
    assert all(len(j.items_resource("todos", [d.key for d in g]).encode()) < 2000 for g in gs)
