"""remediate-opensearch-red's judgement (pure: no cluster, no AWS, no clock): a cause per unassigned shard read
from its allocation explanation, the findings of a domain, the storage and restore advice (never applied), and the
plan: retry the copies that failed allocation too many times and that nothing else keeps off a node.

Disk thresholds are OpenSearch's defaults (low 85 %: no replica goes to the node; high 90 %: no shard at all; flood
stage 95 %: indices become read-only) and the inventory's ``remediation.opensearch_disk_warn_pct``.
"""

from __future__ import annotations

import hashlib
import math
from enum import Enum
from typing import Any

from pydantic import BaseModel

from opsbook.findings import Finding, Status, unknown
from opsbook.inventory import OpenSearchDomain, System
from opsbook.mutation.core import Action, Identity, Plan
from tasks.opensearch import ClusterState, DomainInfo, RestorePoint, ShardExplain

RUNBOOK = "remediate-opensearch-red"
WATERMARK_LOW, WATERMARK_HIGH, WATERMARK_FLOOD = 85.0, 90.0, 95.0
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


class Diagnosis(BaseModel):
    shard: ShardExplain
    cause: Cause
    why: str


class Target(BaseModel):
    """One domain: what was read about it (errors as text, never dropped)."""

    domain: OpenSearchDomain
    named: bool = True
    info: DomainInfo | None = None
    info_error: str | None = None
    cluster: ClusterState | None = None
    cluster_error: str | None = None
    restore: list[RestorePoint] | None = None
    restore_error: str | None = None


# --- a cause per unassigned shard ----------------------------------------------------------------


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


# --- the findings of a domain -------------------------------------------------------------------------


def _health_counts(cluster: ClusterState) -> str:
    return (f"{cluster.data_nodes} data node(s), {cluster.active_shards} active, {cluster.unassigned} unassigned, "
            f"{cluster.initializing} initializing")


def _unread(error: str) -> str:
    """A read that failed, as the findings have always named it (the error's text re-raised as a RuntimeError)."""
    return f"RuntimeError: {error}"


def judge_domain(inv: System, t: Target) -> list[Finding]:
    """Every finding of one domain: management state, health, each unassigned shard, disks, what to do."""
    name = t.domain.name
    info = t.info
    if info is None:
        out = [unknown("opensearch-domain", name, _unread(t.info_error or "not read"))]
        info = DomainInfo(domain=name, endpoint=None, error=_unread(t.info_error or "not read"))
    elif not info.exists:
        return [Finding(check="opensearch-domain", resource=name, status=Status.CRIT,
                        summary=("named in the inventory but does not exist (DescribeDomain: ResourceNotFound)" if t.named
                                 else "does not exist (DescribeDomain: ResourceNotFound)"))]
    else:
        out = [domain_finding(info)]
    cluster = t.cluster
    if cluster is None:
        return out + ([unknown("opensearch-health", name, _unread(t.cluster_error))] if t.cluster_error else [])
    if cluster.error and cluster.status is None:
        return out + [unknown("opensearch-health", name, cluster.error)]
    diags = diagnose(cluster)
    out.append(health_finding(cluster, diags))
    if cluster.error:  # health was read, the shard detail was not
        out.append(unknown("opensearch-shards", name, cluster.error))
    out += [shard_finding(name, g) for g in diags]
    if cluster.unexplained:
        out.append(Finding(check="opensearch-shards", resource=name, status=Status.WARN, value=len(cluster.unexplained), summary=(
            f"{len(cluster.unexplained)} more unassigned shard(s) not explained (max_explain bound): "
            f"{', '.join(cluster.unexplained[:5])}{' ...' if len(cluster.unexplained) > 5 else ''}; run again after the fix, "
            "or raise max_explain")))
    out += disk_findings(inv, info, cluster, diags)
    lost = sorted({g.shard.index for g in diags if g.cause is Cause.LOST})
    return out + [restore_finding(t, index) for index in lost]


