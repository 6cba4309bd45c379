"""Local engines: real engine processes (tests/engine_server.py), real HTTP, real signals.

Every engine here is a separate Python process started through ``cmd``; "gone" means the
pid no longer exists or is a zombie waiting for whoever inherited it.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
import trio

from routecodex_trio import ConfigError, NotFound, UnsupportedEndpoint, UpstreamUnavailable
from routecodex_trio.config import CONFIG_CONVERTER, config_from_mapping
from routecodex_trio.config._engines import EngineConfig, EngineSpec
from routecodex_trio.engines import EngineManager, EngineStatus, select_variant

if TYPE_CHECKING:
    from collections.abc import Callable

ENGINE = Path(__file__).resolve().parent / "engine_server.py"


def engine_cmd(*flags: str) -> str:
    return shlex.join([sys.executable, str(ENGINE), "--port", "${PORT}", *flags])


def gateway_config(tmp_path: Path, engines: dict[str, dict[str, Any]], **engines_table: Any) -> Any:
    """One ``openai-chat`` provider per engine table, each serving model ``m``."""
    providers = {name: {"type": "openai-chat", "models": ["m"], "engine": e} for name, e in engines.items()}
    raw = {
        "providers": providers,
        "routing": {"default": [f"{next(iter(engines))}.m"]},
        "engines": {"log_dir": str(tmp_path / "logs"), **engines_table},
    }
    return config_from_mapping(raw, environ={})


async def start_manager(nursery: trio.Nursery, config: Any) -> EngineManager:
    manager = EngineManager(config)
    await nursery.start(manager.run)
    return manager


def status(manager: EngineManager, name: str) -> EngineStatus:
    return next(s for s in manager.statuses() if s.name == name)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The state follows the parenthesised command name; Z is a zombie.
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.02)


def log_text(engine: EngineStatus) -> str:
    """The engine's log file (small; read synchronously)."""
    return Path(engine.log_file or "").read_text()


async def chat_text(base_url: str) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            base_url + "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
    text: str = response.json()["choices"][0]["message"]["content"]
    return text


# -- config -----------------------------------------------------------------------------------

ISSUE_EXAMPLE = """
[providers.local]
type = "openai-chat"
models = ["qwen2.5-coder-7b"]
[providers.local.engine]
cmd = "llama-server -m /models/qwen2.5-coder-7b.gguf --port ${PORT} -c 32768"
health_path = "/health"
start_timeout = 120
ttl = 300
stop_timeout = 10
env = { CUDA_VISIBLE_DEVICES = "0" }
endpoints = ["chat", "completions", "responses"]   # what it serves
[engines]
max_running = 1
[routing]
default = ["local.qwen2.5-coder-7b"]
"""


def test_issue_config_loads_and_keeps_port_placeholder() -> None:
    config = config_from_mapping(tomllib.loads(ISSUE_EXAMPLE), environ={})
    engine = config.providers["local"].engine
    assert engine is not None
    assert engine.cmd == "llama-server -m /models/qwen2.5-coder-7b.gguf --port ${PORT} -c 32768"
    assert (engine.health_path, engine.start_timeout, engine.ttl, engine.stop_timeout) == (
        "/health",
        120,
        300,
        10,
    )
    assert engine.env == {"CUDA_VISIBLE_DEVICES": "0"}
    assert engine.endpoints == ("chat", "completions", "responses")
    assert config.engines.max_running == 1
    assert config.providers["local"].base_url is None


