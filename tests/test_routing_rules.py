"""Issue 16's routing rules, one test (or more) per rule: model names, aliases, strict models,
context fit, session affinity, and in-message routing instructions.

Everything runs in-process on the real ``Router``, ``SteerStage`` and ``MemorySessionStore``
with one fake clock shared by health and session state (no sleeping, no sockets). The end-to-end
versions through the gateway and the official SDKs are in ``test_routing_sessions_e2e.py``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import pytest
import trio

from routecodex_trio._errors import InvalidRequest, NotFound, UpstreamStatusError
from routecodex_trio.config import config_from_mapping
from routecodex_trio.pipeline._request import CHAT, COMPLETIONS, MESSAGES, RESPONSES, DecodeStage
from routecodex_trio.pipeline._steering import SteerStage
from routecodex_trio.protocols import codec_for
from routecodex_trio.router import HealthTracker, RouteHints, Router, is_context_overflow
from routecodex_trio.router._instructions import EMPTY_TEXT, parse_instruction, strip_body
from routecodex_trio.router._session import conversation_session, explicit_session
from routecodex_trio.state import MemorySessionStore

if TYPE_CHECKING:
    from pathlib import Path

    from routecodex_trio.pipeline._request import ClientRequest, Endpoint
    from routecodex_trio.protocols.canonical import Request
    from routecodex_trio.router import RouteDecision


@attrs.define
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def make_config(routing: dict[str, Any] | None = None, **extra: Any) -> Any:
    """``a`` (three keys, models m1/m2), ``b`` (one key, s/h and a shared m1), ``local`` (no key)."""
    raw: dict[str, Any] = {
        "providers": {
            "a": {
                "type": "openai-chat",
                "base_url": "http://127.0.0.1:9/v1",
                "api_keys": ["ka0", "ka1", "ka2"],
                "models": ["m1", "m2", "only-a"],
            },
            "b": {
                "type": "anthropic-messages",
                "base_url": "http://127.0.0.1:9",
                "api_key": "kb",
                "models": ["s", "h", "m1"],
            },
            "local": {"type": "openai-chat", "base_url": "http://127.0.0.1:9/v1", "models": ["q", "r"]},
        },
        "routing": routing or {"default": ["a.m2"]},
    }
    for key, value in extra.items():
        if key == "providers":
            for name, changes in value.items():
                raw["providers"][name].update(changes)
        else:
            raw[key] = value
    return config_from_mapping(raw, environ={})


def chat_body(text: str = "hello", **body: Any) -> dict[str, Any]:
    return {"model": "any", "messages": [{"role": "user", "content": text}], **body}


def never() -> Request:
    raise AssertionError("the router decoded the body although it did not need to")


@attrs.define(eq=False)
class Setup:
    """A router, a steer stage and a store on one fake clock: ``send`` is one request's routing."""

    config: Any
    clock: FakeClock
    router: Router
    store: MemorySessionStore
    steer: SteerStage

    async def send(
        self,
        body: dict[str, Any],
        *,
        endpoint: Endpoint = CHAT,
        headers: dict[str, str] | None = None,
        served: bool = True,
    ) -> tuple[RouteDecision, ClientRequest]:
        """Steer and route one request; ``served``: the first candidate answered (affinity)."""
        request = await DecodeStage().decode(
            endpoint,
            orjson.dumps(body),
            request_id="t",
            headers=headers or {},
            codec=codec_for(endpoint.protocol),
        )
        hints = await self.steer.begin(request)
        decision = self.router.route(request.model, request.canonical, hints)
        if served:
            await self.steer.finish(hints, decision, decision.candidates[0], None)
        return decision, request


def setup(config: Any) -> Setup:
    clock = FakeClock()
    router = Router(config, HealthTracker(config.health, clock))
    store = MemorySessionStore(config.routing.affinity_max_sessions, clock=clock)
    return Setup(config, clock, router, store, SteerStage(config, router, store))


def route(config: Any, model: str, canonical: Any = never) -> RouteDecision:
    return Router(config).route(model, canonical)