def domain_finding(info: DomainInfo) -> Finding:
    shape = f"{info.instance_count} x {info.instance_type}" + (
        f", EBS {info.volume_type} {info.volume_size_gib} GiB per node" if info.ebs_enabled else ", instance storage" if info.ebs_enabled is False else "")
    if info.processing:
        return Finding(check="opensearch-domain", resource=info.domain, status=Status.WARN, summary=(
            f"configuration change in progress (Processing): shards move during a blue/green change; nothing is retried "
            f"until it ends; {shape}"))
    return Finding(check="opensearch-domain", resource=info.domain, status=Status.OK, summary=f"domain ready ({info.engine}); {shape}")


def health_finding(cluster: ClusterState, diags: list[Diagnosis]) -> Finding:
    """Green OK; yellow only for lack of nodes OK (by design); else CRIT red / WARN yellow with the causes."""
    name, counts = cluster.domain, _health_counts(cluster)
    if cluster.status == "green":
        return Finding(check="opensearch-health", resource=name, status=Status.OK, value=0, summary=f"cluster green; {counts}")
    if cluster.status == "yellow" and diags and {g.cause for g in diags} == {Cause.TOO_FEW_NODES} and not cluster.unexplained:
        return Finding(check="opensearch-health", resource=name, status=Status.OK, value=cluster.unassigned, summary=(
            f"cluster yellow by design: {counts}; replicas cannot sit on the node holding their primary, so with "
            f"{cluster.data_nodes} data node(s) they stay unassigned. Left alone: add a data node for redundancy, or set "
            "index.number_of_replicas to 0 to make it green"))
    status = {"red": Status.CRIT, "yellow": Status.WARN}.get(cluster.status or "", Status.UNKNOWN)
    by_cause: dict[str, list[str]] = {}
    for g in diags:
        by_cause.setdefault(g.cause.value, []).append(g.shard.key)
    top = "; ".join(f"{k} ({', '.join(v[:3])}{' ...' if len(v) > 3 else ''})" for k, v in sorted(by_cause.items())) or "not explained"
    return Finding(check="opensearch-health", resource=name, status=status, value=cluster.unassigned,
                   summary=f"cluster {cluster.status}: {counts}; causes: {top}",
                   details={"unassigned": [g.shard.key for g in diags] + cluster.unexplained})


_TODO = {  # cause -> (status for a primary, for a replica), what is done about it
    Cause.RETRY: ((Status.CRIT, Status.WARN), "a retry (`POST _cluster/reroute?retry_failed=true`) is planned"),
    Cause.DISK: ((Status.CRIT, Status.WARN), "free or add disk first (see opensearch-storage); a retry alone would fail again"),
    Cause.LOST: ((Status.CRIT, Status.CRIT), "restore the index from a snapshot (see opensearch-restore)"),
    Cause.TOO_FEW_NODES: ((Status.OK, Status.OK), "yellow by design: left alone"),
    Cause.FOLLOWS_PRIMARY: ((Status.WARN, Status.WARN), "it is allocated once its primary is"),
    Cause.DELAYED: ((Status.WARN, Status.WARN), "it is allocated by itself when the delay ends (or the node comes back)"),
    Cause.PENDING: ((Status.WARN, Status.WARN), "the cluster is allocating it: run again in a minute"),
    Cause.OTHER: ((Status.CRIT, Status.WARN), "read the deciders: the runbook has no fix for this cause"),
}


def shard_finding(domain: str, g: Diagnosis) -> Finding:
    s = g.shard
    res = f"{domain}/{s.key}" + (f" x{s.copies}" if s.copies > 1 else "")
    if g.cause is Cause.UNKNOWN:
        return unknown("opensearch-shard", res, g.why)
    (if_primary, if_replica), todo = _TODO[g.cause]
    return Finding(check="opensearch-shard", resource=res, status=if_primary if s.primary else if_replica,
                   summary=f"{g.cause.value}: {g.why}; {todo}",
                   details={"index": s.index, "shard": s.shard, "primary": s.primary, "reason": s.reason,
                            "failed_attempts": s.failed_attempts, "can_allocate": s.can_allocate,
                            "no": [dd.model_dump() for dd in s.no[:6]]})


