"""Issue 18 end to end: named keys through a running gateway, with the official SDKs.

Headers on answers and refusals, the 429 / budget shapes in each client protocol, the SDKs
honouring Retry-After, allow-lists, settlement after streams and hang-ups, and the usage
records (GET /admin/usage and ``routecodex usage``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import openai
import orjson
import pytest
import trio

from routecodex_trio import config_from_mapping
from routecodex_trio._errors import ConfigError
from routecodex_trio.cli import main

from .conftest import _OPEN_CLIENTS, mock_config

if TYPE_CHECKING:
    from pathlib import Path

    from routecodex_trio import Gateway

    from .conftest import GatewayFactory

ADMIN = "admin-key-0001"
ALICE = "alice-key-0001"
BOB = "bob-key-00001"
ANON = "anon-key-0001"
HI = [{"role": "user", "content": "hi"}]


def openai_client(gateway: Gateway, *, api_key: str, max_retries: int = 0) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=max_retries)
    _OPEN_CLIENTS.append(client)  # closed by the start_gateway fixture
    return client


def anthropic_client(gateway: Gateway, *, api_key: str) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=api_key, max_retries=0)
    _OPEN_CLIENTS.append(client)
    return client


def _config(tmp_path: Path, keys: dict[str, Any], **mock: Any) -> dict[str, Any]:
    raw = mock_config(**mock)
    raw["server"].update(api_keys=[ANON], admin_keys=[ADMIN])
    raw["keys"] = keys
    raw["pricing"] = {"mock.m1": {"input": 3.0, "output": 15.0}}
    raw["teams"] = {
        "key_header": True,
        "usage_path": str(tmp_path / "usage.sqlite3"),
        "usage_flush_interval": 0.05,
    }
    return raw


async def _usage(gateway: Gateway, query: str = "since=1h&by=key") -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{gateway.url}/admin/usage?{query}", headers={"authorization": f"Bearer {ADMIN}"}
        )
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


async def test_openai_headers_and_429_shape(tmp_path: Path, start_gateway: GatewayFactory) -> None:
    gateway = await start_gateway(_config(tmp_path, {"alice": {"key": ALICE, "rpm": 2, "tpm": 10_000}}))
    client = openai_client(gateway, api_key=ALICE)
    with trio.fail_after(20):
        first = await client.chat.completions.with_raw_response.create(model="m1", messages=HI)
        assert first.headers["x-routecodex-key"] == "alice"
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-limit-tokens"] == "10000"
        assert int(first.headers["x-ratelimit-remaining-tokens"]) < 10_000
        assert first.headers["x-ratelimit-reset-requests"].endswith("s")
        await client.chat.completions.create(model="m1", messages=HI)
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="m1", messages=HI)
    error = refused.value
    assert error.status_code == 429
    assert error.body == {
        "message": error.body["message"],  # type: ignore[index]
        "type": "rate_limit_exceeded",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert "2 requests per minute" in error.message
    assert 1 <= int(error.response.headers["retry-after"]) <= 60
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert "alice-key" not in error.message
    # An anonymous [server] api_keys key: no limits, no rate headers, no key name.
    anon = await openai_client(gateway, api_key=ANON).chat.completions.with_raw_response.create(
        model="m1", messages=HI
    )
    assert "x-ratelimit-limit-requests" not in anon.headers and "x-routecodex-key" not in anon.headers


async def test_anthropic_and_responses_refusals(tmp_path: Path, start_gateway: GatewayFactory) -> None:
    keys = {
        "alice": {"key": ALICE, "rpm": 1},
        "bob": {"key": BOB, "budget_tokens": 10, "budget_period": "day"},
    }
    gateway = await start_gateway(_config(tmp_path, keys))
    claude = anthropic_client(gateway, api_key=ALICE)
    with trio.fail_after(20):
        ok = await claude.messages.with_raw_response.create(model="m1", max_tokens=50, messages=HI)
        assert ok.headers["x-ratelimit-limit-requests"] == "1"
        with pytest.raises(anthropic.RateLimitError) as limited:
            await claude.messages.create(model="m1", max_tokens=50, messages=HI)
        assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert limited.value.body["type"] == "error"  # type: ignore[index]
        assert "retry-after" in limited.value.response.headers
        # Budgets: the first answer crosses 10 tokens; the next is refused until tomorrow.
        await openai_client(gateway, api_key=BOB).responses.create(model="m1", input="hello there")
        with pytest.raises(openai.RateLimitError) as quota:
            await openai_client(gateway, api_key=BOB).responses.create(model="m1", input="again")
        assert quota.value.code == "insufficient_quota"
        assert quota.value.body["type"] == "insufficient_quota"  # type: ignore[index]
        with pytest.raises(anthropic.PermissionDeniedError) as billing:
            await anthropic_client(gateway, api_key=BOB).messages.create(
                model="m1", max_tokens=5, messages=HI
            )
        assert billing.value.status_code == 403
        assert billing.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
        assert "daily budget of 10 tokens" in billing.value.message


async def test_sdk_honours_retry_after(tmp_path: Path, start_gateway: GatewayFactory) -> None:
    """max_parallel = 1: a second request waits out the first through the SDK's own retry."""
    gateway = await start_gateway(
        _config(
            tmp_path, {"alice": {"key": ALICE, "max_parallel": 1}}, reply="word " * 20, tokens_per_second=40
        )
    )
    slow = openai_client(gateway, api_key=ALICE)
    patient = openai_client(gateway, api_key=ALICE, max_retries=3)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            stream_started = trio.Event()

            async def hold_the_slot() -> None:
                stream = await slow.chat.completions.create(model="m1", messages=HI, stream=True)
                stream_started.set()
                async for _ in stream:
                    pass

            nursery.start_soon(hold_the_slot)
            await stream_started.wait()
            answer = await patient.chat.completions.with_raw_response.create(model="m1", messages=HI)
            assert answer.status_code == 200
            assert answer.retries_taken >= 1  # refused while the stream held the slot, then served


