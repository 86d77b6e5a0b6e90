"""Replaying an offline run's journal (opsbook/offline.py): in order, ids mapped, never twice, never while it is written."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from opsbook import offline


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("OPSBOOK_HOME", str(tmp_path))
    return tmp_path


def server():
    """A stand-in for the Prefect server's write API: what it was sent, in order."""
    sent = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        sent.append((request.method, request.url.path, body))
        if request.url.path.endswith(("/flows/", "/flow_runs/", "/artifacts/")):
            return httpx.Response(201, json={"id": str(uuid.uuid4())})
        return httpx.Response(201, json={})

    return httpx.Client(transport=httpx.MockTransport(handle), base_url="http://prefect.test/api"), sent


def journal(home, states, close=True):
    j = offline.Journal(offline.journal_dir() / "run.jsonl", "test")
    run = str(uuid.uuid4())
    j.write("flow", id=str(uuid.uuid4()), body={"name": "daily-health"})
    j.write("flow_run", id=run, body={"state": {"type": "PENDING"}})
    for kind in states:
        j.write("set_state", flow_run_id=run, body={"state": {"type": kind}})
    j.write("event", body={"id": str(uuid.uuid4()), "resource": {"prefect.resource.id": f"prefect.flow-run.{run}"}})
    if close:
        j.close()
    return j, run


def test_a_journal_still_being_written_is_left_alone_then_replayed_once_with_ids_mapped(home):
    client, sent = server()
    j, run = journal(home, ["RUNNING"], close=False)
    with pytest.raises(offline.StillWriting, match="its run is still going"):
        offline.replay_file(j.path, client)
    assert sent == [] and j.path.exists()
    j.write("set_state", flow_run_id=run, body={"state": {"type": "COMPLETED"}})
    j.close()
    offline.replay_file(j.path, client)
    paths = [p for _, p, _ in sent]
    assert paths[:2] == ["/api/flows/", "/api/flow_runs/"] and paths[-1] == "/api/events"
    server_run = [p for p in paths if p.endswith("/set_state")][0].split("/")[3]
    assert server_run != run and all(run not in json.dumps(b) for _, _, b in sent)  # every offline id replaced
    assert not any(isinstance(b, dict) and b.get("state", {}).get("type") == "CRASHED" for _, _, b in sent)  # it ended: no crash said
    assert not j.path.exists() and (offline.journal_dir() / "replayed" / "run.jsonl").exists()


def test_a_run_killed_before_its_last_state_is_recorded_crashed_saying_so(home):
    client, sent = server()
    j, _ = journal(home, ["RUNNING"])
    offline.replay_file(j.path, client)
    crashed = [b for _, p, b in sent if p.endswith("/set_state") and b["state"]["type"] == "CRASHED"]
    assert len(crashed) == 1 and "stopped before it finished" in crashed[0]["state"]["message"] and crashed[0]["force"]


def test_a_replay_that_stopped_resumes_without_sending_anything_twice(home):
    client, sent = server()
    j, _ = journal(home, ["RUNNING", "COMPLETED"])
    calls = {"n": 0}
    real = client.request

    def fail_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise httpx.ConnectError("server went away")
        return real(*args, **kwargs)

    client.request = fail_third
    with pytest.raises(httpx.ConnectError):
        offline.replay_file(j.path, client)
    first = len(sent)
    client.request = real
    offline.replay_file(j.path, client)
    creates = [p for _, p, _ in sent if p in ("/api/flows/", "/api/flow_runs/")]
    assert first == 2 and creates == ["/api/flows/", "/api/flow_runs/"]  # the run was not created again
