"""Tests for sandbox/opensearch_double.py, driven only through opensearch-py over HTTP."""
import time

import pytest
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import NotFoundError, RequestError, TransportError

from sandbox.opensearch_double import OpenSearchDouble


@pytest.fixture
def double():
    with OpenSearchDouble() as d:
        d.add_domain("logs")
        d.add_domain("cases", cluster_name="123456789012:cases", nodes=3)
        yield d


def client(double, domain, **kw):
    return OpenSearch(double.url_for(domain), timeout=2, max_retries=0, **kw)


def test_binds_loopback_and_both_client_forms(double):
    assert double._server.server_address[0] == "127.0.0.1"
    assert double.url_for("logs") == f"http://127.0.0.1:{double.port}/logs"
    by_url = client(double, "logs")
    by_prefix = OpenSearch(hosts=[{"host": "127.0.0.1", "port": double.port, "url_prefix": "cases"}],
                           use_ssl=False, timeout=2, max_retries=0)
    info = by_url.info()
    assert info["version"]["number"] == "2.11.0"
    assert info["version"]["distribution"] == "opensearch"
    assert info["cluster_name"] == "123456789012:logs"
    assert by_prefix.info()["cluster_name"] == "123456789012:cases"
    assert by_url.ping() and by_prefix.ping()
    assert by_prefix.cluster.health()["number_of_nodes"] == 3


def test_unknown_domain_is_404(double):
    with pytest.raises(NotFoundError) as exc:
        client(double, "nope").cluster.health()
    assert exc.value.status_code == 404
    assert exc.value.info["status"] == 404
    assert exc.value.info["error"]["type"]


def test_red_explain_reroute_green(double):
    double.create_index("logs", "app-1", shards=2, replicas=1, docs=[{"n": i} for i in range(10)])
    double.create_index("logs", "app-2", shards=1, replicas=1)
    os = client(double, "logs")
    health = os.cluster.health()
    assert health["status"] == "green"
    assert health["active_shards"] == 6 and health["active_primary_shards"] == 3
    assert health["active_shards_percent_as_number"] == 100.0

    with pytest.raises(RequestError) as exc:  # nothing to explain on a green cluster
        os.cluster.allocation_explain()
    assert exc.value.error == "illegal_argument_exception"

    double.make_red("logs", "app-1", reason="NODE_LEFT")
    health = os.cluster.health()
    assert health["status"] == "red" and health["unassigned_shards"] == 4
    assert health["active_primary_shards"] == 1
    assert os.cluster.health(index="app-2")["status"] == "green"
    assert os.cluster.health(index="app-1")["status"] == "red"
    with pytest.raises(TransportError) as exc:
        os.cluster.health(wait_for_status="yellow")
    assert exc.value.status_code == 408 and exc.value.info["timed_out"] is True

    shards = os.cat.shards(index="app-1", format="json")
    assert {s["state"] for s in shards} == {"UNASSIGNED"}
    assert {s["unassigned.reason"] for s in shards} == {"NODE_LEFT"}
    text = os.cat.shards(v=True)
    assert text.splitlines()[0].split()[:4] == ["index", "shard", "prirep", "state"]
    assert "UNASSIGNED" in text and "NODE_LEFT" in text
    indices = {r["index"]: r for r in os.cat.indices(format="json")}
    assert indices["app-1"]["health"] == "red" and indices["app-2"]["health"] == "green"
    assert os.count(index="app-2")["count"] == 0
    alloc = os.cat.allocation(format="json")
    assert alloc[-1]["node"] == "UNASSIGNED" and alloc[-1]["shards"] == "4"

    explain = os.cluster.allocation_explain()
    assert (explain["index"], explain["shard"], explain["primary"]) == ("app-1", 0, True)
    assert explain["current_state"] == "unassigned" and explain["can_allocate"] == "no"
    assert explain["unassigned_info"]["reason"] == "NODE_LEFT"
    assert "allocate_explanation" in explain
    explain = os.cluster.allocation_explain(body={"index": "app-1", "shard": 1, "primary": False})
    assert (explain["shard"], explain["primary"]) == (1, False)

    with pytest.raises(RequestError):  # stale primary needs accept_data_loss
        os.cluster.reroute(body={"commands": [
            {"allocate_stale_primary": {"index": "app-1", "shard": 0, "node": "logs-node-1"}}]})
    with pytest.raises(RequestError):  # replica before its primary
        os.cluster.reroute(body={"commands": [
            {"allocate_replica": {"index": "app-1", "shard": 0, "node": "logs-node-2"}}]})
    assert os.cluster.reroute(retry_failed=True)["acknowledged"]  # NODE_LEFT is not a failed allocation
    assert os.cluster.health()["status"] == "red"

    commands = []
    for shard in (0, 1):
        commands.append({"allocate_stale_primary": {"index": "app-1", "shard": shard,
                                                    "node": "logs-node-1", "accept_data_loss": True}})
        commands.append({"allocate_replica": {"index": "app-1", "shard": shard, "node": "logs-node-2"}})
    assert os.cluster.reroute(body={"commands": commands})["acknowledged"] is True
    health = os.cluster.health()
    assert health["status"] == "green" and health["unassigned_shards"] == 0
    assert os.count(index="app-1")["count"] == 10

    double.make_yellow("logs", "app-2")
    assert os.cluster.health()["status"] == "yellow"
    double.heal("logs")
    assert os.cluster.health()["status"] == "green"

    double.make_red("logs", "app-2", reason="ALLOCATION_FAILED")
    assert "retry_failed=true" in os.cluster.allocation_explain()["allocate_explanation"]
    os.cluster.reroute(retry_failed=True)
    assert os.cluster.health()["status"] == "green"


