"""Account credentials on the provider's network (issues 15 and 19): the token endpoint is
reached like the upstream -- the provider's proxy, trust store and client certificate.

pproxy and trustme rigs from tests/test_network.py; the fake OAuth server of
tests/oauth_server.py; ``routecodex login`` as a subprocess.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from routecodex_trio import config_from_mapping
from routecodex_trio.providers._tokens import read_token_file

from .fakes import start_app
from .oauth_server import FakeOAuth, TokenUpstream
from .test_network import (
    PROXY_PASSWORD,
    PROXY_USER,
    PROXY_VARIABLES,
    TLSFiles,
    _port,
    serve_upstream,
)
from .test_network import start_proxy as _start_proxy
from .test_network import tls_files as _tls_files
from .test_oauth import (
    gateway_config,
    login_config,
    run_login,
    start_pair,
    start_pkce_login,
    tokens_document,
    write_file,
)

if TYPE_CHECKING:
    from pathlib import Path

# ------------------------------------------------------------------ the provider's network
# The token endpoint is reached like the upstream (issue 15's settings): pproxy and trustme
# rigs from tests/test_network.py.


# The network tests' fixtures, for these tests too: pproxy, and a CA with its certificates.
start_proxy = _start_proxy
tls_files = _tls_files


@pytest.fixture
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or trust variable of the machine running the tests leaks into a case."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


async def ask_without_env(gateway: Any, model: str = "q.m1") -> httpx.Response:
    """A chat request to the gateway that ignores the proxy variables a test sets."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, trust_env=False) as http:
        return await http.post(
            "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
        )


def expired_token_file(path: Path, oauth: FakeOAuth) -> Path:
    return write_file(path, tokens_document(oauth.issue()) | {"expires_at": int(time.time()) - 1})


@pytest.mark.usefixtures("no_proxy_environment")
@pytest.mark.parametrize("source", ["provider-http", "provider-socks5", "HTTP_PROXY"])
async def test_a_refresh_goes_through_the_providers_proxy(
    nursery: trio.Nursery,
    tmp_path: Path,
    start_gateway: Any,
    start_proxy: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    source: str,
) -> None:
    caplog.set_level(logging.INFO, logger="routecodex_trio")
    oauth, oauth_url, upstream, upstream_url = await start_pair(nursery)
    path = expired_token_file(tmp_path / "q.json", oauth)
    # iFlow's second step (the account's API key) goes the same way as the refresh.
    raw = gateway_config(upstream_url, oauth_url, [path], userinfo_url=oauth_url + "/userinfo")
    if source == "HTTP_PROXY":
        proxy = await start_proxy()
        monkeypatch.setenv("HTTP_PROXY", proxy.url(credentials=False))
    else:
        proxy = await start_proxy(auth=True)
        raw["providers"]["q"]["proxy"] = proxy.url(source.removeprefix("provider-"))
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the provider's own wins over it
    gateway = await start_gateway(raw)
    with trio.fail_after(30):
        response = await ask_without_env(gateway)
    assert response.status_code == 200, response.text
    assert oauth.refreshes == 1
    written = json.loads(path.read_text())
    assert upstream.seen == [written["api_key"]]  # the user-info call answered too
    await proxy.settle()
    relayed = proxy.relayed(_port(oauth_url))
    assert relayed, proxy.log
    assert relayed[0].startswith("socks5 " if source.endswith("socks5") else "http "), proxy.log
    assert not proxy.refused(), proxy.log
    assert PROXY_PASSWORD not in caplog.text


