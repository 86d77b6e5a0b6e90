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
ends here) -> approve -> lease -> drift check (the failed copies are read
again) -> retry -> poll ``_cluster/health`` and the retried copies until they
are STARTED (bounded by ``settle_timeout_s``, progress artifact + stderr) ->
read the cluster again (the report shows the state after) -> record -> notify.
Running it again once the cluster is green plans nothing.

API calls per domain: 1 DescribeDomain + 2 HTTP on a green cluster (health,
``_cat/allocation``); a red one adds ``_cat/indices``, ``_cat/shards``, one
explain per distinct unassigned shard (<= ``max_explain``), 1 snapshot listing
when a primary is lost; a retry adds 2 for the drift check, 1 reroute, 2 a
poll round and the re-read; plus the session's (identity, lease, records, SNS).
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
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
    not_recovered,
    recovered,
    retried_copies,
)
from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task
from opsbook.inventory import OpenSearchDomain, System, load_system
from opsbook.mutation.core import Approval, Identity, Plan, Record, Refused, undo_plan
from opsbook.mutation.session import SESSION_TASKS, MutationSession, mark_verified, read_records
from opsbook.params import ApprovalTimeout, Approver, DryRun, Param, SettleTimeout, SystemName, UndoRun
from tasks.opensearch import (
    MAX_EXPLAIN_DEFAULT,
    os_error,
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


# --- tasks -------------------------------------------------------------------------------


@task(name="plan-opensearch-retry", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, ts: list[Target]) -> Plan:
    return decide(inv, identity, ts)


@aws_task(iam=["es:ESHttpGet"], name="check-opensearch-drift", cache_policy=NO_CACHE)
def check_drift(system: System, plan: Plan, urls: dict[str, str]) -> None:
    """The failed copies are read again after approval: any difference stops the run before anything is done."""
    drifted = []
    for a in plan.actions:
        now = failed_state(*read_failed_copies(system, urls[a.resource]))
        if now != a.current:
            drifted.append(f"{a.resource} was '{a.current}' when planned and is now '{now}'")
    if drifted:
        raise Refused("the cluster changed since the plan was made; nothing was changed (run again to plan afresh): " + "; ".join(drifted))


@aws_task(iam=["es:ESHttpPost"], name="retry-failed-allocation", cache_policy=NO_CACHE, read_only=False)
def apply_retries(system: System, plan: Plan, urls: dict[str, str], approval: Approval, identity: Identity, run_id: str) -> list[Record]:
    """One reroute per domain. Each is independent and harmless, so a failure is recorded and the rest still run."""
    base = dict(runbook=plan.runbook, system=plan.system, flow_run_id=run_id, approver=approval.approver, approved_via=approval.via,
                caller_arn=identity.arn, plan_fingerprint=plan.fingerprint)
    records = []
    for a in plan.actions:
        try:
            retry_failed(system, urls[a.resource])
            records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=a.target, status="applied"))
        except Exception as exc:  # recorded; the run ends failed
            records.append(Record(**base, resource=a.resource, kind=a.kind, before=a.current, after=None, status="failed",
                                  detail=aws.describe_error(exc)))
    return records