def test_snapshots_create_list_restore(double):
    os = client(double, "cases")
    double.create_index("cases", "cases-2024", shards=2, replicas=1, docs={str(i): {"n": i} for i in range(25)})
    double.create_index("cases", "audit", docs=[{"a": 1}])
    assert os.snapshot.create_repository(repository="nightly", body={
        "type": "s3", "settings": {"bucket": "b", "region": "us-east-1"}})["acknowledged"]
    assert os.snapshot.get_repository(repository="nightly")["nightly"]["type"] == "s3"
    assert "nightly" in os.snapshot.get_repository()

    snap = os.snapshot.create(repository="nightly", snapshot="snap-1", body={"indices": "cases-*"},
                              wait_for_completion=True)["snapshot"]
    assert snap["state"] == "SUCCESS" and snap["indices"] == ["cases-2024"]
    assert snap["shards"] == {"total": 2, "failed": 0, "successful": 2}
    double.add_snapshot("cases", "nightly", "snap-0", ["cases-2024", "audit"],
                        start_time_ms=int(time.time() * 1000) - 86_400_000)
    double.add_snapshot("cases", "cs-automated", "auto-1", "audit", state="FAILED")

    listed = os.snapshot.get(repository="nightly", snapshot="_all")["snapshots"]
    assert [s["snapshot"] for s in listed] == ["snap-1", "snap-0"]
    assert listed[1]["start_time_in_millis"] < listed[0]["start_time_in_millis"]
    assert os.snapshot.get(repository="nightly", snapshot="snap-0")["snapshots"][0]["indices"] == [
        "cases-2024", "audit"]
    cat = os.cat.snapshots(repository="nightly", format="json")
    assert [c["id"] for c in cat] == ["snap-1", "snap-0"] and cat[0]["status"] == "SUCCESS"
    assert "snap-1" in os.cat.snapshots(repository="nightly", v=True)
    with pytest.raises(NotFoundError):
        os.snapshot.get(repository="nightly", snapshot="missing")

    # docs written after the snapshot must not appear in the restored copy
    os.index(index="cases-2024", id="late", body={"n": 99}, refresh=True)
    with pytest.raises(TransportError) as exc:  # same name, no rename -> OpenSearch refuses
        os.snapshot.restore(repository="nightly", snapshot="snap-1", body={"indices": "cases-2024"})
    assert exc.value.status_code == 500 and exc.value.error == "snapshot_restore_exception"
    assert "already exists" in str(exc.value.info)

    restored = os.snapshot.restore(repository="nightly", snapshot="snap-1", wait_for_completion=True, body={
        "indices": "cases-2024", "rename_pattern": "(.+)", "rename_replacement": "restored-$1",
        "index_settings": {"index.number_of_replicas": 0}})
    assert restored["snapshot"]["indices"] == ["restored-cases-2024"]
    assert os.count(index="restored-cases-2024")["count"] == 25
    assert os.count(index="cases-2024")["count"] == 26
    rows = {r["index"]: r for r in os.cat.indices(format="json")}
    assert rows["restored-cases-2024"]["rep"] == "0" and rows["restored-cases-2024"]["docs.count"] == "25"
    assert os.get(index="restored-cases-2024", id="7")["_source"] == {"n": 7}

    with pytest.raises(TransportError):
        os.snapshot.restore(repository="cs-automated", snapshot="auto-1", body={
            "rename_pattern": "(.+)", "rename_replacement": "r-$1"})
    assert os.snapshot.delete(repository="nightly", snapshot="snap-0")["acknowledged"]
    assert [s["snapshot"] for s in os.snapshot.get(repository="nightly", snapshot="_all")["snapshots"]] == ["snap-1"]


