"""Secrets and logs at the edges (issue 13): keys in cut, escaped or encoded upstream text,
``${VAR}`` values in config errors, config file permissions, and forged log lines.

Every test here failed on the code before the fix it pins (each docstring says what the bug was).
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx
import orjson
import pytest
import trio

from routecodex_trio import ConfigError, config_from_mapping
from routecodex_trio.observability import setup_logging

from .conftest import start_cli, stop_cli
from .fakes import Receive, Send, _json, _read_body, start_app

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import GatewayFactory

KEY: Final = "sk-live-0123456789abcdefghijklmnopqrstuvwxyz"
# Any run of this many characters of the key counts as a leak.
LEAK_RUN: Final = 10


def _json_escaped(text: str, every: int = 1) -> str:
    """``text`` with every ``every``-th character written as ``\\u00XX`` (mixed forms too)."""
    return "".join(f"\\u{ord(c):04x}" if i % every == 0 else c for i, c in enumerate(text))


def _url_encoded(text: str) -> str:
    return "".join(f"%{ord(c):02X}" for c in text)


def _readable_forms(text: str) -> list[str]:
    """``text`` as written, with JSON ``\\uXXXX`` escapes undone, and URL-decoded."""
    unescaped = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    return [text, unescaped, urllib.parse.unquote(text), urllib.parse.unquote(unescaped)]


def leaked_runs(text: str) -> list[str]:
    """Every ``LEAK_RUN``-long piece of ``KEY`` found in ``text`` in any readable form."""
    runs = {KEY[i : i + LEAK_RUN] for i in range(len(KEY) - LEAK_RUN + 1)}
    return sorted({run for form in _readable_forms(text) for run in runs if run in form})


@attrs.define(eq=False)
class KeyQuotingUpstream:
    """An OpenAI-chat upstream whose errors quote the key it was sent, in awkward shapes.

    By requested model: ``straddle`` answers a text/plain 401 whose key starts at character
    285, across the 300-character cut; ``escaped`` and ``urlencoded`` answer text/plain 401s
    quoting the key JSON-escaped (every other character) or percent-encoded; ``doubled`` answers
    a JSON 401 whose message is itself JSON with the key fully escaped; ``midstream`` streams
    content and then an error event quoting the key escaped (relayed byte for byte).
    """

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        key = headers.get("authorization", "").removeprefix("Bearer ")
        body = orjson.loads(await _read_body(receive) or b"{}")
        model = body.get("model")
        text: str | None = None
        if model == "straddle":
            text = "E" * 285 + key + " is not a valid key"
        elif model == "escaped":
            text = '<html>proxy said: {"detail": "bad key ' + _json_escaped(key, 2) + '"}</html>'
        elif model == "urlencoded":
            text = "<html>denied: GET https://api.example.invalid/v1?key=" + _url_encoded(key) + "</html>"
        elif model == "forge":
            text = "oops\n" + FORGED + "\r\n" + FORGED + "\u2028\x1b[2J" + FORGED
        if text is not None:
            status = 500 if model == "forge" else 401
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": text.encode()})
            return
        if model == "doubled":
            inner = '{"detail": "Incorrect API key provided: ' + _json_escaped(key) + '"}'
            await _json(
                send, 401, {"error": {"message": inner, "type": "invalid_request_error", "code": None}}
            )
            return
        if model == "midstream":
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}
                ],
            }
            error = (
                '{"error": {"message": "key ' + _json_escaped(key) + ' was revoked", "type": "server_error"}}'
            )
            frames = b"data: " + orjson.dumps(chunk) + b"\n\ndata: " + error.encode() + b"\n\n"
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": frames})
            return
        await _json(send, 404, {"error": {"message": "no such model", "type": "invalid_request_error"}})


MODELS: Final = ("straddle", "escaped", "urlencoded", "doubled", "midstream", "forge")
FORGED: Final = "2026-01-01 00:00:00,000 INFO routecodex_trio.access: id=forged status=200"


def _config(url: str) -> dict[str, Any]:
    return {
        "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 2},
        "retry": {"attempts": 1},
        "providers": {
            "up": {"type": "openai-chat", "base_url": url + "/v1", "api_key": KEY, "models": list(MODELS)}
        },
        "routing": {"default": ["up.straddle"]},
    }


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("model", ["straddle", "escaped", "urlencoded", "doubled"])
async def test_upstream_error_text_never_leaks_part_of_a_key(
    model: str, nursery: trio.Nursery, start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: upstream error text was cut to 300 characters *before* the keys were replaced,
    so a key straddling the cut reached the client and the log (its first 15 characters here);
    and only the key's literal form was replaced, so a JSON-escaped (``\\u00XX``) or URL-encoded
    key in an upstream's error text went through whole.
    """
    url = await start_app(nursery, KeyQuotingUpstream())
    gateway = await start_gateway(_config(url))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        for stream in (False, True):
            with trio.fail_after(10):
                response = await http.post(
                    "/v1/chat/completions",
                    json={
                        "model": f"up.{model}",
                        "stream": stream,
                        "messages": [{"role": "user", "content": "x"}],
                    },
                )
            assert response.status_code == 401, response.text
            assert "***" in response.text, response.text
            assert not leaked_runs(response.text), response.text
    assert not leaked_runs(_log_text(caplog))


