"""remediate-opensearch-red's judgement without a cluster: allocation explanations -> cause, findings and advice,
the retry plan; disk thresholds exactly at each watermark."""

from __future__ import annotations

import pytest

from flows.remediate_opensearch_red import judge as j
from opsbook.findings import Status
from opsbook.inventory import OpenSearchDomain, load_system
from opsbook.mutation.core import Identity
from tasks.opensearch import ClusterState, DomainInfo, NodeDisk, RestorePoint, ShardExplain, parse_explain

HR = load_system("hr-resource-optimization")
DOMAIN = "hr-resource-optimization-team2"
ME = Identity(account="123456789012", arn="arn:aws:sts::123456789012:user/moto", region="us-east-2")
GiB = 1024 ** 3
INFO = DomainInfo(domain=DOMAIN, engine="OpenSearch_2.11", instance_type="r6g.large.search", instance_count=2, ebs_enabled=True,
                  volume_type="gp3", volume_size_gib=100, endpoint="http://x")


def _explain(primary: bool, deciders: dict[str, list[str]], **extra) -> dict:
    return {"index": "i", "shard": 0, "primary": primary, "current_state": "unassigned", "can_allocate": "no",
            "allocate_explanation": "cannot allocate because allocation is not permitted to any of the nodes",
            "unassigned_info": {"reason": "ALLOCATION_FAILED", "failed_allocation_attempts": 5, "last_allocation_status": "no"},
            "node_allocation_decisions": [{"node_name": n, "node_decision": "no" if ds else "yes",
                                           "deciders": [{"decider": x, "decision": "NO", "explanation": x} for x in ds]}
                                          for n, ds in deciders.items()], **extra}


def shard(primary: bool, deciders: dict[str, list[str]], index: str = "i", **extra) -> ShardExplain:
    return parse_explain({**_explain(primary, deciders, **extra), "index": index})


def cluster(status: str, shards: list[ShardExplain] = (), disks: list[NodeDisk] = (), **kw) -> ClusterState:
    return ClusterState(domain=DOMAIN, status=status, nodes=2, data_nodes=kw.pop("data_nodes", 2), active_shards=4,
                        unassigned=len(shards), shards=list(shards), disks=list(disks), **kw)


def target(c: ClusterState | None, info: DomainInfo | None = INFO, **kw) -> j.Target:
    d = kw.pop("domain", HR.opensearch_domains[0])
    return j.Target(domain=d, info=info, cluster=c, **kw)


def by(findings, check: str) -> list:
    return [f for f in findings if f.check == check]


def disk(pct: float) -> NodeDisk:
    return NodeDisk(node="n1", shards=3, used_bytes=int(pct * GiB), total_bytes=100 * GiB)


# --- a cause per unassigned shard -----------------------------------------------------------------------


def test_classify_reads_the_deciders():
    assert j.classify(shard(True, {"a": ["max_retry"], "b": ["max_retry", "disk_threshold"]}), 2).cause is j.Cause.RETRY
    assert j.classify(shard(True, {"a": ["max_retry", "disk_threshold"]}), 1).cause is j.Cause.DISK
    assert j.classify(shard(False, {"a": ["same_shard"]}), 1).cause is j.Cause.TOO_FEW_NODES
    assert j.classify(shard(False, {"a": ["same_shard", "awareness"]}), 1).cause is j.Cause.OTHER
    assert j.classify(shard(False, {"a": ["replica_after_primary_active"]}), 2).cause is j.Cause.FOLLOWS_PRIMARY
    assert j.classify(shard(True, {"a": []}, can_allocate="yes"), 2).cause is j.Cause.PENDING
    assert j.classify(shard(True, {}, can_allocate="allocation_delayed"), 2).cause is j.Cause.DELAYED
    assert j.classify(shard(True, {}, can_allocate="no_valid_shard_copy"), 2).cause is j.Cause.LOST
    # an answer without per-node decisions (ES-style max-retry text) still reads as a retry case
    text = {"index": "i", "shard": 0, "primary": False, "allocate_explanation":
            "shard has exceeded the maximum number of retries [5] on failed allocation attempts", "unassigned_info": {}}
    assert j.classify(parse_explain(text), 2).cause is j.Cause.RETRY


def test_an_explanation_that_could_not_be_read_is_unknown_never_ok():
    bad = ShardExplain(index="i", shard=0, primary=True, error="cluster API answered 500: boom")
    g = j.classify(bad, 2)
    assert g.cause is j.Cause.UNKNOWN and "allocation explain failed" in g.why
    out = j.judge_domain(HR, target(cluster("red", [bad])))
    [f] = by(out, "opensearch-shard")
    assert f.status is Status.UNKNOWN and f.resource == f"{DOMAIN}/i[0]p"


# --- the findings of a domain ------------------------------------------------------------------------------


