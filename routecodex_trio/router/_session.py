"""Which client session a request belongs to (for affinity and session instructions).

First present wins:

1. header ``x-claude-code-session-id`` (Claude Code, one per conversation);
2. header ``session_id`` (Codex CLI; also accepted as ``session-id``);
3. body ``prompt_cache_key`` (OpenAI's own cache-routing hint: Codex sets it to its
   conversation id);
4. body ``metadata.user_id`` (Anthropic; Claude Code puts its session in it);
5. the session of ``previous_response_id`` (Responses: that response's session, recorded when
   it was served; the caller resolves it through the state store);
6. a hash of the system prompt and the first user turn: stable across the turns of one
   conversation, because agents resend the history from its start.

Keys are SHA-256 digests of the source and the value, so the state store never holds a
client's identifiers or prompt text.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson

if TYPE_CHECKING:
    from collections.abc import Mapping

_HEADERS: Final = (
    ("x-claude-code-session-id", "header x-claude-code-session-id"),
    ("session_id", "header session_id"),
    ("session-id", "header session_id"),
)
# Longest identifier taken from a client, in characters; longer values are hashed anyway, this
# only stops a hostile client from making us hash megabytes per request.
_MAX_ID_CHARS: Final = 512


@attrs.frozen(kw_only=True)
class SessionId:
    """A session key and where it came from (``routecodex route`` and the log show the source)."""

    key: str
    source: str


def session_digest(source: str, value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(source.encode() + b"\0" + data).hexdigest()[:32]


def explicit_session(headers: Mapping[str, str], body: Mapping[str, Any]) -> SessionId | None:
    """The session the client named itself (steps 1-4), or ``None``."""
    for header, source in _HEADERS:
        value = headers.get(header)
        if value and value.strip():
            return SessionId(key=session_digest(source, value.strip()[:_MAX_ID_CHARS]), source=source)
    cache_key = body.get("prompt_cache_key")
    if isinstance(cache_key, str) and cache_key.strip():
        return SessionId(
            key=session_digest("prompt_cache_key", cache_key[:_MAX_ID_CHARS]), source="body prompt_cache_key"
        )
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        user = metadata.get("user_id")
        if isinstance(user, str) and user.strip():
            return SessionId(
                key=session_digest("metadata.user_id", user[:_MAX_ID_CHARS]), source="body metadata.user_id"
            )
    return None


def conversation_session(protocol: str, body: Mapping[str, Any]) -> SessionId | None:
    """Step 6: a digest of the system prompt and the first user turn, ``None`` without a user turn."""
    system: Any = None
    first_user: Any = None
    if protocol == "openai-completions":
        prompt = body.get("prompt")
        first_user = prompt[0] if isinstance(prompt, list) and prompt else prompt
    elif protocol == "openai-responses":
        system = body.get("instructions")
        items = body.get("input")
        if isinstance(items, str):
            first_user = items
        elif isinstance(items, list):
            first_user = next((i for i in items if isinstance(i, dict) and i.get("role") == "user"), None)
            if system is None:
                system = next(
                    (i for i in items if isinstance(i, dict) and i.get("role") in ("system", "developer")),
                    None,
                )
    else:
        system = body.get("system")
        messages = body.get("messages")
        if isinstance(messages, list):
            first_user = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
            if system is None:
                system = next(
                    (m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")),
                    None,
                )
    if first_user is None:
        return None
    try:
        data = orjson.dumps(
            [_without_cache_marks(system), _without_cache_marks(first_user)], option=orjson.OPT_SORT_KEYS
        )
    except orjson.JSONEncodeError:
        return None
    return SessionId(
        key=session_digest("conversation", data), source="hash of system prompt and first user turn"
    )


def _without_cache_marks(value: Any) -> Any:
    """The value without ``cache_control``: clients move their cache breakpoints every turn
    (the first user turn carries one while it is also the last message), and that must not
    change the session."""
    if isinstance(value, dict):
        return {k: _without_cache_marks(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_marks(v) for v in value]
    return value
