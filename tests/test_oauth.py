"""Account credentials (issue 19): OAuth config, token files, ``routecodex login``, the gateway.

A fake OAuth server and an upstream that takes only its access tokens run on loopback
(``tests/oauth_server.py``); ``routecodex login`` runs as a subprocess; the gateway runs
in-process and is called with the official OpenAI SDK.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest
import trio

from routecodex_trio import ConfigError, config_from_mapping
from routecodex_trio.config import load_config
from routecodex_trio.providers._tokens import read_token_file, write_token_file

from .conftest import openai_client
from .fakes import start_app
from .oauth_server import FakeOAuth, TokenUpstream, s256


def tokens_document(answer: dict[str, Any], shape: str = "ours") -> dict[str, Any]:
    expires_at = time.time() + float(answer["expires_in"])
    doc: dict[str, Any] = {
        "access_token": answer["access_token"],
        "refresh_token": answer["refresh_token"],
        "token_type": "Bearer",
    }
    if shape == "qwen":  # Qwen Code's oauth_creds.json
        doc |= {"resource_url": "portal.qwen.ai", "expiry_date": int(expires_at * 1000)}
    else:
        doc["expires_at"] = int(expires_at)
    return doc


def write_file(path: Path, document: Any, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    path.chmod(mode)
    return path


def gateway_config(upstream: str, oauth: str, files: list[Path], **auth: Any) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 5},
        "providers": {
            "q": {
                "type": "openai-chat",
                "base_url": upstream + "/v1",
                "models": ["m1"],
                "auth": {
                    "flow": "device",
                    "client_id": "test-client",
                    "token_url": oauth + "/token",
                    "device_url": oauth + "/device/code",
                    "token_files": [str(f) for f in files],
                    **auth,
                },
            }
        },
        "routing": {"default": ["q.m1"]},
    }


async def start_pair(
    nursery: trio.Nursery, **oauth_options: Any
) -> tuple[FakeOAuth, str, TokenUpstream, str]:
    oauth = FakeOAuth(**oauth_options)
    oauth_url = await start_app(nursery, oauth)
    upstream = TokenUpstream(oauth)
    upstream_url = await start_app(nursery, upstream)
    return oauth, oauth_url, upstream, upstream_url


async def ask(client: openai.AsyncOpenAI) -> str:
    answer = await client.chat.completions.create(model="q.m1", messages=[{"role": "user", "content": "hi"}])
    return answer.choices[0].message.content or ""


# ------------------------------------------------------------------------------------ config


def test_qwen_preset_fills_the_published_values() -> None:
    raw = gateway_config("http://127.0.0.1:1", "http://127.0.0.1:2", [])
    raw["providers"]["q"]["auth"] = {"preset": "qwen", "refresh_margin": 1}
    auth = config_from_mapping(raw, environ={}).providers["q"].auth
    assert auth is not None
    assert auth.flow == "device"
    assert auth.client_id == "f0304373b74a44d2b584a3fb70ca9e56"
    assert auth.device_url == "https://chat.qwen.ai/api/v1/oauth2/device/code"
    assert auth.token_url == "https://chat.qwen.ai/api/v1/oauth2/token"
    assert auth.scopes == ("openid", "profile", "email", "model.completion")
    assert auth.refresh_margin == 1
    assert auth.paths("q") == (Path("~/.routecodex/auth/q.json").expanduser(),)


def test_auth_problems_are_named() -> None:
    raw = gateway_config("http://127.0.0.1:1", "http://127.0.0.1:2", [])
    raw["providers"]["q"]["api_key"] = "sk-x"
    raw["providers"]["q"]["auth"] = {"flow": "pkce", "client_id": "c", "token_url": "ftp://x"}
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw, environ={})
    problems = "\n".join(caught.value.problems)
    assert "providers.q: api_key/api_keys and an auth table are two kinds of keys" in problems
    assert "providers.q.auth.token_url: 'ftp://x' is not an http(s) URL" in problems
    assert "providers.q.auth.authorize_url: required" in problems
    raw["providers"]["q"].pop("api_key")
    raw["providers"]["q"]["auth"] = {"preset": "qwen", "refresh_margin": 0.5}
    with pytest.raises(ConfigError, match=r"refresh_margin"):
        config_from_mapping(raw, environ={})


def test_routecodex_oauth_maps_onto_a_preset(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "httpserver": {"host": "127.0.0.1", "port": 5520},
                "virtualrouter": {
                    "providers": {
                        "qwen": {
                            "type": "qwen",
                            "baseURL": "https://portal.qwen.ai/v1",
                            "auth": {"type": "qwen-oauth", "tokenFile": "~/.routecodex/auth/qwen-oauth.json"},
                            "models": {"qwen3-coder-plus": {}},
                        },
                        "iflow": {
                            "type": "openai",
                            "baseURL": "https://apis.iflow.cn/v1",
                            "auth": {"type": "iflow-oauth", "tokenFile": ["/a.json", "/b.json"]},
                            "models": {"qwen3-max": {}},
                        },
                    },
                    "routing": {"default": ["qwen.qwen3-coder-plus", "iflow.qwen3-max"]},
                },
            }
        )
    )
    config = load_config(path, environ={})
    qwen, iflow = config.providers["qwen"], config.providers["iflow"]
    assert qwen.auth is not None
    assert qwen.auth.preset == "qwen"
    assert qwen.auth.paths("qwen") == (Path("~/.routecodex/auth/qwen-oauth.json").expanduser(),)
    assert iflow.auth is not None
    assert iflow.auth.flow == "pkce"
    assert iflow.auth.authorize_url == "https://iflow.cn/oauth"
    assert iflow.key_count() == 2


# ------------------------------------------------------------------------------- token files


def test_a_qwen_code_file_is_written_back_in_its_own_shape(tmp_path: Path) -> None:
    path = write_file(
        tmp_path / "oauth_creds.json",
        {
            "access_token": "old",
            "refresh_token": "rt",
            "token_type": "Bearer",
            "resource_url": "portal.qwen.ai",
            "expiry_date": int((time.time() - 5) * 1000),
        },
    )
    tokens = read_token_file(path)
    assert tokens.expires_at is not None
    assert tokens.expires_at < time.time()
    renewed = tokens.renewed("new", None, 3600, {"token_type": "Bearer"})
    folder = tmp_path / "fresh"
    write_token_file(folder / "creds.json", renewed)
    written = json.loads((folder / "creds.json").read_text())
    assert set(written) == {"access_token", "refresh_token", "token_type", "resource_url", "expiry_date"}
    assert written["refresh_token"] == "rt"  # no rotation: the old one stays
    assert abs(written["expiry_date"] / 1000 - (time.time() + 3600)) < 60
    assert stat.S_IMODE((folder / "creds.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert "old" not in repr(tokens)
    assert "rt" not in repr(tokens)


# --------------------------------------------------------------------------- routecodex login


def login_config(
    tmp_path: Path, oauth_url: str, *, provider: dict[str, Any] | None = None, **auth: Any
) -> Path:
    raw = gateway_config("http://127.0.0.1:9", oauth_url, [tmp_path / "auth" / "q.json"], **auth)
    lines = [
        "[server]",
        'listen = ["127.0.0.1:0"]',
        "[providers.q]",
        'type = "openai-chat"',
        f'base_url = "{raw["providers"]["q"]["base_url"]}"',
        'models = ["m1"]',
        *(f"{key} = {json.dumps(value)}" for key, value in (provider or {}).items()),
        "[providers.q.auth]",
    ]
    for key, value in raw["providers"]["q"]["auth"].items():
        lines.append(f"{key} = {json.dumps(value)}")
    lines += ["[routing]", 'default = ["q.m1"]']
    path = tmp_path / "conf.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_login(config: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", "routecodex_trio", "login", "q", "--config", str(config), *extra],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_login_device_flow_polls_through_pending_and_slow_down(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    oauth = FakeOAuth(device_script=["pending", "slow_down", "pending", "ok"])
    config = login_config(tmp_path, await start_app(nursery, oauth))
    done = await run_login(config)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "https://auth.example/device?user_code=WXYZ-1234" in out
    assert "WXYZ-1234" in out
    assert oauth.polls == ["pending", "slow_down", "pending", "ok"]
    assert oauth.errors == []  # client id, S256 challenge and verifier all checked
    path = tmp_path / "auth" / "q.json"
    tokens = read_token_file(path)
    assert tokens.access_token in oauth.access
    assert tokens.refresh_token in oauth.refresh_tokens
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert tokens.access_token not in out + done.stderr.decode()


@pytest.mark.parametrize(("outcome", "message"), [("denied", "denied"), ("expired", "expired")])
async def test_login_device_flow_denied_or_expired(
    nursery: trio.Nursery, tmp_path: Path, outcome: str, message: str
) -> None:
    oauth = FakeOAuth(device_script=["pending", outcome])
    config = login_config(tmp_path, await start_app(nursery, oauth))
    done = await run_login(config)
    assert done.returncode == 1
    assert message in done.stderr.decode()
    assert not (tmp_path / "auth" / "q.json").exists()


async def start_pkce_login(config: Path, marker: str = "/authorize?") -> tuple[trio.Process, dict[str, str]]:
    """``routecodex login q`` with the PKCE flow as a subprocess, and the query of the
    authorize URL it printed for the user's browser."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "routecodex_trio", "login", "q", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    output = b""
    with trio.fail_after(30):
        while marker.encode() not in output or not output.endswith(b"\n"):
            output += await process.stdout.receive_some(4096)
    url = next(line.strip() for line in output.decode().splitlines() if marker in line)
    return process, {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_login_pkce_checks_state_and_verifier(nursery: trio.Nursery, tmp_path: Path) -> None:
    oauth = FakeOAuth()
    oauth_url = await start_app(nursery, oauth)
    config = login_config(
        tmp_path, oauth_url, flow="pkce", authorize_url=oauth_url + "/authorize", scopes=["read", "write"]
    )
    process, query = await start_pkce_login(config)
    assert query["response_type"] == "code"
    assert query["client_id"] == "test-client"
    assert query["code_challenge_method"] == "S256"
    assert query["scope"] == "read write"
    redirect = query["redirect_uri"]
    assert redirect.startswith("http://127.0.0.1:")
    code = oauth.approve(query["code_challenge"], redirect)
    async with httpx.AsyncClient() as browser:
        with trio.fail_after(30):
            forged = await browser.get(redirect, params={"code": code, "state": "not-the-state"})
            assert forged.status_code == 400
            real = await browser.get(redirect, params={"code": code, "state": query["state"]})
            assert real.status_code == 200
    with trio.fail_after(30):
        assert await process.wait() == 0, (await process.stderr.receive_some(65536)).decode()
    tokens = read_token_file(tmp_path / "auth" / "q.json")
    assert tokens.access_token in oauth.access
    assert oauth.errors == []  # the verifier matched the challenge


async def test_login_pkce_with_a_wrong_verifier_is_refused(nursery: trio.Nursery, tmp_path: Path) -> None:
    oauth = FakeOAuth()
    oauth_url = await start_app(nursery, oauth)
    config = login_config(tmp_path, oauth_url, flow="pkce", authorize_url=oauth_url + "/authorize")
    process, query = await start_pkce_login(config)
    code = oauth.approve(s256("some other verifier"), query["redirect_uri"])
    async with httpx.AsyncClient() as browser:
        with trio.fail_after(30):
            await browser.get(query["redirect_uri"], params={"code": code, "state": query["state"]})
    with trio.fail_after(30):
        assert await process.wait() == 1
    assert "bad verifier" in (await process.stderr.receive_some(65536)).decode()
    assert oauth.errors == ["PKCE verifier does not match"]


# ------------------------------------------------------------------------------- the gateway


async def test_a_token_expiring_mid_traffic_is_refreshed_once(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any
) -> None:
    oauth, oauth_url, upstream, upstream_url = await start_pair(nursery, refresh_delay_s=0.3)
    first = oauth.issue(expires_in=3)
    path = write_file(tmp_path / "q.json", tokens_document(first))
    gateway = await start_gateway(gateway_config(upstream_url, oauth_url, [path], refresh_margin=1))
    client = openai_client(gateway)
    answers: list[str] = []

    async def worker() -> None:
        stop = time.time() + 4.0
        while time.time() < stop:
            answers.append(await ask(client))

    with trio.fail_after(60):
        async with trio.open_nursery() as workers:
            for _ in range(50):
                workers.start_soon(worker)
    assert oauth.refreshes == 1
    assert answers
    assert set(answers) == {"ok"}
    assert upstream.unauthorized == 0
    assert first["access_token"] in upstream.seen
    renewed = read_token_file(path)
    assert renewed.access_token != first["access_token"]
    assert renewed.access_token in upstream.seen  # the traffic moved to the new token
    assert renewed.refresh_token in oauth.refresh_tokens  # rotated, and written back
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_fifty_requests_on_an_expired_token_wait_for_one_refresh(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any
) -> None:
    oauth, oauth_url, upstream, upstream_url = await start_pair(nursery, refresh_delay_s=0.5)
    answer = oauth.issue()
    document = tokens_document(answer, "qwen") | {"expiry_date": int((time.time() - 60) * 1000)}
    path = write_file(tmp_path / "oauth_creds.json", document)
    gateway = await start_gateway(gateway_config(upstream_url, oauth_url, [path], refresh_margin=1))
    client = openai_client(gateway)
    answers: list[str] = []

    async def one() -> None:
        answers.append(await ask(client))

    with trio.fail_after(60):
        async with trio.open_nursery() as requests:
            for _ in range(50):
                requests.start_soon(one)
    assert answers == ["ok"] * 50
    assert oauth.refreshes == 1
    assert upstream.unauthorized == 0
    assert set(upstream.seen) == {read_token_file(path).access_token}  # all 50 on the new token
    written = json.loads(path.read_text())
    assert set(written) == {"access_token", "refresh_token", "token_type", "resource_url", "expiry_date"}
    assert written["expiry_date"] > time.time() * 1000  # milliseconds, as Qwen Code writes them


async def test_a_401_triggers_exactly_one_refresh_and_the_request_succeeds(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    oauth, oauth_url, upstream, upstream_url = await start_pair(nursery, refresh_delay_s=0.2)
    answer = oauth.issue()
    path = write_file(tmp_path / "q.json", tokens_document(answer))
    del oauth.access[answer["access_token"]]  # the upstream no longer takes it; the file says valid
    gateway = await start_gateway(gateway_config(upstream_url, oauth_url, [path]))
    client = openai_client(gateway)
    answers: list[str] = []

    async def one() -> None:
        answers.append(await ask(client))

    with trio.fail_after(30):
        async with trio.open_nursery() as requests:
            for _ in range(5):
                requests.start_soon(one)
    assert answers == ["ok"] * 5
    assert oauth.refreshes == 1
    assert upstream.unauthorized == 5
    assert read_token_file(path).access_token in upstream.seen
    assert answer["access_token"] not in caplog.text


async def test_a_revoked_token_fails_over_to_the_next_key(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="routecodex_trio")
    oauth, oauth_url, upstream, upstream_url = await start_pair(nursery)
    dead, alive = oauth.issue(), oauth.issue()
    del oauth.access[dead["access_token"]]
    oauth.revoked.add(dead["refresh_token"])
    files = [
        write_file(tmp_path / "a.json", tokens_document(dead)),
        write_file(tmp_path / "b.json", tokens_document(alive)),
    ]
    gateway = await start_gateway(gateway_config(upstream_url, oauth_url, files))
    client = openai_client(gateway)
    with trio.fail_after(30):
        for _ in range(4):
            assert await ask(client) == "ok"
    assert oauth.refreshes == 1  # key 0 was refused once, then cooled: not asked again
    assert set(upstream.seen) == {alive["access_token"]}
    assert "run `routecodex login q`" in caplog.text
    for secret in (*dead.values(), *alive.values()):
        if isinstance(secret, str) and secret.startswith(("at-", "rt-")):
            assert secret not in caplog.text
    async with httpx.AsyncClient() as http:
        health = (await http.get(gateway.url + "/health")).json()
    assert health["login_required"] == [
        {"provider": "q", "key": 0, "reason": "refresh refused (invalid_grant): log in again",
         "command": "routecodex login q"}
    ]  # fmt: skip


async def test_bad_token_files_cool_their_keys_and_the_gateway_starts(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any
) -> None:
    oauth, oauth_url, upstream, upstream_url = await start_pair(nursery)
    good = oauth.issue()
    files = [
        tmp_path / "missing.json",
        write_file(tmp_path / "norefresh.json", {"access_token": "at-x", "expires_at": 9999999999}),
        write_file(tmp_path / "broken.json", '{"access_token": '),
        write_file(tmp_path / "good.json", tokens_document(good), mode=0o644),
    ]
    raw = gateway_config(upstream_url, oauth_url, files)
    config_path = tmp_path / "conf.json"
    config_path.write_text(json.dumps(raw))
    with trio.fail_after(30):
        check = await trio.run_process(
            [sys.executable, "-m", "routecodex_trio", "check-config", str(config_path)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = check.stdout.decode()
    assert check.returncode == 1
    assert f"ERROR: q: token file {files[0]}: no such token file" in out
    assert f"ERROR: q: token file {files[1]}: no refresh token" in out
    assert f"ERROR: q: token file {files[2]}: malformed JSON" in out
    assert f"WARNING: q: token file {files[3]} is readable by group and others (mode 0644)" in out

    gateway = await start_gateway(raw)
    client = openai_client(gateway)
    with trio.fail_after(30):
        for _ in range(3):
            assert await ask(client) == "ok"
    assert upstream.seen == [good["access_token"]] * 3
    async with httpx.AsyncClient() as http:
        health = (await http.get(gateway.url + "/health")).json()
    assert [(item["key"], item["reason"].split(" (")[0]) for item in health["login_required"]] == [
        (0, "no such token file"),
        (1, "no refresh token"),
        (2, "malformed JSON"),
    ]
    assert str(tmp_path) not in json.dumps(health)  # /health names no paths


async def test_a_login_while_serving_brings_the_key_back(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any
) -> None:
    oauth, oauth_url, upstream, upstream_url = await start_pair(nursery)
    path = tmp_path / "q.json"
    raw = gateway_config(upstream_url, oauth_url, [path])
    raw["health"] = {"fatal_cooldown": 0.5}
    gateway = await start_gateway(raw)
    client = openai_client(gateway)
    with pytest.raises(openai.AuthenticationError, match="routecodex login q"):
        await ask(client)
    answer = oauth.issue()
    write_file(path, tokens_document(answer))
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    await trio.sleep(0.6)  # the fatal cooldown passes
    with trio.fail_after(30):
        assert await ask(client) == "ok"
    assert upstream.seen == [answer["access_token"]]


async def test_a_reload_keeps_the_refreshers_whose_definition_did_not_change(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any
) -> None:
    oauth, oauth_url, _upstream, upstream_url = await start_pair(nursery)
    files = [write_file(tmp_path / f"{name}.json", tokens_document(oauth.issue())) for name in "ab"]
    raw = gateway_config(upstream_url, oauth_url, files)
    gateway = await start_gateway(raw)
    credentials = gateway._credentials
    before = credentials.for_provider("q")
    raw["providers"]["q"]["models"] = ["m1", "m2"]  # the token files and auth table are unchanged
    await gateway.reload(config_from_mapping(raw, environ={}))
    assert credentials.for_provider("q") == before
    raw["providers"]["q"]["auth"]["token_files"] = [str(files[0]), str(tmp_path / "c.json")]
    await gateway.reload(config_from_mapping(raw, environ={}))
    kept, new = credentials.for_provider("q")
    assert kept is before[0]
    assert kept.tokens is not None
    assert kept.tokens.access_token not in repr(credentials)  # no token in any repr
    assert new is not before[1]
    assert new.problem is not None
    assert new.problem.startswith("no such token file")
    raw["providers"]["q"]["auth"]["refresh_margin"] = 60
    await gateway.reload(config_from_mapping(raw, environ={}))
    assert all(c not in before for c in credentials.for_provider("q"))
    client = openai_client(gateway)
    with trio.fail_after(30):
        assert await ask(client) == "ok"


async def test_an_iflow_style_login_sends_the_account_api_key(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any
) -> None:
    oauth, oauth_url, upstream, upstream_url = await start_pair(nursery)
    answer = oauth.issue()
    document = tokens_document(answer) | {"expires_at": int(time.time()) - 1, "type": "iflow"}
    path = write_file(tmp_path / "iflow-oauth.json", document)
    raw = gateway_config(upstream_url, oauth_url, [path], userinfo_url=oauth_url + "/userinfo")
    gateway = await start_gateway(raw)
    with trio.fail_after(30):
        assert await ask(openai_client(gateway)) == "ok"
    written = json.loads(path.read_text())
    assert written["api_key"].startswith("sk-")
    assert written["type"] == "iflow"  # fields the gateway does not know are kept
    assert upstream.seen == [written["api_key"]]  # the API key, not the access token
    assert oauth.refreshes == 1


async def test_two_gateways_sharing_a_token_file_refresh_it_once(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any
) -> None:
    """Workers share token files; with rotating refresh tokens a second refresh would fail."""
    oauth, oauth_url, upstream, upstream_url = await start_pair(nursery, refresh_delay_s=0.3)
    answer = oauth.issue()
    path = write_file(tmp_path / "q.json", tokens_document(answer) | {"expires_at": int(time.time()) - 1})
    raw = gateway_config(upstream_url, oauth_url, [path])
    clients = [openai_client(await start_gateway(raw)) for _ in range(2)]
    answers: list[str] = []

    async def one(client: openai.AsyncOpenAI) -> None:
        answers.append(await ask(client))

    with trio.fail_after(30):
        async with trio.open_nursery() as requests:
            for i in range(20):
                requests.start_soon(one, clients[i % 2])
    assert answers == ["ok"] * 20
    assert oauth.refreshes == 1
    assert set(upstream.seen) == {read_token_file(path).access_token}


async def test_the_refresher_renews_ahead_of_expiry_without_traffic(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any
) -> None:
    oauth, oauth_url, upstream, upstream_url = await start_pair(nursery, expires_in=3600)
    first = oauth.issue(expires_in=8)
    path = write_file(tmp_path / "q.json", tokens_document(first))
    # Due at max(expiry - margin, half its life): about 4 s in, 4 s before the expiry.
    await start_gateway(gateway_config(upstream_url, oauth_url, [path], refresh_margin=5))
    # The server counts the refresh before the gateway has written the file: wait for both.
    with trio.fail_after(20):
        while oauth.refreshes == 0 or read_token_file(path).access_token == first["access_token"]:
            await trio.sleep(0.1)
    renewed = read_token_file(path)
    assert renewed.expires_at is not None
    assert renewed.expires_at > time.time() + 3000
    assert first["access_token"] in oauth.access  # refreshed before the old one expired: not needed yet
    assert time.time() < oauth.access[first["access_token"]]
    await trio.sleep(0.5)
    assert oauth.refreshes == 1  # and not again: the new token lives an hour
    assert upstream.seen == []


async def test_tokens_quoted_by_an_upstream_never_reach_the_client(
    nursery: trio.Nursery, tmp_path: Path, start_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    oauth, oauth_url, upstream, upstream_url = await start_pair(nursery)
    upstream.reject_all = True
    answer = oauth.issue()
    path = write_file(tmp_path / "q.json", tokens_document(answer))
    gateway = await start_gateway(gateway_config(upstream_url, oauth_url, [path]))
    with pytest.raises(openai.AuthenticationError) as caught, trio.fail_after(30):
        await ask(openai_client(gateway))
    renewed = read_token_file(path)
    assert oauth.refreshes == 1  # the 401 refreshed once; the second 401 is the answer
    assert upstream.unauthorized == 2
    text = str(caught.value) + caplog.text
    assert "invalid access token ***" in str(caught.value)
    for token in (
        answer["access_token"],
        answer["refresh_token"],
        renewed.access_token,
        renewed.refresh_token,
    ):
        assert token
        assert token not in text
