"""TEST DOUBLE of the OpenSearch REST API -- this is NOT OpenSearch.

No OpenSearch server can run on the opsbook sandbox/CI machines, so this module
serves a small, in-memory imitation of the OpenSearch 2.11 HTTP API on
127.0.0.1 so that ``opensearch-py`` can talk to it over plain HTTP exactly as to
a real cluster. It models only what the opsbook runbooks and their tests need;
anything else answers HTTP 400 with error type ``unsupported_in_test_double`` so
gaps are loud, never silently OK.

One server hosts several "domains": the first path segment is the domain name
(``OpenSearch(double.url_for("logs"))`` or ``hosts=[{..., "url_prefix": "logs"}]``).

Implemented (per domain, state kept in memory, one lock around all of it):
  * ``GET|HEAD /`` cluster info (version 2.11.0, distribution "opensearch")
  * ``GET /_cluster/health[/{index}]`` (status computed from shard states;
    ``wait_for_status`` not met -> 408 ``timed_out: true`` at once, no waiting)
  * ``GET /_cat/indices|shards|allocation``, ``GET /_cat/snapshots/{repo}``
    (text tables with ``?v``/``?h=``/``?bytes=b``, or ``?format=json``)
  * ``GET|POST /_cluster/allocation/explain`` (per-node ``deciders``: same_shard,
    replica_after_primary_active, max_retry, disk_threshold), ``POST /_cluster/reroute``
    (``allocate_replica``, ``allocate_stale_primary``, ``allocate_empty_primary``;
    ``?retry_failed=true`` resets the failed-attempt counter of ALLOCATION_FAILED
    copies and allocates them where every other decider says yes)
  * ``GET /_nodes/stats/fs`` and ``GET /_nodes/{node}/stats/fs`` (only the ``fs`` metric)
  * ``/_snapshot``: register/get/delete repositories; create/get/delete/restore
    snapshots (restore supports indices, rename_pattern/rename_replacement,
    include_aliases (default true: the snapshot's aliases come back) and
    index_settings; a snapshot keeps each index's mappings and aliases and the
    request's ``metadata``; snapshots complete instantly; a restored copy is
    INITIALIZING for the domain's ``set_recovery_time``, then STARTED)
  * indices and documents: ``PUT|GET|HEAD|DELETE /{index}`` (``mappings`` and
    ``aliases`` kept on create, ``GET {index}/_mapping``), ``_doc``
    (``?op_type=create``), ``_bulk`` (index/create/delete), ``_refresh``,
    ``_count``, ``_search`` (match_all, term, terms, match, bool; size/from;
    ``_source``), ``_delete_by_query`` and ``GET [{index}/]_stats[/docs,store]``.
  * aliases: ``GET _aliases``, ``POST _aliases`` (``add`` / ``remove`` /
    ``remove_index`` actions, all or none applied), ``GET|HEAD [{index}/]_alias[/{name}]``,
    ``PUT|DELETE {index}/_alias/{name}``; an alias resolves to its indices for
    search, count, refresh, stats, recovery and mapping; a write through an alias needs
    exactly one index (or its ``is_write_index``); ``DELETE {alias}`` is refused.
  * ``POST {index}/_close`` and ``_open``: a closed index refuses search, count,
    get and writes (400 ``index_closed_exception``), wildcards skip it there;
    a snapshot restore may replace a closed index (same shard count) and opens it.
  * ``GET [{index}/]_recovery[?active_only=true]``: per shard copy its type
    (EMPTY_STORE, SNAPSHOT with its repository/snapshot source, PEER for
    replicas), stage (INDEX while INITIALIZING, then DONE) and percent.

Shard model: copy k of shard s lives on node (s + k) % nodes; a replica that
cannot get its own node stays UNASSIGNED (INDEX_CREATED), as on a real cluster.
Copies allocated by a reroute are STARTED at once, or INITIALIZING for the
domain's ``set_recovery_time`` seconds first. Disk: every node has a 100 GiB
disk with 10 GiB used besides the index data (``set_disk`` changes both); the
OpenSearch default watermarks apply (low 85 %: no replica goes to the node; high
90 %: no shard at all; flood stage 95 % is only reported, writes are not blocked).
A copy made UNASSIGNED with reason ALLOCATION_FAILED has failed 5 times (the
``max_retry`` limit) unless ``failed_attempts`` says otherwise.
Documents are routed to shards by crc32(id); docs on a shard with no STARTED
copy are invisible to search/count/get, and writes need a STARTED primary
(503 otherwise). Fault controls are Python methods, not HTTP endpoints:
``make_red`` (every copy of the index UNASSIGNED with a reason), ``make_yellow``
(replicas UNASSIGNED), ``heal``, ``add_snapshot``, ``set_unreachable`` (the
domain's connections are closed without a response), ``set_latency``,
``set_disk``, ``set_nodes`` (resize the cluster), ``set_recovery_time`` and
``disk_usage``.
"""
from __future__ import annotations

import copy
import fnmatch
import gzip
import json
import re
import socket
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

VERSION = "2.11.0"
STARTED, UNASSIGNED, INITIALIZING = "STARTED", "UNASSIGNED", "INITIALIZING"
WATERMARK_LOW, WATERMARK_HIGH, WATERMARK_FLOOD = 85.0, 90.0, 95.0  # OpenSearch's defaults (percent used)
MAX_RETRIES = 5  # index.allocation.max_retries
_RANK = {"green": 0, "yellow": 1, "red": 2}
_GiB = 1024 ** 3


class ApiError(Exception):
    """An OpenSearch-style error response: {"error": {...}, "status": N}."""

    def __init__(self, status, etype, reason, **extra):
        super().__init__(reason)
        self.status, self.etype, self.reason, self.extra = status, etype, reason, extra

    def body(self):
        err = {"type": self.etype, "reason": self.reason, **self.extra}
        return {"error": {"root_cause": [dict(err)], **err}, "status": self.status}


def _index_missing(name):
    return ApiError(404, "index_not_found_exception", f"no such index [{name}]", index=name,
                    **{"resource.type": "index_or_alias", "resource.id": name})


def _index_closed(name):
    return ApiError(400, "index_closed_exception", "closed", index=name)


def _now_ms():
    return int(time.time() * 1000)


def _iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".%03dZ" % (ms % 1000)


def _split(value):
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value if v and v.strip()]


def _pick(candidates, expr, on_missing=None):
    """Resolve a comma list / list with ``*`` wildcards against candidate names."""
    parts = _split(expr)
    if not parts or parts in (["_all"], ["*"]):
        return list(candidates)
    out = []
    for part in parts:
        if part.startswith("-") and out:
            out = [n for n in out if not fnmatch.fnmatchcase(n, part[1:])]
        elif "*" in part or part == "_all":
            pat = "*" if part == "_all" else part
            out += [n for n in candidates if fnmatch.fnmatchcase(n, pat) and n not in out]
        elif part in candidates:
            out += [part] if part not in out else []
        elif on_missing:
            raise on_missing(part)
    return out


def _j(raw):
    if not raw or not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ApiError(400, "parse_exception", f"request body is not valid JSON: {e}")


def _flag(q, name):
    return name in q and q[name] in ("", "true")


