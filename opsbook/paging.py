"""Paging: besides SNS, the inventory's paging channel (``notifications.paging``: PagerDuty Events API v2 or a generic
webhook) receives CRIT findings once per incident, and a resolve when they clear.

Once per incident, per finding: the dedup key is the system, the runbook and a hash of the finding's (check, resource)
(``opsbook:<system>:<runbook>:<12 hex>``). A finding pages when it becomes CRIT (``min_status``) and never again while
it stays so; a resolve with the same key goes out when the same (check, resource) reads OK (or WARN, below
``min_status``) again, or the whole run is OK. A finding that could not be read (UNKNOWN) or was not checked this run
keeps its incident open: not seeing a fault is no recovery. Per finding rather than one key for the set of CRIT
findings, so a second fault during an open incident pages (it is news) without re-paging the first, a partial recovery
resolves exactly what recovered, and PagerDuty's own alert grouping still folds them into one incident.

The open keys live in a Prefect variable per runbook and system (``opsbook_<runbook>_<system>_paged``), as
``opsbook.notify`` keeps the last status it sent; only an event the channel accepted changes them, so a failed send is
tried again by the next run. A failed send, a missing secret or an unreadable state is an error in the report's
``notification`` (``paging``), never a failed run and never a change of its status. The secret (routing key, or a
webhook's bearer token) is read at send time from the environment (``routing_key_env``) or a Prefect Secret block
(``secret_block``) and never written anywhere; URLs are reported by host only (a webhook's path may hold a token).
When AWS calls go to a loopback endpoint (the sandbox, the tests), only a loopback receiver is posted to.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from typing import Any
from urllib.parse import urlparse

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from opsbook import aws, loopback
from opsbook.escalation import CHECK as ESCALATION_CHECK
from opsbook.findings import Finding, Status, overall
from opsbook.inventory import Paging, System
from opsbook.masking import mask

log = logging.getLogger("opsbook.paging")

TIMEOUT_S = 10.0
MAX_EVENTS = 50  # a run's events at most (PagerDuty takes about 120 a minute a routing key); the rest go with the next run
_SEVERITY = {Status.CRIT: "critical", Status.WARN: "warning"}


# --- pure: keys and what to send ------------------------------------------------------------------


def fingerprint(check: str, resource: str) -> str:
    return hashlib.sha256(f"{check}\0{resource}".encode()).hexdigest()[:12]


def dedup_key(system: str, runbook: str, fp: str) -> str:
    return f"opsbook:{system}:{runbook}:{fp}"


def paging_statuses(min_status: str) -> set[Status]:
    return {Status.CRIT} if min_status == "CRIT" else {Status.CRIT, Status.WARN}


class PagePlan(BaseModel):
    trigger: list[Finding] = Field(default_factory=list)
    resolve: list[str] = Field(default_factory=list)  # fingerprints

    @property
    def empty(self) -> bool:
        return not self.trigger and not self.resolve


def plan_pages(open_fps: list[str], findings: list[Finding], min_status: str = "CRIT") -> PagePlan:
    """What to send: a trigger for each paging finding not already open, a resolve for each open one that reads below
    ``min_status`` now (or everything when the run is OK). The escalation finding is not paged itself (its line goes with
    the triggers)."""
    paging = paging_statuses(min_status)
    counted = [f for f in findings if f.check != ESCALATION_CHECK]
    current: dict[str, Finding] = {}
    for f in counted:
        if f.status in paging:
            current.setdefault(fingerprint(f.check, f.resource), f)
    seen_clear = {fingerprint(f.check, f.resource) for f in counted if f.status not in paging and f.status is not Status.UNKNOWN}
    all_ok = bool(findings) and overall(findings) is Status.OK
    opened = set(open_fps)
    return PagePlan(trigger=[f for fp, f in current.items() if fp not in opened],
                    resolve=[fp for fp in open_fps if fp not in current and (all_ok or fp in seen_clear)])


def escalation_text(findings: list[Finding]) -> str | None:
    return next((f.summary for f in findings if f.check == ESCALATION_CHECK), None)


def trigger_event(p: Paging, secret: str | None, key: str, f: Finding, system: str, runbook: str, run_url: str | None,
                  escalation: str | None) -> dict[str, Any]:
    """The event for a finding: PagerDuty's Events API v2 shape, or the webhook's (the same facts, no routing key)."""
    summary = mask(f"{f.status.value} {system} {runbook}: {f.check} {f.resource}: {f.summary}")[:1024]
    details = {"check": f.check, "resource": f.resource, "status": f.status.value, "value": f.value, "runbook": runbook,
               "system": system, "escalation": mask(escalation) if escalation else None, "run": run_url}
    if p.kind == "webhook":
        return {"event_action": "trigger", "dedup_key": key, "summary": summary, "severity": _SEVERITY[f.status], **details}
    body: dict[str, Any] = {"routing_key": secret, "event_action": "trigger", "dedup_key": key,
                            "payload": {"summary": summary, "source": system, "severity": _SEVERITY[f.status],
                                        "component": f.resource[:255], "group": runbook, "class": f.check,
                                        "custom_details": details}}
    if run_url:
        body["links"] = [{"href": run_url, "text": "opsbook run"}]
    return body


def resolve_event(p: Paging, secret: str | None, key: str, system: str, runbook: str) -> dict[str, Any]:
    if p.kind == "webhook":
        return {"event_action": "resolve", "dedup_key": key, "system": system, "runbook": runbook}
    return {"routing_key": secret, "event_action": "resolve", "dedup_key": key}


def where(url: str) -> str:
    """A URL as scheme://host[:port] (a webhook's path or query may carry a token)."""
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc.rsplit('@', 1)[-1]}"


