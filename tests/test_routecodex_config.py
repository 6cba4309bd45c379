"""RouteCodex ``config.json`` files load as gateway configs; what has no equivalent is named."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from routecodex_trio import ConfigError, load_config
from routecodex_trio.config._routecodex import routecodex_to_mapping

if TYPE_CHECKING:
    from pathlib import Path

# The shape of RouteCodex's config/samples/user-glm.json (key pinned with ".key1").
USER_GLM = {
    "version": "1.0.0",
    "port": 5522,
    "host": "0.0.0.0",
    "virtualrouter": {
        "outputProtocol": "openai",
        "providers": {
            "glm": {
                "id": "glm",
                "enabled": True,
                "type": "openai",
                "baseURL": "https://open.bigmodel.cn/api/coding/paas/v4",
                "apiKey": ["${GLM_API_KEY}"],
                "models": {"glm-4.6": {"maxContext": 200000, "maxTokens": 8192}},
            }
        },
        "routing": {
            "default": ["glm.glm-4.6.key1"],
            "coding": [],
            "longcontext": [],
            "thinking": [],
            "tools": [],
            "vision": [],
            "websearch": [],
            "background": [],
        },
    },
}

# The shape of config/samples/user-lmstudio.json: httpserver table, a key that may be unset.
USER_LMSTUDIO = {
    "version": "1.0.0",
    "httpserver": {"port": 5521, "host": "0.0.0.0"},
    "virtualrouter": {
        "outputProtocol": "openai",
        "providers": {
            "lmstudio": {
                "id": "lmstudio",
                "enabled": True,
                "type": "openai",
                "baseURL": "http://localhost:1234/v1",
                "apiKey": ["${LMSTUDIO_API_KEY:-}"],
                "models": {"gpt-oss-20b-mlx": {}},
            }
        },
        "routing": {"default": ["lmstudio.gpt-oss-20b-mlx"], "coding": [], "vision": []},
    },
}

# A fuller file in the newer style: several providers and key aliases, pool objects,
# weighted balancing, classifier and health settings.
MULTI = {
    "version": "1.0.0",
    "httpserver": {"port": 5520, "host": "127.0.0.1"},
    "virtualrouter": {
        "inputProtocol": "openai",
        "outputProtocol": "openai",
        "providers": {
            "glm": {
                "type": "glm",
                "baseUrl": "https://open.bigmodel.cn/api/coding/paas/v4",
                "auth": {"type": "apikey", "keys": {"primary": "sk-glm-1", "backup": {"value": "sk-glm-2"}}},
                "models": {
                    "glm-4.6": {"maxContext": 200000, "maxTokens": 8192},
                    "glm-4.5-air": {
                        "maxContextTokens": 128000,
                        "compatibility": {"type": "compatibility", "config": {"moduleType": "glm"}},
                    },
                },
            },
            "claude": {
                "type": "anthropic",
                "baseURL": "https://api.anthropic.com",
                "apiKey": "sk-ant-1",
                "models": {"claude-sonnet-4-5": {}, "claude-haiku-4-5": {}},
            },
            "codex": {
                "type": "responses",
                "baseURL": "https://api.openai.com/v1",
                "apiKey": "sk-oa",
                "models": {"gpt-5": {}},
            },
            "deep": {
                "type": "openai",
                "compatibilityProfile": "chat:deepseek",
                "baseURL": "https://api.deepseek.com/v1",
                "apiKey": "sk-ds",
                "models": {"deepseek-chat": {"maxTokens": 8192}},
            },
            "old": {
                "enabled": False,
                "type": "openai",
                "baseURL": "http://x/v1",
                "apiKey": "k",
                "models": {"m": {}},
            },
        },
        "routing": {
            "default": [
                {"id": "spare", "backup": True, "targets": ["deep.deepseek-chat"]},
                {
                    "id": "main",
                    "mode": "priority",
                    "targets": ["glm.glm-4.6:50", "claude.claude-sonnet-4-5:90"],
                },
            ],
            "thinking": ["codex.gpt-5", "old.m"],
            "web_search": [{"target": "claude.claude-sonnet-4-5", "weight": 3}, {"target": "codex.gpt-5"}],
            "multimodal": ["claude.claude-sonnet-4-5"],
            "longContext": ["glm.glm-4.6"],
            "background": ["claude.claude-haiku-4-5"],
            "coding": [{"id": "rr", "targets": ["glm.glm-4.6", "deep.deepseek-chat"]}],
        },
        "loadBalancing": {"strategy": "round-robin"},
        "classifier": {"longContextThresholdTokens": 120000},
        "health": {"failureThreshold": 2, "cooldownMs": 15000, "fatalCooldownMs": 600000},
    },
}


def write(tmp_path: Path, raw: Any, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(raw, indent=2))
    return path


def test_user_glm_sample(tmp_path: Path) -> None:
    # RouteCodex binds 0.0.0.0 without inbound keys; we refuse that until the file says how
    # the gateway is protected (our httpserver.apiKeys extension) or that it is deliberate.
    with pytest.raises(ConfigError, match=r"reachable from other hosts.*httpserver.apiKeys"):
        load_config(write(tmp_path, USER_GLM), environ={"GLM_API_KEY": "sk-live"})
    keyed = {**USER_GLM, "httpserver": {"apiKeys": ["${ROUTECODEX_KEY}"]}}
    config = load_config(
        write(tmp_path, keyed), environ={"GLM_API_KEY": "sk-live", "ROUTECODEX_KEY": "k" * 16}
    )
    assert config.server.listen == ("0.0.0.0:5522",)
    assert [k.reveal() for k in config.server.api_keys] == ["k" * 16]
    glm = config.providers["glm"]
    assert glm.type == "openai-chat"
    assert glm.base_url == "https://open.bigmodel.cn/api/coding/paas/v4"
    assert [k.reveal() for k in glm.all_keys()] == ["sk-live"]
    assert glm.compat == "passthrough"  # RouteCodex's default compatibilityProfile too
    model = glm.model("glm-4.6")
    assert model is not None
    assert (model.max_context, model.max_tokens) == (200000, 8192)
    # "glm.glm-4.6.key1" pins the only key there is: the same as "glm.glm-4.6".
    assert config.routing.default[0].targets == ("glm.glm-4.6",)
    assert config.routing.default[0].mode == "round-robin"
    assert config.routing.coding == ()


def test_user_lmstudio_sample_without_its_optional_key(tmp_path: Path) -> None:
    sample = {**USER_LMSTUDIO, "httpserver": {**USER_LMSTUDIO["httpserver"], "allowUnauthenticated": True}}
    config = load_config(write(tmp_path, sample), environ={})
    assert config.server.allow_unauthenticated
    assert config.server.listen == ("0.0.0.0:5521",)
    assert config.providers["lmstudio"].all_keys() == ()
    keyed = load_config(write(tmp_path, sample), environ={"LMSTUDIO_API_KEY": "lm-key"})
    assert [k.reveal() for k in keyed.providers["lmstudio"].all_keys()] == ["lm-key"]


def test_unset_required_key_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GLM_API_KEY is not set"):
        load_config(write(tmp_path, USER_GLM), environ={})


def test_fuller_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MULTI), environ={})
    providers = config.providers
    assert set(providers) == {"glm", "claude", "codex", "deep"}  # "old" is disabled
    assert providers["glm"].compat == "glm"
    assert [k.reveal() for k in providers["glm"].all_keys()] == ["sk-glm-1", "sk-glm-2"]
    air = providers["glm"].model("glm-4.5-air")
    assert air is not None
    assert (air.compat, air.max_context) == ("glm", 128000)
    assert providers["claude"].type == "anthropic-messages"
    assert providers["codex"].type == "openai-responses"
    assert providers["deep"].compat == "deepseek"

    routing = config.routing
    # Pool order is RouteCodex's (earlier entries rank higher unless "priority" says otherwise);
    # the router still tries backup pools last. "main" sorts its targets by ":N" priority.
    assert [(p.id, p.backup, p.mode, p.targets) for p in routing.default] == [
        ("spare", True, "round-robin", ("deep.deepseek-chat",)),
        ("main", False, "priority", ("claude.claude-sonnet-4-5", "glm.glm-4.6")),
    ]
    assert routing.thinking[0].targets == ("codex.gpt-5",)  # the disabled provider's target is gone
    assert routing.websearch[0].mode == "weighted"
    assert routing.websearch[0].weights == (3, 1)
    assert routing.vision[0].targets == ("claude.claude-sonnet-4-5",)
    assert routing.longcontext[0].targets == ("glm.glm-4.6",)
    assert routing.coding[0].mode == "round-robin"
    assert config.classifier.longcontext_threshold == 120000
    assert (config.health.failure_threshold, config.health.cooldown, config.health.fatal_cooldown) == (
        2,
        15,
        600,
    )


def test_weighted_global_strategy_with_weights_by_target_or_provider() -> None:
    raw = copy_of(USER_GLM)
    router = raw["virtualrouter"]
    router["providers"]["glm"]["apiKey"] = ["k"]
    router["providers"]["local"] = {
        "type": "lmstudio",
        "baseURL": "http://127.0.0.1:1234/v1",
        "models": {"q": {}},
    }
    router["routing"]["default"] = ["glm.glm-4.6", "local.q"]
    router["loadBalancing"] = {"strategy": "weighted", "weights": {"glm.glm-4.6": 4, "local": 2}}
    mapped = routecodex_to_mapping(raw, environ={})
    assert mapped["routing"]["default"] == [
        {"targets": ["glm.glm-4.6", "local.q"], "mode": "weighted", "weights": [4, 2]}
    ]
    assert mapped["providers"]["local"]["compat"] == "lmstudio"
    assert "api_keys" not in mapped["providers"]["local"]


def copy_of(raw: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(raw))
    return copied


def problems_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        routecodex_to_mapping(raw, environ={})
    return "\n".join(caught.value.problems)


def test_unsupported_settings_are_named_all_at_once() -> None:
    raw = copy_of(MULTI)
    router = raw["virtualrouter"]
    raw["serverTools"] = {"enabled": True}
    raw["httpserver"]["cors"] = {"enabled": True}
    router["providers"]["qwen"] = {
        "type": "openai",
        "baseURL": "https://portal.qwen.ai/v1",
        # qwen-oauth and iflow-oauth map onto [auth] presets (test_oauth.py); other logins do not.
        "auth": {"type": "gemini-cli-oauth", "tokenFile": "~/.routecodex/auth/gemini.json"},
        "models": {"qwen3-coder-plus": {"supportsStreaming": "yes", "supportsThinking": True}},
    }
    router["providers"]["gem"] = {"type": "gemini", "apiKey": "g", "models": {"gemini-2.5-pro": {}}}
    router["routing"]["anthropic"] = ["glm.glm-4.6"]
    router["routing"]["search"] = []  # an empty unknown category changes nothing and is ignored
    router["routing"]["tools"] = ["glm.primary.glm-4.6", "glm.glm-4.7", "nobody.x"]
    router["classifier"]["thinkingKeywords"] = ["think step"]
    router["loadBalancing"]["aliasSelection"] = {"enabled": True}
    router["providers"]["glm"]["models"]["glm-4.6"]["compatibility"] = {
        "type": "compatibility",
        "config": {"moduleType": "glm", "moduleConfig": {"thinking": {"enabled": True}}},
    }
    problems = problems_of(raw)
    for expected in (
        "serverTools: not supported",
        "httpserver.cors: not supported",
        "virtualrouter.providers.qwen.auth.type: 'gemini-cli-oauth' is not supported (only API keys are)",
        "virtualrouter.providers.qwen.auth.tokenFile: not supported",
        "virtualrouter.providers.qwen.models.qwen3-coder-plus.supportsStreaming: must be true or false",
        "virtualrouter.providers.qwen.models.qwen3-coder-plus.supportsThinking: not supported",
        "virtualrouter.providers.gem.type: provider type 'gemini' is not supported",
        "virtualrouter.routing.anthropic: v0.50's route for /v1/messages requests",
        "virtualrouter.routing.tools[1]: 'glm.glm-4.7': provider 'glm' lists no model 'glm-4.7'",
        "virtualrouter.routing.tools[2]: 'nobody.x' names unknown provider 'nobody'",
        "virtualrouter.classifier.thinkingKeywords: not supported",
        "virtualrouter.loadBalancing.aliasSelection: not supported",
        "virtualrouter.providers.glm.models.glm-4.6.compatibility.config.moduleConfig: not supported",
    ):
        assert expected in problems, expected
    assert "routing.search" not in problems


def test_sticky_and_forced_pools_are_rejected() -> None:
    raw = copy_of(USER_GLM)
    raw["virtualrouter"]["loadBalancing"] = {"strategy": "sticky"}
    raw["virtualrouter"]["routing"]["thinking"] = [{"id": "x", "force": True, "targets": ["glm.glm-4.6"]}]
    problems = problems_of(raw)
    assert "virtualrouter.loadBalancing.strategy: 'sticky' is not supported" in problems
    assert (
        "virtualrouter.routing.thinking[0].force: forced server-side tool flows are not supported" in problems
    )


def test_secrets_never_appear_in_problems() -> None:
    raw = copy_of(MULTI)
    raw["virtualrouter"]["providers"]["glm"]["auth"]["refreshUrl"] = "https://x"
    problems = problems_of(raw)
    assert "sk-" not in problems


def test_our_own_tree_in_json_loads_too(tmp_path: Path) -> None:
    raw = {
        "server": {"listen": ["127.0.0.1:0"]},
        "providers": {"mock": {"type": "mock", "models": ["m1"]}},
        "routing": {"default": ["mock.m1"]},
    }
    config = load_config(write(tmp_path, raw, "gw.json"))
    assert config.routing.default[0].targets == ("mock.m1",)


def test_invalid_json_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"virtualrouter": ')
    with pytest.raises(ConfigError, match="invalid JSON in"):
        load_config(path)


def test_check_config_and_route_accept_a_routecodex_file(tmp_path: Path) -> None:
    config = write(tmp_path, MULTI)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
    check = subprocess.run(
        [sys.executable, "-m", "routecodex_trio", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "OK (4 providers" in check.stdout
    route = subprocess.run(
        [sys.executable, "-m", "routecodex_trio", "route", "--config", str(config), str(request), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert route.returncode == 0, route.stderr
    decision = json.loads(route.stdout)
    assert decision["category"] == "default"
    assert [c["target"] for c in decision["candidates"]] == [
        "claude.claude-sonnet-4-5",
        "glm.glm-4.6",
        "glm.glm-4.6",
        "deep.deepseek-chat",
    ]
    assert "sk-" not in route.stdout + route.stderr
