"""restore-index: bring an OpenSearch index back from a snapshot, behind its alias (or in place), with an undo.

Source: 000 백업/복구 (OpenSearch 스냅샷 복구): ``POST _snapshot/backup_repo/<snap>/_restore``
with ``"indices": "employee_profiles"``, ``rename_pattern`` / ``rename_replacement``
(``restored_$1``), and the DR test's ``_snapshot/backup_repo/latest/_restore``. The
seed stops at the restore call; this runbook picks the snapshot, restores, shows
the progress, verifies, and puts the data where the application reads it.

Parameters: ``index`` (the index, or the alias the application reads), ``snapshot``
(a name, or ``latest``: the newest SUCCESS snapshot in the domain's repository that
holds the index, never one of this runbook's own ``pre-restore-`` snapshots),
``domain`` (only needed when the system has several), ``alias``
(the alias the application reads, when the cluster cannot say: the index was
deleted and its aliases with it). The repository is the inventory's
``opensearch_domains[].snapshot_repository``, ``backup_repo`` (the seed's) when unset.

Steps: confirm identity -> DescribeDomain (the endpoint) -> close the steps a killed
run left open -> read the snapshots and what the name is now (alias, index,
nothing), at once -> pick the snapshot (a named one that lacks the index, or is not
SUCCESS, is refused, naming the snapshots that do hold it) -> read the restored
copy / the aliases / the pre-restore snapshot -> plan -> (dry run ends here) ->
approve -> the mutation mechanism's steps (lease, drift check, intent -> act ->
outcome each) -> verify (counts, aliases, the RTO) -> record -> notify.

RTO: from the snapshot restore's start (the restored index's ``_recovery``: a restore
a killed run started counts from then) to the restored index verified (its documents
counted right) and, aliased, to the alias switched onto it; against the inventory's
``dr.rto_index_minutes`` (OK within it, WARN over). On the sandbox the figure is
labelled as such: the test double moves no data.

Aliased (the name is an alias, the index has aliases, or ``alias=`` is given):
 1. ``index-restore``: restore the index under ``<index>-restored-<snapshot>``
    (without the snapshot's aliases); progress from ``_recovery`` (a progress
    artifact and a line on stderr) until every shard copy is DONE, at most
    ``settle_timeout_s``;
 2. ``index-alias`` (one per alias): count the copy's documents first against the
    snapshot's ``metadata.doc_counts`` when the snapshot carries it, else against the
    copy's own ``_stats`` (every document its primaries hold is searchable; the
    report says which); only then one ``POST _aliases`` that removes the alias from
    the live index and adds it to the copy, together. The live index keeps its data.
 Undo moves the aliases back; the restored copy is kept (delete it by hand).
Not aliased (the application reads the index by name):
 1. ``index-pre-snapshot``: snapshot the live index as it is
    (``pre-restore-<index>-<snapshot>``, with its document count in the snapshot's
    metadata), so that there is something to undo to;
 2. ``index-data``: close it (searches and writes fail until it reopens), restore
    it from the snapshot over itself, wait for the recovery, reopen; verify the count.
 Undo restores the pre-restore snapshot over it the same way. An index that is
 gone (and no alias known) is restored under its own name; that has no undo.

Idempotent and kill-safe: the copy's and the pre-restore snapshot's names derive
from the index and the snapshot, and every step reads the cluster before acting
(a copy restored from that snapshot is continued, never restored twice; an index of
that name with other data is refused); a run killed between a step's intent and its
outcome is closed from the live state by the next run (opsbook.mutation.steps),
which then plans only what is left. A restore accepted just before a kill goes on in
the cluster; the next run finds the copy and waits for its recovery.

Where an index came from is read from its ``_recovery`` (a SNAPSHOT recovery names
the repository and snapshot). A cluster forgets that once the shards relocate or
the cluster restarts: a copy is then recognised by its name (it derives from the
index and the snapshot, and its documents are counted before any alias moves), but
an index restored in place reads as live again, so a re-run would restore it again
and an undo would find nothing to put back: undo soon, or by hand from
``pre-restore-<index>-<snapshot>``.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from flows.restore_index import judge as j
from opsbook import aws
from opsbook.collect import future_value
from opsbook.findings import Finding, Status
from opsbook.iam import aws_task, declares
from opsbook.inventory import OpenSearchDomain, System, load_system
from opsbook.mutation.core import Applier, Identity, Plan, Record, Refused, undo_plan
from opsbook.mutation.session import (
    SESSION_TASKS,
    MutationSession,
    read_records,
    steps_policy,
)
from opsbook.mutation.verify import change_findings
from opsbook.params import (
    ApprovalTimeout,
    Approver,
    DryRun,
    Param,
    SettleTimeout,
    SystemName,
    UndoRun,
)
from tasks import opensearch as ops
from tasks.opensearch import IndexSnapshot, LiveIndex, read_domain_status

RUNBOOK = j.RUNBOOK
READ = ["es:ESHttpGet"]


# --- the steps ---------------------------------------------------------------------------------


class RestoreWork:
    """This run's steps on one domain. ``chosen``/``copy``: the forward run's snapshot and restored copy (None in an undo
    run, or when only closing a killed run's open steps)."""

    def __init__(self, system: System, domain: OpenSearchDomain, url: str, settle_s: float, poll_s: float) -> None:
        self.system, self.domain, self.url, self.settle_s, self.poll_s = system, domain, url, settle_s, poll_s
        self.repo = j.repository(domain)
        self.chosen: j.Chosen | None = None
        self.copy: str | None = None
        self.counted: dict[str, Finding] = {}
        self._snaps: dict[str, list[IndexSnapshot]] = {}
        self.called: dict[str, float] = {}  # index -> when this run asked for its restore (epoch s)
        self.verified_at: dict[str, float] = {}  # index -> when its documents first counted right
        self.switched_at: float | None = None  # when the last alias moved onto the copy

    def appliers(self) -> dict[str, Applier]:
        return {j.RESTORE_KIND: Applier(read=self.read_copy, apply=self.restore_copy),
                j.ALIAS_KIND: Applier(read=self.read_alias, apply=self.move_alias),
                j.PRE_SNAPSHOT_KIND: Applier(read=self.read_pre_snapshot, apply=self.take_pre_snapshot),
                j.DATA_KIND: Applier(read=self.read_data, apply=self.restore_in_place)}

    @staticmethod
    def name(resource: str) -> str:
        return resource.split("/")[-1]

    def live(self, name: str) -> LiveIndex:
        return ops.read_live_index(self.url, self.system.region, name)

    # restored copy (aliased)
    @declares(READ)
    def read_copy(self, system: System, resource: str) -> str:
        return j.copy_value(self.live(self.name(resource)))

    @declares(["es:ESHttpGet", "es:ESHttpPost"])
    def restore_copy(self, system: System, resource: str, value: str) -> None:
        copy, src = self.name(resource), j.parse_value(value)
        if src is None:
            raise RuntimeError(f"{copy}: not removed ({value} asked); the restored copy is kept: delete it by hand when no longer needed")
        now = self.read_copy(system, resource)
        if now == j.ABSENT:
            index = copy[: -len(f"-restored-{src[1]}")]
            self.called[copy] = time.time()
            ops.restore_from_snapshot(self.url, system.region, src[0], src[1], index, copy)
        elif now != value:
            raise RuntimeError(f"{copy} exists and reads as {now}, not {value}: not restored over")
        self.wait_recovered(copy)

    # alias (aliased)
    @declares(READ)
    def read_alias(self, system: System, resource: str) -> str:
        held = self.live(self.name(resource))
        return j.alias_value(held.indices if held.is_alias else [])

    @declares(["es:ESHttpGet", "es:ESHttpPost"])
    def move_alias(self, system: System, resource: str, value: str) -> None:
        alias = self.name(resource)
        if value == self.copy:  # never onto a copy whose documents are not all there (a re-run: it may still recover)
            self.wait_recovered(value)
            verdict = self.count(value)
            if verdict.status is not Status.OK:
                raise RuntimeError(f"{alias} not moved: {verdict.summary}")
        held = self.live(alias)
        ops.switch_alias(self.url, system.region, alias, held.indices if held.is_alias else [],
                         None if value == j.NO_ALIAS else value)
        if value == self.copy:
            self.switched_at = time.time()

    # pre-restore snapshot (not aliased)
    @declares(READ)
    def read_pre_snapshot(self, system: System, resource: str) -> str:
        repo, name = resource.split("/")[-2:]
        return ops.snapshot_state(self.url, system.region, repo, name) or j.ABSENT

    @declares(["es:ESHttpGet", "es:ESHttpPut"])
    def take_pre_snapshot(self, system: System, resource: str, value: str) -> None:
        repo, name = resource.split("/")[-2:]
        if value != "SUCCESS" or self.chosen is None:
            raise RuntimeError(f"{name}: a pre-restore snapshot is kept; not deleted")
        if self.read_pre_snapshot(system, resource) == "SUCCESS":
            return
        index = self.chosen.index
        live = self.live(index)
        state = ops.take_index_snapshot(self.url, system.region, repo, name, index, {
            "doc_counts": {index: live.count} if live.count is not None else {}, "taken_by": f"opsbook {RUNBOOK}",
            "before_restoring": f"{self.chosen.repository}/{self.chosen.snapshot}"})
        if state != "SUCCESS":
            raise RuntimeError(f"snapshot {repo}/{name} of {index} ended {state}: nothing to undo to, so not restored over")

    # the index itself (not aliased)
    @declares(READ)
    def read_data(self, system: System, resource: str) -> str:
        return j.data_value(self.live(self.name(resource)))

    @declares(["es:ESHttpGet", "es:ESHttpPost"])
    def restore_in_place(self, system: System, resource: str, value: str) -> None:
        index = self.name(resource)
        live = self.live(index)
        if value == j.LIVE:  # the undo: its pre-restore snapshot back
            if not live.source:
                raise RuntimeError(f"{index} was not restored from a snapshot: nothing to put back")
            repo, snap = live.source.split("/", 1)
            src: tuple[str, str] | None = (repo, j.pre_snapshot_name(index, snap))
        else:
            src = j.parse_value(value)
        if src is None:
            raise RuntimeError(f"{index}: {value} cannot be restored (deleting a restored index is left to a person)")
        if j.data_value(live) != j.source_value(*src):
            if live.exists and live.state == "open":
                ops.close_index(self.url, system.region, index)
            self.called[index] = time.time()
            ops.restore_from_snapshot(self.url, system.region, src[0], src[1], index, index)
        self.wait_recovered(index)
        ops.open_index(self.url, system.region, index)  # a restore opens it; a run killed after the close did not

    # progress and counts
    def wait_recovered(self, index: str) -> None:
        """Poll _recovery (a progress artifact, a line on stderr) until every shard copy is DONE, at most settle_s."""
        progress = create_progress_artifact(progress=0.0, description=f"{RUNBOOK}: restoring {index}")
        started = time.monotonic()
        while True:
            done, total, pct = j.recovery_progress(ops.read_recovery(self.url, self.system.region, index), index)
            update_progress_artifact(progress, progress=min(100.0, pct))
            print(f"opsbook: {RUNBOOK}: {j.progress_line(index, done, total, pct)}", file=sys.stderr)
            if (total and done == total) or time.monotonic() - started >= self.settle_s:
                return
            time.sleep(self.poll_s)

    def expected(self, index: str, source: str | None) -> tuple[int | None, str | None]:
        """(documents the source snapshot's metadata says its index had, the source) for an index restored from it."""
        if not source:
            return None, None
        repo, snap = source.split("/", 1)
        if repo not in self._snaps:
            self._snaps[repo] = ops.read_repository_snapshots(self.url, self.system.region, repo)
        meta = next((s for s in self._snaps[repo] if s.name == snap), None)
        original = index.removesuffix(f"-restored-{snap}")
        return (meta.doc_counts.get(original) if meta else None), source

    def count(self, index: str) -> Finding:
        """The index's documents against its source snapshot's count (or its own stats), as a finding."""
        resource, then = f"{self.domain.name}/{index}", j.IF_SHORT[j.ALIAS_KIND if index == self.copy else j.DATA_KIND]
        try:
            live = self.live(index)
            expected, source = self.expected(index, live.source)
            searchable, primaries = ops.index_doc_counts(self.url, self.system.region, index)
            verdict = j.count_finding(resource, index, searchable, primaries, expected, source, then=then)
        except Exception as exc:  # e.g. 503 while every primary still recovers
            verdict = j.count_finding(resource, index, None, None, None, None, ops.os_error(exc)[1], then=then)
        self.counted[index] = verdict
        if verdict.status is Status.OK:
            self.verified_at.setdefault(index, time.time())
        return verdict

    def rto(self, records: list[Record]) -> Finding | None:
        """A forward run that restored or switched: the snapshot restore's start (the cluster's _recovery, so a restore an
        earlier, killed, run started counts from then; else when this run asked) to the index verified and the alias switched,
        against dr.rto_index_minutes. None: an undo, or nothing restored or switched by this run."""
        if self.chosen is None or not any(r.kind in (j.RESTORE_KIND, j.ALIAS_KIND, j.DATA_KIND) for r in records):
            return None
        index = self.copy or self.chosen.index
        started_ms, error = None, None
        try:
            started_ms = j.restore_started_ms(ops.read_recovery(self.url, self.system.region, index), index)
        except ops.TransportError as exc:  # its start is then this run's call, when it made one; else not measured, saying why
            error = ops.os_error(exc)[1]
        started = started_ms / 1000 if started_ms is not None else self.called.get(index)
        return j.rto_finding(f"{self.domain.name}/{index}", started, self.verified_at.get(index), self.switched_at,
                             self.copy is not None, self.system.dr.rto_index_minutes, aws.is_loopback_url(aws.endpoint_url()),
                             start_error=error)


# --- reading and planning ------------------------------------------------------------------------


@aws_task(iam=READ, name="read-snapshots-and-index", cache_policy=NO_CACHE)
def read_start(system: System, url: str, repo: str, name: str) -> tuple[list[IndexSnapshot], LiveIndex]:
    return ops.read_repository_snapshots(url, system.region, repo), ops.read_live_index(url, system.region, name)


@aws_task(iam=READ, name="read-restore-targets", cache_policy=NO_CACHE)
def read_targets(system: System, url: str, copy: str | None, aliases: list[str], repo: str, pre: str | None
                 ) -> tuple[LiveIndex | None, dict[str, list[str]], str | None]:
    """The restored copy's name as it is now, each alias's indices, the pre-restore snapshot's state."""
    copy_now = ops.read_live_index(url, system.region, copy) if copy else None
    now = {a: ops.read_live_index(url, system.region, a) for a in aliases}
    state = ops.snapshot_state(url, system.region, repo, pre) if pre else None
    return copy_now, {a: v.indices if v.is_alias else [] for a, v in now.items()}, state


@task(name="plan-restore", cache_policy=NO_CACHE)
def make_plan(inv: System, identity: Identity, domain: str, c: j.Chosen, live: LiveIndex, aliases: list[str], copy: LiveIndex | None,
              aliases_now: dict[str, list[str]], pre_state: str | None) -> Plan:
    return j.plan_restore(inv, identity, domain, c, live, aliases, copy, aliases_now, pre_state)


def plan_forward(inv: System, work: RestoreWork, identity: Identity, index: str, snapshot: str, alias: str) -> Plan:
    """What the name is, which snapshot, the names derived from both, their state now -> the plan."""
    try:
        snaps, live = read_start.submit(inv, work.url, work.repo, index).result()
    except ops.RepositoryMissing as exc:
        raise Refused(f"{exc} of {work.domain.name} (inventory: opensearch_domains[].snapshot_repository); nothing was changed") from None
    try:
        name, aliases = j.concrete(live, snaps)
        chosen = j.pick_snapshot(work.repo, snaps, name, snapshot)
    except j.RestoreError as exc:
        raise Refused(f"{exc}; nothing was changed") from None
    aliases = sorted(set(aliases) | ({alias} if alias else set()))
    if live.is_alias or name != index:
        live = ops.read_live_index(work.url, inv.region, name)
    work.chosen, work.copy = chosen, j.restored_name(name, chosen.snapshot) if aliases else None
    pre = j.pre_snapshot_name(name, chosen.snapshot) if not aliases and live.exists else None
    copy, aliases_now, pre_state = read_targets.submit(inv, work.url, work.copy, aliases, work.repo, pre).result()
    return make_plan.submit(inv, identity, work.domain.name, chosen, live, aliases, copy, aliases_now, pre_state).result()


@aws_task(iam=READ, name="plan-undo", cache_policy=NO_CACHE)
def plan_undo(inv: System, identity: Identity, records: list[dict[str, Any]], run_id: str, work: RestoreWork) -> Plan:
    """Aliases back where they were; an index restored in place gets its pre-restore snapshot back. The restored copy and
    the pre-restore snapshot are kept (noted); an index restored under its own name after it was gone has no undo."""
    steps = {k: a for k, a in work.appliers().items() if k in (j.ALIAS_KIND, j.DATA_KIND)}
    kept = {j.RESTORE_KIND: "the restored copy is kept (delete it by hand when no longer needed)",
            j.PRE_SNAPSHOT_KIND: "the pre-restore snapshot is kept: it is what an undo restores"}
    plan = undo_plan(inv, RUNBOOK, identity, records, run_id, steps, j.IAM, irreversible=kept)
    plan.notes += [c for c in plan.cannot if any(f"{k} has no undo" in c for k in kept)]
    plan.cannot = [c for c in plan.cannot if c not in plan.notes]
    gone = [a for a in plan.actions if a.target == j.ABSENT]
    plan.cannot += [f"{a.resource}: restored after it was gone; no undo (it would delete the restored index): delete it by hand "
                    "if really meant" for a in gone]
    plan.actions = [a for a in plan.actions if a not in gone]
    return plan


# --- acting and verifying --------------------------------------------------------------------------


@aws_task(iam=["es:ESHttpGet", "es:ESHttpPost"], name="verify-restore", cache_policy=NO_CACHE)
def verify(system: System, work: RestoreWork, records: list[Record]) -> list[Finding]:
    """Read back: each restored index's documents counted (what the alias step already counted is not counted again), the
    pre-restore snapshot SUCCESS, each alias on its target; the RTO of a forward run."""
    out = []
    for r in records:
        if r.status != "applied":
            continue
        if r.kind in (j.RESTORE_KIND, j.DATA_KIND):
            index = work.name(r.resource)
            if index not in work.counted:
                work.count(index)
        elif r.kind == j.PRE_SNAPSHOT_KIND:
            state = work.read_pre_snapshot(system, r.resource)
            out.append(Finding(check="restore-pre-snapshot", resource=r.resource, status=Status.OK if state == "SUCCESS" else Status.CRIT,
                               summary=f"{work.name(r.resource)}: {state}" + (" (what an undo restores)" if state == "SUCCESS" else "")))
        elif r.kind == j.ALIAS_KIND:
            now = work.read_alias(system, r.resource)
            out.append(Finding(check="restore-alias", resource=r.resource, status=Status.OK if now == r.after else Status.CRIT,
                               summary=f"{work.name(r.resource)} is on {now}" + ("" if now == r.after else f", not on {r.after}")))
    rto = work.rto(records)
    return list(work.counted.values()) + out + ([rto] if rto else [])


def act(session: MutationSession, inv: System, identity: Identity, work: RestoreWork) -> None:
    """After approval: the steps (a failed one stops the rest and undoes nothing: a restored copy is kept and a re-run
    continues from it), verify, record, notify."""
    done, ok = session.act(identity, undo_on_failure=False)
    checks = verify.submit(inv, work, done).result()
    good = {f.resource for f in checks if f.status is Status.OK}
    done = [r.model_copy(update={"status": "verified"}) if r.status == "applied" and r.resource in good else r for r in done]
    session.record(done)
    session.report.findings += checks + change_findings("restore-step", done)
    session.conclude(done, ok and all(f.status is Status.OK for f in checks if f.check == "restore-count"))


# --- the runbook -----------------------------------------------------------------------------------


@flow(name=RUNBOOK, log_prints=False, validate_parameters=True, timeout_seconds=7 * 86400)
def restore_index(
    system: SystemName,
    index: Annotated[str, Param("The index to restore, or the alias the application reads it by (not needed with undo_run)")] = "",
    snapshot: Annotated[str, Param("The snapshot to restore from; latest: the newest successful snapshot in the domain's "
                                   "repository that holds the index (never this runbook's own pre-restore-... snapshots)",
                                   min_length=1)] = j.LATEST,
    domain: Annotated[str, Param("The OpenSearch domain; empty: the system's only one")] = "",
    alias: Annotated[str, Param("The alias the application reads the index by, when the cluster cannot say (the index is "
                                "gone, and its aliases with it); empty: the aliases the cluster shows")] = "",
    dry_run: DryRun = True,
    approver: Approver = "",
    approval_timeout_s: ApprovalTimeout = 0,
    settle_timeout_s: SettleTimeout = 0,
    poll_s: Annotated[float, Param("Seconds between reads of the restore's progress (_recovery)", gt=0, le=60)] = 2.0,
    undo_run: UndoRun = "",
) -> Any:
    """Restore an OpenSearch index from a snapshot (a name or ``latest``) and put it where the application reads it: behind
    its alias (a restored copy, then the alias switched), or in place (snapshot, close, restore over, reopen).

    dry_run (default) ends after the plan. Otherwise the run asks for approval
    (a form on the paused run in the UI; the shell's prompt or --yes), restores with
    progress, counts the documents, switches, records and notifies, with the RTO (the restore's start to the index
    verified and the alias switched) against dr.rto_index_minutes.
    ``undo_run``: switch the aliases back / restore the pre-restore snapshot of that run.
    """
    inv = load_system(system)
    session = MutationSession(RUNBOOK, inv, dry_run=dry_run, approver=approver, approval_timeout_s=approval_timeout_s)
    with session:
        identity = session.identity()
        try:
            dom = j.pick_domain(inv, domain)
            if not undo_run and not index.strip():
                raise j.RestoreError("give index=NAME (the index, or the alias the application reads)")
            name = j.valid_name(index.strip(), "index") if not undo_run else index
            if alias:
                j.valid_name(alias, "alias")
        except j.RestoreError as exc:
            raise Refused(f"{exc}; nothing was changed") from None
        info = future_value(read_domain_status.submit(inv, dom))
        if isinstance(info, BaseException) or not info.exists or not info.endpoint:
            why = aws.describe_error(info) if isinstance(info, BaseException) else "it does not exist or has no endpoint yet"
            raise Refused(f"OpenSearch domain {dom.name}: {why}; nothing was changed")
        work = RestoreWork(inv, dom, info.endpoint, settle_timeout_s or inv.mutations.settle_timeout_s, poll_s)
        session.appliers = work.appliers()
        session.recover(session.appliers)
        if undo_run:
            plan = plan_undo.submit(inv, identity, read_records.submit(inv).result(), undo_run, work).result()
        else:
            plan = plan_forward(inv, work, identity, name, snapshot.strip(), alias)
        if session.gate(plan):
            act(session, inv, identity, work)
    return session.finish()


TASKS = [read_domain_status, read_start, read_targets, plan_undo, verify, steps_policy(RestoreWork.__new__(RestoreWork).appliers())] + SESSION_TASKS