def test_snapshot_of_red_index(double):
    os = client(double, "logs")
    double.create_index("logs", "app", shards=2, docs={str(i): {"n": i} for i in range(20)})
    os.snapshot.create_repository(repository="r", body={"type": "fs", "settings": {"location": "/x"}})
    double.make_red("logs", "app")
    with pytest.raises(TransportError) as exc:
        os.snapshot.create(repository="r", snapshot="s1", wait_for_completion=True)
    assert exc.value.status_code == 500
    snap = os.snapshot.create(repository="r", snapshot="s2", body={"partial": True},
                              wait_for_completion=True)["snapshot"]
    assert snap["state"] == "PARTIAL" and snap["shards"]["failed"] == 2


def test_bulk_count_search_and_docs(double):
    os = client(double, "cases")
    assert os.indices.create(index="case-data", body={"settings": {"number_of_shards": 3,
                                                                   "number_of_replicas": 1}})["acknowledged"]
    assert os.indices.exists(index="case-data") and not os.indices.exists(index="nope")
    lines = []
    for i in range(30):
        lines += [{"index": {"_id": str(i)}}, {"case": i, "status": "open" if i % 3 else "closed",
                                               "owner": {"team": "ops"}}]
    res = os.bulk(index="case-data", body=lines, refresh=True)
    assert res["errors"] is False and len(res["items"]) == 30
    assert res["items"][0]["index"]["status"] == 201
    res = os.bulk(body=[{"create": {"_index": "case-data", "_id": "0"}}, {"case": 0},
                        {"delete": {"_index": "case-data", "_id": "29"}}])
    assert res["errors"] is True
    assert res["items"][0]["create"]["status"] == 409 and res["items"][1]["delete"]["result"] == "deleted"
    os.indices.refresh(index="case-data")

    assert os.count(index="case-data")["count"] == 29
    closed = os.search(index="case-data", body={"query": {"term": {"status": "closed"}}, "size": 100})
    assert closed["hits"]["total"]["value"] == 10 and len(closed["hits"]["hits"]) == 10
    assert all(h["_source"]["status"] == "closed" for h in closed["hits"]["hits"])
    assert os.search(index="case-data", body={"query": {"match_all": {}}, "size": 5})["hits"]["total"]["value"] == 29
    assert len(os.search(index="case-data", size=5)["hits"]["hits"]) == 5
    assert os.count(index="case-*", body={"query": {"match": {"owner.team": "OPS"}}})["count"] == 29
    assert os.count(index="case-data", body={"query": {"bool": {
        "filter": [{"term": {"status.keyword": "open"}}], "must_not": [{"term": {"case": 1}}]}}})["count"] == 18

    assert os.index(index="case-data", id="new", body={"case": 100, "status": "open"})["result"] == "created"
    assert os.index(index="case-data", body={"case": 101})["_id"]
    assert os.get(index="case-data", id="new")["_source"]["case"] == 100
    assert os.delete(index="case-data", id="new")["result"] == "deleted"
    with pytest.raises(NotFoundError):
        os.get(index="case-data", id="new")

    deleted = os.delete_by_query(index="case-data", body={"query": {"term": {"status": "closed"}}})
    assert deleted["deleted"] == 10
    assert os.count(index="case-data")["count"] == 20
    assert os.indices.delete(index="case-*")["acknowledged"]
    assert not os.indices.exists(index="case-data")
    with pytest.raises(NotFoundError):
        os.count(index="case-data")


