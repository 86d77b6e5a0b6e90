"""A paging receiver on 127.0.0.1 for the sandbox and the tests: it records every JSON body posted to it (with its path
and Authorization header) and answers like PagerDuty's Events API v2 (202 ``{"status": "success", "dedup_key": ...}``),
or with the status set by ``fail_with`` (a broken channel)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []  # {"path", "authorization", "body"}
        self.status = 202
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v2/enqueue"

    def fail_with(self, status: int) -> None:
        self.status = status

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self.requests.clear()
        self.status = 202

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = {"unparsed": raw.decode("utf-8", "replace")}
                with outer._lock:
                    outer.requests.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
                    if outer.status < 300:
                        outer.events.append(body)
                status = outer.status
                answer = ({"status": "success", "message": "Event processed", "dedup_key": (body or {}).get("dedup_key")}
                          if status < 300 else {"status": "error", "message": "receiver told to fail"})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        return Handler

    def start(self) -> Receiver:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, name="paging-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
