"""The parts of RouteCodex's ``config.json`` added between v0.50 and v0.90, read into our tree.

Kept apart from ``_routecodex.py`` (the v0.4x core: providers, keys, routing pools) so each
stays readable. Every function takes ``reject(where, why)`` and reports each key it cannot map
with one reason, never silently dropping a setting:

* ``httpserver.apikey`` (v0.90 docs/config-secrets.md) -> one more ``server.api_keys`` entry;
* ``supportsStreaming`` (provider, or model as configsamples/config.json places it) -> our
  ``stream`` switch: ``false`` calls that upstream without streaming (docs/streaming-flow.md:
  "supportsStreaming === false => payload.stream = false");
* ``process`` (docs/CONFIG_ARCHITECTURE.md 2.1.1): ``chat`` is what we always do;
  ``passthrough`` -> compat ``passthrough`` (no quirk fixes on the provider's own protocol);
* model ``compatibility``: a name (``"glm"``), ``{type: "glm-compatibility"}`` (v0.50) or
  ``{type: "compatibility", config: {moduleType: "glm"}}`` -> ``compat``;
* ``virtualrouter.contextRouting`` ``warnRatio``/``hardLimit`` -> ``routing.context_ratio``/
  ``context_overflow`` (the router's context fit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from ._model import COMPAT_PROFILES

Reject = Callable[[str, str], None]

# RouteCodex v0.50's compatibility module names (src/modules/pipeline/modules/compatibility).
_COMPAT_SUFFIX: Final = "-compatibility"
# Z.ai's GLM thinks unless told otherwise ("thinking.type" defaults to "enabled"), so RouteCodex
# v0.50's GLM thinking switch set to on is what the upstream does anyway.
_GLM_THINKING_ON: Final = {"type": "enabled"}


def server_apikey(server: Mapping[str, Any], reject: Reject, blank: Callable[[str], bool]) -> list[str]:
    """``httpserver.apikey`` as inbound keys (empty when unset or ``${VAR:-}`` to nothing)."""
    if "apikey" not in server:
        return []
    value = server["apikey"]
    if not isinstance(value, str):
        reject("httpserver.apikey", "must be a string (the key clients send)")
        return []
    return [] if blank(value) else [value.strip()]


def stream_switch(where: str, value: Any, reject: Reject) -> bool | None:
    """``supportsStreaming`` -> our ``stream`` (None for a value that is not a boolean).

    RouteCodex's ``true`` also forced streaming upstream for clients that did not ask for it;
    here it keeps streaming on (a model's ``true`` over its provider's ``false``).
    """
    if not isinstance(value, bool):
        reject(where, "must be true or false")
        return None
    return value


def responses_options(where: str, value: Any, reject: Reject) -> tuple[str | None, bool | None]:
    """A Responses provider's ``responses: {process, streaming}`` -> (compat, stream).

    ``streaming`` is RouteCodex's ResponsesProvider preference: ``auto`` (the client's
    choice, what we do), ``never`` (our ``stream = false``), ``always`` (SSE upstream even for
    a client that asked for none, for upstreams that only stream).
    """
    if not isinstance(value, Mapping):
        reject(where, "must be an object")
        return None, None
    compat: str | None = None
    stream: bool | None = None
    for key, option in value.items():
        if key == "process":
            compat = process_mode(f"{where}.process", option, reject)
        elif key == "streaming" and option in ("auto", "never"):
            stream = None if option == "auto" else False
        elif key == "streaming":
            reject(
                f"{where}.streaming",
                f"{option!r} is not supported (auto or never): a client that asks for no stream is "
                "called without one here",
            )
        else:
            reject(f"{where}.{key}", "not supported (process and streaming are)")
    return compat, stream


def process_mode(where: str, value: Any, reject: Reject) -> str | None:
    """``process``: the compat profile it implies (``passthrough``), or None for ``chat``."""
    mode = value.strip().lower() if isinstance(value, str) else None
    if mode == "chat":
        return None
    if mode == "passthrough":
        return "passthrough"
    reject(where, f"{value!r} is not supported (chat or passthrough)")
    return None


def model_compat(where: str, value: Any, reject: Reject) -> str | None:
    """A model's ``compatibility`` in any of RouteCodex's forms, as one of our profile names."""
    if isinstance(value, str):
        return _profile(where, value, reject)
    if not isinstance(value, Mapping):
        reject(where, 'expected a profile name or {type: "glm-compatibility"}')
        return None
    for key in value:
        if key not in ("type", "config"):
            reject(f"{where}.{key}", "not supported")
    kind = str(value.get("type", "")).strip().lower()
    config = value.get("config", {})
    if not isinstance(config, Mapping):
        reject(f"{where}.config", "must be an object")
        config = {}
    if kind == "compatibility":
        # The older form names the module inside: {config: {moduleType: "glm"}}.
        for key in config:
            if key != "moduleType":
                reject(f"{where}.config.{key}", "not supported (compat profiles are fixed; docs/config.md)")
        return _profile(f"{where}.config.moduleType", config.get("moduleType", ""), reject)
    if not kind.endswith(_COMPAT_SUFFIX):
        reject(
            f"{where}.type", f"{value.get('type')!r} is not a compatibility module (e.g. glm-compatibility)"
        )
        return None
    name = _profile(f"{where}.type", kind.removesuffix(_COMPAT_SUFFIX), reject)
    for key, option in config.items():
        if key == "thinking" and name == "glm" and _glm_thinking_on(option):
            continue
        if key == "thinking" and name == "glm":
            reject(
                f"{where}.config.thinking",
                "only {enabled: true, payload: {type: enabled}} (GLM's own default) is supported; "
                'a client turns thinking off per request with thinking: {type: "disabled"}',
            )
        else:
            reject(f"{where}.config.{key}", "not supported (compat profiles are fixed; docs/config.md)")
    return name


def _glm_thinking_on(option: Any) -> bool:
    if not isinstance(option, Mapping) or option.get("enabled") is not True:
        return False
    return (
        set(option) <= {"enabled", "payload"} and option.get("payload", _GLM_THINKING_ON) == _GLM_THINKING_ON
    )


def _profile(where: str, value: Any, reject: Reject) -> str | None:
    name = str(value).strip().lower()
    name = name.split(":", 1)[1] if ":" in name else name
    if name not in COMPAT_PROFILES:
        reject(where, f"{value!r} is not supported (one of {', '.join(COMPAT_PROFILES)})")
        return None
    return name


def context_routing(value: Any, reject: Reject) -> dict[str, Any]:
    """``virtualrouter.contextRouting`` as ``routing`` keys."""
    where = "virtualrouter.contextRouting"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        reject(where, "must be an object")
        return {}
    out: dict[str, Any] = {}
    for key, option in value.items():
        if key == "warnRatio":
            if isinstance(option, int | float) and not isinstance(option, bool) and 0 < option <= 1:
                out["context_ratio"] = float(option)
            else:
                reject(f"{where}.warnRatio", "must be a number in (0, 1]")
        elif key == "hardLimit":
            if isinstance(option, bool):
                out["context_overflow"] = "refuse" if option else "try"
            else:
                reject(f"{where}.hardLimit", "must be true or false")
        else:
            reject(f"{where}.{key}", "not supported (warnRatio and hardLimit are)")
    return out
