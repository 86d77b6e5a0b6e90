"""Lambda timeout scenarios for remediate-lambda-timeout, on a seeded system.

moto runs no Lambda code, so the sandbox writes what Lambda would have
written: per invocation a ``REPORT RequestId: ... Duration: N ms`` line, per
timeout a ``Task timed out after N seconds`` line, in the function's log
group, and the AWS/Lambda metrics (Invocations, Errors, Duration) one
datapoint a minute. The function's LastModified is moved back (through moto's
backend) so the evidence is newer than the last configuration change, as on a
function that has run unchanged for days.

- ``lambda_timeouts``: one function times out near its timeout (too slow), or
  with ``hang=True`` while its other invocations are fast (a downstream hang);
  the system's other functions get healthy traffic;
- ``healthy_lambdas``: every function runs well within its timeout;
- ``traffic_after_change``: once a function's configuration changes, invocations
  keep coming (with or without timeouts), for the watch after a fix;
- ``slow_update`` / ``failing_update``: LastUpdateStatus InProgress for a few
  reads after an update, or Failed (moto reports Successful at once);
- ``metrics_unreadable``: GetMetricData answers AccessDenied.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from opsbook.inventory import System
from sandbox.server import Sandbox, sandbox_client

STREAM = "2026/01/01/[$LATEST]sandbox"


def _fn(sb: Sandbox, system: System, name: str) -> Any:
    return sb.backend("lambda", system.region).get_function(name)


def backdate(sb: Sandbox, system: System, function: str, days: float = 2) -> None:
    """The function's configuration last changed ``days`` ago."""
    _fn(sb, system, function).last_modified = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def _config(sb: Sandbox, system: System, function: str) -> dict[str, Any]:
    return sandbox_client(sb, "lambda", system.region).get_function_configuration(FunctionName=function)


def _log_group(system: System, function: str) -> str:
    spec = next((f for f in system.lambda_functions if f.name == function), None)
    return spec.log_group_name if spec else f"/aws/lambda/{function}"


def _write_logs(sb: Sandbox, system: System, function: str, events: list[tuple[datetime, str]], stream: str = STREAM,
                create_group: bool = True) -> None:
    from sandbox.faults import _put

    _put(sb, system, _log_group(system, function), stream, events, create_group=create_group)


def _lines(at: datetime, duration_ms: float, memory_mb: int, timed_out: bool, timeout_s: int) -> list[tuple[datetime, str]]:
    rid = str(uuid.uuid4())
    iso = at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    out = [(at, f"START RequestId: {rid} Version: $LATEST")]
    end = at + timedelta(milliseconds=duration_ms)
    if timed_out:
        out.append((end, f"{iso} {rid} Task timed out after {timeout_s + 0.03:.2f} seconds"))
    out.append((end, f"END RequestId: {rid}"))
    out.append((end, f"REPORT RequestId: {rid}\tDuration: {duration_ms:.2f} ms\tBilled Duration: {int(duration_ms) + 1} ms\t"
                     f"Memory Size: {memory_mb} MB\tMax Memory Used: {min(memory_mb, 90)} MB" + ("\tStatus: timeout" if timed_out else "")))
    return out


def _traffic(sb: Sandbox, system: System, function: str, *, minutes: int, per_minute: int, timeouts_per_minute: int,
             fast: tuple[float, float], errors_per_minute: int = 0) -> dict[str, Any]:
    """``minutes`` of traffic ending a minute ago: ``per_minute`` invocations a minute, of which ``timeouts_per_minute`` time out
    (Duration = the timeout); the others last between fast[0] and fast[1] x the timeout."""
    cfg = _config(sb, system, function)
    timeout_s, memory_mb = int(cfg["Timeout"]), int(cfg["MemorySize"])
    backdate(sb, system, function)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    events: list[tuple[datetime, str]] = []
    data: list[dict[str, Any]] = []
    dims = [{"Name": "FunctionName", "Value": function}]
    durations_all: list[float] = []
    for m in range(minutes, 0, -1):
        minute = now - timedelta(minutes=m)
        durations = []
        for i in range(per_minute):
            timed_out = i < timeouts_per_minute
            if timed_out:
                ms = timeout_s * 1000 + 30.0
            else:
                share = fast[0] + (fast[1] - fast[0]) * (i / max(per_minute - 1, 1))
                ms = round(timeout_s * 1000 * share, 2)
            durations.append(ms)
            events += _lines(minute + timedelta(seconds=i * 50 / max(per_minute, 1)), ms, memory_mb, timed_out, timeout_s)
        durations_all += durations
        data += [{"MetricName": "Invocations", "Dimensions": dims, "Timestamp": minute, "Value": float(per_minute), "Unit": "Count"},
                 {"MetricName": "Errors", "Dimensions": dims, "Timestamp": minute, "Value": float(timeouts_per_minute + errors_per_minute), "Unit": "Count"},
                 {"MetricName": "Duration", "Dimensions": dims, "Timestamp": minute, "Values": durations, "Unit": "Milliseconds"}]
    # Every line in the past when written: the last minute's invocations start up to 50 s into it and last up to the
    # timeout, and a line stamped after the runbook's change would count as new traffic after it.
    late = max(at for at, _ in events) - (datetime.now(timezone.utc) - timedelta(seconds=1))
    if late > timedelta(0):
        events = [(at - late, line) for at, line in events]
    cw = sandbox_client(sb, "cloudwatch", system.region)
    for i in range(0, len(data), 500):
        cw.put_metric_data(Namespace="AWS/Lambda", MetricData=data[i : i + 500])
    _write_logs(sb, system, function, events)
    return {"function": function, "start": min(at for at, _ in events), "timeout_s": timeout_s, "memory_mb": memory_mb, "invocations": minutes * per_minute,
            "timeouts": minutes * timeouts_per_minute, "max_ms": max(durations_all) if durations_all else None,
            "avg_ms": sum(durations_all) / len(durations_all) if durations_all else None}


