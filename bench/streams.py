"""The streaming suites' two Trio programs: a paced SSE upstream and a load generator.

bench/run starts both (pinned to CPU 0, with the project's .venv/bin/python, which has trio);
they can also be run by hand:

    .venv/bin/python bench/streams.py upstream --port 8081
    .venv/bin/python bench/streams.py load --url http://127.0.0.1:8081/v1/chat/completions \
        --streams 32 --model gpt-4o-mini

``upstream`` answers every ``POST .../chat/completions`` with an OpenAI chat stream of
``--frames`` content chunks (64), ``--interval`` seconds apart (0.02), then a finish chunk, a
usage chunk and ``data: [DONE]`` at once: 67 SSE events per stream. Each content chunk
carries one token ``~NN`` (NN = its index), so a client can tell which frames arrived whatever
the gateway turned them into (an Anthropic ``content_block_delta`` keeps the text). All the
bytes are encoded once at start-up (chunked transfer encoding included): per frame the upstream
only sleeps and writes. It speaks just enough HTTP/1.1 for this: keep-alive, Content-Length
request bodies, chunked responses; ``GET`` anything answers 200 ``ok``.

``load`` opens ``--streams`` TCP connections at once (or, with ``--ramp S``, one every S/N
seconds), sends one streaming request on each
(OpenAI chat, or Anthropic Messages with ``--protocol anthropic``), and records for every
stream the status, the arrival time of each ``~NN`` frame, the time to the first one (TTFT,
from just before connecting) and the longest gap between two consecutive frames. It prints
one JSON object on stdout: counts and percentiles over the streams, plus every stream's
figures.

Raw sockets on both sides, not hypercorn or httpx: both share CPU 0 with nothing else to do,
and must stay far cheaper per frame than the gateway they measure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
from typing import Final
from urllib.parse import urlsplit

import trio

CREATED: Final = 1741569952
COMPLETION_ID: Final = "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
UPSTREAM_MODEL: Final = "gpt-4o-mini-2024-07-18"
FINGERPRINT: Final = "fp_06737a9306"
# A content frame's token. "~" appears nowhere else in either protocol's events, and the two
# digits say which frame it was.
TOKEN: Final = re.compile(rb"~(\d\d)")
# The end of each protocol's stream, when the response has no chunked terminator to show it.
STREAM_END: Final = (b"data: [DONE]", b"event: message_stop")
STALL_S: Final = 0.2  # a gap between two frames longer than this is a stall (10x the pacing)


def dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def chunk(data: bytes) -> bytes:
    """One piece of an HTTP/1.1 chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_frames(frames: int) -> tuple[list[bytes], bytes]:
    """The content frames (each a chunk of the chunked body), and the tail sent after the last."""

    def event(delta: dict[str, object], finish: str | None = None, usage: object = None) -> bytes:
        choices = [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        body = {
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": UPSTREAM_MODEL,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            "usage": usage,
        }
        return f"data: {dumps(body)}\n\n".encode()

    content = []
    for i in range(frames):
        delta: dict[str, object] = {"content": f"~{i % 100:02d} "}
        if i == 0:
            delta = {"role": "assistant", **delta}
        content.append(chunk(event(delta)))
    usage = {"prompt_tokens": 31, "completion_tokens": frames, "total_tokens": 31 + frames}
    tail = event({}, "stop") + event({}, usage=usage) + b"data: [DONE]\n\n"
    return content, chunk(tail) + b"0\r\n\r\n"


STREAM_HEAD: Final = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)
OK: Final = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
NOT_FOUND: Final = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


