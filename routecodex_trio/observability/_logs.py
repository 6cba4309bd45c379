"""Structured logs: one line per request, as ``key=value`` text or as JSON.

The request line is the same text in both modes (``msg``); in JSON mode its fields are also
top-level keys, so a log pipeline can filter on ``status`` or ``target`` without parsing the
message. Log it with ``log_request`` so both modes get what they need.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO

import orjson
import trio

if TYPE_CHECKING:
    from ._metrics import RequestRecord

REQUEST_LOGGER: Final = logging.getLogger("routecodex_trio.access")
# The LogRecord attribute carrying the request fields (set through ``extra=``).
REQUEST_FIELDS_ATTR: Final = "routecodex_request"
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def request_fields(record: RequestRecord, request_id: str) -> dict[str, Any]:
    """The request line's fields, in a fixed order (ms rounded to 0.1)."""
    return {
        "id": request_id,
        "endpoint": record.endpoint,
        "category": record.category or None,
        "target": record.target or None,
        "status": record.status,
        "tokens_in": record.input_tokens,
        "tokens_out": record.output_tokens,
        "ms": round(record.duration_s * 1000, 1),
        "ttft_ms": None if record.ttft_s is None else round(record.ttft_s * 1000, 1),
        "overhead_ms": round(record.overhead_s * 1000, 1),
        "route": record.route or None,
        "key": record.key or None,
    }


# Control characters as their usual escapes; the rest as \xNN / \uNNNN.
_CONTROL_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_control(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x1b``, ``\\u2028``).

    Log text carries upstream and client text (error messages, model names): a newline in it
    would start a line of the attacker's choosing in the text log, and an escape sequence would
    drive the terminal reading it. ``str.isprintable`` is false for every C0/C1 control, for
    the Unicode line and paragraph separators and for other format characters.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in _CONTROL_ESCAPES:
            out.append(_CONTROL_ESCAPES[ch])
        else:
            code = ord(ch)
            out.append(
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
    return "".join(out)


def _logfmt_value(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    if not text or not text.isprintable() or any(c in text for c in ' ="\\'):
        return '"' + escape_control(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    return text


def format_request_line(record: RequestRecord, request_id: str, fields: dict[str, Any] | None = None) -> str:
    """``id=… endpoint=… category=… target=… status=… tokens=in/out ms=…`` (logfmt).

    Unknown values print as ``-``; values with spaces or quotes are quoted.
    """
    if fields is None:
        fields = request_fields(record, request_id)
    tokens = f"{_logfmt_value(fields['tokens_in'])}/{_logfmt_value(fields['tokens_out'])}"
    parts = [
        f"id={_logfmt_value(fields['id'])}",
        f"endpoint={_logfmt_value(fields['endpoint'])}",
        f"category={_logfmt_value(fields['category'])}",
        f"target={_logfmt_value(fields['target'])}",
        f"status={fields['status']}",
        f"tokens={tokens}",
        f"ms={fields['ms']}",
    ]
    if fields["ttft_ms"] is not None:
        parts.append(f"ttft_ms={fields['ttft_ms']}")
    if fields.get("key"):
        parts.append(f"key={_logfmt_value(fields['key'])}")
    if fields.get("route"):
        parts.append(f"route={_logfmt_value(fields['route'])}")
    return " ".join(parts)


def log_request(record: RequestRecord, request_id: str, *, logger: logging.Logger = REQUEST_LOGGER) -> None:
    """Log the request line at INFO (WARNING for 5xx), with its fields for the JSON formatter."""
    level = logging.WARNING if record.status >= 500 else logging.INFO
    if logger.isEnabledFor(level):
        fields = request_fields(record, request_id)
        logger.log(
            level, "%s", format_request_line(record, request_id, fields), extra={REQUEST_FIELDS_ATTR: fields}
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` (+ ``exc``).

    Request lines (``log_request``) also carry their fields as top-level keys. Messages are
    formatted with ``%`` as usual, so a ``Secret`` argument still prints as ``***``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, REQUEST_FIELDS_ATTR, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class _TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` with the date part of the timestamp made once per second.

    Every field of the line is escaped (``escape_control``): one record is one line, whatever
    text an upstream or a client managed to put into it. A traceback keeps its own lines, each
    indented, because the exception's message may be such text too: a line that starts at
    column 0 is always the start of a record.
    """

    _second: int = -1
    _date: str = ""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_control(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" in text:
            head, _, rest = text.partition("\n")
            text = head + "\n" + "\n".join("  " + line for line in rest.split("\n"))
        return text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._date = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = second
        return f"{self._date},{int(record.msecs):03d}"


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes request lines in batches, everything else at once.

    An access line per request, written and flushed on its own, was a write system call per
    request (docs/performance.md). Request lines below WARNING wait in memory until
    ``flush()`` -- called every ``LOG_FLUSH_INTERVAL_S`` by the CLI, and by logging at exit
    -- or until any other record, which is written after them, in order. Nothing waits
    longer than the interval.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if (
            record.levelno >= logging.WARNING
            or record.name != REQUEST_LOGGER.name
            or len(self._pending) >= MAX_PENDING_LINES
        ):
            self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            if self._pending:
                lines, self._pending = self._pending, []
                try:
                    self.stream.write(self.terminator.join(lines) + self.terminator)
                except Exception:
                    return
            super().flush()
        finally:
            self.release()


# How long a request line may wait in BatchingHandler, and how many may wait.
LOG_FLUSH_INTERVAL_S: Final = 0.2
MAX_PENDING_LINES: Final = 256


def setup_logging(
    level: str = "info", fmt: Literal["text", "json"] = "text", *, stream: TextIO | None = None
) -> logging.Handler:
    """Send all logs to ``stream`` (default stderr) as text or JSON lines; for the CLI only.

    Library code never calls this: an embedding application configures logging itself.
    Request lines are batched (``BatchingHandler``): whoever calls this also calls the
    handler's ``flush()`` every ``LOG_FLUSH_INTERVAL_S`` (the CLI does).

    Returns:
        The installed handler (the root logger's only one).
    """
    handler = BatchingHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter(TEXT_FORMAT))
    # No format here prints where a call came from: skip the stack walk logging does per record.
    logging._srcfile = None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return handler


async def flush_logs_periodically(handler: logging.Handler, interval_s: float = LOG_FLUSH_INTERVAL_S) -> None:
    """Flush ``handler`` every ``interval_s`` seconds, for as long as the caller runs this."""
    while True:
        await trio.sleep(interval_s)
        handler.flush()
