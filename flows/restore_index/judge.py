"""restore-index's decisions (pure: no cluster, no Prefect, no clock): which snapshot, the names, the plan, the
restore's progress, what the counts read back mean, the RTO. See flow.py's docstring for the procedure."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from opsbook import rto
from opsbook.findings import Finding, Status
from opsbook.inventory import OpenSearchDomain, System
from opsbook.mutation.core import Action, Identity, Plan
from tasks.opensearch import IndexSnapshot, LiveIndex

RUNBOOK = "restore-index"
DEFAULT_REPOSITORY = "backup_repo"  # 000's repository (_snapshot/backup_repo/<snap>/_restore), when the inventory names none
LATEST = "latest"
RESTORE_KIND, ALIAS_KIND = "index-restore", "index-alias"  # aliased: a restored copy, then the alias moved onto it
PRE_SNAPSHOT_KIND, DATA_KIND = "index-pre-snapshot", "index-data"  # not aliased: the live index saved, then restored over
ABSENT, NO_ALIAS, LIVE = "absent", "none", "live"
PRE_PREFIX = "pre-restore-"
IAM = {RESTORE_KIND: "es:ESHttpPost", ALIAS_KIND: "es:ESHttpPost", PRE_SNAPSHOT_KIND: "es:ESHttpPut", DATA_KIND: "es:ESHttpPost"}
_BAD = set(' "\\/*?<>|,#:')


class RestoreError(ValueError):
    """What was asked cannot be restored (the runbook turns it into Refused, naming the way out)."""


class Chosen(BaseModel):
    """The snapshot the run restores from."""

    repository: str
    snapshot: str
    index: str  # the concrete index, as the snapshot holds it
    start_ms: int | None = None
    expected: int | None = Field(None, description="documents the snapshot's metadata says the index had; None: it does not say")
    latest: bool = False

    @property
    def value(self) -> str:
        return source_value(self.repository, self.snapshot)


def source_value(repository: str, snapshot: str) -> str:
    """How an index restored from a snapshot reads (the steps' value)."""
    return f"snapshot {repository}/{snapshot}"


def pick_domain(system: System, domain: str) -> OpenSearchDomain:
    doms = system.opensearch_domains
    if domain:
        hit = next((d for d in doms if d.name == domain), None)
        if hit is None:
            raise RestoreError(f"{domain!r} is not an OpenSearch domain of {system.name} (its domains: "
                               f"{', '.join(d.name for d in doms) or 'none'})")
        return hit
    if len(doms) == 1:
        return doms[0]
    raise RestoreError(f"{system.name} has {len(doms)} OpenSearch domains ({', '.join(d.name for d in doms) or 'none'}): "
                       "give domain=NAME" if doms else f"{system.name} has no OpenSearch domain in its inventory")


def repository(d: OpenSearchDomain) -> str:
    return d.snapshot_repository or DEFAULT_REPOSITORY


def valid_name(name: str, what: str) -> str:
    if (not name or name != name.lower() or name[0] in "_-+" or name in (".", "..") or any(c in _BAD for c in name)
            or len(name.encode()) > 255):
        raise RestoreError(f"{what} {name!r} is not a valid OpenSearch name (lower case, no spaces, / \\ * ? \" < > | , # :, "
                           "not starting with _ - +)")
    return name


def restored_name(index: str, snapshot: str) -> str:
    """The restored copy's name: found again by a re-run, so there is never a second copy."""
    return valid_name(f"{index}-restored-{snapshot}", "the restored copy's name")


def pre_snapshot_name(index: str, snapshot: str) -> str:
    """The snapshot of the live index taken before it is restored over (what the undo restores)."""
    return valid_name(f"{PRE_PREFIX}{index}-{snapshot}", "the pre-restore snapshot's name")


def original(name: str, snaps: list[IndexSnapshot]) -> str:
    """The index a restored copy (``<index>-restored-<snapshot>``, of a snapshot in the repository) was restored from;
    any other name as it is."""
    base, sep, snap = name.rpartition("-restored-")
    return base if sep and base and any(s.name == snap for s in snaps) else name


def concrete(live: LiveIndex, snaps: list[IndexSnapshot]) -> tuple[str, list[str]]:
    """(the index the snapshot must hold, the aliases the application reads it by) for the name asked. An alias already
    on a copy an earlier run restored stands for the copy's original index."""
    if live.is_alias:
        if len(live.indices) != 1:
            raise RestoreError(f"{live.name} is an alias of {len(live.indices)} indices ({', '.join(live.indices)}): give "
                               "index=<one of them> and alias=" + live.name)
        return original(live.indices[0], snaps), [live.name]
    return live.name, list(live.aliases)


def pick_snapshot(repo: str, snaps: list[IndexSnapshot], index: str, wanted: str) -> Chosen:
    """The named snapshot, or with ``latest`` the newest SUCCESS one holding the index; RestoreError says why not. The
    snapshots this runbook takes before restoring in place (``pre-restore-...``) are undo points, never a backup: ``latest``
    passes them over (else a re-run would restore the damaged data it saved over the restored index)."""
    holding = [s for s in snaps if index in s.indices and s.state == "SUCCESS" and not s.name.startswith(PRE_PREFIX)]
    others = ", ".join(s.name for s in holding[:5]) or "none"
    if wanted == LATEST and not any(s.name == LATEST for s in snaps):
        if not holding:
            held = sorted({s.state for s in snaps if index in s.indices and not s.name.startswith(PRE_PREFIX)})
            saved = [s.name for s in snaps if index in s.indices and s.name.startswith(PRE_PREFIX)]
            raise RestoreError(f"no successful snapshot in {repo} holds {index} ({len(snaps)} snapshot(s) there"
                               + (f"; some that hold it are {', '.join(held)}" if held else "")
                               + (f"; {', '.join(saved[:3])} only saved it before a restore: put it back with undo_run=<that run's "
                                  "id>" if saved else "") + "): nothing to restore from")
        best = max(holding, key=lambda s: s.start_ms or 0)
        return Chosen(repository=repo, snapshot=best.name, index=index, start_ms=best.start_ms,
                      expected=best.doc_counts.get(index), latest=True)
    snap = next((s for s in snaps if s.name == wanted), None)
    if snap is None:
        raise RestoreError(f"no snapshot {wanted!r} in {repo}; snapshots holding {index}: {others} (or snapshot=latest)")
    if index not in snap.indices:
        raise RestoreError(f"snapshot {repo}/{wanted} does not hold index {index} (it holds "
                           f"{', '.join(snap.indices[:10]) or 'no index'}); snapshots holding {index}: {others}")
    if snap.state != "SUCCESS":
        raise RestoreError(f"snapshot {repo}/{wanted} is {snap.state}, not SUCCESS: some of its shards may be missing; "
                           f"successful snapshots holding {index}: {others}")
    if wanted.startswith(PRE_PREFIX):
        raise RestoreError(f"{wanted} is a snapshot this runbook took before restoring over {index}: put it back with "
                           "undo_run=<that run's id> instead")
    return Chosen(repository=repo, snapshot=snap.name, index=index, start_ms=snap.start_ms, expected=snap.doc_counts.get(index))


def data_value(live: LiveIndex) -> str:
    """How a (not aliased) index reads as a step's value: absent, live (its own data, or put back from its pre-restore
    snapshot), or the snapshot it was restored from; ", closed" when it is closed."""
    if not live.exists:
        return ABSENT
    base = LIVE
    if live.source and not live.source.split("/", 1)[-1].startswith(f"{PRE_PREFIX}{live.name}-"):
        base = f"snapshot {live.source}"
    return base + (", closed" if live.state == "close" else "")


def alias_value(indices: list[str]) -> str:
    return ",".join(sorted(indices)) or NO_ALIAS


def copy_value(copy: LiveIndex) -> str:
    """How the restored copy reads: absent, the snapshot it came from, or "not restored" (some other index of that name)."""
    if not copy.exists:
        return ABSENT
    return f"snapshot {copy.source}" if copy.source else "an index not restored from a snapshot"


def _count_note(c: Chosen, live: LiveIndex) -> str:
    expect = (f"the snapshot's metadata says {c.index} had {c.expected} documents: the restored index must hold as many"
              if c.expected is not None else
              "the snapshot carries no document count: the restored index is checked against its own stats (every document "
              "its primaries hold is searchable)")
    now = f"; {c.index} holds {live.count} documents now" if live.count is not None else ""
    return expect + now + ": documents written after the snapshot are not in the restore"


def plan_restore(system: System, identity: Identity, domain: str, c: Chosen, live: LiveIndex, aliases: list[str],
                 copy: LiveIndex | None, aliases_now: dict[str, list[str]], pre_state: str | None) -> Plan:
    """Aliased (``aliases``): restore a copy under a new name, then move each alias onto it. Not aliased: snapshot the
    live index, then restore over it (close, restore, reopen); an index that is gone is restored under its own name.
    ``copy``: the restored copy's name as it reads now (aliased); ``aliases_now``: alias -> its indices now;
    ``pre_state``: the pre-restore snapshot's state (None: not taken yet)."""
    plan = Plan(runbook=RUNBOOK, system=system.name, identity=identity)
    when = f", the newest successful one holding {c.index}" if c.latest else ""
    plan.notes.append(f"{domain}: restoring {c.index} from {c.repository}/{c.snapshot}{when}; {_count_note(c, live)}")
    clash = [a for a in aliases if live.exists and not live.is_alias and a == live.name]
    if clash:
        plan.cannot.append(f"{domain}/_alias/{clash[0]}: {clash[0]} is the name of the live index itself, and an alias cannot "
                           "have an index's name: give the alias the application reads (or no alias= to restore in place)")
    elif aliases:
        _plan_aliased(plan, domain, c, aliases, copy, aliases_now)
    else:
        _plan_in_place(plan, domain, c, live, pre_state)
    return plan


def _plan_aliased(plan: Plan, domain: str, c: Chosen, aliases: list[str], copy: LiveIndex | None,
                  aliases_now: dict[str, list[str]]) -> None:
    assert copy is not None
    now = copy_value(copy)
    if now == c.value:
        plan.unchanged.append(f"{domain}/{copy.name}: already restored from {c.repository}/{c.snapshot} (an earlier run): "
                              "continued, not restored again")
    elif copy.exists and not copy.source:  # its _recovery no longer says (relocated, or the cluster restarted, since)
        plan.unchanged.append(f"{domain}/{copy.name}: exists, taken as the copy an earlier run restored by its name (its "
                              "_recovery no longer names a snapshot: relocated or restarted since): continued, not restored "
                              "again; its documents are counted before any alias moves")
    elif now != ABSENT:
        plan.cannot.append(f"{domain}/{copy.name}: an index of that name exists and reads as {now}, not {c.value}: delete "
                           "or rename it, then run again")
        return
    else:
        plan.actions.append(Action(
            kind=RESTORE_KIND, resource=f"{domain}/{copy.name}", current=ABSENT, target=c.value, iam_action=IAM[RESTORE_KIND],
            evidence=f"POST _snapshot/{c.repository}/{c.snapshot}/_restore of {c.index} renamed {copy.name} (without the "
                     "snapshot's aliases); progress from its _recovery; the alias moves only once its documents are counted "
                     "right. The copy is kept after an undo (delete it by hand when no longer needed)"))
    for a in aliases:
        held = alias_value(aliases_now.get(a, []))
        if held == copy.name:
            plan.unchanged.append(f"{domain}/_alias/{a}: already on {copy.name}")
            continue
        plan.actions.append(Action(
            kind=ALIAS_KIND, resource=f"{domain}/_alias/{a}", current=held, target=copy.name, iam_action=IAM[ALIAS_KIND],
            evidence=f"the application reads {a}; one POST _aliases removes it from {held} and adds it to {copy.name} "
                     "together, only after the restored copy's documents are counted right; undo moves it back"
                     + (f" ({c.index} keeps its data: nothing is deleted)" if held != NO_ALIAS else
                        f" ({c.index} is gone, and its alias with it)")))


def _plan_in_place(plan: Plan, domain: str, c: Chosen, live: LiveIndex, pre_state: str | None) -> None:
    now = data_value(live)
    plan.notes.append(f"{domain}/{c.index} has no alias: the application reads the index by its name, so it is restored in "
                      "place" + ("" if live.exists else " (it is gone: restored under its own name; give alias=NAME if the "
                                                        "application reads an alias)"))
    if now == c.value:
        plan.unchanged.append(f"{domain}/{c.index}: already restored from {c.repository}/{c.snapshot}")
        return
    pre = pre_snapshot_name(c.index, c.snapshot)
    if live.exists and pre_state == "SUCCESS":
        plan.unchanged.append(f"{domain}/{c.repository}/{pre}: the live index was already saved (an earlier run)")
    elif live.exists and pre_state is not None:
        plan.cannot.append(f"{domain}/{c.repository}/{pre}: a pre-restore snapshot of that name is {pre_state}: delete it "
                           "(DELETE _snapshot/...), then run again")
        return
    elif live.exists:
        plan.actions.append(Action(
            kind=PRE_SNAPSHOT_KIND, resource=f"{domain}/{c.repository}/{pre}", current=ABSENT, target="SUCCESS",
            iam_action=IAM[PRE_SNAPSHOT_KIND], reversible=False,
            evidence=f"first a snapshot of {c.index} as it is now ({live.count if live.count is not None else '?'} documents), "
                     "so that there is something to undo to; it is kept"))
    plan.actions.append(Action(
        kind=DATA_KIND, resource=f"{domain}/{c.index}", current=now, target=c.value, iam_action=IAM[DATA_KIND],
        reversible=live.exists,
        evidence=(f"close {c.index} (searches and writes fail until it is open again), restore it from {c.repository}/"
                  f"{c.snapshot} over itself, reopen; undo restores {pre}" if live.exists else
                  f"restore {c.index} from {c.repository}/{c.snapshot} under its own name; no undo (it would delete the "
                  "restored index)")))


def recovery_progress(body: dict[str, Any], index: str) -> tuple[int, int, float]:
    """(shard copies DONE, copies, percent recovered) of an index's _recovery answer."""
    shards = (body.get(index) or {}).get("shards") or []
    done = sum(1 for s in shards if s.get("stage") == "DONE")
    pcts = []
    for s in shards:
        raw = str(((s.get("index") or {}).get("size") or {}).get("percent", "0%")).rstrip("%")
        try:
            pcts.append(100.0 if s.get("stage") == "DONE" else float(raw))
        except ValueError:
            pcts.append(0.0)
    return done, len(shards), (sum(pcts) / len(pcts)) if pcts else 0.0


def progress_line(index: str, done: int, total: int, pct: float) -> str:
    return f"{index}: {done}/{total} shard copies recovered, {pct:.0f} %"


IF_SHORT = {  # what a count that falls short means, by where the restored data is
    ALIAS_KIND: "not switched (the alias stays where it is); run again to continue",
    DATA_KIND: "the index is restored in place but incomplete: run again to continue, or undo_run=<this run> to put the "
               "live data back"}


def count_finding(resource: str, index: str, searchable: int | None, primaries: int | None, expected: int | None,
                  source: str | None, error: str | None = None, then: str = IF_SHORT[ALIAS_KIND]) -> Finding:
    """The restored index's documents read back: against the snapshot's count when it carries one, else against its own
    stats (what its primaries hold must all be searchable). Says which; ``then``: what a shortfall means."""
    where = f" (from {source})" if source else ""
    if error:
        return Finding(check="restore-count", resource=resource, status=Status.UNKNOWN,
                       summary=f"{index}{where}: documents could not be counted ({error}); not verified: {then}")
    if expected is not None:
        ok = searchable == expected
        return Finding(check="restore-count", resource=resource, status=Status.OK if ok else Status.CRIT, value=searchable,
                       details={"expected": expected, "against": "snapshot metadata", "primaries": primaries},
                       summary=f"{index}{where} holds {searchable} searchable documents; the snapshot's metadata says {expected}"
                               + ("" if ok else f": the restore is incomplete (still recovering, or shards failed): {then}"))
    ok = searchable is not None and primaries is not None and searchable == primaries and searchable >= 0
    return Finding(check="restore-count", resource=resource, status=Status.OK if ok else Status.CRIT, value=searchable,
                   details={"expected": primaries, "against": "restored index stats", "primaries": primaries},
                   summary=f"{index}{where} holds {searchable} searchable documents of {primaries} in its primaries (_stats); "
                           "the snapshot carries no document count, so this is checked against the restored index's own stats"
                           + ("" if ok else f": not every document is searchable yet (recovering, or shards failed): {then}"))


def parse_value(value: str) -> tuple[str, str] | None:
    """(repository, snapshot) of a "snapshot R/S" value; None otherwise."""
    m = re.fullmatch(r"snapshot ([^/]+)/([^,]+)(?:, closed)?", value)
    return (m.group(1), m.group(2)) if m else None


# --- RTO ---------------------------------------------------------------------------------------------


def restore_started_ms(body: dict[str, Any], index: str) -> int | None:
    """When the cluster started restoring the index from a snapshot (its _recovery: the earliest start of a primary's
    SNAPSHOT recovery), None when its _recovery no longer names a snapshot (relocated or restarted since)."""
    starts = [s.get("start_time_in_millis") for s in (body.get(index) or {}).get("shards") or []
              if s.get("primary") and s.get("type") == "SNAPSHOT"]
    starts = [int(t) for t in starts if isinstance(t, int | float)]
    return min(starts) if starts else None


SANDBOX_WHY = "the OpenSearch test double restores without moving any data"


def rto_finding(resource: str, started_s: float | None, verified_s: float | None, switched_s: float | None, aliased: bool,
                target_minutes: float | None, sandbox: bool, start_error: str | None = None) -> Finding:
    """The snapshot restore's start -> the restored index verified (its documents counted right) and, aliased, -> the alias
    switched (the application reads the restored data), against the inventory's ``dr.rto_index_minutes``. Epoch seconds;
    None: not reached in this run (UNKNOWN, saying why; ``start_error``: why the start could not be read)."""
    to_verified = None if started_s is None or verified_s is None else max(0.0, verified_s - started_s)
    to_switched = None if started_s is None or switched_s is None else max(0.0, switched_s - started_s)
    details = {"to_verified_s": None if to_verified is None else round(to_verified, 1),
               "to_switched_s": None if to_switched is None else round(to_switched, 1),
               "until": "alias switched" if aliased else "index verified"}
    why = ""
    if started_s is None:
        why = (f"the restore's start could not be read ({start_error})" if start_error else
               "the restore's start is not known: the index's _recovery no longer names a snapshot (relocated or restarted since)")
    elif verified_s is None:
        why = "the restored index was not verified (its documents did not count right): its data is not usable yet"
    elif aliased and switched_s is None:
        why = f"the restored index was verified after {to_verified:.1f} s, but the alias was not switched"
    if why:
        return rto.rto_finding(resource, None, target_minutes, sandbox, span="", sandbox_why=SANDBOX_WHY, details=details,
                               unmeasured=why)
    if aliased:
        span = f"from the snapshot restore's start to the alias switched (the restored index verified after {to_verified:.1f} s)"
        seconds = to_switched
    else:
        span, seconds = "from the snapshot restore's start to the index restored in place and verified (its documents counted)", to_verified
    return rto.rto_finding(resource, seconds, target_minutes, sandbox, span=span, sandbox_why=SANDBOX_WHY, details=details)
