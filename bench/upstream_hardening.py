"""Hostile upstreams against the gateway (issue 13, "Upstreams"): event scans, floods, bombs.

    .venv/bin/python bench/upstream_hardening.py                 # this checkout
    git archive 43be144 routecodex_trio | tar -x -C /tmp/old     # the code before the fix
    .venv/bin/python bench/upstream_hardening.py --src /tmp/old  # the same figures for it

It starts ``routecodex serve`` from ``--src`` (a directory holding ``routecodex_trio``, put on
PYTHONPATH) with one ``openai-chat`` provider pointing at a hostile upstream run by this same
script in another process (``upstream`` subcommand, a raw HTTP/1.1 server on trio sockets),
and prints three tables:

scan       the gateway's CPU time (user + system, from /proc) to relay one stream whose one
           event is a ``--line-mb`` MB line, written by the upstream in 1 KiB writes (1 ms
           apart, so that each gateway read gets about one write) or at once; pass-through
           (Chat client) and converted (Messages client). Linear scanning
           makes the two rows alike; re-scanning the unfinished event on each read does not.
fairness   other clients' non-stream latency (sequential Chat requests to a well-behaved
           model of the same upstream, ``--seconds`` each) while one client (another process)
           keeps asking for a flood: none; an endless unterminated event; endless small valid
           events; a 64 MB gzip bomb (non-stream). p50 / p99 / max in ms.
bomb       a fresh gateway asked once for a non-stream answer gzip-compressed to ~0.5 MB that
           inflates to ``--bomb-mb`` MB: the status it answers, its CPU, and its peak RSS
           (VmHWM).

The gateway runs alone on CPU 1, everything else on CPU 0 (as in bench/run). Figures depend on
the machine and what else runs on it; compare rows side by side (this
checkout and ``--src`` of the old code, one after the other).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Final

import httpx
import trio

KIB: Final = 1024
MIB: Final = 1024 * 1024
HERE: Final = Path(__file__).resolve().parent
TICK: Final = os.sysconf("SC_CLK_TCK")
# The gateway's CPU and the CPU of everything else this bench runs (see _pin).
GATEWAY_CPU: Final = 1
LOAD_CPU: Final = 0
# Pause between two 1 KiB writes of the scan case's line.
PACE_S: Final = 0.001

ANSWER: Final = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"m",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
)


def _pin(cpu: int) -> None:
    """Keep a process on one CPU, as bench/run does: the gateway alone on its own, the
    upstream, the flood client and the probe on the other (when the machine has two)."""
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {cpu})


def _chunk(model: str, delta: str, finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _bomb(text_mb: int) -> bytes:
    """A chat answer whose content is ``text_mb`` MB of "A", gzip-compressed piece by piece."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    head, tail = ANSWER.split(b"Hello")
    out = [packer.compress(head)]
    block = b"A" * MIB
    out += [packer.compress(block) for _ in range(text_mb)]
    out += [packer.compress(tail), packer.flush()]
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# The hostile upstream (its own process)


async def _read_request(stream: trio.SocketStream) -> dict[str, object] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        rest += chunk
    body: dict[str, object] = json.loads(rest)
    return body


