"""What ``prompt_cache = "auto"`` adds to preparing an Anthropic-bound request.

``apply_prompt_cache`` copies every block dict of the encoded body so it can place or strip
markers without touching the client's request. This measures that copy against the work the
gateway does anyway for the same request (Responses body -> canonical -> Anthropic body ->
JSON bytes), on Codex-shaped conversations of growing length: process CPU time, best of
``--repeat`` rounds, side by side and as a ratio.

    .venv/bin/python bench/prompt_cache.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson

from routecodex_trio.protocols.anthropic_messages import CODEC as AM
from routecodex_trio.protocols.anthropic_messages import apply_prompt_cache
from routecodex_trio.protocols.openai_responses import CODEC as RS


def codex_body(turns: int) -> dict[str, Any]:
    """Instructions, a dozen tools, and ``turns`` shell round trips with ~1 KB outputs."""
    schema = {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}
    items: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]}
    ]
    for i in range(turns):
        items.append(
            {"type": "function_call", "call_id": f"call_{i}", "name": "shell", "arguments": '{"cmd":"ls"}'}
        )
        items.append({"type": "function_call_output", "call_id": f"call_{i}", "output": "file.py\n" * 128})
    return {
        "model": "m",
        "instructions": "You are Codex. " * 600,
        "input": items,
        "tools": [
            {"type": "function", "name": f"tool_{k}", "parameters": schema, "strict": False}
            for k in range(12)
        ],
    }


def cpu(fn: Any, repeat: int, inner: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(inner):
            fn()
        best = min(best, (time.process_time() - start) / inner)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{'turns':>6} {'body KB':>8} {'convert+dump ms':>16} {'auto markers ms':>16} {'ratio':>7}")
    for turns in (10, 50, 200):
        raw = codex_body(turns)

        def convert(raw: dict[str, Any] = raw) -> bytes:
            return orjson.dumps(AM.encode_request(RS.decode_request(raw)))

        encoded = AM.encode_request(RS.decode_request(raw))
        inner = max(1, 400 // turns)
        base = cpu(convert, args.repeat, inner)
        extra = cpu(lambda e=encoded: apply_prompt_cache(e, "auto", converted=True), args.repeat, inner)
        size = len(convert()) / 1024
        print(f"{turns:>6} {size:>8.0f} {base * 1e3:>16.3f} {extra * 1e3:>16.3f} {extra / base:>7.3f}")


if __name__ == "__main__":
    main()