def ids(decision: RouteDecision) -> list[str]:
    return list(dict.fromkeys(t.id for t in decision.candidates))


def decoder(body: dict[str, Any], protocol: str = "openai-chat") -> Any:
    return lambda: codec_for(protocol).decode_request(body)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- model names


def test_a_bare_model_served_by_one_provider_goes_there() -> None:
    decision = route(make_config(), "only-a")
    assert (decision.rule, decision.category) == ("model", "direct")
    assert ids(decision) == ["a.only-a"]
    assert decision.reason == "model 'only-a' is served only by a.only-a"


def test_a_bare_model_served_by_several_providers_is_ambiguous() -> None:
    with pytest.raises(InvalidRequest) as caught:
        route(make_config(), "m1")
    assert caught.value.status == 400
    assert caught.value.code == "model_ambiguous"
    assert "a.m1" in caught.value.message and "b.m1" in caught.value.message


def test_alias_exact_name_to_a_list_of_targets() -> None:
    config = make_config(aliases={"fast": ["local.q", "b.s"]})
    decision = route(config, "fast")
    assert (decision.rule, decision.category) == ("alias", "alias")
    assert ids(decision) == ["local.q", "b.s"]


def test_alias_pattern_to_a_category_skips_classification() -> None:
    config = make_config(
        {"default": ["a.m2"], "thinking": ["b.s"], "tools": ["local.q"]},
        aliases={"claude-opus-*": "thinking"},
    )
    decision = route(config, "claude-opus-4-1", never)  # tools would trigger; never decoded
    assert (decision.rule, decision.category) == ("alias", "thinking")
    assert ids(decision) == ["b.s"]
    assert "pattern 'claude-opus-*'" in decision.reason


def test_aliases_match_in_file_order_and_before_bare_models() -> None:
    config = make_config(aliases={"only-*": "local.r", "only-a": "local.q", "m1": "b.m1"})
    assert ids(route(config, "only-a")) == ["local.r"]  # the pattern comes first in the file
    assert ids(route(config, "m1")) == ["b.m1"]  # an alias settles an ambiguous bare name


def test_alias_to_a_category_with_no_pools_falls_back_to_default() -> None:
    decision = route(make_config(aliases={"x": "vision"}), "x")
    assert decision.category == "default"
    assert "routing.vision is empty" in decision.reason


def test_bad_aliases_are_config_errors() -> None:
    with pytest.raises(Exception, match=r"aliases\.x: 'thinkin' is neither a routing category"):
        make_config(aliases={"x": "thinkin"})
    with pytest.raises(Exception, match=r"aliases\.y: 'a\.nope': provider 'a' lists no model 'nope'"):
        make_config(aliases={"y": ["a.nope"]})


def test_strict_models_refuses_an_unknown_model_with_404() -> None:
    config = make_config({"default": ["a.m2"], "strict_models": True})
    with pytest.raises(NotFound) as caught:
        route(config, "gpt-4o")
    assert (caught.value.status, caught.value.code) == (404, "model_not_found")
    assert "gpt-4o" in caught.value.message
    # Known names still route under strict_models.
    assert ids(route(config, "only-a")) == ["a.only-a"]
    assert ids(route(config, "a.m2")) == ["a.m2"]


def test_unknown_model_goes_to_default_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="routecodex_trio.router")
    router = Router(make_config())
    first = router.route("gpt-4o", never)
    router.route("gpt-4o", never)
    assert (first.rule, first.category) == ("classification", "default")
    assert "unknown model 'gpt-4o' → default" in first.notes
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["unknown model gpt-4o → default"]  # once per name at INFO


def test_models_listing_has_aliases_and_context_length() -> None:
    config = make_config(
        aliases={"fast": ["local.q", "a.m2"], "claude-*": "thinking", "think": "thinking"},
        providers={"a": {"context": {"m2": 128000}}},
    )
    router = Router(config)
    listed = dict(router.models())
    assert listed["a.m2"] == 128000 and listed["a.m1"] is None
    assert listed["fast"] == 128000 and listed["think"] is None
    assert "claude-*" not in listed
    assert router.model("claude-sonnet-4") == ("claude-sonnet-4", None)
    assert router.model("only-a") == ("only-a", None)
    assert router.model("nope") is None


