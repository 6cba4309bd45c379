"""Server-sent events: an incremental parser and the frame encoder.

The parser is fed raw bytes as they come off the upstream socket and returns each complete
event as soon as its terminating blank line has arrived, so nothing waits for the end of the
stream. It follows the WHATWG rules that matter for LLM APIs: ``\\n``, ``\\r\\n`` and ``\\r``
line ends, several ``data:`` lines joined with ``\\n``, one optional space after the colon,
comment lines (``:``) reported separately so a relay can see keep-alives.
"""

from __future__ import annotations

from typing import Final

import attrs


@attrs.frozen
class SSEFrame:
    """One event. ``raw`` is the exact bytes it was parsed from, terminator included."""

    event: str | None
    data: str
    raw: bytes = b""
    comment: bool = False


# Upper bound of one unterminated event; past this the upstream is not speaking SSE.
MAX_EVENT_BYTES: Final = 16 * 1024 * 1024


class SSEParseError(ValueError):
    """The byte stream cannot be SSE (an event grew past ``MAX_EVENT_BYTES``)."""


@attrs.define(eq=False)
class SSEParser:
    """Incremental SSE parser; one per upstream stream."""

    _buffer: bytes = b""

    def feed(self, chunk: bytes) -> list[SSEFrame]:
        """Add bytes; return every event completed by them, in order."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        frames: list[SSEFrame] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            block = buffer[start : end + 2]
            start = end + 2
            frame = _parse_block(block)
            if frame is not None:
                frames.append(frame)
        self._buffer = buffer[start:]
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise SSEParseError("server-sent event larger than 16 MiB")
        return frames

    def close(self) -> list[SSEFrame]:
        """End of stream: an unterminated final event still counts (some servers omit it)."""
        rest, self._buffer = self._buffer, b""
        if not rest.strip():
            return []
        frame = _parse_block(rest.rstrip(b"\n") + b"\n\n")
        return [frame] if frame is not None else []

    @property
    def pending(self) -> bool:
        return bool(self._buffer.strip())


def _parse_block(block: bytes) -> SSEFrame | None:
    event: str | None = None
    data_lines: list[str] = []
    comment_only = True
    for line in block.decode("utf-8", errors="replace").split("\n"):
        if not line:
            continue
        if line.startswith(":"):
            continue
        comment_only = False
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            event = value
        # id: and retry: carry nothing LLM APIs use.
    if comment_only:
        return SSEFrame(None, "", block, comment=True)
    if not data_lines and event is None:
        return None
    return SSEFrame(event, "\n".join(data_lines), block)


def encode_frame(data: str | bytes, event: str | None = None) -> bytes:
    """Encode one SSE event. ``data`` must not contain newlines (compact JSON never does)."""
    payload = data.encode() if isinstance(data, str) else data
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


KEEPALIVE_COMMENT: Final = b": keep-alive\n\n"
