"""What the dashboard (issue 21) costs the c=10 benchmark, measured pairwise.

    .venv/bin/python bench/dashboard.py          # ~5 minutes; BENCH_ROUNDS=5 for more rounds
    .venv/bin/python bench/dashboard.py --micro  # only the in-process cost of the hook

The ``plain`` cells of bench/run (wrk -c10 against nginx through the gateway, non-stream and
SSE), run against two gateways from the same venv, pinned to the same CPU, loaded one at a time:

* ``off``: ``[dashboard] enabled = false`` (no row is recorded at all);
* ``on``: the default, nobody watching (each request appends a row and adds to the charts);
* ``viewer``: the same ``on`` gateway while a client reads ``GET /ui/events`` to the end.

Each round runs the three states back to back in a rotating order, so a drift of the host's
speed hits them alike; the figure of merit is the gateway's own CPU time per request (from
``/proc``, not wall time), and the ratios are taken within a round, then the median over
rounds. The viewer is a separate process on the load CPU reading every event.
"""

from __future__ import annotations

import http.client
import importlib.machinery
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_loader(
    "bench_run", importlib.machinery.SourceFileLoader("bench_run", str(ROOT / "bench" / "run"))
)
assert _spec is not None
assert _spec.loader is not None
run = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = run
_spec.loader.exec_module(run)

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = 10
STATES = ("off", "on", "viewer")


