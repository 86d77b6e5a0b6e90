"""Notifications: the system's SNS topic (and a Prefect notification block if
configured), sent once per change of status, never every run while it stays so."""

from __future__ import annotations

import logging
import re
from typing import Any

from prefect.cache_policies import NO_CACHE

from opsbook import aws
from opsbook.findings import Status
from opsbook.iam import aws_task
from opsbook.inventory import System
from opsbook.loopback import block_urls, require_loopback
from opsbook.masking import mask

log = logging.getLogger("opsbook.notify")

ALERTING = {Status.WARN, Status.CRIT}


def decide(last_notified: str | None, status: Status) -> str | None:
    """What to send given the last status we notified about: 'alert', 'recovery' or None."""
    if status in ALERTING and last_notified != status.value:
        return "alert"
    if status is Status.OK and last_notified in {s.value for s in ALERTING}:
        return "recovery"
    return None


def topic_arn(system: System) -> str | None:
    t = system.notifications.sns_topic
    if not t:
        return None
    if t.startswith("arn:"):
        return t
    account = system.account_id or aws.caller_identity(system.region)["account"]
    return f"arn:aws:sns:{system.region}:{account}:{t}"


def _state_key(runbook: str, system: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", f"opsbook_{runbook}_{system}_notified".lower())


def _last_notified(key: str) -> str | None:
    from prefect.variables import Variable

    return Variable.get(key, default=None)


def _remember(key: str, value: str) -> None:
    from prefect.variables import Variable

    Variable.set(key, value, overwrite=True)


def publish(system: System, subject: str, body: str) -> dict[str, Any]:
    """Send to the system's SNS topic and Prefect block (masked). Errors are returned, not raised."""
    subj = mask(subject)[:100]
    text = mask(body)
    result: dict[str, Any] = {"sent": [], "errors": []}
    arn = None
    try:
        arn = topic_arn(system)
        if arn:
            aws.client("sns", system.region).publish(TopicArn=arn, Subject=subj, Message=text)
            result["sent"].append(f"sns:{arn}")
    except Exception as exc:  # reported in the run's result and log
        result["errors"].append(f"SNS {arn or system.notifications.sns_topic}: {aws.describe_error(exc)}")
    if system.notifications.prefect_block:
        try:
            from prefect.blocks.core import Block

            block = Block.load(system.notifications.prefect_block)
            for url in block_urls(block):  # a sandboxed run never posts to a real Slack or Teams
                require_loopback(url, f"the Prefect block {system.notifications.prefect_block}'s URL",
                                 "use a block posting to this machine, or run against real AWS")
            with block.raise_on_failure():
                block.notify(body=text, subject=subj)
            result["sent"].append(f"prefect-block:{system.notifications.prefect_block}")
        except Exception as exc:
            result["errors"].append(f"Prefect block {system.notifications.prefect_block}: {exc}")
    if not result["sent"] and not result["errors"]:
        result["errors"].append("no notification channel configured (notifications.sns_topic / prefect_block)")
    for e in result["errors"]:
        log.warning("notification failed: %s", e)
    return result


@aws_task(iam=["sns:Publish"], cache_policy=NO_CACHE, read_only=False)
def notify_status(system: System, runbook: str, status: Status, subject: str, body: str) -> dict[str, Any]:
    """Send an alert or a recovery notice when the status changed; returns what was done."""
    key = _state_key(runbook, system.name)
    try:
        last, unread = _last_notified(key), None
    except Exception as exc:  # no memory (Prefect down: an offline run): alert rather than stay silent; it may repeat one
        last, unread = None, f"the last status notified could not be read ({type(exc).__name__}): an alert may repeat"
    kind = decide(last, status)
    if kind is None:
        return {"kind": None, "previous": last, "sent": [], "errors": [unread] if unread else []}
    prefix = "RECOVERED" if kind == "recovery" else status.value
    result = {"kind": kind, "previous": last, **publish(system, f"[opsbook {prefix}] {subject}", body)}
    if unread:
        result["errors"].append(unread)
    elif result["sent"] and not result["errors"]:
        try:
            _remember(key, status.value)
        except Exception as exc:
            result["errors"].append(f"sent, but not remembered ({type(exc).__name__}: {exc}): the next run may repeat it")
    return result