def test_port_survives_env_expansion_only_in_engine_commands() -> None:
    raw = tomllib.loads(ISSUE_EXAMPLE)
    raw["providers"]["local"]["engine"]["cmd"] = "${BIN} --port ${PORT}"
    raw["providers"]["local"]["engine"]["variants"] = {"long": {"cmd": "${BIN} -c 9 --port ${PORT}"}}
    config = config_from_mapping(raw, environ={"BIN": "/opt/llama-server", "PORT": "1"})
    engine = config.providers["local"].engine
    assert engine is not None
    assert engine.cmd == "/opt/llama-server --port ${PORT}"
    assert engine.variants["long"].cmd == "/opt/llama-server -c 9 --port ${PORT}"
    # Elsewhere ${PORT} is an ordinary variable.
    raw["providers"]["local"]["headers"] = {"x-port": "${PORT}"}
    again = config_from_mapping(raw, environ={"BIN": "b", "PORT": "7"})
    assert again.providers["local"].headers == {"x-port": "7"}


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ({"engine": {"cmd": "srv --port 8080"}}, "providers.local.engine.cmd: must contain ${PORT}"),
        ({"engine": {}}, "providers.local.engine.cmd: required"),
        ({"engine": {"cmd": "srv ${PORT}"}, "base_url": "http://h/v1"}, "providers.local.base_url: not used"),
        ({"engine": {"cmd": "srv ${PORT}"}, "type": "mock"}, "providers.local.engine: a mock provider"),
        ({"engine": {"cmd": "srv ${PORT}", "health_path": "health"}}, "health_path: must start with '/'"),
        ({"engine": {"cmd": "srv ${PORT}", "variants": {"b": {"cmd": "x"}}}}, "variants.b.cmd: must contain"),
        ({"engine": {"cmd": "srv ${PORT}", "ttl": -1}}, "providers.local.engine.ttl: must be >= 0"),
        ({"engine": {"cmd": "srv ${PORT}", "endpoints": ["chat", "x"]}}, "endpoints[1]: 'x' is not one of"),
    ],
)
def test_engine_config_problems_name_their_key(provider: dict[str, Any], expected: str) -> None:
    raw = {
        "providers": {"local": {"type": "openai-chat", "models": ["m"], **provider}},
        "routing": {"default": ["local.m"]},
    }
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw, environ={})
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_variants_inherit_unset_keys() -> None:
    table = {
        "cmd": "srv ${PORT}",
        "ttl": 60,
        "env": {"A": "1", "B": "1"},
        "variants": {
            "long": {"cmd": "srv -c 9 ${PORT}", "max_context": 9, "start_timeout": 5, "env": {"B": "2"}}
        },
    }
    default, long = CONFIG_CONVERTER.structure(table, EngineConfig).specs()
    assert (default.variant, default.start_timeout, default.ttl) == ("default", 120, 60)
    assert (long.variant, long.max_context, long.start_timeout, long.ttl) == ("long", 9, 5, 60)
    assert long.env == {"A": "1", "B": "2"}


def test_unknown_engines_key_is_refused() -> None:
    raw = tomllib.loads(ISSUE_EXAMPLE)
    raw["engines"]["max_runing"] = 2
    with pytest.raises(ConfigError, match=r"engines: unknown key max_runing"):
        config_from_mapping(raw, environ={})


# -- model selector ---------------------------------------------------------------------------

SHORT_LONG: dict[str, Any] = {
    "cmd": "srv ${PORT} -c 8192",
    "max_context": 8192,
    "variants": {"long": {"cmd": "srv ${PORT} -c 131072", "max_context": 131072}},
}


def specs(table: dict[str, Any]) -> tuple[EngineSpec, ...]:
    """An ``[providers.X.engine]`` table, structured the way the loader does it."""
    return CONFIG_CONVERTER.structure(table, EngineConfig).specs()


def test_selector_picks_smallest_fit_else_largest() -> None:
    variants = specs(SHORT_LONG)
    small = select_variant(variants, 1200)
    assert small.variant == "default"
    assert "smallest variant that fits ~1200 tokens" in small.reason
    assert select_variant(variants, 8192).variant == "default"
    assert select_variant(variants, 8193).variant == "long"
    huge = select_variant(variants, 500_000)
    assert huge.variant == "long"
    assert "no variant fits ~500000 tokens" in huge.reason
    assert "'long' (max_context 131072) is the largest" in huge.reason


def test_selector_prefers_a_running_variant_that_fits() -> None:
    variants = specs(SHORT_LONG)
    warm = select_variant(variants, 1200, running=["long"])
    assert warm.variant == "long"
    assert "already running" in warm.reason
    assert "smallest fit: 'default'" in warm.reason
    # A running variant that does not fit is not preferred.
    assert select_variant(specs(SHORT_LONG), 100_000, running=["default"]).variant == "long"


def test_selector_single_variant_and_unset_context() -> None:
    only = select_variant(specs({"cmd": "srv ${PORT}"}), 10**9)
    assert (only.variant, only.reason) == ("default", "'default' is the only variant")
    unbounded = {"cmd": "srv ${PORT}", "variants": {"small": {"cmd": "s ${PORT}", "max_context": 10}}}
    assert select_variant(specs(unbounded), 11).variant == "default"
    assert select_variant(specs(unbounded), 5).variant == "small"