def test_green_is_ok_and_red_with_a_retry_case_is_crit_with_its_causes():
    green = j.judge_domain(HR, target(cluster("green")))
    assert [(f.check, f.status) for f in green] == [("opensearch-domain", Status.OK), ("opensearch-health", Status.OK)]
    assert green[0].summary == "domain ready (OpenSearch_2.11); 2 x r6g.large.search, EBS gp3 100 GiB per node"
    red = j.judge_domain(HR, target(cluster("red", [shard(True, {"a": ["max_retry"]}), shard(False, {"a": ["same_shard"]}, "k")])))
    [health] = by(red, "opensearch-health")
    assert health.status is Status.CRIT and "causes: failed-max-retries (i[0]p); too-few-nodes (k[0]r)" in health.summary
    assert [f.status for f in by(red, "opensearch-shard")] == [Status.CRIT, Status.OK]


def test_yellow_only_for_lack_of_nodes_is_by_design_and_any_other_cause_is_warn():
    few = cluster("yellow", [shard(False, {"a": ["same_shard"]})], data_nodes=1)
    [h] = by(j.judge_domain(HR, target(few)), "opensearch-health")
    assert h.status is Status.OK and h.summary.startswith("cluster yellow by design")
    more = few.model_copy(update={"unexplained": ["x[0]r"]})  # not everything explained: not by design
    assert by(j.judge_domain(HR, target(more)), "opensearch-health")[0].status is Status.WARN
    odd = cluster("purple", [shard(False, {"a": ["awareness"]})])
    assert by(j.judge_domain(HR, target(odd)), "opensearch-health")[0].status is Status.UNKNOWN


def test_unreadable_domain_and_cluster_are_unknown_and_a_missing_domain_is_crit():
    [f] = j.judge_domain(HR, target(None, info=None, info_error="DescribeDomain: access denied"))
    assert (f.check, f.status, f.summary) == ("opensearch-domain", Status.UNKNOWN,
                                              "could not be read: RuntimeError: DescribeDomain: access denied")
    out = j.judge_domain(HR, target(None, cluster_error="cluster endpoint unreachable"))
    assert [(f.check, f.status) for f in out] == [("opensearch-domain", Status.OK), ("opensearch-health", Status.UNKNOWN)]
    out = j.judge_domain(HR, target(ClusterState(domain=DOMAIN, error="cluster API answered 403", error_kind="http")))
    assert out[-1].status is Status.UNKNOWN and "403" in out[-1].summary
    half = cluster("red", error="cluster API answered 500 on _cat/shards")
    assert [f.status for f in by(j.judge_domain(HR, target(half)), "opensearch-shards")] == [Status.UNKNOWN]
    gone = DomainInfo(domain="ghost", exists=False)
    [f] = j.judge_domain(HR, target(None, info=gone, domain=OpenSearchDomain(name="ghost"), named=False))
    assert f.status is Status.CRIT and f.summary == "does not exist (DescribeDomain: ResourceNotFound)"
    processing = INFO.model_copy(update={"processing": True})
    assert j.judge_domain(HR, target(None, info=processing))[0].status is Status.WARN


@pytest.mark.parametrize("pct, status, words", [
    (84.9, Status.OK, "below 85 %"),
    (85.0, Status.WARN, "above the warn level 85 %"),
    (89.9, Status.WARN, "above the warn level"),
    (90.0, Status.CRIT, "above the high watermark"),
    (94.9, Status.CRIT, "above the high watermark"),
    (95.0, Status.CRIT, "above the flood stage"),
])
def test_disk_exactly_at_each_watermark(pct, status, words):
    out = j.judge_domain(HR, target(cluster("green", disks=[disk(pct)])))
    [f] = by(out, "opensearch-disk")
    assert f.status is status and words in f.summary and f.value == pct
    storage = by(out, "opensearch-storage")
    assert (storage != []) is (pct >= 85.0)
    if storage:
        assert storage[0].status is (Status.CRIT if pct >= 90 else Status.WARN) and "NOT applied" in storage[0].summary


def test_storage_advice_sizes_ebs_or_nodes_never_applied():
    c = cluster("red", disks=[disk(96), disk(50).model_copy(update={"node": "n2"})])
    advice = j.storage_advice(HR, INFO, c)
    assert advice["proposed_volume_size_gib"] == 140 and advice["proposed_instance_count"] == 3  # 96 GiB at <= 70 %
    assert "VolumeSize=140" in advice["command"] and "read_only_allow_delete" in advice["recommendation"]
    advice = j.storage_advice(HR, DomainInfo(domain=DOMAIN, ebs_enabled=False, instance_count=1), cluster("red", disks=[disk(90)]))
    assert "instance storage" in advice["recommendation"] and "proposed_volume_size_gib" not in advice
    assert advice["proposed_instance_count"] == 2
    assert j.storage_advice(HR, INFO, cluster("red")) is None  # no disk read: no advice