def test_unsupported_endpoint_is_loud(double):
    os = client(double, "logs")
    with pytest.raises(RequestError) as exc:
        os.nodes.stats()
    assert exc.value.status_code == 400
    assert exc.value.error == "unsupported_in_test_double"
    assert "not implemented by the opsbook OpenSearch test double" in str(exc.value.info)
    double.create_index("logs", "x")
    with pytest.raises(RequestError) as exc:
        os.search(index="x", body={"query": {"range": {"n": {"gte": 1}}}})
    assert exc.value.error == "unsupported_in_test_double"


def test_unreachable_domain_raises_connection_error(double):
    double.set_unreachable("logs", True)
    os = client(double, "logs")
    with pytest.raises(OSConnectionError):
        os.cluster.health()
    assert client(double, "cases").cluster.health()["status"] == "green"  # other domains unaffected
    double.set_unreachable("logs", False)
    assert os.cluster.health()["status"] == "green"


def test_latency(double):
    os = client(double, "logs")
    double.set_latency(0.2)
    started = time.monotonic()
    os.cluster.health()
    assert time.monotonic() - started >= 0.2
    double.set_latency(0)


# --- disk, deciders, retry_failed, recovery, node stats (remediate-opensearch-red) -------------------


def _deciders(explain):
    return {d["node_name"]: sorted(x["decider"] for x in d["deciders"]) for d in explain["node_allocation_decisions"]}


def test_max_retry_decider_and_retry_failed_allocation(double):
    double.create_index("logs", "app", shards=1, replicas=1, docs=[{"n": i} for i in range(5)])
    double.make_red("logs", "app", reason="ALLOCATION_FAILED")
    os = client(double, "logs")
    explain = os.cluster.allocation_explain(body={"index": "app", "shard": 0, "primary": True})
    assert explain["unassigned_info"]["failed_allocation_attempts"] == 5
    assert "RecoveryFailedException" in explain["unassigned_info"]["details"]
    assert _deciders(explain) == {"logs-node-1": ["max_retry"], "logs-node-2": ["max_retry"]}
    no = explain["node_allocation_decisions"][0]["deciders"][0]
    assert no["decision"] == "NO" and "manually call [/_cluster/reroute?retry_failed=true]" in no["explanation"]
    replica = os.cluster.allocation_explain(body={"index": "app", "shard": 0, "primary": False})
    assert _deciders(replica)["logs-node-1"] == ["max_retry", "replica_after_primary_active"]
    assert os.cluster.reroute(retry_failed=True, metric="none")["acknowledged"] is True
    assert os.cluster.health()["status"] == "green" and os.count(index="app")["count"] == 5
    rows = {(r["prirep"], r["node"]) for r in os.cat.shards(index="app", format="json")}
    assert rows == {("p", "logs-node-1"), ("r", "logs-node-2")}


def test_disk_watermarks_block_allocation_and_retry(double):
    double.create_index("logs", "app", shards=1, replicas=1)
    os = client(double, "logs")
    double.set_disk("logs", used_pct=96)
    assert double.disk_usage("logs") == {"logs-node-1": 96.0, "logs-node-2": 96.0}
    alloc = {r["node"]: r for r in os.cat.allocation(format="json", bytes="b")}
    assert alloc["logs-node-1"]["disk.percent"] == "96" and alloc["logs-node-1"]["disk.total"] == str(100 * 1024 ** 3)
    fs = os.nodes.stats(metric="fs")
    assert fs["_nodes"] == {"total": 2, "successful": 2, "failed": 0}
    total = fs["nodes"]["logs-node-2"]["fs"]["total"]
    assert total["total_in_bytes"] == 100 * 1024 ** 3
    assert total["available_in_bytes"] == int(alloc["logs-node-2"]["disk.avail"]) == total["total_in_bytes"] - int(alloc["logs-node-2"]["disk.used"])
    assert list(os.nodes.stats(node_id="logs-node-1", metric="fs")["nodes"]) == ["logs-node-1"]
    with pytest.raises(RequestError) as exc:
        os.nodes.stats(metric="jvm")
    assert exc.value.error == "unsupported_in_test_double"

    double.make_red("logs", "app", reason="ALLOCATION_FAILED", failed_attempts=1)
    explain = os.cluster.allocation_explain()
    assert explain["primary"] is True and explain["unassigned_info"]["failed_allocation_attempts"] == 1
    assert _deciders(explain) == {"logs-node-1": ["disk_threshold"], "logs-node-2": ["disk_threshold"]}
    assert "high watermark cluster setting [cluster.routing.allocation.disk.watermark.high=90%]" in \
        explain["node_allocation_decisions"][0]["deciders"][0]["explanation"]
    os.cluster.reroute(retry_failed=True)
    assert os.cluster.health()["status"] == "red"  # a retry cannot beat a full disk

    double.set_disk("logs", used_pct=87)  # between low and high: primaries may go, replicas may not
    health = os.cluster.health()  # the allocator runs again: failed attempts are under the limit
    assert health["status"] == "yellow" and health["unassigned_shards"] == 1
    replica = os.cluster.allocation_explain()
    assert replica["primary"] is False and "low watermark" in str(replica["node_allocation_decisions"])
    double.set_disk("logs", used_pct=20)
    assert os.cluster.health()["status"] == "green"


