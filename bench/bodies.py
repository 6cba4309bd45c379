"""Deterministic agent-shaped request bodies for the ``bodies`` suite of bench/run (issue 22).

Real agent turns are nothing like a 228-byte chat request: a Claude Code or Codex turn carries a
few KB of instructions, 10-20 tool schemas and the whole history (tool calls with JSON
arguments, tool results holding file contents and command output). Three shapes:

``anthropic``   Claude Code on Anthropic Messages: ``system`` blocks with ``cache_control``,
                15 tools with ``input_schema``, ``tool_use``/``tool_result`` history,
                ``metadata.user_id``, ``thinking`` off.
``responses``   Codex CLI on OpenAI Responses: ``instructions``, function tools,
                ``function_call``/``function_call_output`` items, ``store: false``.
``chat``        an OpenAI Chat agent: system message, function tools, ``tool_calls`` and
                ``tool`` messages.

``body(shape, size)`` gives the JSON bytes of a request of about ``size`` bytes (the history
grows one turn at a time until the body reaches ``size``; the last turn is a user message, so
every body is a valid request). The same arguments always give the same bytes: the text
comes from a seeded ``random.Random``, so runs and peers see identical input.

Standard library only: bench/run (any python3) imports it.

    python3 bench/bodies.py anthropic 100000 > body.json    # one body on stdout
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

SHAPES = ("anthropic", "responses", "chat")
SIZES = (18_000, 100_000, 1_000_000, 4_000_000)

_WORD_TEXT = (
    "the a to of and in is it that for on with as this be are file function return value error "
    "test config request response stream token model tool call result path line code update "
    "change fix build run check import class def async await self none true false client "
    "server gateway upstream provider route retry timeout buffer bytes json schema"
)
_WORDS = _WORD_TEXT.split()
_CODE = (
    "def handle(request: Request) -> Response:\n",
    "    if not request.body:\n",
    '        raise ValueError("empty body")\n',
    '    data = {"id": request.id, "items": [x for x in request.items if x]}\n',
    "    return Response(status=200, body=json.dumps(data))\n",
    "\tfor (let i = 0; i < items.length; i++) { total += items[i].size; }\n",
    '    # TODO: handle the \\"retry\\" case and C:\\\\path\\\\to\\\\file\n',
    "    result = await client.post(url, json={'model': model, 'messages': messages})\n",
)
_TOOLS = (
    (
        "Read",
        "Reads a file from the local filesystem.",
        {"file_path": "string", "offset": "integer", "limit": "integer"},
    ),
    ("Write", "Writes a file to the local filesystem.", {"file_path": "string", "content": "string"}),
    (
        "Edit",
        "Performs exact string replacements in files.",
        {"file_path": "string", "old_string": "string", "new_string": "string", "replace_all": "boolean"},
    ),
    (
        "Bash",
        "Executes a given bash command in a persistent shell session.",
        {"command": "string", "timeout": "number", "description": "string"},
    ),
    ("Glob", "Fast file pattern matching tool.", {"pattern": "string", "path": "string"}),
    (
        "Grep",
        "A powerful search tool built on ripgrep.",
        {"pattern": "string", "path": "string", "glob": "string", "output_mode": "string", "-n": "boolean"},
    ),
    ("LS", "Lists files and directories in a given path.", {"path": "string", "ignore": "array"}),
    ("TodoWrite", "Create and manage a structured task list.", {"todos": "array"}),
    ("WebFetch", "Fetches content from a specified URL.", {"url": "string", "prompt": "string"}),
    (
        "WebSearch",
        "Search the web.",
        {"query": "string", "allowed_domains": "array", "blocked_domains": "array"},
    ),
    (
        "Task",
        "Launch a new agent to handle complex, multi-step tasks.",
        {"description": "string", "prompt": "string", "subagent_type": "string"},
    ),
    (
        "NotebookEdit",
        "Replace the contents of a specific cell in a Jupyter notebook.",
        {
            "notebook_path": "string",
            "cell_id": "string",
            "new_source": "string",
            "cell_type": "string",
            "edit_mode": "string",
        },
    ),
    (
        "MultiEdit",
        "Makes multiple edits to a single file in one operation.",
        {"file_path": "string", "edits": "array"},
    ),
    ("ExitPlanMode", "Prompts the user to exit plan mode.", {"plan": "string"}),
    (
        "BashOutput",
        "Retrieves output from a running background bash shell.",
        {"bash_id": "string", "filter": "string"},
    ),
)


def _schema(props: dict[str, str], rng: random.Random) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, kind in props.items():
        prop: dict[str, Any] = {"type": kind, "description": _sentence(rng, 12)}
        if kind == "array":
            prop["items"] = {
                "type": "object",
                "properties": {
                    "content": {"type": "string"},
                    "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                },
                "required": ["content", "status"],
                "additionalProperties": False,
            }
        properties[name] = prop
    return {
        "type": "object",
        "properties": properties,
        "required": [next(iter(props))],
        "additionalProperties": False,
        "$schema": "http://json-schema.org/draft-07/schema#",
    }


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def _prose(rng: random.Random, size: int) -> str:
    out: list[str] = []
    length = 0
    while length < size:
        part = _sentence(rng, rng.randint(6, 18)) + (" " if rng.random() < 0.8 else "\n\n")
        out.append(part)
        length += len(part)
    return "".join(out)


def _code(rng: random.Random, size: int) -> str:
    out: list[str] = []
    length = 0
    n = 1
    while length < size:
        line = f"{n:>6}\t{rng.choice(_CODE)}"
        out.append(line)
        length += len(line)
        n += 1
    return "".join(out)


def _tool_args(name: str, rng: random.Random) -> dict[str, Any]:
    if name == "Bash":
        return {
            "command": f"pytest -q tests/test_{rng.choice(_WORDS)}.py -x",
            "description": _sentence(rng, 5),
        }
    if name == "Edit":
        return {
            "file_path": f"/repo/src/{rng.choice(_WORDS)}.py",
            "old_string": _code(rng, 200),
            "new_string": _code(rng, 240),
        }
    return {"file_path": f"/repo/src/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}.py"}


_SYSTEM_SIZE = 3_000
_TURN_TEXT = 300


def _turns(rng: random.Random, size: int) -> Any:
    """Yields (user_text, tool_name, tool_id, args, tool_output, assistant_text) per turn."""
    index = 0
    while True:
        name = ("Read", "Bash", "Edit", "Grep")[index % 4]
        output = _code(rng, rng.randint(1_500, 6_000)) if name != "Bash" else _prose(rng, 800)
        yield (
            _prose(rng, _TURN_TEXT),
            name,
            f"toolu_{index:04d}{rng.getrandbits(64):016x}",
            _tool_args(name, rng),
            output,
            _prose(rng, 200),
        )
        index += 1


def _grow(base: dict[str, Any], field: str, size: int, turn_items: Any, closing: Any) -> bytes:
    """Adds turns to ``base[field]`` until the encoded body reaches ``size`` bytes."""
    items: list[Any] = base[field]
    length = len(json.dumps(base))
    for turn in turn_items:
        if length >= size:
            break
        new = list(turn)
        items.extend(new)
        length += sum(len(json.dumps(x)) + 1 for x in new)
    items.append(closing)
    return json.dumps(base, separators=(",", ":")).encode()


def anthropic(size: int, model: str = "claude-sonnet-4-5") -> bytes:
    rng = random.Random(f"anthropic-{size}")
    base: dict[str, Any] = {
        "model": model,
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": _prose(rng, _SYSTEM_SIZE), "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [
            {"name": name, "description": desc + " " + _prose(rng, 400), "input_schema": _schema(props, rng)}
            for name, desc, props in _TOOLS
        ],
        "metadata": {"user_id": "user_0f3c9a_account__session_5b2e"},
        "messages": [],
        "stream": False,
    }

    def turns() -> Any:
        for text, name, tid, args, output, answer in _turns(rng, size):
            yield (
                {"role": "user", "content": [{"type": "text", "text": text}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": answer},
                        {"type": "tool_use", "id": tid, "name": name, "input": args},
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": tid, "content": output}],
                },
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            )

    closing = {
        "role": "user",
        "content": [{"type": "text", "text": "Go on.", "cache_control": {"type": "ephemeral"}}],
    }
    return _grow(base, "messages", size, turns(), closing)


def responses(size: int, model: str = "gpt-5-codex") -> bytes:
    rng = random.Random(f"responses-{size}")
    base: dict[str, Any] = {
        "model": model,
        "instructions": _prose(rng, _SYSTEM_SIZE),
        "input": [],
        "tools": [
            {
                "type": "function",
                "name": name,
                "description": desc + " " + _prose(rng, 400),
                "strict": False,
                "parameters": _schema(props, rng),
            }
            for name, desc, props in _TOOLS
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "store": False,
        "stream": False,
        "include": [],
        "prompt_cache_key": "5b2e0f3c-9a1d-4c8e-b7a6-0d1e2f3a4b5c",
    }

    def turns() -> Any:
        for text, name, tid, args, output, answer in _turns(rng, size):
            call = f"call_{tid[6:]}"
            yield (
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
                {"type": "function_call", "name": name, "arguments": json.dumps(args), "call_id": call},
                {"type": "function_call_output", "call_id": call, "output": output},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": answer}],
                },
            )

    closing = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go on."}]}
    return _grow(base, "input", size, turns(), closing)


def chat(size: int, model: str = "gpt-4o-mini") -> bytes:
    rng = random.Random(f"chat-{size}")
    base: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": _prose(rng, _SYSTEM_SIZE)}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": desc + " " + _prose(rng, 400),
                    "parameters": _schema(props, rng),
                },
            }
            for name, desc, props in _TOOLS
        ],
        "tool_choice": "auto",
        "max_tokens": 4096,
        "stream": False,
    }

    def turns() -> Any:
        for text, name, tid, args, output, answer in _turns(rng, size):
            call = f"call_{tid[6:]}"
            yield (
                {"role": "user", "content": text},
                {
                    "role": "assistant",
                    "content": answer,
                    "tool_calls": [
                        {
                            "id": call,
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": call, "content": output},
                {"role": "assistant", "content": answer},
            )

    return _grow(base, "messages", size, turns(), {"role": "user", "content": "Go on."})


def body(shape: str, size: int, model: str | None = None, *, stream: bool = False) -> bytes:
    """The request body of ``shape`` at about ``size`` bytes (same arguments, same bytes)."""
    make = {"anthropic": anthropic, "responses": responses, "chat": chat}[shape]
    raw = make(size) if model is None else make(size, model)
    if stream:
        raw = raw.replace(b'"stream":false', b'"stream":true', 1)
    return raw


if __name__ == "__main__":
    sys.stdout.buffer.write(body(sys.argv[1], int(sys.argv[2])))


# --------------------------------------------------------------------------------------------
# The bodies suite's pieces that bench/run uses: upstream answers, paths, measuring, fitting.

ANSWER = "The capital of France is Paris, a city known for the Eiffel Tower, the Louvre and its cafes."
ANTHROPIC_MODEL = "claude-sonnet-4-5"
RESPONSES_MODEL = "gpt-5-codex"
CHAT_MODEL = "gpt-4o-mini"


def anthropic_answer() -> str:
    """What the Anthropic upstream (nginx) answers to every Messages request."""
    return json.dumps(
        {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": ANSWER}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 2095,
                "output_tokens": 20,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        },
        separators=(",", ":"),
    )


def responses_answer() -> str:
    """What the Responses upstream (nginx) answers to every Responses request."""
    return json.dumps(
        {
            "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
            "object": "response",
            "created_at": 1741476542,
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "model": "gpt-5-codex-2025-09-15",
            "output": [
                {
                    "type": "message",
                    "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": ANSWER, "annotations": []}],
                }
            ],
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": 2095,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 20,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 2115,
            },
        },
        separators=(",", ":"),
    )


# name, client shape, client path, upstream provider (bench/run's gateway config), model
PATHS = (
    ("messages→messages", "anthropic", "/v1/messages", "anth", ANTHROPIC_MODEL),
    ("responses→responses", "responses", "/v1/responses", "resp", RESPONSES_MODEL),
    ("chat→chat", "chat", "/v1/chat/completions", "plain", CHAT_MODEL),
    ("messages→chat", "anthropic", "/v1/messages", "plain", CHAT_MODEL),
    ("responses→messages", "responses", "/v1/responses", "anth", ANTHROPIC_MODEL),
    ("chat→responses", "chat", "/v1/chat/completions", "resp", RESPONSES_MODEL),
)
PASSTHROUGH = ("messages→messages", "responses→responses", "chat→chat")


def path_body(name: str, size: int, *, stream: bool = False, prefix: bool = True) -> tuple[str, bytes]:
    """(client path, body) of one path at one size; ``prefix``: ``provider.model`` (ours) or the
    bare model alias a peer's config maps."""
    _, shape, client_path, provider, model = next(p for p in PATHS if p[0] == name)
    return client_path, body(
        shape, size, f"{provider}.{model}" if prefix else f"{provider}-{model}", stream=stream
    )