def _flat(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return {(k[6:] if k.startswith("index.") else k): v for k, v in out.items()}


def _size(n, q):
    if q.get("bytes") == "b":
        return str(n)
    for unit in ("b", "kb", "mb", "gb"):
        if n < 1024 or unit == "gb":
            return f"{n}{unit}" if unit == "b" else f"{n:.1f}{unit}"
        n /= 1024


def _get_field(src, field):
    field = field[:-8] if field.endswith(".keyword") else field
    if field in src:
        return src[field]
    cur = src
    for part in field.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _eq(actual, want, loose):
    if isinstance(actual, list):
        return any(_eq(a, want, loose) for a in actual)
    if loose and isinstance(actual, str) and isinstance(want, str):
        return actual.lower() == want.lower()
    return actual == want


def _single(spec, kind):
    spec = {k: v for k, v in (spec or {}).items() if k != "boost"}
    if len(spec) != 1:
        raise ApiError(400, "parsing_exception", f"[{kind}] query malformed, expected exactly one field")
    return next(iter(spec.items()))


def _compile(q):
    """Compile the supported query subset into a predicate over _source dicts."""
    if not q:
        return lambda s: True
    if not isinstance(q, dict) or len(q) != 1:
        raise ApiError(400, "parsing_exception", "query malformed, expected exactly one query clause")
    kind, spec = next(iter(q.items()))
    if kind == "match_all":
        return lambda s: True
    if kind in ("term", "match"):
        field, want = _single(spec, kind)
        if isinstance(want, dict):
            want = want.get("value", want.get("query"))
        return lambda s: _eq(_get_field(s, field), want, kind == "match")
    if kind == "terms":
        field, wants = _single(spec, kind)
        return lambda s: any(_eq(_get_field(s, field), w, False) for w in wants)
    if kind == "bool":
        extra = set(spec) - {"must", "filter", "should", "must_not", "minimum_should_match", "boost"}
        if extra:
            raise _unsupported_query(f"bool.{sorted(extra)[0]}")
        lst = lambda k: [_compile(c) for c in (spec.get(k) if isinstance(spec.get(k), list) else [spec[k]] if spec.get(k) else [])]
        must, should, must_not = lst("must") + lst("filter"), lst("should"), lst("must_not")
        need_should = bool(should) and (not must or spec.get("minimum_should_match"))
        return lambda s: (all(p(s) for p in must) and not any(p(s) for p in must_not)
                          and (not need_should or any(p(s) for p in should)))
    raise _unsupported_query(kind)


def _unsupported_query(kind):
    return ApiError(400, "unsupported_in_test_double",
                    f"query [{kind}] is not implemented by the opsbook OpenSearch test double")


IDX = r"(?P<index>[^/_][^/]*)"
_ROUTES = [(set(m.split()), re.compile(p), fn) for m, p, fn in [
    ("GET HEAD", r"", "_api_root"),
    ("GET", r"_cluster/health(?:/(?P<index>[^/]+))?", "_api_health"),
    ("GET", r"_cat/indices(?:/(?P<index>[^/]+))?", "_api_cat_indices"),
    ("GET", r"_cat/shards(?:/(?P<index>[^/]+))?", "_api_cat_shards"),
    ("GET", r"_cat/allocation(?:/(?P<node>[^/]+))?", "_api_cat_allocation"),
    ("GET", r"_cat/snapshots/(?P<repo>[^/]+)", "_api_cat_snapshots"),
    ("GET POST", r"_cluster/allocation/explain", "_api_explain"),
    ("POST", r"_cluster/reroute", "_api_reroute"),
    ("GET", r"_nodes(?:/(?P<node>[^/_][^/]*))?/stats/(?P<metric>[^/]+)", "_api_nodes_stats"),
    ("GET", r"_snapshot(?:/_all)?", "_api_get_repos"),
    ("GET", r"_snapshot/(?P<repo>[^/]+)", "_api_get_repos"),
    ("PUT POST", r"_snapshot/(?P<repo>[^/_][^/]*)", "_api_put_repo"),
    ("DELETE", r"_snapshot/(?P<repo>[^/_][^/]*)", "_api_delete_repo"),
    ("GET", r"_snapshot/(?P<repo>[^/]+)/(?P<snap>[^/]+)", "_api_get_snapshots"),
    ("PUT POST", r"_snapshot/(?P<repo>[^/]+)/(?P<snap>[^/_][^/]*)", "_api_create_snapshot"),
    ("DELETE", r"_snapshot/(?P<repo>[^/]+)/(?P<snap>[^/]+)", "_api_delete_snapshot"),
    ("POST", r"_snapshot/(?P<repo>[^/]+)/(?P<snap>[^/]+)/_restore", "_api_restore"),
    ("GET", r"_aliases", "_api_get_aliases"),
    ("POST", r"_aliases", "_api_update_aliases"),
    ("GET HEAD", rf"(?:{IDX}/)?_alias(?:/(?P<name>[^/]+))?", "_api_get_alias"),
    ("PUT POST", rf"{IDX}/_alias(?:es)?/(?P<name>[^/]+)", "_api_put_alias"),
    ("DELETE", rf"{IDX}/_alias(?:es)?/(?P<name>[^/]+)", "_api_delete_alias"),
    ("POST", rf"{IDX}/_close", "_api_close"),
    ("POST", rf"{IDX}/_open", "_api_open"),
    ("GET", rf"(?:{IDX}/)?_recovery", "_api_recovery"),
    ("GET", rf"(?:{IDX}/)?_mapping", "_api_get_mapping"),
    ("GET", rf"(?:{IDX}/)?_stats(?:/(?P<metric>[^/]+))?", "_api_stats"),
    ("POST PUT", rf"(?:{IDX}/)?_bulk", "_api_bulk"),
    ("POST GET", rf"(?:{IDX}/)?_refresh", "_api_refresh"),
    ("GET POST", rf"(?:{IDX}/)?_search", "_api_search"),
    ("GET POST", rf"(?:{IDX}/)?_count", "_api_count"),
    ("POST", rf"{IDX}/_delete_by_query", "_api_delete_by_query"),
    ("PUT POST", rf"{IDX}/_doc/(?P<id>[^/]+)", "_api_index_doc"),
    ("POST", rf"{IDX}/_doc", "_api_index_doc"),
    ("GET HEAD", rf"{IDX}/_doc/(?P<id>[^/]+)", "_api_get_doc"),
    ("DELETE", rf"{IDX}/_doc/(?P<id>[^/]+)", "_api_delete_doc"),
    ("PUT", IDX, "_api_create_index"),
    ("GET HEAD", IDX, "_api_get_index"),
    ("DELETE", IDX, "_api_delete_index"),
]]


class OpenSearchDouble:
    """In-memory OpenSearch REST imitation serving several domains on 127.0.0.1."""

    def __init__(self):
        self._lock = threading.RLock()
        self._domains = {}
        self._latency = 0.0
        self._server = None
        self._thread = None

    # ---------------------------------------------------------------- lifecycle
    def start(self):
        if self._server is None:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.double = self
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="opensearch-double", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("OpenSearchDouble is not started")
        return self._server.server_address[1]

    def url_for(self, domain: str) -> str:
        return f"http://127.0.0.1:{self.port}/{domain}"

    # ---------------------------------------------------------- Python controls
    def reset(self):
        """Forget every domain (the sandbox's reset between scenarios)."""
        with self._lock:
            self._domains.clear()

    def add_domain(self, name, cluster_name=None, nodes=2):
        if not name or "/" in name or name.startswith("_") or nodes < 1:
            raise ValueError(f"bad domain name {name!r} or node count {nodes!r}")
        with self._lock:
            if name in self._domains:
                raise ValueError(f"domain {name!r} already exists")
            self._domains[name] = {
                "name": name, "cluster_name": cluster_name or f"123456789012:{name}",
                "nodes": [f"{name}-node-{i + 1}" for i in range(nodes)], "indices": {}, "repos": {},
                "unreachable": False, "uuid": uuid.uuid4().hex[:22], "recovery_s": 0.0,
                "disk": {f"{name}-node-{i + 1}": self._new_disk() for i in range(nodes)}}
        return name

    def create_index(self, domain, index, shards=1, replicas=1, docs=None, mappings=None, aliases=None):
        """``aliases``: alias names (or alias -> options) the index gets, as ``PUT {index}`` with an aliases body."""
        with self._lock:
            dom = self._dom(domain)
            if index in dom["indices"]:
                raise ValueError(f"index {index!r} already exists in {domain!r}")
            if isinstance(docs, list):
                docs = {str(i + 1): d for i, d in enumerate(docs)}
            if isinstance(aliases, (list, tuple, str)):
                aliases = {a: {} for a in _split(aliases)}
            self._check_new_name(dom, index)
            self._new_index(dom, index, shards, replicas, copy.deepcopy(docs or {}), mappings=mappings, aliases=aliases)

    def aliases(self, domain) -> dict:
        """alias -> sorted index names, for assertions."""
        with self._lock:
            return {a: sorted(n for n, i in self._dom(domain)["indices"].items() if a in i["aliases"])
                    for a in sorted({a for i in self._dom(domain)["indices"].values() for a in i["aliases"]})}

    def index_state(self, domain, index) -> str:
        """"open" or "close", for assertions."""
        with self._lock:
            return self._idx(domain, index)["state"]

    def make_red(self, domain, index, reason="NODE_LEFT", failed_attempts=None, details=None):
        """All copies (primaries and replicas) of the index become UNASSIGNED."""
        with self._lock:
            for copies in self._idx(domain, index)["copies"]:
                for c in copies:
                    self._unassign(c, reason, failed_attempts, details)

    def make_yellow(self, domain, index, reason="NODE_LEFT", failed_attempts=None, details=None):
        """All replica copies of the index become UNASSIGNED (needs replicas >= 1)."""
        with self._lock:
            idx = self._idx(domain, index)
            if idx["replicas"] < 1:
                raise ValueError(f"index {index!r} has no replicas, it cannot be yellow")
            for copies in idx["copies"]:
                for c in copies[1:]:
                    self._unassign(c, reason, failed_attempts, details)

    def set_disk(self, domain, used_pct=None, nodes=None, total_gb=None):
        """Size the nodes' disks (``total_gb``) and/or fill them to ``used_pct`` percent (index data included).

        ``nodes``: node names (default: every node of the domain)."""
        with self._lock:
            dom = self._dom(domain)
            targets = _split(nodes) or list(dom["nodes"])
            on_node = self._node_index_bytes(dom)
            for n in targets:
                if n not in dom["disk"]:
                    raise KeyError(f"unknown node {n!r} in domain {domain!r}")
                disk = dom["disk"][n]
                if total_gb is not None:
                    disk["total"] = int(float(total_gb) * _GiB)
                if used_pct is not None:
                    if not 0 <= float(used_pct) <= 100:
                        raise ValueError(f"used_pct must be within 0..100, not {used_pct!r}")
                    disk["base"] = max(0, int(disk["total"] * float(used_pct) / 100) - on_node[n])

    def disk_usage(self, domain) -> dict:
        """node -> percent of its disk used (index data included), for assertions."""
        with self._lock:
            dom = self._dom(domain)
            return {n: round(self._disk(dom, n)[1] * 100.0 / self._disk(dom, n)[0], 2) for n in dom["nodes"]}

    def set_nodes(self, domain, nodes):
        """Resize the cluster to ``nodes`` data nodes; every copy goes back to its home node (like ``heal``),
        and copies that have no node of their own stay UNASSIGNED (INDEX_CREATED)."""
        if nodes < 1:
            raise ValueError(f"a domain needs at least one node, not {nodes!r}")
        with self._lock:
            dom = self._dom(domain)
            dom["nodes"] = [f"{domain}-node-{i + 1}" for i in range(nodes)]
            dom["disk"] = {n: dom["disk"].get(n) or self._new_disk() for n in dom["nodes"]}
            for idx in dom["indices"].values():
                idx["copies"] = self._placement(dom, idx["shards"], idx["replicas"])

    def set_recovery_time(self, domain, seconds):
        """Copies a reroute allocates stay INITIALIZING this long before they are STARTED (default 0: at once)."""
        with self._lock:
            self._dom(domain)["recovery_s"] = max(0.0, float(seconds))

    def heal(self, domain):
        """Every copy that has a node of its own goes back to STARTED on its home node."""
        with self._lock:
            dom = self._dom(domain)
            for idx in dom["indices"].values():
                idx["copies"] = self._placement(dom, idx["shards"], idx["replicas"])

    def add_snapshot(self, domain, repo, snapshot, indices, state="SUCCESS", start_time_ms=None, metadata=None):
        """Record a snapshot of the indices' current docs (with their mappings and aliases); registers ``repo`` (type fs)
        if needed. ``metadata``: the snapshot's user metadata (as the create request's ``metadata``)."""
        with self._lock:
            dom = self._dom(domain)
            dom["repos"].setdefault(repo, {"type": "fs", "settings": {"location": f"/snapshots/{repo}"},
                                           "snapshots": {}})
            if snapshot in dom["repos"][repo]["snapshots"]:
                raise ValueError(f"snapshot {repo}:{snapshot} already exists")
            self._take_snapshot(dom, repo, snapshot, _split(indices), state=state, start_ms=start_time_ms, metadata=metadata)

    def set_unreachable(self, domain, unreachable=True):
        with self._lock:
            self._dom(domain)["unreachable"] = bool(unreachable)

    def set_latency(self, seconds):
        self._latency = float(seconds)

    def docs(self, domain, index) -> dict:
        """A copy of an index's documents (id -> source), for assertions."""
        with self._lock:
            return copy.deepcopy(self._idx(domain, index)["docs"])

    def cluster_status(self, domain) -> str:
        with self._lock:
            dom = self._dom(domain)
            self._tick(dom)
            return self._health_body(dom, list(dom["indices"]))["status"]

    # ------------------------------------------------------------ state helpers
    def _dom(self, name):
        if name not in self._domains:
            raise KeyError(f"unknown domain {name!r}")
        return self._domains[name]

    def _idx(self, domain, index):
        dom = self._dom(domain)
        if index not in dom["indices"]:
            raise KeyError(f"unknown index {index!r} in domain {domain!r}")
        return dom["indices"][index]

    @staticmethod
    def _unassign(c, reason, failed_attempts=None, details=None):
        if failed_attempts is None:
            failed_attempts = MAX_RETRIES if reason == "ALLOCATION_FAILED" else 0
        if details is None and reason == "ALLOCATION_FAILED":
            details = "failed shard on node: failed recovery, failure RecoveryFailedException[recovery failed]"
        c.update(state=UNASSIGNED, node=None, reason=reason, at=_now_ms(), failed=int(failed_attempts), details=details)

    @staticmethod
    def _new_disk():
        return {"total": 100 * _GiB, "base": 10 * _GiB}

    def _tick(self, dom):
        """INITIALIZING copies whose recovery time has passed become STARTED; then the allocator places the
        ALLOCATION_FAILED copies still under the retry limit where the deciders allow (as a real cluster does
        at each reroute, e.g. a replica once its primary has started)."""
        now = time.monotonic()
        for idx in dom["indices"].values():
            for copies in idx["copies"]:
                for c in copies:
                    if c["state"] == INITIALIZING and c.get("ready", 0) <= now:
                        c["state"] = STARTED
        self._allocate_failed(dom)

    @staticmethod
    def _on_node(c):
        return c["state"] in (STARTED, INITIALIZING)

    def _start(self, dom, c, node):
        """Allocate copy ``c`` to ``node``: STARTED, or INITIALIZING for the domain's recovery time."""
        wait, now = dom.get("recovery_s", 0.0), time.monotonic()
        c.update(state=INITIALIZING if wait else STARTED, node=node, reason=None, failed=0, details=None,
                 ready=now + wait, init_at=now, init_ms=_now_ms())

    def _node_index_bytes(self, dom):
        out = {n: 0 for n in dom["nodes"]}
        for idx in dom["indices"].values():
            sizes, _ = self._shard_sizes(idx)
            for s, copies in enumerate(idx["copies"]):
                for c in copies:
                    if self._on_node(c) and c["node"] in out:
                        out[c["node"]] += sizes[s]
        return out

    def _disk(self, dom, node, on_node=None):
        """(total bytes, used bytes) of a node's data disk."""
        disk = dom["disk"][node]
        used = disk["base"] + (on_node if on_node is not None else self._node_index_bytes(dom))[node]
        return disk["total"], min(used, disk["total"])

    def _deciders(self, dom, name, s, c, node, on_node, ignore_retry=False):
        """The NO decisions of OpenSearch's allocation deciders for copy ``c`` of shard ``s`` on ``node``."""
        out, idx = [], dom["indices"][name]
        copies = idx["copies"][s]
        other = next((x for x in copies if x is not c and self._on_node(x) and x["node"] == node), None)
        if other is not None:
            out.append({"decider": "same_shard", "decision": "NO", "explanation": (
                "a copy of this shard is already allocated to this node [[%s][%d], node[%s], [%s], s[%s]]"
                % (name, s, node, "P" if other["primary"] else "R", other["state"]))})
        if not c["primary"] and copies[0]["state"] != STARTED:
            out.append({"decider": "replica_after_primary_active", "decision": "NO",
                        "explanation": "primary shard for this replica is not yet active"})
        if not ignore_retry and c["reason"] == "ALLOCATION_FAILED" and c.get("failed", 0) >= MAX_RETRIES:
            out.append({"decider": "max_retry", "decision": "NO", "explanation": (
                f"shard has exceeded the maximum number of retries [{MAX_RETRIES}] on failed allocation attempts - "
                "manually call [/_cluster/reroute?retry_failed=true] to retry, [unassigned_info[[reason=ALLOCATION_FAILED], "
                f"at[{_iso(c['at'])}], failed_attempts[{c['failed']}], delayed=false, details[{c.get('details') or ''}], "
                "allocation_status[deciders_no]]]")})
        total, used = self._disk(dom, node, on_node)
        pct, free = used * 100.0 / total, (total - used) * 100.0 / total
        if pct > WATERMARK_HIGH:
            out.append({"decider": "disk_threshold", "decision": "NO", "explanation": (
                f"the node is above the high watermark cluster setting [cluster.routing.allocation.disk.watermark.high="
                f"{WATERMARK_HIGH:g}%], using more disk space than the maximum allowed [{WATERMARK_HIGH}%], actual free: [{free}%]")})
        elif pct > WATERMARK_LOW and not c["primary"]:  # the low watermark keeps replicas (not primaries) away
            out.append({"decider": "disk_threshold", "decision": "NO", "explanation": (
                f"the node is above the low watermark cluster setting [cluster.routing.allocation.disk.watermark.low="
                f"{WATERMARK_LOW:g}%], using more disk space than the maximum allowed [{WATERMARK_LOW}%], actual free: [{free}%]")})
        return out

    def _allocate_failed(self, dom, retry_failed=False):
        """The allocator for ALLOCATION_FAILED copies: ``retry_failed`` first resets their failed-attempt counters;
        each one under the retry limit (primaries first) goes to the first node, from its home node on, where no
        decider says NO; otherwise it stays UNASSIGNED."""
        for primaries in (True, False):
            for name, idx in dom["indices"].items():
                for s, copies in enumerate(idx["copies"]):
                    for k, c in enumerate(copies):
                        if c["primary"] != primaries or c["state"] != UNASSIGNED or c["reason"] != "ALLOCATION_FAILED":
                            continue
                        if retry_failed:
                            c["failed"] = 0
                        if c.get("failed", 0) >= MAX_RETRIES:
                            continue
                        on_node = self._node_index_bytes(dom)
                        n = len(dom["nodes"])
                        order = [dom["nodes"][(s + k + i) % n] for i in range(n)]
                        node = next((x for x in order if not self._deciders(dom, name, s, c, x, on_node)), None)
                        if node is not None:
                            self._start(dom, c, node)

    @staticmethod
    def _placement(dom, shards, replicas):
        nodes, now = dom["nodes"], _now_ms()
        return [[{"primary": k == 0, "state": STARTED if k < len(nodes) else UNASSIGNED,
                  "node": nodes[(s + k) % len(nodes)] if k < len(nodes) else None,
                  "reason": None if k < len(nodes) else "INDEX_CREATED", "at": now}
                 for k in range(replicas + 1)] for s in range(shards)]

    def _new_index(self, dom, name, shards=1, replicas=1, docs=None, mappings=None, aliases=None, recovery=None):
        if not name or name != name.lower() or name[0] in "_-+" or any(ch in name for ch in ' "\\/*?<>|,#'):
            raise ApiError(400, "invalid_index_name_exception", f"Invalid index name [{name}]", index=name)
        now = _now_ms()
        idx = {"uuid": uuid.uuid4().hex[:22], "shards": int(shards), "replicas": int(replicas),
               "docs": docs or {}, "versions": {k: 1 for k in docs or {}}, "seq": len(docs or {}),
               "created": now, "copies": self._placement(dom, int(shards), int(replicas)), "state": "open",
               "mappings": copy.deepcopy(mappings or {}), "aliases": copy.deepcopy(aliases or {}),
               "recovery": recovery or {"type": "EMPTY_STORE", "source": {}}}
        for copies in idx["copies"]:
            for c in copies:
                c.update(init_ms=now, init_at=time.monotonic(), ready=0)
        dom["indices"][name] = idx
        return idx

    @staticmethod
    def _alias_map(dom):
        """alias -> [index names holding it] (sorted by index name)."""
        out = {}
        for n in sorted(dom["indices"]):
            for a in dom["indices"][n]["aliases"]:
                out.setdefault(a, []).append(n)
        return out

    def _check_new_name(self, dom, name):
        if name in self._alias_map(dom):
            raise ApiError(400, "invalid_index_name_exception", f"Invalid index name [{name}], already exists as alias",
                           index=name)

    @staticmethod
    def _shard_of(idx, doc_id):
        return zlib.crc32(str(doc_id).encode()) % idx["shards"]

    @staticmethod
    def _down_shards(idx, primary_only=False):
        return {s for s, copies in enumerate(idx["copies"])
                if not any(c["state"] == STARTED for c in (copies[:1] if primary_only else copies))}

    def _visible(self, idx):
        down = self._down_shards(idx)
        return {k: v for k, v in idx["docs"].items() if self._shard_of(idx, k) not in down}

    def _resolve(self, dom, expr, ignore_unavailable=False, forbid_closed=False):
        """Index names of a comma list / wildcard expression whose parts may be aliases. ``forbid_closed`` (search,
        count, refresh, stats): a closed index named (or reached through an alias) is an error, one matched by a
        wildcard is skipped (``expand_wildcards=open``)."""
        indices, aliases = sorted(dom["indices"]), self._alias_map(dom)
        parts = _split(expr)
        if not parts or parts in (["_all"], ["*"]):
            parts = ["*"]
        out, named = [], set()
        for part in parts:
            if part.startswith("-") and out:
                out = [n for n in out if not fnmatch.fnmatchcase(n, part[1:])]
                continue
            if "*" in part or part == "_all":
                pat = "*" if part == "_all" else part
                hits = [n for n in indices if fnmatch.fnmatchcase(n, pat)]
                hits += [n for a, ns in aliases.items() if fnmatch.fnmatchcase(a, pat) for n in ns]
                if forbid_closed:
                    hits = [n for n in hits if dom["indices"][n]["state"] == "open"]
            elif part in dom["indices"]:
                hits = [part]
                named.add(part)
            elif part in aliases:
                hits = list(aliases[part])
                named.update(hits)
            elif ignore_unavailable:
                hits = []
            else:
                raise _index_missing(part)
            for n in hits:
                if n not in out:
                    out.append(n)
        if forbid_closed:
            closed = [n for n in out if dom["indices"][n]["state"] != "open"]
            if closed and not ignore_unavailable:
                raise _index_closed(closed[0])
            out = [n for n in out if n not in closed]
        return out

    def _write_index(self, dom, name):
        """The concrete index a write to ``name`` (an index or an alias) goes to; None: no such index or alias."""
        if name in dom["indices"]:
            return name
        holders = self._alias_map(dom).get(name)
        if not holders:
            return None
        writers = [n for n in holders if dom["indices"][n]["aliases"][name].get("is_write_index")]
        if len(writers) == 1 or (len(holders) == 1 and dom["indices"][holders[0]]["aliases"][name].get("is_write_index") is not False):
            return (writers or holders)[0]
        raise ApiError(400, "illegal_argument_exception", f"no write index is defined for alias [{name}]. The write index may "
                       "be explicitly disabled using is_write_index=false or the alias points to multiple indices without "
                       "one being designated as a write index")

    @staticmethod
    def _index_health(idx):
        if any(copies[0]["state"] != STARTED for copies in idx["copies"]):
            return "red"
        return "yellow" if any(c["state"] != STARTED for cs in idx["copies"] for c in cs) else "green"

    def _health_body(self, dom, names):
        active = primaries = unassigned = initializing = 0
        status = "green"
        for n in names:
            idx = dom["indices"][n]
            status = max(status, self._index_health(idx), key=_RANK.get)
            for copies in idx["copies"]:
                for c in copies:
                    if c["state"] == STARTED:
                        active += 1
                        primaries += c["primary"]
                    elif c["state"] == INITIALIZING:
                        initializing += 1
                    else:
                        unassigned += 1
        total = active + unassigned + initializing
        return {"cluster_name": dom["cluster_name"], "status": status, "timed_out": False,
                "number_of_nodes": len(dom["nodes"]), "number_of_data_nodes": len(dom["nodes"]),
                "discovered_master": True, "discovered_cluster_manager": True,
                "active_primary_shards": primaries, "active_shards": active, "relocating_shards": 0,
                "initializing_shards": initializing, "unassigned_shards": unassigned, "delayed_unassigned_shards": 0,
                "number_of_pending_tasks": 0, "number_of_in_flight_fetch": 0,
                "task_max_waiting_in_queue_millis": 0,
                "active_shards_percent_as_number": 100.0 if total == 0 else active * 100.0 / total}

    # ------------------------------------------------------------ HTTP dispatch
    def _dispatch(self, domain, method, rest, query, raw):
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            with self._lock:
                dom = self._domains.get(domain)
                if dom is None:
                    raise ApiError(404, "resource_not_found_exception",
                                   f"no such domain [{domain}] in the opsbook OpenSearch test double")
                self._tick(dom)
                for methods, rx, fn in _ROUTES:
                    m = rx.fullmatch(rest) if method in methods else None
                    if m:
                        args = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                        return getattr(self, fn)(dom, args, q, raw)
                raise ApiError(400, "unsupported_in_test_double",
                               f"{method} /{rest} is not implemented by the opsbook OpenSearch test double")
        except ApiError as e:
            return e.status, e.body()
        except Exception as e:  # a bug in the double: say so loudly instead of dropping the socket
            return 500, ApiError(500, "test_double_internal_error", repr(e)).body()

    @staticmethod
    def _cat(q, columns, rows):
        cols = _split(q.get("h")) or columns
        for c in cols:
            if c not in columns:
                raise ApiError(400, "illegal_argument_exception", f"header [{c}] does not exist")
        table = [{c: None if r.get(c) is None else str(r[c]) for c in cols} for r in rows]
        if q.get("format") == "json":
            return 200, table
        if q.get("format", "text") != "text":
            raise ApiError(400, "unsupported_in_test_double", f"_cat format [{q['format']}] is not implemented")
        lines = ([cols] if "v" in q else []) + [[r[c] or "" for c in cols] for r in table]
        widths = [max([len(line[i]) for line in lines] or [0]) for i in range(len(cols))]
        return 200, "".join(" ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() + "\n" for line in lines)

    # ---------------------------------------------------------- cluster APIs
    def _api_root(self, dom, a, q, raw):
        return 200, {"name": dom["nodes"][0], "cluster_name": dom["cluster_name"], "cluster_uuid": dom["uuid"],
                     "version": {"distribution": "opensearch", "number": VERSION, "build_type": "tar",
                                 "build_hash": "opsbook-test-double", "build_date": "2023-10-13T00:00:00Z",
                                 "build_snapshot": False, "lucene_version": "9.7.0",
                                 "minimum_wire_compatibility_version": "7.10.0",
                                 "minimum_index_compatibility_version": "7.0.0"},
                     "tagline": "The OpenSearch Project: https://opensearch.org/"}

    def _api_health(self, dom, a, q, raw):
        try:
            names = self._resolve(dom, a.get("index"))
        except ApiError:  # OpenSearch waits for the index to appear, then times out red
            return 408, {**self._health_body(dom, []), "status": "red", "timed_out": True}
        body = self._health_body(dom, names)
        want = q.get("wait_for_status")
        if want and _RANK[body["status"]] > _RANK.get(want, 0):
            return 408, {**body, "timed_out": True}
        return 200, body

    def _api_cat_indices(self, dom, a, q, raw):
        rows = []
        for n in self._resolve(dom, a.get("index")):
            idx = dom["indices"][n]
            down = self._down_shards(idx)
            sizes, _ = self._shard_sizes(idx)
            pri = sum(sizes[s] for s, cs in enumerate(idx["copies"]) if cs[0]["state"] == STARTED)
            store = sum(sizes[s] for s, cs in enumerate(idx["copies"]) for c in cs if c["state"] == STARTED)
            live = None if len(down) == idx["shards"] else len(self._visible(idx))
            if idx["state"] != "open":
                live = None
            rows.append({"health": self._index_health(idx), "status": idx["state"], "index": n, "uuid": idx["uuid"],
                         "pri": idx["shards"], "rep": idx["replicas"], "docs.count": live,
                         "docs.deleted": None if live is None else 0,
                         "store.size": _size(store, q), "pri.store.size": _size(pri, q)})
        return self._cat(q, ["health", "status", "index", "uuid", "pri", "rep", "docs.count", "docs.deleted",
                             "store.size", "pri.store.size"], rows)

    def _shard_sizes(self, idx):
        """Per-shard (bytes, doc counts) of the primary data."""
        sizes, counts = [0] * idx["shards"], [0] * idx["shards"]
        for k, v in idx["docs"].items():
            s = self._shard_of(idx, k)
            sizes[s] += len(json.dumps(v))
            counts[s] += 1
        return sizes, counts

    def _ip(self, dom, node):
        return f"10.0.0.{dom['nodes'].index(node) + 1}" if node else None

    def _api_cat_shards(self, dom, a, q, raw):
        rows = []
        for n in self._resolve(dom, a.get("index")):
            idx = dom["indices"][n]
            sizes, counts = self._shard_sizes(idx)
            for s, copies in enumerate(idx["copies"]):
                for c in copies:
                    up, placed = c["state"] == STARTED, self._on_node(c)
                    rows.append({"index": n, "shard": s, "prirep": "p" if c["primary"] else "r", "state": c["state"],
                                 "docs": counts[s] if up else None, "store": _size(sizes[s], q) if up else None,
                                 "ip": self._ip(dom, c["node"]), "node": c["node"], "unassigned.reason": c["reason"]
                                 if not placed else None, "unassigned.at": None if placed else _iso(c["at"])})
        return self._cat(q, ["index", "shard", "prirep", "state", "docs", "store", "ip", "node",
                             "unassigned.reason", "unassigned.at"], rows)

    def _api_cat_allocation(self, dom, a, q, raw):
        per_node = {n: 0 for n in dom["nodes"]}
        unassigned = 0
        for idx in dom["indices"].values():
            for copies in idx["copies"]:
                for c in copies:
                    if self._on_node(c):
                        per_node[c["node"]] += 1
                    else:
                        unassigned += 1
        on_node = self._node_index_bytes(dom)
        rows = []
        for node in _pick(dom["nodes"], a.get("node")):
            total, used = self._disk(dom, node, on_node)
            rows.append({"shards": per_node[node], "disk.indices": _size(on_node[node], q), "disk.used": _size(used, q),
                         "disk.avail": _size(total - used, q), "disk.total": _size(total, q),
                         "disk.percent": used * 100 // total, "host": self._ip(dom, node),
                         "ip": self._ip(dom, node), "node": node})
        if unassigned and not a.get("node"):
            rows.append({"shards": unassigned, "node": "UNASSIGNED"})
        return self._cat(q, ["shards", "disk.indices", "disk.used", "disk.avail", "disk.total", "disk.percent",
                             "host", "ip", "node"], rows)

    def _api_cat_snapshots(self, dom, a, q, raw):
        rows = []
        for snap in self._repo(dom, a["repo"])["snapshots"].values():
            info = self._snap_info(snap)
            start, end = snap["start"], snap["end"] or snap["start"]
            rows.append({"id": snap["name"], "status": snap["state"], "start_epoch": start // 1000,
                         "start_time": time.strftime("%H:%M:%S", time.gmtime(start / 1000)),
                         "end_epoch": end // 1000, "end_time": time.strftime("%H:%M:%S", time.gmtime(end / 1000)),
                         "duration": f"{(end - start) / 1000:g}s", "indices": len(snap["indices"]),
                         "successful_shards": info["shards"]["successful"],
                         "failed_shards": info["shards"]["failed"], "total_shards": info["shards"]["total"]})
        return self._cat(q, ["id", "status", "start_epoch", "start_time", "end_epoch", "end_time", "duration",
                             "indices", "successful_shards", "failed_shards", "total_shards"], rows)

    def _api_explain(self, dom, a, q, raw):
        body = _j(raw) or {}
        if body:
            if not {"index", "shard", "primary"} <= set(body):
                raise ApiError(400, "illegal_argument_exception",
                               "the index, shard, and primary parameters must all be specified")
            name, s, primary = body["index"], int(body["shard"]), bool(body["primary"])
            if name not in dom["indices"]:
                raise _index_missing(name)
            copies = dom["indices"][name]["copies"]
            if not 0 <= s < len(copies) or (not primary and len(copies[s]) < 2):
                raise ApiError(400, "illegal_argument_exception", f"unable to find any shards to explain "
                               f"[{name}][{s}] primary [{str(primary).lower()}]")
            cands = [copies[s][0]] if primary else copies[s][1:]
            c = next((c for c in cands if c["state"] == UNASSIGNED), cands[0])
        else:
            found = [(n, s, c) for n in sorted(dom["indices"])
                     for s, cs in enumerate(dom["indices"][n]["copies"]) for c in cs if c["state"] == UNASSIGNED]
            if not found:
                raise ApiError(400, "illegal_argument_exception", "unable to find any unassigned shards to explain "
                               "[ClusterAllocationExplainRequest[useAnyUnassignedShard=true,"
                               "includeYesDecisions?=false]")
            name, s, c = found[0]
        out = {"index": name, "shard": s, "primary": c["primary"]}
        if c["state"] != UNASSIGNED:
            return 200, {**out, "current_state": c["state"].lower(), "current_node": {
                "name": c["node"], "id": c["node"], "transport_address": f"{self._ip(dom, c['node'])}:9300"},
                "can_remain_on_current_node": "yes", "can_rebalance_cluster": "yes"}
        info = {"reason": c["reason"], "at": _iso(c["at"])}
        if c.get("failed"):
            info["failed_allocation_attempts"] = c["failed"]
        if c.get("details"):
            info["details"] = c["details"]
        on_node = self._node_index_bytes(dom)
        decisions = []
        for n in dom["nodes"]:
            no = self._deciders(dom, name, s, c, n, on_node)
            decisions.append({"node_id": n, "node_name": n, "transport_address": f"{self._ip(dom, n)}:9300",
                              "node_attributes": {"shard_indexing_pressure_enabled": "true"},
                              "node_decision": "no" if no else "yes", "deciders": no})
        anywhere = any(d["node_decision"] == "yes" for d in decisions)
        can = "no"
        if c["reason"] == "ALLOCATION_FAILED" and c.get("failed", 0) >= MAX_RETRIES:
            info["last_allocation_status"] = "no"
            why = (f"shard has exceeded the maximum number of retries [{MAX_RETRIES}] on failed allocation attempts - "
                   "manually call [/_cluster/reroute?retry_failed=true] to retry")
        elif c["primary"] and c["reason"] != "ALLOCATION_FAILED":
            info["last_allocation_status"] = "no_valid_shard_copy"
            why = ("cannot allocate because a previous copy of the primary shard existed but can no longer be "
                   "found on the nodes in the cluster")
        elif anywhere and c["reason"] == "NODE_LEFT":
            info["last_allocation_status"] = "no_attempt"
            can, why = "allocation_delayed", ("cannot allocate because the cluster is still waiting 1m for the departed "
                                              "node holding a replica to rejoin, despite being allowed to allocate the "
                                              "shard to at least one other node")
        elif anywhere:
            info["last_allocation_status"] = "no_attempt"
            can, why = "yes", "can allocate the shard"
        else:
            info["last_allocation_status"] = "no" if c["reason"] == "ALLOCATION_FAILED" else "no_attempt"
            why = "cannot allocate because allocation is not permitted to any of the nodes"
        return 200, {**out, "current_state": "unassigned", "unassigned_info": info, "can_allocate": can,
                     "allocate_explanation": why, "node_allocation_decisions": decisions}

    def _api_nodes_stats(self, dom, a, q, raw):
        if _split(a["metric"]) != ["fs"]:
            raise ApiError(400, "unsupported_in_test_double", f"node stats metric [{a['metric']}] is not implemented by "
                           "the opsbook OpenSearch test double (only fs)")
        names = _pick(dom["nodes"], a.get("node"))
        on_node, now = self._node_index_bytes(dom), _now_ms()
        nodes = {}
        for n in names:
            total, used = self._disk(dom, n, on_node)
            ip = self._ip(dom, n)
            fs = {"total_in_bytes": total, "free_in_bytes": total - used, "available_in_bytes": total - used}
            nodes[n] = {"timestamp": now, "name": n, "transport_address": f"{ip}:9300", "host": ip, "ip": f"{ip}:9300",
                        "roles": ["cluster_manager", "data", "ingest", "remote_cluster_client"],
                        "attributes": {"shard_indexing_pressure_enabled": "true"},
                        "fs": {"timestamp": now, "total": dict(fs),
                               "data": [{"path": "/usr/share/opensearch/data/nodes/0",
                                         "mount": "/usr/share/opensearch/data (/dev/nvme1n1)", "type": "ext4", **fs}],
                               "io_stats": {}}}
        return 200, {"_nodes": {"total": len(names), "successful": len(names), "failed": 0},
                     "cluster_name": dom["cluster_name"], "nodes": nodes}

    def _api_reroute(self, dom, a, q, raw):
        body = _j(raw) or {}
        backup = {n: (copy.deepcopy(i["copies"]), dict(i["docs"])) for n, i in dom["indices"].items()}
        try:
            for cmd in body.get("commands", []):
                (kind, spec), = cmd.items()
                self._reroute_one(dom, kind, spec)
        except ApiError:
            for n, (copies, docs) in backup.items():
                dom["indices"][n].update(copies=copies, docs=docs)
            raise
        if _flag(q, "retry_failed"):
            self._allocate_failed(dom, retry_failed=True)
        return 200, {"acknowledged": True, "state": {"cluster_uuid": dom["uuid"]}}

    def _reroute_one(self, dom, kind, spec):
        if kind not in ("allocate_replica", "allocate_stale_primary", "allocate_empty_primary"):
            raise ApiError(400, "unsupported_in_test_double",
                           f"reroute command [{kind}] is not implemented by the opsbook OpenSearch test double")
        name, s, node = spec.get("index"), int(spec.get("shard", -1)), spec.get("node")
        if name not in dom["indices"]:
            raise _index_missing(name)
        idx = dom["indices"][name]
        if not 0 <= s < idx["shards"]:
            raise ApiError(400, "illegal_argument_exception", f"[{kind}] no shard [{s}] in index [{name}]")
        if node not in dom["nodes"]:
            raise ApiError(400, "illegal_argument_exception", f"failed to resolve [{node}], no matching nodes")
        copies = idx["copies"][s]
        if kind == "allocate_replica":
            if copies[0]["state"] != STARTED:
                raise ApiError(400, "illegal_argument_exception", f"[{kind}] trying to allocate a replica shard "
                               f"[{name}][{s}], while corresponding primary shard is still unassigned")
            target = next((c for c in copies[1:] if c["state"] == UNASSIGNED), None)
            if target is None:
                raise ApiError(400, "illegal_argument_exception", f"[{kind}] all copies of [{name}][{s}] are "
                               "already assigned. Use the move allocation command instead")
        else:
            target = copies[0]
            if target["state"] != UNASSIGNED:
                raise ApiError(400, "illegal_argument_exception", f"[{kind}] primary [{name}][{s}] is already assigned")
            if not spec.get("accept_data_loss"):
                raise ApiError(400, "illegal_argument_exception", f"[{kind}] allocating an empty primary for "
                               f"[{name}][{s}] can result in data loss. Please confirm by setting the "
                               "accept_data_loss parameter to true")
        if any(c["node"] == node and self._on_node(c) for c in copies):
            raise ApiError(400, "illegal_argument_exception", f"[{kind}] allocation of [{name}][{s}] on node "
                           f"{node} is not allowed, reason: [NO(a copy of this shard is already allocated to this node)]")
        if kind == "allocate_replica":
            no = self._deciders(dom, name, s, target, node, self._node_index_bytes(dom), ignore_retry=True)
            if no:
                raise ApiError(400, "illegal_argument_exception", f"[{kind}] allocation of [{name}][{s}] on node "
                               f"{node} is not allowed, reason: [NO({no[0]['explanation']})]")
        self._start(dom, target, node)
        if kind == "allocate_empty_primary":
            idx["docs"] = {k: v for k, v in idx["docs"].items() if self._shard_of(idx, k) != s}

    # ------------------------------------------------------------- snapshots
    def _repo(self, dom, name):
        if name not in dom["repos"]:
            raise ApiError(404, "repository_missing_exception", f"[{name}] missing")
        return dom["repos"][name]

    def _api_get_repos(self, dom, a, q, raw):
        missing = lambda n: ApiError(404, "repository_missing_exception", f"[{n}] missing")
        names = _pick(sorted(dom["repos"]), a.get("repo"), missing)
        return 200, {n: {"type": dom["repos"][n]["type"], "settings": dom["repos"][n]["settings"]} for n in names}

    def _api_put_repo(self, dom, a, q, raw):
        body = _j(raw) or {}
        if not body.get("type"):
            raise ApiError(400, "action_request_validation_exception", "Validation Failed: 1: type is missing;")
        repo = dom["repos"].setdefault(a["repo"], {"snapshots": {}})
        repo.update(type=body["type"], settings=body.get("settings", {}))
        return 200, {"acknowledged": True}

    def _api_delete_repo(self, dom, a, q, raw):
        self._repo(dom, a["repo"])
        del dom["repos"][a["repo"]]
        return 200, {"acknowledged": True}

    def _take_snapshot(self, dom, repo, name, names, state=None, start_ms=None, partial=True, metadata=None):
        data, failed, broken = {}, 0, []
        for n in names:
            idx = dom["indices"].get(n)
            if idx is None:
                data[n] = {"shards": 1, "replicas": 1, "docs": {}, "mappings": {}, "aliases": {}}
                continue
            down = self._down_shards(idx, primary_only=True)
            if down:
                broken.append(n)
                failed += len(down)
            data[n] = {"shards": idx["shards"], "replicas": idx["replicas"], "mappings": copy.deepcopy(idx["mappings"]),
                       "aliases": copy.deepcopy(idx["aliases"]),
                       "docs": {k: copy.deepcopy(v) for k, v in idx["docs"].items()
                                if self._shard_of(idx, k) not in down}}
        if broken and not partial:
            raise ApiError(500, "snapshot_exception", f"[{repo}:{name}] Indices don't have primary shards {broken}")
        state = state or ("PARTIAL" if failed else "SUCCESS")
        total = sum(d["shards"] for d in data.values())
        failed = {"FAILED": total, "PARTIAL": max(failed, 1), "SUCCESS": 0}.get(state, 0)
        start = _now_ms() if start_ms is None else int(start_ms)
        snap = {"name": name, "uuid": uuid.uuid4().hex[:22], "state": state, "indices": list(names), "data": data,
                "start": start, "end": 0 if state == "IN_PROGRESS" else start + 1000, "failed": failed,
                "metadata": copy.deepcopy(metadata) if metadata else None}
        dom["repos"][repo]["snapshots"][name] = snap
        return snap

    @staticmethod
    def _snap_info(snap):
        total = sum(d["shards"] for d in snap["data"].values())
        end = snap["end"]
        return {"snapshot": snap["name"], "uuid": snap["uuid"], "version_id": 136327827, "version": VERSION,
                "indices": list(snap["indices"]), "data_streams": [], "include_global_state": True,
                "state": snap["state"], "start_time": _iso(snap["start"]), "start_time_in_millis": snap["start"],
                "end_time": _iso(end) if end else None, "end_time_in_millis": end,
                "duration_in_millis": max(end - snap["start"], 0), "failures": [],
                "shards": {"total": total, "failed": snap["failed"], "successful": total - snap["failed"]},
                **({"metadata": copy.deepcopy(snap["metadata"])} if snap.get("metadata") else {})}

    def _snapshots(self, dom, repo, expr):
        snaps = self._repo(dom, repo)["snapshots"]
        if expr == "_current":
            return [s for s in snaps.values() if s["state"] == "IN_PROGRESS"]
        missing = lambda n: ApiError(404, "snapshot_missing_exception", f"[{repo}:{n}] is missing")
        return [snaps[n] for n in _pick(list(snaps), expr, missing)]

    def _api_get_snapshots(self, dom, a, q, raw):
        return 200, {"snapshots": [self._snap_info(s) for s in self._snapshots(dom, a["repo"], a["snap"])]}

    def _api_create_snapshot(self, dom, a, q, raw):
        repo, name, body = a["repo"], a["snap"], _j(raw) or {}
        if name in self._repo(dom, repo)["snapshots"] or name != name.lower():
            raise ApiError(400, "invalid_snapshot_name_exception", f"[{repo}:{name}] Invalid snapshot name "
                           f"[{name}], snapshot with the same name already exists or name is not lowercase")
        names = self._resolve(dom, body.get("indices"), body.get("ignore_unavailable", False))
        snap = self._take_snapshot(dom, repo, name, names, partial=bool(body.get("partial", False)), metadata=body.get("metadata"))
        return 200, {"snapshot": self._snap_info(snap)} if _flag(q, "wait_for_completion") else {"accepted": True}

    def _api_delete_snapshot(self, dom, a, q, raw):
        for snap in self._snapshots(dom, a["repo"], a["snap"]):
            del dom["repos"][a["repo"]]["snapshots"][snap["name"]]
        return 200, {"acknowledged": True}

    def _api_restore(self, dom, a, q, raw):
        repo, name = a["repo"], a["snap"]
        snap = self._repo(dom, repo)["snapshots"].get(name)
        if snap is None:
            raise ApiError(404, "snapshot_missing_exception", f"[{repo}:{name}] is missing")
        tag = f"[{repo}:{name}/{snap['uuid']}]"
        if snap["state"] not in ("SUCCESS", "PARTIAL"):
            raise ApiError(500, "snapshot_restore_exception", f"{tag} unsupported snapshot state [{snap['state']}]")
        body = _j(raw) or {}
        missing = lambda n: ApiError(500, "snapshot_restore_exception", f"{tag} index [{n}] not found in snapshot")
        names = _pick(list(snap["data"]), body.get("indices"), None if body.get("ignore_unavailable") else missing)
        pattern, repl = body.get("rename_pattern"), body.get("rename_replacement")
        py_repl = re.sub(r"\$(\d+)", r"\\g<\1>", repl) if repl is not None else None
        targets = [(n, re.sub(pattern, py_repl, n) if pattern and py_repl is not None else n) for n in names]
        settings = _flat(body.get("index_settings"))
        with_aliases = body.get("include_aliases", True) is not False
        self._check_restore(dom, snap, tag, targets, with_aliases)
        for n, target in targets:
            d, cur = snap["data"][n], dom["indices"].get(target)
            aliases = {**(cur["aliases"] if cur else {}), **(d.get("aliases", {}) if with_aliases else {})}
            source = {"repository": repo, "snapshot": name, "uuid": snap["uuid"], "version": VERSION, "index": n}
            idx = self._new_index(dom, target, d["shards"], int(settings.get("number_of_replicas", d["replicas"])),
                                  copy.deepcopy(d["docs"]), mappings=d.get("mappings"), aliases=aliases,
                                  recovery={"type": "SNAPSHOT", "source": source})
            if cur is not None:  # restored over a closed index: it keeps its uuid and is open again
                idx["uuid"] = cur["uuid"]
            for copies in idx["copies"]:
                for c in copies:
                    if c["state"] == STARTED:
                        self._start(dom, c, c["node"])  # INITIALIZING for the domain's recovery time
        total = sum(snap["data"][n]["shards"] for n in names)
        if _flag(q, "wait_for_completion"):
            return 200, {"snapshot": {"snapshot": name, "indices": [t for _, t in targets],
                                      "shards": {"total": total, "failed": 0, "successful": total}}}
        return 200, {"accepted": True}

    def _check_restore(self, dom, snap, tag, targets, with_aliases):
        """OpenSearch's refusals of a restore, before anything is restored."""
        aliases = self._alias_map(dom)
        for n, target in targets:
            cur = dom["indices"].get(target)
            if target in aliases:
                raise ApiError(500, "snapshot_restore_exception", f"{tag} cannot rename index [{n}] into [{target}] "
                               "because of conflict with an alias with the same name")
            if cur is not None and cur["state"] == "open":
                raise ApiError(500, "snapshot_restore_exception", f"{tag} cannot restore index [{target}] because "
                               "an open index with same name already exists in the cluster. Either close or delete "
                               "the existing index or restore the index under a different name by providing a "
                               "rename pattern and replacement name")
            if cur is not None and cur["shards"] != snap["data"][n]["shards"]:
                raise ApiError(500, "snapshot_restore_exception", f"{tag} cannot restore index [{target}] with "
                               f"[{cur['shards']}] shards from a snapshot of index [{n}] with "
                               f"[{snap['data'][n]['shards']}] shards")
            clash = [x for x in (snap["data"][n].get("aliases", {}) if with_aliases else {}) if x in dom["indices"]]
            if clash:
                raise ApiError(500, "snapshot_restore_exception", f"{tag} cannot restore index [{target}] because "
                               f"of alias [{clash[0]}] conflict with an index with the same name")
        if len({t for _, t in targets}) != len(targets):
            raise ApiError(500, "snapshot_restore_exception", f"{tag} indices would be renamed to the same name")

    # ------------------------------------------------------------- aliases
    def _aliases_of(self, dom, names, alias_expr=None):
        out = {}
        for n in names:
            al = dom["indices"][n]["aliases"]
            picked = _pick(sorted(al), alias_expr) if alias_expr else sorted(al)
            out[n] = {"aliases": {x: copy.deepcopy(al[x]) for x in picked}}
        return out

    def _api_get_aliases(self, dom, a, q, raw):
        return 200, self._aliases_of(dom, sorted(dom["indices"]))

    def _api_get_alias(self, dom, a, q, raw):
        names = self._resolve(dom, a["index"], _flag(q, "ignore_unavailable")) if a.get("index") else sorted(dom["indices"])
        name = a.get("name")
        out = self._aliases_of(dom, names, name)
        if not name:
            return 200, out
        out = {n: v for n, v in out.items() if v["aliases"]}
        found = {x for v in out.values() for x in v["aliases"]}
        missing = [p for p in _split(name) if "*" not in p and p != "_all" and p not in found]
        if missing:  # OpenSearch's own shape for this one: the error is a string
            return 404, {"error": f"alias [{','.join(missing)}] missing", "status": 404, **out}
        return 200, out

    def _api_update_aliases(self, dom, a, q, raw):
        actions = (_j(raw) or {}).get("actions")
        if not isinstance(actions, list) or not actions:
            raise ApiError(400, "action_request_validation_exception", "Validation Failed: 1: no actions specified;")
        self._alias_actions(dom, actions)
        return 200, {"acknowledged": True}

    def _api_put_alias(self, dom, a, q, raw):
        self._alias_actions(dom, [{"add": {**(_j(raw) or {}), "index": a["index"], "alias": a["name"]}}])
        return 200, {"acknowledged": True}

    def _api_delete_alias(self, dom, a, q, raw):
        self._alias_actions(dom, [{"remove": {"index": a["index"], "alias": a["name"]}}])
        return 200, {"acknowledged": True}

    def _alias_actions(self, dom, actions):
        """add / remove / remove_index actions, checked all first and then applied together (or none)."""
        new = {n: copy.deepcopy(i["aliases"]) for n, i in dom["indices"].items()}
        dropped = set()
        for act in actions:
            if not isinstance(act, dict) or len(act) != 1:
                raise ApiError(400, "x_content_parse_exception", "[aliases] failed to parse field [actions]")
            kind, spec = next(iter(act.items()))
            if kind not in ("add", "remove", "remove_index") or not isinstance(spec, dict):
                raise ApiError(400, "x_content_parse_exception", f"[aliases] unknown field [{kind}]")
            expr = spec.get("indices", spec.get("index"))
            if not expr:
                raise ApiError(400, "action_request_validation_exception",
                               "Validation Failed: 1: One of [index/indices] is required;")
            if kind == "remove_index":
                for part in _split(expr):
                    if part not in dom["indices"] and part in self._alias_map(dom):
                        raise ApiError(400, "illegal_argument_exception", f"The provided expression [{part}] matches "
                                       "an alias, specify the corresponding concrete indices instead.")
                dropped.update(self._resolve(dom, expr))
                continue
            names = [n for n in self._resolve(dom, expr) if n not in dropped]
            wanted = _split(spec.get("aliases", spec.get("alias")))
            if not wanted:
                raise ApiError(400, "action_request_validation_exception",
                               "Validation Failed: 1: One of [alias/aliases] is required;")
            for x in wanted:
                if kind == "add":
                    if x in dom["indices"] and x not in dropped:
                        raise ApiError(400, "invalid_alias_name_exception", f"Invalid alias name [{x}]: an index or "
                                       "data stream exists with the same name as the alias")
                    opts = {k: spec[k] for k in ("is_write_index", "filter", "routing", "index_routing",
                                                 "search_routing", "is_hidden") if k in spec}
                    for n in names:
                        new[n][x] = opts
                    continue
                hit = [(n, y) for n in names for y in list(new[n]) if fnmatch.fnmatchcase(y, x)]
                if not hit:
                    raise ApiError(404, "aliases_not_found_exception", f"aliases [{x}] missing", **{
                        "resource.type": "aliases", "resource.id": x})
                for n, y in hit:
                    del new[n][y]
        for n, aliases in new.items():
            dom["indices"][n]["aliases"] = aliases
        for n in dropped:
            del dom["indices"][n]

    # -------------------------------------------- close / open, recovery, mappings, stats
    def _api_close(self, dom, a, q, raw):
        names = self._resolve(dom, a["index"], _flag(q, "ignore_unavailable"))
        for n in names:
            dom["indices"][n]["state"] = "close"
        return 200, {"acknowledged": True, "shards_acknowledged": True, "indices": {n: {"closed": True} for n in names}}

    def _api_open(self, dom, a, q, raw):
        for n in self._resolve(dom, a["index"], _flag(q, "ignore_unavailable")):
            dom["indices"][n]["state"] = "open"
        return 200, {"acknowledged": True, "shards_acknowledged": True}

    def _node_info(self, dom, node):
        ip = self._ip(dom, node)
        return {"id": node, "host": ip, "transport_address": f"{ip}:9300", "ip": ip, "name": node}

    def _copy_recovery(self, dom, idx, s, c, size, files):
        """One shard copy's entry of ``_recovery``: INITIALIZING -> stage INDEX with the share of its recovery time gone."""
        now, done = time.monotonic(), c["state"] == STARTED
        span = max(c.get("ready", 0) - c.get("init_at", now), 0.0)
        frac = 1.0 if done or span <= 0 else min(0.999, (now - c.get("init_at", now)) / span)
        start = c.get("init_ms", idx["created"])
        took = int(span * 1000) if done else _now_ms() - start
        pct = f"{frac * 100:.1f}%"
        out = {"id": s, "type": idx["recovery"]["type"] if c["primary"] else "PEER", "stage": "DONE" if done else "INDEX",
               "primary": c["primary"], "start_time_in_millis": start, "total_time_in_millis": took,
               "source": (copy.deepcopy(idx["recovery"]["source"]) if c["primary"]
                          else self._node_info(dom, idx["copies"][s][0]["node"])),
               "target": self._node_info(dom, c["node"]),
               "index": {"size": {"total_in_bytes": size, "reused_in_bytes": 0, "recovered_in_bytes": int(size * frac),
                                  "percent": pct},
                         "files": {"total": files, "reused": 0, "recovered": int(files * frac), "percent": pct},
                         "total_time_in_millis": took, "source_throttle_time_in_millis": 0,
                         "target_throttle_time_in_millis": 0},
               "translog": {"recovered": 0, "total": 0, "percent": "100.0%", "total_on_start": 0, "total_time_in_millis": 0},
               "verify_index": {"check_index_time_in_millis": 0, "total_time_in_millis": 0}}
        if done:
            out["stop_time_in_millis"] = start + took
        return out

    def _api_recovery(self, dom, a, q, raw):
        active_only, out = _flag(q, "active_only"), {}
        for n in self._resolve(dom, a.get("index"), _flag(q, "ignore_unavailable")):
            idx = dom["indices"][n]
            sizes, counts = self._shard_sizes(idx)
            shards = [self._copy_recovery(dom, idx, s, c, sizes[s], counts[s])
                      for s, copies in enumerate(idx["copies"]) for c in copies
                      if self._on_node(c) and not (active_only and c["state"] == STARTED)]
            if shards:
                out[n] = {"shards": shards}
        return 200, out

    def _api_get_mapping(self, dom, a, q, raw):
        names = self._resolve(dom, a.get("index"), _flag(q, "ignore_unavailable"))
        return 200, {n: {"mappings": copy.deepcopy(dom["indices"][n]["mappings"])} for n in names}

    def _api_stats(self, dom, a, q, raw):
        metrics = _split(a.get("metric")) or ["_all"]
        if set(metrics) - {"docs", "store", "_all"}:
            raise ApiError(400, "unsupported_in_test_double", f"index stats metric [{a.get('metric')}] is not implemented "
                           "by the opsbook OpenSearch test double (only docs, store)")
        names = self._resolve(dom, a.get("index"), _flag(q, "ignore_unavailable"), forbid_closed=True)
        per, copies_total, started = {}, 0, 0
        blank = lambda: {"docs": {"count": 0, "deleted": 0}, "store": {"size_in_bytes": 0, "reserved_in_bytes": 0}}
        every = {"primaries": blank(), "total": blank()}
        for n in names:
            idx = dom["indices"][n]
            sizes, counts = self._shard_sizes(idx)
            row = {"uuid": idx["uuid"], "primaries": blank(), "total": blank()}
            for s, cs in enumerate(idx["copies"]):
                for c in cs:
                    copies_total += 1
                    if c["state"] != STARTED:
                        continue
                    started += 1
                    for part in ("primaries", "total") if c["primary"] else ("total",):
                        for target in (row[part], every[part]):
                            target["docs"]["count"] += counts[s]
                            target["store"]["size_in_bytes"] += sizes[s]
            per[n] = row
        return 200, {"_shards": {"total": copies_total, "successful": started, "failed": 0}, "_all": every, "indices": per}

    # ---------------------------------------------------- indices & documents
    def _api_create_index(self, dom, a, q, raw):
        name, body = a["index"], _j(raw) or {}
        if name in dom["indices"]:
            raise ApiError(400, "resource_already_exists_exception",
                           f"index [{name}/{dom['indices'][name]['uuid']}] already exists", index=name)
        settings = _flat(body.get("settings"))
        self._check_new_name(dom, name)
        aliases = body.get("aliases") or {}
        clash = [a for a in aliases if a in dom["indices"] or a == name]
        if clash:
            raise ApiError(400, "invalid_alias_name_exception", f"Invalid alias name [{clash[0]}]: an index or data stream "
                           "exists with the same name as the alias")
        self._new_index(dom, name, int(settings.get("number_of_shards", 1)), int(settings.get("number_of_replicas", 1)),
                        mappings=body.get("mappings"), aliases={a: dict(o or {}) for a, o in aliases.items()})
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def _api_get_index(self, dom, a, q, raw):
        names = self._resolve(dom, a["index"], _flag(q, "ignore_unavailable"))
        if not names:
            raise _index_missing(a["index"])
        out = {}
        for n in names:
            i = dom["indices"][n]
            settings = {"number_of_shards": str(i["shards"]), "number_of_replicas": str(i["replicas"]), "uuid": i["uuid"],
                        "provided_name": n, "creation_date": str(i["created"]), "version": {"created": "136327827"}}
            if i["state"] != "open":
                settings["verified_before_close"] = "true"
            out[n] = {"aliases": copy.deepcopy(i["aliases"]), "mappings": copy.deepcopy(i["mappings"]),
                      "settings": {"index": settings}}
        return 200, out

    def _api_delete_index(self, dom, a, q, raw):
        for part in _split(a["index"]):
            if part not in dom["indices"] and part in self._alias_map(dom):
                raise ApiError(400, "illegal_argument_exception", f"The provided expression [{part}] matches an alias, "
                               "specify the corresponding concrete indices instead.")
        for n in self._resolve(dom, a["index"], _flag(q, "ignore_unavailable")):
            del dom["indices"][n]
        return 200, {"acknowledged": True}

    def _doc_result(self, name, idx, doc_id, result):
        idx["seq"] += 1
        copies = idx["copies"][self._shard_of(idx, doc_id)]
        return {"_index": name, "_id": doc_id, "_version": idx["versions"].get(doc_id, 1), "result": result,
                "_shards": {"total": len(copies), "failed": 0,
                            "successful": sum(c["state"] == STARTED for c in copies)},
                "_seq_no": idx["seq"] - 1, "_primary_term": 1}

    def _write(self, dom, name, doc_id, op, source):
        """index / create / delete one document; returns (http status, result item)."""
        name = self._write_index(dom, name) or name
        idx = dom["indices"].get(name)
        if idx is None:
            if op == "delete":
                raise _index_missing(name)
            idx = self._new_index(dom, name)
        if idx["state"] != "open":
            raise _index_closed(name)
        doc_id = str(doc_id) if doc_id not in (None, "") else uuid.uuid4().hex[:20]
        s = self._shard_of(idx, doc_id)
        if idx["copies"][s][0]["state"] != STARTED:
            raise ApiError(503, "unavailable_shards_exception",
                           f"[{name}][{s}] primary shard is not active Timeout: [1m]", index=name, shard=str(s))
        exists = doc_id in idx["docs"]
        if op == "delete":
            if not exists:
                return 404, self._doc_result(name, idx, doc_id, "not_found")
            del idx["docs"][doc_id]
        elif op == "create" and exists:
            raise ApiError(409, "version_conflict_engine_exception", f"[{doc_id}]: version conflict, document "
                           f"already exists (current version [{idx['versions'][doc_id]}])", index=name, shard=str(s))
        else:
            if not isinstance(source, dict):
                raise ApiError(400, "mapper_parsing_exception", "failed to parse, document must be a JSON object")
            idx["docs"][doc_id] = source
        idx["versions"][doc_id] = idx["versions"].get(doc_id, 0) + 1
        result = "deleted" if op == "delete" else "updated" if exists else "created"
        return (201 if result == "created" else 200), self._doc_result(name, idx, doc_id, result)

    def _api_index_doc(self, dom, a, q, raw):
        op = "create" if q.get("op_type") == "create" else "index"
        return self._write(dom, a["index"], a.get("id"), op, _j(raw))

    def _api_delete_doc(self, dom, a, q, raw):
        return self._write(dom, a["index"], a["id"], "delete", None)

    def _api_get_doc(self, dom, a, q, raw):
        name, doc_id = a["index"], a["id"]
        name = self._write_index(dom, name) or name
        if name not in dom["indices"]:
            raise _index_missing(name)
        idx = dom["indices"][name]
        if idx["state"] != "open":
            raise _index_closed(name)
        s = self._shard_of(idx, doc_id)
        if s in self._down_shards(idx):
            raise ApiError(503, "no_shard_available_action_exception", f"No shard available for [get [{name}][{doc_id}]]")
        if doc_id not in idx["docs"]:
            return 404, {"_index": name, "_id": doc_id, "found": False}
        return 200, {"_index": name, "_id": doc_id, "_version": idx["versions"].get(doc_id, 1), "_seq_no": 0,
                     "_primary_term": 1, "found": True, "_source": idx["docs"][doc_id]}

    def _api_bulk(self, dom, a, q, raw):
        lines = [ln for ln in raw.decode("utf-8").splitlines() if ln.strip()]
        items, errors, i = [], False, 0
        while i < len(lines):
            action = _j(lines[i].encode())
            i += 1
            if not isinstance(action, dict) or len(action) != 1:
                raise ApiError(400, "illegal_argument_exception", f"Malformed action/metadata line [{i}]")
            op, meta = next(iter(action.items()))
            if op not in ("index", "create", "delete"):
                raise ApiError(400, "unsupported_in_test_double", f"bulk action [{op}] is not implemented by the "
                               "opsbook OpenSearch test double")
            source = None
            if op != "delete":
                if i >= len(lines):
                    raise ApiError(400, "illegal_argument_exception", "The bulk request must be terminated by a newline")
                source, i = _j(lines[i].encode()), i + 1
            name = meta.get("_index") or a.get("index")
            if not name:
                raise ApiError(400, "action_request_validation_exception", "Validation Failed: 1: index is missing;")
            try:
                status, item = self._write(dom, name, meta.get("_id"), op, source)
                errors |= status >= 400
            except ApiError as e:
                status, item, errors = e.status, {"_index": name, "_id": meta.get("_id"),
                                                  "error": {"type": e.etype, "reason": e.reason, **e.extra}}, True
            items.append({op: {**item, "status": status}})
        return 200, {"took": 1, "errors": errors, "items": items}

    def _api_refresh(self, dom, a, q, raw):
        names = self._resolve(dom, a.get("index"), _flag(q, "ignore_unavailable"), forbid_closed=True)
        total = sum(len(c) for n in names for c in dom["indices"][n]["copies"])
        ok = sum(c["state"] == STARTED for n in names for cs in dom["indices"][n]["copies"] for c in cs)
        return 200, {"_shards": {"total": total, "successful": ok, "failed": 0}}

    def _searchable(self, dom, a, q, body):
        """(docs [(index, id, source)] matching the query, _shards header) over the target indices."""
        names = self._resolve(dom, a.get("index"), _flag(q, "ignore_unavailable"), forbid_closed=True)
        pred = _compile((body or {}).get("query"))
        total = failed = 0
        hits = []
        for n in names:
            idx = dom["indices"][n]
            total += idx["shards"]
            failed += len(self._down_shards(idx))
            hits += [(n, k, v) for k, v in self._visible(idx).items() if pred(v)]
        if total and failed == total:
            raise ApiError(503, "search_phase_execution_exception", "all shards failed", phase="query",
                           grouped=True, failed_shards=[])
        return hits, {"total": total, "successful": total - failed, "skipped": 0, "failed": failed}

    def _api_search(self, dom, a, q, raw):
        body = _j(raw) or {}
        extra = set(body) - {"query", "size", "from", "track_total_hits", "_source", "timeout"}
        if extra or "q" in q:
            raise ApiError(400, "unsupported_in_test_double", f"search option [{sorted(extra or {'q'})[0]}] is not "
                           "implemented by the opsbook OpenSearch test double")
        hits, shards = self._searchable(dom, a, q, body)
        start, size = int(body.get("from", q.get("from", 0))), int(body.get("size", q.get("size", 10)))
        want = body.get("_source", True)
        out = []
        for n, k, v in hits[start:start + size]:
            hit = {"_index": n, "_id": k, "_score": 1.0}
            if want is not False:
                hit["_source"] = {f: v[f] for f in _split(want) if f in v} if want is not True else v
            out.append(hit)
        return 200, {"took": 1, "timed_out": False, "_shards": shards,
                     "hits": {"total": {"value": len(hits), "relation": "eq"},
                              "max_score": 1.0 if out else None, "hits": out}}

    def _api_count(self, dom, a, q, raw):
        hits, shards = self._searchable(dom, a, q, _j(raw))
        return 200, {"count": len(hits), "_shards": shards}

    def _api_delete_by_query(self, dom, a, q, raw):
        body = _j(raw)
        if not body or "query" not in body:
            raise ApiError(400, "action_request_validation_exception", "Validation Failed: 1: query is missing;")
        hits, _ = self._searchable(dom, a, q, body)
        for n, k, _ in hits:
            del dom["indices"][n]["docs"][k]
        return 200, {"took": 1, "timed_out": False, "total": len(hits), "deleted": len(hits), "batches": 1,
                     "version_conflicts": 0, "noops": 0, "retries": {"bulk": 0, "search": 0},
                     "throttled_millis": 0, "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": []}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "opsbook-opensearch-test-double/" + VERSION
    timeout = 60  # idle keep-alive connections are dropped after this
    wbufsize = -1  # buffer headers + body into one write (no Nagle / delayed-ACK stalls)
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - keep the test output quiet
        pass

    def _read_body(self):
        data = self.rfile.read(int(self.headers.get("content-length") or 0))  # opensearch-py never chunks
        if (self.headers.get("content-encoding") or "").lower() == "gzip":
            data = gzip.decompress(data)
        return data

    def _handle(self):
        raw = self._read_body()
        double = self.server.double
        split = urlsplit(self.path)
        domain, _, rest = split.path.lstrip("/").partition("/")
        domain = unquote(domain)
        with double._lock:
            unreachable = domain in double._domains and double._domains[domain]["unreachable"]
        if unreachable:  # like a dead endpoint: drop the connection without any response
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if double._latency:
            time.sleep(double._latency)
        status, payload = double._dispatch(domain, self.command, rest.strip("/"), split.query, raw)
        if isinstance(payload, str):
            data, ctype = payload.encode(), "text/plain; charset=UTF-8"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json; charset=UTF-8"
        if self.command == "HEAD":
            data = b""
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle
