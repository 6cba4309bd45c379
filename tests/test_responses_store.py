"""Issue 17, the Responses store: ``previous_response_id`` through every upstream protocol,
and ``GET``/``DELETE /v1/responses/{id}`` and ``input_items``, with the official openai SDK.

The upstreams are ``FakeUpstream`` (fakes_protocols.py) on loopback; what each one was sent
shows whether the gateway rebuilt the conversation or forwarded the id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import openai
import orjson
import pytest
import trio

from routecodex_trio.state import MemoryResponseStore, StoredResponse

from .conftest import openai_client
from .fakes import Recorded, _json, _read_body, start_app
from .fakes_protocols import TEXT, FakeUpstream

if TYPE_CHECKING:
    from .conftest import GatewayFactory
    from .fakes import Receive, Send

SERVER = {"listen": ["127.0.0.1:0"], "graceful_timeout": 5}


@attrs.define(eq=False)
class UniqueIds:
    """``FakeUpstream`` whose Responses answers each get their own id (it always says resp_up1)."""

    fake: FakeUpstream
    served: int = 0

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fake(scope, receive, send)
            return
        self.served += 1
        unique = f"resp_up{self.served}x".encode()

        async def renaming(message: dict[str, Any]) -> None:
            if message.get("body"):
                message = {**message, "body": message["body"].replace(b"resp_up1", unique)}
            await send(message)

        await self.fake(scope, receive, renaming)


async def _gateway(
    nursery: trio.Nursery, start_gateway: GatewayFactory, **server: Any
) -> tuple[FakeUpstream, Any]:
    fake = FakeUpstream()
    url = await start_app(nursery, UniqueIds(fake))
    gateway = await start_gateway(
        {
            "server": {**SERVER, **server},
            "providers": {
                "cc": {
                    "type": "openai-chat",
                    "base_url": url + "/v1",
                    "api_key": "sk-cc",
                    "models": ["text"],
                },
                "am": {"type": "anthropic-messages", "base_url": url, "api_key": "sk-am", "models": ["text"]},
                "rs": {
                    "type": "openai-responses",
                    "base_url": url + "/v1",
                    "api_key": "sk-rs",
                    "models": ["text"],
                },
                "rt": {
                    "type": "openai-responses",
                    "base_url": url + "/v1",
                    "api_key": "sk-rt",
                    "models": ["text"],
                },
            },
            "routing": {"default": ["cc.text"]},
        }
    )
    return fake, gateway


def _texts(messages: list[Any]) -> list[tuple[str, str]]:
    """(role, text) of Chat or Messages messages, text parts joined."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append((message["role"], content or ""))
    return out


@pytest.mark.parametrize("stream_first", [False, True])
async def test_continuation_through_chat_upstream_rebuilds_the_conversation(
    nursery: trio.Nursery, start_gateway: GatewayFactory, stream_first: bool
) -> None:
    fake, gateway = await _gateway(nursery, start_gateway)
    client = openai_client(gateway)
    with trio.fail_after(20):
        if stream_first:
            events = await client.responses.create(
                model="cc.text", input="What is 2+2?", instructions="Be terse.", stream=True
            )
            completed = [e async for e in events if e.type == "response.completed"]
            first_id = completed[-1].response.id
        else:
            first = await client.responses.create(
                model="cc.text", input="What is 2+2?", instructions="Be terse."
            )
            first_id = first.id
        second = await client.responses.create(
            model="cc.text", input="And 3+3?", previous_response_id=first_id, instructions="Be kind."
        )
    assert second.output_text == TEXT
    sent = fake.requests[-1]
    assert sent.path.endswith("/chat/completions")
    # Stored input + stored output + new input; the old instructions are not inherited.
    assert _texts(sent.body["messages"]) == [
        ("system", "Be kind."),
        ("user", "What is 2+2?"),
        ("assistant", TEXT),
        ("user", "And 3+3?"),
    ]
    # A continuation of a continuation carries the whole chain.
    with trio.fail_after(20):
        await client.responses.create(model="cc.text", input="And 4+4?", previous_response_id=second.id)
    assert [t for _, t in _texts(fake.requests[-1].body["messages"])] == [
        "What is 2+2?",
        TEXT,
        "And 3+3?",
        TEXT,
        "And 4+4?",
    ]


async def test_continuation_through_anthropic_upstream(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    fake, gateway = await _gateway(nursery, start_gateway)
    client = openai_client(gateway)
    with trio.fail_after(20):
        first = await client.responses.create(model="am.text", input="Hi there", instructions="Be terse.")
        events = await client.responses.create(
            model="am.text", input="Tell me more", previous_response_id=first.id, stream=True
        )
        done = [e async for e in events if e.type == "response.completed"]
    assert done and done[0].response.output_text == TEXT
    sent = fake.requests[-1]
    assert sent.path.endswith("/messages")
    assert "system" not in sent.body
    assert _texts(sent.body["messages"]) == [
        ("user", "Hi there"),
        ("assistant", TEXT),
        ("user", "Tell me more"),
    ]


async def test_responses_upstream_gets_the_id_only_from_the_account_that_made_it(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    fake, gateway = await _gateway(nursery, start_gateway)
    client = openai_client(gateway)
    with trio.fail_after(20):
        first = await client.responses.create(model="rs.text", input="Hi there")
        await client.responses.create(model="rs.text", input="Same account", previous_response_id=first.id)
        same = fake.requests[-1]
        await client.responses.create(model="rt.text", input="Other account", previous_response_id=first.id)
        other = fake.requests[-1]
        # And a Chat-made answer continued on a Responses upstream: rebuilt too.
        chat = await client.responses.create(model="cc.text", input="From chat")
        await client.responses.create(model="rs.text", input="Now responses", previous_response_id=chat.id)
        from_chat = fake.requests[-1]
    assert same.headers["authorization"] == "Bearer sk-rs"
    assert same.body["previous_response_id"] == first.id
    assert same.body["input"] == "Same account"
    assert other.headers["authorization"] == "Bearer sk-rt"
    assert "previous_response_id" not in other.body
    roles = [(item.get("type"), item.get("role")) for item in other.body["input"]]
    assert roles == [("message", "user"), ("message", "assistant"), ("message", "user")]
    assert other.body["input"][-1]["content"][0]["text"] == "Other account"
    assert "previous_response_id" not in from_chat.body
    assert len(from_chat.body["input"]) == 3


async def test_retrieve_input_items_and_delete(nursery: trio.Nursery, start_gateway: GatewayFactory) -> None:
    _, gateway = await _gateway(nursery, start_gateway)
    client = openai_client(gateway)
    items: Any = [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "un"},
        {"role": "user", "content": [{"type": "input_text", "text": "two"}]},
    ]
    with trio.fail_after(20):
        created = await client.responses.create(model="am.text", input=items)
        got = await client.responses.retrieve(created.id)
        assert got.id == created.id and got.output_text == TEXT
        asc = await client.responses.input_items.list(created.id, order="asc")
        desc = await client.responses.input_items.list(created.id)
        page = await client.responses.input_items.list(created.id, order="asc", limit=2)
        rest = await client.responses.input_items.list(created.id, order="asc", after=page.data[-1].id)
        deleted = await client.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError) as info:
            await client.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.input_items.list(created.id)
        with pytest.raises(openai.BadRequestError) as continued:
            await client.responses.create(model="am.text", input="again", previous_response_id=created.id)
    assert deleted is None  # the SDK returns nothing for a delete that succeeded
    texts = [item.content[0].text for item in asc.data]  # type: ignore[union-attr]
    assert texts == ["Answer in French.", "one", "un", "two"]
    assert [item.id for item in desc.data] == [item.id for item in reversed(asc.data)]
    assert len(set(item.id for item in asc.data)) == 4
    assert page.has_more and len(page.data) == 2 and page.first_id == asc.data[0].id
    assert [item.id for item in rest.data] == [item.id for item in asc.data[2:]] and not rest.has_more
    assert info.value.status_code == 404
    body: Any = info.value.body
    assert body["message"] == f"Response with id '{created.id}' not found."
    assert continued.value.code == "previous_response_not_found"


async def test_store_false_stores_nothing(nursery: trio.Nursery, start_gateway: GatewayFactory) -> None:
    _, gateway = await _gateway(nursery, start_gateway)
    client = openai_client(gateway)
    with trio.fail_after(20):
        created = await client.responses.create(model="cc.text", input="secret", store=False)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(created.id)
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="cc.text", input="more", previous_response_id=created.id)
    assert len(gateway._app.pipeline.response_store) == 0