@aws_task(iam=["es:ESHttpGet"], name="wait-cluster-recovered", cache_policy=NO_CACHE)
def wait_health(system: System, waits: list[tuple[str, str, str, list[str]]], timeout_s: float, poll_s: float) -> dict[str, Finding]:
    """Poll each domain's health (and the retried copies) until every retried copy is STARTED, or the timeout.

    ``waits``: (domain, url, status before, retried copies). Progress goes to a Prefect progress artifact
    and a line on stderr each round; the wait never exceeds ``timeout_s`` (plus one poll)."""
    started = time.monotonic()
    pending = {t[0]: t for t in waits}
    last: dict[str, tuple[str | None, int, list[str]] | str] = {}
    out: dict[str, Finding] = {}
    progress = create_progress_artifact(progress=0.0, description=f"{RUNBOOK}: waiting for {len(pending)} domain(s) to recover")
    while pending:
        for dom, (_, url, before, keys) in list(pending.items()):
            try:
                last[dom] = poll_domain(system, url, keys)
            except Exception as exc:  # keep polling: a cluster under recovery can answer slowly
                last[dom] = os_error(exc)[1]
                continue
            status, _, left = last[dom]  # type: ignore[misc]
            if not left:
                out[dom] = recovered(dom, before, status, keys, round(time.monotonic() - started, 1))
                del pending[dom]
        elapsed = time.monotonic() - started
        done = len(waits) - len(pending)
        update_progress_artifact(progress, progress=100.0 * min(1.0, max(done / max(len(waits), 1), elapsed / max(timeout_s, 1e-9))))
        if pending:
            print(f"opsbook: {RUNBOOK}: {done}/{len(waits)} recovered after {elapsed:.0f}/{timeout_s:g} s; "
                  + "; ".join(f"{d}: " + (f"{v[0]}, {v[1]} unassigned, {len(v[2])} retried copy(ies) not started"
                                          if isinstance(v, tuple) else str(v))
                              for d, v in ((d, last.get(d, "no answer yet")) for d in pending)), file=sys.stderr)
        if not pending or elapsed >= timeout_s:
            break
        time.sleep(min(poll_s, max(0.0, timeout_s - elapsed)))
    for dom, (_, _, before, keys) in pending.items():
        out[dom] = not_recovered(dom, before, keys, timeout_s, last.get(dom, "no answer"))
    update_progress_artifact(progress, progress=100.0)
    return out


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
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
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
        for t in ts:
            session.report.findings += judge_domain(inv, t)
            if not t.named:
                session.report.findings.append(Finding(check="opensearch-domains", resource=t.domain.name, status=Status.WARN, summary=(
                    f"not in {inv.name}'s inventory: checked because it was asked for (no snapshot repository known)")))
        plan = make_plan.submit(inv, identity, ts).result()
        if session.gate(plan):
            act_and_verify(session, inv, identity, plan, ts, settle_timeout_s or inv.mutations.settle_timeout_s, poll_s,
                           max_explain)
    return session.finish()


def act_and_verify(session: MutationSession, inv: System, identity: Identity, plan: Plan, ts: list[Target], settle: float,
                   poll_s: float, max_explain: int) -> None:
    """After approval: lease, drift check, retry, wait for the retried copies, read the clusters again, record, notify."""
    session.lease()
    by_name = {t.domain.name: t for t in ts}
    urls = {a.resource: by_name[a.resource].info.endpoint for a in plan.actions}  # type: ignore[union-attr]
    check_drift.submit(inv, plan, urls).result()
    done = apply_retries.submit(inv, plan, urls, session.approval, identity, session.run_id).result()
    applied = {r.resource for r in done if r.status == "applied"}
    waits = [(a.resource, urls[a.resource], by_name[a.resource].cluster.status or "red",  # type: ignore[union-attr]
              retried_copies(by_name[a.resource].cluster)) for a in plan.actions if a.resource in applied]  # type: ignore[arg-type]
    settled = wait_health.submit(inv, waits, settle, poll_s).result() if waits else {}
    seen = {(RETRY_KIND, d): (f.status is Status.OK, f.summary) for d, f in settled.items()}
    done = mark_verified(done, seen, settle)
    after = read_all(inv, [Target(domain=by_name[d].domain, named=by_name[d].named) for d in sorted(applied)], max_explain)
    fresh = {t.domain.name: [f for f in judge_domain(inv, t) if f.check in CLUSTER_CHECKS] for t in after}
    session.report.findings = [f for f in session.report.findings
                               if not (f.check in CLUSTER_CHECKS and f.resource.split("/")[0] in fresh)]
    for d in sorted(fresh):
        session.report.findings += fresh[d]
    session.report.findings += list(settled.values())
    session.report.findings += [Finding(check="opensearch-retry", resource=r.resource, status=Status.CRIT,
                                        summary=f"retry failed: {r.detail}") for r in done if r.status == "failed"]
    session.record(done)
    session.done(all(r.status != "failed" for r in done))
    session.notify(session.report.outcome, [f"{r.resource}: {r.status}; {r.detail or r.after}" for r in done])


TASKS = [read_domain_status, read_cluster_allocation, read_restore_points, check_drift, apply_retries, wait_health] + SESSION_TASKS