async def _serve_one(bombs: dict[int, bytes], stream: trio.SocketStream) -> None:
    """Keep-alive for well-behaved answers; hostile ones close the connection at their end."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while (body := await _read_request(stream)) is not None:
            scenario, _, arg = str(body.get("model", "")).partition(":")
            if scenario == "bomb":
                if int(arg) not in bombs:  # built once per size: it takes a while
                    bombs[int(arg)] = _bomb(int(arg))
                payload = bombs[int(arg)]
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(payload), payload)
                )
                return
            if not body.get("stream"):
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(ANSWER), ANSWER)
                )
                continue
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                b"connection: close\r\n\r\n"
            )

            async def chunk(data: bytes) -> None:
                await stream.send_all(b"%x\r\n%s\r\n" % (len(data), data))

            await chunk(_chunk("m", "Hello"))
            if scenario == "line":  # line:<MB>:<write size in bytes, 0 = at once>
                size_mb, _, write = arg.partition(":")
                line = b'data: {"padding":"' + b"x" * int(float(size_mb) * MIB) + b'"}\n\n'
                step = int(write) or len(line)
                for start in range(0, len(line), step):
                    await chunk(line[start : start + step])
                    if step < len(line):
                        # Paced, so the gateway's reads are about one write each (as from a
                        # slow upstream), not whatever piled up in the socket meanwhile.
                        await trio.sleep(PACE_S)
            elif scenario == "floodline":
                await chunk(b'data: {"padding":"')
                piece = b"%x\r\n%s\r\n" % (64 * KIB, b"x" * 64 * KIB)
                while True:
                    await stream.send_all(piece)
            elif scenario == "floodevents":
                events = _chunk("m", "flood ") * (64 * KIB // len(_chunk("m", "flood ")))
                piece = b"%x\r\n%s\r\n" % (len(events), events)
                while True:
                    await stream.send_all(piece)
            await chunk(_chunk("m", "", "stop") + b"data: [DONE]\n\n")
            await stream.send_all(b"0\r\n\r\n")
            return


async def serve_upstream(port: int) -> None:
    bombs: dict[int, bytes] = {}
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(functools.partial(_serve_one, bombs), listeners)


# ---------------------------------------------------------------------------------------------
# The gateway and the measurements


class Gateway:
    def __init__(self, src: Path, upstream_port: int, workdir: Path, models: list[str]) -> None:
        config = workdir / "gateway.toml"
        config.write_text(
            '[server]\nlisten = ["127.0.0.1:0"]\n'
            "[timeouts]\nfirst_byte = 30\nidle = 30\ntotal = 60\n"
            "[retry]\nattempts = 1\n"
            "[health]\nfailure_threshold = 1000000\n"
            f'[providers.up]\ntype = "openai-chat"\nbase_url = "http://127.0.0.1:{upstream_port}/v1"\n'
            f"models = {json.dumps(models)}\n"
            '[routing]\ndefault = ["up.ok"]\n'
        )
        env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
        self.log = (workdir / "gateway.log").open("w+b")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "routecodex_trio",
                "serve",
                "--config",
                str(config),
                "--log-level",
                "warning",
            ],
            env=env,
            stderr=self.log,
            cwd=workdir,  # ``-m`` puts the working directory first on sys.path: not a checkout
            preexec_fn=functools.partial(_pin, GATEWAY_CPU),
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.log.seek(0)
            text = self.log.read().decode(errors="replace")
            if "listening on http://" in text:
                self.url = text.split("listening on ", 1)[1].split()[0].rstrip(",")
                return
            time.sleep(0.05)
        raise RuntimeError("the gateway did not start: " + text[-2000:])

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _body(model: str, stream: bool, anthropic: bool = False) -> dict[str, object]:
    body: dict[str, object] = {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if anthropic:
        body["max_tokens"] = 50
    return body


async def _drain(http: httpx.AsyncClient, path: str, body: dict[str, object]) -> tuple[int, int]:
    async with http.stream("POST", path, json=body, headers={"anthropic-version": "2023-06-01"}) as response:
        size = 0
        async for piece in response.aiter_raw():
            size += len(piece)
        return response.status_code, size


async def measure_scan(gateway: Gateway, line_mb: float) -> list[tuple[str, str, float, int]]:
    rows = []
    async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as http:
        for client, path in (
            ("chat (pass-through)", "/v1/chat/completions"),
            ("messages (converted)", "/v1/messages"),
        ):
            for write in (1024, 0):
                before = gateway.cpu_s()
                status, size = await _drain(
                    http, path, _body(f"up.line:{line_mb:g}:{write}", True, "messages" in client)
                )
                rows.append(
                    (client, "1 KiB writes" if write else "one write", gateway.cpu_s() - before, size)
                )
                del status
    return rows


async def flood_forever(url: str, flood: str) -> None:
    """Ask for ``flood`` again and again (its own process: the probe's latency is the gateway's)."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await _drain(http, "/v1/chat/completions", _body(f"up.{flood}", not flood.startswith("bomb")))