async def test_a_stored_response_is_readable_only_with_its_key(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    _, gateway = await _gateway(nursery, start_gateway, api_keys=["client-key", "other-key"])
    mine = openai_client(gateway)
    theirs = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="other-key", max_retries=0)
    try:
        with trio.fail_after(20):
            created = await mine.responses.create(model="cc.text", input="private")
            with pytest.raises(openai.NotFoundError):
                await theirs.responses.retrieve(created.id)
            with pytest.raises(openai.NotFoundError):
                await theirs.responses.delete(created.id)
            with pytest.raises(openai.BadRequestError):
                await theirs.responses.create(model="cc.text", input="x", previous_response_id=created.id)
            assert (await mine.responses.retrieve(created.id)).id == created.id
    finally:
        await theirs.close()


async def test_stored_data_is_not_logged(
    nursery: trio.Nursery, start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _, gateway = await _gateway(nursery, start_gateway)
    client = openai_client(gateway)
    caplog.set_level("DEBUG")
    with trio.fail_after(20):
        created = await client.responses.create(model="cc.text", input="zebra-canary-7731")
        await client.responses.create(model="cc.text", input="next", previous_response_id=created.id)
        await client.responses.retrieve(created.id)
        await client.responses.input_items.list(created.id)
    assert "zebra-canary-7731" not in caplog.text
    assert TEXT not in caplog.text


def _record(response_id: str, size: int = 10) -> StoredResponse:
    return StoredResponse(
        id=response_id,
        owner="",
        account="p",
        response={"id": response_id, "output": []},
        input_items=["x" * size],
    )


async def test_memory_store_expires_and_keeps_to_its_byte_cap() -> None:
    now = [0.0]
    store = MemoryResponseStore(1000, clock=lambda: now[0])
    await store.put(_record("resp_a"), ttl_s=10)
    assert (await store.get("resp_a")) == _record("resp_a")
    now[0] = 10.0
    assert await store.get("resp_a") is None
    for i in range(10):
        await store.put(_record(f"resp_{i}", 200), ttl_s=100)
    assert store.held_bytes <= 1000
    assert await store.get("resp_0") is None and await store.get("resp_9") is not None
    await store.put(_record("resp_huge", 5000), ttl_s=100)
    assert await store.get("resp_huge") is None
    assert await store.delete("resp_9") and not await store.delete("resp_9")


@attrs.define(eq=False)
class ForgetsIds:
    """A Responses upstream that has lost every stored response (expired, deleted there)."""

    fake: FakeUpstream

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fake(scope, receive, send)
            return
        body = await _read_body(receive)
        sent = orjson.loads(body)
        if sent.get("previous_response_id"):
            self.fake.requests.append(Recorded(scope["path"], {}, sent))
            error = {
                "message": f"Previous response with id '{sent['previous_response_id']}' not found.",
                "type": "invalid_request_error",
                "param": "previous_response_id",
                "code": "previous_response_not_found",
            }
            await _json(send, 400, {"error": error})
            return
        replayed = False

        async def again() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return {"type": "http.disconnect"}
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.fake(scope, again, send)


async def test_an_account_that_lost_the_id_gets_the_conversation(
    nursery: trio.Nursery, start_gateway: GatewayFactory
) -> None:
    fake = FakeUpstream()
    forgetful = await start_app(nursery, ForgetsIds(fake))
    gateway = await start_gateway(
        {
            "server": SERVER,
            "providers": {
                "rs": {
                    "type": "openai-responses",
                    "base_url": forgetful + "/v1",
                    "api_key": "sk-rs",
                    "models": ["text"],
                },
            },
            "routing": {"default": ["rs.text"]},
        }
    )
    client = openai_client(gateway)
    with trio.fail_after(20):
        first = await client.responses.create(model="rs.text", input="Hi there")
        second = await client.responses.create(model="rs.text", input="Again", previous_response_id=first.id)
    assert second.output_text == TEXT
    tried, resent = fake.requests[-2:]
    assert tried.body["previous_response_id"] == first.id
    assert "previous_response_id" not in resent.body and len(resent.body["input"]) == 3