def test_a_lost_primary_gets_the_restore_call_or_says_why_not():
    lost = shard(True, {}, "employee_profiles", can_allocate="no_valid_shard_copy")
    point = RestorePoint(index="employee_profiles", repository="backup_repo", snapshot="snap-1", state="SUCCESS")
    [f] = by(j.judge_domain(HR, target(cluster("red", [lost]), restore=[point])), "opensearch-restore")
    assert f.status is Status.CRIT and "`POST _snapshot/backup_repo/snap-1/_restore" in f.summary and "NOT applied" in f.summary
    [f] = by(j.judge_domain(HR, target(cluster("red", [lost]), restore_error="snapshot API answered 403")), "opensearch-restore")
    assert "could not be listed (RuntimeError: snapshot API answered 403)" in f.summary and "GET _snapshot/_all" in f.summary
    bare = OpenSearchDomain(name=DOMAIN)
    [f] = by(j.judge_domain(HR, target(cluster("red", [lost]), domain=bare)), "opensearch-restore")
    assert "names no snapshot_repository" in f.summary


# --- the plan -------------------------------------------------------------------------------------------


def test_the_retry_plan_covers_max_retry_copies_and_their_failed_replicas():
    p = shard(True, {"a": ["max_retry"]}, "e")
    r = shard(False, {"a": ["replica_after_primary_active"]}, "e")
    c = cluster("red", [p, r], failed_copies=["e[0]p", "e[0]r"])
    assert j.retried_copies(c) == ["e[0]p", "e[0]r"]
    plan = j.decide(HR, ME, [target(c)])
    [a] = plan.actions
    assert (a.kind, a.resource, a.reversible, a.iam_action) == (j.RETRY_KIND, DOMAIN, False, "es:ESHttpPost")
    assert a.current == j.failed_state("red", ["e[0]p", "e[0]r"]) and a.target.endswith("STARTED: e[0]p, e[0]r")
    assert j.failed_state("red", []).startswith("red; 0 copy(ies) failed allocation: none [")
    many = [f"x[{i}]p" for i in range(10)]
    assert "and 2 more" in j.failed_state("red", many) and j.failed_state("red", many) != j.failed_state("red", many[:9])


def test_nothing_is_retried_when_green_by_design_processing_unread_or_blocked_by_disk():
    assert j.decide(HR, ME, []).actions == []
    assert j.decide(HR, ME, [target(cluster("green"))]).unchanged == [f"{DOMAIN}: cluster green"]
    retry = cluster("red", [shard(True, {"a": ["max_retry"]})], failed_copies=["i[0]p"])
    busy = j.decide(HR, ME, [target(retry, info=INFO.model_copy(update={"processing": True}))])
    assert busy.actions == [] and "configuration change is in progress" in busy.cannot[0]
    unread = j.decide(HR, ME, [target(None, cluster_error="unreachable")])
    assert unread.actions == [] and unread.notes == [f"{DOMAIN}: not planned, its state could not be read (unreachable)"]
    full = cluster("red", [shard(True, {"a": ["max_retry", "disk_threshold"]})], failed_copies=["i[0]p"])
    plan = j.decide(HR, ME, [target(full)])
    assert plan.actions == [] and "retry would not place them (disk-watermark)" in plan.cannot[0]
    assert any("more storage is recommended" in n for n in plan.notes)


def test_retry_findings_after_the_wait():
    keys = j.retried_keys("POST _cluster/reroute?retry_failed=true; expect STARTED: e[0]p, e[0]r")
    assert keys == ["e[0]p", "e[0]r"] and j.retried_keys("expect STARTED: ") == []
    assert j.poll_answer("green", keys, []) == (True, "green")
    assert j.poll_answer("red", keys, ["e[0]r"]) == (False, "red, 1 of 2 retried copy(ies) not started (e[0]r)")
    before = j.failed_state("red", ["e[0]p"])
    assert j.retry_outcome(before, True, "yellow", ["e[0]p"], 3.2) == "red -> yellow after 3.2 s: the 1 retried copy(ies) are STARTED"
    assert "the cluster stays red for the other causes" in j.retry_outcome(before, True, "red", ["e[0]p"], 1.0)
    late = j.retry_outcome(before, False, "red, 1 of 2 retried copy(ies) not started (e[0]r)", keys, 20)
    assert late.startswith("was red; not recovered after 20 s: red, 1 of 2") and "run again" in late
    assert (j.retry_finding(DOMAIN, "verified", "x").status, j.retry_finding(DOMAIN, "applied", late).status) == (Status.OK, Status.WARN)
    failed = j.retry_finding(DOMAIN, "failed", "ConnectionError: refused")
    assert failed.status is Status.CRIT and failed.summary == "retry failed: ConnectionError: refused"
