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


# Upper bound of one event when the caller names none ([limits] max_event_bytes, whose default
# this is); past it the upstream is not speaking SSE, or is trying to exhaust our memory.
MAX_EVENT_BYTES: Final = 8 * 1024 * 1024


class SSEParseError(ValueError):
    """The byte stream cannot be SSE: one event grew past the parser's ``max_event_bytes``.

    Raised by ``feed`` as soon as the unfinished event passes the limit (not at its end, which
    may never come); not raised for malformed lines, which SSE says to ignore.
    """


@attrs.define(eq=False)
class SSEParser:
    """Incremental SSE parser; one per upstream stream.

    Cost is linear in the bytes fed, however they are cut: the unfinished event is kept as a
    list of pieces and only the new bytes are searched for a boundary, so an event that
    arrives in thousands of small reads is not re-scanned (nor re-copied) on every read.
    """

    max_event_bytes: int = MAX_EVENT_BYTES
    # Pieces of the unfinished event, line ends already normalised to \n.
    _pieces: list[bytes] = attrs.field(factory=list)
    _size: int = 0
    # A CR that ended the last chunk: it may be the first half of a CRLF split by the read.
    _cr: bool = False

    def feed(self, chunk: bytes) -> list[SSEFrame]:
        """Add bytes; return every event completed by them, in order.

        Raises:
            SSEParseError: the unfinished event is now larger than ``max_event_bytes``.
        """
        if self._cr:
            chunk = b"\r" + chunk
            self._cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not chunk:
            return []
        pieces = self._pieces
        # Only the new bytes are searched: the unfinished event holds no boundary, but a
        # boundary may straddle it and the new bytes (its last \n, their first).
        if b"\n\n" not in chunk and not (chunk[0] == 0x0A and pieces and pieces[-1].endswith(b"\n")):
            self._keep(chunk)
            return []
        buffer = b"".join(pieces) + chunk if pieces else chunk
        pieces.clear()
        self._size = 0
        frames: list[SSEFrame] = []
        start = 0
        limit = self.max_event_bytes
        while (stop := buffer.find(b"\n\n", start)) >= 0:
            if stop + 2 - start > limit:
                raise SSEParseError(f"server-sent event larger than {limit} bytes")
            frame = _parse_block(buffer[start : stop + 2])
            start = stop + 2
            if frame is not None:
                frames.append(frame)
        if start < len(buffer):
            self._keep(buffer[start:])
        return frames

    def _keep(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._size += len(piece)
        if self._size > self.max_event_bytes:
            raise SSEParseError(f"server-sent event larger than {self.max_event_bytes} bytes")

    def close(self) -> list[SSEFrame]:
        """End of stream: an unterminated final event still counts (some servers omit it)."""
        rest = b"".join(self._pieces) + (b"\n" if self._cr else b"")
        self._pieces.clear()
        self._size, self._cr = 0, False
        if not rest.strip():
            return []
        frame = _parse_block(rest.rstrip(b"\n") + b"\n\n")
        return [frame] if frame is not None else []

    @property
    def pending(self) -> bool:
        return self._cr or any(piece.strip() for piece in self._pieces)


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