def refusal(p: Paging, aws_endpoint: str | None) -> str | None:
    """Why nothing may be sent: AWS calls go to a loopback endpoint (sandbox, tests) and the receiver is not on loopback."""
    if loopback.loopback_only({"AWS_ENDPOINT_URL": aws_endpoint or "", loopback.LOOPBACK_ENV: os.environ.get(loopback.LOOPBACK_ENV, "")}) \
            and not aws.is_loopback_url(p.endpoint):  # the one rule (opsbook.loopback), said in paging's words
        sandboxed = f"AWS calls go to {where(aws_endpoint)} (a sandbox on this machine)" if aws_endpoint else "this run is sandboxed (OPSBOOK_LOOPBACK_ONLY=1)"
        return f"{sandboxed} and the paging URL {where(p.endpoint)} is not on loopback"
    return None


# --- I/O: the secret, the state, the post -------------------------------------------------------------


class PagingError(Exception):
    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable  # no answer at all: the rest of the run's events are not tried


def read_secret(p: Paging, environ: Any = os.environ) -> str | None:
    """The routing key (pagerduty) or bearer token (webhook), or None for a webhook without one."""
    if p.routing_key_env:
        value = environ.get(p.routing_key_env)
        if not value:
            raise PagingError(f"the environment variable {p.routing_key_env} (routing_key_env) is not set")
        return value
    if p.secret_block:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(p.secret_block).get()
        except Exception as exc:
            raise PagingError(f"the Prefect Secret block {p.secret_block!r} could not be read: {type(exc).__name__}") from None
        if not isinstance(value, str) or not value:
            raise PagingError(f"the Prefect Secret block {p.secret_block!r} holds no text")
        return value
    return None