def configure(sb: Sandbox, system: System, function: str, *, timeout_s: int, memory_mb: int) -> None:
    """The function as deployed with this timeout and memory (the seed gives it the inventory's ``expected_*``)."""
    sandbox_client(sb, "lambda", system.region).update_function_configuration(FunctionName=function, Timeout=timeout_s, MemorySize=memory_mb)


def healthy_lambdas(sb: Sandbox, system: System, functions: list[str] | None = None, *, minutes: int = 30, per_minute: int = 4,
                    skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every (or the named) function runs at 5-30 % of its timeout, never timing out."""
    names = [n for n in (functions or [f.name for f in system.lambda_functions]) if n not in skip]
    return {n: _traffic(sb, system, n, minutes=minutes, per_minute=per_minute, timeouts_per_minute=0, fast=(0.05, 0.3)) for n in names}


def lambda_timeouts(sb: Sandbox, system: System, function: str | None = None, *, minutes: int = 30, per_minute: int = 10,
                    timeouts_per_minute: int = 2, hang: bool = False, others_healthy: bool = True,
                    earlier_timeouts: int = 0) -> dict[str, Any]:
    """``function`` (default: the inventory's first) times out; the others are healthy unless ``others_healthy`` is False.

    Too slow (default): the invocations that finish take 60-95 % of the timeout.
    ``hang=True``: they take 1-2 % of it, and the timeouts are a call that never answers.
    ``earlier_timeouts``: timeout lines from before the last configuration change (not to be counted)."""
    if not system.lambda_functions:
        raise ValueError(f"scenario lambda-timeouts needs a Lambda function in the inventory of {system.name}")
    name = function or system.lambda_functions[0].name
    out = _traffic(sb, system, name, minutes=minutes, per_minute=per_minute, timeouts_per_minute=timeouts_per_minute,
                   fast=(0.01, 0.02) if hang else (0.6, 0.95))
    if earlier_timeouts:
        change = out["start"] - timedelta(minutes=5)
        _fn(sb, system, name).last_modified = change.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
        old = [(change - timedelta(minutes=1 + i), f"{(change - timedelta(minutes=1 + i)).isoformat()} old Task timed out after 10.00 seconds")
               for i in range(earlier_timeouts)]
        _write_logs(sb, system, name, old, stream="2026/01/01/[$LATEST]earlier")
        out["earlier_timeouts"] = earlier_timeouts
    if others_healthy:
        out["healthy"] = healthy_lambdas(sb, system, skip=(name,))
    return out


def slow_durations(sb: Sandbox, system: System, function: str | None = None, share: float = 0.96, *, minutes: int = 10,
                   per_minute: int = 10) -> dict[str, Any]:
    """``function`` (default: the inventory's first) ran ``per_minute`` invocations a minute for the last ``minutes``, each
    lasting ``share`` of its configured timeout: its Duration p99 over any window holding them is exactly that share (only the
    AWS/Lambda metrics are written: daily-health compares them with the timeout)."""
    from sandbox.metrics import enable_percentiles

    if not system.lambda_functions and function is None:
        raise ValueError(f"fault 'lambda-slow' needs a Lambda function in the inventory of {system.name}")
    name = function or system.lambda_functions[0].name
    enable_percentiles()  # moto computes no pNN itself
    timeout_s = int(_config(sb, system, name)["Timeout"])
    ms = round(timeout_s * 1000 * share, 3)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    dims = [{"Name": "FunctionName", "Value": name}]
    data: list[dict[str, Any]] = []
    for m in range(minutes, 0, -1):
        ts = now - timedelta(minutes=m)
        data += [{"MetricName": "Invocations", "Dimensions": dims, "Timestamp": ts, "Value": float(per_minute), "Unit": "Count"},
                 {"MetricName": "Duration", "Dimensions": dims, "Timestamp": ts, "Values": [ms] * per_minute, "Unit": "Milliseconds"}]
    cw = sandbox_client(sb, "cloudwatch", system.region)
    for i in range(0, len(data), 500):
        cw.put_metric_data(Namespace="AWS/Lambda", MetricData=data[i : i + 500])
    return {"resource": name, "timeout_s": timeout_s, "duration_ms": ms, "share": share, "invocations": minutes * per_minute}


def connect_queue(sb: Sandbox, system: System, function: str, queue: str) -> str:
    """An SQS event source mapping (disabled, so moto never tries to run the function); returns its UUID."""
    sqs = sandbox_client(sb, "sqs", system.region)
    arn = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sandbox_client(sb, "lambda", system.region).create_event_source_mapping(EventSourceArn=arn, FunctionName=function, Enabled=False,
                                                                             BatchSize=1)["UUID"]


def traffic_after_change(sb: Sandbox, system: System, function: str, *, timeout_share: float = 0.0, duration_ms: float | None = None,
                         every_s: float = 0.25, for_s: float = 30.0, wait_s: float = 60.0) -> dict[str, Any]:
    """Once ``function``'s timeout or memory changes, an invocation every ``every_s`` for ``for_s`` seconds (a share
    ``timeout_share`` of them, evenly spread, time out at the new timeout; the others take ``duration_ms``, default 20 %). Runs in a thread; returns {"thread", "changed" (Event), "written" (list),
    "stop" (Event: set it when the test is done, so no write reaches the next scenario)}."""
    before = _config(sb, system, function)
    changed, stop = threading.Event(), threading.Event()
    written: list[str] = []

    def run() -> None:
        try:
            traffic()
        except Exception:  # the sandbox went away (the test ended): the traffic stops with it
            return

    def traffic() -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait_s and not stop.is_set():
            cfg = _config(sb, system, function)
            if (cfg["Timeout"], cfg["MemorySize"]) != (before["Timeout"], before["MemorySize"]):
                changed.set()
                break
            time.sleep(0.1)
        if not changed.is_set():
            return
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < for_s and not stop.is_set():
            cfg = _config(sb, system, function)
            timeout_s, memory = int(cfg["Timeout"]), int(cfg["MemorySize"])
            timed_out = int((n + 1) * timeout_share) > int(n * timeout_share)
            ms = timeout_s * 1000 + 30.0 if timed_out else (duration_ms or timeout_s * 1000 * 0.2)
            ended = datetime.now(timezone.utc)  # Lambda writes the REPORT line when the invocation ends
            _write_logs(sb, system, function, _lines(ended - timedelta(milliseconds=ms), ms, memory, timed_out, timeout_s),
                        stream="2026/01/01/[$LATEST]after", create_group=False)
            written.append("timeout" if timed_out else "ok")
            n += 1
            time.sleep(every_s)

    th = threading.Thread(target=run, name=f"traffic-after-change-{function}", daemon=True)
    th.start()
    return {"thread": th, "changed": changed, "written": written, "stop": stop}


def slow_update(sb: Sandbox, system: System, function: str, polls: int = 2, fail_reason: str | None = None) -> None:
    """After each UpdateFunctionConfiguration, the next ``polls`` reads say LastUpdateStatus InProgress; with
    ``fail_reason`` the update then reads Failed (and the value is not changed), as Lambda does on a bad update."""
    fn = _fn(sb, system, function)
    real_update, real_get = fn.update_configuration, fn.get_configuration
    state = {"left": 0, "failed": False}

    def update_configuration(updates: dict[str, Any]) -> dict[str, Any]:
        state["left"] = polls
        if fail_reason:
            state["failed"] = True
            return real_get()
        return real_update(updates)

    def get_configuration(on_create: bool = False) -> dict[str, Any]:
        cfg = real_get(on_create)
        if state["left"] > 0:
            state["left"] -= 1
            cfg["LastUpdateStatus"] = "InProgress"
        elif state["failed"]:
            cfg["LastUpdateStatus"] = "Failed"
            cfg["LastUpdateStatusReason"] = fail_reason
        return cfg

    fn.update_configuration = update_configuration
    fn.get_configuration = get_configuration


def failing_update(sb: Sandbox, system: System, function: str, reason: str = "The function's subnet has no free IP address (sandbox fault)") -> None:
    slow_update(sb, system, function, polls=1, fail_reason=reason)


def metrics_unreadable(sb: Sandbox, system: System) -> None:
    """GetMetricData is refused in the system's region (like a role without cloudwatch:GetMetricData)."""
    from moto.cloudwatch.exceptions import CloudWatchException

    class AccessDenied(CloudWatchException):
        code = "AccessDenied"

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AccessDenied("User: arn:aws:sts::123456789012:assumed-role/opsbook/sandbox is not authorized to perform: cloudwatch:GetMetricData")

    sb.backend("cloudwatch", system.region).get_metric_data = refuse


__all__ = ["lambda_timeouts", "healthy_lambdas", "slow_durations", "configure", "traffic_after_change", "connect_queue", "slow_update", "failing_update",
           "metrics_unreadable", "backdate"]