@pytest.mark.usefixtures("no_proxy_environment")
async def test_login_device_flow_goes_through_the_providers_proxy(
    nursery: trio.Nursery, tmp_path: Path, start_proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await start_proxy(auth=True)
    oauth = FakeOAuth(device_script=["pending", "ok"])
    oauth_url = await start_app(nursery, oauth)
    config = login_config(tmp_path, oauth_url, provider={"proxy": proxy.url()})
    # The login would fail on this one: only the provider's own proxy reaches the server.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    done = await run_login(config)
    assert done.returncode == 0, done.stderr.decode()
    assert oauth.polls == ["pending", "ok"]
    assert oauth.errors == []
    assert read_token_file(tmp_path / "auth" / "q.json").access_token in oauth.access
    await proxy.settle()
    assert proxy.relayed(_port(oauth_url)), proxy.log
    assert not proxy.refused(), proxy.log
    assert PROXY_PASSWORD not in done.stdout.decode() + done.stderr.decode()


@pytest.mark.usefixtures("no_proxy_environment")
@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("socks5", "the proxy refused: "),
        # http:// endpoints are forwarded, not tunnelled: the 407 is an answer, not an error.
        # pproxy closes the connection right after it, at times before the 407 can be read
        # (the request body still unread on its side: a reset), hence the second reading;
        # test_a_407_from_an_http_proxy_is_named_as_the_proxys reads the 407 every time.
        ("http", "(the proxy refused the request: 407 Proxy Authentication Required|ReadError)"),
    ],
)
async def test_login_through_a_proxy_that_refuses_names_the_proxy_not_its_password(
    nursery: trio.Nursery, tmp_path: Path, start_proxy: Any, scheme: str, expected: str
) -> None:
    proxy = await start_proxy(auth=True)
    oauth = FakeOAuth(device_script=["ok"])
    oauth_url = await start_app(nursery, oauth)
    wrong = f"{scheme}://{PROXY_USER}:wrong-{PROXY_PASSWORD}@{proxy.address}"
    done = await run_login(login_config(tmp_path, oauth_url, provider={"proxy": wrong}))
    err = done.stderr.decode()
    assert done.returncode == 1
    where = re.escape(f"cannot reach {oauth_url}/device/code through proxy {proxy.address}: ")
    assert re.search(where + expected, err), err
    assert PROXY_PASSWORD not in err + done.stdout.decode()
    assert oauth.device_codes == {}


@pytest.mark.usefixtures("no_proxy_environment")
@pytest.mark.parametrize("bypass", ["provider proxy = ''", "NO_PROXY=127.0.0.0/8"])
async def test_a_refresh_goes_direct_when_the_provider_says_so(
    nursery: trio.Nursery,
    tmp_path: Path,
    start_gateway: Any,
    start_proxy: Any,
    monkeypatch: pytest.MonkeyPatch,
    bypass: str,
) -> None:
    proxy = await start_proxy()
    oauth, oauth_url, _upstream, upstream_url = await start_pair(nursery)
    path = expired_token_file(tmp_path / "q.json", oauth)
    raw = gateway_config(upstream_url, oauth_url, [path])
    monkeypatch.setenv("HTTP_PROXY", proxy.url(credentials=False))
    if bypass.startswith("provider"):
        raw["providers"]["q"]["proxy"] = ""
    else:  # a CIDR range: httpx's own NO_PROXY handling would not match it
        monkeypatch.setenv("NO_PROXY", "127.0.0.0/8")
    gateway = await start_gateway(raw)
    with trio.fail_after(30):
        response = await ask_without_env(gateway)
    assert response.status_code == 200, response.text
    assert oauth.refreshes == 1
    await proxy.settle()
    assert [line for line in proxy.log if "->" in line] == [], proxy.log