async def test_allow_lists_and_expiry(tmp_path: Path, start_gateway: GatewayFactory) -> None:
    keys = {
        "alice": {"key": ALICE, "models": ["m*"], "routes": ["/v1/chat/*"]},
        "bob": {"keys": [BOB], "expires": "2020-01-01"},
    }
    gateway = await start_gateway(_config(tmp_path, keys))
    client = openai_client(gateway, api_key=ALICE)
    with trio.fail_after(20):
        await client.chat.completions.create(model="m1", messages=HI)
        with pytest.raises(openai.PermissionDeniedError) as model:
            await client.chat.completions.create(model="gpt-4o", messages=HI)
        assert model.value.code == "model_not_allowed"
        with pytest.raises(anthropic.PermissionDeniedError) as route:
            await anthropic_client(gateway, api_key=ALICE).messages.create(
                model="m1", max_tokens=5, messages=HI
            )
        assert "/v1/messages" in route.value.message
        with pytest.raises(openai.AuthenticationError) as expired:
            await openai_client(gateway, api_key=BOB).chat.completions.create(model="m1", messages=HI)
        assert "expired" in expired.value.message
        # A named key is a client key, not an admin one.
        async with httpx.AsyncClient() as raw:
            answer = await raw.get(f"{gateway.url}/admin/usage", headers={"authorization": f"Bearer {ALICE}"})
        assert answer.status_code == 403


async def test_model_list_shows_a_key_only_its_models(tmp_path: Path, start_gateway: GatewayFactory) -> None:
    raw = _config(tmp_path, {"alice": {"key": ALICE, "models": ["m1", "mock.m1"]}})
    raw["providers"]["mock"]["models"] = ["m1", "x2"]
    gateway = await start_gateway(raw)
    with trio.fail_after(20):
        everything = {model.id async for model in openai_client(gateway, api_key=ANON).models.list()}
        alices = {model.id async for model in openai_client(gateway, api_key=ALICE).models.list()}
        # Listed as the names a client can send; the key's patterns match those names.
        assert {"mock.m1", "mock.x2"} <= everything
        assert alices == {"mock.m1"}
        assert (await openai_client(gateway, api_key=ALICE).models.retrieve("mock.m1")).id == "mock.m1"
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await openai_client(gateway, api_key=ALICE).models.retrieve("mock.x2")
        assert refused.value.code == "model_not_allowed"
        listed = await anthropic_client(gateway, api_key=ALICE).models.list()
        assert {model.id for model in listed.data} == alices