# -- lifecycle ----------------------------------------------------------------------------------


async def test_starts_on_demand_and_serves_openai_sdk(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = gateway_config(tmp_path, {"local": {"cmd": engine_cmd("--log-lines", "2"), "ttl": 0}})
    manager = await start_manager(nursery, config)
    assert status(manager, "local").state == "stopped"
    with trio.fail_after(10):
        async with manager.use("local", estimated_tokens=10, endpoint="chat") as lease:
            inside = status(manager, "local")
            assert (inside.state, inside.in_flight, inside.starts) == ("ready", 1, 1)
            assert inside.pid is not None and alive(inside.pid)
            assert lease.base_url == f"http://127.0.0.1:{inside.port}/v1"
            client = openai.AsyncOpenAI(base_url=lease.base_url, api_key="unused", max_retries=0)
            async with client:
                answer = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}]
                )
                assert answer.choices[0].message.content == "engine says hi"
                stream = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                text = "".join([c.choices[0].delta.content or "" async for c in stream])
                assert text.strip() == "engine says hi"
                legacy = await client.completions.create(model="m", prompt="hi")
                assert legacy.choices[0].text == "engine says hi"
    after = status(manager, "local")
    assert (after.state, after.in_flight) == ("ready", 0)
    assert after.last_use is not None and after.uptime_s is not None
    assert "engine log line 1" in after.log_lines
    assert "engine stderr line 1" in after.log_lines
    assert "engine listening on" in log_text(after)