@pytest.mark.usefixtures("no_proxy_environment")
@pytest.mark.parametrize(
    "trust", ["ca_bundle", "ca_bundle through a CONNECT tunnel", "mutual TLS", "verify = false", "untrusted"]
)
async def test_a_refresh_over_tls_uses_the_providers_trust(
    nursery: trio.Nursery,
    tmp_path: Path,
    start_gateway: Any,
    start_proxy: Any,
    tls_files: TLSFiles,
    caplog: pytest.LogCaptureFixture,
    trust: str,
) -> None:
    oauth = FakeOAuth()
    oauth_url = await serve_upstream(nursery, oauth, tls_files, require_client_cert=trust == "mutual TLS")
    upstream = TokenUpstream(oauth)
    upstream_url = await start_app(nursery, upstream)
    path = expired_token_file(tmp_path / "q.json", oauth)
    raw = gateway_config(upstream_url, oauth_url, [path])
    settings: dict[str, Any] = {
        "ca_bundle": {"ca_bundle": str(tls_files.ca_file)},
        "ca_bundle through a CONNECT tunnel": {"ca_bundle": str(tls_files.ca_file)},
        "mutual TLS": {
            "ca_bundle": str(tls_files.ca_file),
            "client_cert": str(tls_files.client_cert_file),
            "client_key": str(tls_files.client_key_file),
        },
        "verify = false": {"verify": False},
        "untrusted": {},  # the system store does not know the test CA
    }
    raw["providers"]["q"] |= settings[trust]
    proxy = None
    if "tunnel" in trust:
        proxy = await start_proxy(auth=True)
        raw["providers"]["q"]["proxy"] = proxy.url()
    gateway = await start_gateway(raw)
    with trio.fail_after(30):
        response = await ask_without_env(gateway)
    if trust == "untrusted":
        assert response.status_code == 502, response.text
        message = response.json()["error"]["message"]
        assert (
            f"token refresh failed (cannot reach {oauth_url}/token: TLS: certificate verify failed" in message
        )
        assert "token refresh failed, will retry" in caplog.text
        assert oauth.refreshes == 0
        return
    assert response.status_code == 200, response.text
    assert oauth.refreshes == 1
    assert upstream.seen == [read_token_file(path).access_token]
    if proxy is not None:
        await proxy.settle()
        assert proxy.relayed(_port(oauth_url)), proxy.log


@pytest.mark.usefixtures("no_proxy_environment")
async def test_a_reload_moves_refreshes_to_the_new_network_settings_and_stop_closes_the_clients(
    nursery: trio.Nursery, tmp_path: Path, start_proxy: Any
) -> None:
    from routecodex_trio import serve

    first_proxy, second_proxy = await start_proxy(), await start_proxy()
    oauth, oauth_url, _upstream, upstream_url = await start_pair(nursery)
    q_path = expired_token_file(tmp_path / "q.json", oauth)
    raw = gateway_config(upstream_url, oauth_url, [q_path])
    raw["providers"]["q"]["proxy"] = first_proxy.url(credentials=False)
    async with trio.open_nursery() as gateway_nursery:
        gateway = await gateway_nursery.start(serve, config_from_mapping(raw, environ={}))
        with trio.fail_after(30):
            assert (await ask_without_env(gateway)).status_code == 200
        assert oauth.refreshes == 1
        # The same token file and auth table (the credential is kept) behind another proxy, and
        # a new provider that goes direct.
        raw["providers"]["q"]["proxy"] = second_proxy.url(credentials=False)
        raw["providers"]["r"] = copy.deepcopy(raw["providers"]["q"]) | {"proxy": ""}
        raw["providers"]["r"]["auth"]["token_files"] = [str(expired_token_file(tmp_path / "r.json", oauth))]
        credentials = gateway._credentials
        kept = credentials.for_provider("q")
        await gateway.reload(config_from_mapping(raw, environ={}))
        assert credentials.for_provider("q") == kept
        del oauth.access[read_token_file(q_path).access_token]  # q's next request: 401, refresh
        with trio.fail_after(30):
            assert (await ask_without_env(gateway)).status_code == 200
            assert (await ask_without_env(gateway, "r.m1")).status_code == 200
        assert oauth.refreshes == 3
        clients = list(credentials._clients._clients.values())  # type: ignore[union-attr]
        assert len(clients) == 3  # the first proxy's, the second's, direct
        assert not any(client.is_closed for client in clients)
        gateway.shutdown()
    assert all(client.is_closed for client in clients)
    await first_proxy.settle()
    assert len(first_proxy.relayed(_port(oauth_url))) == 1, first_proxy.log
    assert second_proxy.relayed(_port(oauth_url)), second_proxy.log


