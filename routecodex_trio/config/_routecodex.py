"""RouteCodex's ``config.json`` read into our TOML shape, so its users switch by ``--config``.

What maps (RouteCodex key -> ours):

* ``httpserver.host``/``port`` (or top-level ``host``/``port`` of older files) -> ``server.listen``;
* ``virtualrouter.providers.ID`` -> ``providers.ID``: ``type``/``providerType``/``protocol``
  (``anthropic``/``claude`` -> ``anthropic-messages``, ``responses`` -> ``openai-responses``,
  ``openai``, ``glm``, ``qwen``, ``lmstudio``, ``deepseek``, ``ollama``, ``vllm`` ->
  ``openai-chat``, the last six also choosing that compat profile), ``baseURL``/``baseUrl``/
  ``endpoint`` -> ``base_url``, ``apiKey`` (string or list), ``apiKeys``, ``auth.apiKey``/
  ``auth.value``/``auth.keys`` -> ``api_keys``, ``headers``, ``compatibilityProfile``
  (``chat:glm`` ...) -> ``compat``, ``enabled: false`` -> the provider and its targets left out;
  models: ``maxTokens``/``maxOutputTokens`` -> ``max_tokens``, ``maxContext``/
  ``maxContextTokens`` -> ``max_context``, ``compatibility.config.moduleType`` -> ``compat``;
* ``virtualrouter.routing.CATEGORY`` -> ``routing.CATEGORY`` (``web_search``/``webSearch`` ->
  ``websearch``, ``multimodal`` -> ``vision``, ``longContext`` -> ``longcontext``): a list of
  targets is one pool; pool objects keep ``id``, ``targets``, ``mode``, ``backup`` and
  ``priority`` (pools sorted by it); ``provider.model:N`` priorities order a priority pool;
* a list or pool without a ``mode`` takes ``virtualrouter.loadBalancing.strategy``, whose
  RouteCodex default is ``round-robin`` (llmswitch-core ``DEFAULT_LOAD_BALANCING``); ``weighted``
  takes its ``weights`` by target or provider id;
* ``virtualrouter.classifier.longContextThresholdTokens`` -> ``classifier.longcontext_threshold``;
  ``virtualrouter.health`` ``failureThreshold``/``cooldownMs``/``fatalCooldownMs`` -> ``health``.

Ignored because they change nothing here: ``version``, ``description``, ``$schema``,
``virtualrouter.inputProtocol``/``outputProtocol`` (every protocol has its own endpoint) and a
disabled ``dryRun``. Everything else is rejected by name, all problems at once: a setting that
silently did nothing would be worse than an error (other auth kinds, keyword classifiers, sticky
balancing, server tools...); the v0.50-v0.90 additions are read in ``_routecodex_more.py``.

OAuth logins: ``auth: {type: "qwen-oauth" | "iflow-oauth", tokenFile}`` -> ``auth = {preset =
"qwen" | "iflow", token_files = [tokenFile]}``; a list of files rotates like ``apiKeys``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final

from .._errors import ConfigError
from ._model import COMPAT_PROFILES, ROUTE_CATEGORIES
from ._routecodex_more import (
    context_routing,
    model_compat,
    process_mode,
    responses_options,
    server_apikey,
    stream_switch,
)

_IGNORED_TOP: Final = frozenset({"version", "description", "$schema"})
_IGNORED_ROUTER: Final = frozenset({"inputProtocol", "outputProtocol"})
_PROVIDER_KEYS: Final = frozenset(
    {
        "id",
        "enabled",
        "type",
        "providerType",
        "protocol",
        "baseURL",
        "baseUrl",
        "endpoint",
        "apiKey",
        "apiKeys",
        "auth",
        "models",
        "headers",
        "compatibilityProfile",
        "process",
        "supportsStreaming",
        "responses",
    }
)
# RouteCodex's OAuth provider logins -> our auth presets (config/_auth.py).
_OAUTH_TYPES: Final[Mapping[str, str]] = {"qwen-oauth": "qwen", "iflow-oauth": "iflow"}
_MODEL_KEYS: Final[Mapping[str, str]] = {
    "maxTokens": "max_tokens",
    "maxOutputTokens": "max_tokens",
    "maxContext": "max_context",
    "maxContextTokens": "max_context",
}
_CATEGORY_ALIASES: Final[Mapping[str, str]] = {
    "web_search": "websearch",
    "webSearch": "websearch",
    "multimodal": "vision",
    "longContext": "longcontext",
}
# Provider types that speak OpenAI Chat, and the compat profile the type name implies.
_CHAT_TYPES: Final[Mapping[str, str | None]] = {
    "": None,
    "openai": None,
    "openai-chat": None,
    "openai-compatible": None,
    "openai-standard": None,
    "chat": None,
    "glm": "glm",
    "qwen": "qwen",
    "lmstudio": "lmstudio",
    "deepseek": "deepseek",
    "ollama": "ollama",
    "vllm": "vllm",
}
_POOL_KEYS: Final = frozenset(
    {
        "id",
        "poolId",
        "targets",
        "providers",
        "target",
        "provider",
        "mode",
        "strategy",
        "backup",
        "isBackup",
        "type",
        "priority",
        "loadBalancing",
        "force",
        "weight",
    }
)
_MODES: Final[Mapping[str, str]] = {
    "priority": "priority",
    "round-robin": "round-robin",
    "round_robin": "round-robin",
    "roundrobin": "round-robin",
    "rr": "round-robin",
    "weighted": "weighted",
}
_EMPTY_DEFAULT_VAR: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-\}")
_PRIORITY_SUFFIX: Final = re.compile(r"^(.*):(\d+)$")
_DEFAULT_PORT: Final = 5520


def is_routecodex_config(raw: Mapping[str, Any]) -> bool:
    """A JSON config is RouteCodex's when it has its top-level tables."""
    return "virtualrouter" in raw or "httpserver" in raw


