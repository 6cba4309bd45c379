"""The HTTP clients of the OAuth endpoints, on the provider's own network settings.

A token refresh, a device-code request, a poll, a code exchange or iFlow's API-key fetch goes
out the way the provider's upstream requests do (issue 15, ``_network``): its ``proxy`` (``""``:
direct), else the proxy variables with our ``NO_PROXY`` rules, then ``ca_bundle``,
``verify = false``, ``client_cert``/``client_key`` and ``[network] trust``. The clients are
made with ``trust_env=False``: the decision is ours, taken per endpoint URL (the variables and
``NO_PROXY`` depend on its scheme and host), and httpx's own environment handling would undo
it -- it lacks CIDR ranges in ``NO_PROXY`` and knows nothing of ``proxy = ""`` or the trust
store setting.

One httpx client per distinct setting (proxy, trust, client certificate), so providers and
endpoints that share a setting share connections. Clients are made on first use, which covers
a reload bringing a provider with a new setting, and closed together by their owner:
``CredentialSet.run`` for the gateway's refreshers, ``routecodex login`` for a login. A client
no provider uses any more after a reload stays open until then: a request of the previous
config generation may still be refreshing a token through it, and a closed httpx client raises
``RuntimeError``, not a network error. Their number is bounded by the distinct settings the
process has seen, a handful.

Proxy URLs hold credentials: they are keys of the client table (never shown) and reach httpx
as ``auth``; messages name a proxy by its address only.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from ._network import choose_proxy, choose_trust, describe_network, ssl_context
from ._oauth import OAuthError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..config import NetworkConfig, ProviderConfig
    from ._network import ProxyChoice

# Closing a client sends nothing and waits for nothing remote; bounded anyway, as it is shielded.
_CLOSE_TIMEOUT_S: Final = 5.0


@attrs.frozen
class OAuthRoute:
    """The client one endpoint URL is called with, and the proxy it goes through."""

    client: httpx.AsyncClient = attrs.field(repr=False)
    proxy: ProxyChoice

    @property
    def via(self) -> str:
        """`` through proxy HOST:PORT`` or nothing, for messages (no credentials)."""
        return f" through proxy {self.proxy.address}" if self.proxy.url is not None else ""

    def check_proxy_answer(self, url: str, status: int) -> None:
        """A 407 comes from the proxy, not the endpoint (an http:// URL is forwarded, not tunnelled).

        Raises:
            OAuthError: not fatal -- the proxy's credentials are wrong, not the login.
        """
        if status == 407 and self.proxy.url is not None:
            raise OAuthError(
                f"cannot reach {url}{self.via}: the proxy refused the request: "
                "407 Proxy Authentication Required",
                status=status,
            )

    def why(self, exc: httpx.HTTPError) -> str:
        """What went wrong, in words a user can act on: the proxy, TLS, or the error's kind.

        httpx's messages are not repeated whole, only those known to hold no URL (a user-info
        URL carries the access token in its query).
        """
        if isinstance(exc, httpx.ProxyError):
            return f"the proxy refused: {exc}"
        if isinstance(exc, httpx.ConnectTimeout) and self.proxy.url is not None:
            return "connect timeout (the proxy's or the endpoint's)"
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return f"TLS: certificate verify failed: {cause.verify_message}"
            if isinstance(cause, ssl.SSLError):
                return f"TLS: {str(cause.reason or type(cause).__name__).lower().replace('_', ' ')}"
            cause = cause.__cause__ or cause.__context__
        return type(exc).__name__


@attrs.define(eq=False)
class OAuthClients:
    """The OAuth endpoints' httpx clients of one owner, one per distinct network setting.

    Resource handling: ``aclose`` closes every client made; after it, ``route`` refuses.
    """

    # (proxy URL, trust, client cert, client key) -> client. The key holds the proxy's
    # credentials: never shown.
    _clients: dict[tuple[object, ...], httpx.AsyncClient] = attrs.field(factory=dict, repr=False)
    _closed: bool = False

    def route(self, provider: ProviderConfig, network: NetworkConfig, url: str) -> OAuthRoute:
        """The client for ``provider``'s endpoint ``url``, made on first use.

        Raises:
            OAuthError: not fatal -- an unusable proxy variable, unreadable TLS files (both fixable
                without a new login), or the owner has closed its clients.
        """
        if self._closed:
            raise OAuthError(f"cannot reach {url}: the gateway is stopping")
        try:
            proxy = choose_proxy(provider, url)
            trust = choose_trust(provider, network)
            context = ssl_context(provider, trust, http2=False)
        except ValueError as exc:  # the message never repeats the proxy URL
            raise OAuthError(f"cannot reach {url}: {exc}") from None
        except OSError as exc:  # ssl.SSLError included
            raise OAuthError(
                f"cannot reach {url}: cannot load providers.{provider.name}'s TLS certificates or key: {exc}"
            ) from None
        key = (
            proxy.url.reveal() if proxy.url is not None else None,
            attrs.evolve(trust, source=""),  # the same files from two providers: one client
            provider.client_cert,
            provider.client_key,
        )
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(proxy=_httpx_proxy(proxy, context), verify=context, trust_env=False)
            self._clients[key] = client
        return OAuthRoute(client, proxy)

    def bind(self, provider: ProviderConfig, network: NetworkConfig) -> OAuthHttp:
        return OAuthHttp(self, provider, network)

    async def aclose(self) -> None:
        """Close every client (shielded: it runs when the owner is being cancelled)."""
        self._closed = True
        clients = list(self._clients.values())
        self._clients.clear()
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_S):
            for client in clients:
                await client.aclose()


@contextlib.asynccontextmanager
async def open_oauth_clients() -> AsyncIterator[OAuthClients]:
    """An ``OAuthClients`` for the block; every client it made is closed when the block ends."""
    clients = OAuthClients()
    try:
        yield clients
    finally:
        await clients.aclose()


@attrs.frozen
class OAuthHttp:
    """One provider's way to its OAuth endpoints: what ``_oauth``'s exchanges are given."""

    clients: OAuthClients = attrs.field(repr=False)
    provider: ProviderConfig = attrs.field(repr=False)
    network: NetworkConfig = attrs.field(repr=False)

    def route(self, url: str) -> OAuthRoute:
        return self.clients.route(self.provider, self.network, url)


def _httpx_proxy(proxy: ProxyChoice, context: ssl.SSLContext) -> httpx.Proxy | None:
    """httpx's proxy for our choice; credentials as ``auth``, never in a URL httpx could show."""
    if proxy.url is None:
        return None
    auth = None
    if proxy.username is not None:
        auth = (proxy.username.reveal(), proxy.password.reveal() if proxy.password is not None else "")
    # Host names reach a SOCKS5 proxy unresolved either way (httpcore sends the name), as
    # providers/_hx.py does for upstream calls.
    scheme = "socks5" if proxy.scheme == "socks5h" else proxy.scheme
    host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
    return httpx.Proxy(
        f"{scheme}://{host}:{proxy.port}",
        auth=auth,
        # An https:// proxy is checked against the same trust as the endpoint.
        ssl_context=context if scheme == "https" else None,
    )


def describe_token_endpoint(provider: ProviderConfig, network: NetworkConfig) -> tuple[str, str] | None:
    """(proxy, trust) of the token endpoint for ``check-config``, when they are not the base
    URL's (``describe_network``): a ``NO_PROXY`` entry or a proxy variable for its host or scheme
    only, or an https endpoint beside a plain-http upstream. None when they are the same."""
    auth = provider.auth
    if auth is None or auth.token_url is None or provider.type == "mock":
        return None
    base_url = provider.base_url or "http://127.0.0.1"
    try:
        same_proxy = choose_proxy(provider, base_url).url == choose_proxy(provider, auth.token_url).url
    except ValueError:
        return None  # describe_network names the unusable variable
    tls = urlsplit(auth.token_url).scheme == "https"
    if same_proxy and (not tls or urlsplit(base_url).scheme == "https"):
        return None
    proxy, _ = describe_network(attrs.evolve(provider, base_url=auth.token_url), network)
    trust = choose_trust(provider, network).source if tls else "none (plain http)"
    return proxy, trust