def disk_findings(inv: System, info: DomainInfo, cluster: ClusterState, diags: list[Diagnosis]) -> list[Finding]:
    """Each node's disk against the watermarks, and the storage advice when a shard or a node needs more."""
    name, warn = cluster.domain, inv.remediation.opensearch_disk_warn_pct
    out = [unknown("opensearch-disk", name, cluster.disk_error)] if cluster.disk_error else []
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
    if not (any(g.cause is Cause.DISK for g in diags) or any(n.pct >= warn for n in cluster.disks)):
        return out
    advice = storage_advice(inv, info, cluster)
    if advice:
        blocking = any(g.cause is Cause.DISK and g.shard.primary for g in diags) or advice["fullest_pct"] >= WATERMARK_HIGH
        out.append(Finding(check="opensearch-storage", resource=name, status=Status.CRIT if blocking else Status.WARN,
                           value=advice.get("proposed_volume_size_gib"),
                           summary=f"more storage needed (fullest {advice['fullest_node']} at {advice['fullest_pct']:g} %, "
                                   f"target <= {advice['target_pct']:g} %); NOT applied by this runbook: {advice['recommendation']}",
                           details=advice))
    return out


def restore_finding(t: Target, index: str) -> Finding:
    """A lost primary: the restore call from the newest snapshot holding the index (never applied)."""
    repo = t.domain.snapshot_repository
    p = next((p for p in t.restore or [] if p.index == index), None) if not t.restore_error else None
    if t.restore_error or (p and p.error):
        reason = _unread(t.restore_error) if t.restore_error else p.error if p else ""
        summary = f"primary shard(s) lost; the snapshots in {repo} could not be listed ({reason}); " + restore_call(index, None, repo)
    elif not repo:
        summary = "primary shard(s) lost; the inventory names no snapshot_repository: " + restore_call(index, None, None)
    else:
        summary = "primary shard(s) lost; NOT applied by this runbook: " + restore_call(index, p, repo)
    return Finding(check="opensearch-restore", resource=f"{t.domain.name}/{index}", status=Status.CRIT, summary=summary,
                   details=p.model_dump() if p else {})


def retried_keys(target: str) -> list[str]:
    """The copies a planned retry expects STARTED (the end of its ``target``)."""
    return [k for k in target.rpartition("STARTED: ")[2].split(", ") if k]


def poll_answer(status: str | None, keys: list[str], left: list[str]) -> tuple[bool, str]:
    """A poll after the retry: (every retried copy STARTED, the cluster's status and what is left)."""
    if not left:
        return True, f"{status}"
    return False, f"{status}, {len(left)} of {len(keys)} retried copy(ies) not started ({', '.join(left[:5])})"


def retry_outcome(before: str, settled: bool, what: str, keys: list[str], secs: float) -> str:
    """A retry's record detail (and its finding's summary): recovered, or not within the wait. ``before``: the plan's
    current ("red; 2 copy(ies) failed ..."); ``what``: the last poll's answer."""
    was = before.split(";")[0]
    if not settled:
        return (f"was {was}; not recovered after {secs:g} s: {what}; the allocation may have failed again: run again "
                "to read the explanation")
    status = what or "red"
    better = _RANK.get(status, 2) < _RANK.get(was, 2)
    return (f"{was} -> {status} after {secs:g} s: the {len(keys)} retried copy(ies) are STARTED"
            + ("" if better or status == "green" else f"; the cluster stays {status} for the other causes"))


def retry_finding(domain: str, status: str, detail: str | None) -> Finding:
    """One finding per retry: OK verified, WARN applied but not recovered in time, CRIT failed."""
    level = {"verified": Status.OK, "applied": Status.WARN}.get(status, Status.CRIT)
    return Finding(check="opensearch-retry", resource=domain, status=level,
                   summary=(detail or "") if level is not Status.CRIT else f"retry {status}: {detail}")