async def test_key_escaped_in_a_relayed_stream_event_is_scrubbed(
    nursery: trio.Nursery, start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: an error event after content is relayed byte for byte on the passthrough path;
    the client-bound bytes were scrubbed of the key's literal form only, so a JSON-escaped key
    reached the client.
    """
    url = await start_app(nursery, KeyQuotingUpstream())
    gateway = await start_gateway(_config(url))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        with trio.fail_after(10):
            response = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "up.midstream",
                    "stream": True,
                    "messages": [{"role": "user", "content": "x"}],
                },
            )
    assert response.status_code == 200
    assert '"hi"' in response.text and "revoked" in response.text, response.text
    assert not leaked_runs(response.text), response.text
    assert not leaked_runs(_log_text(caplog))


def test_scrubber_covers_every_form_and_mix() -> None:
    from routecodex_trio._scrub import Scrubber, scrub_then_cut

    scrubber = Scrubber((KEY, "other-key-42"))
    forms = [
        KEY,
        _json_escaped(KEY),
        _json_escaped(KEY, 3),
        _json_escaped(KEY).upper().replace("\\U", "\\u"),
        _url_encoded(KEY),
        _url_encoded(KEY).lower(),
        urllib.parse.quote(KEY, safe=""),
    ]
    for form in forms:
        text = f"before {form} after"
        assert scrubber.text(text) == "before *** after", form
        assert scrubber.bytes(text.encode()) == b"before *** after", form
    # Scrubbed first, cut second: nothing of a key straddling the cut is left.
    cut = scrub_then_cut("x" * 290 + KEY, scrubber)
    assert cut == "x" * 290 + "***"
    # Text with no key and no escapes is returned as it is.
    plain = "hello \\n world 100%"
    assert scrubber.text(plain) == plain


async def test_upstream_text_cannot_forge_text_log_lines(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    """Regression: an upstream's error text with ``\\n`` in it reached the text log as it was, so
    the upstream could write whole log lines of its choosing (here: a fake access line).
    """
    buffer = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    handler = setup_logging("info", "text", stream=buffer)
    try:
        url = await start_app(nursery, KeyQuotingUpstream())
        gateway = await start_gateway(_config(url))
        async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
            with trio.fail_after(10):
                response = await http.post(
                    "/v1/chat/completions",
                    json={"model": "up.forge", "messages": [{"role": "user", "content": "x"}]},
                )
        assert response.status_code == 502, response.text
        logging.getLogger("routecodex_trio.test").error(
            "exception text too", exc_info=ValueError("a\n" + FORGED)
        )
        handler.flush()
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    log = buffer.getvalue()
    assert "oops" in log, log
    lines = log.splitlines()
    forged = [line for line in lines if line.startswith(FORGED) or line.startswith("\x1b")]
    assert not forged, log
    # Every line of the log is a record (or an indented traceback line), and no control
    # character survives in any of them.
    for line in lines:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", line) or line.startswith("  "), line
        assert line.isprintable(), repr(line)
    assert "\\n" + FORGED in log and "\\u2028\\x1b[2J" in log


def test_every_request_line_field_is_escaped() -> None:
    """Regression: logfmt values quoted ``\\n`` but passed ``\\r`` and other controls through."""
    from routecodex_trio.observability import RequestRecord
    from routecodex_trio.observability._logs import format_request_line

    record = RequestRecord(
        endpoint="chat", status=200, duration_s=0.1, category="default", target="a.b\rX\x1b"
    )
    line = format_request_line(record, "req_1")
    assert line.isprintable(), repr(line)
    assert 'target="a.b\\rX\\x1b"' in line


# ---------------------------------------------------------------------------------------------
# Config: ${VAR} values in errors, file permissions

ENV_SECRET: Final = "sk-proj-from-the-environment-9f3e"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routecodex_trio", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_config_errors_hide_values_from_the_environment() -> None:
    """Regression: a validation error quoted the expanded value of a ``${VAR}``, so a secret put
    in the wrong key (``listen``, ``base_url``) was printed by ``check-config``, ``serve`` and
    ``/admin/reload``. The key path is printed with "(value from ${VAR}, hidden)" instead.
    """
    raw = {
        "server": {"listen": ["${OPENAI_API_KEY}"], "graceful_timeout": "${GRACE}"},
        "providers": {"m": {"type": "mock", "models": ["a"]}},
        "routing": {"default": ["m.a"]},
    }
    environ = {"OPENAI_API_KEY": ENV_SECRET, "GRACE": ENV_SECRET + "-2"}
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw, environ=environ)
    message = caught.value.message
    assert ENV_SECRET not in message and ENV_SECRET not in str(caught.value.problems)
    assert "server.graceful_timeout" in message and "(value from ${GRACE}, hidden)" in message
    raw["server"] = {"listen": ["127.0.0.1:0", "${OPENAI_API_KEY}"]}
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(raw, environ=environ)
    message = caught.value.message
    assert ENV_SECRET not in message
    assert "server.listen: (value from ${OPENAI_API_KEY}, hidden) is not 'host:port'" in message


def test_check_config_hides_values_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[server]\nlisten = ["${OPENAI_API_KEY}"]\n'
        '[providers.oa]\ntype = "openai-chat"\nbase_url = "${OA_URL}"\nmodels = ["m"]\n'
        '[routing]\ndefault = ["oa.m"]\n'
    )
    path.chmod(0o600)
    result = _cli(
        "check-config", str(path), env={"OPENAI_API_KEY": ENV_SECRET, "OA_URL": "ftp://" + ENV_SECRET}
    )
    assert result.returncode == 1, result.stderr
    assert ENV_SECRET not in result.stdout + result.stderr
    assert "server.listen: (value from ${OPENAI_API_KEY}, hidden)" in result.stderr, result.stderr
    assert "providers.oa.base_url: (value from ${OA_URL}, hidden)" in result.stderr, result.stderr


def _keyed_config(path: Path, key_line: str) -> None:
    path.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\n'
        '[providers.oa]\ntype = "openai-chat"\nbase_url = "http://127.0.0.1:9/v1"\n'
        f'{key_line}\nmodels = ["m"]\n'
        '[routing]\ndefault = ["oa.m"]\n'
    )


@pytest.mark.parametrize(
    ("key_line", "mode", "warns"),
    [
        ('api_key = "sk-literal-key-in-the-file-1"', 0o644, True),
        ('api_key = "sk-literal-key-in-the-file-1"', 0o640, True),
        ('api_key = "${OA_KEY}"', 0o604, True),
        ('api_key = "sk-literal-key-in-the-file-1"', 0o600, False),
        ("", 0o644, False),
    ],
    ids=["world-readable", "group-readable", "expanded-others", "private", "no-keys"],
)
def test_check_config_warns_about_a_readable_file_with_keys(
    key_line: str, mode: int, warns: bool, tmp_path: Path
) -> None:
    """Regression: a config file holding keys and readable by group or others went unremarked."""
    path = tmp_path / "gw.toml"
    _keyed_config(path, key_line)
    path.chmod(mode)
    result = _cli("check-config", str(path), env={"OA_KEY": ENV_SECRET})
    assert result.returncode == 0, result.stderr
    assert ("warning" in result.stderr and f"chmod 600 {path}" in result.stderr) is warns, result.stderr
    if warns:
        assert f"mode 0{mode:o}" in result.stderr
    assert ENV_SECRET not in result.stderr and "sk-literal" not in result.stderr


async def test_serve_warns_about_a_readable_file_with_keys(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    _keyed_config(path, 'api_key = "sk-literal-key-in-the-file-1"')
    path.chmod(0o644)
    gateway = await start_cli(nursery, path, {})
    assert await stop_cli(gateway) == 0
    assert "holds API keys and is readable by group and others (mode 0644)" in gateway.log, gateway.log
    assert "sk-literal" not in gateway.log