async def serve_upstream(port: int, frames: int, interval_s: float) -> None:
    content, tail = sse_frames(frames)
    first = STREAM_HEAD + content[0]

    async def handle(stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:  # one request after the other on a keep-alive connection
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                length = int(match.group(1)) if match else 0
                while len(buffer) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[length:]
                method, path = head.split(b" ", 2)[:2]
                if method == b"GET":
                    await stream.send_all(OK)
                    continue
                if not path.endswith(b"/chat/completions"):
                    await stream.send_all(NOT_FOUND)
                    continue
                started = trio.current_time()
                await stream.send_all(first)
                for i in range(1, frames):
                    await trio.sleep_until(started + i * interval_s)
                    await stream.send_all(content[i])
                await stream.send_all(tail)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away: its business

    await trio.serve_tcp(handle, port, host="127.0.0.1")


def request_bytes(url: str, protocol: str, model: str, body_file: str = "") -> tuple[str, int, bytes]:
    """The request every stream sends; ``body_file``: its JSON body instead of the short one
    (a stream request of ``protocol``, e.g. an agent-sized body from bench/bodies.py)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    system = "You are a helpful assistant. Answer briefly."
    question = "Count from 0 to 63, one number per line."
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    if protocol == "anthropic":
        body = {
            "model": model,
            "max_tokens": 256,
            "system": system,
            "messages": [{"role": "user", "content": question}],
            "stream": True,
        }
        headers.update({"x-api-key": "bench", "anthropic-version": "2023-06-01"})
    else:
        body = {
            "model": model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
            "max_tokens": 256,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    payload = dumps(body).encode()
    if body_file:
        with open(body_file, "rb") as file:
            payload = file.read()
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(payload)}")
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class ChunkedDecoder:
    """Incremental HTTP/1.1 chunked-body decoder (chunk extensions and trailers ignored)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.remaining = -1  # bytes left in the current chunk; -1: expecting a size line
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = []
        while not self.done:
            if self.remaining < 0:
                line_end = self.buffer.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(self.buffer[:line_end].split(b";", 1)[0], 16)
                self.buffer = self.buffer[line_end + 2 :]
                if size == 0:
                    self.done = True
                    break
                self.remaining = size
            if len(self.buffer) < self.remaining + 2:
                if len(self.buffer) > self.remaining:
                    break  # the data is complete but its CRLF is not: wait for it
                out.append(self.buffer)
                self.remaining -= len(self.buffer)
                self.buffer = b""
                break
            out.append(self.buffer[: self.remaining])
            self.buffer = self.buffer[self.remaining + 2 :]
            self.remaining = -1
        return b"".join(out)


async def one_stream(
    host: str, port: int, request: bytes, timeout_s: float, delay_s: float = 0.0
) -> dict[str, object]:
    await trio.sleep(delay_s)
    started = trio.current_time()
    result: dict[str, object] = {"status": 0, "frames": 0, "ttft_s": None, "max_gap_s": None, "error": None}
    arrivals: list[float] = []
    seen: set[bytes] = set()
    with trio.move_on_after(timeout_s) as scope:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            result["error"] = f"connect: {exc.strerror or exc}"
            return result
        async with stream:
            try:
                await stream.send_all(request)
                head = b""
                while b"\r\n\r\n" not in head:
                    data = await stream.receive_some(65536)
                    if not data:
                        result["error"] = "closed before the response head"
                        return result
                    head += data
                head, _, rest = head.partition(b"\r\n\r\n")
                result["status"] = int(head.split(b" ", 2)[1])
                chunked = re.search(rb"(?im)^transfer-encoding:\s*chunked", head) is not None
                decoder = ChunkedDecoder() if chunked else None
                pending = b""  # SSE text not yet ended by a blank line
                data = rest
                while True:
                    now = trio.current_time()
                    body = decoder.feed(data) if decoder else data
                    pending += body
                    cut = max(pending.rfind(b"\n\n"), pending.rfind(b"\r\n\r\n"))
                    if cut >= 0:
                        complete, pending = pending[: cut + 2], pending[cut + 2 :]
                        for match in TOKEN.finditer(complete):
                            if match.group(1) not in seen:
                                seen.add(match.group(1))
                                arrivals.append(now)
                        if complete.rstrip().endswith(STREAM_END) and not decoder:
                            break
                    if decoder and decoder.done:
                        break
                    data = await stream.receive_some(65536)
                    if not data:
                        if decoder:
                            result["error"] = "closed before the end of the chunked body"
                        break
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                result["error"] = f"{type(exc).__name__}: {exc}"
    if scope.cancelled_caught:
        result["error"] = f"timed out after {timeout_s:.0f} s"
    result["frames"] = len(arrivals)
    if arrivals:
        result["ttft_s"] = round(arrivals[0] - started, 6)
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        result["max_gap_s"] = round(max(gaps, default=0.0), 6)
    return result


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def run_load(
    url: str,
    protocol: str,
    model: str,
    streams: int,
    frames: int,
    timeout_s: float,
    ramp_s: float,
    body_file: str = "",
) -> dict:
    host, port, request = request_bytes(url, protocol, model, body_file)
    results: list[dict[str, object]] = [{} for _ in range(streams)]

    async def run_one(i: int) -> None:
        results[i] = await one_stream(host, port, request, timeout_s, i * ramp_s / streams)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(streams):
            nursery.start_soon(run_one, i)
    wall = trio.current_time() - started
    ttfts = [r["ttft_s"] for r in results if r["ttft_s"] is not None]
    gaps = [r["max_gap_s"] for r in results if r["max_gap_s"] is not None]
    errors: dict[str, int] = {}
    for r in results:
        problem = r["error"] or (f"status {r['status']}" if r["status"] != 200 else None)
        if problem:
            errors[str(problem)] = errors.get(str(problem), 0) + 1
    return {
        "url": url,
        "protocol": protocol,
        "streams": streams,
        "ramp_s": ramp_s,
        "frames_expected": frames,
        "wall_s": round(wall, 3),
        "complete": sum(r["status"] == 200 and r["frames"] == frames and not r["error"] for r in results),
        "frames_received": sum(r["frames"] for r in results),  # type: ignore[misc]
        "stalled": sum(g > STALL_S for g in gaps),  # type: ignore[operator]
        "max_gap_s": max(gaps, default=None),  # type: ignore[type-var]
        "ttft_p50_s": percentile(ttfts, 50),  # type: ignore[arg-type]
        "ttft_p99_s": percentile(ttfts, 99),  # type: ignore[arg-type]
        "ttft_max_s": max(ttfts, default=None),  # type: ignore[type-var]
        "errors": errors,
        "per_stream": results,
    }


async def serve_floor(port: int, frames: int, interval_s: float) -> None:
    """The same paced stream, written by a bare hypercorn-trio ASGI app: the stack's floor.

    No upstream, no parsing, no routing: per frame only a timer wake-up and one ASGI send,
    which hypercorn turns into an HTTP chunk. What this costs per frame (bench/floor) is what
    hypercorn on trio needs before any gateway work. Memory is given back when idle as the
    gateway does it (server/_memory.py: a collection and malloc_trim once nothing has been in
    flight for two 5 s checks), so RSS after a burst compares; the gateway's package is not
    imported, so the RSS is the stack's own.
    """
    import ctypes
    import gc

    from hypercorn.config import Config
    from hypercorn.trio import serve

    content, tail = sse_frames(frames)
    bodies = [piece.split(b"\r\n", 1)[1][:-2] for piece in content]  # the SSE bytes, unchunked
    last = tail.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n\r\n", 1)[0]
    counters = {"seen": 0, "in_flight": 0}

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        counters["seen"] += 1
        counters["in_flight"] += 1
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            started = trio.current_time()
            for i, body in enumerate(bodies):
                await trio.sleep_until(started + i * interval_s)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": last, "more_body": False})
        finally:
            counters["in_flight"] -= 1

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.backlog = 1024
    config.keep_alive_max_requests = 2**31

    async def release_memory_when_idle() -> None:
        trimmed_at, idle_checks = 0, 0
        while True:
            await trio.sleep(5.0)
            idle_checks = idle_checks + 1 if counters["in_flight"] == 0 else 0
            if counters["seen"] != trimmed_at and idle_checks >= 2:
                gc.collect()
                ctypes.CDLL("libc.so.6").malloc_trim(0)
                trimmed_at = counters["seen"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(release_memory_when_idle)
        await serve(app, config)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upstream", help="serve the paced OpenAI chat stream")
    up.add_argument("--port", type=int, required=True)
    up.add_argument("--frames", type=int, default=64)
    up.add_argument("--interval", type=float, default=0.02, help="seconds between frames")
    floor = sub.add_parser("floor", help="serve the paced stream from a bare hypercorn-trio app")
    floor.add_argument("--port", type=int, required=True)
    floor.add_argument("--frames", type=int, default=64)
    floor.add_argument("--interval", type=float, default=0.02, help="seconds between frames")
    load = sub.add_parser("load", help="open N streams at once and time their frames")
    load.add_argument("--url", required=True)
    load.add_argument("--protocol", choices=("openai", "anthropic"), default="openai")
    load.add_argument("--model", default="gpt-4o-mini")
    load.add_argument("--streams", type=int, default=32)
    load.add_argument("--frames", type=int, default=64)
    load.add_argument("--timeout", type=float, default=60.0, help="per-stream deadline, seconds")
    load.add_argument("--ramp", type=float, default=0.0, help="open the streams over this many seconds")
    load.add_argument("--body", default="", help="send this file's JSON as the body (a stream request)")
    args = parser.parse_args()
    if args.command == "upstream":
        trio.run(serve_upstream, args.port, args.frames, args.interval)
        return 0
    if args.command == "floor":
        trio.run(serve_floor, args.port, args.frames, args.interval)
        return 0
    report = trio.run(
        run_load,
        args.url,
        args.protocol,
        args.model,
        args.streams,
        args.frames,
        args.timeout,
        args.ramp,
        args.body,
    )
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
