"""Keeping configured keys out of everything that leaves the gateway.

Upstreams quote the key they were sent in their error texts, and not always as plain text: a
JSON encoder may escape any character as ``\\u00XX`` (Python's ``ensure_ascii``, PHP's ``\\/``),
and a key echoed back inside a URL arrives percent-encoded. A ``Scrubber`` replaces every
configured key in every one of these forms -- including mixes, where only some characters are
escaped -- with ``***``.

Order matters where text is also shortened: ``scrub_then_cut`` scrubs the whole text and only
then cuts it, so a key straddling the cut cannot leave its first characters behind.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable

REPLACEMENT: Final = "***"
# Upstream error text quoted in a client-visible message is cut to this many characters.
MAX_QUOTED_CHARS: Final = 300


def _hex(digit: str) -> str:
    """A hex digit in either case: encoders differ (``%2f`` and ``%2F``, ``\\u002d``/``\\u002D``)."""
    return f"[{digit.lower()}{digit.upper()}]" if digit.isalpha() else digit


def _char_forms(ch: str) -> str:
    """A regex matching ``ch`` written literally, JSON-escaped or percent-encoded."""
    forms = [re.escape(ch)]
    code = ord(ch)
    if code <= 0xFFFF:
        forms.append(r"\\u" + "".join(_hex(d) for d in f"{code:04x}"))
    if ch == "/":
        forms.append(r"\\/")
    forms.append("".join("%" + _hex(f"{b:02x}"[0]) + _hex(f"{b:02x}"[1]) for b in ch.encode()))
    return "(?:" + "|".join(forms) + ")"


def _pattern(secrets: tuple[str, ...]) -> str:
    return "|".join("".join(_char_forms(ch) for ch in secret) for secret in secrets)


def _longest_first(secrets: Iterable[str]) -> tuple[str, ...]:
    """Distinct non-empty keys, longest first: a key containing another is replaced whole."""
    return tuple(sorted({s for s in secrets if s}, key=len, reverse=True))


# Every escape an encoder may have written, undone to see whether a key hides behind them.
_ESCAPED_TEXT: Final = re.compile(r"\\u([0-9a-fA-F]{4})|%([0-9a-fA-F]{2})|\\(/)")
_ESCAPED_BYTES: Final = re.compile(rb"\\u([0-9a-fA-F]{4})|%([0-9a-fA-F]{2})|\\(/)")


def _unescape_text(match: re.Match[str]) -> str:
    code, byte, slash = match.groups()
    if slash:
        return "/"
    return chr(int(code or byte, 16))


def _unescape_bytes(match: re.Match[bytes]) -> bytes:
    code, byte, slash = match.groups()
    if slash:
        return b"/"
    if byte:
        return bytes((int(byte, 16),))
    return chr(int(code, 16)).encode("utf-8", "surrogatepass")


@attrs.frozen(eq=False)
class Scrubber:
    """Replaces configured keys, in any of their encoded forms, with ``***``.

    Three speeds, for the hot path (every client-bound stream chunk goes through ``bytes``):

    * no ``\\u``, ``\\/`` or ``%`` in the text: a key can only be there literally, so a
      substring search and replace (the common case);
    * some escapes: they are undone in a copy, and if no key shows up in it, the text is
      returned as it was (one pass of a regex that stops only at ``\\`` and ``%``);
    * a key shows up once unescaped: the full regex, which matches every key with each of
      its characters in any of its forms, replaces it wherever and however it is written.
    """

    secrets: tuple[str, ...] = attrs.field(converter=_longest_first)
    _text: re.Pattern[str] | None = attrs.field(init=False)
    _bytes: re.Pattern[bytes] | None = attrs.field(init=False)
    _plain_bytes: tuple[bytes, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        pattern = _pattern(self.secrets) if self.secrets else None
        object.__setattr__(self, "_text", re.compile(pattern) if pattern else None)
        object.__setattr__(self, "_bytes", re.compile(pattern.encode()) if pattern else None)
        object.__setattr__(self, "_plain_bytes", tuple(s.encode() for s in self.secrets))

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, text: str) -> str:
        """``text`` with every key, in every form, replaced by ``***``."""
        if self._text is None:
            return text
        if "\\" in text or "%" in text:
            unescaped = _ESCAPED_TEXT.sub(_unescape_text, text)
            if any(secret in unescaped for secret in self.secrets):
                return self._text.sub(REPLACEMENT, text)
            return text
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REPLACEMENT)
        return text

    def bytes(self, data: bytes) -> bytes:
        """``data`` with every key, in every form, replaced by ``***``."""
        if self._bytes is None:
            return data
        if b"\\u" in data or b"%" in data or b"\\/" in data:
            unescaped = _ESCAPED_BYTES.sub(_unescape_bytes, data)
            for secret in self._plain_bytes:
                if secret in unescaped:
                    return self._bytes.sub(b"***", data)
            return data
        for secret in self._plain_bytes:
            if secret in data:
                data = data.replace(secret, b"***")
        return data


NO_SECRETS: Final = Scrubber(())


@functools.lru_cache(maxsize=64)
def scrubber_for(secrets: tuple[str, ...]) -> Scrubber:
    """The ``Scrubber`` for a tuple of keys, built once (its regex costs a compile)."""
    return Scrubber(secrets)


def scrub_then_cut(text: str, secrets: Iterable[str] | Scrubber, limit: int = MAX_QUOTED_CHARS) -> str:
    """``text`` scrubbed of every key, *then* cut to ``limit`` characters.

    Cutting first would leave the part of a key that falls before the cut in the result,
    where no scrubber can recognise it any more.
    """
    scrubber = secrets if isinstance(secrets, Scrubber) else scrubber_for(tuple(secrets))
    text = scrubber.text(text)
    return text if len(text) <= limit else text[:limit]
