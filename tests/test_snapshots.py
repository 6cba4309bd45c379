"""Snapshots on real files: layout, permissions, redaction, the size cap, and replay loading."""

from __future__ import annotations

import logging
import os
import stat
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trio

from routecodex_trio import InvalidRequest, config_from_mapping
from routecodex_trio.config._model import SnapshotsConfig
from routecodex_trio.observability import (
    STAGES,
    SnapshotWriter,
    client_request_payload,
    config_secrets,
    load_client_request,
)

if TYPE_CHECKING:
    from pathlib import Path

UPSTREAM_KEY = "sk-upstream-secret-123"
SECOND_KEY = "sk-second-upstream-789"
CLIENT_KEY = "rk-client-secret-456"
ALL_SECRETS = (UPSTREAM_KEY, SECOND_KEY, CLIENT_KEY)
CHAT_BODY = {"model": "x", "messages": [{"role": "user", "content": "hello"}], "stream": True}


def _writer(tmp_path: Path, **config: Any) -> SnapshotWriter:
    snapshots = SnapshotsConfig(enabled=True, dir=str(tmp_path / "samples"), **config)
    return SnapshotWriter(snapshots, secrets=ALL_SECRETS)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


async def test_one_file_per_stage_with_private_permissions(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    entry = writer.entry("openai-chat", "req_abc")
    with trio.fail_after(10):
        for stage in STAGES:
            if stage != "upstream-response":
                await entry.write(stage, {"stage": stage})
    folder = tmp_path / "samples" / "openai-chat" / "req_abc"
    assert sorted(p.name for p in folder.iterdir()) == [
        "01-client-request.json",
        "02-routing.json",
        "03-upstream-request.json",
        "04-upstream-frames.json",
        "05-client-response.json",
    ]
    for directory in (tmp_path / "samples", folder.parent, folder):
        assert _mode(directory) == 0o700, directory
    for file in folder.iterdir():
        assert _mode(file) == 0o600, file
    document = orjson.loads((folder / "02-routing.json").read_bytes())
    assert document["stage"] == "routing"
    assert document["request_id"] == "req_abc"
    assert document["protocol"] == "openai-chat"
    assert document["seq"] == 2
    assert document["payload"] == {"stage": "routing"}


async def test_modes_hold_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        writer = _writer(tmp_path)
        with trio.fail_after(10):
            path = await writer.entry("anthropic-messages", "req_1").write("routing", {})
    finally:
        os.umask(old)
    assert path is not None
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


async def test_secrets_and_auth_headers_are_never_written(tmp_path: Path) -> None:
    config = config_from_mapping(
        {
            "server": {"listen": ["127.0.0.1:0"], "api_keys": ["${CLIENT_KEY}"]},
            "providers": {
                "openai": {
                    "type": "openai-chat",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_key": "${UPSTREAM_KEY}",
                    "api_keys": ["${SECOND_KEY}"],
                    "models": ["gpt-4o-mini"],
                }
            },
            "routing": {"default": ["openai.gpt-4o-mini"]},
        },
        environ={"CLIENT_KEY": CLIENT_KEY, "UPSTREAM_KEY": UPSTREAM_KEY, "SECOND_KEY": SECOND_KEY},
    )
    assert set(config_secrets(config)) == set(ALL_SECRETS)
    writer = SnapshotWriter(
        SnapshotsConfig(enabled=True, dir=str(tmp_path / "samples")), secrets=config_secrets(config)
    )
    entry = writer.entry("openai-chat", "req_secret")
    frame_with_key = f'data: {{"echo": "my key is {UPSTREAM_KEY}"}}\n\n'.encode()
    with trio.fail_after(10):
        await entry.write(
            "client-request",
            client_request_payload(
                "/v1/chat/completions",
                # ASGI-style pairs, as hypercorn hands them over.
                [(b"authorization", f"Bearer {CLIENT_KEY}".encode()), (b"content-type", b"application/json")],
                orjson.dumps({**CHAT_BODY, "user": f"note {CLIENT_KEY} inside"}),
            ),
        )
        await entry.write(
            "upstream-request",
            {
                "url": "https://api.example/v1/chat/completions",
                "headers": {
                    "Authorization": f"Bearer {UPSTREAM_KEY}",
                    "X-Api-Key": "some-unknown-key",
                    "Api-Key": "azure-style-key",
                    "Proxy-Authorization": "Basic dXNlcjpwYXNz",
                    "Content-Type": "application/json",
                },
                "body": CHAT_BODY,
            },
        )
        await entry.write("upstream-frames", [frame_with_key, b"data: [DONE]\n\n"])
        await entry.write(
            "client-response", {"text": f"{SECOND_KEY}{SECOND_KEY}", "key": config.server.api_keys[0]}
        )

    everything = _all_bytes(tmp_path / "samples")
    for secret in (*ALL_SECRETS, "some-unknown-key", "azure-style-key", "dXNlcjpwYXNz"):
        assert secret.encode() not in everything, secret
    folder = tmp_path / "samples" / "openai-chat" / "req_secret"
    request = orjson.loads((folder / "01-client-request.json").read_bytes())["payload"]
    assert request["headers"] == [["authorization", "***"], ["content-type", "application/json"]]
    assert request["body"]["user"] == "note *** inside"  # JSON bytes are kept as JSON
    upstream = orjson.loads((folder / "02-upstream-request.json").read_bytes())["payload"]
    assert upstream["headers"]["Authorization"] == "***"
    assert upstream["headers"]["Content-Type"] == "application/json"
    frames = orjson.loads((folder / "03-upstream-frames.json").read_bytes())["payload"]
    assert frames == ['data: {"echo": "my key is ***"}\n\n', "data: [DONE]\n\n"]
    response = orjson.loads((folder / "04-client-response.json").read_bytes())["payload"]
    assert response == {"text": "******", "key": "***"}


async def test_request_ids_cannot_leave_the_directory(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    with trio.fail_after(10):
        path = await writer.entry("../../x", "../../../etc/evil").write("routing", {})
    assert path is not None
    root = (tmp_path / "samples").resolve()
    assert root in path.resolve().parents
    assert os.listdir(tmp_path) == ["samples"]
    with pytest.raises(ValueError, match="stage"):
        await writer.entry("openai-chat", "r").write("../escape", {})


async def _fill(writer: SnapshotWriter, request_id: str, stamp: int) -> None:
    entry = writer.entry("openai-chat", request_id)
    await entry.write("client-request", {"pad": "x" * 950})
    # Distinct, ordered "last written" times regardless of the filesystem clock's granularity.
    os.utime(entry.folder, ns=(stamp, stamp))


async def test_cap_removes_whole_oldest_folders_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = _writer(tmp_path, max_bytes=5000)
    base = 1_700_000_000 * 10**9
    with trio.fail_after(10):
        for i in range(4):  # ~4.5 kB: under the cap
            await _fill(writer, f"req_{i}", base + i * 10**9)
        samples = tmp_path / "samples" / "openai-chat"
        assert sorted(p.name for p in samples.iterdir()) == ["req_0", "req_1", "req_2", "req_3"]
        # The oldest-written folder gets a second stage now, so it becomes the newest.
        await writer.entry("openai-chat", "req_0").write("routing", {})
        os.utime(samples / "req_0", ns=(base + 10 * 10**9,) * 2)
        with caplog.at_level(logging.INFO, logger="routecodex_trio.observability"):
            await _fill(writer, "req_4", base + 20 * 10**9)  # over the cap
    remaining = sorted(p.name for p in samples.iterdir())
    assert remaining == ["req_0", "req_3", "req_4"]  # req_1 and req_2 were least recently written
    assert all(len(list((samples / name).iterdir())) >= 1 for name in remaining)
    total = sum(p.stat().st_size for p in samples.rglob("*") if p.is_file())
    assert total <= 5000
    assert "removed 2 oldest request folder(s)" in caplog.text


async def test_cap_counts_what_an_earlier_run_left(tmp_path: Path) -> None:
    old = tmp_path / "samples" / "anthropic-messages" / "req_old"
    old.mkdir(parents=True)
    (old / "01-client-request.json").write_bytes(b"{}" * 3000)
    os.utime(old, ns=(10**9, 10**9))
    writer = _writer(tmp_path, max_bytes=5000)
    with trio.fail_after(10):
        await writer.entry("openai-chat", "req_new").write("client-request", {})
    assert not old.exists()
    assert (tmp_path / "samples" / "openai-chat" / "req_new").is_dir()


async def test_load_client_request_round_trip(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    with trio.fail_after(10):
        path = await writer.entry("anthropic-messages", "req_r").write(
            "client-request",
            client_request_payload("/v1/messages", {"x-api-key": CLIENT_KEY}, orjson.dumps(CHAT_BODY)),
        )
    assert path is not None
    endpoint, body = load_client_request(path)
    assert endpoint == "/v1/messages"
    assert body == CHAT_BODY


async def test_load_client_request_refuses_other_files(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    with trio.fail_after(10):
        routing = await writer.entry("openai-chat", "req_x").write("routing", {"category": "default"})
    assert routing is not None
    with pytest.raises(InvalidRequest, match="not a client-request snapshot"):
        load_client_request(routing)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(InvalidRequest, match="not JSON"):
        load_client_request(garbage)
    with pytest.raises(InvalidRequest, match="cannot read"):
        load_client_request(tmp_path / "missing.json")
    no_body = tmp_path / "no_body.json"
    no_body.write_bytes(orjson.dumps({"stage": "client-request", "payload": {"path": "/v1/messages"}}))
    with pytest.raises(InvalidRequest, match=r"payload\.body"):
        load_client_request(no_body)


async def test_disabled_writer_writes_nothing(tmp_path: Path) -> None:
    writer = SnapshotWriter(SnapshotsConfig(dir=str(tmp_path / "samples")))
    entry = writer.entry("openai-chat", "req_off")
    assert not entry.enabled
    with trio.fail_after(10):
        assert await entry.write("client-request", {"a": 1}) is None
    assert not (tmp_path / "samples").exists()


async def test_write_failure_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "samples"
    blocker.write_text("a file where the directory should be")
    writer = _writer(tmp_path)
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="routecodex_trio.observability"):
        assert await writer.entry("openai-chat", "req_1").write("routing", {}) is None
        assert await writer.entry("openai-chat", "req_2").write("routing", {}) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot write snapshot" in warnings[0].getMessage()


def test_default_config_is_off_and_under_home() -> None:
    config = config_from_mapping({}, environ={})
    assert config.snapshots.enabled is False
    assert config.snapshots.dir == "~/.routecodex/codex-samples"
    writer = SnapshotWriter(config.snapshots)
    assert str(writer.root).startswith(os.path.expanduser("~"))
    assert config_from_mapping(
        {"snapshots": {"enabled": True, "max_bytes": 1000}}, environ={}
    ).snapshots.enabled


async def test_unencodable_payload_is_dropped_not_raised(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    entry = writer.entry("openai-chat", "req_big")
    with trio.fail_after(10):
        assert await entry.write("client-response", {"n": 2**80}) is None  # beyond JSON's int64
        assert await entry.write("client-response", {"n": 1}) is not None
