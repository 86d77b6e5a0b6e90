"""What every benchmark of bench/ shares: paths, timeouts, the sandbox process, timing one command,
the machine's description, and the code snapshot and API-call recorder of the mutation benchmarks."""

from __future__ import annotations

import json
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
AWSCLI_VENV = BENCH / ".venv-awscli"
BIN = Path(sys.executable).parent
OPSBOOK = str(BIN / "opsbook") if (BIN / "opsbook").exists() else (shutil.which("opsbook") or "opsbook")
T_SANDBOX = 300      # seeding 10x takes ~20-40 s
T_OPSBOOK = 240      # includes a possible Prefect server cold start
T_SEED = 900         # the sequential shell script at 10x
T_FLOOR = 120
T_SERVER_STOP = 60


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def aws_cli() -> str:
    """bench/.venv-awscli/bin/aws, created on first use (kept out of the project's venv)."""
    aws = AWSCLI_VENV / "bin" / "aws"
    if not aws.exists():
        log(f"creating {AWSCLI_VENV} and installing awscli (v1) into it")
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(AWSCLI_VENV)], check=True, timeout=120)
        subprocess.run([str(AWSCLI_VENV / "bin" / "pip"), "install", "-q", "awscli"], check=True, timeout=600)
    out = subprocess.run([str(aws), "--version"], capture_output=True, text=True, timeout=60)
    version = (out.stdout or out.stderr).strip()
    m = re.match(r"aws-cli/(\d+)\.(\d+)", version)
    if not m or (int(m.group(1)), int(m.group(2))) < (1, 29):
        raise RuntimeError(f"{aws}: {version!r}; need aws-cli >= 1.29 (AWS_ENDPOINT_URL support)")
    return str(aws)


class SandboxProc:
    """`opsbook sandbox` in the foreground, in its own session; stopped with SIGTERM."""

    def __init__(self, system: str, scale: int, latency_ms: float, home: str, faults: list[str] | None = None,
                 env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.cwd = cwd
        self.cmd = [OPSBOOK, "sandbox", "--systems", system, "--scale", str(scale), "--latency-ms", str(latency_ms)]
        for f in faults or []:  # e.g. "t-developer:bad-deploy" (the rollback benchmark)
            self.cmd += ["--fault", f]
        self.home = home
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.errlog = Path(home) / f"sandbox-{scale}x.log"
        self.seed_s = 0.0

    def start(self) -> dict[str, str]:
        env = {**os.environ, "OPSBOOK_HOME": self.home, **self.extra_env}
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=open(self.errlog, "wb"), stdin=subprocess.DEVNULL,
                                     env=env, text=True, start_new_session=True, cwd=self.cwd)
        lines: queue.Queue[str | None] = queue.Queue()

        def reader() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=reader, daemon=True, name="sandbox-stdout").start()
        exports: dict[str, str] = {}
        deadline = time.monotonic() + T_SANDBOX
        while True:
            timeout = deadline - time.monotonic() if not exports else 1.0  # the exports come together
            if timeout <= 0:
                raise RuntimeError(f"sandbox printed no exports within {T_SANDBOX} s; see {self.errlog}")
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                if exports:
                    break
                continue
            if line is None:
                if exports:
                    break
                raise RuntimeError(f"sandbox exited ({self.proc.poll()}) before printing its exports; see {self.errlog}: "
                                   + self.errlog.read_text(errors="replace")[-800:])
            m = re.match(r"export (\w+)=(.*)$", line.strip())
            if m:
                exports[m.group(1)] = shlex.split(m.group(2))[0] if m.group(2) else ""
        self.seed_s = time.monotonic() - t0
        url = exports.get("AWS_ENDPOINT_URL", "")
        if not is_loopback(url):
            raise RuntimeError(f"sandbox AWS_ENDPOINT_URL {url!r} is not loopback; refusing to run")
        return exports

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log(f"sandbox pid {p.pid} ignored SIGTERM for 20 s; SIGKILL")
            p.kill()
            p.wait(timeout=10)


def timed(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    try:
        cp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"timed out after {timeout:.0f} s: {' '.join(cmd)}") from exc
    return time.monotonic() - t0, cp


def last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON object on stdout: {stdout[-500:]!r}")


def machine() -> dict[str, str]:
    def ver(pkg: str) -> str:
        try:
            from importlib.metadata import version

            return version(pkg)
        except Exception:
            return "?"

    return {"nproc": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": ", ".join(f"{p} {ver(p)}" for p in ("prefect", "boto3", "botocore", "moto"))}


HARNESS_UA = "opsbook-bench-harness"
CODE_DIRS = ("opsbook", "flows", "tasks", "sandbox", "deployments", "systems")


def code_version(root: Path = ROOT) -> str:
    """Hash of opsbook's code under ``root`` (other people edit the live tree while the benchmark runs)."""
    import hashlib

    h = hashlib.sha256()
    for d in CODE_DIRS:
        for f in sorted((root / d).rglob("*")):
            if f.is_file() and f.suffix in (".py", ".yaml", ".yml"):
                h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def snapshot_code(dest: Path) -> Path:
    """Copy opsbook's code so that every run uses the same version: with PYTHONPATH=dest the
    console script imports it (the editable install's finder comes after PYTHONPATH)."""
    import shutil

    for d in CODE_DIRS:
        shutil.copytree(ROOT / d, dest / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def recorder(endpoint: str, action: str) -> None:
    req = urllib.request.Request(f"{endpoint}/moto-api/recorder/{action}", method="POST", data=b"")
    urllib.request.urlopen(req, timeout=10).read()


def _api(port: int, path: str, body: dict | None = None, timeout: float = 15) -> Any:
    """The local Prefect server's REST API: GET, or POST ``body``."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api{path}", method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


api = _api


def _ts(s: str | None) -> float | None:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() if s else None


def breakdown(port: int, run: dict[str, Any]) -> dict[str, Any] | None:
    """Task runs of one opsbook run, as offsets from the command's start (same clock)."""
    fr = run.get("flow_run_id")
    if not fr:
        return None
    t0 = run["t0"]
    flow = _api(port, f"/flow_runs/{fr}")
    tasks = _api(port, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [fr]}}, "limit": 200})
    rows = []
    for t in sorted(tasks, key=lambda t: t.get("start_time") or ""):
        s, e = _ts(t.get("start_time")), _ts(t.get("end_time"))
        if s is None:
            continue
        rows.append({"task": re.sub(r"-[0-9a-f]{3}$", "", t["name"]), "start_s": round(s - t0, 3), "took_s": round((e or s) - s, 3)})
    return {"flow_start_s": round(_ts(flow["start_time"]) - t0, 3), "flow_end_s": round(_ts(flow["end_time"]) - t0, 3), "tasks": rows}
