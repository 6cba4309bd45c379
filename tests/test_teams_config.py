"""Issue 18: ``[keys.NAME]``, ``[pricing]`` and ``[teams]`` validation, with api_keys' rules."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from routecodex_trio._errors import ConfigError
from routecodex_trio.config import config_from_mapping, holds_keys
from routecodex_trio.observability import config_secrets


def _raw(**extra: Any) -> dict[str, Any]:
    return {
        "providers": {"mock": {"type": "mock", "models": ["m1"]}},
        "routing": {"default": ["mock.m1"]},
        **extra,
    }


def _problems(raw: dict[str, Any], environ: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw, environ=environ or {})
    return caught.value.problems


def test_a_full_key_table() -> None:
    config = config_from_mapping(
        _raw(
            keys={
                "alice": {
                    "key": "${ALICE}",
                    "models": ["claude-*"],
                    "routes": ["/v1/messages*"],
                    "rpm": 60,
                    "tpm": 1000,
                    "max_parallel": 2,
                    "budget_usd": 5.0,
                    "budget_period": "week",
                    "expires": datetime.date(2027, 1, 31),
                },
                "bob": {"keys": ["bob-key-0001", "bob-key-0002"], "expires": "2027-01-01T12:00:00+02:00"},
            },
            pricing={"mock.m1": {"input": 3.0, "output": 15.0, "cache_read": 0.3}},
            teams={"key_header": True, "usage": "off"},
        ),
        environ={"ALICE": "alice-key-0001"},
    )
    alice, bob = config.keys["alice"], config.keys["bob"]
    assert alice.all_keys() == ("alice-key-0001",) and alice.rate_limited and alice.budgeted
    assert alice.allows_model("claude-sonnet-4-5") and not alice.allows_model("gpt-4o")
    assert alice.allows_route("/v1/messages/count_tokens") and not alice.allows_route("/v1/chat/completions")
    assert alice.expires == datetime.datetime(2027, 1, 31, tzinfo=datetime.UTC)
    assert bob.expires == datetime.datetime(2027, 1, 1, 10, tzinfo=datetime.UTC)
    assert not bob.rate_limited and bob.allows_model("anything")
    price = config.pricing["mock.m1"]
    # 1,000 input of which 400 cached, 100 output: 600 * 3 + 400 * 0.3 + 100 * 15 per million.
    assert price.cost(1000, 100, 400, 0) == pytest.approx((600 * 3 + 400 * 0.3 + 100 * 15) / 1e6)
    assert holds_keys(config)
    assert {"alice-key-0001", "bob-key-0001", "bob-key-0002"} <= set(config_secrets(config))


def test_key_rules_are_api_keys_rules() -> None:
    problems = _problems(
        _raw(
            server={"api_keys": ["shared-key-0001"]},
            keys={
                "short": {"key": "abc"},
                "spaced": {"key": "has space-0001"},
                "twice": {"key": "shared-key-0001"},
                "none": {"rpm": 5},
                "bad name!": {"key": "fine-key-0001"},
                "rich": {"key": "rich-key-0001", "budget_usd": 10},
            },
            pricing={"nobody.m1": {"input": 1}},
        ),
    )
    text = "\n".join(problems)
    assert "keys.short: key 1 too short" in text
    assert "keys.spaced: key 1 contains whitespace" in text
    assert "keys.twice: key 1 is also in server.api_keys" in text
    assert "keys.none: set key or keys" in text
    assert "keys.bad name!: a key name is" in text
    assert "pricing.nobody.m1: unknown provider 'nobody'" in text
    assert "shared-key-0001" not in text and "has space" not in text


def test_limits_must_be_positive_and_periods_known() -> None:
    assert any("keys.a.rpm" in p for p in _problems(_raw(keys={"a": {"key": "a-key-00001", "rpm": 0}})))
    periods = _problems(_raw(keys={"a": {"key": "a-key-00001", "budget_period": "year"}}))
    assert any("budget_period" in p and "day, week, month" in p for p in periods)
    assert any("expires" in p for p in _problems(_raw(keys={"a": {"key": "a-key-00001", "expires": "soon"}})))
    assert any(
        "budget_usd: needs [pricing]" in p
        for p in _problems(_raw(keys={"a": {"key": "a-key-00001", "budget_usd": 1}}))
    )


def test_named_keys_alone_protect_a_public_listen() -> None:
    config = config_from_mapping(
        _raw(server={"listen": ["0.0.0.0:5520"]}, keys={"a": {"key": "a-key-00001"}}), environ={}
    )
    assert config.keys["a"].key == "a-key-00001"
    problems = _problems(_raw(server={"listen": ["0.0.0.0:5520"]}))
    assert any("reachable from other hosts" in p for p in problems)
