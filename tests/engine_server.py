"""A tiny OpenAI-compatible inference server, run by the engine tests through ``cmd``.

Standard library only, so it is up ~50 ms after exec (a real engine takes seconds, which
the tests do not need to pay for). Flags choose the misbehaviour under test::

    python tests/engine_server.py --port ${PORT} [--name NAME] [--health-delay S | --never-healthy]
        [--exit-at-once CODE] [--ignore-sigterm] [--log-lines N] [--spawn-child]

* ``/health``: 503 ``loading`` until ``--health-delay`` seconds after start, then 200.
* ``/v1/chat/completions`` (stream or not), ``/v1/completions``, ``/v1/models``. The answer
  text is ``"<name> says hi"``; a request field ``"delay_s"`` sleeps before answering, so a
  test can keep a request in flight.
* ``/pids``: this process's pid and its spawned child's (``--spawn-child``), so a test can
  check the whole process group is gone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STARTED = time.monotonic()
OPTIONS = argparse.Namespace()
CHILD_PIDS: list[int] = []


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="engine")
    parser.add_argument("--health-delay", type=float, default=0.0)
    parser.add_argument("--never-healthy", action="store_true")
    parser.add_argument("--exit-at-once", type=int, default=None)
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--log-lines", type=int, default=0)
    parser.add_argument("--spawn-child", action="store_true")
    return parser.parse_args(argv)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        print(f"{OPTIONS.name} request: {format % args}", flush=True)

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        time.sleep(float(body.get("delay_s", 0)))
        return body  # type: ignore[no-any-return]

    def do_GET(self) -> None:
        if self.path == "/health":
            healthy = not OPTIONS.never_healthy and time.monotonic() - STARTED >= OPTIONS.health_delay
            self._json(200 if healthy else 503, {"status": "ok" if healthy else "loading"})
        elif self.path == "/v1/models":
            self._json(
                200, {"object": "list", "data": [{"id": OPTIONS.name, "object": "model", "created": 0}]}
            )
        elif self.path == "/pids":
            self._json(200, {"pid": os.getpid(), "children": CHILD_PIDS})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        if self.path == "/v1/chat/completions":
            body = self._body()
            if body.get("stream"):
                self._stream(body)
            else:
                self._json(200, _completion(body, chat=True))
        elif self.path == "/v1/completions":
            self._json(200, _completion(self._body(), chat=False))
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def _stream(self, body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        words = [*f"{OPTIONS.name} says hi".split(" ")]
        deltas = [{"role": "assistant", "content": ""}, *({"content": w + " "} for w in words)]
        for i, delta in enumerate(deltas):
            last = i == len(deltas) - 1
            chunk = {
                "id": "chatcmpl-engine",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body.get("model", OPTIONS.name),
                "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}],
            }
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _completion(body: dict[str, Any], *, chat: bool) -> dict[str, Any]:
    text = f"{OPTIONS.name} says hi"
    usage = {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    model = body.get("model", OPTIONS.name)
    if chat:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return {"id": "chatcmpl-engine", "object": "chat.completion", "created": 0, "model": model,
                "choices": [choice], "usage": usage}  # fmt: skip
    choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
    return {"id": "cmpl-engine", "object": "text_completion", "created": 0, "model": model,
            "choices": [choice], "usage": usage}  # fmt: skip


def main() -> None:
    global OPTIONS
    OPTIONS = _parse(sys.argv[1:])
    for i in range(OPTIONS.log_lines):
        print(f"{OPTIONS.name} log line {i}", flush=True)
        print(f"{OPTIONS.name} stderr line {i}", file=sys.stderr, flush=True)
    if OPTIONS.exit_at_once is not None:
        sys.exit(OPTIONS.exit_at_once)
    if OPTIONS.ignore_sigterm:
        signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
    if OPTIONS.spawn_child:
        # Inherits our process group: the gateway must kill it with the group.
        CHILD_PIDS.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]).pid)
    server = ThreadingHTTPServer(("127.0.0.1", OPTIONS.port), Handler)
    server.daemon_threads = True
    print(f"{OPTIONS.name} listening on {OPTIONS.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
