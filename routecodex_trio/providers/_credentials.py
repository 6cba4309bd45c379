"""OAuth credentials in the gateway: one ``Credential`` per token file, refreshed ahead of expiry.

Rules (docs/config.md, "Account credentials"):

* one refresher task per token file, in the ``CredentialSet``'s nursery, refreshes
  ``refresh_margin`` seconds before the access token expires and writes the new tokens back
  atomically, in the file's own shape (``_tokens``);
* one refresh at a time per token: a request that finds its token expired, or that got a 401
  with it, waits for the refresh under way instead of starting another; ``refresh(stale=...)``
  returns at once when the token it was given has already been replaced;
* a refresh the server refuses for good (revoked or expired refresh token) marks the credential
  ``needs_login``: its key cools (the pipeline), ``GET /health`` lists it, the log says
  "run `routecodex login X`". A network failure or a 5xx is retried, sooner than the expiry;
* the file is read again whenever it changed on disk: a ``routecodex login`` while the gateway
  runs brings the key back without a restart;
* a reload keeps the credentials (and their refreshers) whose provider, index, file and auth
  table did not change; the others stop and new ones start;
* the token endpoint is reached with the provider's own network settings (proxy, trust, client
  certificate: ``_oauth_http``), as they are in the config last loaded.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

import attrs
import trio

from .._errors import UpstreamError, UpstreamStatusError, UpstreamUnavailable
from .._scrub import scrubber_for
from ._oauth import OAuthError, grant_with_api_key, refresh
from ._oauth_http import open_oauth_clients
from ._tokens import (
    TokenFileError,
    TokenSet,
    file_signature,
    locked_file,
    permission_problem,
    read_token_file,
    write_token_file,
)

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import AuthConfig, GatewayConfig
    from ._oauth_http import OAuthClients, OAuthHttp

LOGGER: Final = logging.getLogger("routecodex_trio.providers.oauth")

# A token this close to its expiry (or refresh_margin, when shorter) is refreshed before use,
# whatever the refresher is doing: it could expire on its way upstream.
EXPIRY_SKEW_S: Final = 10.0
# After a failed refresh that may pass (network, 5xx), try again after this, doubling up to
# RETRY_MAX_S -- but never later than the expiry.
RETRY_MIN_S: Final = 5.0
RETRY_MAX_S: Final = 120.0
# Tokens of one credential kept for scrubbing: access, refresh and API key, now and before.
MAX_REMEMBERED_TOKENS: Final = 6
# How often a credential waiting for a login (or with no expiry to wait for) looks at its file.
FILE_POLL_S: Final = 5.0


def login_hint(provider: str) -> str:
    return f"run `routecodex login {provider}`"


@attrs.define(eq=False)
class Credential:
    """One token file of one provider: the tokens, their refresh, and whether a login is needed."""

    provider: str
    index: int
    path: Path
    auth: AuthConfig
    # The way to the token endpoint; set (again at every reload) by the CredentialSet.
    http: OAuthHttp | None = attrs.field(default=None, repr=False)
    tokens: TokenSet | None = attrs.field(default=None, repr=False)
    # Why the credential cannot be used (short, no token, no path); None when usable.
    problem: str | None = None
    refreshes: int = 0
    # Token sets taken in (file reads and refreshes): scrubbers rebuild when this moves.
    adopted: int = 0
    _signature: tuple[int, int] | None = None
    _lock: trio.Lock = attrs.field(factory=trio.Lock)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _obtained_at: float = 0.0
    _failed_at: float = 0.0
    # Tokens this credential has held: scrubbed from every text that leaves the gateway.
    _seen: list[str] = attrs.field(factory=list, repr=False)

    @property
    def definition(self) -> tuple[str, int, Path, AuthConfig]:
        """What a reload compares: the same definition keeps the credential and its refresher.

        The list of files is left out: adding a file to ``token_files`` keeps the others.
        """
        return self.provider, self.index, self.path, _without_files(self.auth)

    @property
    def needs_login(self) -> bool:
        return self.problem is not None

    def secrets(self) -> tuple[str, ...]:
        return tuple(self._seen)

    def load(self) -> None:
        """Read the file; on failure the credential is unusable with the reason why."""
        self._signature = file_signature(self.path)
        try:
            tokens = read_token_file(self.path)
        except TokenFileError as exc:
            self.tokens = None
            self.problem = exc.reason
            LOGGER.error(
                "provider %r key %d: token file %s: %s; %s",
                self.provider,
                self.index,
                self.path,
                exc.reason,
                login_hint(self.provider),
            )
            return
        warning = permission_problem(self.path)
        if warning:
            LOGGER.warning("provider %r key %d: %s", self.provider, self.index, warning)
        self._adopt(tokens)
        self.problem = None

    def _adopt(self, tokens: TokenSet) -> None:
        self.tokens = tokens
        self.adopted += 1
        self._obtained_at = time.time()
        for secret in tokens.secrets():
            if secret not in self._seen:
                self._seen.append(secret)
        # The current tokens and the previous ones (an answer in flight may still quote them);
        # older ones are dead, and every remembered token costs a scan of every chunk sent.
        del self._seen[:-MAX_REMEMBERED_TOKENS]
        # Wakes the refresher to plan its next refresh from the new expiry.
        self._changed.set()
        self._changed = trio.Event()

    def reload_if_changed(self) -> bool:
        """Re-read the file when it changed on disk since it was read (a login). Returns whether."""
        if file_signature(self.path) == self._signature:
            return False
        LOGGER.info(
            "provider %r key %d: token file %s changed, reading it", self.provider, self.index, self.path
        )
        self.load()
        return True

    def expired(self, skew_s: float = EXPIRY_SKEW_S) -> bool:
        tokens = self.tokens
        if tokens is None:
            return True
        return tokens.expires_at is not None and time.time() >= tokens.expires_at - skew_s

    def current(self) -> str | None:
        """The access token to send now (``None``: unusable)."""
        return self.tokens.bearer if self.tokens is not None and self.problem is None else None

    async def fresh_token(self) -> str:
        """A usable access token: waits for a refresh under way, refreshes an expired one.

        Raises:
            CredentialError: the credential needs a login (or a refresh failed just now).
        """
        if self.problem is not None:
            self.reload_if_changed()  # a login since: the key is back
        if self._lock.locked():
            async with self._lock:  # a refresh is under way: its result is ours too
                pass
        if self.problem is None and self.expired(min(EXPIRY_SKEW_S, self.auth.refresh_margin)):
            await self.refresh(stale=self.tokens.bearer if self.tokens else None)
        token = self.current()
        if token is None:
            raise CredentialError(self, self.problem or "no token")
        return token

    async def refresh(self, *, stale: str | None) -> None:
        """Refresh the tokens, unless ``stale`` has already been replaced by another refresh.

        One at a time: callers that arrive during a refresh wait for it and return.

        Raises:
            CredentialError: the refresh failed (``fatal``: the credential now needs a login).
        """
        async with self._lock:
            tokens = self.tokens
            if tokens is None or self.problem is not None:
                raise CredentialError(self, self.problem or "no token")
            if stale is not None and tokens.bearer != stale:
                return  # another request refreshed it while this one waited
            async with locked_file(self.path):
                await self._refresh_unless_done(tokens)

    async def _refresh_unless_done(self, tokens: TokenSet) -> None:
        """Under the file lock: another process (a worker, a login) may have just refreshed."""
        if self.reload_if_changed():
            fresh = self.tokens
            if fresh is None or self.problem is not None:
                raise CredentialError(self, self.problem or "no token")
            if fresh.bearer != tokens.bearer and not self.expired(0.0):
                return
            tokens = fresh
        await self._refresh_locked(tokens)

    async def _refresh_locked(self, tokens: TokenSet) -> None:
        assert tokens.refresh_token is not None
        if self.http is None:
            raise CredentialError(self, "no HTTP client for the token endpoint")
        self.refreshes += 1
        try:
            answer = await grant_with_api_key(
                self.http, self.auth, await refresh(self.http, self.auth, tokens.refresh_token)
            )
        except OAuthError as exc:
            # A server may quote what it was sent in its error description.
            exc.message = scrubber_for(self.secrets()).text(exc.message)
            if exc.fatal:
                self.problem = f"refresh refused ({exc.error or exc.status or 'error'}): log in again"
                LOGGER.error(
                    "provider %r key %d: token refresh refused: %s; %s",
                    self.provider,
                    self.index,
                    exc.message,
                    login_hint(self.provider),
                )
            else:
                LOGGER.warning(
                    "provider %r key %d: token refresh failed, will retry: %s",
                    self.provider,
                    self.index,
                    exc.message,
                )
            raise CredentialError(self, exc.message, fatal=exc.fatal) from None
        expires_in = answer.get("expires_in")
        renewed = tokens.renewed(
            str(answer["access_token"]),
            answer.get("refresh_token") if isinstance(answer.get("refresh_token"), str) else None,
            float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else None,
            answer,
        )
        self._adopt(renewed)
        try:
            write_token_file(self.path, renewed)
        except OSError as exc:
            # The new tokens work in memory; a rotated refresh token that was not saved is lost
            # at the next restart, so this is worth an error line.
            LOGGER.error(
                "provider %r key %d: cannot write token file %s: %s",
                self.provider,
                self.index,
                self.path,
                exc.strerror or exc,
            )
        else:
            self._signature = file_signature(self.path)
        LOGGER.info("provider %r key %d: token refreshed", self.provider, self.index)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The refresher: sleeps until ``refresh_margin`` before expiry, refreshes, repeats.

        Cancellation: cancelled by the ``CredentialSet`` when the gateway stops or a reload
        drops this credential; a refresh cut mid-way leaves the file as it was.
        """
        task_status.started()
        failures = 0
        while True:
            tokens = self.tokens
            changed = self._changed
            if tokens is None or self.problem is not None or tokens.expires_at is None:
                with trio.move_on_after(FILE_POLL_S):
                    await changed.wait()
                self.reload_if_changed()
                continue
            lifetime = max(0.0, tokens.expires_at - self._obtained_at)
            # A margin longer than the token's life would refresh in a loop: then half-way.
            due = max(tokens.expires_at - self.auth.refresh_margin, self._obtained_at + lifetime / 2)
            if failures:
                due = self._failed_at + min(RETRY_MAX_S, RETRY_MIN_S * 2 ** (failures - 1))
            delay = due - time.time()
            if delay > 0:
                with trio.move_on_after(min(delay, FILE_POLL_S)):
                    await changed.wait()
                self.reload_if_changed()
                continue
            try:
                await self.refresh(stale=tokens.bearer)
            except CredentialError:
                failures += 1
                self._failed_at = time.time()
            else:
                failures = 0


