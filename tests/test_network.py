"""Reaching upstreams from real networks (issue 15): proxies, trust, mutual TLS, HTTP/2.

Everything on loopback with real components: pproxy (a maintained HTTP CONNECT + SOCKS5 proxy
server) whose verbose log says which connections went through it; hypercorn serving TLS with
throwaway CAs from trustme, with client-certificate checks, and HTTP/2 over ALPN; the gateway
in-process, clients over HTTP. The proxy environment variables are read from ``os.environ``
when a provider's pool is made, so each test sets them before its first request.
"""

from __future__ import annotations

import functools
import socket
import ssl
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx
import pytest
import trio
import trustme
from hypercorn.config import Config
from hypercorn.trio import serve

from routecodex_trio import cli
from routecodex_trio import serve as serve_gateway
from routecodex_trio.config import config_from_mapping
from routecodex_trio.observability._snapshots import config_secrets
from routecodex_trio.providers import choose_proxy
from routecodex_trio.providers._network import no_proxy_matches

from .fakes import FakeOpenAI

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from routecodex_trio import Gateway

PROXY_VARIABLES: Final = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
PROXY_USER: Final = "corp-user"
PROXY_PASSWORD: Final = "pr0xy-s3cret-pw"
CHAT: Final = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or trust variable from the machine running the tests leaks into a case."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------
# Rigs: a proxy, TLS upstreams, a gateway