# --------------------------------------------------------------------------- context fit


def test_context_window_sources() -> None:
    config = make_config(
        providers={
            "a": {"models": {"m1": {"max_context": 8000}, "m2": {}, "only-a": {}}, "context": {"m2": 200000}},
            "local": {
                "base_url": None,
                "engine": {
                    "cmd": "srv --port ${PORT}",
                    "max_context": 8192,
                    "variants": {"long": {"cmd": "srv -c 131072 --port ${PORT}", "max_context": 131072}},
                },
            },
        }
    )
    router = Router(config)
    assert router.window(router.target("a", "m1")) == 8000
    assert router.window(router.target("a", "m2")) == 200000
    assert router.window(router.target("a", "only-a")) is None
    assert router.window(router.target("local", "q")) == 131072


def _fit_config(**routing: Any) -> Any:
    return make_config(
        {"default": ["local.q", "local.r", "b.s"], **routing},
        providers={"local": {"context": {"q": 1000, "r": 50000}}},
    )


def test_a_target_too_small_moves_behind_those_that_fit() -> None:
    body = chat_body("x" * 8000, max_tokens=100)  # ~2,000 prompt tokens + 100
    decision = route(_fit_config(), "any", decoder(body))
    assert ids(decision) == ["local.r", "b.s", "local.q"]
    assert decision.needed_tokens is not None and 2000 < decision.needed_tokens < 2200
    assert any("local.q too small, moved last" in note for note in decision.notes)


def test_the_default_output_reserve_counts_when_max_tokens_is_unset() -> None:
    body = chat_body("x" * 100)  # ~30 prompt tokens + the Chat reserve of 4096 > 1000
    assert ids(route(_fit_config(), "any", decoder(body)))[-1] == "local.q"


def test_nothing_fits_is_a_400_with_the_estimate_and_the_largest_window() -> None:
    config = make_config(
        {"default": ["local.q", "local.r"]}, providers={"local": {"context": {"q": 1000, "r": 5000}}}
    )
    with pytest.raises(InvalidRequest) as caught:
        route(config, "any", decoder(chat_body("x" * 40000, max_tokens=10)))
    assert (caught.value.status, caught.value.code) == (400, "context_length_exceeded")
    assert "about 10," in caught.value.message and "5,000 tokens (local.r)" in caught.value.message


def test_no_known_window_means_no_decode() -> None:
    assert ids(route(make_config({"default": ["local.q"]}), "any", never)) == ["local.q"]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, {"error": {"code": "context_length_exceeded", "message": "x"}}, "x"),
        (400, None, "prompt is too long: 210000 tokens > 200000 maximum"),
        (400, None, "This model's maximum context length is 8192 tokens. However, you requested 9000"),
        (400, None, "the request exceeds the available context size, try increasing it"),
        (400, None, "Your input exceeds the context window of this model."),
        (422, None, "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096"),
        (400, None, "Prompt contains 40000 tokens, too large for model with 32768 maximum context length"),
        (413, None, "Prompt exceeds max length"),
    ],
)
def test_upstream_context_overflow_answers_are_recognised(status: int, body: Any, message: str) -> None:
    assert is_context_overflow(status, body, message)


@pytest.mark.parametrize(
    ("status", "message"),
    [(500, "prompt is too long"), (400, "invalid tool schema"), (429, "too many tokens per minute")],
)
def test_other_errors_are_not_context_overflow(status: int, message: str) -> None:
    assert not is_context_overflow(status, None, message)


# --------------------------------------------------------------------------- session identity