def _without_files(auth: AuthConfig) -> AuthConfig:
    return attrs.evolve(auth, token_file=None, token_files=())


class CredentialError(Exception):
    """A credential that cannot give a token now; ``fatal``: it needs a login."""

    def __init__(self, credential: Credential, reason: str, *, fatal: bool = True) -> None:
        super().__init__(reason)
        self.credential = credential
        self.reason = reason
        self.fatal = fatal


@attrs.define(eq=False)
class CredentialSet:
    """Every OAuth credential of the running gateway, and the nursery their refreshers run in.

    Lives as long as the gateway (outside the config generations), so a reload can keep them.
    """

    _by_key: dict[tuple[str, int], Credential] = attrs.field(factory=dict)
    _scopes: dict[tuple[str, int], trio.CancelScope] = attrs.field(factory=dict)
    _nursery: trio.Nursery | None = None
    # The token endpoints' HTTP clients, one per network setting; owned by ``run``.
    _clients: OAuthClients | None = attrs.field(default=None, repr=False)
    _generation: int = 0

    @property
    def version(self) -> int:
        """Changes whenever the set of known tokens may have grown (scrubbers rebuild then)."""
        return self._generation + sum(c.adopted for c in self._by_key.values())

    def get(self, provider: str, index: int) -> Credential | None:
        return self._by_key.get((provider, index))

    def for_provider(self, provider: str) -> tuple[Credential, ...]:
        found = sorted((k[1], c) for k, c in self._by_key.items() if k[0] == provider)
        return tuple(c for _, c in found)

    def all(self) -> tuple[Credential, ...]:
        return tuple(self._by_key.values())

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for c in self._by_key.values() for s in c.secrets())

    def needing_login(self) -> tuple[Credential, ...]:
        return tuple(c for c in self._by_key.values() if c.needs_login)

    def configure(self, config: GatewayConfig) -> None:
        """Make the set match ``config``: keep unchanged credentials, stop dropped ones, load new ones."""
        wanted: dict[tuple[str, int], tuple[str, int, Path, AuthConfig]] = {}
        for name, provider in config.providers.items():
            if provider.auth is None:
                continue
            for index, path in enumerate(provider.auth.paths(name)):
                wanted[(name, index)] = (name, index, path, _without_files(provider.auth))
        for key, credential in list(self._by_key.items()):
            if wanted.get(key) != credential.definition:
                del self._by_key[key]
                scope = self._scopes.pop(key, None)
                if scope is not None:
                    scope.cancel()
        for key, (name, index, path, _) in wanted.items():
            if key in self._by_key:
                continue
            auth = config.providers[name].auth
            assert auth is not None
            credential = Credential(name, index, path, auth)
            credential.load()
            self._by_key[key] = credential
            if self._nursery is not None:
                self._nursery.start_soon(self._refresher, key, credential)
        # Kept credentials too: a reload may have changed the provider's proxy or trust.
        if self._clients is not None:
            for (name, _), credential in self._by_key.items():
                credential.http = self._clients.bind(config.providers[name], config.network)
        self._generation += 1_000_000  # never equal to a sum of adoptions of another generation

    async def _refresher(self, key: tuple[str, int], credential: Credential) -> None:
        with trio.CancelScope() as scope:
            self._scopes[key] = scope
            await credential.run()

    async def run(
        self, config: GatewayConfig, *, task_status: trio.TaskStatus[CredentialSet] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Load every token file, start one refresher each, and serve until cancelled.

        Resource handling: the token endpoints' HTTP clients (one per network setting, those a
        reload brought too) are closed when this ends, after the refreshers.
        """
        async with open_oauth_clients() as clients, trio.open_nursery() as nursery:
            self._clients = clients
            self._nursery = nursery
            self.configure(config)
            task_status.started(self)
            await trio.sleep_forever()


class LoginRequired(UpstreamStatusError):
    """An OAuth key that cannot be used: no valid token file, or its refresh was refused.

    The key cools for ``fatal_cooldown`` like a key the upstream refused (status 401), but,
    unlike one, other keys and targets are tried: the request itself is fine.
    """

    code = "upstream_login_required"

    def __init__(self, credential: Credential, reason: str) -> None:
        super().__init__(
            f"upstream {credential.provider!r} key {credential.index}: {reason}; "
            + login_hint(credential.provider),
            status=401,
            provider=credential.provider,
        )
        self.retryable = True
        self.credential = credential


async def usable_token(credential: Credential) -> str:
    """``credential.fresh_token()`` as the pipeline needs it.

    Raises:
        LoginRequired: the key needs a login.
        UpstreamUnavailable: the token endpoint failed in passing (the key is not cooled for long).
    """
    try:
        return await credential.fresh_token()
    except CredentialError as exc:
        raise _upstream_error(exc) from None


async def refreshed_token(credential: Credential, stale: str) -> str:
    """After a 401 with ``stale``: the token once refreshed (by this call or one under way)."""
    try:
        await credential.refresh(stale=stale)
    except CredentialError as exc:
        raise _upstream_error(exc) from None
    token = credential.current()
    if token is None:
        raise LoginRequired(credential, credential.problem or "no token")
    return token


def _upstream_error(exc: CredentialError) -> UpstreamError:
    if exc.fatal:
        return LoginRequired(exc.credential, exc.credential.problem or exc.reason)
    return UpstreamUnavailable(
        f"upstream {exc.credential.provider!r} key {exc.credential.index}: token refresh failed "
        f"({exc.reason})",
        provider=exc.credential.provider,
    )
