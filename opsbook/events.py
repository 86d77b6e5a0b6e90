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
    from prefect.client.orchestration import get_client
    from prefect.events import Event

    ev = Event(event=name, resource=resource, payload=body, id=eid, occurred=occurred)
    with get_client(sync_client=True) as client:
        r = client._client.post("/events", json=[ev.model_dump(mode="json")])
        r.raise_for_status()
