"""OpenSearch shard allocation: why a cluster is red or yellow, and what may be done about it.

Collection (tasks that call AWS / the cluster's HTTP API through
``tasks.opensearch.os_client``, counted as ``es:ESHttp<Verb>``) is apart from
judgement (pure functions over the models below, unit-tested without a cluster):

- ``read_domain_status``: DescribeDomain (Processing, ClusterConfig, EBSOptions, endpoint);
- ``read_cluster``: ``_cluster/health``; when shards are unassigned ``_cat/shards``
  and ``_cluster/allocation/explain`` for each distinct unassigned (index, shard,
  primary), at most ``max_explain`` of them; ``_cat/allocation`` (disk per node);
  ``_cat/indices`` when the cluster is not green;
- ``read_restore_points``: the newest snapshot holding each lost index;
- ``classify`` / ``judge_domain``: a cause per unassigned shard and the findings;
- ``storage_advice``: the EBS size / node count that brings the fullest node
  back under the target, as a command and a terraform change (never applied);
- ``retry_failed`` / ``wait_recovered``: the one change the runbook makes
  (``POST _cluster/reroute?retry_failed=true``) and its bounded verification.

Disk thresholds are OpenSearch's defaults (low 85 %: no replica goes to the
node; high 90 %: no shard at all; flood stage 95 %: indices become read-only)
and the inventory's ``remediation.opensearch_disk_warn_pct``.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from enum import Enum
from typing import Any

from botocore.exceptions import ClientError
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.components import judge_cluster
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import OpenSearchDomain, System
from tasks.opensearch import cluster_unreadable, endpoint_for, os_client

WATERMARK_LOW, WATERMARK_HIGH, WATERMARK_FLOOD = 85.0, 90.0, 95.0
MAX_EXPLAIN_DEFAULT = 10
GiB = 1024 ** 3
RETRY_KIND = "opensearch-retry-failed"
_RANK = {"green": 0, "yellow": 1, "red": 2}


class Cause(str, Enum):
    RETRY = "failed-max-retries"  # only max_retry keeps it off some node: a retry places it
    DISK = "disk-watermark"  # disk_threshold refuses the nodes: more storage first
    LOST = "no-valid-copy"  # a primary no node holds a copy of: restore from a snapshot
    TOO_FEW_NODES = "too-few-nodes"  # replica with no other node to go to (yellow by design)
    FOLLOWS_PRIMARY = "waits-for-primary"  # replica of an unassigned primary
    DELAYED = "delayed"  # the cluster waits for a departed node (index.unassigned.node_left.delayed_timeout)
    PENDING = "allocating"  # a node may take it: the cluster is allocating it
    OTHER = "other"
    UNKNOWN = "unknown"


# --- models --------------------------------------------------------------------------


class DomainInfo(BaseModel):
    domain: str
    exists: bool = True
    processing: bool = False
    engine: str | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    ebs_enabled: bool | None = None
    volume_type: str | None = None
    volume_size_gib: int | None = None
    endpoint: str | None = None
    error: str | None = None


class Decision(BaseModel):
    node: str
    decider: str
    explanation: str = ""


class ShardExplain(BaseModel):
    index: str
    shard: int
    primary: bool
    copies: int = 1
    reason: str | None = None
    failed_attempts: int = 0
    details: str | None = None
    can_allocate: str | None = None
    explanation: str | None = None
    last_allocation_status: str | None = None
    nodes: list[str] = Field(default_factory=list, description="nodes the explanation covers")
    no: list[Decision] = Field(default_factory=list, description="the NO decisions, per node")
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.index}[{self.shard}]{'p' if self.primary else 'r'}"


class NodeDisk(BaseModel):
    node: str
    shards: int
    used_bytes: int
    total_bytes: int

    @property
    def pct(self) -> float:
        return round(self.used_bytes * 100.0 / self.total_bytes, 1) if self.total_bytes else 0.0


class IndexInfo(BaseModel):
    index: str
    health: str | None = None
    primaries: int | None = None
    replicas: int | None = None
    store_bytes: int | None = None


class ClusterState(BaseModel):
    domain: str
    status: str | None = None
    nodes: int | None = None
    data_nodes: int | None = None
    active_shards: int | None = None
    unassigned: int = 0
    initializing: int = 0
    shards: list[ShardExplain] = Field(default_factory=list)
    unexplained: list[str] = Field(default_factory=list, description="unassigned shards beyond max_explain")
    failed_copies: list[str] = Field(default_factory=list, description="UNASSIGNED copies whose reason is ALLOCATION_FAILED")
    disks: list[NodeDisk] = Field(default_factory=list)
    disk_error: str | None = None
    indices: list[IndexInfo] = Field(default_factory=list)
    error: str | None = None
    error_kind: str | None = Field(None, description="unreachable | http | other")


class RestorePoint(BaseModel):
    index: str
    repository: str | None = None
    snapshot: str | None = None
    state: str | None = None
    at_ms: int | None = None
    error: str | None = None


class Diagnosis(BaseModel):
    shard: ShardExplain
    cause: Cause
    why: str


# --- reading ---------------------------------------------------------------------------


def _os_error(exc: BaseException) -> tuple[str, str]:
    """(kind, what to say) for an exception from opensearch-py."""
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import ConnectionTimeout, TransportError

    if isinstance(exc, (OSConnectionError, ConnectionTimeout)):
        return "unreachable", (f"cluster endpoint unreachable ({type(exc).__name__}); check the endpoint, VPC access "
                               "or the domain's access policy")
    if isinstance(exc, TransportError):
        return "http", (f"cluster API answered {exc.status_code}: {exc.error}; check the es:ESHttp* permissions and "
                        "the domain's access policy")
    return "other", aws.describe_error(exc)


def domain_info(d: OpenSearchDomain, status: dict[str, Any] | None) -> DomainInfo:
    if status is None:
        return DomainInfo(domain=d.name, exists=False, endpoint=endpoint_for(d, None))
    cc, ebs = status.get("ClusterConfig") or {}, status.get("EBSOptions") or {}
    return DomainInfo(domain=d.name, exists=not status.get("Deleted", False),
                      processing=bool(status.get("Processing") or status.get("UpgradeProcessing")),
                      engine=status.get("EngineVersion"), instance_type=cc.get("InstanceType"),
                      instance_count=cc.get("InstanceCount"), ebs_enabled=ebs.get("EBSEnabled"),
                      volume_type=ebs.get("VolumeType"), volume_size_gib=ebs.get("VolumeSize"),
                      endpoint=endpoint_for(d, status))


@aws_task(iam=["es:DescribeDomain"], name="read-domain-status", cache_policy=NO_CACHE)
def read_domain_status(system: System, d: OpenSearchDomain) -> DomainInfo:
    """DescribeDomain: is a configuration change running, how many nodes of what, how much EBS storage."""
    try:
        status = aws.client("opensearch", system.region).describe_domain(DomainName=d.name)["DomainStatus"]
    except ClientError as exc:
        if aws.error_code(exc) == "ResourceNotFoundException":
            return domain_info(d, None)
        raise
    return domain_info(d, status)


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def parse_explain(body: dict[str, Any], copies: int = 1) -> ShardExplain:
    info = body.get("unassigned_info") or {}
    out = ShardExplain(index=body.get("index", "?"), shard=int(body.get("shard", -1)), primary=bool(body.get("primary")),
                       copies=copies, reason=info.get("reason"), failed_attempts=int(info.get("failed_allocation_attempts") or 0),
                       details=info.get("details"), can_allocate=body.get("can_allocate"),
                       explanation=body.get("allocate_explanation") or body.get("explanation"),
                       last_allocation_status=info.get("last_allocation_status"))
    for n in body.get("node_allocation_decisions") or []:
        name = n.get("node_name") or n.get("node_id") or "?"
        out.nodes.append(name)
        out.no += [Decision(node=name, decider=dd.get("decider", "?"), explanation=dd.get("explanation", ""))
                   for dd in n.get("deciders") or [] if str(dd.get("decision", "")).upper() == "NO"]
    return out


def read_cluster_state(system: System, d: OpenSearchDomain, url: str, max_explain: int) -> ClusterState:
    """The cluster's own view: health, unassigned shards and why, disk per node, indices when not green."""
    c = os_client(url, system.region)
    st = ClusterState(domain=d.name)
    try:
        h = c.cluster.health()
    except Exception as exc:
        st.error_kind, st.error = _os_error(exc)
        return st
    st.status, st.nodes, st.data_nodes = h.get("status"), h.get("number_of_nodes"), h.get("number_of_data_nodes")
    st.active_shards, st.unassigned = h.get("active_shards"), int(h.get("unassigned_shards") or 0)
    st.initializing = int(h.get("initializing_shards") or 0)
    try:
        rows = c.cat.allocation(format="json", bytes="b", h="shards,disk.used,disk.total,node")
        st.disks = [NodeDisk(node=r["node"], shards=_int(r.get("shards")) or 0, used_bytes=_int(r.get("disk.used")) or 0,
                             total_bytes=_int(r.get("disk.total")) or 0)
                    for r in rows if r.get("node") != "UNASSIGNED" and _int(r.get("disk.total"))]
    except Exception as exc:
        st.disk_error = _os_error(exc)[1]
    if st.status == "green" and not st.unassigned:
        return st
    try:
        st.indices = [IndexInfo(index=r["index"], health=r.get("health"), primaries=_int(r.get("pri")), replicas=_int(r.get("rep")),
                                store_bytes=_int(r.get("store.size")))
                      for r in c.cat.indices(format="json", bytes="b", h="health,index,pri,rep,store.size")]
        shards = c.cat.shards(format="json", h="index,shard,prirep,state,unassigned.reason")
    except Exception as exc:
        st.error_kind, st.error = _os_error(exc)
        return st
    down = [r for r in shards if r.get("state") == "UNASSIGNED"]
    st.failed_copies = sorted(f"{r['index']}[{r['shard']}]{r['prirep']}" for r in down if r.get("unassigned.reason") == "ALLOCATION_FAILED")
    distinct: dict[tuple[str, int, bool], int] = {}
    for r in down:  # primaries first: they decide the index's fate
        k = (r["index"], int(r["shard"]), r.get("prirep") == "p")
        distinct[k] = distinct.get(k, 0) + 1
    keys = sorted(distinct, key=lambda k: (not k[2], k[0], k[1]))
    chosen, rest = keys[:max_explain], keys[max_explain:]
    st.unexplained = [f"{i}[{s}]{'p' if p else 'r'}" for i, s, p in rest]

    def explain(k: tuple[str, int, bool]) -> dict[str, Any]:
        return c.cluster.allocation_explain(body={"index": k[0], "shard": k[1], "primary": k[2]})

    for k, body, err in aws.parallel(explain, chosen, max_workers=4):
        if err is not None:
            st.shards.append(ShardExplain(index=k[0], shard=k[1], primary=k[2], copies=distinct[k], error=_os_error(err)[1]))
        else:
            st.shards.append(parse_explain(body or {}, distinct[k]))
    return st