def routecodex_to_mapping(
    raw: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """RouteCodex's parsed ``config.json`` as a mapping for ``config_from_mapping``.

    ``${VAR}`` strings are left for ``config_from_mapping`` to expand, except that an API key
    that expands to nothing (``"${LMSTUDIO_API_KEY:-}"`` with the variable unset, RouteCodex's
    way of saying "no key") is left out rather than reported as an empty key.

    Raises:
        ConfigError: every RouteCodex key that has no equivalent here, each named by its path.
    """
    converter = _Converter(os.environ if environ is None else environ)
    out = converter.convert(raw)
    if converter.problems:
        problems = tuple(converter.problems)
        head = "RouteCodex config: these settings have no equivalent in routecodex_trio"
        raise ConfigError(head + ":\n  " + "\n  ".join(problems), problems=problems)
    return out


class _Converter:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        self.aliases: dict[str, list[str]] = {}  # provider -> key aliases
        self.keys: dict[str, list[str]] = {}  # provider -> keys, in the order of ``aliases``
        # (provider, alias) pairs that a target pins: each becomes a provider of its own.
        self.pinned: dict[tuple[str, str], str] = {}
        self.models: dict[str, list[str]] = {}  # provider -> model ids
        self.disabled: set[str] = set()
        self.strategy = "round-robin"
        self.weights: Mapping[str, Any] = {}

    def reject(self, where: str, why: str) -> None:
        self.problems.append(f"{where}: {why}")

    # ------------------------------------------------------------------ top level

    def convert(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(raw, Mapping):
            raise ConfigError("RouteCodex config: the file must hold a JSON object")
        out: dict[str, Any] = {}
        for key in raw:
            if key not in _IGNORED_TOP | {"httpserver", "host", "port", "virtualrouter"}:
                self.reject(key, "not supported")
        out["server"] = {"listen": [self._listen(raw)], **self._server_auth(raw)}
        router = raw.get("virtualrouter")
        if not isinstance(router, Mapping):
            self.reject("virtualrouter", "required (an object with providers and routing)")
            return out
        for key, value in router.items():
            if key in _IGNORED_ROUTER or key in (
                "providers",
                "routing",
                "classifier",
                "health",
                "loadBalancing",
                "contextRouting",
            ):
                continue
            if key == "dryRun" and not (isinstance(value, Mapping) and value.get("enabled")):
                continue
            self.reject(f"virtualrouter.{key}", "not supported")
        self._load_balancing(router.get("loadBalancing"))
        out["providers"] = self._providers(router.get("providers"))
        out["routing"] = self._routing(router.get("routing"))
        out["routing"].update(context_routing(router.get("contextRouting"), self.reject))
        self._split_pinned(out["providers"])
        classifier = self._classifier(router.get("classifier"))
        if classifier:
            out["classifier"] = classifier
        health = self._health(router.get("health"))
        if health:
            out["health"] = health
        return out

    def _server_auth(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Our extension of ``httpserver``: inbound keys, so a file binding a public address
        (``0.0.0.0``) can say how it is protected (or that it deliberately is not)."""
        server = raw.get("httpserver")
        if not isinstance(server, Mapping):
            return {}
        out: dict[str, Any] = {}
        keys = server.get("apiKeys")
        if keys is not None:
            if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
                out["api_keys"] = keys
            else:
                self.reject("httpserver.apiKeys", "must be a list of strings")
        single = server_apikey(server, self.reject, self._blank)
        if single:
            out["api_keys"] = [*out.get("api_keys", []), *single]
        allow = server.get("allowUnauthenticated")
        if allow is not None:
            if isinstance(allow, bool):
                out["allow_unauthenticated"] = allow
            else:
                self.reject("httpserver.allowUnauthenticated", "must be true or false")
        return out

    def _listen(self, raw: Mapping[str, Any]) -> str:
        server = raw.get("httpserver", {})
        if not isinstance(server, Mapping):
            self.reject("httpserver", "must be an object")
            server = {}
        for key in server:
            if key not in ("host", "port", "apikey", "apiKeys", "allowUnauthenticated"):
                self.reject(f"httpserver.{key}", "not supported")
        host = server.get("host", raw.get("host", "127.0.0.1"))
        port = server.get("port", raw.get("port", _DEFAULT_PORT))
        if not isinstance(host, str) or not host:
            self.reject("httpserver.host", "must be a string")
            host = "127.0.0.1"
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            self.reject("httpserver.port", "must be a port number")
            port = _DEFAULT_PORT
        if host == "localhost":
            host = "127.0.0.1"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{port}"

    def _load_balancing(self, value: Any) -> None:
        if value is None:
            return
        where = "virtualrouter.loadBalancing"
        if not isinstance(value, Mapping):
            self.reject(where, "must be an object")
            return
        for key in value:
            if key not in ("strategy", "weights"):
                self.reject(f"{where}.{key}", "not supported")
        strategy = self._mode(value.get("strategy", "round-robin"), f"{where}.strategy")
        self.strategy = strategy or "round-robin"
        weights = value.get("weights", {})
        if isinstance(weights, Mapping):
            self.weights = weights
        else:
            self.reject(f"{where}.weights", "must be an object of target -> weight")

    def _mode(self, value: Any, where: str) -> str | None:
        mode = _MODES.get(str(value).strip().lower()) if isinstance(value, str) else None
        if mode is None:
            self.reject(where, f"{value!r} is not supported (priority, round-robin or weighted)")
        return mode

    # ------------------------------------------------------------------ providers

    def _providers(self, value: Any) -> dict[str, Any]:
        where = "virtualrouter.providers"
        if not isinstance(value, Mapping):
            self.reject(where, "required (an object of provider id -> provider)")
            return {}
        providers: dict[str, Any] = {}
        for name, raw in value.items():
            if not isinstance(raw, Mapping):
                self.reject(f"{where}.{name}", "must be an object")
                continue
            provider = self._provider(f"{where}.{name}", name, raw)
            if provider is not None:
                providers[name] = provider
        return providers

    def _provider(self, where: str, name: str, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        for key in raw:
            if key not in _PROVIDER_KEYS:
                self.reject(f"{where}.{key}", "not supported")
        if raw.get("enabled") is False or str(raw.get("enabled", "")).strip().lower() == "false":
            self.disabled.add(name)
            return None
        out: dict[str, Any] = {}
        type_key = next((k for k in ("providerType", "protocol", "type") if k in raw), "type")
        kind = str(raw.get(type_key, "")).strip().lower()
        compat: str | None = None
        if "anthropic" in kind or "claude" in kind:
            out["type"] = "anthropic-messages"
        elif "responses" in kind:
            out["type"] = "openai-responses"
        elif kind in _CHAT_TYPES:
            out["type"] = "openai-chat"
            compat = _CHAT_TYPES[kind]
        else:
            self.reject(f"{where}.{type_key}", f"provider type {kind!r} is not supported")
            out["type"] = "openai-chat"
        base_url = raw.get("baseURL", raw.get("baseUrl", raw.get("endpoint")))
        if base_url is not None:
            out["base_url"] = base_url
        oauth = self._oauth(where, raw.get("auth"))
        keys, aliases = ([], []) if oauth is not None else self._keys(where, raw)
        if oauth is not None:
            out["auth"] = oauth
        if keys:
            out["api_keys"] = keys
        self.aliases[name] = aliases
        self.keys[name] = keys
        if "supportsStreaming" in raw:
            stream = stream_switch(f"{where}.supportsStreaming", raw["supportsStreaming"], self.reject)
            if stream is not None:
                out["stream"] = stream
        if "process" in raw:
            mode = process_mode(f"{where}.process", raw["process"], self.reject)
            if mode is not None and "compatibilityProfile" in raw:
                self.reject(f"{where}.process", "passthrough means no compat profile; drop one of the two")
            compat = mode or compat
        if "responses" in raw:
            mode, stream = responses_options(f"{where}.responses", raw["responses"], self.reject)
            compat = mode or compat
            if stream is not None:
                out["stream"] = stream
        if "headers" in raw:
            out["headers"] = raw["headers"]
        if "compatibilityProfile" in raw:
            compat = self._compat(raw["compatibilityProfile"], f"{where}.compatibilityProfile")
        if compat is not None:
            if out["type"] == "openai-chat":
                out["compat"] = compat
            elif compat != "passthrough":
                self.reject(
                    f"{where}.compatibilityProfile", "compat profiles apply to OpenAI-chat providers only"
                )
        out["models"] = self._models(f"{where}.models", name, raw.get("models"), out["type"])
        return out

    def _oauth(self, where: str, auth: Any) -> dict[str, Any] | None:
        """``auth: {type: "qwen-oauth" | "iflow-oauth", tokenFile}`` -> an ``[auth]`` preset (issue 19)."""
        if not isinstance(auth, Mapping):
            return None
        preset = _OAUTH_TYPES.get(str(auth.get("type", "")).strip().lower())
        if preset is None:
            return None
        out: dict[str, Any] = {"type": "oauth", "preset": preset}
        for key in auth:
            if key not in ("type", "tokenFile", "tokenFiles"):
                self.reject(
                    f"{where}.auth.{key}", "not supported with an OAuth login (type and tokenFile are)"
                )
        for key in ("tokenFile", "tokenFiles"):
            value = auth.get(key)
            if value is None:
                continue
            files = value if isinstance(value, list) else [value]
            if not files or not all(isinstance(f, str) and f.strip() for f in files):
                self.reject(f"{where}.auth.{key}", "a token file path or a list of them")
                continue
            out.setdefault("token_files", []).extend(files)
        return out

    def _keys(self, where: str, raw: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        keys: list[str] = []
        aliases: list[str] = []

        def add(value: Any, alias: Any, path: str) -> None:
            if not isinstance(value, str):
                self.reject(path, "an API key must be a string")
                return
            if self._blank(value):
                return
            keys.append(value.strip())
            aliases.append(alias if isinstance(alias, str) and alias else f"key{len(keys)}")

        auth = raw.get("auth", {})
        if not isinstance(auth, Mapping):
            self.reject(f"{where}.auth", "must be an object")
            auth = {}
        for key in auth:
            if key not in ("type", "apiKey", "value", "keys"):
                self.reject(f"{where}.auth.{key}", "not supported (only API keys are)")
        auth_type = str(auth.get("type", "apikey")).strip().lower()
        if auth_type not in ("apikey", "api-key", "api_key", "bearer"):
            self.reject(f"{where}.auth.type", f"{auth.get('type')!r} is not supported (only API keys are)")
        entries = auth.get("keys", {})
        if isinstance(entries, Mapping):
            for alias, entry in entries.items():
                value = entry.get("value", entry.get("apiKey")) if isinstance(entry, Mapping) else entry
                add(value, alias, f"{where}.auth.keys.{alias}")
        elif isinstance(entries, list):
            for i, entry in enumerate(entries):
                if isinstance(entry, Mapping):
                    add(
                        entry.get("value", entry.get("apiKey")), entry.get("alias"), f"{where}.auth.keys[{i}]"
                    )
                else:
                    add(entry, None, f"{where}.auth.keys[{i}]")
        # RouteCodex reads the first of these that is present (auth-utils extractProviderAuthEntries).
        sources = [(f"{where}.{k}", raw[k]) for k in ("apiKey", "apiKeys") if k in raw]
        sources += [(f"{where}.auth.{k}", auth[k]) for k in ("apiKey", "value") if k in auth]
        if sources:
            path, value = sources[0]
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                add(item, None, f"{path}[{i}]" if isinstance(value, list) else path)
        return keys, aliases

    def _blank(self, value: str) -> bool:
        """Empty, or a ``${VAR:-}`` reference to an unset or empty variable."""
        if not value.strip():
            return True
        match = _EMPTY_DEFAULT_VAR.fullmatch(value.strip())
        return match is not None and not self.environ.get(match.group(1))

    def _compat(self, value: Any, where: str) -> str | None:
        name = str(value).strip().lower()
        name = name.split(":", 1)[1] if ":" in name else name
        if name not in COMPAT_PROFILES:
            self.reject(where, f"{value!r} is not supported (one of {', '.join(COMPAT_PROFILES)})")
            return None
        return name

    def _models(self, where: str, provider: str, value: Any, provider_type: str) -> dict[str, Any]:
        models: dict[str, Any] = {}
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = {model_id: {} for model_id in value}
        if not isinstance(value, Mapping):
            self.reject(where, "required (an object of model id -> options)")
            return models
        for model_id, options in value.items():
            options = {} if options is None else options
            if not isinstance(options, Mapping):
                self.reject(f"{where}.{model_id}", "must be an object")
                continue
            model: dict[str, Any] = {}
            for key, option in options.items():
                if key in _MODEL_KEYS:
                    model[_MODEL_KEYS[key]] = option
                elif key == "supportsStreaming":
                    stream = stream_switch(f"{where}.{model_id}.{key}", option, self.reject)
                    if stream is not None:
                        model["stream"] = stream
                elif key == "compatibility":
                    compat = model_compat(f"{where}.{model_id}.compatibility", option, self.reject)
                    if compat is not None and provider_type == "openai-chat":
                        model["compat"] = compat
                else:
                    self.reject(f"{where}.{model_id}.{key}", "not supported")
            models[model_id] = model
        self.models[provider] = list(models)
        return models

    # ------------------------------------------------------------------ routing

    def _routing(self, value: Any) -> dict[str, Any]:
        where = "virtualrouter.routing"
        if not isinstance(value, Mapping):
            self.reject(where, "required (an object of category -> targets)")
            return {}
        routing: dict[str, list[Any]] = {}
        for category, entries in value.items():
            name = _CATEGORY_ALIASES.get(category, category)
            path = f"{where}.{category}"
            if not isinstance(entries, list):
                self.reject(path, "must be a list")
                continue
            if category == "anthropic" and entries and entries != value.get("default"):
                # v0.50's pool for /v1/messages (http-server pickFirst): every endpoint here is
                # routed by the same categories, so only a copy of the default route maps.
                self.reject(
                    path,
                    "v0.50's route for /v1/messages requests: every endpoint is routed by the same "
                    "categories here, so it is accepted only when it equals routing.default",
                )
                continue
            if name not in ROUTE_CATEGORIES:
                if entries and category != "anthropic":
                    self.reject(path, f"category not supported (one of {', '.join(ROUTE_CATEGORIES)})")
                continue
            routing.setdefault(name, []).extend(self._pools(path, entries))
        return routing

    def _pools(self, where: str, entries: list[Any]) -> list[dict[str, Any]]:
        if all(isinstance(e, str) for e in entries):
            pool = self._pool(where, {"targets": entries}, len(entries), plain=True)
            return [pool[1]] if pool else []
        if all(isinstance(e, Mapping) and ("target" in e or "provider" in e) for e in entries) and not any(
            "targets" in e or "providers" in e for e in entries
        ):
            # RouteCodex's simplified weighted form: [{target, weight}, ...] is one weighted pool.
            targets = [e.get("target", e.get("provider")) for e in entries]
            weights = {
                t: e.get("weight", 1) for t, e in zip(targets, entries, strict=True) if isinstance(t, str)
            }
            raw = {"targets": targets, "loadBalancing": {"strategy": "weighted", "weights": weights}}
            for i, entry in enumerate(entries):
                for key in entry:
                    if key not in ("target", "provider", "weight"):
                        self.reject(f"{where}[{i}].{key}", "not supported")
            pool = self._pool(where, raw, len(entries))
            return [pool[1]] if pool else []
        pools: list[tuple[float, int, dict[str, Any]]] = []
        for i, entry in enumerate(entries):
            raw = {"targets": [entry]} if isinstance(entry, str) else entry
            if not isinstance(raw, Mapping):
                self.reject(f"{where}[{i}]", "a pool is a target string or an object")
                continue
            pool = self._pool(f"{where}[{i}]", raw, len(entries) - i)
            if pool is not None:
                pools.append((-pool[0], i, pool[1]))
        return [pool for _, _, pool in sorted(pools, key=lambda item: item[:2])]

    def _pool(
        self, where: str, raw: Mapping[str, Any], default_priority: float, *, plain: bool = False
    ) -> tuple[float, dict[str, Any]] | None:
        for key in raw:
            if key not in _POOL_KEYS:
                self.reject(f"{where}.{key}", "not supported")
        if raw.get("force") is True:
            self.reject(f"{where}.force", "forced server-side tool flows are not supported")
        balancing = raw.get("loadBalancing", {})
        if not isinstance(balancing, Mapping):
            self.reject(f"{where}.loadBalancing", "must be an object")
            balancing = {}
        for key in balancing:
            if key not in ("strategy", "weights"):
                self.reject(f"{where}.loadBalancing.{key}", "not supported")
        mode = self.strategy
        for key, value in (
            ("loadBalancing.strategy", balancing.get("strategy")),
            ("strategy", raw.get("strategy")),
        ):
            if value is not None:
                mode = self._mode(value, f"{where}.{key}") or mode
        if raw.get("mode") is not None:
            mode = self._mode(raw["mode"], f"{where}.mode") or mode
        entries: list[Any] = []
        for key in ("targets", "providers", "target", "provider"):
            value = raw.get(key)
            entries.extend(value if isinstance(value, list) else [] if value is None else [value])
        resolved: list[tuple[int, int, str]] = []
        for i, entry in enumerate(entries):
            path = f"{where}[{i}]" if plain else f"{where}.targets[{i}]"
            target = self._target(path, entry)
            if target is not None and target[1] not in (t for _, _, t in resolved):
                resolved.append((-target[0], i, target[1]))
        if mode == "priority":
            resolved.sort()
        targets = [t for _, _, t in resolved]
        if not targets:
            return None
        pool: dict[str, Any] = {"targets": targets, "mode": mode}
        if mode == "weighted":
            weights = balancing.get("weights", self.weights)
            pool["weights"] = [self._weight(weights, t, where) for t in targets]
        pool_id = raw.get("id", raw.get("poolId"))
        if pool_id is not None:
            pool["id"] = str(pool_id)
        kind = raw.get("type")
        if raw.get("backup") is True or raw.get("isBackup") is True or kind == "backup":
            pool["backup"] = True
        priority = raw.get("priority", default_priority)
        if not isinstance(priority, int | float) or isinstance(priority, bool):
            self.reject(f"{where}.priority", "must be a number")
            priority = default_priority
        return float(priority), pool

    def _weight(self, weights: Any, target: str, where: str) -> int:
        provider = target.partition(".")[0]
        value = weights.get(target, weights.get(provider, 1)) if isinstance(weights, Mapping) else 1
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            self.reject(f"{where}.weights", f"weight of {target!r} must be a non-negative number")
            return 1
        return round(value)

    def _target(self, where: str, entry: Any) -> tuple[int, str] | None:
        """``(priority, "provider.model")``; None for disabled providers and reported problems."""
        if not isinstance(entry, str) or "." not in entry.strip():
            self.reject(where, f"{entry!r} is not 'provider.model'")
            return None
        provider, _, rest = entry.strip().partition(".")
        if provider in self.disabled:
            return None
        if provider not in self.models:
            self.reject(where, f"{entry!r} names unknown provider {provider!r}")
            return None
        models = self.models[provider]
        priority = 100  # RouteCodex's default target priority
        if rest not in models and (match := _PRIORITY_SUFFIX.match(rest)):
            rest, priority = match.group(1), int(match.group(2))
        if rest in models:
            return priority, f"{provider}.{rest}"
        for alias in self.aliases.get(provider, []):
            for model in (rest.removeprefix(f"{alias}."), rest.removesuffix(f".{alias}")):
                if model != rest and model in models:
                    if len(self.aliases[provider]) > 1:
                        # The alias says which key: that key alone becomes a provider of its own.
                        pinned = self.pinned.setdefault((provider, alias), f"{provider}-{alias}")
                        return priority, f"{pinned}.{model}"
                    return priority, f"{provider}.{model}"
        self.reject(where, f"{entry!r}: provider {provider!r} lists no model {rest!r}")
        return None

    def _split_pinned(self, providers: dict[str, Any]) -> None:
        """A provider per pinned key (``glm.key2.glm-4.6``): the same upstream with one key."""
        for (provider, alias), name in self.pinned.items():
            if name in providers:
                self.reject(
                    f"virtualrouter.providers.{provider}",
                    f"a target pins key {alias!r}, which needs the provider id {name!r}, already taken",
                )
                continue
            key = self.keys[provider][self.aliases[provider].index(alias)]
            providers[name] = {**providers[provider], "api_keys": [key]}

    # ------------------------------------------------------------------ classifier, health

    def _classifier(self, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        where = "virtualrouter.classifier"
        if not isinstance(value, Mapping):
            self.reject(where, "must be an object")
            return {}
        out: dict[str, Any] = {}
        for key, option in value.items():
            if key == "longContextThresholdTokens":
                out["longcontext_threshold"] = option
            else:
                self.reject(
                    f"{where}.{key}",
                    "not supported (keyword triggers are not used; see [classifier] in docs/config.md)",
                )
        return out

    def _health(self, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        where = "virtualrouter.health"
        if not isinstance(value, Mapping):
            self.reject(where, "must be an object")
            return {}
        out: dict[str, Any] = {}
        names = {
            "failureThreshold": "failure_threshold",
            "cooldownMs": "cooldown",
            "fatalCooldownMs": "fatal_cooldown",
        }
        for key, option in value.items():
            if key not in names:
                self.reject(f"{where}.{key}", "not supported")
            elif key == "failureThreshold":
                out[names[key]] = option
            elif isinstance(option, int | float) and not isinstance(option, bool):
                out[names[key]] = option / 1000.0
            else:
                self.reject(f"{where}.{key}", "must be a number of milliseconds")
        return out