def test_recovery_time_and_single_node(double):
    double.create_index("logs", "app", shards=1, replicas=1)
    double.set_recovery_time("logs", 0.3)
    double.make_red("logs", "app", reason="ALLOCATION_FAILED")
    os = client(double, "logs")
    os.cluster.reroute(retry_failed=True)
    health = os.cluster.health()
    assert health["status"] == "red" and health["initializing_shards"] == 1 and health["unassigned_shards"] == 1
    assert {r["state"] for r in os.cat.shards(format="json")} == {"INITIALIZING", "UNASSIGNED"}
    assert os.cluster.allocation_explain(body={"index": "app", "shard": 0, "primary": True})["current_state"] == "initializing"
    time.sleep(0.35)
    assert os.cluster.health()["status"] == "yellow"  # the primary started; the replica now initializes
    time.sleep(0.35)
    assert os.cluster.health()["status"] == "green"

    double.set_nodes("logs", 1)
    health = os.cluster.health()
    assert (health["status"], health["number_of_data_nodes"], health["unassigned_shards"]) == ("yellow", 1, 1)
    explain = os.cluster.allocation_explain()
    assert explain["unassigned_info"]["reason"] == "INDEX_CREATED"
    assert _deciders(explain) == {"logs-node-1": ["same_shard"]}
    assert [r["node"] for r in os.cat.allocation(format="json")] == ["logs-node-1", "UNASSIGNED"]


# --- aliases, close/open, recovery, mappings, restore over a closed index (restore-index) ---------------------------


