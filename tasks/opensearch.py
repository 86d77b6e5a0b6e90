"""OpenSearch: domain state (management API) and real cluster health (the
cluster's own HTTP API through opensearch-py: status, unassigned shards and why)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import ConnectionTimeout, TransportError
from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.findings import Finding, Status, unknown
from opsbook.iam import aws_task
from opsbook.inventory import OpenSearchDomain, System
from opsbook.resources import Discovered

URL_TEMPLATE_ENV = "OPSBOOK_OPENSEARCH_URL_TEMPLATE"  # e.g. http://127.0.0.1:9200/{domain} (the sandbox sets it)


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
    from opensearchpy import OpenSearch

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

        creds = aws.session().get_credentials()
        kwargs["http_auth"] = AWSV4SignerAuth(creds, region, "es")
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
        except TransportError as exc:
            out["explain"] = {"error": str(exc.error)}
    return out


def judge_cluster(domain: str, cluster: dict[str, Any] | None, error: BaseException | None) -> Finding:
    check = "opensearch-health"
    if error is not None:
        if isinstance(error, (OSConnectionError, ConnectionTimeout)):
            return unknown(check, domain, f"cluster endpoint unreachable ({type(error).__name__}); check the endpoint, VPC access or the domain's access policy")
        if isinstance(error, TransportError):
            return unknown(check, domain, f"cluster API answered {error.status_code}: {error.error}; check es:ESHttpGet permission and the access policy")
        return unknown(check, domain, aws.describe_error(error))
    assert cluster is not None
    h = cluster["health"]
    status, unassigned = h.get("status"), int(h.get("unassigned_shards", 0))
    details = {"status": status, "nodes": h.get("number_of_nodes"), "active_shards": h.get("active_shards"),
               "unassigned_shards": unassigned,
               "unassigned": [f"{s['index']}[{s['shard']}]{s['prirep']} {s.get('unassigned.reason') or ''}".strip() for s in cluster["unassigned"][:10]]}
    explain = cluster.get("explain") or {}
    why = explain.get("allocate_explanation") or (explain.get("unassigned_info") or {}).get("reason")
    if status == "green":
        return Finding(check=check, resource=domain, status=Status.OK, value=unassigned, summary="cluster green", details=details)
    text = f"cluster {status}, {unassigned} unassigned shard(s)"
    if details["unassigned"]:
        text += f": {', '.join(details['unassigned'][:3])}"
    if why:
        text += f" ({why})"
    if status == "red":
        return Finding(check=check, resource=domain, status=Status.CRIT, value=unassigned, summary=text + "; see remediate-opensearch-red", details=details)
    if status == "yellow":
        return Finding(check=check, resource=domain, status=Status.WARN, value=unassigned, summary=text, details=details)
    return Finding(check=check, resource=domain, status=Status.UNKNOWN, value=unassigned, summary=f"unexpected cluster status {status!r}", details=details)


def judge_domain(name: str, st: dict[str, Any] | None, named: bool) -> Finding:
    check = "opensearch-domain"
    if st is None:
        return Finding(check=check, resource=name, status=Status.CRIT,
                       summary="named in the inventory but does not exist" if named else "not found")
    if st.get("Deleted"):
        return Finding(check=check, resource=name, status=Status.CRIT, summary="domain is being deleted")
    if st.get("Processing") or st.get("UpgradeProcessing"):
        return Finding(check=check, resource=name, status=Status.WARN, summary="configuration change in progress (Processing)")
    return Finding(check=check, resource=name, status=Status.OK, summary=f"domain ready ({st.get('EngineVersion', '?')})")


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
            findings += [unknown("opensearch-domain", d.name, aws.describe_error(err)) for d in batch]
            continue
        for st in res["DomainStatusList"]:
            statuses[st["DomainName"]] = st
        for d in batch:
            findings.append(judge_domain(d.name, statuses.get(d.name), d.name in named))
    reachable = [d for d in doms if d.name in statuses]
    jobs = [(d, endpoint_for(d, statuses.get(d.name))) for d in reachable]
    for d, url in jobs:
        if url is None:
            findings.append(unknown("opensearch-health", d.name, "no endpoint: the domain has none yet and the inventory gives no endpoint override"))
    with_url = [(d, u) for d, u in jobs if u]
    for (d, url), cluster, err in aws.parallel(lambda du: read_cluster(du[1], system.region), with_url, deadline=deadline):
        findings.append(judge_cluster(d.name, cluster, err))
    return findings


# --- one index: count it, rebuild it from documents (reindex-case). Plain functions: the calling task declares
# es:DescribeDomain and es:ESHttp<Verb> (opensearch-py does not go through botocore: checked by review and tests).

from collections.abc import Callable, Iterable, Iterator  # noqa: E402  (this section is appended)
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


def rebuild_index(url: str, region: str, index: str, docs: Iterable[dict[str, Any]], key: str, batch_size: int,
                  on_batch: Callable[[Rebuilt], None] | None = None) -> Rebuilt:
    """Make the index hold exactly ``docs``: create it if missing, bulk-index in batches
    (document id = ``doc[key]``, so nothing is duplicated), then remove documents not among them."""
    client = os_client(url, region, timeout=60)
    done = Rebuilt()
    answer = client.indices.create(index=index, ignore=400)  # PUT; an existing index is kept and refilled
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
def read_index(system: System, domain: str, index: str) -> IndexState:
    """The domain's endpoint and how many documents the index holds (exists=False: no such index)."""
    url = domain_url(system, domain)
    n = index_count(url, system.region, index)
    return IndexState(url=url, exists=n is not None, count=n or 0)
