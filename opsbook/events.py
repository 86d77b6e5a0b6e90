"""Prefect events, sent so that the sender knows they were accepted.

Why a POST to ``/api/events`` and not ``emit_event``: ``prefect.events.emit_event`` queues the event for a
background websocket sender and only logs a failure (``Error emitting event``), so a sender could not know that
an event was lost. The POST goes to the same server endpoint and returns only once the server accepted the
event; on an error the caller can keep it and send it again (with the same id, which Prefect's trigger
service deduplicates). The Event model is Prefect's own (``prefect.events.Event``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any


def send_event(name: str, resource: dict[str, str], body: dict[str, Any], eid: uuid.UUID, occurred: datetime) -> None:
    """POST one event to the Prefect API; raises unless the server accepted it (see the module docstring)."""
    send_events([(name, resource, body, eid, occurred)])


def send_events(events: list[tuple[str, dict[str, str], dict[str, Any], uuid.UUID, datetime]]) -> None:
    """POST several events (name, resource, payload, id, occurred) in one request: one write for the server instead of
    one a request. Raises unless the server accepted them all; nothing is sent for an empty list."""
    from prefect.client.orchestration import get_client
    from prefect.events import Event

    if not events:
        return
    body = [Event(event=name, resource=resource, payload=payload, id=eid, occurred=occurred).model_dump(mode="json")
            for name, resource, payload, eid, occurred in events]
    with get_client(sync_client=True) as client:
        r = client._client.post("/events", json=body)
        r.raise_for_status()