HEADERS = {
    "Content-Type": "application/json",
    "Authorization": "Bearer bench",
    "x-api-key": "bench",
    "anthropic-version": "2023-06-01",
}


def post_many(port: int, path: str, payload: bytes, count: int) -> list[int]:
    """``count`` requests one after the other on one keep-alive connection; their statuses."""
    import http.client

    statuses = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(count):
            conn.request("POST", path, payload, HEADERS)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        conn.close()
    return statuses


def requests_for(size: int) -> int:
    """Requests per measurement: 0.5-2 s of our gateway's CPU (50+ clock ticks)."""
    return max(12, min(400, 20_000_000 // max(size, 1_000)))


FLOOR_SCRIPT = """
import json, sys, time, orjson
out = {}
for line in sys.stdin:
    name, path = line.split()
    raw = open(path, 'rb').read()
    reps = max(5, min(2000, 20_000_000 // len(raw)))
    best = 1e9
    for _ in range(5):
        started = time.process_time()
        for _ in range(reps):
            orjson.dumps(orjson.loads(raw))
        best = min(best, (time.process_time() - started) / reps)
    out[name] = best * 1000
print(json.dumps(out))
"""


def fit(points: list[tuple[float, float]]) -> dict[str, float]:
    """Least squares over (KB, ms): the linear slope in µs/KB, and the quadratic term's share of
    the cost at the largest size (how superlinear the growth is; ~0 or negative: linear)."""
    n = len(points)
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    result = {"slope_us_per_kb": slope * 1000, "intercept_ms": my - slope * mx}
    if n >= 3:
        # y = a + b x + c x^2 by the normal equations (3 x 3, Cramer's rule).
        s = [sum(x**k for x in xs) for k in range(5)]
        t = [sum(y * x**k for x, y in points) for k in range(3)]
        m = [[s[0], s[1], s[2]], [s[1], s[2], s[3]], [s[2], s[3], s[4]]]

        def det(a: list[list[float]]) -> float:
            return (
                a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
                - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
                + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
            )

        d = det(m)
        if d:
            coef = []
            for col in range(3):
                mc = [row[:] for row in m]
                for r in range(3):
                    mc[r][col] = t[r]
                coef.append(det(mc) / d)
            top = max(xs)
            total = coef[0] + coef[1] * top + coef[2] * top * top
            result["quadratic_share"] = coef[2] * top * top / total if total else 0.0
    return result
