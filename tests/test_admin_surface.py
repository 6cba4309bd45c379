"""Who may call the admin endpoints (issue 13): ``/admin/reload`` and ``/engines/*/stop``.

``[server] admin_keys`` opens them to its keys; client keys (``api_keys``) get 403; with no
admin keys they answer only to loopback callers, and only while no ``api_keys`` are set.
Every gateway here is a real one on a real socket; the "other host" is this machine's own
non-loopback address, so the gateway sees a caller that is not 127.0.0.1.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import trio

from routecodex_trio import ConfigError, config_from_mapping, load_config, serve

if TYPE_CHECKING:
    from pathlib import Path

    from routecodex_trio import Gateway

CLIENT_KEY: Final = "client-key-3a9d51"
ADMIN_KEY: Final = "admin-key-7b20ce44"
ADMIN_PATHS: Final = ("/admin/reload", "/engines/local/stop")


def _write(path: Path, server: str) -> None:
    path.write_text(
        f"[server]\n{server}\n"
        '[providers.mock]\ntype = "mock"\nmodels = ["m1"]\n'
        '[routing]\ndefault = ["mock.m1"]\n'
    )
    path.chmod(0o600)


async def _start(nursery: trio.Nursery, tmp_path: Path, server: str) -> Gateway:
    path = tmp_path / "gw.toml"
    _write(path, server)
    gateway: Gateway = await nursery.start(serve, load_config(path))
    return gateway


async def _post_all(url: str, headers: dict[str, str]) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        with trio.fail_after(10):
            return [(await http.post(path, headers=headers)).status_code for path in ADMIN_PATHS]


# Authorized: a reload answers 200, an engine stop on a gateway without engines 404.
AUTHORIZED: Final = [200, 404]


async def test_admin_keys_open_admin_paths_and_client_keys_get_403(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Regression: any client key could call /admin/reload and /engines/*/stop."""
    gateway = await _start(
        nursery,
        tmp_path,
        f'listen = ["127.0.0.1:0"]\napi_keys = ["{CLIENT_KEY}"]\nadmin_keys = ["{ADMIN_KEY}"]',
    )
    assert await _post_all(gateway.url, {"x-api-key": CLIENT_KEY}) == [403, 403]
    assert await _post_all(gateway.url, {"authorization": f"Bearer {CLIENT_KEY}"}) == [403, 403]
    assert await _post_all(gateway.url, {}) == [401, 401]
    assert await _post_all(gateway.url, {"x-api-key": "not-a-key-at-all"}) == [401, 401]
    assert await _post_all(gateway.url, {"x-api-key": ADMIN_KEY}) == AUTHORIZED
    assert await _post_all(gateway.url, {"authorization": f"Bearer {ADMIN_KEY}"}) == AUTHORIZED
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        with trio.fail_after(10):
            forbidden = await http.post("/admin/reload", headers={"x-api-key": CLIENT_KEY})
            chat = {"model": "mock.m1", "messages": [{"role": "user", "content": "hi"}]}
            as_client = await http.post("/v1/chat/completions", json=chat, headers={"x-api-key": CLIENT_KEY})
            as_admin = await http.post("/v1/chat/completions", json=chat, headers={"x-api-key": ADMIN_KEY})
    assert forbidden.json()["error"]["code"] == "forbidden"
    assert "admin_keys" in forbidden.json()["error"]["message"]
    # An admin key is also a client key: the operator can try the gateway with it.
    assert as_client.status_code == as_admin.status_code == 200


async def test_client_keys_without_admin_keys_close_admin_paths(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Regression: with api_keys and no admin_keys, every client key could reload the gateway."""
    gateway = await _start(nursery, tmp_path, f'listen = ["127.0.0.1:0"]\napi_keys = ["{CLIENT_KEY}"]')
    assert await _post_all(gateway.url, {"x-api-key": CLIENT_KEY}) == [403, 403]
    assert await _post_all(gateway.url, {}) == [403, 403]


async def test_no_keys_means_loopback_only(nursery: trio.Nursery, tmp_path: Path) -> None:
    gateway = await _start(nursery, tmp_path, 'listen = ["0.0.0.0:0"]\nallow_unauthenticated = true')
    port = gateway.url.rsplit(":", 1)[1]
    assert await _post_all(f"http://127.0.0.1:{port}", {}) == AUTHORIZED
    address = _non_loopback_address()
    assert await _post_all(f"http://{address}:{port}", {}) == [403, 403]
    # The same gateway with admin keys: the other host gets in with one.
    gateway = await _start(
        nursery,
        tmp_path,
        f'listen = ["0.0.0.0:0"]\nallow_unauthenticated = true\nadmin_keys = ["{ADMIN_KEY}"]',
    )
    port = gateway.url.rsplit(":", 1)[1]
    assert await _post_all(f"http://{address}:{port}", {}) == [401, 401]
    assert await _post_all(f"http://{address}:{port}", {"x-api-key": ADMIN_KEY}) == AUTHORIZED


def _non_loopback_address() -> str:
    """This machine's address on its default route (no packet is sent: UDP connect only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError as exc:
            pytest.fail(f"this test needs a non-loopback IPv4 address on this machine: {exc}")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.fail(f"this test needs a non-loopback IPv4 address on this machine, found {address}")
    return address


@pytest.mark.parametrize("key", ["short", "has space in it", "line\nbreak-key"])
def test_admin_keys_follow_the_api_keys_rules(key: str) -> None:
    raw: dict[str, Any] = {
        "server": {"listen": ["127.0.0.1:0"], "admin_keys": [key]},
        "providers": {"mock": {"type": "mock", "models": ["m1"]}},
        "routing": {"default": ["mock.m1"]},
    }
    with pytest.raises(ConfigError, match=r"server\.admin_keys\[0\]"):
        config_from_mapping(raw, environ={})