def test_session_key_sources_in_order() -> None:
    body = {"prompt_cache_key": "pk", "metadata": {"user_id": "u"}, "messages": []}
    headers = {"x-claude-code-session-id": "cc", "session_id": "codex"}
    order = []
    while True:
        found = explicit_session(headers, body)
        if found is None:
            break
        order.append(found.source)
        if headers:
            headers.pop(next(iter(headers)))
        elif "prompt_cache_key" in body:
            del body["prompt_cache_key"]
        else:
            del body["metadata"]
    assert order == [
        "header x-claude-code-session-id",
        "header session_id",
        "body prompt_cache_key",
        "body metadata.user_id",
    ]


def test_conversation_hash_is_stable_across_turns_and_cache_marks() -> None:
    first = {
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            }
        ],
    }
    later = {
        "system": [{"type": "text", "text": "sys"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"},
        ],
    }
    other = {"system": "sys", "messages": [{"role": "user", "content": "something else"}]}
    key = conversation_session("anthropic-messages", first)
    assert key is not None
    assert key == conversation_session("anthropic-messages", later)
    assert key != conversation_session("anthropic-messages", other)


async def test_previous_response_id_finds_its_session() -> None:
    s = setup(make_config({"default": ["a.m2"]}))
    first = {"model": "any", "input": "hello", "prompt_cache_key": "conv-1"}
    decision, _ = await s.send(first, endpoint=RESPONSES, served=False)
    request = await DecodeStage().decode(
        RESPONSES, orjson.dumps(first), request_id="t", headers={}, codec=codec_for("openai-responses")
    )
    hints = await s.steer.begin(request)
    await s.steer.finish(hints, decision, decision.candidates[0], b'{"id":"resp_abc123","object":"response"}')
    follow = {"model": "any", "input": "and then?", "previous_response_id": "resp_abc123"}
    request = await DecodeStage().decode(
        RESPONSES, orjson.dumps(follow), request_id="t", headers={}, codec=codec_for("openai-responses")
    )
    hints = await s.steer.begin(request)
    assert hints.session == explicit_session({}, first).key  # type: ignore[union-attr]
    assert hints.session_source == "previous_response_id's session"
    assert s.router.route("any", request.canonical, hints).affinity


# --------------------------------------------------------------------------- affinity


async def test_a_session_keeps_its_key_for_ten_turns_and_new_sessions_rotate() -> None:
    s = setup(make_config())
    keys = []
    for turn in range(10):
        decision, _ = await s.send(chat_body(), headers={"session_id": "one"})
        keys.append(decision.candidates[0].health_key)
        assert decision.affinity == (turn > 0)
    assert len(set(keys)) == 1
    others = [
        (await s.send(chat_body(), headers={"session_id": f"s{i}"}))[0].candidates[0].key_index
        for i in range(3)
    ]
    # The cursor moved once, for the first (new) session; new sessions continue the rotation.
    assert keys[0] == "a.m2#0"
    assert others == [1, 2, 0]


async def test_affinity_does_not_move_round_robin_for_an_existing_session() -> None:
    pool = {"targets": ["local.q", "local.r"], "mode": "round-robin"}
    s = setup(make_config({"default": [pool]}))
    firsts = [
        (await s.send(chat_body(), headers={"session_id": "same"}))[0].candidates[0].id for _ in range(5)
    ]
    assert firsts == ["local.q"] * 5
    # The counter moved once (the first, new session): the next new session starts further on.
    decision, _ = await s.send(chat_body(), headers={"session_id": "new"})
    assert decision.candidates[0].id == "local.r"


async def test_affinity_expires_after_affinity_ttl() -> None:
    s = setup(make_config({"default": ["a.m2"], "affinity_ttl": 60}))
    await s.send(chat_body(), headers={"session_id": "x"})
    s.clock.now += 59
    assert (await s.send(chat_body(), headers={"session_id": "x"}))[0].affinity
    s.clock.now += 61
    late, _ = await s.send(chat_body(), headers={"session_id": "x"})
    assert not late.affinity


async def test_a_cooling_session_target_moves_the_session() -> None:
    s = setup(make_config())
    first, _ = await s.send(chat_body(), headers={"session_id": "x"})
    target = first.candidates[0]
    s.router.health.record_failure(target, UpstreamStatusError("429", status=429), retry_after_s=30)
    moved, _ = await s.send(chat_body(), headers={"session_id": "x"})
    assert not moved.affinity
    assert moved.candidates[0].health_key != target.health_key
    assert any("cooling down: the session moves" in n for n in moved.notes)
    again, _ = await s.send(chat_body(), headers={"session_id": "x"})
    assert again.affinity and again.candidates[0] == moved.candidates[0]


async def test_affinity_follows_the_category_and_the_context_fit() -> None:
    config = make_config(
        {"default": ["local.q", "local.r"], "tools": ["b.s"]}, providers={"local": {"context": {"q": 2000}}}
    )
    s = setup(config)
    first, _ = await s.send(chat_body(max_tokens=10), headers={"session_id": "x"})
    assert first.candidates[0].id == "local.q"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    other, _ = await s.send(chat_body(max_tokens=10, tools=[tool]), headers={"session_id": "x"}, served=False)
    assert other.category == "tools" and not other.affinity
    big, _ = await s.send(chat_body("x" * 12000, max_tokens=10), headers={"session_id": "x"})
    assert big.candidates[0].id == "local.r" and not big.affinity
    assert any("too small for this request" in n for n in big.notes)


async def test_affinity_off_rotates_every_request() -> None:
    s = setup(make_config({"default": ["a.m2"], "affinity": "off"}))
    keys = [
        (await s.send(chat_body(), headers={"session_id": "x"}))[0].candidates[0].key_index for _ in range(3)
    ]
    assert keys == [0, 1, 2]


async def test_session_state_is_bounded() -> None:
    s = setup(make_config({"default": ["a.m2"], "affinity_max_sessions": 3}))
    for i in range(10):
        await s.send(chat_body(), headers={"session_id": f"s{i}"})
    assert len(s.store) == 3


# --------------------------------------------------------------------------- instructions


def test_instruction_forms() -> None:
    target = parse_instruction(" a.m2 ")
    assert (target.kind, target.value, target.text) == ("target", ("a.m2",), "<**a.m2**>")
    assert parse_instruction("thinking").kind == "category"
    assert (parse_instruction("!a.m2").kind, parse_instruction("!a.m2").value) == ("sticky", ("a.m2",))
    assert (parse_instruction("!a,b").kind, parse_instruction("!a,b").value) == ("allow", ("a", "b"))
    assert (parse_instruction("!a").kind, parse_instruction("!a").value) == ("allow", ("a",))
    assert (parse_instruction("#b").kind, parse_instruction("@b").kind) == ("disable", "enable")
    assert parse_instruction("clear").kind == "clear"


async def test_one_shot_target_does_not_move_affinity() -> None:
    s = setup(make_config({"default": ["local.q"]}))
    await s.send(chat_body(), headers={"session_id": "x"})
    forced, request = await s.send(chat_body("<**b.s**> use claude"), headers={"session_id": "x"})
    assert (forced.rule, ids(forced)) == ("instruction", ["b.s"])
    assert request.body["messages"][0]["content"] == "use claude"
    after, _ = await s.send(chat_body("next"), headers={"session_id": "x"})
    assert after.affinity and after.candidates[0].id == "local.q"


async def test_category_instruction_forces_the_category() -> None:
    s = setup(make_config({"default": ["local.q"], "thinking": ["b.s"]}))
    decision, _ = await s.send(chat_body("<**thinking**> hard one"))
    assert (decision.rule, decision.category, ids(decision)) == ("instruction", "thinking", ["b.s"])


async def test_sticky_holds_for_the_session_until_its_keys_all_cool() -> None:
    s = setup(make_config({"default": ["local.q"]}))
    sticky, _ = await s.send(chat_body("<**!a.m1**> from now on"), headers={"session_id": "x"})
    assert (sticky.rule, sticky.candidates[0].id) == ("sticky", "a.m1")
    later, _ = await s.send(chat_body("plain"), headers={"session_id": "x"})
    assert later.rule == "sticky" and later.candidates[0].id == "a.m1"
    for key in range(3):
        s.router.health.record_failure(s.router.target("a", "m1", key), UpstreamStatusError("x", status=401))
    cleared, _ = await s.send(chat_body("plain"), headers={"session_id": "x"})
    assert cleared.sticky_cleared and cleared.candidates[0].id == "local.q"
    session = explicit_session({"session_id": "x"}, {})
    assert session is not None
    record = await s.store.get(session.key)
    assert record is not None and record.sticky is None
    assert record.target == cleared.candidates[0].health_key


async def test_allow_list_keeps_only_those_providers() -> None:
    s = setup(make_config({"default": ["local.q", "b.s", "a.m2"]}))
    decision, _ = await s.send(chat_body("<**!b,a**>"), headers={"session_id": "x"})
    assert ids(decision) == ["b.s", "a.m2"]
    decision, _ = await s.send(chat_body("next"), headers={"session_id": "x"})
    assert ids(decision)[0] == "b.s"  # remembered for the session
    narrow = setup(make_config({"default": ["local.q"]}))
    decision, _ = await narrow.send(chat_body("<**!b**>"), headers={"session_id": "y"})
    assert ids(decision) == ["b.s", "b.h", "b.m1"]  # the route had none: all of b's models


async def test_disable_beats_everything_and_enable_and_clear_undo_it() -> None:
    s = setup(make_config({"default": ["local.q", "b.s"]}))
    decision, _ = await s.send(chat_body("<**#local**> go"), headers={"session_id": "x"})
    assert ids(decision) == ["b.s"]
    with pytest.raises(InvalidRequest, match="disabled for this session"):
        await s.send(chat_body("<**local.r**>"), headers={"session_id": "x"})  # disable > force
    decision, _ = await s.send(chat_body("<**@local**>"), headers={"session_id": "x"})
    assert ids(decision) == ["b.s", "local.q"]  # local is back; b.s first by affinity
    await s.send(chat_body("<**#local**> <**!b.h**>"), headers={"session_id": "x"})
    decision, _ = await s.send(chat_body("<**clear**>"), headers={"session_id": "x"})
    assert decision.rule == "classification" and set(ids(decision)) == {"local.q", "b.s"}


@pytest.mark.parametrize(
    ("tag", "named"),
    [
        ("<**nope.m**>", "unknown provider 'nope'"),
        ("<**a.zzz**>", "no model 'zzz'"),
        ("<**#nope**>", "'nope'"),
        ("<**thinkin**>", "'thinkin'"),
    ],
)
async def test_an_unknown_name_in_an_instruction_is_a_400_naming_it(tag: str, named: str) -> None:
    s = setup(make_config())
    with pytest.raises(InvalidRequest) as caught:
        await s.send(chat_body(f"{tag} hi"))
    assert caught.value.status == 400 and named in caught.value.message


async def test_only_the_latest_user_message_takes_effect_but_all_are_stripped() -> None:
    s = setup(make_config({"default": ["local.q"]}))
    body = {
        "model": "any",
        "messages": [
            {"role": "system", "content": "sys <**b.s**>"},
            {"role": "user", "content": "old <**b.s**> turn"},
            {"role": "assistant", "content": "ok"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "now"}, {"type": "text", "text": "<**b.h**>"}],
            },
        ],
    }
    decision, request = await s.send(body)
    assert ids(decision) == ["b.h"]
    assert "<**" not in orjson.dumps(request.body).decode()
    assert request.body["messages"][3]["content"][1]["text"] == EMPTY_TEXT
    assert request.body["messages"][1]["content"] == "old turn"
    assert request.canonical().messages[0].content[0].text == "old turn"  # type: ignore[union-attr]