@aws_task(iam=["es:ESHttpGet", "es:ESHttpPost"], name="read-cluster-allocation", cache_policy=NO_CACHE)  # allocation explain is a POST
def read_cluster(system: System, d: OpenSearchDomain, info: DomainInfo, max_explain: int = MAX_EXPLAIN_DEFAULT) -> ClusterState:
    if not info.endpoint:
        return ClusterState(domain=d.name, error="no endpoint: the domain has none yet and the inventory gives no endpoint override",
                            error_kind="other")
    return read_cluster_state(system, d, info.endpoint, max_explain)


@aws_task(iam=["es:ESHttpGet"], name="read-restore-points", cache_policy=NO_CACHE)
def read_restore_points(system: System, d: OpenSearchDomain, url: str, indices: list[str]) -> list[RestorePoint]:
    """The newest SUCCESS (else PARTIAL) snapshot in the inventory's repository that holds each index."""
    if not d.snapshot_repository:
        return [RestorePoint(index=i) for i in indices]
    c = os_client(url, system.region)
    try:
        snaps = c.snapshot.get(repository=d.snapshot_repository, snapshot="_all").get("snapshots", [])
    except Exception as exc:
        return [RestorePoint(index=i, repository=d.snapshot_repository, error=_os_error(exc)[1]) for i in indices]
    out = []
    for i in indices:
        holding = [s for s in snaps if i in (s.get("indices") or []) and s.get("state") in ("SUCCESS", "PARTIAL")]
        best = max(holding, key=lambda s: (s.get("state") == "SUCCESS", s.get("start_time_in_millis") or 0), default=None)
        out.append(RestorePoint(index=i, repository=d.snapshot_repository, snapshot=best and best.get("snapshot"),
                                state=best and best.get("state"), at_ms=best and best.get("start_time_in_millis")))
    return out


