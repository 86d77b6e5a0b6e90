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
from opsbook.components import judge_cluster, judge_domain
from opsbook.findings import Finding
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
    if isinstance(error, (OSConnectionError, ConnectionTimeout)):
        return f"cluster endpoint unreachable ({type(error).__name__}); check the endpoint, VPC access or the domain's access policy"
    if isinstance(error, TransportError):
        return f"{api} API answered {error.status_code}: {error.error}; check es:ESHttpGet permission and the access policy"
    return aws.describe_error(error)
