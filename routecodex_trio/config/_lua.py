"""``--config gateway.lua``: a Lua script whose returned table is the config, as TOML would be.

Why Lua: a gateway configured by a script (seed 001) can compute its tables -- loops over
models, shared defaults, one provider per key -- where TOML would repeat itself. The script
gets no more power than that: it runs in a fresh Lua state (lupa, the optional extra
``routecodex_trio[lua]``) with only ``string`` (less ``dump``), ``table``, ``math``, ``utf8``
and the pure base functions. No ``os``, ``io``, ``require``, ``package``, ``debug``,
``load``/``loadfile``/``dofile``/``loadstring``, ``collectgarbage``, ``coroutine``, and no
way into Python: lupa's ``python`` module is removed and no Python object is handed in. A
script is text only (no precompiled chunks), has 64 MiB of memory and a budget of Lua
instructions, so a runaway loop is an error rather than a hung start.

Secrets stay out of the script as in TOML: write ``"${GLM_API_KEY}"`` and the loader expands
it after the script ran.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

from .._errors import ConfigError

LUA_EXTRA_HINT: Final = "pip install 'routecodex_trio[lua]'"
# Far more than any config needs (a loop over thousands of models takes well under 1 M), far
# fewer than a stuck loop reaches in a second.
MAX_INSTRUCTIONS: Final = 50_000_000
MAX_MEMORY_BYTES: Final = 64 * 1024 * 1024

# Runs the script in its own environment; ``load`` and ``debug`` are reached only here, as
# upvalues captured before the globals are stripped.
_RUNNER: Final = """
local load, sethook, getinfo = load, debug.sethook, debug.getinfo
local pcall, error, pairs, tostring = pcall, error, pairs, tostring
local function copy(t, skip)
  local out = {}
  for k, v in pairs(t) do if k ~= skip then out[k] = v end end
  return out
end
local string_lib, table_lib, math_lib = copy(string, "dump"), copy(table), copy(math)
local utf8_lib = utf8 and copy(utf8)
local base = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget", "rawlen", "rawset",
  "select", "setmetatable", "getmetatable", "tonumber", "tostring", "type", "xpcall", "_VERSION",
}
local globals = _G
return function(code, chunkname, limit)
  local env = {string = string_lib, table = table_lib, math = math_lib, utf8 = utf8_lib}
  for _, name in pairs(base) do env[name] = globals[name] end
  local chunk, err = load(code, chunkname, "t", env)
  if not chunk then return false, err end
  local function stop()
    -- From now on every instruction of the script fails: a pcall in it cannot swallow this.
    -- The runner's own instructions (after pcall returns) go on to clear the hook.
    sethook(stop, "", 1)
    local info = getinfo(2, "S")
    if info and info.source == chunkname then
      error("the script ran too long (more than " .. tostring(limit) .. " Lua instructions)", 2)
    end
  end
  sethook(stop, "", limit)
  local ok, result = pcall(chunk)
  sethook()
  return ok, result
end
"""
_STRIPPED: Final = (
    "python",
    "os",
    "io",
    "require",
    "package",
    "debug",
    "load",
    "loadfile",
    "dofile",
    "loadstring",
    "collectgarbage",
    "coroutine",
)
_KEY_LINE: Final = r"(^|[^A-Za-z0-9_])({key}\s*=|\[\s*[\"']{key}[\"']\s*\]\s*=)"


def lua_to_mapping(path: Path, text: str) -> dict[str, Any]:
    """Run the script at ``path`` (its ``text``) and return its table as a config mapping.

    Raises:
        ConfigError: lupa is not installed (naming the extra), the script does not compile or
            fails (with its file name and line), or it returns something that is not a table
            of strings, numbers, booleans and tables.
    """
    try:
        import lupa  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise ConfigError(f"{path}: a .lua config needs Lua support: {LUA_EXTRA_HINT}") from None
    try:
        runtime = lupa.LuaRuntime(
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            max_memory=MAX_MEMORY_BYTES,
        )
    except TypeError:  # a lupa built for LuaJIT cannot cap memory
        runtime = lupa.LuaRuntime(register_eval=False, register_builtins=False, unpack_returned_tuples=True)
    run = runtime.execute(_RUNNER)
    globals_ = runtime.globals()
    for name in _STRIPPED:
        globals_[name] = None
    try:
        ok, result = run(text, f"={path.name}", MAX_INSTRUCTIONS)
    except lupa.LuaMemoryError:
        raise ConfigError(f"{path}: the script used more than {MAX_MEMORY_BYTES >> 20} MiB") from None
    except lupa.LuaError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not ok:
        raise ConfigError(f"{path}: Lua error: {result}")
    if lupa.lua_type(result) != "table":
        raise ConfigError(f"{path}: the script must return a table (the config), not {_kind(lupa, result)}")
    value = _to_python(lupa, result, "")
    if isinstance(value, list):
        if value:
            raise ConfigError(f"{path}: the script must return a table of sections, not a list")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: the script must return a table (the config)")
    return value


def _kind(lupa: Any, value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else str(lupa.lua_type(value))


def _to_python(lupa: Any, value: Any, where: str) -> Any:
    """A Lua value as TOML would give it: sequences -> lists, other tables -> dicts."""
    kind = lupa.lua_type(value)
    if kind is None:
        if isinstance(value, bool | int | float | str):
            return value
        raise ConfigError(f"{where or 'config'}: {type(value).__name__} is not a config value")
    if kind != "table":
        raise ConfigError(f"{where or 'config'}: a Lua {kind} is not a config value")
    items = list(value.items())
    keys = [k for k, _ in items]
    if keys and all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
        if sorted(keys) != list(range(1, len(keys) + 1)):
            raise ConfigError(f"{where or 'config'}: a list must have keys 1..n with no holes")
        return [_to_python(lupa, v, f"{where}[{k - 1}]") for k, v in sorted(items, key=lambda kv: kv[0])]
    out: dict[str, Any] = {}
    for key, item in items:
        if not isinstance(key, str):
            raise ConfigError(f"{where or 'config'}: key {key!r} is not a string (tables mix list and keys?)")
        out[key] = _to_python(lupa, item, f"{where}.{key}" if where else key)
    return out


def with_lua_lines(error: ConfigError, path: Path, text: str) -> ConfigError:
    """``error`` with ``(gateway.lua:LINE)`` after each problem whose key is set on one line only.

    The schema is checked on the returned table, after the script ran; the key's own assignment
    is where a user looks, so a problem naming ``providers.glm.typ`` points at ``typ = ...``.
    """
    lines = text.splitlines()
    problems = []
    for problem in error.problems:
        key_path = problem.split(":", 1)[0].strip()
        unknown = re.search(r"unknown keys? ([A-Za-z_][A-Za-z0-9_-]*)", problem)
        key = unknown.group(1) if unknown else re.split(r"[.\[]", key_path.rstrip("]"))[-1]
        found = _line_of(key, lines) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key) else None
        problems.append(f"{problem} ({path.name}:{found})" if found else problem)
    head = str(error).split("\n", 1)[0]
    return ConfigError(head + "\n  " + "\n  ".join(problems), problems=tuple(problems))


def _line_of(key: str, lines: list[str]) -> int | None:
    pattern = re.compile(_KEY_LINE.format(key=re.escape(key)))
    hits = [n for n, line in enumerate(lines, 1) if pattern.search(line.split("--", 1)[0])]
    return hits[0] if len(hits) == 1 else None