async def test_tags_in_tool_results_are_stripped_but_never_obeyed() -> None:
    s = setup(make_config({"default": ["local.q"]}))
    body = {
        "model": "any",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "read the file"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "<**#local**> evil"}],
                    }
                ],
            },
        ],
    }
    decision, request = await s.send(body, endpoint=MESSAGES)
    assert ids(decision) == ["local.q"] and decision.rule == "classification"
    assert request.body["messages"][2]["content"][0]["content"][0]["text"] == "evil"


def test_strip_body_in_every_protocol() -> None:
    responses = {
        "model": "m",
        "instructions": "be brief <**clear**>",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "<**b.s**> hi"}]},
            {"type": "function_call_output", "call_id": "c", "output": "x <**a.m1**>"},
        ],
    }
    new, tags = strip_body("openai-responses", responses)
    assert tags == ["b.s"]  # the user's message, not the tool output after it
    assert "<**" not in orjson.dumps(new).decode()
    assert "<**" in orjson.dumps(responses).decode()  # the caller's body is untouched
    new, tags = strip_body("openai-responses", {"model": "m", "input": "<**thinking**> solve"})
    assert (new["input"], tags) == ("solve", ["thinking"])
    new, tags = strip_body("openai-completions", {"model": "m", "prompt": ["a", "<**b.s**> b"]})
    assert (new["prompt"], tags) == (["a", "b"], ["b.s"])


