"""Request snapshots (RouteCodex's ``codex-samples``): one JSON file per pipeline stage.

Layout::

    <dir>/<protocol>/<request_id>/01-client-request.json
                                 02-routing.json
                                 03-upstream-request.json
                                 04-upstream-response.json   (or upstream-frames: SSE frames)
                                 05-client-response.json

Each file is ``{"request_id", "protocol", "stage", "seq", "written_at", "payload"}``.

Why the care: snapshots hold whole prompts and the requests we send upstream, and the
upstream request is exactly where provider keys live. So:

* header values named ``authorization``, ``x-api-key``, ``api-key``, ``proxy-authorization``
  (and a few more cookie/vendor key headers) are replaced by ``***`` wherever a mapping or a
  ``(name, value)`` pair carries them;
* every exact secret value given to the writer (all provider keys and inbound keys: see
  ``config_secrets``) is replaced by ``***`` inside every string, wherever it appears;
* directories are 0700 and files 0600, created with those modes (no window with wider ones);
* the directory is capped at ``max_bytes``: whole request folders are removed, least recently
  written first.

Writing never fails a request: a full disk or a permission problem is logged once per writer
and the snapshot is dropped.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import attrs
import orjson
import trio

from .._errors import InvalidRequest
from ..config._model import GatewayConfig, Secret, SnapshotsConfig

LOGGER: Final = logging.getLogger("routecodex_trio.observability")

REDACTED: Final = "***"
# Header names whose values are credentials in some API we speak or proxy to.
REDACTED_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
    }
)
STAGES: Final = (
    "client-request",
    "routing",
    "upstream-request",
    "upstream-response",
    "upstream-frames",
    "client-response",
)
# Stage, protocol and request id become path components: only these characters, so nothing a
# client sends (an x-request-id header, say) can climb out of the snapshot directory.
_SAFE_STAGE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_UNSAFE_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]")
MAX_NAME_CHARS: Final = 128
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
# After the cap is hit, prune down to this fraction of it, so that the next few requests do
# not each pay for a directory scan.
PRUNE_TO_FRACTION: Final = 0.9


def _reveal(secret: str) -> str:
    # ``str(secret)`` of a Secret is "***": reveal through the str base class instead.
    return secret.reveal() if isinstance(secret, Secret) else str.__str__(secret)


def _secrets_longest_first(values: Iterable[str]) -> tuple[str, ...]:
    # Longest first: a secret that contains another one must be replaced whole.
    return tuple(sorted({_reveal(v) for v in values if _reveal(v)}, key=lambda s: (-len(s), s)))


def _collect_secrets(value: Any, out: set[str]) -> None:
    if isinstance(value, Secret):
        out.add(value.reveal())
        # A URL's password (a proxy's) may appear on its own, e.g. in a Proxy-Authorization
        # header or a quoted URL.
        if "://" in value.reveal():
            try:
                password = urlsplit(value.reveal()).password
            except ValueError:
                password = None
            if password:
                out.add(password)
                out.add(unquote(password))
    elif attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            _collect_secrets(getattr(value, field.name), out)
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect_secrets(item, out)
    elif isinstance(value, tuple | list | frozenset | set):
        for item in value:
            _collect_secrets(item, out)


def config_secrets(config: GatewayConfig) -> tuple[str, ...]:
    """Every ``Secret`` value anywhere in ``config`` (provider keys, inbound keys...).

    Walks the whole attrs tree, so keys added by future config sections are found too. The
    result is meant for ``SnapshotWriter(config.snapshots, secrets=config_secrets(config))``.
    """
    found: set[str] = set()
    _collect_secrets(config, found)
    return tuple(sorted(found))


def safe_name(value: str) -> str:
    """``value`` as a single harmless path component (no separators, no leading dot)."""
    cleaned = _UNSAFE_CHARS.sub("_", value)[:MAX_NAME_CHARS].lstrip(".")
    return cleaned or "_"


def client_request_payload(path: str, headers: Any, body: Any) -> dict[str, Any]:
    """The ``client-request`` stage payload that ``load_client_request`` reads back.

    Args:
        path: the endpoint path the client called, e.g. ``/v1/messages``.
        headers: a mapping or ASGI-style ``(name, value)`` pairs (bytes or str).
        body: the request body (bytes, parsed JSON, or a mapping).
    """
    return {"method": "POST", "path": path, "headers": headers, "body": body}


@attrs.define(eq=False)
class _Redactor:
    secrets: tuple[str, ...]

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def value(self, value: Any) -> Any:
        """A JSON-ready copy of ``value`` with secrets and credential headers replaced."""
        if isinstance(value, Secret):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            try:
                return self.value(orjson.loads(raw))
            except orjson.JSONDecodeError:
                return self.text(raw.decode("utf-8", "replace"))
        if attrs.has(type(value)):
            return self.value(attrs.asdict(value, recurse=True))
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = self._key(key)
                out[name] = REDACTED if name.lower() in REDACTED_HEADERS else self.value(item)
            return out
        if isinstance(value, list | tuple):
            if self._is_header_pair(value):
                return [self.value(value[0]), REDACTED]
            return [self.value(item) for item in value]
        return self.text(str(value))

    def _key(self, key: Any) -> str:
        if isinstance(key, bytes):
            return self.text(key.decode("utf-8", "replace"))
        return self.text(str(key))

    @staticmethod
    def _is_header_pair(value: list[Any] | tuple[Any, ...]) -> bool:
        if len(value) != 2 or not isinstance(value[0], str | bytes):
            return False
        name = value[0].decode("latin-1") if isinstance(value[0], bytes) else value[0]
        return name.lower() in REDACTED_HEADERS


@attrs.define(eq=False)
class SnapshotWriter:
    """Writes snapshot files under ``config.dir``; one per gateway (and per reload).

    Args:
        config: the ``[snapshots]`` table. With ``enabled = false`` every entry is a no-op.
        secrets: exact values to redact from every string (``config_secrets(gateway_config)``).

    Resource handling:
        Holds no open files between writes; dropping it is enough. Writes run in worker
        threads (``trio.to_thread``), one small file each, so the event loop never waits on
        the disk.
    """

    config: SnapshotsConfig
    secrets: tuple[str, ...] = attrs.field(default=(), converter=_secrets_longest_first)
    _redactor: _Redactor = attrs.field(init=False)
    _root: Path = attrs.field(init=False)
    _total_bytes: int | None = attrs.field(init=False, default=None)  # None: not scanned yet
    _pruning: bool = attrs.field(init=False, default=False)
    _warned: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._redactor = _Redactor(self.secrets)
        self._root = Path(self.config.dir).expanduser()

    @property
    def root(self) -> Path:
        return self._root

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def entry(self, protocol: str, request_id: str) -> SnapshotEntry:
        """The snapshot folder of one request (created on its first write)."""
        folder = self._root / safe_name(protocol) / safe_name(request_id)
        return SnapshotEntry(writer=self, protocol=protocol, request_id=request_id, folder=folder)

    def redact(self, payload: Any) -> Any:
        """The JSON-ready, redacted form of ``payload`` that would be written."""
        return self._redactor.value(payload)

    async def _write(self, entry: SnapshotEntry, seq: int, stage: str, payload: Any) -> Path | None:
        document = {
            "request_id": entry.request_id,
            "protocol": entry.protocol,
            "stage": stage,
            "seq": seq,
            "written_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "payload": payload,
        }
        path = entry.folder / f"{seq:02d}-{stage}.json"
        try:
            # Redaction and serialisation go to the thread too: a 32 MiB body with images
            # takes long enough to parse and dump that the event loop would notice.
            size = await trio.to_thread.run_sync(self._write_sync, path, document)
        except OSError as exc:
            self._warn_once("cannot write snapshot %s: %s", path, exc.strerror or exc)
            return None
        except (TypeError, ValueError, RecursionError) as exc:  # a payload orjson cannot encode
            self._warn_once("cannot encode snapshot %s: %s", path, exc)
            return None
        if self._total_bytes is not None:
            self._total_bytes += size
        if (self._total_bytes is None or self._total_bytes > self.config.max_bytes) and not self._pruning:
            self._pruning = True
            try:
                self._total_bytes = await trio.to_thread.run_sync(self._prune_sync, entry.folder)
            except OSError as exc:
                self._warn_once("cannot prune snapshots in %s: %s", self._root, exc.strerror or exc)
            finally:
                self._pruning = False
        return path

    def _warn_once(self, message: str, *args: object) -> None:
        if not self._warned:
            self._warned = True
            LOGGER.warning(message + " (further snapshot errors are not logged)", *args)

    def _ensure_dir(self, path: Path) -> None:
        if path.is_dir():
            return
        if path != self._root:
            self._ensure_dir(path.parent)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            return
        os.chmod(path, DIR_MODE)  # the umask may have taken bits away; never adds any

    def _write_sync(self, path: Path, document: dict[str, Any]) -> int:
        redacted = self._redactor.value(document)
        data = orjson.dumps(redacted, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        if not self._root.is_dir():
            self._ensure_dir(self._root)
        elif stat.S_IMODE(self._root.stat().st_mode) & 0o077:
            with contextlib.suppress(OSError):  # not ours to change (a shared dir): files stay 0600
                os.chmod(self._root, DIR_MODE)
        self._ensure_dir(path.parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(path, flags, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return len(data)

    def _prune_sync(self, keep: Path) -> int:
        """Remove least recently written request folders until under the cap; return the total.

        ``keep`` (the folder being written) is never removed, so a single request larger than
        the cap keeps its own snapshot.
        """
        folders: list[tuple[int, str, Path, int]] = []
        total = 0
        for protocol_dir in _subdirs(self._root):
            for folder in _subdirs(protocol_dir):
                size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
                total += size
                folders.append((folder.stat().st_mtime_ns, str(folder), folder, size))
        if total <= self.config.max_bytes:
            return total
        target = int(self.config.max_bytes * PRUNE_TO_FRACTION)
        folders.sort()
        removed = 0
        for _, _, folder, size in folders:
            if total <= target:
                break
            if folder == keep:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed += 1
        LOGGER.info(
            "snapshots over %d bytes: removed %d oldest request folder(s)", self.config.max_bytes, removed
        )
        return total


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.is_symlink()]
    except FileNotFoundError:
        return []


@attrs.define(eq=False)
class SnapshotEntry:
    """One request's snapshot folder; ``write`` numbers the stage files in call order."""

    writer: SnapshotWriter
    protocol: str
    request_id: str
    folder: Path
    _seq: int = attrs.field(init=False, default=0)

    @property
    def enabled(self) -> bool:
        """False when snapshots are off: callers may skip building payloads."""
        return self.writer.enabled

    async def write(self, stage: str, payload: Any) -> Path | None:
        """Write ``<NN>-<stage>.json`` with ``payload`` redacted.

        Args:
            stage: one of ``STAGES`` (or another lowercase ``[a-z0-9-]`` name).
            payload: JSON-like data; bytes are parsed as JSON when they are JSON, else kept as
                text; attrs values become dicts. ``upstream-frames`` takes a list of SSE frames.

        Returns:
            The file written, or ``None`` when snapshots are off or the write failed.

        Raises:
            ValueError: ``stage`` is not a safe file name part (a programming error).

        Cancellation:
            The thread doing the write (and, when the cap was just exceeded, the pruning) is
            not interrupted; cancellation is seen right after it. Both are short: one small
            file, and pruning goes down to 90 % of the cap so it is rare.
        """
        if not _SAFE_STAGE.fullmatch(stage):
            raise ValueError(f"invalid snapshot stage name {stage!r}")
        if not self.writer.enabled:
            return None
        self._seq += 1
        return await self.writer._write(self, self._seq, stage, payload)


def load_client_request(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """The endpoint path and JSON body of a ``client-request`` snapshot, for ``routecodex replay``.

    Raises:
        InvalidRequest: the file cannot be read or is not a client-request snapshot.
    """
    file = Path(path)
    try:
        document = orjson.loads(file.read_bytes())
    except OSError as exc:
        raise InvalidRequest(f"cannot read snapshot {file}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{file} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("stage") != "client-request":
        raise InvalidRequest(f"{file} is not a client-request snapshot (its stage is not 'client-request')")
    payload = document.get("payload")
    endpoint = payload.get("path") if isinstance(payload, dict) else None
    body = payload.get("body") if isinstance(payload, dict) else None
    if not isinstance(endpoint, str) or not endpoint.startswith("/"):
        raise InvalidRequest(f"{file}: payload.path is missing or not an absolute path")
    if not isinstance(body, dict):
        raise InvalidRequest(f"{file}: payload.body is missing or not a JSON object")
    return endpoint, body
