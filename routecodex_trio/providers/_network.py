"""Which proxy and which trust store an upstream connection uses (issue 15).

No I/O here: these are decisions taken once per provider and origin, when its pool is made,
from the config and the process environment. ``check-config`` prints the same decisions.

Proxies follow curl's rules (which httpx shares for the variables): ``https_proxy`` /
``HTTPS_PROXY`` for https URLs, ``http_proxy`` / ``HTTP_PROXY`` for http URLs, then
``all_proxy`` / ``ALL_PROXY``; the lowercase name wins when both are set. ``no_proxy`` /
``NO_PROXY`` lists hosts that go direct: ``*``, host names (a name also covers its
subdomains; a leading ``.`` or ``*.`` is ignored), IP addresses, CIDR ranges (which httpx's
own matching lacks) and any of those with ``:port``. A provider's ``proxy`` key overrides the
environment; ``proxy = ""`` turns proxying off for it. Local engines never use a proxy.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit

import attrs

from ..config import Secret

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..config import NetworkConfig, ProviderConfig

PROXY_SCHEMES: Final = ("http", "https", "socks5", "socks5h")
# curl's defaults when a proxy URL names no port.
_PROXY_DEFAULT_PORTS: Final = {"http": 1080, "https": 443, "socks5": 1080, "socks5h": 1080}
_URL_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@attrs.frozen
class ProxyChoice:
    """The proxy one origin is reached through, or none, and why.

    ``url`` holds the credentials and is a ``Secret``; ``display`` is safe to print.
    """

    source: str  # "providers.X.proxy", "HTTPS_PROXY", ... or why there is none
    url: Secret | None = None
    scheme: str = ""
    host: str = ""
    port: int = 0
    username: Secret | None = None
    password: Secret | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def display(self) -> str:
        if self.url is None:
            return f"direct ({self.source})"
        auth = "***@" if self.username is not None else ""
        return f"{self.scheme}://{auth}{self.address} (from {self.source})"


def parse_proxy_url(value: str, source: str) -> ProxyChoice:
    """A proxy URL as curl reads it: no scheme means ``http://``.

    Raises:
        ValueError: not a proxy URL we can use; the message never repeats the URL (it may hold
            a password).
    """
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{source}: not a valid proxy URL (bad host or port)") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise ValueError(f"{source}: proxy scheme {scheme!r} is not one of {', '.join(PROXY_SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"{source}: a proxy URL needs a host")
    username = Secret(unquote(parts.username)) if parts.username is not None else None
    password = Secret(unquote(parts.password or "")) if parts.username is not None else None
    return ProxyChoice(
        source,
        Secret(text),
        scheme,
        parts.hostname,
        port or _PROXY_DEFAULT_PORTS[scheme],
        username,
        password,
    )


def _env(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """``name`` in lower then upper case (curl's order); empty means unset."""
    for key in (name.lower(), name.upper()):
        value = environ.get(key, "").strip()
        if value:
            return key, value
    return None


def no_proxy_matches(no_proxy: str, host: str, port: int) -> bool:
    """Whether ``host:port`` is listed in a ``NO_PROXY`` value (see the module docstring)."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port: int | None = None
        if entry.startswith("["):  # [v6] or [v6]:port
            inside, _, rest = entry[1:].partition("]")
            entry = inside
            if rest.startswith(":") and rest[1:].isdigit():
                entry_port = int(rest[1:])
        elif entry.count(":") == 1:  # name:port or v4:port (a bare v6 address has several)
            name, _, maybe_port = entry.partition(":")
            if maybe_port.isdigit():
                entry, entry_port = name, int(maybe_port)
        if entry_port is not None and entry_port != port:
            continue
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if address is not None and address.version == network.version and address in network:
                return True
            continue
        try:
            entry_address = ipaddress.ip_address(entry)
        except ValueError:
            pass
        else:  # an address matches itself only
            if entry_address == address:
                return True
            continue
        name = entry.removeprefix("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def choose_proxy(provider: ProviderConfig, url: str, environ: Mapping[str, str] | None = None) -> ProxyChoice:
    """The proxy for requests of ``provider`` to ``url`` (its base URL or an engine's address).

    Raises:
        ValueError: an unusable proxy URL in the environment (the config's own is checked when
            it is loaded).
    """
    environ = os.environ if environ is None else environ
    if provider.engine is not None:
        return ProxyChoice("local engine: never proxied")
    if provider.proxy is not None:
        if not provider.proxy.reveal().strip():
            return ProxyChoice(f'providers.{provider.name}.proxy = ""')
        return parse_proxy_url(provider.proxy.reveal(), f"providers.{provider.name}.proxy")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or _URL_DEFAULT_PORTS.get(scheme, 0)
    found = _env(environ, f"{scheme}_proxy") or _env(environ, "all_proxy")
    if found is None:
        return ProxyChoice("no proxy variable set")
    no_proxy = _env(environ, "no_proxy")
    if no_proxy is not None and no_proxy_matches(no_proxy[1], host, port):
        return ProxyChoice(f"{no_proxy[0]} lists {host}")
    return parse_proxy_url(found[1], found[0])


# ---------------------------------------------------------------------------------------------
# Trust


@attrs.frozen
class TrustChoice:
    """Where the certificates an upstream is checked against come from (for check-config)."""

    source: str
    verify: bool = True
    cafile: str | None = None
    capath: str | None = None
    system: bool = False  # the OS store through truststore


def choose_trust(
    provider: ProviderConfig, network: NetworkConfig, environ: Mapping[str, str] | None = None
) -> TrustChoice:
    """The provider's ``ca_bundle`` first, then ``SSL_CERT_FILE``/``SSL_CERT_DIR``, then
    ``[network] trust``. ``verify = false`` overrides all of them."""
    environ = os.environ if environ is None else environ
    if not provider.verify:
        return TrustChoice(f"NOT VERIFIED (providers.{provider.name}.verify = false)", verify=False)
    if provider.ca_bundle:
        path = os.path.expanduser(provider.ca_bundle)
        if os.path.isdir(path):
            return TrustChoice(f"providers.{provider.name}.ca_bundle {provider.ca_bundle}", capath=path)
        return TrustChoice(f"providers.{provider.name}.ca_bundle {provider.ca_bundle}", cafile=path)
    cafile = environ.get("SSL_CERT_FILE") or None
    capath = environ.get("SSL_CERT_DIR") or None
    if cafile or capath:
        named = " ".join(
            f"{name}={value}"
            for name, value in (("SSL_CERT_FILE", cafile), ("SSL_CERT_DIR", capath))
            if value
        )
        return TrustChoice(named, cafile=cafile, capath=capath)
    if network.trust == "system":
        return TrustChoice("system trust store (truststore)", system=True)
    return TrustChoice("certifi bundle")


# Building a context loads a CA bundle (~20 ms): one per distinct setting, for the process.
# http2 is part of the key because httpcore sets ALPN on the context it is given.
_CONTEXTS: dict[tuple[object, ...], ssl.SSLContext] = {}


def ssl_context(provider: ProviderConfig, trust: TrustChoice, *, http2: bool) -> ssl.SSLContext:
    """The TLS client context for ``provider`` (trust, client certificate, verification).

    Raises:
        OSError / ssl.SSLError: unreadable certificate or key files.
    """
    key = (trust, provider.client_cert, provider.client_key, http2)
    context = _CONTEXTS.get(key)
    if context is not None:
        return context
    if trust.system:
        import truststore

        context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    elif not trust.verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif trust.cafile or trust.capath:
        context = ssl.create_default_context(cafile=trust.cafile, capath=trust.capath)
    else:
        import certifi

        context = ssl.create_default_context(cafile=certifi.where())
    if provider.client_cert:
        context.load_cert_chain(
            os.path.expanduser(provider.client_cert),
            os.path.expanduser(provider.client_key) if provider.client_key else None,
        )
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    _CONTEXTS[key] = context
    return context


def describe_network(
    provider: ProviderConfig, network: NetworkConfig, environ: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(proxy, trust) lines for ``routecodex check-config``; no secrets in them."""
    if provider.type == "mock":
        return "none (built-in mock)", "none (no network)"
    url = provider.base_url or "http://127.0.0.1"
    try:
        proxy = choose_proxy(provider, url, environ).display
    except ValueError as exc:
        proxy = f"UNUSABLE: {exc}"
    if provider.engine is not None or urlsplit(url).scheme != "https":
        trust = "none (plain http)"
    else:
        trust = choose_trust(provider, network, environ).source
    return proxy, trust


def load_tls(
    provider: ProviderConfig, network: NetworkConfig, environ: Mapping[str, str] | None = None
) -> str:
    """Load the provider's TLS files as a connection would; the problem, or "" (check-config)."""
    if provider.type == "mock" or provider.engine is not None:
        return ""
    if (
        not (provider.ca_bundle or provider.client_cert)
        and urlsplit(provider.base_url or "").scheme != "https"
    ):
        return ""
    try:
        ssl_context(provider, choose_trust(provider, network, environ), http2=provider.http2)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot load its TLS certificates or key: {exc}"
    return ""
