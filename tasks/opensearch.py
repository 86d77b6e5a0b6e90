"""OpenSearch: domain state (management API) and real cluster health (the
cluster's own HTTP API through opensearch-py: status, unassigned shards and why)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import ClientError
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws
from opsbook.components import judge_cluster, judge_domain
from opsbook.findings import Finding
from opsbook.iam import aws_task
from opsbook.inventory import OpenSearchDomain, System
from opsbook.loopback import OPENSEARCH_TEMPLATE_ENV, require_loopback
from opsbook.resources import Discovered


def _ose() -> Any:
    """opensearch-py's exceptions: imported by the runs that talk to a cluster (``os_client``), not by every run that
    imports this module (a system without OpenSearch never loads opensearch-py)."""
    import opensearchpy.exceptions as ose

    return ose

URL_TEMPLATE_ENV = OPENSEARCH_TEMPLATE_ENV  # e.g. http://127.0.0.1:9200/{domain} (the sandbox sets it)
CLUSTER_FIX = f"set {URL_TEMPLATE_ENV} to the local cluster (like http://127.0.0.1:9200/{{domain}}; the sandbox sets it)"


def domains(system: System, found: Discovered) -> list[OpenSearchDomain]:
    out = list(system.opensearch_domains)
    names = {d.name for d in out}
    return out + [OpenSearchDomain(name=n) for n in found.opensearch_domains if n not in names]


def endpoint_for(domain: OpenSearchDomain, status: dict[str, Any] | None) -> str | None:
    """Inventory override, then the sandbox/env template, then the domain's own endpoint."""
    if domain.endpoint:
        return domain.endpoint
    template = os.environ.get(URL_TEMPLATE_ENV)
    if template:
        return template.format(domain=domain.name)
    if status:
        ep = status.get("Endpoint") or next(iter((status.get("Endpoints") or {}).values()), None)
        if ep:
            return ep if ep.startswith("http") else f"https://{ep}"
    return None


def _counting_connection() -> Any:
    """A connection that counts cluster API calls like AWS calls (``es:ESHttp<Verb>``)
    and checks them against the running task's declared IAM actions."""
    from opensearchpy import RequestsHttpConnection

    from opsbook.iam import check_call

    class CountingConnection(RequestsHttpConnection):
        def perform_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            op = f"ESHttp{method.capitalize()}"
            undeclared = check_call("es", op)  # raises in strict mode
            aws.PROCESS_CALLS.add("es", op, undeclared)
            log = aws.current_call_log()
            if log is not None:
                log.add("es", op, undeclared)
            return super().perform_request(method, url, *args, **kwargs)

    return CountingConnection


def os_client(url: str, region: str, timeout: float = 5.0) -> Any:
    """A client of the cluster at ``url``; on a loopback-only run (the sandbox) one off this machine is refused
    (``opsbook.loopback.NotLoopback``: the caller's UNKNOWN with the reason), before any connection."""
    from opensearchpy import OpenSearch

    require_loopback(url, "OpenSearch cluster", CLUSTER_FIX)
    parsed = urlparse(url)
    host = {"host": parsed.hostname, "port": parsed.port or (443 if parsed.scheme == "https" else 80)}
    if parsed.path.strip("/"):
        host["url_prefix"] = parsed.path.strip("/")
    kwargs: dict[str, Any] = dict(
        hosts=[host], use_ssl=parsed.scheme == "https", verify_certs=parsed.scheme == "https",
        timeout=timeout, max_retries=1, retry_on_timeout=False, connection_class=_counting_connection(),
    )
    if not aws.is_loopback_url(url):
        from opensearchpy import AWSV4SignerAuth

        kwargs["http_auth"] = AWSV4SignerAuth(aws.credentials(), region, "es")  # a fleet target's role inside assumed()
    return OpenSearch(**kwargs)


