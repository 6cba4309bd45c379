"""Minting and mapping ids across protocols (PROTOCOLS.md 2.6 and 5.1).

Tool-call ids must survive a round trip: the client receives a call with some id, then sends
a result naming it. The gateway keeps no state between requests, so the mapping must be a
*deterministic function* of the original id, applied identically to the call (in responses and
in request history) and to the result. Then calls and results stay paired whatever direction
the conversation takes. Ids that already satisfy the target's rules pass unchanged, so the
common cases (``call_...`` to Anthropic, ``toolu_...`` to Chat) are the identity.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from typing import Final

_ANTHROPIC_ID: Final = re.compile(r"^[A-Za-z0-9_-]+$")
# OpenAI Chat accepts tool call ids up to 40 characters on input.
CHAT_ID_MAX: Final = 40
_ALPHABET: Final = string.ascii_letters + string.digits
# Random bytes become letters and digits in one ``bytes.translate``: byte b -> _ALPHABET[b % 62],
# and the 8 bytes from 248 up (beyond 4 x 62) are dropped so that every symbol is equally likely.
_UNIFORM_BELOW: Final = 256 - 256 % len(_ALPHABET)
_TO_ALPHABET: Final = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) for b in range(256))
_DROPPED: Final = bytes(range(_UNIFORM_BELOW, 256))


def new_id(prefix: str, length: int = 24) -> str:
    """A fresh random id such as ``chatcmpl-...``, ``msg_...`` or ``call_...``.

    One ``token_bytes`` call per id (~1 us); ``secrets.choice`` per character read the OS's
    random source once per character (22 us an id, on every converted answer).
    """
    symbols = b""
    while len(symbols) < length:
        symbols += secrets.token_bytes(length + 8).translate(_TO_ALPHABET, _DROPPED)
    return prefix + symbols[:length].decode("ascii")


def _digest(value: str, length: int) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def to_anthropic_tool_id(value: str) -> str:
    """An id matching ``^[a-zA-Z0-9_-]+$``; unchanged when it already does."""
    if value and _ANTHROPIC_ID.match(value):
        return value
    if not value:
        return new_id("toolu_")
    return "toolu_" + _digest(value, 24)


def to_chat_tool_id(value: str) -> str:
    """An id OpenAI Chat accepts (at most 40 characters); unchanged when it already is."""
    if value and len(value) <= CHAT_ID_MAX:
        return value
    if not value:
        return new_id("call_")
    return "call_" + _digest(value, 32)


def to_responses_call_id(value: str) -> str:
    """Responses ``call_id`` values have no documented limit; keep Chat's to stay portable."""
    return to_chat_tool_id(value)