@pytest.mark.usefixtures("no_proxy_environment")
def test_check_config_names_the_token_endpoints_proxy_when_it_is_not_the_upstreams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from routecodex_trio import cli

    monkeypatch.setenv("HTTPS_PROXY", f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:3128")
    files = {
        name: write_file(tmp_path / f"{name}.json", tokens_document(FakeOAuth().issue())) for name in "ab"
    }
    config = tmp_path / "routecodex.toml"
    config.write_text(
        f"""
[server]
listen = ["127.0.0.1:0"]
[providers.lan]
type = "openai-chat"
base_url = "http://127.0.0.1:8000/v1"
models = ["m"]
[providers.lan.auth]
flow = "device"
client_id = "c"
device_url = "https://auth.example.com/device"
token_url = "https://auth.example.com/token"
token_file = "{files["a"]}"
[providers.cloud]
type = "openai-chat"
base_url = "https://api.example.com/v1"
models = ["m"]
[providers.cloud.auth]
preset = "qwen"
token_file = "{files["b"]}"
[routing]
default = ["lan.m"]
""",
        encoding="utf-8",
    )
    assert cli.main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "  lan: proxy direct (no proxy variable set); trust none (plain http)" in out
    assert (
        "  lan token endpoint: proxy http://***@127.0.0.1:3128 (from HTTPS_PROXY); "
        "trust system trust store (truststore)"
    ) in out
    assert "cloud: proxy http://***@127.0.0.1:3128 (from HTTPS_PROXY)" in out
    assert "cloud token endpoint" not in out  # the same as its upstream's: one line says both
    assert PROXY_PASSWORD not in out


@pytest.mark.usefixtures("no_proxy_environment")
async def test_login_pkce_code_exchange_goes_through_the_providers_proxy(
    nursery: trio.Nursery, tmp_path: Path, start_proxy: Any
) -> None:
    proxy = await start_proxy(auth=True)
    oauth = FakeOAuth()
    oauth_url = await start_app(nursery, oauth)
    config = login_config(
        tmp_path,
        oauth_url,
        provider={"proxy": proxy.url("socks5")},
        flow="pkce",
        authorize_url=oauth_url + "/a",
    )
    process, query = await start_pkce_login(config, "/a?")
    code = oauth.approve(query["code_challenge"], query["redirect_uri"])
    async with httpx.AsyncClient(trust_env=False) as browser:  # the browser: not through the proxy
        with trio.fail_after(30):
            answer = await browser.get(query["redirect_uri"], params={"code": code, "state": query["state"]})
    assert answer.status_code == 200
    with trio.fail_after(30):
        assert await process.wait() == 0, (await process.stderr.receive_some(65536)).decode()
    assert read_token_file(tmp_path / "auth" / "q.json").access_token in oauth.access
    assert oauth.errors == []
    await proxy.settle()
    relayed = proxy.relayed(_port(oauth_url))
    assert relayed and relayed[0].startswith("socks5 "), proxy.log


async def _answer_407(stream: trio.SocketStream) -> None:
    """A forwarding proxy that refuses every request: it reads the whole request first (so the
    client always gets to read the answer) and answers 407."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive_some(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += await stream.receive_some(65536)
    await stream.send_all(
        b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=x\r\n"
        b"content-length: 0\r\n\r\n"
    )
    await stream.aclose()


@pytest.mark.usefixtures("no_proxy_environment")
async def test_a_407_from_an_http_proxy_is_named_as_the_proxys(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _answer_407, 0, host="127.0.0.1"))
    proxy_port = listeners[0].socket.getsockname()[1]
    oauth, oauth_url, _upstream, upstream_url = await start_pair(nursery)
    path = expired_token_file(tmp_path / "q.json", oauth)
    raw = gateway_config(upstream_url, oauth_url, [path])
    raw["providers"]["q"]["proxy"] = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy_port}"
    gateway = await start_gateway(raw)
    with trio.fail_after(30):
        response = await ask_without_env(gateway)
    assert response.status_code == 502, response.text
    message = response.json()["error"]["message"]
    assert (
        f"token refresh failed (cannot reach {oauth_url}/token through proxy 127.0.0.1:{proxy_port}: "
        "the proxy refused the request: 407 Proxy Authentication Required)"
    ) in message
    assert oauth.refreshes == 0
    assert gateway._credentials.for_provider("q")[0].problem is None  # not a dead login: retried later
    assert PROXY_PASSWORD not in response.text + caplog.text
