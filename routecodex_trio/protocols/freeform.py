"""Freeform-text tools (OpenAI ``custom`` tools) carried as functions with one string ``input``.

OpenAI lets a client offer a tool whose input is free text, optionally constrained by a grammar
(Responses and Chat ``custom`` tools; Codex's ``apply_patch``). Other protocols, and Chat
upstreams, only know functions with a JSON schema, so such a tool travels as a function with a
single required string parameter ``input``, its grammar summarised in the description. These
helpers build that function, unwrap the upstream's arguments back into the text, and decode the
text incrementally while the arguments stream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import attrs
import orjson

from .canonical import parse_arguments

# A grammar longer than this is cut in the description: descriptions count against the
# prompt on every turn, and Codex's apply_patch grammar (about 1 KB) fits well within it.
GRAMMAR_SUMMARY_MAX_CHARS: Final = 4000


def custom_input_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's freeform input text."}},
        "required": ["input"],
        "additionalProperties": False,
    }


# Custom tools' descriptions tell the model to send raw text, "not JSON" (Codex's apply_patch
# does); as a function it must send that text as one JSON string, which this line says.
_CUSTOM_INPUT_NOTE: Final = (
    "Call this tool with one argument, `input`: the whole freeform text as a string (the tool "
    "receives it unwrapped)."
)


def grammar_summary(fmt: Mapping[str, Any] | None) -> str:
    """What the description says about the input: how to pass it and the grammar, if any.

    Responses puts ``syntax`` and ``definition`` in the format itself; Chat nests them in
    ``format.grammar``.
    """
    if not isinstance(fmt, Mapping) or fmt.get("type") != "grammar":
        return _CUSTOM_INPUT_NOTE
    nested = fmt.get("grammar")
    grammar: Mapping[str, Any] = nested if isinstance(nested, Mapping) else fmt
    syntax = grammar.get("syntax") if isinstance(grammar.get("syntax"), str) else "grammar"
    definition = grammar.get("definition")
    if not isinstance(definition, str) or not definition:
        return _CUSTOM_INPUT_NOTE
    if len(definition) > GRAMMAR_SUMMARY_MAX_CHARS:
        definition = definition[:GRAMMAR_SUMMARY_MAX_CHARS] + "\n... (grammar cut short)"
    return f"{_CUSTOM_INPUT_NOTE} The text must follow this {syntax} grammar:\n{definition}"


def custom_input(arguments: str) -> str:
    """The freeform text out of the ``{"input": ...}`` wrapper the upstream filled in."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        value = parse_arguments(arguments)
    if isinstance(value, Mapping):
        inner = value.get("input")
        if isinstance(inner, str):
            return inner
        strings = [v for v in value.values() if isinstance(v, str)]
        if len(strings) == 1:
            return strings[0]
        return "" if not value else orjson.dumps(dict(value)).decode()
    if isinstance(value, str):
        return value
    return arguments


def wrap_custom_input(text: str) -> str:
    return orjson.dumps({"input": text}).decode()


# --------------------------------------------------------------------------- streaming custom input


@attrs.define(eq=False)
class CustomInputStream:
    """Decodes the ``input`` string out of streamed ``{"input": "..."}`` JSON, incrementally.

    The upstream streams JSON text; the client wants the decoded text as it grows
    (``response.custom_tool_call_input.delta``). Escapes split between fragments wait for
    their end. Anything that is not the expected one-key object is left to the end, where
    ``custom_input`` reads the whole text.
    """

    _buffer: str = ""
    _pos: int = 0  # next unread character of _buffer
    _state: str = "prefix"  # prefix -> string -> end | off
    emitted: list[str] = attrs.field(factory=list)

    def rest(self, final: str) -> str:
        """What of ``final`` (the whole input, read at the end) was not emitted yet."""
        emitted = "".join(self.emitted)
        return final[len(emitted) :] if final.startswith(emitted) else ""

    def feed(self, fragment: str) -> str:
        self._buffer += fragment
        if self._state == "prefix":
            self._find_string_start()
        if self._state != "string":
            return ""
        out: list[str] = []
        buf, i, n = self._buffer, self._pos, len(self._buffer)
        while i < n:
            ch = buf[i]
            if ch == '"':
                self._state = "end"
                i += 1
                break
            if ch != "\\":
                j = i
                while j < n and buf[j] not in '"\\':
                    j += 1
                out.append(buf[i:j])
                i = j
                continue
            decoded, used = _escape(buf, i)
            if used == 0:
                break  # the escape is cut between fragments: wait for the rest
            out.append(decoded)
            i += used
        self._pos = i
        text = "".join(out)
        if text:
            self.emitted.append(text)
        return text

    def _find_string_start(self) -> None:
        found = _INPUT_START.match(self._buffer)
        if found is not None:
            self._pos = found.end()
            self._state = "string"
        elif _INPUT_START_PREFIX.fullmatch(self._buffer) is None:
            self._state = "off"  # not the one-key object: read whole at the end


# ``{"input": "`` opening the arguments, and any beginning of it (the fragment may stop anywhere).
_INPUT_START: Final = re.compile(r'\s*\{\s*"input"\s*:\s*"')
_INPUT_START_PREFIX: Final = re.compile(r'\s*(\{\s*("(i(n(p(u(t("\s*(:\s*)?)?)?)?)?)?)?)?)?')


_SIMPLE_ESCAPES: Final = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def _escape(buf: str, i: int) -> tuple[str, int]:
    """The character of the escape at ``buf[i]`` and its length; ``("", 0)`` when incomplete."""
    if i + 1 >= len(buf):
        return "", 0
    kind = buf[i + 1]
    if kind in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[kind], 2
    if kind != "u":
        return kind, 2
    if i + 6 > len(buf):
        return "", 0
    code = _hex(buf[i + 2 : i + 6])
    if 0xD800 <= code < 0xDC00:
        if i + 12 > len(buf):
            return "", 0
        if buf[i + 6 : i + 8] == "\\u":
            low = _hex(buf[i + 8 : i + 12])
            if 0xDC00 <= low < 0xE000:
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12
    return chr(code), 6


def _hex(digits: str) -> int:
    try:
        return int(digits, 16)
    except ValueError:
        return 0xFFFD  # not JSON; the final ``.done`` text comes from the whole arguments anyway
