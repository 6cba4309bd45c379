"""Token files: read in whatever shape wrote them, written back in that shape, atomically.

Shapes met in the wild, told apart by the expiry field:

* ours (``routecodex login``): ``expires_at``, seconds since the epoch;
* Qwen Code's ``~/.qwen/oauth_creds.json`` (and Gemini CLI's): ``expiry_date``, milliseconds
  since the epoch, next to ``access_token``, ``refresh_token``, ``token_type``,
  ``resource_url``;
* files that keep ``expiry_date`` as an ISO 8601 string (iFlow clients);
* an ``expires_at`` in milliseconds (any value past 1e12 is read as such).

A refresh changes the tokens and the expiry and keeps every other field as it was, so the
provider's own CLI still reads the file the gateway wrote (and the other way round).

Writing: a temporary file in the same folder, created 0600, fsynced, then renamed over the old
one; a reader sees the old file or the new one, never half of one. A folder we create is 0700.
Files are a few hundred bytes: plain blocking calls cost less than a thread hand-off.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import time
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import trio

from .._perms import readable_by_others

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

ExpiryUnit = Literal["s", "ms", "iso"]
# An epoch expiry above this is milliseconds (1e12 ms is 2001; 1e12 s is the year 33,658).
_MS_THRESHOLD: Final = 1e12


class TokenFileError(Exception):
    """A token file that cannot be used; ``reason`` is short and names no token."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@attrs.frozen(kw_only=True)
class TokenSet:
    """The tokens of one account, and the file document they came from (to write it back)."""

    access_token: str
    refresh_token: str | None
    expires_at: float | None  # seconds since the epoch; None: the file does not say
    token_type: str = "Bearer"
    document: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    expiry_key: str = "expires_at"
    expiry_unit: ExpiryUnit = "s"

    def __repr__(self) -> str:  # never the tokens
        refresh = "set" if self.refresh_token else "none"
        return f"TokenSet(expires_at={self.expires_at!r}, refresh_token={refresh})"

    @property
    def bearer(self) -> str:
        """What requests carry: the account's ``api_key`` when the file has one (iFlow), else
        the access token."""
        api_key = self.document.get("api_key")
        return api_key if isinstance(api_key, str) and api_key else self.access_token

    def secrets(self) -> tuple[str, ...]:
        return tuple(t for t in (self.access_token, self.refresh_token, self.bearer) if t)

    def renewed(
        self, access_token: str, refresh_token: str | None, expires_in: float | None, extra: dict[str, Any]
    ) -> TokenSet:
        """The tokens after a refresh; a server that sends no new refresh token keeps the old one."""
        expires_at = time.time() + expires_in if expires_in is not None else None
        document = dict(self.document)
        document["access_token"] = access_token
        if refresh_token:
            document["refresh_token"] = refresh_token
        for key in ("token_type", "scope", "resource_url", "id_token", "api_key"):
            if extra.get(key):
                document[key] = extra[key]
        if expires_at is not None:
            document[self.expiry_key] = _encode_expiry(expires_at, self.expiry_unit)
        return attrs.evolve(
            self,
            access_token=access_token,
            refresh_token=refresh_token or self.refresh_token,
            expires_at=expires_at,
            token_type=str(extra.get("token_type") or self.token_type),
            document=document,
        )


def new_token_set(response: dict[str, Any], like: TokenSet | None = None) -> TokenSet:
    """The tokens a login obtained; in the shape of ``like`` (an existing file) when given."""
    base = like or TokenSet(access_token="", refresh_token=None, expires_at=None)
    expires_in = response.get("expires_in")
    token = base.renewed(
        str(response["access_token"]),
        response.get("refresh_token"),
        float(expires_in) if isinstance(expires_in, int | float) else None,
        response,
    )
    if like is None:
        document = dict(token.document)
        document.setdefault("token_type", token.token_type)
        token = attrs.evolve(token, document=document)
    return token


def _encode_expiry(expires_at: float, unit: ExpiryUnit) -> Any:
    if unit == "ms":
        return int(expires_at * 1000)
    if unit == "iso":
        return datetime.datetime.fromtimestamp(expires_at, datetime.UTC).isoformat().replace("+00:00", "Z")
    return int(expires_at)