def test_aliases_switch_atomically_and_resolve_for_search_count_and_writes(double):
    os = client(double, "logs")
    double.create_index("logs", "profiles-v1", docs=[{"n": i} for i in range(3)], aliases=["profiles"])
    double.create_index("logs", "profiles-v2", docs=[{"n": i} for i in range(5)])
    assert os.indices.get_alias(index="profiles-v1") == {"profiles-v1": {"aliases": {"profiles": {}}}}
    assert os.indices.get_alias(name="profiles") == {"profiles-v1": {"aliases": {"profiles": {}}}}
    assert os.indices.exists_alias(name="profiles") and not os.indices.exists_alias(name="nope")
    assert os.count(index="profiles")["count"] == 3
    assert [r["index"] for r in os.cat.indices(format="json")] == ["profiles-v1", "profiles-v2"]  # each index once
    assert os.count(index="prof*")["count"] == 8
    assert os.search(index="profiles")["hits"]["hits"][0]["_index"] == "profiles-v1"
    assert os.index(index="profiles", id="w", body={"n": 9}, refresh=True)["_index"] == "profiles-v1"  # one index: writable
    assert os.get(index="profiles", id="w")["_source"] == {"n": 9}
    assert os.indices.exists(index="profiles")
    with pytest.raises(NotFoundError) as exc:
        os.indices.get_alias(name="nope")
    assert exc.value.status_code == 404

    # one action fails -> none is applied
    with pytest.raises(NotFoundError) as exc:
        os.indices.update_aliases(body={"actions": [
            {"remove": {"index": "profiles-v1", "alias": "profiles"}}, {"add": {"index": "profiles-v2", "alias": "profiles"}},
            {"remove": {"index": "profiles-v2", "alias": "missing"}}]})
    assert exc.value.error == "aliases_not_found_exception"
    assert double.aliases("logs") == {"profiles": ["profiles-v1"]}
    with pytest.raises(RequestError) as exc:  # an alias may not be named as an index
        os.indices.update_aliases(body={"actions": [{"add": {"index": "profiles-v2", "alias": "profiles-v1"}}]})
    assert exc.value.error == "invalid_alias_name_exception"
    with pytest.raises(RequestError) as exc:  # nor an index as an alias
        os.indices.create(index="profiles")
    assert exc.value.error == "invalid_index_name_exception"

    assert os.indices.update_aliases(body={"actions": [
        {"remove": {"index": "profiles-v1", "alias": "profiles"}}, {"add": {"index": "profiles-v2", "alias": "profiles"}}]})[
        "acknowledged"]
    assert double.aliases("logs") == {"profiles": ["profiles-v2"]} and os.count(index="profiles")["count"] == 5
    assert os.indices.get_alias()["profiles-v1"] == {"aliases": {}}
    assert os.transport.perform_request("GET", "/_aliases")["profiles-v2"] == {"aliases": {"profiles": {}}}

    os.indices.put_alias(index="profiles-v1", name="profiles")  # now on two indices: reads both, writes refused
    assert os.count(index="profiles")["count"] == 9
    with pytest.raises(RequestError) as exc:
        os.index(index="profiles", id="x", body={"n": 1})
    assert "no write index is defined for alias [profiles]" in str(exc.value.info)
    with pytest.raises(RequestError) as exc:  # deleting goes by concrete names only
        os.indices.delete(index="profiles")
    assert "matches an alias" in str(exc.value.info)
    os.indices.delete_alias(index="profiles-v1", name="profiles")
    os.indices.delete(index="profiles-v2")  # an index takes its aliases with it
    assert double.aliases("logs") == {}


def test_closed_index_refuses_reads_and_writes_until_opened(double):
    os = client(double, "logs")
    double.create_index("logs", "app", docs=[{"n": i} for i in range(4)], mappings={"properties": {"n": {"type": "integer"}}})
    double.create_index("logs", "app-2", docs=[{"n": 1}])
    assert os.indices.close(index="app")["indices"] == {"app": {"closed": True}}
    assert double.index_state("logs", "app") == "close"
    for call in (lambda: os.count(index="app"), lambda: os.search(index="app"), lambda: os.get(index="app", id="1"),
                 lambda: os.index(index="app", id="9", body={"n": 9}), lambda: os.indices.stats(index="app")):
        with pytest.raises(RequestError) as exc:
            call()
        assert exc.value.error == "index_closed_exception"
    assert os.count(index="app*")["count"] == 1  # a wildcard skips the closed index
    assert {r["index"]: r["status"] for r in os.cat.indices(format="json")} == {"app": "close", "app-2": "open"}
    assert os.indices.get(index="app")["app"]["settings"]["index"]["verified_before_close"] == "true"
    assert os.indices.get_mapping(index="app") == {"app": {"mappings": {"properties": {"n": {"type": "integer"}}}}}
    assert os.indices.open(index="app")["acknowledged"]
    assert os.count(index="app")["count"] == 4
    stats = os.indices.stats(index="app", metric="docs")
    assert stats["indices"]["app"]["primaries"]["docs"]["count"] == 4 and stats["indices"]["app"]["total"]["docs"]["count"] == 8


