"""``GET``/``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``.

OpenAI's shapes, read from the Responses store (issue 17). A response stored under another
inbound key is answered exactly like an unknown one: a 404 tells nothing about other clients.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any, Final

from .._errors import InvalidRequest, NotFound
from ..pipeline._responses import digest, state_unavailable
from ..state import StateUnavailable

if TYPE_CHECKING:
    from ..pipeline import Pipeline, Responder
    from ..state import StoredResponse

STORED_PREFIXES: Final = ("/v1/responses/", "/responses/")
_MAX_LIMIT: Final = 100
_DEFAULT_LIMIT: Final = 20


async def stored_response(
    pipeline: Pipeline, owner: str, scope: dict[str, Any], responder: Responder
) -> None:
    path: str = scope["path"]
    rest = path.split("/responses/", 1)[1]
    response_id, _, tail = rest.partition("/")
    if not response_id or tail not in ("", "input_items") or (tail and scope["method"] != "GET"):
        raise NotFound(f"unknown path {path!r}", code="unknown_url")
    store = pipeline.responses.store
    try:
        record = await store.get(response_id)
        if record is not None and record.owner == owner and scope["method"] == "DELETE":
            await store.delete(response_id)
    except StateUnavailable:
        raise state_unavailable() from None
    if record is None or record.owner != owner:
        raise NotFound(f"Response with id '{response_id}' not found.")
    if scope["method"] == "DELETE":
        await responder.send_json(200, {"id": response_id, "object": "response.deleted", "deleted": True})
    elif tail:
        await responder.send_json(200, _items_page(record, scope.get("query_string", b"")))
    else:
        await responder.send_json(200, record.response)


def _message(item: Any, item_id: str) -> Any:
    """An input item as OpenAI lists it: with an id, and text content as content parts."""
    if not isinstance(item, dict):
        return item
    listed = dict(item)
    listed.setdefault("id", item_id)
    if "role" in listed:
        listed.setdefault("type", "message")
        if isinstance(listed.get("content"), str):
            part = "output_text" if listed["role"] == "assistant" else "input_text"
            listed["content"] = [{"type": part, "text": listed["content"]}]
    return listed


def _items_page(record: StoredResponse, query_string: bytes) -> dict[str, Any]:
    query = urllib.parse.parse_qs(query_string.decode("latin-1"))

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    order = one("order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be asc or desc", param="order", code="invalid_value")
    limit_text = one("limit")
    limit = _DEFAULT_LIMIT
    if limit_text is not None:
        try:
            limit = int(limit_text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= _MAX_LIMIT:
            raise InvalidRequest(
                f"'limit' must be an integer from 1 to {_MAX_LIMIT}", param="limit", code="invalid_value"
            )
    items = [
        _message(item, "msg_" + digest(f"{record.id}/{index}"))
        for index, item in enumerate(record.input_items)
    ]
    if order == "desc":
        items.reverse()
    after = one("after")
    if after is not None:
        ids = [item.get("id") if isinstance(item, dict) else None for item in items]
        if after not in ids:
            raise InvalidRequest(f"no input item with id {after!r}", param="after", code="invalid_value")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]

    def item_id(item: Any) -> Any:
        return item.get("id") if isinstance(item, dict) else None

    return {
        "object": "list",
        "data": page,
        "first_id": item_id(page[0]) if page else None,
        "last_id": item_id(page[-1]) if page else None,
        "has_more": len(items) > len(page),
    }


__all__ = ["STORED_PREFIXES", "stored_response"]
