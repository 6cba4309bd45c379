"""``--config gateway.lua``: a sandboxed Lua script whose returned table is the TOML schema."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import attrs
import pytest
import trio

from routecodex_trio import ConfigError, load_config
from routecodex_trio.config import _lua

from .conftest import start_cli, stop_cli

if TYPE_CHECKING:
    from pathlib import Path

GATEWAY_LUA = """\
-- Shared defaults, one model list: what a script buys over TOML.
local models = {}
for _, size in ipairs({"small", "large"}) do
  models["m-" .. size] = { max_tokens = size == "small" and 1024 or 8192 }
end
return {
  server = { listen = { "127.0.0.1:0" }, graceful_timeout = 1.5 },
  providers = {
    mock = { type = "mock", models = models, mock = { reply = "lua says {prompt}" } },
  },
  routing = {
    default = { "mock.m-small" },
    background = { { targets = { "mock.m-large" }, mode = "priority" } },
  },
  classifier = { longcontext_threshold = 1000 * 100 },
}
"""

GATEWAY_TOML = """\
[server]
listen = ["127.0.0.1:0"]
graceful_timeout = 1.5

[providers.mock]
type = "mock"
mock = { reply = "lua says {prompt}" }

[providers.mock.models.m-small]
max_tokens = 1024

[providers.mock.models.m-large]
max_tokens = 8192

[routing]
default = ["mock.m-small"]
background = [{ targets = ["mock.m-large"], mode = "priority" }]

[classifier]
longcontext_threshold = 100000
"""


def write(tmp_path: Path, text: str, name: str = "gateway.lua") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_returned_table_is_the_toml_schema(tmp_path: Path) -> None:
    from_lua = load_config(write(tmp_path, GATEWAY_LUA))
    from_toml = load_config(write(tmp_path, GATEWAY_TOML, "gateway.toml"))
    by_id = {m.id: m for m in from_lua.providers["mock"].models}
    assert by_id == {m.id: m for m in from_toml.providers["mock"].models}
    lua_provider = attrs.evolve(from_lua.providers["mock"], models=())
    assert lua_provider == attrs.evolve(from_toml.providers["mock"], models=())
    assert attrs.evolve(from_lua, providers={}, source=None) == attrs.evolve(
        from_toml, providers={}, source=None
    )


def test_env_references_expand_as_in_toml(tmp_path: Path) -> None:
    script = GATEWAY_LUA.replace("graceful_timeout = 1.5", 'api_keys = { "${INBOUND_KEY}" }')
    config = load_config(write(tmp_path, script), environ={"INBOUND_KEY": "inbound-key-123"})
    assert [k.reveal() for k in config.server.api_keys] == ["inbound-key-123"]


SANDBOX_PROBE = """\
local reachable = {}
for _, name in ipairs({"os", "io", "require", "package", "debug", "load", "loadfile", "dofile",
                       "loadstring", "collectgarbage", "coroutine", "python", "_G", "print"}) do
  if _ENV[name] ~= nil then reachable[#reachable + 1] = name end
end
if string.dump ~= nil then reachable[#reachable + 1] = "string.dump" end
return { server = { listen = { "127.0.0.1:0" } }, reachable = reachable }
"""


def test_the_script_reaches_no_os_io_require_load_or_python(tmp_path: Path) -> None:
    raw = _lua.lua_to_mapping(write(tmp_path, SANDBOX_PROBE), SANDBOX_PROBE)
    assert raw["reachable"] == {}, raw["reachable"]  # an empty Lua table: nothing reachable


@pytest.mark.parametrize(
    "call",
    [
        'os.execute("true")',
        'io.open("/etc/passwd")',
        'require("os")',
        'load("return 1")()',
        'dofile("/etc/passwd")',
        'loadfile("/etc/passwd")',
        'python.eval("1")',
        "string.dump(function() end)",
    ],
)
def test_each_escape_is_an_error_naming_the_line(tmp_path: Path, call: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f"local a = 1\nlocal b = {call}\nreturn {{}}\n"))
    message = str(caught.value)
    assert "gateway.lua:2:" in message and "nil value" in message, message


def test_syntax_and_runtime_errors_carry_the_lua_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "local x = 1\n\nreturn { server = \n"))
    assert "gateway.lua:4:" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "local x = 1\nlocal y = x .. {}\nreturn {}\n"))
    assert "gateway.lua:2: attempt to concatenate" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, 'local x = 1\n\n\nerror("no providers configured")\n'))
    assert "gateway.lua:4: no providers configured" in str(caught.value)


def test_schema_problems_point_at_the_line_that_sets_the_key(tmp_path: Path) -> None:
    script = GATEWAY_LUA.replace("graceful_timeout = 1.5", "graceful_timeout = 1.5, listne = 3")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, script))
    assert "unknown key listne (did you mean 'listen'?) (gateway.lua:7)" in str(caught.value)


def test_a_runaway_script_is_stopped_even_inside_pcall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_lua, "MAX_INSTRUCTIONS", 200_000)
    script = "local n = 0\nwhile true do\n  pcall(function() while true do n = n + 1 end end)\nend\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, script))
    assert "the script ran too long (more than 200000 Lua instructions)" in str(caught.value)
    assert "gateway.lua:" in str(caught.value)
    # The state is usable afterwards: the next script loads.
    assert load_config(write(tmp_path, GATEWAY_LUA)).providers["mock"].type == "mock"


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("return 42\n", "must return a table (the config), not number"),
        ("return {1, 2}\n", "must return a table of sections, not a list"),
        (
            "return { server = { listen = { [1] = 'a', [3] = 'b' } } }\n",
            "server.listen: a list must have keys 1..n",
        ),
        ("return { server = function() end }\n", "server: a Lua function is not a config value"),
    ],
)
def test_what_the_script_returns_must_be_config_data(tmp_path: Path, script: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, script))
    assert message in str(caught.value)


def test_without_lupa_one_line_names_the_extra(tmp_path: Path) -> None:
    path = write(tmp_path, GATEWAY_LUA)
    code = (
        "import sys; sys.modules['lupa'] = None\n"  # a blocked import: ImportError, as if not installed
        "from routecodex_trio.cli import main\n"
        f"sys.exit(main(['check-config', {str(path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "pip install 'routecodex_trio[lua]'" in lines[0] and "gateway.lua" in lines[0]


async def test_serve_runs_from_a_lua_config(tmp_path: Path, nursery: trio.Nursery) -> None:
    import httpx

    gateway = await start_cli(nursery, write(tmp_path, GATEWAY_LUA), {})
    try:
        async with httpx.AsyncClient() as client:
            with trio.fail_after(10):
                reply = await client.post(
                    gateway.url + "/v1/chat/completions",
                    json={"model": "any", "messages": [{"role": "user", "content": "hello lua"}]},
                )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"].startswith("lua says hello lua")
    finally:
        assert await stop_cli(gateway) == 0