async def measure_fairness(gateway: Gateway, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    await trio.sleep(1.0)  # the flood under way
    end = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as probe:
        while time.monotonic() < end:
            started = time.perf_counter()
            response = await probe.post("/v1/chat/completions", json=_body("up.ok", False))
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    latencies.sort()
    return {
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


async def measure_bomb(gateway: Gateway, bomb_mb: int) -> tuple[int, float, float]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=300) as http:
        before = gateway.cpu_s()
        response = await http.post("/v1/chat/completions", json=_body(f"up.bomb:{bomb_mb}", False))
        return response.status_code, gateway.cpu_s() - before, gateway.peak_rss_mb()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    up = sub.add_parser("upstream", help="serve the hostile upstream")
    up.add_argument("--port", type=int, default=0)
    fl = sub.add_parser("flood", help="ask the gateway for a flood, again and again")
    fl.add_argument("--url", required=True)
    fl.add_argument("--model", required=True)
    parser.add_argument("--src", type=Path, default=HERE.parent, help="directory holding routecodex_trio")
    parser.add_argument("--line-mb", type=float, default=5.0)
    parser.add_argument("--bomb-mb", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", default="scan,fairness,bomb")
    args = parser.parse_args()
    if args.command == "upstream":
        trio.run(serve_upstream, args.port)
        return 0
    if args.command == "flood":
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(flood_forever, args.url, args.model)
        return 0
    only = set(args.only.split(","))
    _pin(LOAD_CPU)
    upstream = subprocess.Popen(
        [sys.executable, __file__, "upstream"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
        preexec_fn=functools.partial(_pin, LOAD_CPU),
    )
    assert upstream.stdout is not None
    port = int(upstream.stdout.readline())
    print(f"gateway from {args.src}; upstream on port {port}")
    models = ["ok", "floodline", "floodevents", "bomb:64", f"bomb:{args.bomb_mb}"]
    models += [f"line:{args.line_mb:g}:1024", f"line:{args.line_mb:g}:0"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "scan" in only:
                gateway = Gateway(args.src, port, Path(tmp), models)
                try:
                    rows = trio.run(measure_scan, gateway, args.line_mb)
                finally:
                    gateway.stop()
                print(f"\nscan: one {args.line_mb:g} MB event, gateway CPU")
                print(f"{'client':<22} {'upstream writes':<16} {'CPU s':>7} {'bytes to client':>16}")
                for client, writes, cpu, size in rows:
                    print(f"{client:<22} {writes:<16} {cpu:>7.2f} {size:>16}")
            if "fairness" in only:
                print(f"\nfairness: sequential non-stream requests for {args.seconds:g} s beside one flood")
                print(f"{'flood':<14} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
                for flood in (None, "floodline", "floodevents", "bomb:64"):
                    gateway = Gateway(args.src, port, Path(tmp), models)
                    flooder = None
                    if flood is not None:
                        command = [sys.executable, __file__, "flood", "--url", gateway.url, "--model", flood]
                        flooder = subprocess.Popen(command, preexec_fn=functools.partial(_pin, LOAD_CPU))
                    try:
                        got = trio.run(measure_fairness, gateway, args.seconds)
                    finally:
                        if flooder is not None:
                            flooder.terminate()
                            flooder.wait(10)
                        gateway.stop()
                    print(
                        f"{flood or 'none':<14} {got['requests']:>8} {got['p50_ms']:>8.1f} "
                        f"{got['p99_ms']:>8.1f} "
                        f"{got['max_ms']:>8.1f}"
                    )
            if "bomb" in only:
                gateway = Gateway(args.src, port, Path(tmp), models)
                try:
                    status, cpu, rss = trio.run(measure_bomb, gateway, args.bomb_mb)
                finally:
                    gateway.stop()
                print(
                    f"\nbomb: ~{len(_bomb(args.bomb_mb)) // KIB} KiB of gzip inflating to {args.bomb_mb} MB"
                )
                print(f"{'status':>6} {'CPU s':>7} {'peak RSS MB':>12}")
                print(f"{status:>6} {cpu:>7.2f} {rss:>12.0f}")
    finally:
        upstream.terminate()
        upstream.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