# --- judging (pure) ----------------------------------------------------------------------------


def _nodes_blocked(s: ShardExplain) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {n: set() for n in s.nodes}
    for dd in s.no:
        out.setdefault(dd.node, set()).add(dd.decider)
    return out


def _first(s: ShardExplain, decider: str) -> str:
    return next((f"{dd.node}: {dd.explanation}" for dd in s.no if dd.decider == decider), "")


def classify(s: ShardExplain, data_nodes: int | None) -> Diagnosis:
    """Why this unassigned shard is unassigned, read from its allocation explanation."""
    if s.error:
        return Diagnosis(shard=s, cause=Cause.UNKNOWN, why=f"allocation explain failed: {s.error}")
    text = f"{s.explanation or ''} " + " ".join(dd.explanation for dd in s.no)
    if s.primary and "no_valid_shard_copy" in (s.can_allocate, s.last_allocation_status):
        return Diagnosis(shard=s, cause=Cause.LOST, why=f"no node holds a copy of the primary (last seen {s.reason}): {s.explanation}")
    blocked = _nodes_blocked(s)
    if not blocked:  # no per-node decisions in the answer: fall back on its explanation
        if "maximum number of retries" in text or "retry_failed" in text:
            return Diagnosis(shard=s, cause=Cause.RETRY, why=s.explanation or "failed allocation too many times")
        if "watermark" in text:
            return Diagnosis(shard=s, cause=Cause.DISK, why=s.explanation or "disk watermark")
    if s.can_allocate == "allocation_delayed":
        return Diagnosis(shard=s, cause=Cause.DELAYED, why=s.explanation or "allocation delayed")
    after_retry = {n: d - {"max_retry"} for n, d in blocked.items()}
    free_after_retry = sorted(n for n, d in after_retry.items() if not d and "max_retry" in blocked[n])
    if free_after_retry:
        return Diagnosis(shard=s, cause=Cause.RETRY, why=(
            f"failed allocation {s.failed_attempts or 'too many'} time(s) (max_retry); nothing else keeps it off "
            f"{', '.join(free_after_retry)}: {s.details or s.reason}"))
    if any("disk_threshold" in d for d in after_retry.values()):
        which = sorted(n for n, d in after_retry.items() if "disk_threshold" in d)
        extra = " (and it failed allocation too many times: retry after freeing disk)" if any("max_retry" in d for d in blocked.values()) else ""
        return Diagnosis(shard=s, cause=Cause.DISK, why=f"disk watermark on {len(which)}/{len(after_retry)} node(s){extra}: {_first(s, 'disk_threshold')}")
    if not s.primary and after_retry and all(d and d <= {"same_shard"} for d in after_retry.values()):
        return Diagnosis(shard=s, cause=Cause.TOO_FEW_NODES, why=(
            f"{data_nodes if data_nodes is not None else len(after_retry)} data node(s) and each already holds a copy of "
            "this shard; a replica must sit on another node than its primary"))
    if not s.primary and any("replica_after_primary_active" in d for d in after_retry.values()):
        return Diagnosis(shard=s, cause=Cause.FOLLOWS_PRIMARY, why="its primary is not active: the replica follows the primary")
    if s.can_allocate in ("yes", "throttled") or (blocked and any(not d for d in blocked.values())):
        return Diagnosis(shard=s, cause=Cause.PENDING, why=f"a node may take it ({s.can_allocate}): {s.explanation}")
    deciders = sorted({dd.decider for dd in s.no})
    return Diagnosis(shard=s, cause=Cause.OTHER, why=f"{s.explanation or s.can_allocate}; deciders saying NO: {', '.join(deciders) or 'none given'}"
                     + (f" ({s.no[0].node}: {s.no[0].explanation})" if s.no else ""))