def state_key(runbook: str, system: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", f"opsbook_{runbook}_{system}_paged".lower())


def remembered(key: str) -> list[str]:
    from prefect.variables import Variable

    value = Variable.get(key, default=None)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def remember(key: str, fps: list[str]) -> None:
    from prefect.variables import Variable

    Variable.set(key, sorted(fps), overwrite=True)


def post(url: str, body: dict[str, Any], secret: str | None, bearer: bool) -> None:
    """POST the event; a non-2xx answer or a transport error raises PagingError with a text free of the secret and URL path."""
    import httpx

    headers = {"Authorization": f"Bearer {secret}"} if bearer and secret else {}
    try:
        r = httpx.post(url, json=body, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise PagingError(f"{where(url)}: {type(exc).__name__}", unreachable=True) from None
    if not 200 <= r.status_code < 300:
        text = (r.text.replace(secret, "***") if secret else r.text)[:200]
        raise PagingError(f"{where(url)} answered HTTP {r.status_code}: {mask(' '.join(text.split()))}")


# --- the task -----------------------------------------------------------------------------------------


def _send(p: Paging, secret: str | None, plan: PagePlan, opened: set[str], system: str, runbook: str,
          findings: list[Finding], run_url: str | None, result: dict[str, Any]) -> set[str]:
    """Send the plan's events (at most MAX_EVENTS; none after the channel did not answer); returns the open fingerprints
    after what the channel accepted."""
    escalation = escalation_text(findings)
    now = set(opened)
    events: list[tuple[str, Finding | None]] = [(fingerprint(f.check, f.resource), f) for f in plan.trigger]
    events += [(fp, None) for fp in plan.resolve]
    for i, (fp, f) in enumerate(events):
        key = dedup_key(system, runbook, fp)
        what = f"trigger {f.check} {f.resource}" if f is not None else f"resolve {key}"
        if i == MAX_EVENTS:
            result["errors"].append(f"{len(events) - i} event(s) not sent: at most {MAX_EVENTS} a run; the next run sends them")
            break
        body = (trigger_event(p, secret, key, f, system, runbook, run_url, escalation) if f is not None
                else resolve_event(p, secret, key, system, runbook))
        try:
            post(p.endpoint, body, secret, p.kind == "webhook")
        except PagingError as exc:
            result["errors"].append(f"{what}: {exc}; the next run tries again")
            if exc.unreachable and i + 1 < len(events):
                result["errors"].append(f"{len(events) - i - 1} more event(s) not tried: the channel did not answer")
                break
            continue
        if f is not None:
            now.add(fp)
            result["triggered"].append(f"{f.check} {f.resource} ({key})")
        else:
            now.discard(fp)
            result["resolved"].append(key)
    return now


@task(name="page", cache_policy=NO_CACHE)
def page_findings(system: System, runbook: str, findings: list[Finding], run_url: str | None = None) -> dict[str, Any]:
    """Trigger the new paging findings and resolve the cleared ones on the system's paging channel (see the module
    docstring). Returns {channel, triggered, resolved, open, errors}; never raises for a channel's failure."""
    p = system.notifications.paging
    if p is None:
        return {}
    result: dict[str, Any] = {"channel": f"{p.kind}:{where(p.endpoint)}", "triggered": [], "resolved": [], "open": 0, "errors": []}
    key = state_key(runbook, system.name)
    read_ok = True
    try:
        opened = remembered(key)
    except Exception as exc:  # page anyway: a CRIT paged twice beats one not paged (the channel dedups by key)
        result["errors"].append(f"the open incidents could not be read ({type(exc).__name__}): every CRIT finding pages again")
        opened, read_ok = [], False
    plan = plan_pages(opened, findings, p.min_status)
    result["open"] = len(opened)
    if plan.empty:
        return result
    why_not = refusal(p, aws.endpoint_url())
    try:
        if why_not:
            raise PagingError(why_not)
        secret = read_secret(p)
    except PagingError as exc:
        result["errors"].append(f"{len(plan.trigger)} trigger(s) and {len(plan.resolve)} resolve(s) not sent: {exc}")
        return result
    now = _send(p, secret, plan, set(opened), system.name, runbook, findings, run_url, result)
    result["open"] = len(now)
    if now != set(opened) and read_ok:  # after a failed read, writing would forget the incidents earlier runs opened
        try:
            remember(key, sorted(now))
        except Exception as exc:
            result["errors"].append(f"sent, but not remembered ({type(exc).__name__}): the next run may page the same again")
    for e in result["errors"]:
        log.warning("paging failed: %s", e)
    return result


def page_report(report: Any, system: System, runbook: str) -> None:
    """Page the report's findings (when the inventory has a paging channel) and put what was done into
    ``report.notification`` (``paging``; its errors also in ``errors``). A failed page task is an error there too."""
    if system.notifications.paging is None:
        return
    fut = page_findings.submit(system, runbook, report.findings, report.flow_run_url)
    fut.wait()
    if fut.state.is_completed():
        paged = fut.result()
    else:
        paged = {"triggered": [], "resolved": [], "errors": [f"page task failed: {mask(str(fut.state.message))}"]}
    note = report.notification or {"kind": None, "sent": [], "errors": []}
    report.notification = {**note, "paging": paged, "errors": list(note.get("errors", [])) + [f"paging: {e}" for e in paged["errors"]]}