async def test_concurrent_first_requests_join_one_start(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = gateway_config(tmp_path, {"local": {"cmd": engine_cmd("--health-delay", "0.4")}})
    manager = await start_manager(nursery, config)
    urls: list[str] = []

    async def request() -> None:
        async with manager.use("local", estimated_tokens=10, endpoint="chat") as lease:
            urls.append(lease.base_url)
            assert await chat_text(lease.base_url) == "engine says hi"

    with trio.fail_after(10):
        async with trio.open_nursery() as requests:
            for _ in range(6):
                requests.start_soon(request)
    assert len(urls) == 6
    assert len(set(urls)) == 1
    assert status(manager, "local").starts == 1
    assert log_text(status(manager, "local")).count("routecodex: starting") == 1


async def test_ttl_stops_an_idle_engine_and_the_next_request_restarts_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = gateway_config(tmp_path, {"local": {"cmd": engine_cmd(), "ttl": 0.3}})
    manager = await start_manager(nursery, config)
    with trio.fail_after(10):
        async with manager.use("local", estimated_tokens=10, endpoint="chat") as lease:
            first_pid = status(manager, "local").pid
            assert first_pid is not None
            # In flight: the ttl does not run while a request holds the engine.
            await trio.sleep(0.5)
            assert status(manager, "local").state == "ready"
            assert await chat_text(lease.base_url) == "engine says hi"
        await eventually(lambda: status(manager, "local").state == "stopped")
        assert not alive(first_pid)
        async with manager.use("local", estimated_tokens=10, endpoint="chat") as lease:
            assert await chat_text(lease.base_url) == "engine says hi"
            second = status(manager, "local")
    assert second.pid not in (None, first_pid)
    assert second.starts == 2


async def test_stop_by_name_then_restart(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = gateway_config(tmp_path, {"local": {"cmd": engine_cmd()}})
    manager = await start_manager(nursery, config)
    with trio.fail_after(10):
        async with manager.use("local", estimated_tokens=10, endpoint="chat"):
            pid = status(manager, "local").pid
        assert pid is not None
        await manager.stop("local")
        assert status(manager, "local").state == "stopped"
        assert not alive(pid)
        with pytest.raises(NotFound):
            await manager.stop("nope")
        async with manager.use("local", estimated_tokens=10, endpoint="chat") as lease:
            assert await chat_text(lease.base_url) == "engine says hi"
    assert status(manager, "local").starts == 2


async def test_eviction_waits_for_in_flight_requests(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = gateway_config(
        tmp_path,
        {"a": {"cmd": engine_cmd("--name", "a")}, "b": {"cmd": engine_cmd("--name", "b")}},
        max_running=1,
    )
    manager = await start_manager(nursery, config)
    holding, release = trio.Event(), trio.Event()
    b_answer: list[str] = []

    async def hold_a() -> None:
        async with manager.use("a", estimated_tokens=10, endpoint="chat") as lease:
            holding.set()
            await release.wait()
            # Still served while b waits for the slot.
            assert await chat_text(lease.base_url) == "a says hi"

    async def use_b() -> None:
        async with manager.use("b", estimated_tokens=10, endpoint="chat") as lease:
            b_answer.append(await chat_text(lease.base_url))

    with trio.fail_after(10):
        async with trio.open_nursery() as requests:
            requests.start_soon(hold_a)
            await holding.wait()
            a_pid = status(manager, "a").pid
            assert a_pid is not None
            requests.start_soon(use_b)
            await eventually(lambda: status(manager, "a").state == "stopping")
            await trio.sleep(0.3)
            assert status(manager, "b").state == "stopped"
            assert alive(a_pid)
            assert status(manager, "a").in_flight == 1
            release.set()
    assert b_answer == ["b says hi"]
    assert not alive(a_pid)
    assert [(s.name, s.state) for s in manager.statuses()] == [("a", "stopped"), ("b", "ready")]


async def test_joiners_of_a_start_are_served_before_it_is_evicted(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    engines = {
        "a": {"cmd": engine_cmd("--name", "a", "--health-delay", "0.3")},
        "b": {"cmd": engine_cmd("--name", "b")},
    }
    manager = await start_manager(nursery, gateway_config(tmp_path, engines, max_running=1))
    answers: list[str] = []

    async def request(name: str) -> None:
        async with manager.use(name, estimated_tokens=10, endpoint="chat") as lease:
            answers.append(await chat_text(lease.base_url))

    with trio.fail_after(10):
        async with trio.open_nursery() as requests:
            for _ in range(4):
                requests.start_soon(request, "a")
            await eventually(lambda: status(manager, "a").state == "starting")
            # b queues for the only slot while a is starting.
            requests.start_soon(request, "b")
    assert sorted(answers) == ["a says hi"] * 4 + ["b says hi"]
    assert [s.starts for s in manager.statuses()] == [1, 1]


async def test_eviction_picks_the_least_recently_used(nursery: trio.Nursery, tmp_path: Path) -> None:
    engines = {name: {"cmd": engine_cmd("--name", name)} for name in ("a", "b", "c")}
    manager = await start_manager(nursery, gateway_config(tmp_path, engines, max_running=2))
    with trio.fail_after(10):
        for name in ("a", "b", "a", "c"):
            async with manager.use(name, estimated_tokens=10, endpoint="chat") as lease:
                assert await chat_text(lease.base_url) == f"{name} says hi"
    assert {s.name: s.state for s in manager.statuses()} == {"a": "ready", "b": "stopped", "c": "ready"}


async def test_variants_chosen_by_size_and_running_one_kept(nursery: trio.Nursery, tmp_path: Path) -> None:
    engine = {
        "cmd": engine_cmd("--name", "short"),
        "max_context": 100,
        "variants": {"long": {"cmd": engine_cmd("--name", "long"), "max_context": 1000}},
    }
    manager = await start_manager(nursery, gateway_config(tmp_path, {"local": engine}, max_running=1))
    seen = []
    with trio.fail_after(10):
        for tokens in (50, 500, 50):
            async with manager.use("local", estimated_tokens=tokens, endpoint="chat") as lease:
                seen.append((lease.variant, lease.engine, await chat_text(lease.base_url), lease.reason))
    assert [s[:3] for s in seen] == [
        ("default", "local", "short says hi"),
        ("long", "local:long", "long says hi"),
        ("long", "local:long", "long says hi"),
    ]
    assert "already running" in seen[2][3]
    assert [(s.name, s.state) for s in manager.statuses()] == [("local", "stopped"), ("local:long", "ready")]


# -- failures ----------------------------------------------------------------------------------


async def test_failed_start_is_a_fast_503_and_logs_the_engine_output(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cmd = engine_cmd("--exit-at-once", "3", "--log-lines", "3")
    manager = await start_manager(nursery, gateway_config(tmp_path, {"local": {"cmd": cmd}}))
    start = trio.current_time()
    with trio.fail_after(10), pytest.raises(UpstreamUnavailable) as caught:
        async with manager.use("local", estimated_tokens=10, endpoint="chat"):
            pytest.fail("no lease on a failed engine")
    elapsed = trio.current_time() - start
    assert elapsed < 5, f"failed start took {elapsed:.2f} s"
    error = caught.value
    assert (error.status, error.code) == (503, "engine_unavailable")
    assert "exited with status 3" in error.message
    assert "log line" not in error.message
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "engine local failed to start: exited with status 3" in logged
    assert "engine log line 2" in logged and "engine stderr line 2" in logged

    # Cooldown: the next request fails at once, without starting the engine again.
    with pytest.raises(UpstreamUnavailable) as again:
        async with manager.use("local", estimated_tokens=10, endpoint="chat"):
            pytest.fail("no lease on a failed engine")
    assert again.value.retry_after_s is not None and again.value.retry_after_s > 0
    failed = status(manager, "local")
    assert (failed.state, failed.starts) == ("stopped", 1)
    assert failed.retry_in_s is not None and failed.last_error is not None
    # An explicit stop ends the cooldown: the operator asked for a fresh try.
    await manager.stop("local")
    with pytest.raises(UpstreamUnavailable):
        async with manager.use("local", estimated_tokens=10, endpoint="chat"):
            pytest.fail("no lease on a failed engine")
    assert status(manager, "local").starts == 2


async def test_joined_requests_all_fail_with_the_start(nursery: trio.Nursery, tmp_path: Path) -> None:
    cmd = engine_cmd("--exit-at-once", "1")
    manager = await start_manager(nursery, gateway_config(tmp_path, {"local": {"cmd": cmd}}))
    errors: list[int] = []

    async def request() -> None:
        try:
            async with manager.use("local", estimated_tokens=10, endpoint="chat"):
                pytest.fail("no lease on a failed engine")
        except UpstreamUnavailable as exc:
            errors.append(exc.status)

    with trio.fail_after(10):
        async with trio.open_nursery() as requests:
            for _ in range(4):
                requests.start_soon(request)
    assert errors == [503] * 4
    assert status(manager, "local").starts == 1


async def test_missing_program_is_a_503(nursery: trio.Nursery, tmp_path: Path) -> None:
    cmd = "/nonexistent/llama-server --port ${PORT}"
    manager = await start_manager(nursery, gateway_config(tmp_path, {"local": {"cmd": cmd}}))
    with (
        trio.fail_after(5),
        pytest.raises(UpstreamUnavailable, match="cannot run '/nonexistent/llama-server'"),
    ):
        async with manager.use("local", estimated_tokens=10, endpoint="chat"):
            pytest.fail("no lease")


async def test_slow_start_past_start_timeout(nursery: trio.Nursery, tmp_path: Path) -> None:
    cmd = engine_cmd("--never-healthy")
    engine = {"cmd": cmd, "start_timeout": 0.6, "stop_timeout": 1}
    manager = await start_manager(nursery, gateway_config(tmp_path, {"local": engine}))
    pids: list[int] = []

    async def watch_pid() -> None:
        await eventually(lambda: status(manager, "local").pid is not None)
        pids.append(status(manager, "local").pid or 0)

    with trio.fail_after(10):
        async with trio.open_nursery() as tasks:
            tasks.start_soon(watch_pid)
            with pytest.raises(UpstreamUnavailable, match=r"not healthy within 0.6 s \(GET /health: 503\)"):
                async with manager.use("local", estimated_tokens=10, endpoint="chat"):
                    pytest.fail("no lease")
    assert pids and not alive(pids[0])
    assert status(manager, "local").state == "stopped"


async def test_endpoint_not_served_is_a_400_and_starts_nothing(nursery: trio.Nursery, tmp_path: Path) -> None:
    engines: dict[str, dict[str, Any]] = {
        "local": {"cmd": engine_cmd(), "endpoints": ["chat"]},
        "other": {"cmd": engine_cmd()},
    }
    manager = await start_manager(nursery, gateway_config(tmp_path, engines))
    with pytest.raises(UnsupportedEndpoint) as caught:
        async with manager.use("local", estimated_tokens=10, endpoint="responses"):
            pytest.fail("no lease")
    assert caught.value.status == 400
    assert "serves only chat" in caught.value.message
    # Without ``endpoints``, an openai-chat engine serves what its type speaks.
    with pytest.raises(UnsupportedEndpoint):
        async with manager.use("other", estimated_tokens=10, endpoint="messages"):
            pytest.fail("no lease")
    assert [s.starts for s in manager.statuses()] == [0, 0]


async def test_manager_not_running_is_a_503(tmp_path: Path) -> None:
    manager = EngineManager(gateway_config(tmp_path, {"local": {"cmd": engine_cmd()}}))
    with pytest.raises(UpstreamUnavailable, match="not running"):
        async with manager.use("local", estimated_tokens=10, endpoint="chat"):
            pytest.fail("no lease")
    assert manager.has_engine("local") and not manager.has_engine("nope")


# -- no orphans ----------------------------------------------------------------------------------


async def test_cancelling_the_manager_kills_the_process_group(tmp_path: Path) -> None:
    # The engine ignores SIGTERM and has a child: SIGKILL after stop_timeout, whole group.
    cmd = engine_cmd("--ignore-sigterm", "--spawn-child")
    config = gateway_config(tmp_path, {"local": {"cmd": cmd, "stop_timeout": 0.3}})
    manager = EngineManager(config)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            async with manager.use("local", estimated_tokens=10, endpoint="chat") as lease:
                async with httpx.AsyncClient() as client:
                    pids = (await client.get(lease.base_url.removesuffix("/v1") + "/pids")).json()
            assert alive(pids["pid"]) and alive(pids["children"][0])
            nursery.cancel_scope.cancel()
            cancelled_at = trio.current_time()
        elapsed = trio.current_time() - cancelled_at
    assert not alive(pids["pid"])
    assert not alive(pids["children"][0])
    assert elapsed < 5, f"stopping took {elapsed:.2f} s"
    text = log_text(status(manager, "local"))
    assert "SIGTERM ignored" in text
    assert "SIGKILL" in text


PARENT = textwrap.dedent(
    """
    import sys, trio
    from routecodex_trio.config import config_from_mapping
    from routecodex_trio.engines import EngineManager

    raw = {
        "providers": {"local": {"type": "openai-chat", "models": ["m"], "engine": {"cmd": sys.argv[1]}}},
        "routing": {"default": ["local.m"]},
        "engines": {"log_dir": sys.argv[2]},
    }

    async def main():
        manager = EngineManager(config_from_mapping(raw, environ={}))
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            async with manager.use("local", estimated_tokens=1, endpoint="chat"):
                print(manager.statuses()[0].pid, flush=True)
                await trio.sleep_forever()

    trio.run(main)
    """
)


async def test_sigkill_of_the_gateway_leaves_no_engine_behind(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", PARENT, engine_cmd(), str(tmp_path)]
    parent = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        with trio.fail_after(15):
            line = b""
            while not line.endswith(b"\n"):
                chunk = await parent.stdout.receive_some()
                assert chunk, "the parent exited before printing the engine pid"
                line += chunk
        engine_pid = int(line)
        assert alive(engine_pid)
        parent.send_signal(signal.SIGKILL)
        await parent.wait()
        # PR_SET_PDEATHSIG: the kernel kills the engine when its parent dies.
        await eventually(lambda: not alive(engine_pid), timeout_s=5)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if parent.stdout is not None:
            await parent.stdout.aclose()


async def test_an_engine_dying_while_ready_is_logged_and_restarted_on_demand(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = await start_manager(nursery, gateway_config(tmp_path, {"local": {"cmd": engine_cmd()}}))
    with trio.fail_after(10):
        async with manager.use("local", estimated_tokens=10, endpoint="chat"):
            pid = status(manager, "local").pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: status(manager, "local").state == "stopped")
        assert status(manager, "local").last_error == "killed by SIGKILL while serving"
        assert any("engine local killed by SIGKILL while serving" in r.getMessage() for r in caplog.records)
        # Not a failed start: no cooldown, the next request starts it again.
        async with manager.use("local", estimated_tokens=10, endpoint="chat") as lease:
            assert await chat_text(lease.base_url) == "engine says hi"
    assert status(manager, "local").starts == 2