def diagnose(cluster: ClusterState) -> list[Diagnosis]:
    return [classify(s, cluster.data_nodes) for s in cluster.shards]


def _gib(b: float) -> str:
    return f"{b / GiB:.1f} GiB"


def storage_advice(inv: System, info: DomainInfo | None, cluster: ClusterState) -> dict[str, Any] | None:
    """More storage for the fullest node (never applied): EBS size, node count, the biggest indices to consider deleting."""
    disks = [n for n in cluster.disks if n.total_bytes]
    if not disks:
        return None
    warn = inv.remediation.opensearch_disk_warn_pct
    target = max(50.0, warn - 15.0)  # ~AWS's sizing headroom (x1.45 over the data)
    fullest = max(disks, key=lambda n: n.pct)
    need_gib = int(math.ceil(fullest.used_bytes / (target / 100.0) / GiB / 10.0) * 10)
    current_gib = info.volume_size_gib if info else None
    out: dict[str, Any] = {"fullest_node": fullest.node, "fullest_pct": fullest.pct, "target_pct": target, "warn_pct": warn}
    lines = []
    if info and info.ebs_enabled:
        size = max(need_gib, (current_gib or 0) + 10)
        out.update(volume_size_gib=current_gib, proposed_volume_size_gib=size, volume_type=info.volume_type)
        vol_type = info.volume_type or "gp3"
        out["command"] = (f"aws opensearch update-domain-config --domain-name {cluster.domain} --region {inv.region} "
                          f"--ebs-options EBSEnabled=true,VolumeType={vol_type},VolumeSize={size}")
        out["terraform"] = f"ebs_options {{ ebs_enabled = true, volume_type = \"{vol_type}\", volume_size = {size} }}  # was {current_gib}"
        lines.append(f"EBS volume {current_gib} -> {size} GiB per node (puts {fullest.node} at "
                     f"{fullest.used_bytes * 100.0 / (size * GiB):.0f} %): `{out['command']}` or terraform `{out['terraform']}`")
    elif info and info.ebs_enabled is False:
        lines.append("the domain uses instance storage (EBSEnabled false): choose an instance type with more storage or add data nodes")
    per_node = sum(n.total_bytes for n in disks) / len(disks)
    used = sum(n.used_bytes for n in disks)
    count = info.instance_count if info and info.instance_count else len(disks)
    nodes = max(count + 1, int(math.ceil(used / (per_node * target / 100.0))))
    out.update(instance_count=count, proposed_instance_count=nodes)
    lines.append(f"or data nodes {count} -> {nodes} (ClusterConfig InstanceCount / terraform cluster_config.instance_count; "
                 "shards spread onto new nodes)")
    big = sorted((i for i in cluster.indices if i.store_bytes), key=lambda i: -(i.store_bytes or 0))[:3]
    if big:
        out["largest_indices"] = {i.index: i.store_bytes for i in big}
        lines.append("or delete indices no longer needed (largest: " + ", ".join(f"{i.index} {_gib(i.store_bytes or 0)}" for i in big)
                     + "; `DELETE /<index>` after checking)")
    if fullest.pct >= WATERMARK_FLOOD:
        lines.append("above the flood stage OpenSearch set index.blocks.read_only_allow_delete on the indices there; it lifts "
                     "the block by itself once usage is under the high watermark (else `PUT <index>/_settings "
                     "{\"index.blocks.read_only_allow_delete\": null}`)")
    out["recommendation"] = "; ".join(lines)
    return out


