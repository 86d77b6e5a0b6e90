"""Loopback means loopback: when AWS calls go to this machine, so does every other connection opsbook opens.

A run is *loopback-only* when ``AWS_ENDPOINT_URL`` is on loopback (the sandbox, an emulator on this machine) or
``OPSBOOK_LOOPBACK_ONLY=1`` (the sandbox and the test suite set it). Then no connection opsbook itself opens outside the
AWS SDK may leave the machine: OpenSearch clusters (tasks/opensearch.py), HTTP probes and the admin API
(tasks/endpoints.py), the paging channel (opsbook/paging.py), Prefect notification blocks (opsbook/notify.py), the case
database (tasks/cases_db.py). A sandboxed run that would post to a real PagerDuty or read a production cluster is the
worst kind of test.

Two places apply the rule:

- ``preflight`` (the CLI, before any call): what the inventory and the environment already say, for what the runbook
  uses: the OpenSearch clusters it reads (its tasks declare ``es:ESHttp*``) and the paging channel it posts to. A refusal
  is one line, exit 3.
- ``require_loopback`` (every connection, at the moment it is opened): raises ``NotLoopback``, which the caller's usual
  handling turns into UNKNOWN with the reason (or an error in the report's notification), never a request.

The sandbox's way to stay on the machine is to map each kind of target to its doubles (``OPENSEARCH_TEMPLATE_ENV``,
``OPSBOOK_ENDPOINT_MAP``, ``OPSBOOK_CASES_DB_ENDPOINT``): the rule applies to where a request really goes.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_ENV = "OPSBOOK_LOOPBACK_ONLY"  # "1": no connection leaves this machine (the sandbox and the test suite set it)
OPENSEARCH_TEMPLATE_ENV = "OPSBOOK_OPENSEARCH_URL_TEMPLATE"  # e.g. http://127.0.0.1:9200/{domain} (the sandbox sets it)
CLUSTER_ACTIONS = ("es:ESHttp",)  # a runbook whose tasks declare these reads OpenSearch clusters over HTTP


class NotLoopback(RuntimeError):
    """A connection off this machine refused because the run is loopback-only (the message says what to set)."""


def is_loopback_host(host: str | None) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1); a name like 127.example.com is not."""
    host = (host or "").strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(url: str) -> str:
    """A URL's host (a bare host[:port] too)."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    return parts.hostname or ""


def where(url: str) -> str:
    """A URL as scheme://host[:port] only (a path or query may carry a token)."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{netloc}" if parts.scheme else netloc


def reason(environ: Mapping[str, str] | None = None) -> str | None:
    """Why this run is loopback-only (to be said in a refusal), or None when it may reach anything."""
    env = os.environ if environ is None else environ
    endpoint = (env.get("AWS_ENDPOINT_URL") or "").strip()
    if endpoint and is_loopback_host(host_of(endpoint)):
        return f"AWS calls go to {where(endpoint)} on this machine (AWS_ENDPOINT_URL)"
    if env.get(LOOPBACK_ENV) == "1":
        return f"this run reaches this machine only ({LOOPBACK_ENV}=1)"
    return None


def loopback_only(environ: Mapping[str, str] | None = None) -> bool:
    return reason(environ) is not None


def refusal(url: str, what: str, fix: str = "", environ: Mapping[str, str] | None = None) -> str | None:
    """Why ``what`` at ``url`` may not be reached (one line, ending with ``fix`` when given), or None: allowed."""
    why = reason(environ)
    if why is None or is_loopback_host(host_of(url)):
        return None
    return f"{what}: {where(url)} is not on this machine, and {why}" + (f"; {fix}" if fix else "")


def require_loopback(url: str, what: str, fix: str = "", environ: Mapping[str, str] | None = None) -> str:
    """The per-connection guard: ``url`` itself, or ``NotLoopback`` when the run is loopback-only and it is not."""
    why = refusal(url, what, fix, environ)
    if why:
        raise NotLoopback(why)
    return url


# --- before any call: what the inventory and the environment already say -----------------------------------------


def opensearch_url(name: str, endpoint: str | None, environ: Mapping[str, str]) -> str | None:
    """Where a domain's cluster is reached, as tasks/opensearch.endpoint_for chooses, when that is known before any call
    (the inventory's endpoint, else the template); None: it would be the domain's own endpoint, read from AWS."""
    if endpoint:
        return endpoint
    template = environ.get(OPENSEARCH_TEMPLATE_ENV)
    return template.format(domain=name) if template else None


def opensearch_refusal(name: str, endpoint: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """A loopback-only run and a domain whose cluster would be reached off this machine: what to set instead."""
    env = os.environ if environ is None else environ
    why = reason(env)
    if why is None:
        return None
    url = opensearch_url(name, endpoint, env)
    fix = (f"set {OPENSEARCH_TEMPLATE_ENV} to the local cluster (like http://127.0.0.1:9200/{{domain}}; the sandbox sets it "
           f"to its OpenSearch double)")
    if url is None:
        return (f"OpenSearch domain {name}: its cluster would be reached at the domain's own (public) endpoint, and {why}; "
                f"{fix}")
    return refusal(url, f"OpenSearch domain {name}", fix, env)


def preflight(system: Any, iam_actions: Iterable[str], pages: bool, environ: Mapping[str, str] | None = None) -> str | None:
    """The first reason a loopback-only run of a runbook on ``system`` would leave this machine, known before any call
    (one line), or None. ``iam_actions``: what the runbook's tasks declare (clusters read: ``es:ESHttp*``); ``pages``:
    it posts to the inventory's paging channel."""
    env = os.environ if environ is None else environ
    if reason(env) is None:
        return None
    if any(a.startswith(CLUSTER_ACTIONS) for a in iam_actions):
        for d in system.opensearch_domains:
            why = opensearch_refusal(d.name, d.endpoint, env)
            if why:
                return why
    paging = system.notifications.paging
    if pages and paging is not None:
        why = refusal(paging.endpoint, f"the paging channel ({paging.kind})", "point notifications.paging.url at a receiver on "
                      "this machine, or run against real AWS", env)
        if why:
            return why
    return None


def block_urls(block: Any) -> list[str]:
    """The URLs a Prefect notification block would post to (its fields holding an http(s) URL, secret ones included)."""
    out: list[str] = []
    for name in getattr(type(block), "model_fields", {}):
        value = getattr(block, name, None)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif value is not None and hasattr(value, "scheme") and hasattr(value, "host"):  # pydantic's URL types
            value = str(value)
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            out.append(value)
    return out
