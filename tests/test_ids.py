"""Fresh ids: right length and alphabet, every symbol reachable, no repeats."""

from __future__ import annotations

import collections
import string

from routecodex_trio.protocols.ids import new_id, to_anthropic_tool_id, to_chat_tool_id


def test_new_id_is_prefix_and_letters_and_digits() -> None:
    for length in (1, 8, 24, 64):
        value = new_id("msg_", length)
        assert value.startswith("msg_")
        assert len(value) == 4 + length
        assert set(value[4:]) <= set(string.ascii_letters + string.digits)


def test_new_id_uses_every_symbol_about_as_often() -> None:
    """The bytes mapped onto 62 symbols: a skew (b % 62 over all 256 bytes) shows here."""
    counts = collections.Counter("".join(new_id("", 24) for _ in range(10_000)))
    assert len(counts) == 62
    expected = 240_000 / 62
    # The first 8 symbols would be drawn 5/4 as often as the rest without the dropped bytes.
    assert max(counts.values()) < expected * 1.1
    assert min(counts.values()) > expected * 0.9


def test_new_ids_do_not_repeat() -> None:
    assert len({new_id("call_") for _ in range(10_000)}) == 10_000


def test_tool_ids_map_deterministically() -> None:
    assert to_anthropic_tool_id("call_abc") == "call_abc"
    assert to_anthropic_tool_id("call:abc") == to_anthropic_tool_id("call:abc")
    assert to_anthropic_tool_id("call:abc").startswith("toolu_")
    long_id = "x" * 41
    assert to_chat_tool_id(long_id) == to_chat_tool_id(long_id)
    assert len(to_chat_tool_id(long_id)) <= 40
    assert to_chat_tool_id("toolu_01") == "toolu_01"