def restore_call(index: str, p: RestorePoint | None, repo: str | None) -> str:
    if p is None or not p.snapshot:
        where = repo or "<repository>"
        return (f"no snapshot holding {index} found in {where}; list them with `GET _snapshot/_all` and "
                f"`GET _snapshot/cs-automated-enc/_all` (AWS's hourly automated snapshots), then restore with "
                f"`POST _snapshot/<repository>/<snapshot>/_restore {{\"indices\": \"{index}\", \"include_global_state\": false, "
                f"\"rename_pattern\": \"(.+)\", \"rename_replacement\": \"restored_$1\"}}`")
    return (f"`POST _snapshot/{p.repository}/{p.snapshot}/_restore {{\"indices\": \"{index}\", \"ignore_unavailable\": true, "
            f"\"include_global_state\": false, \"rename_pattern\": \"(.+)\", \"rename_replacement\": \"restored_$1\"}}` "
            f"(snapshot {p.state}), check `GET _cat/indices/restored_{index}`, then point readers at it or `DELETE /{index}` "
            f"and restore again without the rename; documents written after the snapshot are lost")


def _health_counts(cluster: ClusterState) -> str:
    return (f"{cluster.data_nodes} data node(s), {cluster.active_shards} active, {cluster.unassigned} unassigned, "
            f"{cluster.initializing} initializing")