async def test_instructions_off_leaves_tags_alone() -> None:
    s = setup(make_config({"default": ["local.q"], "instructions": False}))
    decision, request = await s.send(chat_body("<**b.s**> hi"))
    assert ids(decision) == ["local.q"]
    assert request.body["messages"][0]["content"] == "<**b.s**> hi"


async def test_responses_and_completions_endpoints_strip_too() -> None:
    s = setup(make_config({"default": ["local.q"]}))
    decision, request = await s.send({"model": "any", "input": "<**b.s**> hi"}, endpoint=RESPONSES)
    assert ids(decision) == ["b.s"] and request.body["input"] == "hi"
    decision, request = await s.send({"model": "any", "prompt": "<**b.s**> hi"}, endpoint=COMPLETIONS)
    assert ids(decision) == ["b.s"] and request.body["prompt"] == "hi"


def test_route_hints_default_is_plain_routing() -> None:
    router = Router(make_config({"default": ["local.q"]}))
    assert router.route("any", never, RouteHints()).rule == "classification"


async def test_trio_clock_drives_the_store_by_default(autojump_clock: trio.testing.MockClock) -> None:
    store = MemorySessionStore(10)
    from routecodex_trio.state import SessionRecord

    await store.put("k", SessionRecord(target="a"), ttl_s=5)
    await trio.sleep(4)
    assert await store.get("k") is not None
    await trio.sleep(2)
    assert await store.get("k") is None


