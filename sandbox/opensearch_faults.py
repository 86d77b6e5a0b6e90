"""OpenSearch red/yellow scenarios for remediate-opensearch-red, applied to a seeded system in the sandbox.

Each returns what it did (the domain, the index, the numbers a test asserts
on). A scenario that needs a resource the inventory lacks raises ValueError
saying so. They act on the OpenSearch test double (sandbox/opensearch_double.py)
and keep moto's management view of the domain (DescribeDomain: InstanceCount,
EBSOptions) in line with the double's nodes and disks, as a real domain would be.

- ``failed-allocation``: every copy of an index failed allocation 5 times
  (max_retry); the disks are fine, so ``_cluster/reroute?retry_failed=true``
  brings the cluster back (red -> green).
- ``disk-full``: every node above the flood stage (96 %) and the index's copies
  failed allocation; the disk_threshold decider refuses every node, so a retry
  cannot help: more storage is the fix, never applied by the runbook.
- ``single-node-yellow``: a one-node domain whose indices have a replica:
  yellow by design, to be explained and left alone.
- ``primary-lost``: a snapshot in the inventory's repository, then every copy
  of the index lost (NODE_LEFT): no node holds a copy; restore from the snapshot.
- ``domain-processing``: DescribeDomain says a configuration change is in progress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opsbook.inventory import OpenSearchDomain, System
from sandbox.server import Sandbox, sandbox_client

VOLUME_GIB = 100  # the double's default disk per node


def _domain(system: System, scenario: str, domain: str | None) -> OpenSearchDomain:
    if not system.opensearch_domains:
        raise ValueError(f"scenario {scenario!r} needs an OpenSearch domain in the inventory of {system.name}")
    if domain is None:
        return system.opensearch_domains[0]
    for d in system.opensearch_domains:
        if d.name == domain:
            return d
    raise ValueError(f"scenario {scenario!r}: {domain!r} is not an OpenSearch domain of {system.name}")


def _index(d: OpenSearchDomain, index: str | None) -> str:
    return index or (d.indices or ["default"])[0]


def align_domain(sb: Sandbox, system: System, d: OpenSearchDomain, nodes: int, volume_gib: int = VOLUME_GIB,
                 instance_type: str = "r6g.large.search") -> None:
    """Make DescribeDomain show ``nodes`` data nodes of ``instance_type`` with gp3 EBS volumes of ``volume_gib``."""
    sandbox_client(sb, "opensearch", system.region).update_domain_config(
        DomainName=d.name,
        ClusterConfig={"InstanceType": instance_type, "InstanceCount": nodes, "DedicatedMasterEnabled": False,
                       "ZoneAwarenessEnabled": False},
        EBSOptions={"EBSEnabled": True, "VolumeType": "gp3", "VolumeSize": volume_gib})


def failed_allocation(sb: Sandbox, system: System, domain: str | None = None, index: str | None = None,
                      recovery_s: float = 0.0) -> dict[str, Any]:
    d = _domain(system, "failed-allocation", domain)
    name = _index(d, index)
    align_domain(sb, system, d, nodes=2)
    sb.opensearch.set_recovery_time(d.name, recovery_s)
    sb.opensearch.make_red(d.name, name, reason="ALLOCATION_FAILED")
    return {"resource": d.name, "index": name, "status": sb.opensearch.cluster_status(d.name)}


def disk_full(sb: Sandbox, system: System, domain: str | None = None, index: str | None = None,
              used_pct: float = 96.0) -> dict[str, Any]:
    d = _domain(system, "disk-full", domain)
    name = _index(d, index)
    align_domain(sb, system, d, nodes=2)
    sb.opensearch.set_disk(d.name, used_pct=used_pct)
    sb.opensearch.make_red(d.name, name, reason="ALLOCATION_FAILED",
                           details="failed shard on node: shard failure, reason [lucene commit failed], failure "
                                   "IOException[No space left on device]")
    return {"resource": d.name, "index": name, "used_pct": used_pct, "status": sb.opensearch.cluster_status(d.name)}


def single_node_yellow(sb: Sandbox, system: System, domain: str | None = None) -> dict[str, Any]:
    d = _domain(system, "single-node-yellow", domain)
    align_domain(sb, system, d, nodes=1, instance_type="t3.small.search")
    sb.opensearch.set_nodes(d.name, 1)
    return {"resource": d.name, "status": sb.opensearch.cluster_status(d.name)}


def primary_lost(sb: Sandbox, system: System, domain: str | None = None, index: str | None = None,
                 snapshot: str = "snapshot_sandbox") -> dict[str, Any]:
    d = _domain(system, "primary-lost", domain)
    name = _index(d, index)
    align_domain(sb, system, d, nodes=2)
    if d.snapshot_repository:
        sb.opensearch.add_snapshot(d.name, d.snapshot_repository, snapshot, d.indices or [name])
    sb.opensearch.make_red(d.name, name, reason="NODE_LEFT")
    return {"resource": d.name, "index": name, "snapshot": snapshot if d.snapshot_repository else None,
            "status": sb.opensearch.cluster_status(d.name)}


def domain_processing(sb: Sandbox, system: System, domain: str | None = None, processing: bool = True) -> dict[str, Any]:
    d = _domain(system, "domain-processing", domain)
    sb.backend("opensearch", system.region).domains[d.name].processing = processing
    return {"resource": d.name, "processing": processing}


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "failed-allocation": failed_allocation,
    "disk-full": disk_full,
    "single-node-yellow": single_node_yellow,
    "primary-lost": primary_lost,
    "domain-processing": domain_processing,
}


def apply_scenario(sb: Sandbox, system: System, name: str, **params: Any) -> dict[str, Any]:
    if name not in SCENARIOS:
        raise ValueError(f"unknown OpenSearch scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    return {"scenario": name, **SCENARIOS[name](sb, system, **params)}
