#!/usr/bin/env python3
"""What a pass-through request of each body size costs the stack itself, beside the gateway.

    .venv/bin/python bench/proxy_floor.py                      # about 2 minutes
    .venv/bin/python bench/proxy_floor.py --sizes 18000,1000000 --rounds 7

Issue 22 asks a pass-through request to cost at most the small request plus three orjson round
trips of its body. This measures how much of that line the stack under the gateway already
takes: a **floor proxy**, a bare ASGI app on hypercorn's Trio worker (the server the gateway
runs on), that for each request

* reads the body as the gateway does (hypercorn's ``http.request`` messages, joined),
* does the JSON work the gateway's contract needs on it (``orjson.loads``, and the depth
  check: one ``orjson.dumps`` of the parsed body inside 126 lists; issue 13),
* forwards the client's bytes on one kept-alive Trio socket to nginx, with a hand-written
  request head and the smallest response reader that works for nginx's fixed answer,
* and answers the client with nginx's body.

No routing, no config, no logging, no metrics, no model swap, no error handling. The gateway
(``routecodex serve``, chat→chat to the same nginx) and the floor proxy both run on CPU 1,
nginx and the client on CPU 0; the client sends N requests one after the other on one
keep-alive connection, and the figure is the server process's own CPU time over N. The two
servers take turns cell by cell, round by round (the first alternating), and the table gives
the medians and the orjson round trip of the body (the issue's unit) beside them.

Only the standard library and the gateway's own venv (hypercorn, trio, orjson) are used.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bodies as agent  # noqa: E402  (bench/bodies.py)

_WRAP = 126  # as routecodex_trio.pipeline._request: 254 levels orjson writes, minus MAX_DEPTH


# ---------------------------------------------------------------------------------------------
# The floor proxy (run as ``proxy_floor.py serve PORT UPSTREAM_PORT``)


def floor_app(upstream_port: int):  # type: ignore[no-untyped-def]
    import orjson
    import trio

    state: dict[str, trio.SocketStream] = {}
    lock = trio.Lock()

    async def exchange(raw: bytes) -> bytes:
        async with lock:
            stream = state.get("up")
            if stream is None:
                stream = state["up"] = await trio.open_tcp_stream("127.0.0.1", upstream_port)
            head = (
                "POST /plain/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
            ).encode()
            await stream.send_all(head)
            await stream.send_all(raw)
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some(65536)
            headers, _, rest = buffer.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in headers.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(rest) < length:
                rest += await stream.receive_some(65536)
            return rest

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        if scope["path"] == "/health":
            answer = b"{}"
        else:
            value = orjson.loads(raw)
            wrapped = value
            for _ in range(_WRAP):
                wrapped = [wrapped]
            orjson.dumps(wrapped)
            answer = await exchange(raw)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


def serve(port: int, upstream_port: int) -> None:
    import hypercorn.config
    import hypercorn.trio
    import trio

    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.worker_class = "trio"
    config.accesslog = None
    config.errorlog = None
    trio.run(hypercorn.trio.serve, floor_app(upstream_port), config)


# ---------------------------------------------------------------------------------------------
# The measurement


def _bench_run():  # type: ignore[no-untyped-def]
    loader = importlib.machinery.SourceFileLoader("bench_run", str(HERE / "run"))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"proxy_floor: {what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"proxy_floor: {what} did not listen on port {port}")


def orjson_round_trip_ms(raw: bytes) -> float:
    import orjson

    reps = max(5, min(2000, 20_000_000 // len(raw)))
    best = 1e9
    for _ in range(5):
        started = time.process_time()
        for _ in range(reps):
            orjson.dumps(orjson.loads(raw))
        best = min(best, (time.process_time() - started) / reps)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="bench", choices=("bench", "serve"))
    parser.add_argument("ports", nargs="*", type=int, help="serve: PORT UPSTREAM_PORT")
    parser.add_argument("--sizes", default="18000,100000,1000000", help="body sizes (bytes)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per cell")
    parser.add_argument("--routecodex", default=str(ROOT / ".venv" / "bin" / "routecodex"))
    args = parser.parse_args()
    if args.command == "serve":
        serve(*args.ports)
        return
    run = _bench_run()
    tmp = Path(tempfile.mkdtemp(prefix="proxy-floor-"))
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / folder).mkdir()
    nginx_port, gateway_port, floor_port = free_port(), free_port(), free_port()
    (tmp / "nginx.conf").write_text(run.nginx_conf(tmp, nginx_port))
    config = tmp / "gateway.toml"
    config.write_text(run.gateway_toml(gateway_port, nginx_port, free_port()))
    config.chmod(0o600)
    procs = {
        "nginx": subprocess.Popen(
            ["taskset", "-c", "0", "nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)]
        ),
    }
    try:
        wait_port(nginx_port, procs["nginx"], "nginx")
        procs["gateway"] = subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                args.routecodex,
                "serve",
                "--config",
                str(config),
                "--log-level",
                "warning",
            ]
        )
        procs["floor"] = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, __file__, "serve", str(floor_port), str(nginx_port)]
        )
        wait_port(gateway_port, procs["gateway"], "gateway")
        wait_port(floor_port, procs["floor"], "floor proxy")
        ports = {"floor": floor_port, "gateway": gateway_port}
        cells = [("small", 0, "/v1/chat/completions", run.request_body(stream=False).encode())]
        for size in (int(s) for s in args.sizes.split(",")):
            path, payload = agent.path_body("chat→chat", size)
            cells.append(("chat→chat", size, path, payload))
        print(f"{'body':>10} {'floor ms':>9} {'gateway ms':>11} {'gateway - floor':>16} {'orjson rt':>10}")
        for _name, size, path, payload in cells:
            count = agent.requests_for(len(payload) if size else 228)
            runs: dict[str, list[float]] = {"floor": [], "gateway": []}
            for who, port in ports.items():
                statuses = agent.post_many(port, path, payload, 3)
                if set(statuses) != {200}:
                    sys.exit(f"proxy_floor: {who} answered {statuses}")
            for round_ in range(args.rounds):
                order = ("floor", "gateway") if round_ % 2 == 0 else ("gateway", "floor")
                for who in order:
                    pid = procs[who].pid
                    before = cpu_seconds(pid)
                    statuses = agent.post_many(ports[who], path, payload, count)
                    used = cpu_seconds(pid) - before
                    if set(statuses) != {200}:
                        sys.exit(f"proxy_floor: {who} answered {sorted(set(statuses))}")
                    runs[who].append(used * 1000 / count)
            floor = statistics.median(runs["floor"])
            gateway = statistics.median(runs["gateway"])
            label = "228 B" if not size else f"{size // 1000} KB"
            rt = orjson_round_trip_ms(payload)
            print(f"{label:>10} {floor:9.2f} {gateway:11.2f} {gateway - floor:16.2f} {rt:10.3f}", flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