def test_restore_keeps_mappings_aliases_and_reports_recovery_progress(double):
    os = client(double, "logs")
    mappings = {"properties": {"name": {"type": "keyword"}}}
    double.create_index("logs", "profiles-v1", shards=2, docs={str(i): {"name": f"p{i}"} for i in range(6)},
                        mappings=mappings, aliases=["profiles"])
    double.add_snapshot("logs", "backup_repo", "snap-1", "profiles-v1", metadata={"doc_counts": {"profiles-v1": 6}})
    info = os.snapshot.get(repository="backup_repo", snapshot="snap-1")["snapshots"][0]
    assert info["metadata"] == {"doc_counts": {"profiles-v1": 6}}
    os.indices.delete(index="profiles-v1")
    assert double.aliases("logs") == {}

    double.set_recovery_time("logs", 30)  # copies restored now stay INITIALIZING: the recovery is in progress
    os.snapshot.restore(repository="backup_repo", snapshot="snap-1", body={
        "indices": "profiles-v1", "rename_pattern": "^profiles-v1$", "rename_replacement": "profiles-v1-restored",
        "include_aliases": False, "include_global_state": False})
    assert double.aliases("logs") == {}  # include_aliases=false: the snapshot's alias did not come back
    rec = os.indices.recovery(index="profiles-v1-restored")["profiles-v1-restored"]["shards"]
    primaries = [r for r in rec if r["primary"]]
    assert len(rec) == 4 and {r["stage"] for r in rec} == {"INDEX"} and {r["type"] for r in primaries} == {"SNAPSHOT"}
    assert primaries[0]["source"]["repository"] == "backup_repo" and primaries[0]["source"]["snapshot"] == "snap-1"
    assert primaries[0]["source"]["index"] == "profiles-v1"
    assert all(float(r["index"]["size"]["percent"].rstrip("%")) < 100 for r in rec)
    with pytest.raises(TransportError) as exc:  # nothing searchable while the primaries recover
        os.count(index="profiles-v1-restored")
    assert exc.value.status_code == 503
    assert os.cluster.health(index="profiles-v1-restored")["initializing_shards"] == 4
    assert os.indices.recovery(index="profiles-v1-restored", active_only=True)["profiles-v1-restored"]["shards"]
    double.set_recovery_time("logs", 0)
    double.heal("logs")  # copies go back to STARTED on their nodes (the recovery is over)
    rec = os.indices.recovery(index="profiles-v1-restored")["profiles-v1-restored"]["shards"]
    assert {r["stage"] for r in rec} == {"DONE"}
    assert os.indices.recovery(index="profiles-v1-restored", active_only=True) == {}
    assert os.count(index="profiles-v1-restored")["count"] == 6
    assert os.indices.get_mapping(index="profiles-v1-restored")["profiles-v1-restored"]["mappings"] == mappings

    # the default include_aliases=true brings the snapshot's alias back
    os.snapshot.restore(repository="backup_repo", snapshot="snap-1", wait_for_completion=True, body={"indices": "profiles-v1"})
    assert double.aliases("logs") == {"profiles": ["profiles-v1"]}
    with pytest.raises(TransportError) as exc:  # an alias of that name now exists: no index may take it
        os.snapshot.restore(repository="backup_repo", snapshot="snap-1", body={
            "indices": "profiles-v1", "rename_pattern": "(.+)", "rename_replacement": "profiles"})
    assert "conflict with an alias" in str(exc.value.info)


def test_restore_over_a_closed_index_only(double):
    os = client(double, "logs")
    double.create_index("logs", "app", docs=[{"n": i} for i in range(3)], aliases=["live"])
    double.add_snapshot("logs", "r", "s1", "app")
    os.index(index="app", id="late", body={"n": 99}, refresh=True)
    uuid_before = os.indices.get(index="app")["app"]["settings"]["index"]["uuid"]
    with pytest.raises(TransportError) as exc:  # open: refused, as OpenSearch does
        os.snapshot.restore(repository="r", snapshot="s1", body={"indices": "app", "include_aliases": False})
    assert exc.value.status_code == 500 and "an open index with same name already exists" in str(exc.value.info)
    os.indices.close(index="app")
    os.snapshot.restore(repository="r", snapshot="s1", wait_for_completion=True, body={"indices": "app", "include_aliases": False})
    assert double.index_state("logs", "app") == "open" and os.count(index="app")["count"] == 3
    assert os.indices.get(index="app")["app"]["settings"]["index"]["uuid"] == uuid_before
    assert double.aliases("logs") == {"live": ["app"]}  # the index's own aliases stay
    assert os.indices.recovery(index="app")["app"]["shards"][0]["source"]["snapshot"] == "s1"
    double.create_index("logs", "wide", shards=2)
    double.add_snapshot("logs", "r", "s2", "wide")
    os.indices.delete(index="wide")
    double.create_index("logs", "wide", shards=1)
    os.indices.close(index="wide")
    with pytest.raises(TransportError) as exc:
        os.snapshot.restore(repository="r", snapshot="s2", body={"indices": "wide"})
    assert "with [1] shards from a snapshot of index [wide] with [2] shards" in str(exc.value.info)