def _decode_expiry(value: Any) -> tuple[float, ExpiryUnit] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return (value / 1000.0, "ms") if value > _MS_THRESHOLD else (float(value), "s")
    if isinstance(value, str) and value.strip():
        try:
            when = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return when.timestamp(), "iso"
    return None


def parse_token_document(path: Path, document: Any) -> TokenSet:
    """The tokens in a parsed token file.

    Raises:
        TokenFileError: not an object, no access token, no refresh token, an unreadable expiry.
    """
    if not isinstance(document, dict):
        raise TokenFileError(path, "not a JSON object")
    access = document.get("access_token")
    refresh = document.get("refresh_token")
    if not isinstance(refresh, str) or not refresh.strip():
        raise TokenFileError(path, "no refresh token (run `routecodex login` again)")
    if access is not None and not isinstance(access, str):
        raise TokenFileError(path, "access_token is not a string")
    expiry_key = "expiry_date" if "expiry_date" in document else "expires_at"
    expires_at: float | None = None
    unit: ExpiryUnit = "ms" if expiry_key == "expiry_date" else "s"
    if expiry_key in document and document[expiry_key] is not None:
        decoded = _decode_expiry(document[expiry_key])
        if decoded is None:
            raise TokenFileError(path, f"{expiry_key} is not a time")
        expires_at, unit = decoded
    return TokenSet(
        access_token=access or "",
        refresh_token=refresh,
        # No access token yet: expired, so the first use refreshes it.
        expires_at=expires_at if access else 0.0,
        token_type=str(document.get("token_type") or "Bearer"),
        document=dict(document),
        expiry_key=expiry_key,
        expiry_unit=unit,
    )


def shape_of(path: Path) -> TokenSet | None:
    """An existing file's shape (its fields and expiry format) to write a new login in, or None.

    Unlike ``read_token_file`` this asks for no refresh token: a file whose refresh token was
    revoked is exactly the one a login replaces.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    expiry_key = "expiry_date" if "expiry_date" in document else "expires_at"
    decoded = _decode_expiry(document.get(expiry_key))
    unit: ExpiryUnit = decoded[1] if decoded else ("ms" if expiry_key == "expiry_date" else "s")
    return TokenSet(
        access_token="",
        refresh_token=None,
        expires_at=None,
        document=dict(document),
        expiry_key=expiry_key,
        expiry_unit=unit,
    )


def read_token_file(path: Path) -> TokenSet:
    """Read and parse one token file.

    Raises:
        TokenFileError: missing, unreadable, malformed JSON, or unusable contents.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokenFileError(path, "no such token file (run `routecodex login`)") from None
    except OSError as exc:
        raise TokenFileError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        # The message quotes no part of the file: it holds tokens.
        raise TokenFileError(path, f"malformed JSON (line {getattr(exc, 'lineno', '?')})") from None
    return parse_token_document(path, document)


def permission_problem(path: Path) -> str | None:
    """A warning when a token file can be read by its group or by others."""
    readers = readable_by_others(path)
    if readers is None:
        return None
    return f"token file {path} is readable by {readers}; run: chmod 600 {path}"


def write_token_file(path: Path, tokens: TokenSet) -> None:
    """Write ``tokens`` atomically: temp file (0600) in the same folder, fsync, rename.

    Raises:
        OSError: the folder cannot be created or written.
    """
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps(tokens.document, indent=2).encode() + b"\n"
    temp = folder / f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@contextlib.asynccontextmanager
async def locked_file(path: Path, *, poll_s: float = 0.05) -> AsyncIterator[None]:
    """Hold an exclusive lock on ``<file>.lock`` (flock) while refreshing ``path``.

    Gateway workers (``[server] workers``) and other gateways share token files; with rotating
    refresh tokens, two processes refreshing at once would leave one with a dead token. The
    lock is polled (trio has no waiting flock), and a process that dies drops it.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        # A folder we cannot write to: nobody else can refresh there either (the new tokens
        # could not be saved), so there is nothing to serialise against.
        yield
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await trio.sleep(poll_s)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def file_signature(path: Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of a file, ``None`` when it is absent: a login rewrote it when this changes."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
