"""CPU of the codecs alone on agent-sized converted bodies, old against new, pairwise (issue 22).

The gateway-level ``bodies`` suite of bench/run sees codec changes through socket, HTTP and
JSON work that dwarfs them on a loaded host. This times only what a converted request costs in
the codecs: ``decode_request`` of the client's protocol + ``encode_request`` of the upstream's,
on the parsed bodies of bench/bodies.py, in process CPU time (``time.process_time``).

Each round runs one child process per package tree (the baseline's, then this checkout's,
alternating which goes first), so both see the same host load; the table shows the median of
the rounds, in ms per request, and new / old.

    .venv/bin/python bench/codec_cpu.py --baseline /tmp/old     # /tmp/old/routecodex_trio = old code
    git archive HEAD~3 routecodex_trio | tar -x -C /tmp/old       # one way to get such a tree

``--baseline`` is a directory holding a ``routecodex_trio`` package (the old code); without it
only this checkout is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (name, body shape, client protocol, upstream protocol)
PATHS = (
    ("messages→chat", "anthropic", "anthropic-messages", "openai-chat"),
    ("responses→messages", "responses", "openai-responses", "anthropic-messages"),
    ("chat→responses", "chat", "openai-chat", "openai-responses"),
)
SIZES = (100_000, 1_000_000)
# Enough work per cell for process_time's resolution and to spread over load bumps.
TARGET_SECONDS = 0.4


def _worker(package_root: str) -> None:
    """Child: import the package from ``package_root`` and print {cell: ms per request}."""
    sys.path.insert(0, package_root)
    sys.path.insert(0, str(HERE))
    import orjson

    import bodies
    from routecodex_trio.protocols import codec_for

    loaded = sys.modules["routecodex_trio"].__file__ or ""
    assert loaded.startswith(package_root), f"imported {loaded}, wanted {package_root}"
    results: dict[str, float] = {}
    for name, shape, client, upstream in PATHS:
        decoder, encoder = codec_for(client), codec_for(upstream)  # type: ignore[arg-type]
        for size in SIZES:
            parsed = orjson.loads(bodies.body(shape, size))

            def once(parsed: object = parsed, decoder: object = decoder, encoder: object = encoder) -> None:
                encoder.encode_request(decoder.decode_request(parsed))  # type: ignore[attr-defined]

            once()  # warm-up; also fails loudly if a path does not convert
            start = time.process_time()
            once()
            single = max(time.process_time() - start, 1e-4)
            count = max(3, int(TARGET_SECONDS / single))
            start = time.process_time()
            for _ in range(count):
                once()
            results[f"{name} {size}"] = (time.process_time() - start) / count * 1000
    print(json.dumps(results))


def _run(package_root: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(package_root)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def _size_label(size: int) -> str:
    return f"{size // 1_000_000} MB" if size >= 1_000_000 else f"{size // 1000} KB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="directory holding the old routecodex_trio package")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    trees = {"new": ROOT}
    if args.baseline is not None:
        if not (args.baseline / "routecodex_trio" / "__init__.py").is_file():
            parser.error(f"{args.baseline} holds no routecodex_trio package")
        trees["old"] = args.baseline.resolve()
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    for round_ in range(args.rounds):
        order = sorted(trees) if round_ % 2 == 0 else sorted(trees, reverse=True)
        for label in order:
            runs[label].append(_run(trees[label]))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)

    def median(label: str, cell: str) -> float:
        return statistics.median(run[cell] for run in runs[label])

    header = "| path | body | " + " | ".join(f"{label} ms" for label in sorted(trees, reverse=True))
    header += " | new / old |" if "old" in trees else " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, *_ in PATHS:
        for size in SIZES:
            cell = f"{name} {size}"
            figures = [median(label, cell) for label in sorted(trees, reverse=True)]
            row = f"| {name} | {_size_label(size)} | " + " | ".join(f"{v:.2f}" for v in figures)
            if "old" in trees:
                row += f" | {figures[1] / figures[0]:.2f} |"
            else:
                row += " |"
            print(row)


if __name__ == "__main__":
    main()