def judge_domain(inv: System, d: OpenSearchDomain, info: DomainInfo | BaseException, cluster: ClusterState | BaseException | None,
                 restore: list[RestorePoint] | BaseException | None = None, named: bool = True) -> list[Finding]:
    """Every finding of one domain: management state, health, each unassigned shard, disks, what to do."""
    name = d.name
    out: list[Finding] = []
    if isinstance(info, BaseException):
        out.append(unknown("opensearch-domain", name, aws.describe_error(info)))
        info = DomainInfo(domain=name, endpoint=None, error=aws.describe_error(info))
    elif not info.exists:
        out.append(Finding(check="opensearch-domain", resource=name, status=Status.CRIT,
                           summary=("named in the inventory but does not exist (DescribeDomain: ResourceNotFound)" if named
                                    else "does not exist (DescribeDomain: ResourceNotFound)")))
        return out
    else:
        shape = f"{info.instance_count} x {info.instance_type}" + (
            f", EBS {info.volume_type} {info.volume_size_gib} GiB per node" if info.ebs_enabled else ", instance storage" if info.ebs_enabled is False else "")
        if info.processing:
            out.append(Finding(check="opensearch-domain", resource=name, status=Status.WARN, summary=(
                f"configuration change in progress (Processing): shards move during a blue/green change; nothing is retried "
                f"until it ends; {shape}")))
        else:
            out.append(Finding(check="opensearch-domain", resource=name, status=Status.OK, summary=f"domain ready ({info.engine}); {shape}"))
    if cluster is None:
        return out
    if isinstance(cluster, BaseException):
        out.append(judge_cluster(name, None, cluster_unreadable(cluster)))
        return out
    if cluster.error and cluster.status is None:
        out.append(unknown("opensearch-health", name, cluster.error))
        return out
    diags = diagnose(cluster)
    causes = {g.cause for g in diags}
    by_design = cluster.status == "yellow" and diags and causes == {Cause.TOO_FEW_NODES} and not cluster.unexplained
    counts = _health_counts(cluster)
    if cluster.status == "green":
        out.append(Finding(check="opensearch-health", resource=name, status=Status.OK, value=0, summary=f"cluster green; {counts}"))
    elif by_design:
        out.append(Finding(check="opensearch-health", resource=name, status=Status.OK, value=cluster.unassigned, summary=(
            f"cluster yellow by design: {counts}; replicas cannot sit on the node holding their primary, so with "
            f"{cluster.data_nodes} data node(s) they stay unassigned. Left alone: add a data node for redundancy, or set "
            "index.number_of_replicas to 0 to make it green")))
    else:
        status = {"red": Status.CRIT, "yellow": Status.WARN}.get(cluster.status or "", Status.UNKNOWN)
        by_cause: dict[str, list[str]] = {}
        for g in diags:
            by_cause.setdefault(g.cause.value, []).append(g.shard.key)
        top = "; ".join(f"{k} ({', '.join(v[:3])}{' ...' if len(v) > 3 else ''})" for k, v in sorted(by_cause.items())) or "not explained"
        out.append(Finding(check="opensearch-health", resource=name, status=status, value=cluster.unassigned,
                           summary=f"cluster {cluster.status}: {counts}; causes: {top}",
                           details={"unassigned": [g.shard.key for g in diags] + cluster.unexplained}))
    if cluster.error:  # health was read, the shard detail was not
        out.append(unknown("opensearch-shards", name, cluster.error))
    for g in diags:
        s = g.shard
        res = f"{name}/{s.key}" + (f" x{s.copies}" if s.copies > 1 else "")
        if g.cause is Cause.UNKNOWN:
            out.append(unknown("opensearch-shard", res, g.why))
            continue
        status, todo = {
            Cause.RETRY: (Status.CRIT if s.primary else Status.WARN, "a retry (`POST _cluster/reroute?retry_failed=true`) is planned"),
            Cause.DISK: (Status.CRIT if s.primary else Status.WARN, "free or add disk first (see opensearch-storage); a retry alone would fail again"),
            Cause.LOST: (Status.CRIT, "restore the index from a snapshot (see opensearch-restore)"),
            Cause.TOO_FEW_NODES: (Status.OK, "yellow by design: left alone"),
            Cause.FOLLOWS_PRIMARY: (Status.WARN, "it is allocated once its primary is"),
            Cause.DELAYED: (Status.WARN, "it is allocated by itself when the delay ends (or the node comes back)"),
            Cause.PENDING: (Status.WARN, "the cluster is allocating it: run again in a minute"),
            Cause.OTHER: (Status.CRIT if s.primary else Status.WARN, "read the deciders: the runbook has no fix for this cause"),
        }[g.cause]
        out.append(Finding(check="opensearch-shard", resource=res, status=status, summary=f"{g.cause.value}: {g.why}; {todo}",
                           details={"index": s.index, "shard": s.shard, "primary": s.primary, "reason": s.reason,
                                    "failed_attempts": s.failed_attempts, "can_allocate": s.can_allocate,
                                    "no": [dd.model_dump() for dd in s.no[:6]]}))
    if cluster.unexplained:
        out.append(Finding(check="opensearch-shards", resource=name, status=Status.WARN, value=len(cluster.unexplained), summary=(
            f"{len(cluster.unexplained)} more unassigned shard(s) not explained (max_explain bound): "
            f"{', '.join(cluster.unexplained[:5])}{' ...' if len(cluster.unexplained) > 5 else ''}; run again after the fix, "
            "or raise max_explain")))
    warn = inv.remediation.opensearch_disk_warn_pct
    if cluster.disk_error:
        out.append(unknown("opensearch-disk", name, cluster.disk_error))
    for n in cluster.disks:
        if n.pct >= WATERMARK_FLOOD:
            st, what = Status.CRIT, f"above the flood stage ({WATERMARK_FLOOD:g} %): indices with a shard here are read-only"
        elif n.pct >= WATERMARK_HIGH:
            st, what = Status.CRIT, f"above the high watermark ({WATERMARK_HIGH:g} %): no shard is allocated here, shards move away"
        elif n.pct >= warn:
            st, what = Status.WARN, f"above the warn level {warn:g} % (low watermark {WATERMARK_LOW:g} %: no new replica here)"
        else:
            st, what = Status.OK, f"below {warn:g} %"
        out.append(Finding(check="opensearch-disk", resource=f"{name}/{n.node}", status=st, value=n.pct,
                           summary=f"disk {n.pct:g} % used ({_gib(n.used_bytes)} of {_gib(n.total_bytes)}, {n.shards} shard(s)): {what}"))
    if Cause.DISK in causes or any(n.pct >= warn for n in cluster.disks):
        advice = storage_advice(inv, info, cluster)
        if advice:
            blocking = any(g.cause is Cause.DISK and g.shard.primary for g in diags) or advice["fullest_pct"] >= WATERMARK_HIGH
            out.append(Finding(check="opensearch-storage", resource=name, status=Status.CRIT if blocking else Status.WARN,
                               value=advice.get("proposed_volume_size_gib"),
                               summary=f"more storage needed (fullest {advice['fullest_node']} at {advice['fullest_pct']:g} %, "
                                       f"target <= {advice['target_pct']:g} %); NOT applied by this runbook: {advice['recommendation']}",
                               details=advice))
    lost = [g.shard.index for g in diags if g.cause is Cause.LOST]
    if lost:
        points = {} if restore is None or isinstance(restore, BaseException) else {p.index: p for p in restore}
        for index in sorted(set(lost)):
            p = points.get(index)
            if isinstance(restore, BaseException) or (p and p.error):
                reason = aws.describe_error(restore) if isinstance(restore, BaseException) else p.error if p else ""
                summary = (f"primary shard(s) lost; the snapshots in {d.snapshot_repository} could not be listed ({reason}); "
                           + restore_call(index, None, d.snapshot_repository))
            elif not d.snapshot_repository:
                summary = "primary shard(s) lost; the inventory names no snapshot_repository: " + restore_call(index, None, None)
            else:
                summary = "primary shard(s) lost; NOT applied by this runbook: " + restore_call(index, p, d.snapshot_repository)
            out.append(Finding(check="opensearch-restore", resource=f"{name}/{index}", status=Status.CRIT, summary=summary,
                               details=p.model_dump() if p else {}))
    return out