@attrs.define(eq=False)
class ProxyServer:
    """pproxy on loopback, HTTP CONNECT/forward and SOCKS5 on one port."""

    port: int
    process: trio.Process
    log: list[str] = attrs.field(factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, scheme: str = "http", *, credentials: bool = True) -> str:
        auth = f"{PROXY_USER}:{PROXY_PASSWORD}@" if credentials else ""
        return f"{scheme}://{auth}{self.address}"

    def relayed(self, upstream_port: int) -> list[str]:
        """Log lines of connections it carried to the upstream (``http|socks5 a -> b``)."""
        return [line for line in self.log if line.endswith(f"-> 127.0.0.1:{upstream_port}")]

    def refused(self) -> list[str]:
        return [line for line in self.log if line.startswith("Unauthorized")]

    async def settle(self) -> None:
        """Let the proxy's log lines of what just happened reach ``log`` (a separate process)."""
        await trio.sleep(0.3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def start_proxy(nursery: trio.Nursery) -> AsyncIterator[Any]:
    """``await start_proxy(auth=True)``: a pproxy process for the test, killed after it."""
    started: list[ProxyServer] = []

    async def start(*, auth: bool = False) -> ProxyServer:
        port = _free_port()
        listen = f"http+socks5://127.0.0.1:{port}" + (f"#{PROXY_USER}:{PROXY_PASSWORD}" if auth else "")
        # --auth 0: ask for credentials on every connection (pproxy otherwise trusts an address
        # that authenticated once, for 30 days).
        process = await trio.lowlevel.open_process(
            [sys.executable, "-u", "-m", "pproxy", "-l", listen, "-v", "--auth", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        server = ProxyServer(port, process)
        started.append(server)
        ready = trio.Event()

        async def read_log() -> None:
            assert process.stdout is not None
            pending = b""
            async for data in process.stdout:
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace").strip()
                    server.log.append(text)
                    if text.startswith("Serving on"):
                        ready.set()

        nursery.start_soon(read_log)
        with trio.fail_after(15):
            await ready.wait()
        return server

    yield start
    for server in started:
        server.process.kill()
        with trio.move_on_after(5):
            await server.process.wait()


@attrs.define(eq=False)
class Recording:
    """An upstream app wrapper that notes who called and over which HTTP version."""

    app: Any
    clients: list[tuple[str, int]] = attrs.field(factory=list)
    versions: list[str] = attrs.field(factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.clients.append(tuple(scope["client"]))
            self.versions.append(scope["http_version"])
        await self.app(scope, receive, send)


@attrs.define
class TLSFiles:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path
    client_key_file: Path


@pytest.fixture
def tls_files(tmp_path: Path) -> TLSFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    ca = trustme.CA()
    files = TLSFiles(
        ca,
        tmp_path / "ca.pem",
        tmp_path / "server.pem",
        tmp_path / "server.key",
        tmp_path / "client.pem",
        tmp_path / "client.key",
    )
    ca.cert_pem.write_to_path(str(files.ca_file))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(str(files.key_file))
    for i, pem in enumerate(server.cert_chain_pems):
        pem.write_to_path(str(files.cert_file), append=i > 0)
    client = ca.issue_cert("gateway@example.com")
    client.private_key_pem.write_to_path(str(files.client_key_file))
    for i, pem in enumerate(client.cert_chain_pems):
        pem.write_to_path(str(files.client_cert_file), append=i > 0)
    return files


async def serve_upstream(
    nursery: trio.Nursery, app: Any, tls: TLSFiles | None = None, *, require_client_cert: bool = False
) -> str:
    """``app`` on a free loopback port (TLS with h2 + http/1.1 ALPN when ``tls``); its URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 0.5
    if tls is not None:
        config.certfile = str(tls.cert_file)
        config.keyfile = str(tls.key_file)
        if require_client_cert:
            config.ca_certs = str(tls.ca_file)
            config.verify_mode = ssl.CERT_REQUIRED
    urls = await nursery.start(functools.partial(serve, app, config))
    url = str(urls[0])
    return url.replace("http://", "https://") if tls is not None else url


def gateway_config(url: str, **provider: Any) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2},
        "timeouts": {"connect": 3, "first_byte": 10},
        "retry": {"attempts": 1},
        "providers": {
            "up": {
                "type": "openai-chat",
                "base_url": url + "/v1",
                "api_key": "sk-upstream-secret-123",
                "models": ["m"],
                **provider,
            }
        },
        "routing": {"default": ["up.m"]},
    }


async def start(nursery: trio.Nursery, raw: dict[str, Any]) -> Gateway:
    gateway: Gateway = await nursery.start(serve_gateway, config_from_mapping(raw, environ={}))
    return gateway


async def chat(gateway: Gateway, *, stream: bool = False, model: str = "m") -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20, trust_env=False) as http:
        return await http.post("/v1/chat/completions", json={**CHAT, "model": model, "stream": stream})


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# ---------------------------------------------------------------------------------------------
# Proxy choice (no I/O)


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "expected"),
    [
        ("*", "api.example.com", 443, True),
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),  # a name covers its subdomains
        (".example.com", "api.example.com", 443, True),
        ("*.example.com", "api.example.com", 443, True),
        ("example.com", "badexample.com", 443, False),  # a suffix only at a dot
        ("10.0.0.0/8", "10.1.2.3", 443, True),  # CIDR (httpx lacks it)
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("10.0.0.0/8", "ten.example.com", 443, False),  # names are never resolved for CIDRs
        ("fd00::/8", "fd12::1", 443, True),
        ("::1", "[::1]", 8080, True),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 8081, False),
        ("api.example.com:8443", "api.example.com", 8443, True),
        ("api.example.com:8443", "api.example.com", 443, False),  # ports must match
        ("127.0.0.1:9000", "127.0.0.1", 9000, True),
        ("localhost, 127.0.0.1 ,internal.corp", "svc.internal.corp", 80, True),
        ("", "example.com", 443, False),
    ],
)
def test_no_proxy_rules(no_proxy: str, host: str, port: int, expected: bool) -> None:
    assert no_proxy_matches(no_proxy, host, port) is expected


def _provider(**extra: Any) -> Any:
    return config_from_mapping(gateway_config("https://api.example.com", **extra), environ={}).providers["up"]


def test_proxy_variables_follow_curl_precedence() -> None:
    provider = _provider()
    url = "https://api.example.com/v1"
    environ = {"HTTPS_PROXY": "http://upper:3128", "https_proxy": "http://lower:3128", "ALL_PROXY": "x:1"}
    assert choose_proxy(provider, url, environ).host == "lower"  # lowercase wins, as in curl
    assert choose_proxy(provider, url, {"ALL_PROXY": "socks5://s:1080"}).scheme == "socks5"
    assert choose_proxy(provider, "http://plain.example/v1", {"HTTPS_PROXY": "http://p:1"}).url is None
    # No scheme means http://, curl's reading; the port defaults to 1080 as in curl.
    choice = choose_proxy(provider, url, {"HTTPS_PROXY": "proxy.corp"})
    assert (choice.scheme, choice.host, choice.port) == ("http", "proxy.corp", 1080)
    bypass = choose_proxy(provider, url, {"HTTPS_PROXY": "http://p:1", "no_proxy": ".example.com"})
    assert bypass.url is None and "no_proxy" in bypass.source
    # The provider's own key wins over the environment; "" turns proxying off.
    own = choose_proxy(_provider(proxy="socks5h://u:pw@s:1081"), url, {"HTTPS_PROXY": "http://p:1"})
    assert (own.scheme, own.port, own.display) == (
        "socks5h",
        1081,
        "socks5h://***@s:1081 (from providers.up.proxy)",
    )
    off = choose_proxy(_provider(proxy=""), url, {"HTTPS_PROXY": "http://p:1"})
    assert off.url is None


def test_trust_source_order(tmp_path: Path) -> None:
    from routecodex_trio.config import NetworkConfig
    from routecodex_trio.providers import choose_trust

    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    system, certifi = NetworkConfig(trust="system"), NetworkConfig(trust="certifi")
    env = {"SSL_CERT_FILE": "/etc/corp-ca.pem", "SSL_CERT_DIR": "/etc/corp-certs"}
    assert choose_trust(_provider(), system, {}).system
    assert choose_trust(_provider(), certifi, {}).source == "certifi bundle"
    from_env = choose_trust(_provider(), certifi, env)
    assert (from_env.cafile, from_env.capath) == ("/etc/corp-ca.pem", "/etc/corp-certs")
    assert from_env.source == "SSL_CERT_FILE=/etc/corp-ca.pem SSL_CERT_DIR=/etc/corp-certs"
    own = choose_trust(_provider(ca_bundle=str(bundle)), system, env)
    assert own.cafile == str(bundle) and "ca_bundle" in own.source
    off = choose_trust(_provider(verify=False), system, env)
    assert not off.verify and "NOT VERIFIED" in off.source


def test_proxy_credentials_are_secrets() -> None:
    raw = gateway_config("https://api.example.com", proxy=f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy:3128")
    config = config_from_mapping(raw, environ={})
    provider = config.providers["up"]
    assert PROXY_PASSWORD not in repr(provider)
    assert PROXY_PASSWORD not in choose_proxy(provider, "https://api.example.com").display
    # Snapshots redact every config secret, and a proxy URL's password on its own.
    assert PROXY_PASSWORD in config_secrets(config)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"proxy": "ftp://u:hunter2@p:21"}, "providers.up.proxy: expected http://, https://, socks5://"),
        ({"proxy": "http://u:hunter2@p:notaport"}, "providers.up.proxy: not a valid proxy URL"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, "providers.up.ca_bundle: /nonexistent/ca.pem does not exist"),
        ({"client_key": "/etc/hostname"}, "providers.up.client_key: needs client_cert"),
        ({"verify": False, "ca_bundle": "/etc/hostname"}, "providers.up.verify: verify = false ignores"),
        ({"http2": True, "base_url": "http://127.0.0.1:1/v1"}, "providers.up.http2: HTTP/2 is negotiated"),
    ],
)
def test_bad_network_keys_are_config_errors(extra: dict[str, Any], message: str) -> None:
    from routecodex_trio import ConfigError

    with pytest.raises(ConfigError) as caught:
        config_from_mapping(gateway_config("https://api.example.com", **extra), environ={})
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_local_engine_never_takes_a_proxy() -> None:
    from routecodex_trio import ConfigError

    raw = gateway_config("https://x")
    provider = raw["providers"]["up"]
    del provider["base_url"]
    provider["engine"] = {"cmd": "engine --port ${PORT}"}
    engine = config_from_mapping(raw, environ={}).providers["up"]
    choice = choose_proxy(
        engine, "http://127.0.0.1:4000/v1", {"ALL_PROXY": "http://p:1", "HTTP_PROXY": "http://p:1"}
    )
    assert choice.url is None and "local engine" in choice.source
    provider["proxy"] = "http://p:1"
    with pytest.raises(ConfigError, match="a local engine is reached on loopback"):
        config_from_mapping(raw, environ={})


# ---------------------------------------------------------------------------------------------
# Proxies, end to end


async def test_https_proxy_variable_tunnels_https_with_connect(
    nursery: trio.Nursery, start_proxy: Any, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await start_proxy()
    url = await serve_upstream(nursery, FakeOpenAI(), tls_files)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url(credentials=False))
    gateway = await start(nursery, gateway_config(url, ca_bundle=str(tls_files.ca_file)))
    with trio.fail_after(20):
        for stream in (False, True):
            response = await chat(gateway, stream=stream)
            assert response.status_code == 200, response.text
            assert "Hello" in response.text
    # One tunnel (CONNECT), reused for the second request.
    await proxy.settle()
    assert len(proxy.relayed(_port(url))) == 1, proxy.log
    assert proxy.relayed(_port(url))[0].startswith("http ")


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
async def test_proxy_variables_carry_plain_http(
    nursery: trio.Nursery, start_proxy: Any, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    proxy = await start_proxy()
    url = await serve_upstream(nursery, FakeOpenAI())
    scheme = "socks5" if variable == "ALL_PROXY" else "http"
    monkeypatch.setenv(variable, proxy.url(scheme, credentials=False))
    gateway = await start(nursery, gateway_config(url))
    with trio.fail_after(20):
        response = await chat(gateway)
    assert response.status_code == 200, response.text
    await proxy.settle()
    relayed = proxy.relayed(_port(url))
    assert relayed and relayed[0].startswith(f"{scheme} "), proxy.log


@pytest.mark.parametrize("scheme", ["http", "socks5", "socks5h"])
async def test_provider_proxy_with_credentials_for_https(
    nursery: trio.Nursery,
    start_proxy: Any,
    tls_files: TLSFiles,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    scheme: str,
) -> None:
    proxy = await start_proxy(auth=True)
    url = await serve_upstream(nursery, FakeOpenAI(), tls_files)
    # The provider's own proxy wins over a (wrong) environment one.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    raw = gateway_config(url, proxy=proxy.url(scheme), ca_bundle=str(tls_files.ca_file))
    gateway = await start(nursery, raw)
    with trio.fail_after(20):
        response = await chat(gateway, stream=True)
    assert response.status_code == 200, response.text
    await proxy.settle()
    relayed = proxy.relayed(_port(url))
    assert relayed and relayed[0].startswith("socks5 " if scheme.startswith("socks") else "http "), proxy.log
    assert not proxy.refused()
    assert PROXY_PASSWORD not in caplog.text


@pytest.mark.parametrize(
    ("scheme", "tls", "expected"),
    [
        ("http", True, "refused CONNECT: 407"),
        ("http", False, "refused the request: 407"),  # forwarded plain http
        ("socks5", True, "(socks5) failed"),
    ],
)
async def test_proxy_refusal_says_it_was_the_proxy(
    nursery: trio.Nursery,
    start_proxy: Any,
    tls_files: TLSFiles,
    caplog: pytest.LogCaptureFixture,
    scheme: str,
    tls: bool,
    expected: str,
) -> None:
    proxy = await start_proxy(auth=True)
    url = await serve_upstream(nursery, FakeOpenAI(), tls_files if tls else None)
    wrong = f"{scheme}://{PROXY_USER}:wrong-{PROXY_PASSWORD}@{proxy.address}"
    gateway = await start(nursery, gateway_config(url, proxy=wrong, ca_bundle=str(tls_files.ca_file)))
    with trio.fail_after(20):
        response = await chat(gateway)
    assert response.status_code == 502, response.text
    message = response.json()["error"]["message"]
    assert f"proxy {proxy.address}" in message and expected in message, message
    assert f"proxy {proxy.address}" in caplog.text and expected in caplog.text
    assert PROXY_PASSWORD not in response.text + caplog.text
    await proxy.settle()
    assert proxy.refused(), proxy.log
    assert not proxy.relayed(_port(url))


async def test_an_unreachable_proxy_is_named(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    url = await serve_upstream(nursery, FakeOpenAI())
    dead = _free_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead}")
    gateway = await start(nursery, gateway_config(url))
    with trio.fail_after(20):
        response = await chat(gateway)
    assert response.status_code == 502
    assert f"proxy 127.0.0.1:{dead} unreachable" in response.json()["error"]["message"]


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "127.0.0.0/8", "*", "localhost,127.0.0.1:{port}"])
async def test_no_proxy_bypasses_the_proxy(
    nursery: trio.Nursery,
    start_proxy: Any,
    tls_files: TLSFiles,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
) -> None:
    proxy = await start_proxy()
    url = await serve_upstream(nursery, FakeOpenAI(), tls_files)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url(credentials=False))
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=_port(url)))
    gateway = await start(nursery, gateway_config(url, ca_bundle=str(tls_files.ca_file)))
    with trio.fail_after(20):
        response = await chat(gateway)
    assert response.status_code == 200, response.text
    await proxy.settle()
    assert not proxy.relayed(_port(url)), proxy.log


async def test_empty_provider_proxy_turns_the_environment_off(
    nursery: trio.Nursery, start_proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await start_proxy()
    url = await serve_upstream(nursery, FakeOpenAI())
    monkeypatch.setenv("ALL_PROXY", proxy.url(credentials=False))
    gateway = await start(nursery, gateway_config(url, proxy=""))
    with trio.fail_after(20):
        assert (await chat(gateway)).status_code == 200
    await proxy.settle()
    assert not proxy.relayed(_port(url)), proxy.log


async def test_a_local_engine_is_reached_directly_whatever_the_environment(
    nursery: trio.Nursery, start_proxy: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from .test_engines import engine_cmd

    proxy = await start_proxy()
    for variable in ("HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(variable, proxy.url(credentials=False))
    raw = {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2},
        "providers": {"local": {"type": "openai-chat", "models": ["m"], "engine": {"cmd": engine_cmd()}}},
        "routing": {"default": ["local.m"]},
        "engines": {"log_dir": str(tmp_path / "logs")},
    }
    gateway = await start(nursery, raw)
    with trio.fail_after(30):
        response = await chat(gateway)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "engine says hi"
    await proxy.settle()
    assert [line for line in proxy.log if "->" in line] == [], proxy.log


# ---------------------------------------------------------------------------------------------
# Trust


async def test_ssl_cert_file_is_trusted(
    nursery: trio.Nursery, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await serve_upstream(nursery, FakeOpenAI(), tls_files)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.ca_file))
    gateway = await start(nursery, gateway_config(url))
    with trio.fail_after(20):
        response = await chat(gateway, stream=True)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("trust", ["system", "certifi"])
async def test_an_untrusted_certificate_names_the_reason_and_host(
    nursery: trio.Nursery, tls_files: TLSFiles, caplog: pytest.LogCaptureFixture, trust: str
) -> None:
    url = await serve_upstream(nursery, FakeOpenAI(), tls_files)
    raw = gateway_config(url)
    raw["network"] = {"trust": trust}
    gateway = await start(nursery, raw)
    with trio.fail_after(20):
        response = await chat(gateway)
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "certificate verify failed" in message and "for 127.0.0.1" in message, message
    assert "certificate verify failed" in caplog.text and "for 127.0.0.1" in caplog.text
    assert "sk-upstream-secret-123" not in response.text + caplog.text


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed server certificate for 127.0.0.1, as ``openssl req -x509`` makes one."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpu-box.lan")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "self-signed.pem", directory / "self-signed.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


async def test_a_self_signed_local_server(nursery: trio.Nursery, tls_files: TLSFiles, tmp_path: Path) -> None:
    """The docs' example: trusted through ca_bundle = its own certificate; else the reason."""
    cert_file, key_file = _self_signed(tmp_path)
    tls = attrs.evolve(tls_files, cert_file=cert_file, key_file=key_file)
    url = await serve_upstream(nursery, FakeOpenAI(), tls)
    with trio.fail_after(20):
        trusted = await start(nursery, gateway_config(url, ca_bundle=str(cert_file)))
        assert (await chat(trusted, stream=True)).status_code == 200
        refused = await chat(await start(nursery, gateway_config(url)))
    assert refused.status_code == 502
    message = refused.json()["error"]["message"]
    assert "certificate verify failed: self-signed certificate for 127.0.0.1" in message, message


async def test_mutual_tls(nursery: trio.Nursery, tls_files: TLSFiles) -> None:
    url = await serve_upstream(nursery, FakeOpenAI(), tls_files, require_client_cert=True)
    with_cert = gateway_config(
        url,
        ca_bundle=str(tls_files.ca_file),
        client_cert=str(tls_files.client_cert_file),
        client_key=str(tls_files.client_key_file),
    )
    gateway = await start(nursery, with_cert)
    with trio.fail_after(20):
        response = await chat(gateway, stream=True)
        assert response.status_code == 200, response.text
        # Without the client certificate the server refuses us, and the error says TLS.
        refused = await chat(await start(nursery, gateway_config(url, ca_bundle=str(tls_files.ca_file))))
    assert refused.status_code == 502
    assert "certificate" in refused.json()["error"]["message"].lower(), refused.text


async def test_verify_false_connects_and_warns_loudly(
    nursery: trio.Nursery, tls_files: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    url = await serve_upstream(nursery, FakeOpenAI(), tls_files)
    gateway = await start(nursery, gateway_config(url, verify=False))
    warnings = [r for r in caplog.records if "TLS VERIFICATION IS OFF" in r.getMessage()]
    assert warnings and warnings[0].levelname == "WARNING"
    with trio.fail_after(20):
        assert (await chat(gateway)).status_code == 200


async def test_a_tls_failure_counts_against_health_and_fails_over(
    nursery: trio.Nursery, tls_files: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    good = FakeOpenAI()
    bad_url = await serve_upstream(nursery, FakeOpenAI(), tls_files)  # not trusted
    good_url = await serve_upstream(nursery, good, tls_files)
    raw = gateway_config(bad_url)
    raw["providers"]["good"] = {
        **raw["providers"]["up"],
        "base_url": good_url + "/v1",
        "ca_bundle": str(tls_files.ca_file),
    }
    raw["routing"]["default"] = ["up.m", "good.m"]
    # Two providers serve "m": a bare "m" would be model_ambiguous (issue 16); route it by alias.
    raw["aliases"] = {"m": "default"}
    raw["health"] = {"failure_threshold": 1, "cooldown": 60}
    gateway = await start(nursery, raw)
    with trio.fail_after(20):
        for _ in range(2):
            response = await chat(gateway, stream=True)
            assert response.status_code == 200, response.text
    assert len(good.requests) == 2
    health = {h.health_key: h for h in gateway._app.pipeline.router.health.snapshot()}
    bad = next(h for key, h in health.items() if key.startswith("up."))
    assert not bad.healthy and bad.consecutive_failures == 1 and bad.cooldown_remaining_s > 30
    # The second request did not try the cooling target again.
    tls_errors = [
        r
        for r in caplog.records
        if r.name == "routecodex_trio.providers" and "certificate verify failed" in r.getMessage()
    ]
    assert len(tls_errors) == 1


# ---------------------------------------------------------------------------------------------
# HTTP/2


@attrs.define(eq=False)
class H2Upstream:
    """A chat upstream for the HTTP/2 test: every stream is slow; the reset one is endless."""

    fake: FakeOpenAI = attrs.field(factory=FakeOpenAI)
    recording: Recording = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.recording = Recording(self.fake)


async def test_http2_multiplexes_and_a_cancelled_stream_is_reset_upstream(
    nursery: trio.Nursery, tls_files: TLSFiles
) -> None:
    upstream = H2Upstream()
    url = await serve_upstream(nursery, upstream.recording, tls_files)
    raw = gateway_config(url, http2=True, ca_bundle=str(tls_files.ca_file))
    raw["providers"]["up"]["models"] = ["m", "slow:20", "slow:400"]
    raw["timeouts"]["idle"] = 30
    gateway = await start(nursery, raw)
    results: dict[int, tuple[int, str]] = {}

    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, trust_env=False) as http:

        async def one(i: int) -> None:
            # 20 tokens at 50 ms each: the streams overlap for about a second.
            body = {**CHAT, "model": "up.slow:20", "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                text = "".join([part async for part in response.aiter_text()])
            results[i] = (response.status_code, text)

        async def cancelled() -> None:
            body = {**CHAT, "model": "up.slow:400", "stream": True}  # 20 s if nobody stops it
            with trio.CancelScope() as scope:
                async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    seen = 0
                    async for part in response.aiter_text():
                        seen += part.count("tok")
                        if seen >= 3:
                            scope.cancel()  # the client hangs up mid-stream

        with trio.fail_after(25):
            async with trio.open_nursery() as clients:
                for i in range(19):
                    clients.start_soon(one, i)
                clients.start_soon(cancelled)
            # The upstream saw the reset of that one stream (hypercorn turns RST_STREAM into
            # http.disconnect) long before it would have finished.
            while not any(r.aborted for r in upstream.fake.streams):
                await trio.sleep(0.05)
    aborted = [r for r in upstream.fake.streams if r.aborted]
    assert len(aborted) == 1 and aborted[0].model == "slow:400" and aborted[0].sent < 100
    assert sorted(results) == list(range(19))
    for status, text in results.values():
        assert status == 200
        assert text.count("tok") == 20 and text.rstrip().endswith("data: [DONE]"), text[-200:]
    # All 20 on one connection, over HTTP/2.
    assert len(upstream.recording.versions) == 20
    assert set(upstream.recording.versions) == {"2"}
    assert len(set(upstream.recording.clients)) == 1


async def test_http2_through_a_connect_tunnel(
    nursery: trio.Nursery, start_proxy: Any, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await start_proxy(auth=True)
    recording = Recording(FakeOpenAI())
    url = await serve_upstream(nursery, recording, tls_files)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    gateway = await start(nursery, gateway_config(url, http2=True, ca_bundle=str(tls_files.ca_file)))
    with trio.fail_after(20):
        # httpcore opens a tunnel per request until one is up (it cannot know before that the
        # upstream speaks HTTP/2): the first request alone, then five at once on its tunnel.
        assert (await chat(gateway)).status_code == 200
        async with trio.open_nursery() as clients:
            for _ in range(5):
                clients.start_soon(functools.partial(chat, gateway, stream=True))
    assert recording.versions == ["2"] * 6 and len(set(recording.clients)) == 1
    await proxy.settle()
    assert len(proxy.relayed(_port(url))) == 1, proxy.log  # one tunnel, six streams


async def test_http2_falls_back_to_http11_when_not_offered(
    nursery: trio.Nursery, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording = Recording(FakeOpenAI())
    url = await serve_upstream(nursery, recording, tls_files)
    gateway = await start(nursery, gateway_config(url, ca_bundle=str(tls_files.ca_file)))  # http2 off
    with trio.fail_after(20):
        assert (await chat(gateway, stream=True)).status_code == 200
    assert recording.versions == ["1.1"]


# ---------------------------------------------------------------------------------------------
# check-config


def test_check_config_reports_proxy_and_trust(
    tmp_path: Path, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    config = tmp_path / "routecodex.toml"
    config.write_text(
        f"""
[server]
listen = ["127.0.0.1:0"]
[network]
trust = "system"
[providers.cloud]
type = "openai-chat"
base_url = "https://api.example.com/v1"
models = ["m"]
[providers.corp]
type = "openai-chat"
base_url = "https://llm.internal.corp/v1"
ca_bundle = "{tls_files.ca_file}"
models = ["m"]
[providers.socks]
type = "anthropic-messages"
base_url = "https://api.anthropic.com"
proxy = "socks5://127.0.0.1:1080"
http2 = true
models = ["m"]
[providers.lab]
type = "openai-chat"
base_url = "https://10.0.0.5/v1"
verify = false
proxy = ""
models = ["m"]
[routing]
default = ["cloud.m"]
""",
        encoding="utf-8",
    )
    assert cli.main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    lines = {
        line.split(":", 1)[0].strip(): line
        for line in out.splitlines()[1:]
        if not line.strip().startswith("WARN")
    }
    assert "proxy http://***@127.0.0.1:3128 (from HTTPS_PROXY)" in lines["cloud"]
    assert "trust system trust store (truststore)" in lines["cloud"]
    assert "direct (NO_PROXY lists llm.internal.corp)" in lines["corp"]
    assert f"trust providers.corp.ca_bundle {tls_files.ca_file}" in lines["corp"]
    assert "proxy socks5://127.0.0.1:1080 (from providers.socks.proxy)" in lines["socks"]
    assert "http2 offered" in lines["socks"]
    assert "NOT VERIFIED" in lines["lab"]
    assert "WARNING: lab: TLS verification is OFF" in out
    assert PROXY_PASSWORD not in out

    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.ca_file))
    assert cli.main(["check-config", str(config)]) == 0
    assert f"trust SSL_CERT_FILE={tls_files.ca_file}" in capsys.readouterr().out


def test_check_config_fails_on_unloadable_tls_files(
    tmp_path: Path, tls_files: TLSFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "routecodex.toml"
    config.write_text(
        f"""
[server]
listen = ["127.0.0.1:0"]
[providers.corp]
type = "openai-chat"
base_url = "https://llm.internal.corp/v1"
client_cert = "{tls_files.client_cert_file}"
client_key = "{tls_files.key_file}"
models = ["m"]
[routing]
default = ["corp.m"]
""",
        encoding="utf-8",
    )
    assert cli.main(["check-config", str(config)]) == 1  # the server's key, not the client's
    assert "ERROR: corp: cannot load its TLS certificates or key" in capsys.readouterr().out


def test_the_default_trust_is_the_system_store() -> None:
    config = config_from_mapping(gateway_config("https://api.example.com"), environ={})
    assert config.network.trust == "system"
