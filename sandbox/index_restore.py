"""restore-index's sandbox scenarios: an index lost behind its alias, or damaged where it is read by its name, each with a
snapshot holding it (000's backup_repo).

The alias is put on the index, a snapshot of it taken (its document count in the snapshot's metadata, as opsbook's
own pre-restore snapshots carry it), a few documents written after the snapshot, then the index deleted: its alias goes
with it, so the runbook is told the alias (``alias=``) as the on-call engineer would be.
"""

from __future__ import annotations

from typing import Any

from opsbook.inventory import System
from sandbox.server import Sandbox
from tasks.opensearch import os_client

DEFAULT_REPOSITORY = "backup_repo"  # 000's, when the inventory names none


def _domain_index(system: System, index: str | None, fault: str) -> tuple[Any, str, str]:
    if not system.opensearch_domains or not (index or system.opensearch_domains[0].indices):
        raise ValueError(f"{fault} needs an OpenSearch domain with an index in {system.name}'s inventory")
    d = system.opensearch_domains[0]
    return d, index or d.indices[0], d.snapshot_repository or DEFAULT_REPOSITORY


def index_deleted(sb: Sandbox, system: System, index: str | None = None, alias: str | None = None, snapshot: str = "nightly",
                  after: int = 2) -> dict[str, Any]:
    """``index`` (the inventory's first index of its first OpenSearch domain) aliased ``alias`` (``<index>-live``),
    snapshotted as ``snapshot`` with its document count, ``after`` documents written after the snapshot, then deleted."""
    d, index, repo = _domain_index(system, index, "index-deleted")
    alias = alias or f"{index}-live"
    c = os_client(sb.opensearch.url_for(d.name), system.region)
    c.indices.put_alias(index=index, name=alias)
    c.indices.refresh(index=index)
    docs = int(c.count(index=index)["count"])
    sb.opensearch.add_snapshot(d.name, repo, snapshot, [index], metadata={"doc_counts": {index: docs}})
    for i in range(after):  # written after the snapshot: not in the restore (the plan says so)
        c.index(index=index, id=f"after-snapshot-{i}", body={"n": i})
    c.indices.delete(index=index)
    return {"resource": d.name, "index": index, "alias": alias, "repository": repo, "snapshot": snapshot, "documents": docs}


def index_damaged(sb: Sandbox, system: System, index: str | None = None, snapshot: str = "nightly", deleted: int = 2) -> dict[str, Any]:
    """``index`` (the inventory's first index of its first OpenSearch domain), read by its name (no alias), snapshotted as
    ``snapshot`` with its document count, then ``deleted`` of its documents deleted: restore-index restores it in place."""
    d, index, repo = _domain_index(system, index, "index-damaged")
    c = os_client(sb.opensearch.url_for(d.name), system.region)
    c.indices.refresh(index=index)
    docs = int(c.count(index=index)["count"])
    sb.opensearch.add_snapshot(d.name, repo, snapshot, [index], metadata={"doc_counts": {index: docs}})
    ids = [h["_id"] for h in c.search(index=index, body={"query": {"match_all": {}}, "size": deleted})["hits"]["hits"]]
    for i in ids:
        c.delete(index=index, id=i)
    c.indices.refresh(index=index)
    return {"resource": d.name, "index": index, "repository": repo, "snapshot": snapshot, "documents": docs, "deleted": ids}


SCENARIOS = {"index-deleted": index_deleted, "index-damaged": index_damaged}
