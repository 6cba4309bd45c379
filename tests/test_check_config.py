"""``routecodex check-config`` in one pass (issue 20): every problem of a file in one run,
structure and meaning; one message per wrong value; element indexes; "did you mean"; a
warning for an Anthropic ``base_url`` ending in ``/v1``; exit codes 0, 1, 2.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

from routecodex_trio import ConfigError
from routecodex_trio.config import config_from_mapping

if TYPE_CHECKING:
    from pathlib import Path


def check(path: Path | str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routecodex_trio", "check-config", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def problems_of(raw: dict[str, object]) -> list[str]:
    try:
        config_from_mapping(raw, environ={})
    except ConfigError as exc:
        return list(exc.problems)
    return []


OK_PROVIDER = """
[providers.ok]
type = "openai-chat"
base_url = "https://api.openai.com/v1"
models = ["gpt-4o", "gpt-4o-mini"]
"""


def test_a_string_for_listen_is_one_message(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[server]\nlisten = "127.0.0.1:1"\n' + OK_PROVIDER + '[routing]\ndefault = ["ok.gpt-4o"]\n'
    )
    run = check(path)
    assert run.returncode == 1
    lines = [line.strip() for line in run.stderr.splitlines() if "server.listen" in line]
    assert lines == [
        "server.listen: expected a list, got the string '127.0.0.1:1' (write [\"127.0.0.1:1\"])"
    ], run.stderr


def test_a_string_for_any_list_is_one_message() -> None:
    raw = {
        "server": {"api_keys": "client-key-123"},
        "providers": {"p": {"type": "mock", "models": ["m"], "api_keys": "sk-abcdefgh"}},
        "routing": {"default": ["p.m"]},
        "classifier": {"coding_tools": "edit"},
    }
    problems = problems_of(raw)
    assert len(problems) == 3, problems
    assert all("expected a list, got the string" in p for p in problems)
    # The key itself is never quoted back when it came from the environment; literal here.
    assert {p.split(":", 1)[0] for p in problems} == {
        "server.api_keys",
        "providers.p.api_keys",
        "classifier.coding_tools",
    }


def test_structure_and_meaning_problems_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        """
[server]
gracefull_timeout = 3
api_keys = ["short"]

[timeouts]
conect = 3

[providers.glm]
type = "openai-chta"
base_url = "https://open.bigmodel.cn/api/paas/v4"
models = ["glm-4.6"]

[providers.claude]
type = "anthropic-messages"
models = ["claude-sonnet-4-5"]
"""
        + OK_PROVIDER
        + """
[routing]
default = ["ok.gpt-4o", "glm.glm-4.6", "ok.gpt-4", "opk.gpt-4o"]
thinking = [{targets = ["ok.gpt-4o"]}, {targets = ["ok.gpt-4o-mini", "ok.gpt4o"]}]
"""
    )
    run = check(path)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    reported = [line.strip() for line in run.stderr.splitlines()[1:]]
    assert sorted(reported) == sorted(
        [
            # structure
            "server: unknown key gracefull_timeout (did you mean 'graceful_timeout'?)",
            "timeouts: unknown key conect (did you mean 'connect'?)",
            "providers.glm.type: 'openai-chta' is not one of openai-chat, anthropic-messages, "
            "openai-responses, mock (did you mean 'openai-chat'?)",
            # meaning, in the same run
            "server.api_keys[0]: too short (at least 8 characters)",
            "providers.claude.base_url: required for type 'anthropic-messages'",
            # element indexes: the target's place in the list, not the pool's
            "routing.default[2]: 'ok.gpt-4': provider 'ok' lists no model 'gpt-4' (did you mean 'gpt-4o'?)",
            "routing.default[3]: 'opk.gpt-4o' names unknown provider 'opk' (did you mean 'ok'?)",
            "routing.thinking[1].targets[1]: 'ok.gpt4o': provider 'ok' lists no model 'gpt4o' "
            "(did you mean 'gpt-4o'?)",
        ]
    ), run.stderr
    # The broken provider glm is reported once, not again by every route naming it.
    assert "'glm.glm-4.6'" not in run.stderr


def test_unknown_keys_each_get_their_own_message() -> None:
    raw = {
        "providers": {"p": {"type": "mock", "models": ["m"], "modles": 1, "bse_url": "x"}},
        "routing": {"default": ["p.m"]},
        "routng": {},
    }
    assert sorted(problems_of(raw)) == [
        "providers.p: unknown key bse_url (did you mean 'base_url'?)",
        "providers.p: unknown key modles (did you mean 'models'?)",
        "unknown key routng (did you mean 'routing'?)",
    ]


def test_alias_list_element_index() -> None:
    raw = {
        "providers": {"p": {"type": "mock", "models": ["m", "n"]}},
        "routing": {"default": ["p.m"]},
        "aliases": {"fast": ["p.m", "p.x"], "slow": "thinkin"},
    }
    assert sorted(problems_of(raw)) == [
        "aliases.fast[1]: 'p.x': provider 'p' lists no model 'x'",
        "aliases.slow: 'thinkin' is neither a routing category (default, longcontext, thinking, tools, "
        "vision, background, websearch, coding) (did you mean 'thinking'?) nor a 'provider.model' target",
    ]


def test_anthropic_base_url_ending_in_v1_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        """
[providers.claude]
type = "anthropic-messages"
base_url = "https://api.anthropic.com/v1/"
api_key = "${ANTHROPIC_API_KEY:-sk-ant-placeholder}"
models = ["claude-sonnet-4-5"]

[routing]
default = ["claude.claude-sonnet-4-5"]
"""
    )
    path.chmod(0o600)
    run = check(path)
    assert run.returncode == 0, run.stderr
    assert "OK" in run.stdout
    assert (
        "routecodex: warning: providers.claude.base_url: 'https://api.anthropic.com/v1/' ends in /v1, "
        "but the gateway adds /v1/messages itself (requests would go to .../v1/v1/messages); "
        "write 'https://api.anthropic.com'"
    ) in run.stderr
    # An OpenAI-style base_url keeps its /v1: no warning there.
    path.write_text(OK_PROVIDER + '[routing]\ndefault = ["ok.gpt-4o"]\n')
    quiet = check(path)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr


def test_the_warning_shows_beside_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[providers.claude]\ntype = "anthropic-messages"\nbase_url = "https://api.anthropic.com/v1"\n'
        'models = ["c"]\n[routing]\ndefault = ["claude.c", "nope.c"]\n'
    )
    run = check(path)
    assert run.returncode == 1
    assert "ends in /v1" in run.stderr
    assert "routing.default[1]: 'nope.c' names unknown provider 'nope'" in run.stderr


def test_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(OK_PROVIDER + '[routing]\ndefault = ["ok.gpt-4o"]\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('[routing]\ndefault = "x"\n')
    assert check(good).returncode == 0
    assert check(bad).returncode == 1
    missing = check(tmp_path / "missing.toml")
    assert missing.returncode == 2
    assert "missing.toml: no such file" in missing.stderr
    assert check(good, "--no-such-option").returncode == 2