async def test_streams_settle_real_usage_and_hangups_give_the_lease_back(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    keys = {"alice": {"key": ALICE, "max_parallel": 1, "tpm": 100_000}}
    gateway = await start_gateway(_config(tmp_path, keys, reply="word " * 3000, tokens_per_second=1000))
    client = openai_client(gateway, api_key=ALICE)
    with trio.fail_after(30):
        stream = await client.chat.completions.create(
            model="m1", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
        assert usage is not None and usage.completion_tokens > 0
        # The stream's estimate was settled with its real usage (the next request's own
        # estimate, a few dozen tokens, is in the figure too).
        after = await client.chat.completions.with_raw_response.create(model="m1", messages=HI)
        remaining = int(after.headers["x-ratelimit-remaining-tokens"])
        assert 100_000 - usage.total_tokens - 200 < remaining < 100_000 - usage.total_tokens
        # Hang up mid-stream (3 s of stream left): the gateway gives the slot back at once.
        stream = await client.chat.completions.create(model="m1", messages=HI, stream=True)
        async for _ in stream:
            break
        await stream.close()
        for _ in range(40):
            try:
                await client.chat.completions.create(model="m1", messages=HI)
                break
            except openai.RateLimitError:
                await trio.sleep(0.05)
        else:
            pytest.fail("the hung-up stream kept its max_parallel slot")
    document = await _usage(gateway)
    (alice,) = document["groups"]
    assert alice["group"] == "alice" and alice["requests"] == 4
    # The complete stream was charged its real output; the cut one what it had produced.
    assert alice["output_tokens"] >= usage.completion_tokens + 1


async def test_usage_records_admin_and_cli(
    tmp_path: Path, start_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _config(tmp_path, {"alice": {"key": ALICE}, "bob": {"key": BOB}})
    gateway = await start_gateway(raw)
    with trio.fail_after(20):
        for key, n in ((ALICE, 3), (BOB, 2), (ANON, 1)):
            client = openai_client(gateway, api_key=key)
            for _ in range(n):
                await client.chat.completions.create(model="m1", messages=HI)
        by_key = await _usage(gateway)
        by_target = await _usage(gateway, "by=target&since=2026-01-01")
        async with httpx.AsyncClient() as client:
            bad = await client.get(
                f"{gateway.url}/admin/usage?by=colour", headers={"authorization": f"Bearer {ADMIN}"}
            )
        assert bad.status_code == 400 and "by must be one of" in bad.text
    assert [(g["group"], g["requests"]) for g in by_key["groups"]] == [("", 1), ("alice", 3), ("bob", 2)]
    assert by_key["total"]["requests"] == 6 and by_key["total"]["cost_usd"] > 0
    assert [(g["group"], g["requests"]) for g in by_target["groups"]] == [("mock.m1", 6)]
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[providers.mock]\ntype = 'mock'\nmodels = ['m1']\n[routing]\ndefault = ['mock.m1']\n"
        f"[teams]\nusage_path = '{tmp_path / 'usage.sqlite3'}'\n"
    )
    assert main(["usage", "-c", str(config), "--since", "1d"]) == 0
    table = capsys.readouterr().out
    assert "alice" in table and "(anonymous)" in table and "total" in table
    assert main(["usage", "-c", str(config), "--by", "day", "--json"]) == 0
    document = orjson.loads(capsys.readouterr().out)
    assert document["total"]["requests"] == 6 and len(document["groups"]) == 1


async def test_the_name_in_log_metrics_snapshots_never_the_key(
    tmp_path: Path, start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    raw = _config(tmp_path, {"alice": {"key": ALICE, "rpm": 100}})
    raw["snapshots"] = {"enabled": True, "dir": str(tmp_path / "snaps")}
    gateway = await start_gateway(raw)
    with trio.fail_after(20):
        await openai_client(gateway, api_key=ALICE).chat.completions.create(model="m1", messages=HI)
        counted = await anthropic_client(gateway, api_key=ALICE).messages.count_tokens(
            model="m1", messages=HI
        )
        assert counted.input_tokens > 0
        async with httpx.AsyncClient() as client:
            metrics = (
                await client.get(f"{gateway.url}/metrics", headers={"authorization": f"Bearer {ALICE}"})
            ).text
        usage = await _usage(gateway, "since=1h&by=endpoint")
    assert 'routecodex_key_requests_total{key="alice",status="200"} 2.0' in metrics
    assert 'routecodex_key_cost_usd_total{key="alice"}' in metrics
    lines = [r.getMessage() for r in caplog.records if "endpoint=chat" in r.getMessage()]
    assert lines and all("key=alice" in line for line in lines)
    # count_tokens is a request of the key, and uses no tokens.
    counts = {g["group"]: (g["requests"], g["input_tokens"] + g["output_tokens"]) for g in usage["groups"]}
    assert counts["count_tokens"] == (1, 0) and counts["chat"][1] > 0
    snapshot_files = [p for p in (tmp_path / "snaps").rglob("*") if p.is_file()]
    assert any("key" in p.name for p in snapshot_files)
    everything = "\n".join(p.read_text(errors="replace") for p in snapshot_files) + metrics
    everything += "\n".join(r.getMessage() for r in caplog.records)
    assert ALICE not in everything and '"alice"' in everything


async def test_a_reload_changes_keys_and_keeps_the_counters(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    raw = _config(tmp_path, {"alice": {"key": ALICE, "rpm": 2}})
    gateway = await start_gateway(raw)
    alice = openai_client(gateway, api_key=ALICE)
    with trio.fail_after(20):
        for _ in range(2):
            await alice.chat.completions.create(model="m1", messages=HI)
        with pytest.raises(openai.AuthenticationError):
            await openai_client(gateway, api_key=BOB).chat.completions.create(model="m1", messages=HI)
        raw["keys"] = {"alice": {"key": ALICE, "rpm": 3}, "bob": {"key": BOB}}
        await gateway.reload(config_from_mapping(raw, environ={}))
        third = await alice.chat.completions.with_raw_response.create(model="m1", messages=HI)
        assert third.headers["x-ratelimit-remaining-requests"] == "0"  # the first two still count
        with pytest.raises(openai.RateLimitError):
            await alice.chat.completions.create(model="m1", messages=HI)
        await openai_client(gateway, api_key=BOB).chat.completions.create(model="m1", messages=HI)


async def test_an_unusable_usage_store_stops_the_start_with_a_clear_error(
    tmp_path: Path, start_gateway: GatewayFactory
) -> None:
    (tmp_path / "file").write_text("")
    raw = _config(tmp_path, {})
    raw["teams"]["usage_path"] = str(tmp_path / "file" / "usage.sqlite3")  # under a plain file
    with pytest.raises(ConfigError, match=r"teams.usage_path: cannot open the usage store"):
        await start_gateway(raw)