def read_cluster(url: str, region: str) -> dict[str, Any]:
    c = os_client(url, region)
    health = c.cluster.health()
    out: dict[str, Any] = {"health": health, "unassigned": [], "explain": None}
    if health.get("unassigned_shards", 0) > 0:
        shards = c.cat.shards(format="json", h="index,shard,prirep,state,unassigned.reason")
        out["unassigned"] = [s for s in shards if s.get("state") == "UNASSIGNED"]
        try:
            out["explain"] = c.cluster.allocation_explain()
        except _ose().TransportError as exc:
            out["explain"] = {"error": str(exc.error)}
    return out


@aws_task(iam=["es:DescribeDomains", "es:ESHttpGet", "es:ESHttpPost"], cache_policy=NO_CACHE)  # allocation explain is a POST
def check_domains(system: System, found: Discovered, deadline: aws.Deadline) -> list[Finding]:
    doms = domains(system, found)
    if not doms:
        return []
    named = {d.name for d in system.opensearch_domains}
    c = aws.client("opensearch", system.region)
    statuses: dict[str, dict[str, Any]] = {}
    findings: list[Finding] = []
    batches = [doms[i : i + 5] for i in range(0, len(doms), 5)]  # DescribeDomains takes up to 5 names
    for batch, res, err in aws.parallel(lambda b: c.describe_domains(DomainNames=[d.name for d in b]), batches, deadline=deadline):
        if err is not None:
            findings += [judge_domain(d.name, None, d.name in named, aws.describe_error(err)) for d in batch]
            continue
        for st in res["DomainStatusList"]:
            statuses[st["DomainName"]] = st
        for d in batch:
            findings.append(judge_domain(d.name, statuses.get(d.name), d.name in named))
    reachable = [d for d in doms if d.name in statuses]
    jobs = [(d, endpoint_for(d, statuses.get(d.name))) for d in reachable]
    findings += [judge_cluster(d.name, None) for d, url in jobs if url is None]
    with_url = [(d, u) for d, u in jobs if u]
    for (d, url), cluster, err in aws.parallel(lambda du: read_cluster(du[1], system.region), with_url, deadline=deadline):
        findings.append(judge_cluster(d.name, cluster, cluster_unreadable(err) if err is not None else None))
    return findings


def cluster_unreadable(error: BaseException, api: str = "cluster") -> str:
    """Why the cluster's own ``api`` (health, snapshots...) could not be read: the reason of its UNKNOWN finding."""
    if isinstance(error, (_ose().ConnectionError, _ose().ConnectionTimeout)):
        return f"cluster endpoint unreachable ({type(error).__name__}); check the endpoint, VPC access or the domain's access policy"
    if isinstance(error, _ose().TransportError):
        return f"{api} API answered {error.status_code}: {error.error}; check es:ESHttpGet permission and the access policy"
    return aws.describe_error(error)


# --- snapshots: their age, restores of their indices --------------------------------------------


class SnapshotInfo(BaseModel):
    name: str
    state: str
    at: datetime | None  # end time (start time while in progress)


class DomainSnapshots(BaseModel):
    domain: str
    repository: str
    max_age_hours: float
    repository_exists: bool | None = None
    repository_type: str | None = None
    snapshots: list[SnapshotInfo] = Field(default_factory=list)  # newest first
    error: str | None = None


def snapshot_reason(exc: BaseException) -> str:
    if isinstance(exc, (_ose().ConnectionError, _ose().ConnectionTimeout)):
        return f"cluster endpoint unreachable ({type(exc).__name__}); check the endpoint, VPC access or the domain's access policy"
    if isinstance(exc, _ose().TransportError):
        return f"snapshot API answered {exc.status_code}: {exc.error}; check es:ESHttpGet permission and the access policy"
    return aws.describe_error(exc)


def snapshot_time(s: dict[str, Any]) -> datetime | None:
    ms = s.get("end_time_in_millis") or s.get("start_time_in_millis")
    return datetime.fromtimestamp(ms / 1000, timezone.utc) if ms else None


