"""CPU cost of scrubbing keys from client-bound bytes (issue 13), old way beside new.

    .venv/bin/python bench/scrub_cost.py

Every byte relayed to a client goes through ``Scrubber.bytes``. The old scrubber replaced
each key's literal form only; the new one also finds keys written JSON-escaped or
percent-encoded. Prints the time per call for a typical 180-byte stream chunk without escapes,
the same chunk with one ``\\u00e9``, and 5.5 KB holding 30 escapes.
"""

from __future__ import annotations

import functools
import timeit

import orjson

from routecodex_trio._scrub import Scrubber

KEYS = ("sk-live-0123456789abcdefghijklmnopqrstuvwxyz", "sk-ant-secret-8e4b27", "sk-oa-secret-5d2a91")


def main() -> None:
    scrubber = Scrubber(KEYS)
    plain_keys = [k.encode() for k in KEYS]

    def old(data: bytes) -> bytes:
        for key in plain_keys:
            if key in data:
                data = data.replace(key, b"***")
        return data

    delta = {"content": "Hello \n world, here is some code: def f(x): return x * 2"}
    event = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}
    chunk = b"data: " + orjson.dumps(event) + b"\n\n"
    escaped = chunk.replace(b"Hello", b"H\\u00e9llo")
    cases = [
        ("old, literal keys only", old, chunk),
        ("new, chunk without escapes", scrubber.bytes, chunk),
        ("new, chunk with one \\u00e9", scrubber.bytes, escaped),
        ("new, 30 chunks with escapes", scrubber.bytes, escaped * 30),
    ]
    print("| case | bytes | us per call |")
    print("|---|---|---|")
    for name, func, data in cases:
        number = 20000 if len(data) < 1000 else 1000
        seconds = min(timeit.repeat(functools.partial(func, data), number=number, repeat=5)) / number
        print(f"| {name} | {len(data)} | {seconds * 1e6:.2f} |")


if __name__ == "__main__":
    main()
