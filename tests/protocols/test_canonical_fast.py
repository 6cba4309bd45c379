"""The hot-path constructors of canonical.py build exactly what the attrs ``__init__`` builds."""

from __future__ import annotations

import attrs
import pytest

from routecodex_trio.protocols.canonical import (
    Message,
    Text,
    Tool,
    ToolResult,
    ToolUse,
    new_function_tool,
    new_message,
    new_text,
    new_tool_result,
    new_tool_use,
)


def test_fields_are_the_ones_the_fast_constructors_set() -> None:
    # A field added to Text or Message must be set by new_text / new_message too: this fails
    # until they are updated (and until the new field is checked below).
    assert [f.name for f in attrs.fields(Text)] == ["text", "cache_control"]
    assert [f.name for f in attrs.fields(Message)] == ["role", "content", "name"]
    for cls in (Text, Message):
        for field in attrs.fields(cls):
            assert field.validator is None
            assert field.converter is None
            assert not isinstance(field.default, type(attrs.Factory(list)))
        assert not hasattr(cls, "__attrs_post_init__")


@pytest.mark.parametrize("cache_control", [None, {"type": "ephemeral"}])
def test_new_text_equals_text(cache_control: dict[str, str] | None) -> None:
    fast = new_text("hello", cache_control)
    slow = Text(text="hello", cache_control=cache_control)
    assert type(fast) is Text
    assert fast == slow
    assert repr(fast) == repr(slow)
    assert hash(new_text("a")) == hash(Text(text="a"))
    assert new_text("a") == Text(text="a")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.text = "other"  # type: ignore[misc]
    assert attrs.evolve(fast, text="x") == Text(text="x", cache_control=cache_control)


@pytest.mark.parametrize("name", [None, "bob"])
def test_new_message_equals_message(name: str | None) -> None:
    content = (Text(text="a"), ToolUse(id="t", name="n"))
    fast = new_message("assistant", content, name)
    slow = Message(role="assistant", content=content, name=name)
    assert type(fast) is Message
    assert fast == slow
    assert repr(fast) == repr(slow)
    assert hash(fast) == hash(slow)
    assert new_message("user", ()) == Message(role="user", content=())
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.role = "user"  # type: ignore[misc]


def test_tool_fields_are_the_ones_the_fast_constructors_set() -> None:
    assert [f.name for f in attrs.fields(ToolUse)] == ["id", "name", "arguments", "cache_control", "kind"]
    assert [f.name for f in attrs.fields(ToolResult)] == [
        "tool_use_id",
        "content",
        "is_error",
        "cache_control",
        "kind",
    ]
    assert [f.name for f in attrs.fields(Tool)] == [
        "name",
        "description",
        "parameters",
        "strict",
        "cache_control",
        "kind",
        "format",
        "raw",
        "defer_loading",
        "namespace",
    ]
    for cls in (ToolUse, ToolResult, Tool):
        for field in attrs.fields(cls):
            assert field.validator is None
            assert field.converter is None
        assert not hasattr(cls, "__attrs_post_init__")


@pytest.mark.parametrize("cache_control", [None, {"type": "ephemeral"}])
def test_new_tool_use_result_and_tool_equal_attrs(cache_control: dict[str, str] | None) -> None:
    pairs: list[tuple[ToolUse | ToolResult | Tool, ToolUse | ToolResult | Tool]] = [
        (
            new_tool_use("t1", "Read", '{"a":1}', cache_control),
            ToolUse(id="t1", name="Read", arguments='{"a":1}', cache_control=cache_control),
        ),
        (
            new_tool_result("t1", (Text(text="out"),), True, cache_control),
            ToolResult(
                tool_use_id="t1", content=(Text(text="out"),), is_error=True, cache_control=cache_control
            ),
        ),
        (new_tool_result("t2", ()), ToolResult(tool_use_id="t2")),
        (
            new_function_tool(
                name="f",
                description="d",
                parameters={"type": "object"},
                strict=True,
                cache_control=cache_control,
                defer_loading=False,
            ),
            Tool(
                name="f",
                description="d",
                parameters={"type": "object"},
                strict=True,
                cache_control=cache_control,
                defer_loading=False,
            ),
        ),
        (
            new_function_tool(name="g", description=None, parameters={}, strict=None),
            Tool(name="g", parameters={}),
        ),
    ]
    for fast, slow in pairs:
        assert type(fast) is type(slow)
        assert fast == slow
        assert repr(fast) == repr(slow)
        assert attrs.asdict(fast) == attrs.asdict(slow)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            fast.kind = "other"  # type: ignore[misc]  # frozen: the point of the check