def read_domain_snapshots(system: System, d: OpenSearchDomain) -> DomainSnapshots:
    assert d.snapshot_repository
    s = DomainSnapshots(domain=d.name, repository=d.snapshot_repository, max_age_hours=system.dr.snapshot_max_age_hours)
    url = endpoint_for(d, None)
    if url is None:  # no override: the domain's own endpoint
        url = endpoint_for(d, aws.client("opensearch", system.region).describe_domain(DomainName=d.name)["DomainStatus"])
    if url is None:
        s.error = "no endpoint: the domain has none yet and the inventory gives no endpoint override"
        return s
    c = os_client(url, system.region)
    try:
        repo = c.snapshot.get_repository(repository=d.snapshot_repository)
        s.repository_exists, s.repository_type = True, (repo.get(d.snapshot_repository) or {}).get("type")
    except _ose().NotFoundError:
        s.repository_exists = False
        return s
    except Exception as exc:  # UNKNOWN with the reason
        s.error = snapshot_reason(exc)
        return s
    try:
        snaps = c.snapshot.get(repository=d.snapshot_repository, snapshot="_all").get("snapshots", [])
    except Exception as exc:
        s.error = snapshot_reason(exc)
        return s
    s.snapshots = sorted((SnapshotInfo(name=x["snapshot"], state=x.get("state", "?"), at=snapshot_time(x)) for x in snaps),
                         key=lambda x: x.at or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
    return s


@aws_task(iam=["es:DescribeDomain", "es:ESHttpGet"], name="read-opensearch-snapshots", cache_policy=NO_CACHE)
def read_snapshots(system: System, deadline: aws.Deadline) -> list[DomainSnapshots]:
    doms = [d for d in system.opensearch_domains if d.snapshot_repository]
    out = []
    for d, s, err in aws.parallel(lambda d: read_domain_snapshots(system, d), doms, deadline=deadline):
        out.append(s if err is None else DomainSnapshots(domain=d.name, repository=d.snapshot_repository or "",
                                                         max_age_hours=system.dr.snapshot_max_age_hours, error=aws.describe_error(err)))
    return out


def domain_statuses(system: System, names: list[str]) -> dict[str, dict[str, Any]]:
    return {s["DomainName"]: s for s in aws.client("opensearch", system.region).describe_domains(DomainNames=names)["DomainStatusList"]}


def client_for(system: System, domain: OpenSearchDomain, target: str, status: dict[str, Any] | None) -> Any:
    """A cluster client for ``target``: the domain itself, or another (a DR domain) reached like it."""
    return os_client(endpoint_for(domain if target == domain.name else domain.model_copy(update={"name": target}), status), system.region)


@aws_task(iam=["es:DescribeDomains", "es:ESHttpGet"], name="find-snapshots", cache_policy=NO_CACHE)
def find_snapshots(system: System) -> dict[str, Any]:
    """Per domain with a snapshot repository: the latest successful snapshot and its indices (not the system ones)."""
    out: dict[str, Any] = {}
    doms = [d for d in system.opensearch_domains if d.snapshot_repository]
    if not doms:
        return out
    st = domain_statuses(system, [d.name for d in doms])
    for d in doms:
        try:
            c = os_client(endpoint_for(d, st.get(d.name)), system.region)
            snaps = [s for s in c.snapshot.get(repository=d.snapshot_repository, snapshot="_all")["snapshots"] if s.get("state") == "SUCCESS"]
            latest = max(snaps, key=lambda s: s.get("start_time_in_millis", 0), default=None)
            out[d.name] = {"snapshot": latest["snapshot"], "indices": [i for i in latest["indices"] if not i.startswith(".")],
                           "repo": d.snapshot_repository} if latest else {"snapshot": None, "repo": d.snapshot_repository}
        except Exception as exc:
            out[d.name] = {"error": aws.describe_error(exc) if not hasattr(exc, "status_code") else f"{exc}"}
    return out


@aws_task(iam=["es:DescribeDomains", "es:ESHttpGet", "es:ESHttpPost"], name="restore-indices", cache_policy=NO_CACHE, read_only=False)
def restore_indices(system: System, domain: str, snap: dict[str, Any], target: str, prefix: str, timeout_s: float, label: str) -> dict[str, Any]:
    """Restore the snapshot's indices into ``target`` renamed ``prefix<index>`` with no replicas, wait (bounded) while red, and
    count documents: seconds, cluster health of the copies, and per index (name, in the source now, restored)."""
    dom = next(d for d in system.opensearch_domains if d.name == domain)
    src = client_for(system, dom, domain, domain_statuses(system, [domain]).get(domain))
    dst = src if target == domain else client_for(system, dom, target, None)
    t0 = time.monotonic()
    dst.snapshot.restore(repository=snap["repo"], snapshot=snap["snapshot"], body={
        "indices": ",".join(snap["indices"]), "rename_pattern": "(.+)", "rename_replacement": f"{prefix}$1",
        "index_settings": {"index.number_of_replicas": 0}, "include_global_state": False})
    restored = ",".join(f"{prefix}{i}" for i in snap["indices"])
    health = dst.cluster.health(index=restored)
    while health.get("status") == "red" and time.monotonic() - t0 < timeout_s:  # bounded wait for the shards to start
        print(f"opsbook: {label}: restored indices red after {time.monotonic() - t0:.0f} s", file=sys.stderr)
        time.sleep(5)
        health = dst.cluster.health(index=restored)
    seconds = time.monotonic() - t0
    counts = [(i, src.count(index=i)["count"], dst.count(index=f"{prefix}{i}")["count"]) for i in snap["indices"]]
    return {"seconds": seconds, "health": health.get("status"), "counts": counts}


def remove_indices(system: System, domains: list[OpenSearchDomain], target: Callable[[str], str], pattern: str) -> list[str]:
    """Delete the indices matching ``pattern`` on each domain's ``target(name)`` (itself or another); what was removed."""
    if not domains:
        return []
    st = domain_statuses(system, [d.name for d in domains])
    removed = []
    for d in domains:
        name = target(d.name)
        c = client_for(system, d, name, st.get(d.name))
        for idx in c.cat.indices(index=pattern, format="json"):
            c.indices.delete(index=idx["index"])
            removed.append(f"index {name}/{idx['index']}")
    return removed


# --- shard allocation: why shards are unassigned (DescribeDomain, health, explain, disk, snapshots) --------------------
#
# Counted as ``es:ESHttp<Verb>`` like AWS calls. ``read_cluster_allocation`` reads ``_cluster/health``; when shards are
# unassigned ``_cat/shards`` and ``_cluster/allocation/explain`` for each distinct unassigned (index, shard, primary), at
# most ``max_explain`` of them; ``_cat/allocation`` (disk per node); ``_cat/indices`` when the cluster is not green.

MAX_EXPLAIN_DEFAULT = 10


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


def os_error(exc: BaseException) -> tuple[str, str]:
    """(kind, what to say) for an exception from opensearch-py."""
    if isinstance(exc, (_ose().ConnectionError, _ose().ConnectionTimeout)):
        return "unreachable", (f"cluster endpoint unreachable ({type(exc).__name__}); check the endpoint, VPC access "
                               "or the domain's access policy")
    if isinstance(exc, _ose().TransportError):
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
        st.error_kind, st.error = os_error(exc)
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
        st.disk_error = os_error(exc)[1]
    if st.status == "green" and not st.unassigned:
        return st
    try:
        st.indices = [IndexInfo(index=r["index"], health=r.get("health"), primaries=_int(r.get("pri")), replicas=_int(r.get("rep")),
                                store_bytes=_int(r.get("store.size")))
                      for r in c.cat.indices(format="json", bytes="b", h="health,index,pri,rep,store.size")]
        shards = c.cat.shards(format="json", h="index,shard,prirep,state,unassigned.reason")
    except Exception as exc:
        st.error_kind, st.error = os_error(exc)
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
            st.shards.append(ShardExplain(index=k[0], shard=k[1], primary=k[2], copies=distinct[k], error=os_error(err)[1]))
        else:
            st.shards.append(parse_explain(body or {}, distinct[k]))
    return st


@aws_task(iam=["es:ESHttpGet", "es:ESHttpPost"], name="read-cluster-allocation", cache_policy=NO_CACHE)  # allocation explain is a POST
def read_cluster_allocation(system: System, d: OpenSearchDomain, info: DomainInfo, max_explain: int = MAX_EXPLAIN_DEFAULT) -> ClusterState:
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
        return [RestorePoint(index=i, repository=d.snapshot_repository, error=os_error(exc)[1]) for i in indices]
    out = []
    for i in indices:
        holding = [s for s in snaps if i in (s.get("indices") or []) and s.get("state") in ("SUCCESS", "PARTIAL")]
        best = max(holding, key=lambda s: (s.get("state") == "SUCCESS", s.get("start_time_in_millis") or 0), default=None)
        out.append(RestorePoint(index=i, repository=d.snapshot_repository, snapshot=best and best.get("snapshot"),
                                state=best and best.get("state"), at_ms=best and best.get("start_time_in_millis")))
    return out


# --- the one change: retry failed allocations, and reading it back ---------------------------------------------------


def read_failed_copies(system: System, url: str) -> tuple[str | None, list[str]]:
    """(cluster status, the UNASSIGNED copies whose reason is ALLOCATION_FAILED, sorted): what a retry would act on."""
    c = os_client(url, system.region)
    status = c.cluster.health().get("status")
    rows = c.cat.shards(format="json", h="index,shard,prirep,state,unassigned.reason")
    failed = sorted(f"{r['index']}[{r['shard']}]{r['prirep']}" for r in rows
                    if r.get("state") == "UNASSIGNED" and r.get("unassigned.reason") == "ALLOCATION_FAILED")
    return status, failed


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


# --- one index: count it, rebuild it from documents (reindex-case). Plain functions: the calling task declares
# es:DescribeDomain and es:ESHttp<Verb> (opensearch-py does not go through botocore: checked by review and tests).

from collections.abc import Iterable, Iterator  # noqa: E402  (this section is appended)
from urllib.parse import quote  # noqa: E402

from pydantic import BaseModel  # noqa: E402

from opsbook.masking import mask  # noqa: E402

MAX_RESULT_WINDOW = 10_000  # OpenSearch's default index.max_result_window: from + size beyond it is refused


class DomainUnavailable(ValueError):
    """The domain has no usable endpoint (being deleted, or none yet and no override)."""


class IndexState(BaseModel):
    url: str
    exists: bool
    count: int  # 0 when the index does not exist
    mapping: dict[str, Any] | None = None  # the index's ``mappings`` (read when asked for and the index exists)


class Rebuilt(BaseModel):
    written: int = 0  # documents given and indexed
    batches: int = 0
    created: bool = False
    removed: int = 0  # documents that were not among those given
    unlisted: int = 0  # documents beyond the result window that could not be checked


def domain_url(system: System, domain: str) -> str:
    """The domain's HTTP endpoint: DescribeDomain, then the inventory/sandbox override (endpoint_for)."""
    dom = next((d for d in system.opensearch_domains if d.name == domain), None) or OpenSearchDomain(name=domain)
    status = aws.client("opensearch", system.region).describe_domain(DomainName=dom.name)["DomainStatus"]
    if status.get("Deleted"):
        raise DomainUnavailable(f"OpenSearch domain {dom.name} is being deleted")
    url = endpoint_for(dom, status)
    if not url:
        raise DomainUnavailable(f"OpenSearch domain {dom.name} has no endpoint yet and the inventory gives no endpoint override")
    return url


def _count(client: Any, index: str) -> int | None:
    """GET {index}/_count (opensearch-py's count() POSTs); None when the index does not exist."""
    body = client.transport.perform_request("GET", f"/{quote(index)}/_count", params={"ignore": 404})
    if "count" in body:
        return int(body["count"])
    if (body.get("error") or {}).get("type") == "index_not_found_exception":
        return None
    raise RuntimeError(f"GET {index}/_count answered {body.get('status')}: {(body.get('error') or {}).get('reason', body)}")


def index_count(url: str, region: str, index: str) -> int | None:
    """Documents in the index; None when the index does not exist."""
    return _count(os_client(url, region), index)


def refresh_and_count(url: str, region: str, index: str) -> int | None:
    c = os_client(url, region)
    c.indices.refresh(index=index, ignore=404)  # a missing index is counted as None below
    return _count(c, index)


def _bulk(client: Any, actions: list[dict[str, Any]]) -> None:
    from opensearchpy import helpers

    if not actions:
        return
    _, errors = helpers.bulk(client, actions, chunk_size=len(actions), raise_on_error=False, max_retries=3,
                             initial_backoff=1, max_backoff=10)
    if errors:
        first = [next(iter(e.values())) for e in errors[:3]]
        reasons = "; ".join(f"{e.get('_id')}: {(e.get('error') or {}).get('type')} {(e.get('error') or {}).get('reason', '')}".strip()
                            for e in first)
        raise RuntimeError(mask(f"{len(errors)} of {len(actions)} bulk item(s) failed: {reasons}"))


def _listed_ids(client: Any, index: str, total: int, page: int = 1000) -> list[str]:
    """Document ids of the index, as far as from/size reaches (the result window)."""
    ids: list[str] = []
    for start in range(0, min(total, MAX_RESULT_WINDOW), page):
        size = min(page, MAX_RESULT_WINDOW - start)
        hits = client.search(index=index, body={"query": {"match_all": {}}, "_source": False, "from": start, "size": size})
        batch = [h["_id"] for h in hits["hits"]["hits"]]
        ids += batch
        if len(batch) < size:
            break
    return ids


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of ``size`` items (the last one shorter), without reading ahead."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def index_mapping(url: str, region: str, index: str) -> dict[str, Any] | None:
    """The index's ``mappings`` (GET {index}/_mapping); None when the index does not exist."""
    body = os_client(url, region).transport.perform_request("GET", f"/{quote(index)}/_mapping", params={"ignore": 404})
    if index in body:
        return dict(body[index].get("mappings") or {})
    if (body.get("error") or {}).get("type") == "index_not_found_exception":
        return None
    raise RuntimeError(f"GET {index}/_mapping answered {body.get('status')}: {(body.get('error') or {}).get('reason', body)}")


def rebuild_index(url: str, region: str, index: str, docs: Iterable[dict[str, Any]], key: str, batch_size: int,
                  on_batch: Callable[[Rebuilt], None] | None = None, mappings: dict[str, Any] | None = None,
                  recreate: bool = False) -> Rebuilt:
    """Make the index hold exactly ``docs``: create it if missing (with ``mappings``), bulk-index in batches
    (document id = ``doc[key]``, so nothing is duplicated), then remove documents not among them. ``recreate``: delete
    it first (its mapping is wrong, and a field's type cannot change in place)."""
    client = os_client(url, region, timeout=60)
    done = Rebuilt()
    if recreate:
        client.indices.delete(index=index, ignore=404)
    answer = client.indices.create(index=index, body={"mappings": mappings} if mappings else None, ignore=400)  # PUT; an existing index is kept and refilled
    if answer.get("acknowledged"):
        done.created = True
    elif (answer.get("error") or {}).get("type") != "resource_already_exists_exception":
        raise RuntimeError(f"creating index {index} failed: {(answer.get('error') or {}).get('reason', answer)}")
    written: set[str] = set()
    for batch in chunks(docs, batch_size):
        actions = [{"_op_type": "index", "_index": index, "_id": str(d[key]), "_source": d} for d in batch]
        _bulk(client, actions)
        written.update(a["_id"] for a in actions)
        done.written, done.batches = len(written), done.batches + 1
        if on_batch:
            on_batch(done)
    client.indices.refresh(index=index)
    count = _count(client, index) or 0
    if count > len(written):
        stray = [i for i in _listed_ids(client, index, count) if i not in written]
        _bulk(client, [{"_op_type": "delete", "_index": index, "_id": i} for i in stray])
        client.indices.refresh(index=index)
        done.removed = len(stray)
        done.unlisted = max(0, count - MAX_RESULT_WINDOW)
    return done


@aws_task(iam=["es:DescribeDomain", "es:ESHttpGet"], name="read-case-index", cache_policy=NO_CACHE)
def read_index(system: System, domain: str, index: str, with_mapping: bool = False) -> IndexState:
    """The domain's endpoint and how many documents the index holds (exists=False: no such index); ``with_mapping``: its mapping too."""
    url = domain_url(system, domain)
    n = index_count(url, system.region, index)
    mapping = index_mapping(url, system.region, index) if with_mapping and n is not None else None
    return IndexState(url=url, exists=n is not None, count=n or 0, mapping=mapping)


# --- restoring an index from a snapshot (restore-index). Plain functions: the calling task or step declares
# es:ESHttp<Verb> (opsbook.iam.declares); opensearch-py does not go through botocore.


class IndexSnapshot(BaseModel):
    """One snapshot of a repository, as far as a restore of one of its indices needs it."""

    name: str
    state: str
    indices: list[str] = Field(default_factory=list)
    start_ms: int | None = None
    doc_counts: dict[str, int] = Field(default_factory=dict, description="the snapshot's metadata.doc_counts, when its taker wrote them")


class LiveIndex(BaseModel):
    """What a name is on the cluster now: an index (its state, aliases, count, and the snapshot it was restored from),
    an alias (its indices), or nothing."""

    name: str
    exists: bool = False
    is_alias: bool = False
    indices: list[str] = Field(default_factory=list)  # an alias: the indices it points to
    aliases: list[str] = Field(default_factory=list)  # an index: its aliases
    state: str | None = None  # open | close
    count: int | None = None  # None: closed or absent
    source: str | None = Field(None, description="repository/snapshot the index was restored from (its _recovery), None: not restored")


class RepositoryMissing(LookupError):
    """The snapshot repository is not registered on the cluster."""


def read_repository_snapshots(url: str, region: str, repo: str) -> list[IndexSnapshot]:
    """GET _snapshot/{repo}/_all: every snapshot, newest first (by start time)."""
    c = os_client(url, region, timeout=30)
    try:
        snaps = c.snapshot.get(repository=repo, snapshot="_all").get("snapshots", [])
    except _ose().NotFoundError as exc:
        if exc.error == "repository_missing_exception":
            raise RepositoryMissing(f"no snapshot repository {repo!r} is registered on the cluster") from None
        raise
    out = []
    for s in snaps:
        counts = (s.get("metadata") or {}).get("doc_counts") or {}
        out.append(IndexSnapshot(name=s["snapshot"], state=s.get("state", "?"), indices=list(s.get("indices") or []),
                                 start_ms=s.get("start_time_in_millis"),
                                 doc_counts={k: int(v) for k, v in counts.items() if isinstance(v, int)}))
    return sorted(out, key=lambda s: s.start_ms or 0, reverse=True)


def snapshot_state(url: str, region: str, repo: str, name: str) -> str | None:
    """The snapshot's state (SUCCESS, PARTIAL, FAILED, IN_PROGRESS); None: no such snapshot."""
    body = os_client(url, region).snapshot.get(repository=repo, snapshot=name, ignore=404)
    snaps = body.get("snapshots") or []
    return snaps[0].get("state") if snaps else None


def index_source(client: Any, index: str) -> str | None:
    """repository/snapshot the index's primaries were restored from (GET {index}/_recovery), None: not from a snapshot."""
    body = client.indices.recovery(index=index)
    for shard in (body.get(index) or {}).get("shards", []):
        if shard.get("primary") and shard.get("type") == "SNAPSHOT":
            src = shard.get("source") or {}
            return f"{src.get('repository')}/{src.get('snapshot')}"
    return None


def read_live_index(url: str, region: str, name: str) -> LiveIndex:
    """What ``name`` is now: an alias (GET _alias/{name}), else an index (GET {name}, _cat/indices, _count, _recovery)."""
    c = os_client(url, region, timeout=30)
    held = c.indices.get_alias(name=name, ignore=404)
    if "status" not in held and held:
        return LiveIndex(name=name, exists=True, is_alias=True, indices=sorted(held))
    got = c.indices.get(index=name, ignore=404)
    if name not in got:
        return LiveIndex(name=name)
    [row] = c.cat.indices(index=name, format="json", h="index,status")
    state = row.get("status") or "open"
    count = _count(c, name) if state == "open" else None
    return LiveIndex(name=name, exists=True, aliases=sorted(got[name].get("aliases") or {}), state=state, count=count,
                     source=index_source(c, name))


def read_recovery(url: str, region: str, index: str) -> dict[str, Any]:
    """GET {index}/_recovery: each shard copy's stage and percent (the progress of a restore)."""
    return os_client(url, region).indices.recovery(index=index)


def restore_from_snapshot(url: str, region: str, repo: str, snapshot: str, index: str, target: str) -> None:
    """POST _snapshot/{repo}/{snapshot}/_restore of ``index`` as ``target`` (renamed when they differ), without the
    snapshot's aliases or the cluster's global state (the runbook moves aliases itself). Returns once accepted."""
    import re

    body: dict[str, Any] = {"indices": index, "include_aliases": False, "include_global_state": False}
    if target != index:
        body.update(rename_pattern=f"^{re.escape(index)}$", rename_replacement=target)
    os_client(url, region, timeout=60).snapshot.restore(repository=repo, snapshot=snapshot, body=body)


def close_index(url: str, region: str, index: str) -> None:
    os_client(url, region, timeout=60).indices.close(index=index)


def open_index(url: str, region: str, index: str) -> None:
    os_client(url, region, timeout=60).indices.open(index=index)


def switch_alias(url: str, region: str, alias: str, remove_from: list[str], add_to: str | None) -> None:
    """One POST _aliases: ``alias`` off ``remove_from`` and onto ``add_to``, applied together (never neither nor both)."""
    actions: list[dict[str, Any]] = [{"remove": {"index": i, "alias": alias}} for i in remove_from if i != add_to]
    if add_to and add_to not in remove_from:
        actions.append({"add": {"index": add_to, "alias": alias}})
    if actions:
        os_client(url, region, timeout=30).indices.update_aliases(body={"actions": actions})


def take_index_snapshot(url: str, region: str, repo: str, name: str, index: str, metadata: dict[str, Any]) -> str:
    """PUT _snapshot/{repo}/{name}?wait_for_completion=true of ``index`` alone; its state."""
    res = os_client(url, region, timeout=600).snapshot.create(
        repository=repo, snapshot=name, wait_for_completion=True,
        body={"indices": index, "include_global_state": False, "metadata": metadata})
    return (res.get("snapshot") or {}).get("state", "?")


def index_doc_counts(url: str, region: str, index: str) -> tuple[int | None, int | None]:
    """(searchable documents: refresh + _count, documents the primaries hold: _stats/docs) of an open index."""
    c = os_client(url, region, timeout=30)
    c.indices.refresh(index=index, ignore=404)
    stats = c.indices.stats(index=index, metric="docs", ignore=404)
    primaries = ((stats.get("indices") or {}).get(index) or {}).get("primaries", {}).get("docs", {}).get("count")
    return _count(c, index), primaries
