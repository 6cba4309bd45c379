"""TTFT of a burst of agent-sized converted streams, this tree against a baseline, in one run.

Issue 22's streaming target: 32 streams of 100 KB Claude Code bodies (Messages) opened at once,
converted to a paced chat upstream; added TTFT p50 <= 5 ms over the same burst of 100 KB chat
bodies sent straight to the upstream. The bodies suite of bench/run measures it once per run;
this script repeats the three bursts (direct, ours, baseline) round after round in rotating
order, so that a drifting host hits all three, and reports the median over the rounds of each
round's p50 / p95 TTFT and of what each gateway adds to the direct figure of the same round.
Also the gateway's CPU time per burst (its own utime + stime), which a burst's TTFT is made of.

    .venv/bin/python bench/burst.py --baseline /tmp/base/.venv/bin/routecodex --rounds 9

The paced upstream and the load generator are bench/streams.py (CPU 0); the gateways run on
CPU 1, one at a time busy. Standard library + trio (the load generator's).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bodies as agent  # noqa: E402

MODEL = "gpt-4o-mini"
STREAMS_PY = HERE / "streams.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def toml(port: int, paced_port: int) -> str:
    return f"""\
[server]
listen = ["127.0.0.1:{port}"]
graceful_timeout = 2

[providers.paced]
type = "openai-chat"
base_url = "http://127.0.0.1:{paced_port}/v1"
api_key = "bench"
models = ["{MODEL}"]
max_connections = 1024

[routing]
default = ["paced.{MODEL}"]
"""


def wait_for(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not accepts(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def burst(url: str, protocol: str, body: Path, streams: int, python: str) -> list[float]:
    argv = ["taskset", "-c", "0", python, str(STREAMS_PY), "load", "--url", url, "--protocol", protocol]
    argv += ["--model", f"paced.{MODEL}", "--streams", str(streams), "--body", str(body), "--timeout", "60"]
    done = subprocess.run(argv, capture_output=True, check=True, timeout=120)
    report = json.loads(done.stdout)
    if report["complete"] != streams:
        raise SystemExit(f"{url}: {report['complete']}/{streams} complete, errors {report['errors']}")
    return [s["ttft_s"] * 1000 for s in report["per_stream"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="another checkout's routecodex executable")
    parser.add_argument("--ours", default=str(HERE.parent / ".venv" / "bin" / "routecodex"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--size", type=int, default=100_000)
    args = parser.parse_args()
    python = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="burst-"))
    converted = tmp / "messages.json"
    converted.write_bytes(agent.body("anthropic", args.size, f"paced.{MODEL}", stream=True))
    direct_body = tmp / "chat.json"
    direct_body.write_bytes(agent.body("chat", args.size, f"paced.{MODEL}", stream=True))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        paced_port = free_port()
        paced = subprocess.Popen(
            ["taskset", "-c", "0", python, str(STREAMS_PY), "upstream", "--port", str(paced_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(paced)
        wait_for(paced_port, paced, "the paced upstream")
        gateways: dict[str, tuple[int, int]] = {}
        for who, exe in (("ours", args.ours), ("baseline", args.baseline)):
            if not exe:
                continue
            port = free_port()
            config = tmp / f"{who}.toml"
            config.write_text(toml(port, paced_port))
            log = (tmp / f"{who}.log").open("wb")
            proc = subprocess.Popen(
                ["taskset", "-c", "1", exe, "serve", "--config", str(config), "--log-level", "warning"],
                stdout=log,
                stderr=log,
                cwd=tmp,
            )
            procs.append(proc)
            wait_for(port, proc, who)
            gateways[who] = (port, proc.pid)
        targets = ["direct", *gateways]
        direct_url = f"http://127.0.0.1:{paced_port}/v1/chat/completions"
        for port, _ in gateways.values():  # warm-up: code paths, upstream connections
            burst(f"http://127.0.0.1:{port}/v1/messages", "anthropic", converted, 8, python)
        rows: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
        for r in range(args.rounds):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            for target in order:
                if target == "direct":
                    ttfts = burst(direct_url, "openai", direct_body, args.streams, python)
                    cpu = 0.0
                else:
                    port, pid = gateways[target]
                    before = cpu_s(pid)
                    ttfts = burst(
                        f"http://127.0.0.1:{port}/v1/messages", "anthropic", converted, args.streams, python
                    )
                    cpu = cpu_s(pid) - before
                rows[target].append(
                    {
                        "p50": percentile(ttfts, 50),
                        "p95": percentile(ttfts, 95),
                        "min": min(ttfts),
                        "cpu": cpu * 1000,
                    }
                )
                time.sleep(0.3)
            line = "  ".join(
                f"{t} p50 {rows[t][-1]['p50']:.1f} p95 {rows[t][-1]['p95']:.1f}" for t in targets
            )
            print(f"round {r + 1}: {line}", flush=True)
        print(
            f"\n{args.streams} streams at once, {args.size // 1000} KB Claude Code bodies converted to chat "
            f"(paced upstream), direct = {args.size // 1000} KB chat bodies to the upstream; "
            f"median of {args.rounds} rounds (ms)\n"
        )
        print("| target | TTFT min | TTFT p50 | TTFT p95 | added p50 | added p95 | gateway CPU / burst |")
        print("|---|---|---|---|---|---|---|")
        for target in targets:
            rs = rows[target]
            med = {k: statistics.median(x[k] for x in rs) for k in ("min", "p50", "p95", "cpu")}
            added = {
                k: statistics.median(x[k] - d[k] for x, d in zip(rs, rows["direct"], strict=True))
                for k in ("p50", "p95")
            }
            extra = (
                ("—", "—", "—")
                if target == "direct"
                else (f"{added['p50']:.1f}", f"{added['p95']:.1f}", f"{med['cpu']:.0f}")
            )
            print(
                f"| {target} | {med['min']:.1f} | {med['p50']:.1f} | {med['p95']:.1f} "
                f"| {extra[0]} | {extra[1]} | {extra[2]} |"
            )
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