def test_route_command_shows_rule_notes_session_and_instructions(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        "[providers.a]\ntype = 'openai-chat'\nbase_url = 'http://127.0.0.1:9/v1'\napi_keys = ['k1', 'k2']\n"
        "models = ['m', 'big']\n[providers.a.context]\nm = 1000\nbig = 200000\n"
        "[routing]\ndefault = ['a.m', 'a.big']\n[aliases]\n'claude-*' = 'default'\n"
    )
    request = tmp_path / "request.json"
    request.write_text(
        orjson.dumps(
            {
                "model": "claude-opus-4",
                "max_tokens": 2000,
                "messages": [{"role": "user", "content": "<**#a**> hi"}],
            }
        ).decode()
    )
    command = [sys.executable, "-m", "routecodex_trio", "route", "--config", str(config), str(request)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert refused.returncode == 1 and "disabled for this session (a)" in refused.stderr
    request.write_text(
        orjson.dumps(
            {"model": "claude-opus-4", "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}
        ).decode()
    )
    result = subprocess.run(
        [*command, "--header", "x-claude-code-session-id:abc"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "rule:       alias" in out
    assert "reason:     alias 'claude-opus-4' (pattern 'claude-*') -> category default" in out
    assert "note:       context: ~2,005 tokens needed; a.m too small, moved last" in out
    assert "session:    header x-claude-code-session-id" in out
    assert "1. a.big  (upstream big, key 0 of 2, window 200,000, ready)" in out
