"""remediate-opensearch-red: why is the OpenSearch cluster red (or yellow), and the one safe fix.

Source: 000 일반적인 문제 4 "OpenSearch 클러스터 Red 상태" (describe-domain,
``_cluster/health``, ``_cat/indices``, ``_cat/shards`` UNASSIGNED,
``_cluster/reroute``, ``_cat/allocation`` and more storage through terraform).
The seed reroutes a named replica to ``node-1`` by hand; this runbook reads
the allocation explanation of every distinct unassigned shard (bounded by
``max_explain``) and acts only where the explanation shows a retry places the
shard: the copies that failed allocation ``index.allocation.max_retries`` (5)
times and that no other decider keeps off some node. For those it proposes
``POST _cluster/reroute?retry_failed=true`` (not reversible, harmless: it only
lets the allocator try again), behind approval.

Everything else is a finding with the exact next step, never applied:
- disk above the watermarks (``disk_threshold``; OpenSearch: low 85 %, high
  90 %, flood stage 95 % -> indices read-only; the inventory's
  ``remediation.opensearch_disk_warn_pct``): the EBS size (UpdateDomainConfig
  command and the terraform ``ebs_options.volume_size``) that puts the fullest
  node back under ``warn - 15`` %, or the data node count, or the largest
  indices to consider deleting;
- primaries no node holds a copy of: the restore call from the newest snapshot
  in the inventory's ``snapshot_repository`` that holds the index;
- replicas on a cluster with too few data nodes (a one-node domain is yellow by
  design): explained and left alone;
- a domain whose configuration change is running (Processing): nothing retried.

Steps, per domain of the system (or only ``domain``): confirm identity ->
DescribeDomain -> cluster health, unassigned shards, explanations, disk per
node, indices -> restore points for lost indices -> judge -> plan -> (dry run
ends here) -> approve -> the mutation mechanism's steps (opsbook.mutation:
lease, drift check reading the failed copies again, per domain intent ->
retry -> outcome; a re-run after a kill closes an open retry from the live
copies) -> poll ``_cluster/health`` and the retried copies until they are
STARTED (bounded by ``settle_timeout_s``, progress artifact + stderr) -> read
the cluster again (the report shows the state after) -> record -> notify.
Running it again once the cluster is green plans nothing.

API calls per domain: 1 DescribeDomain + 2 HTTP on a green cluster (health,
``_cat/allocation``); a red one adds ``_cat/indices``, ``_cat/shards``, one
explain per distinct unassigned shard (<= ``max_explain``), 1 snapshot listing
when a primary is lost; a retry adds 2 for the drift check, 1 reroute, 2 a
poll round and the re-read; plus the session's (identity, lease, records, SNS).
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.remediate_opensearch_red.judge import (
    RETRY_KIND,
    RUNBOOK,
    Cause,
    Target,
    decide,
    diagnose,
    failed_state,
    judge_domain,
    poll_answer,
    retried_keys,
    retry_finding,
    retry_outcome,
)
from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import Finding, Status
from opsbook.iam import declares
from opsbook.inventory import OpenSearchDomain, System, load_system
from opsbook.mutation.core import Applier, Identity, Plan, Record, undo_plan
from opsbook.mutation.session import SESSION_TASKS, MutationSession, read_records, steps_policy
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SettleTimeout, SystemName, UndoRun
from tasks.opensearch import (
    MAX_EXPLAIN_DEFAULT,
    domain_url,
    poll_domain,
    read_cluster_allocation,
    read_domain_status,
    read_failed_copies,
    read_restore_points,
    retry_failed,
)

CLUSTER_CHECKS = ("opensearch-health", "opensearch-shard", "opensearch-shards", "opensearch-disk", "opensearch-storage", "opensearch-restore")


def targets(inv: System, domain: str | None) -> list[Target]:
    if domain is None:
        return [Target(domain=d) for d in inv.opensearch_domains]
    named = next((d for d in inv.opensearch_domains if d.name == domain), None)
    return [Target(domain=named or OpenSearchDomain(name=domain), named=named is not None)]


# --- the step: one retry per domain --------------------------------------------------------------


def appliers(urls: dict[str, str]) -> dict[str, Applier]:
    """The retry of a domain's failed allocations, as a step of the mutation mechanism. ``urls``: the endpoints this run
    read (a re-run closing a killed run's open retry reads its domain's endpoint: DescribeDomain)."""

    def url(system: System, domain: str) -> str:
        if domain not in urls:
            urls[domain] = domain_url(system, domain)
        return urls[domain]

    @declares(["es:DescribeDomain", "es:ESHttpGet"])
    def read(system: System, domain: str) -> str:
        return failed_state(*read_failed_copies(system, url(system, domain)))

    @declares(["es:DescribeDomain", "es:ESHttpPost"])
    def apply(system: System, domain: str, target: str) -> None:
        retry_failed(system, url(system, domain))

    def reached(system: System, domain: str, before: str, target: str) -> bool:
        return read(system, domain) != before  # a retry resets the failed copies; the same ones failed again read as before

    @declares(["es:DescribeDomain", "es:ESHttpGet"])
    def settled(system: System, domain: str, target: str) -> tuple[bool, str]:
        keys = retried_keys(target)
        status, _, left = poll_domain(system, url(system, domain), keys)
        return poll_answer(status, keys, left)

    return {RETRY_KIND: Applier(read=read, apply=apply, reached=reached, settled=settled)}


@task(name="plan-opensearch-retry", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, ts: list[Target]) -> Plan:
    return decide(inv, identity, ts)


def read_all(inv: System, ts: list[Target], max_explain: int) -> list[Target]:
    """DescribeDomain for every domain at once, then each cluster at once, then restore points where needed."""
    infos = {t.domain.name: read_domain_status.submit(inv, t.domain) for t in ts}
    for t in ts:
        v = future_value(infos[t.domain.name])
        if isinstance(v, BaseException):
            t.info_error = aws.describe_error(v)
        else:
            t.info = v
    clusters = {t.domain.name: read_cluster_allocation.submit(inv, t.domain, t.info, max_explain) for t in ts if t.info and t.info.exists}
    for t in ts:
        if t.domain.name in clusters:
            v = future_value(clusters[t.domain.name])
            if isinstance(v, BaseException):
                t.cluster_error = aws.describe_error(v)
            else:
                t.cluster = v
    restores = {}
    for t in ts:
        lost = sorted({g.shard.index for g in diagnose(t.cluster) if g.cause is Cause.LOST}) if t.cluster else []
        if lost and t.info and t.info.endpoint:
            restores[t.domain.name] = read_restore_points.submit(inv, t.domain, t.info.endpoint, lost)
    for t in ts:
        if t.domain.name in restores:
            v = future_value(restores[t.domain.name])
            if isinstance(v, BaseException):
                t.restore_error = aws.describe_error(v)
            else:
                t.restore = v
    return ts


# --- the runbook --------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def remediate_opensearch_red(
    system: SystemName,
    domain: Annotated[str, Param("Only this OpenSearch domain (one outside the inventory is checked too); empty: every domain "
                                 "of the system")] = "",
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    settle_timeout_s: SettleTimeout = 0,
    max_explain: Annotated[int, Param("At most this many unassigned shards are explained (allocation explain) per domain",
                                      ge=1, le=100)] = MAX_EXPLAIN_DEFAULT,
    poll_s: Annotated[float, Param("Seconds between cluster health reads while waiting for the shards", gt=0, le=60)] = 2.0,
    undo_run: UndoRun = "",
) -> Any:
    """Diagnose every OpenSearch domain of the system (or ``domain``) that is red or yellow, and retry failed allocations.

    dry_run (default) ends after the plan. Otherwise the run asks for approval
    (a form on the paused run in the UI; the shell's prompt or --yes), then retries the shards that
    failed allocation too many times, waits until they are STARTED (at most
    ``settle_timeout_s``, default the inventory's), reads the cluster again,
    records and notifies. Disk, lost primaries and too few nodes are findings
    with the exact fix (EBS size, snapshot restore), never applied.
    ``undo_run``: the retry has no inverse (it only let the allocator try
    again); the run says so for that flow run's records and changes nothing.
    """
    inv = load_system(system)
    urls: dict[str, str] = {}
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s,
                              appliers=appliers(urls))
    with session:
        identity = session.identity()
        if undo_run:
            plan = undo_plan(inv, RUNBOOK, identity, read_records.submit(inv).result(), undo_run, appliers={}, iam_actions={},
                             irreversible={RETRY_KIND: "a retry only let the allocator try again; there is nothing to put back"})
            session.gate(plan)
            return session.finish()
        ts = targets(inv, domain or None)
        if not ts:
            session.report.findings.append(Finding(check="opensearch-domains", resource=inv.name, status=Status.OK, value=0, summary=(
                "no OpenSearch domain in the inventory: nothing to check (name one with domain=NAME)")))
        ts = read_all(inv, ts, max_explain)
        urls.update({t.domain.name: t.info.endpoint for t in ts if t.info and t.info.endpoint})
        for t in ts:
            session.report.findings += judge_domain(inv, t)
            if not t.named:
                session.report.findings.append(Finding(check="opensearch-domains", resource=t.domain.name, status=Status.WARN, summary=(
                    f"not in {inv.name}'s inventory: checked because it was asked for (no snapshot repository known)")))
        plan = make_plan.submit(inv, identity, ts).result()
        if session.gate(plan):
            act_and_verify(session, inv, identity, ts, settle_timeout_s or inv.mutations.settle_timeout_s, poll_s, max_explain)
    return session.finish()


def act_and_verify(session: MutationSession, inv: System, identity: Identity, ts: list[Target], settle: float, poll_s: float,
                   max_explain: int) -> None:
    """After approval: the retries through the mechanism (independent: a failed one does not stop the others), the wait for
    the retried copies, the clusters read again (the report shows the state after), record, notify."""
    done, ok = session.act(identity, undo_on_failure=False)

    def word(r: Record, settled: bool, what: str, secs: float) -> str:
        return retry_outcome(str(r.before), settled, what, retried_keys(r.after or ""), secs)

    done = session.settle(done, settle, poll_s=poll_s, word=word)
    by_name = {t.domain.name: t for t in ts}
    applied = sorted({r.resource for r in done if r.status in ("applied", "verified")})
    after = read_all(inv, [Target(domain=by_name[d].domain, named=by_name[d].named) for d in applied], max_explain)
    fresh = {t.domain.name: [f for f in judge_domain(inv, t) if f.check in CLUSTER_CHECKS] for t in after}
    session.report.findings = [f for f in session.report.findings
                               if not (f.check in CLUSTER_CHECKS and f.resource.split("/")[0] in fresh)]
    for d in sorted(fresh):
        session.report.findings += fresh[d]
    session.report.findings += [retry_finding(r.resource, r.status, r.detail) for r in done]
    session.record(done)
    session.conclude(done, ok, lambda r: f"{r.resource}: {r.status}; {r.detail or r.after}")


TASKS = [read_domain_status, read_cluster_allocation, read_restore_points, steps_policy(appliers({}))] + SESSION_TASKS