# --- the change ------------------------------------------------------------------------------


def failed_state(status: str | None, failed: list[str]) -> str:
    """What a retry would act on, as the plan's ``current`` and the drift check's read (stable text)."""
    shown = ", ".join(failed[:8]) + (f" and {len(failed) - 8} more" if len(failed) > 8 else "")
    digest = hashlib.sha256("|".join(failed).encode()).hexdigest()[:8]
    return f"{status}; {len(failed)} copy(ies) failed allocation: {shown or 'none'} [{digest}]"


def read_failed_state(system: System, url: str) -> str:
    c = os_client(url, system.region)
    status = c.cluster.health().get("status")
    rows = c.cat.shards(format="json", h="index,shard,prirep,state,unassigned.reason")
    failed = sorted(f"{r['index']}[{r['shard']}]{r['prirep']}" for r in rows
                    if r.get("state") == "UNASSIGNED" and r.get("unassigned.reason") == "ALLOCATION_FAILED")
    return failed_state(status, failed)


def retry_failed(system: System, url: str) -> dict[str, Any]:
    """POST _cluster/reroute?retry_failed=true (metric=none: no cluster state in the answer). Not reversible; harmless:
    it only resets the failed-attempt counters so the allocator tries once more."""
    res = os_client(url, system.region, timeout=30).cluster.reroute(retry_failed=True, metric="none")
    if not res.get("acknowledged"):
        raise RuntimeError(f"_cluster/reroute?retry_failed=true was not acknowledged: {res}")
    return res


