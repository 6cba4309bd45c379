"""CPU of the codecs alone on agent-sized converted bodies, old against new, pairwise (issue 22).

The gateway-level ``bodies`` suite of bench/run sees codec changes through socket, HTTP and
JSON work that dwarfs them on a loaded host. This times only what a converted request costs in
the codecs, in process CPU time (``time.process_time``), on two sides:

``request``   ``decode_request`` of the client's protocol, ``fit_request`` to the upstream's
              and its ``encode_request``, on the parsed bodies of bench/bodies.py;
``response``  ``decode_response`` of the upstream's fixed answer (the one bench/run's nginx
              gives: ``completion_body()``, ``bodies.anthropic_answer()``,
              ``bodies.responses_answer()``, parsed) and the client codec's ``encode_response``
              for the decoded request. The answer is small, so this is a fixed cost per request
              that weighs most at 18 KB (a Responses answer echoes the request's tools and
              instructions, so it still grows with the body).

Both versions run in one process: the baseline's package is copied under another name (the
codecs import each other relatively) and, cell by cell, old and new take turns in short
bursts (~``BURST`` s each, the first one alternating), so a load change on the host hits both
alike. The table gives the median ms per request of each and the median of the per-burst-pair
ratios new / old. Separate processes run one after the other differed by up to 40 % for the
same code on a loaded host; this does not.

    mkdir /tmp/old && git archive main routecodex_trio | tar -x -C /tmp/old
    .venv/bin/python bench/codec_cpu.py --baseline /tmp/old [--rounds 15] [--sizes 18000,100000]
        [--sides request,response]

``--baseline`` is a directory holding a ``routecodex_trio`` package (the old code); without it
only this checkout is measured.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.machinery
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (name, body shape, client protocol, upstream protocol)
PATHS = (
    ("messages→chat", "anthropic", "anthropic-messages", "openai-chat"),
    ("responses→messages", "responses", "openai-responses", "anthropic-messages"),
    ("chat→responses", "chat", "openai-chat", "openai-responses"),
)
SIZES = (18_000, 100_000, 1_000_000)
SIDES = ("request", "response")
BURST = 0.15


def _load(root: Path, name: str) -> Any:
    """The ``protocols`` package of the ``routecodex_trio`` under ``root``, imported as ``name``."""
    package = root / "routecodex_trio"
    spec = importlib.util.spec_from_file_location(
        name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{name}.protocols")


def _answers() -> dict[str, bytes]:
    """What bench/run's nginx answers for each upstream protocol, as bytes."""
    import bodies

    # bench/run is a script without a .py suffix; its module code only defines things.
    loader = importlib.machinery.SourceFileLoader("bench_run", str(HERE / "run"))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    assert spec is not None
    run = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = run
    loader.exec_module(run)
    return {
        "openai-chat": run.completion_body().encode(),
        "anthropic-messages": bodies.anthropic_answer().encode(),
        "openai-responses": bodies.responses_answer().encode(),
    }


def _timer(protocols: Any, side: str, client: str, upstream: str, parsed: Any, answer: bytes) -> Any:
    decoder = protocols.codec_for(client)
    encoder = protocols.codec_for(upstream)
    fit = importlib.import_module(f"{protocols.__name__}.fit").fit_request
    if side == "request":

        def once() -> None:
            encoder.encode_request(fit(decoder.decode_request(parsed), upstream, unknown="error").request)

    else:
        import orjson

        request = decoder.decode_request(parsed)
        body = orjson.loads(answer)

        def once() -> None:
            decoder.encode_response(encoder.decode_response(body), request)

    def run(count: int) -> float:
        # Each burst starts from a collected heap: a full collection falling into one burst
        # and not the other was the largest noise between two runs of the same code.
        gc.collect()
        start = time.process_time()
        for _ in range(count):
            once()
        return (time.process_time() - start) / count * 1000

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="directory holding the old routecodex_trio package")
    parser.add_argument("--rounds", type=int, default=15, help="bursts of each version per cell")
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="body sizes in bytes, comma-separated"
    )
    parser.add_argument("--sides", default=",".join(SIDES), help="request, response or both")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    if not sizes or not sides or any(side not in SIDES for side in sides):
        parser.error(f"--sizes wants integers, --sides a list of {', '.join(SIDES)}")
    sys.path.insert(0, str(HERE))
    import bodies
    import orjson

    answers = _answers()
    trees = {"new": _load(ROOT, "routecodex_trio")}
    if args.baseline is not None:
        if not (args.baseline / "routecodex_trio" / "__init__.py").is_file():
            parser.error(f"{args.baseline} holds no routecodex_trio package")
        trees["old"] = _load(args.baseline.resolve(), "routecodex_trio_baseline")
    labels = sorted(trees, reverse=True)  # old, new
    header = "| path | body | side | " + " | ".join(f"{label} ms" for label in labels)
    header += " | new / old |" if len(labels) == 2 else " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, shape, client, upstream in PATHS:
        for size in sizes:
            parsed = orjson.loads(bodies.body(shape, size))
            for side in sides:
                runners = {}
                for label, protocols in trees.items():
                    run = _timer(protocols, side, client, upstream, parsed, answers[upstream])
                    run(1)  # warm-up; fails loudly if a path does not convert
                    runners[label] = run
                count = max(2, int(BURST / max(runners["new"](2) / 1000, 1e-5)))
                times: dict[str, list[float]] = {label: [] for label in labels}
                ratios: list[float] = []
                for round_ in range(args.rounds):
                    order = labels if round_ % 2 == 0 else labels[::-1]
                    for label in order:
                        times[label].append(runners[label](count))
                    if len(labels) == 2:
                        ratios.append(times["new"][-1] / times["old"][-1])
                row = f"| {name} | {_size_label(size)} | {side} | " + " | ".join(
                    f"{statistics.median(times[label]):.3f}" for label in labels
                )
                row += f" | {statistics.median(ratios):.2f} |" if ratios else " |"
                print(row, flush=True)


def _size_label(size: int) -> str:
    return f"{size // 1_000_000} MB" if size >= 1_000_000 else f"{size // 1000} KB"


if __name__ == "__main__":
    main()