# --- the plan ------------------------------------------------------------------------------------------


def failed_state(status: str | None, failed: list[str]) -> str:
    """What a retry would act on, as the plan's ``current`` and the drift check's read (stable text)."""
    shown = ", ".join(failed[:8]) + (f" and {len(failed) - 8} more" if len(failed) > 8 else "")
    digest = hashlib.sha256("|".join(failed).encode()).hexdigest()[:8]
    return f"{status}; {len(failed)} copy(ies) failed allocation: {shown or 'none'} [{digest}]"


def retried_copies(cluster: ClusterState) -> list[str]:
    """The copies a retry should place: the max-retry shards (each unassigned copy), and the failed replicas
    that only wait for such a primary."""
    diags = diagnose(cluster)
    retry = [g.shard for g in diags if g.cause is Cause.RETRY]
    primaries = {f"{s.index}[{s.shard}]" for s in retry if s.primary}
    followers = [g.shard for g in diags if g.cause is Cause.FOLLOWS_PRIMARY and g.shard.reason == "ALLOCATION_FAILED"
                 and f"{g.shard.index}[{g.shard.shard}]" in primaries]
    return sorted(s.key for s in retry + followers for _ in range(s.copies))


def decide(inv: System, identity: Identity, ts: list[Target]) -> Plan:
    plan = Plan(runbook=RUNBOOK, system=inv.name, identity=identity)
    for t in ts:
        name, c = t.domain.name, t.cluster
        if t.info is None or not t.info.exists or c is None or c.status is None:
            why = t.info_error or t.cluster_error or (c.error if c else None) or ("the domain does not exist" if t.info and not t.info.exists else "not read")
            plan.notes.append(f"{name}: not planned, its state could not be read ({why})")
            continue
        diags = diagnose(c)
        causes = {g.cause for g in diags}
        if c.status == "green":
            plan.unchanged.append(f"{name}: cluster green")
            continue
        if diags and causes == {Cause.TOO_FEW_NODES}:
            plan.unchanged.append(f"{name}: yellow by design ({c.data_nodes} data node(s) cannot hold the replicas); left alone")
            continue
        keys = retried_copies(c)
        if keys and t.info.processing:
            plan.cannot.append(f"{name}: {len(keys)} shard copy(ies) failed allocation too many times, but a configuration change "
                               "is in progress (Processing); run again when it ends")
        elif keys:
            why = [g.why for g in diags if g.cause is Cause.RETRY][:2]
            others = sorted({g.cause.value for g in diags if g.cause not in (Cause.RETRY, Cause.FOLLOWS_PRIMARY)})
            plan.actions.append(Action(
                kind=RETRY_KIND, resource=name, current=failed_state(c.status, c.failed_copies),
                target="POST _cluster/reroute?retry_failed=true; expect STARTED: " + ", ".join(keys),
                iam_action="es:ESHttpPost", reversible=False,
                evidence=("allocation explain: " + " / ".join(why) + "; not reversible, harmless: the allocator only tries again"
                          + (f"; NOT fixed by it: {', '.join(others)} (see the findings)" if others else ""))))
        elif c.failed_copies:
            plan.cannot.append(f"{name}: {len(c.failed_copies)} copy(ies) failed allocation but a retry would not place them ("
                               + ", ".join(sorted({g.cause.value for g in diags if g.shard.reason == 'ALLOCATION_FAILED'}) or {"not explained"})
                               + "): see the findings for the fix")
        if Cause.DISK in causes:
            plan.notes.append(f"{name}: more storage is recommended (opensearch-storage), never applied by this runbook")
        if Cause.LOST in causes:
            plan.notes.append(f"{name}: restoring lost indices from a snapshot is recommended (opensearch-restore), never applied by this runbook")
    return plan