def viewer(url: str) -> None:
    """Read the feed until killed; print the number of events read (to stderr) at the end."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=None)
    conn.request("GET", "/ui/events")
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"viewer: {response.status} {response.read()[:200]!r}")
    events = 0
    try:
        while chunk := response.read1(65536):
            events += chunk.count(b"event: request")
    finally:
        print(f"viewer read {events} events", file=sys.stderr)


def micro() -> list[list[str]]:
    """In-process cost of the per-request hook: build the row and record it (µs per request).

    Deterministic where the wrk runs on a shared machine are not: the same objects a real
    request produces, recorded 20,000 times with nobody watching and with one viewer whose
    queue is emptied as it goes (encoding included).
    """
    import timeit

    from routecodex_trio import config_from_mapping
    from routecodex_trio.observability import Dashboard, RequestRecord
    from routecodex_trio.pipeline import Trace
    from routecodex_trio.protocols.canonical import Usage
    from routecodex_trio.router import Router
    from routecodex_trio.server._ui import request_event

    config = config_from_mapping(
        {
            "providers": {
                "glm": {
                    "type": "openai-chat",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_keys": ["k-one-12345678", "k-two-12345678"],
                    "models": ["glm-4.6"],
                }
            },
            "routing": {"default": ["glm.glm-4.6"]},
        },
        environ={},
    )
    router = Router(config)
    decision = router.route("any", lambda: None)  # type: ignore[arg-type,return-value]
    trace = Trace("req_0123456789abcdef01234567", "chat", started_at=0.0)
    trace.category, trace.decision, trace.attempts = decision.category, decision, 1
    trace.target_ref = decision.candidates[0]
    trace.usage = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1000)
    record = RequestRecord(
        endpoint="chat", status=200, duration_s=0.8, category="default", target="glm.glm-4.6",
        provider="glm", model="glm-4.6", ttft_s=0.2, upstream_wait_s=0.79, input_tokens=1200,
        output_tokens=300,
    )  # fmt: skip
    dashboard = Dashboard()

    def once() -> None:
        dashboard.record(request_event(dashboard, record, trace, 200, config, error=None, stream=True))

    import io
    import logging

    from routecodex_trio.observability import log_request, setup_logging

    logger = logging.getLogger("bench.access")
    handler = setup_logging("info", stream=io.StringIO())
    logger.propagate = False
    logger.addHandler(handler)

    def log_line() -> None:
        log_request(record, trace.request_id, logger=logger)
        handler.flush()

    rows = []
    number = 20_000
    line = min(timeit.repeat(log_line, number=number, repeat=5)) / number * 1e6
    rows.append(["the access log line, for comparison", f"{line:.2f}"])
    alone = min(timeit.repeat(once, number=number, repeat=5)) / number * 1e6
    rows.append(["row + record, nobody watching", f"{alone:.2f}"])
    with dashboard.open_viewer() as viewer:

        def watched() -> None:
            once()
            viewer.events.receive_nowait()

        for _ in range(len(dashboard.events())):
            viewer.events.receive_nowait()
        seen = min(timeit.repeat(watched, number=number, repeat=5)) / number * 1e6
    rows.append(["row + record + encode for 1 viewer", f"{seen:.2f}"])
    return rows


def state_viewers(url: str) -> int:
    _status, _headers, body = run.http(url + "/ui/api/state")
    return int(json.loads(body)["gateway"]["viewers"])


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--viewer":
        viewer(sys.argv[2])
        return 0
    if sys.argv[1:] == ["--micro"]:  # only the in-process figures (seconds, no wrk/nginx)
        print(run.table(micro(), ["per-request hook (in process)", "µs"]))
        return 0
    print(run.table(micro(), ["per-request hook (in process)", "µs"]), flush=True)
    wrk = run.need_tool("wrk")
    nginx = run.need_tool("nginx", "/usr/sbin/nginx")
    python = ROOT / ".venv" / "bin" / "python"
    procs = run.Processes()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        nginx_port = run.pick_port("BENCH_NGINX_PORT")
        (tmp / "nginx.conf").write_text(run.nginx_conf(tmp, nginx_port))
        proc = procs.start(
            "nginx",
            run.pinned(run.LOAD_CPU, nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf")),
            stop_signal=15,
            stderr=subprocess.DEVNULL,
        )
        run.wait_until(lambda: run.accepts(nginx_port), proc, "nginx", tmp / "nginx-error.log")
        gateways: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        used: tuple[int, ...] = (nginx_port,)
        for name, enabled in (("off", False), ("on", True)):
            port = run.pick_port(f"BENCH_{name.upper()}_PORT", avoid=used)
            used += (port,)
            toml = (
                run.gateway_toml(port, nginx_port, nginx_port)
                + f"\n[dashboard]\nenabled = {str(enabled).lower()}\n"
            )
            config = tmp / f"gateway-{name}.toml"
            config.write_text(toml)
            log = tmp / f"gateway-{name}.log"
            proc = procs.start(
                f"gateway {name}",
                run.pinned(
                    run.GATEWAY_CPU,
                    str(ROOT / ".venv" / "bin" / "routecodex"),
                    "serve",
                    "--config",
                    str(config),
                ),
                stop_signal=15,
                stderr=log.open("wb"),
            )
            run.wait_until(lambda p=port: run.health_ok(p), proc, f"gateway {name}", log)
            gateways[name] = (f"http://127.0.0.1:{port}", proc)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for scenario, stream, _path in run.SCENARIOS:
            lua = tmp / f"{'sse' if stream else 'plain'}.lua"
            lua.write_text(run.lua_script(run.request_body(stream=stream)))
            for round_no in range(ROUNDS):
                order = STATES[round_no % 3 :] + STATES[: round_no % 3]
                for state in order:
                    url, gateway = gateways["off" if state == "off" else "on"]
                    watcher = None
                    if state == "viewer":
                        watcher = procs.start(
                            "viewer",
                            run.pinned(run.LOAD_CPU, str(python), __file__, "--viewer", url),
                            stop_signal=15,
                        )
                        deadline = time.monotonic() + 10
                        while state_viewers(url) != 1:
                            if time.monotonic() > deadline:
                                raise run.BenchError("the viewer did not connect")
                            time.sleep(0.05)
                    run.wait_for_quiet(1)
                    pids = run.process_tree(gateway.pid)
                    before = run.group_cpu_seconds(pids)
                    output, _cpu = run.run_wrk(
                        wrk, url + "/v1/chat/completions", lua, CONNECTIONS, SECONDS, {"gateway": pids}
                    )
                    used_s = run.group_cpu_seconds(pids) - before
                    if watcher is not None:
                        procs.stop(watcher)
                    parsed = run.parse_wrk(output)
                    if parsed["errors"]:
                        raise run.BenchError(f"wrk saw errors:\n{output}")
                    cell = {
                        "rps": float(parsed["rps"]),  # type: ignore[arg-type]
                        "cpu_us": used_s / int(parsed["requests"]) * 1e6,  # type: ignore[call-overload]
                    }
                    results.setdefault((scenario, state), []).append(cell)
                    print(
                        f"  {scenario:18} round {round_no + 1} {state:7} {cell['rps']:8.0f} req/s "
                        f"{cell['cpu_us']:7.1f} µs CPU/request",
                        flush=True,
                    )
        rows = []
        for scenario, _stream, _path in run.SCENARIOS:
            for state in STATES:
                cells = results[(scenario, state)]
                ratios_off = [
                    c["cpu_us"] / o["cpu_us"] for c, o in zip(cells, results[(scenario, "off")], strict=True)
                ]
                row = [
                    scenario,
                    state,
                    f"{statistics.median(c['rps'] for c in cells):.0f}",
                    f"{statistics.median(c['cpu_us'] for c in cells):.1f}",
                    f"{statistics.median(ratios_off):.3f}",
                ]
                if state == "viewer":
                    ratio = [
                        c["cpu_us"] / o["cpu_us"]
                        for c, o in zip(cells, results[(scenario, "on")], strict=True)
                    ]
                    row.append(f"{statistics.median(ratio):.3f}")
                else:
                    row.append("")
                rows.append(row)
        print()
        print(
            f"c={CONNECTIONS}, {SECONDS} s per run, {ROUNDS} rounds; medians; "
            "CPU = the gateway's own per request"
        )
        print(
            run.table(
                rows, ["scenario", "dashboard", "req/s", "CPU µs/req", "CPU vs off", "CPU viewer vs on"]
            )
        )
        return 0
    except run.BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