def poll_domain(system: System, url: str, keys: list[str]) -> tuple[str | None, int, list[str]]:
    """(cluster status, unassigned shards, retried copies not STARTED yet)."""
    c = os_client(url, system.region)
    h = c.cluster.health()
    pending = list(keys)
    if keys:
        indices = sorted({k.split("[", 1)[0] for k in keys})
        rows = c.cat.shards(index=",".join(indices), format="json", h="index,shard,prirep,state")
        started = [f"{r['index']}[{r['shard']}]{r['prirep']}" for r in rows if r.get("state") == "STARTED"]
        for k in started:
            if k in pending:
                pending.remove(k)
    return h.get("status"), int(h.get("unassigned_shards") or 0), pending


def wait_recovered(system: System, targets: list[tuple[str, str, str, list[str]]], timeout_s: float, poll_s: float,
                   label: str) -> dict[str, Finding]:
    """Poll each domain's health (and the retried copies) until every retried copy is STARTED, or the timeout.

    ``targets``: (domain, url, status before, retried copies). Progress goes to a Prefect progress artifact
    and a line on stderr each round; the wait never exceeds ``timeout_s`` (plus one poll)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    started = time.monotonic()
    pending = {t[0]: t for t in targets}
    last: dict[str, tuple[str | None, int, list[str]] | str] = {}
    out: dict[str, Finding] = {}
    progress = create_progress_artifact(progress=0.0, description=f"{label}: waiting for {len(pending)} domain(s) to recover")
    while pending:
        for dom, (_, url, before, keys) in list(pending.items()):
            try:
                status, unassigned, left = poll_domain(system, url, keys)
            except Exception as exc:  # keep polling: a cluster under recovery can answer slowly
                last[dom] = _os_error(exc)[1]
                continue
            last[dom] = (status, unassigned, left)
            if not left:
                better = _RANK.get(status or "red", 2) < _RANK.get(before, 2)
                took = round(time.monotonic() - started, 1)
                out[dom] = Finding(check="opensearch-retry", resource=dom, status=Status.OK, value=took, summary=(
                    f"{before} -> {status} after {took:g} s: the {len(keys)} retried copy(ies) are STARTED"
                    + ("" if better or status == "green" else f"; the cluster stays {status} for the other causes")))
                del pending[dom]
        elapsed = time.monotonic() - started
        done = len(targets) - len(pending)
        update_progress_artifact(progress, progress=100.0 * min(1.0, max(done / max(len(targets), 1), elapsed / max(timeout_s, 1e-9))))
        if pending:
            print(f"opsbook: {label}: {done}/{len(targets)} recovered after {elapsed:.0f}/{timeout_s:g} s; "
                  + "; ".join(f"{d}: " + (f"{v[0]}, {v[1]} unassigned, {len(v[2])} retried copy(ies) not started"
                                          if isinstance(v, tuple) else str(v))
                              for d, v in ((d, last.get(d, "no answer yet")) for d in pending)), file=sys.stderr)
        if not pending or elapsed >= timeout_s:
            break
        time.sleep(min(poll_s, max(0.0, timeout_s - elapsed)))
    for dom, (_, _, before, keys) in pending.items():
        v = last.get(dom, "no answer")
        what = (f"{v[0]}, {len(v[2])} of {len(keys)} retried copy(ies) not started ({', '.join(v[2][:5])})"
                if isinstance(v, tuple) else str(v))
        out[dom] = Finding(check="opensearch-retry", resource=dom, status=Status.WARN, value=timeout_s, summary=(
            f"was {before}; not recovered after {timeout_s:g} s: {what}; the allocation may have failed again: run again "
            "to read the explanation"))
    update_progress_artifact(progress, progress=100.0)
    return out
