"""Steer stage: routing instructions, session identity and session state, around the router.

Before routing (``SteerStage.begin``): the ``<**...**>`` tags are removed from the request body
(``router._instructions``), the tags of the latest user message are checked against the
config and applied to the session's record, and the session's record is read from the state
store. The result is a ``RouteHints`` for ``Router.route``.

When a target's first content is about to reach the client (``SteerStage.finish``, through
``Responder.on_first_content``): that target becomes the session's affinity target (unless a
one-shot instruction chose it), and a Responses answer's id is linked to the session so a
later ``previous_response_id`` finds it. Doing it before the bytes go out, not after the
answer ended, means a client's next turn can never overtake it.

Instruction changes are saved in ``begin``: a ``<**#provider**>`` holds even when the request
it came with fails.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Final

import attrs

from .._errors import InvalidRequest
from ..config._model import ROUTE_CATEGORIES
from ..router import RouteHints
from ..router._instructions import parse_instruction, strip_body
from ..router._session import SessionId, conversation_session, explicit_session
from ..state import SessionRecord

if TYPE_CHECKING:
    from ..config import GatewayConfig
    from ..router import RouteDecision, Router, Target
    from ..state import SessionStore
    from ._request import ClientRequest

LOGGER: Final = logging.getLogger("routecodex_trio.pipeline")
# A session's instructions (sticky model, allow-list, disabled providers) are the user's
# explicit choices: kept a day after the session's last request, not just affinity_ttl.
INSTRUCTIONS_TTL_S: Final = 86_400.0
# The id of a Responses answer, in the first bytes sent to the client (the JSON body's "id",
# or the response.created event that opens a stream).
_RESPONSE_ID: Final = re.compile(rb'"id"\s*:\s*"(resp_[A-Za-z0-9_-]{1,200})"')


@attrs.define(eq=False)
class SteerStage:
    """Instructions and session state for one config generation; shared by every request."""

    config: GatewayConfig
    router: Router
    store: SessionStore

    async def begin(self, request: ClientRequest) -> RouteHints:
        """Strip tags, find the session, apply this request's instructions.

        Mutates ``request.body`` (the tags removed) before anything decodes or forwards it.

        Raises:
            InvalidRequest: an instruction names an unknown provider, model or category.
        """
        routing = self.config.routing
        tags: list[str] = []
        if routing.instructions and request.may_have_tags:
            request.body, tags = strip_body(request.protocol, request.body)
            # The raw bytes may hold tags: pass-through must send the stripped body instead.
            request.raw = b""
        session = await self._session(request)
        if session is None and any(parse_instruction(t).kind not in ("target", "category") for t in tags):
            raise InvalidRequest(
                "session routing instructions need a session (a session header, "
                "prompt_cache_key, metadata.user_id, or a user message)",
                code="routing_instruction_invalid",
            )
        # With neither affinity nor instructions no record is ever written: nothing to read
        # (with Redis, a round trip saved).
        needed = routing.affinity == "session" or routing.instructions
        record = await self.store.get(session.key) if session is not None and needed else None
        force_target: str | None = None
        force_category: str | None = None
        changed = False
        current = record if record is not None else SessionRecord()
        for tag in tags:
            instruction = parse_instruction(tag)
            kind, values = instruction.kind, instruction.value
            if kind == "target":
                self._check_target(values[0], instruction.text)
                force_target = values[0]
            elif kind == "category":
                if values[0] not in ROUTE_CATEGORIES:
                    raise InvalidRequest(
                        f"routing instruction {instruction.text}: {values[0]!r} is neither a routing "
                        f"category ({', '.join(ROUTE_CATEGORIES)}) nor 'provider.model'",
                        code="routing_instruction_invalid",
                    )
                force_category = values[0]
            elif kind == "sticky":
                self._check_target(values[0], instruction.text)
                current, changed = attrs.evolve(current, sticky=values[0]), True
            elif kind == "allow":
                self._check_providers(values, instruction.text)
                current, changed = attrs.evolve(current, allow=values), True
            elif kind == "disable":
                self._check_providers(values, instruction.text)
                disabled = tuple(dict.fromkeys(current.disabled + values))
                current, changed = attrs.evolve(current, disabled=disabled), True
            elif kind == "enable":
                self._check_providers(values, instruction.text)
                disabled = tuple(p for p in current.disabled if p not in values)
                current, changed = attrs.evolve(current, disabled=disabled), True
            else:  # clear
                current, changed = attrs.evolve(current, sticky=None, allow=(), disabled=()), True
        if changed and session is not None:
            await self.store.put(session.key, current, ttl_s=self._ttl(current))
            await self.store.flush()
        return RouteHints(
            session=session.key if session is not None else None,
            session_source=session.source if session is not None else None,
            record=current if (record is not None or changed) else None,
            force_target=force_target,
            force_category=force_category,
            instructions=tuple(f"<**{t.strip()}**>" for t in tags),
        )

    async def finish(
        self,
        hints: RouteHints,
        decision: RouteDecision,
        target: Target,
        first_bytes: bytes | None,
        *,
        flush: bool = True,
    ) -> None:
        """Record that ``target`` serves the session (its first content is about to go out).

        ``flush=False`` when a write to the same store follows at once (a non-stream stored
        Responses answer): the session writes go with it, one send instead of two.
        """
        if hints.session is None:
            return
        record = hints.record if hints.record is not None else SessionRecord()
        if decision.sticky_cleared:
            record = attrs.evolve(record, sticky=None)
        if self.config.routing.affinity == "session" and not decision.one_shot:
            record = attrs.evolve(record, target=target.health_key, served_at=self.router.health.clock())
        elif not decision.sticky_cleared:
            return
        await self.store.put(hints.session, record, ttl_s=self._ttl(record))
        if first_bytes:
            match = _RESPONSE_ID.search(first_bytes)
            if match is not None:
                await self.store.link(match.group(1).decode(), hints.session, ttl_s=self._ttl(record))
        if flush:
            await self.store.flush()

    def _ttl(self, record: SessionRecord) -> float:
        ttl = self.config.routing.affinity_ttl
        return max(ttl, INSTRUCTIONS_TTL_S) if record.has_instructions else ttl

    async def _session(self, request: ClientRequest) -> SessionId | None:
        explicit = explicit_session(request.headers, request.body)
        if explicit is not None:
            return explicit
        previous = request.body.get("previous_response_id")
        if request.continuation is not None:  # the body was rebuilt without it (issue 17)
            previous = request.continuation.previous.id
        routing = self.config.routing
        if isinstance(previous, str) and previous and (routing.affinity == "session" or routing.instructions):
            key = await self.store.resolve(previous)
            if key is not None:
                return SessionId(key=key, source="previous_response_id's session")
        return conversation_session(request.protocol, request.body)

    def _check_target(self, target: str, tag: str) -> None:
        provider_name, _, model_id = target.partition(".")
        provider = self.config.providers.get(provider_name)
        if provider is None:
            raise InvalidRequest(
                f"routing instruction {tag}: unknown provider {provider_name!r}",
                code="routing_instruction_invalid",
            )
        if provider.model(model_id) is None and provider.model("*") is None:
            raise InvalidRequest(
                f"routing instruction {tag}: provider {provider_name!r} has no model {model_id!r}",
                code="routing_instruction_invalid",
            )

    def _check_providers(self, names: tuple[str, ...], tag: str) -> None:
        if not names:
            raise InvalidRequest(
                f"routing instruction {tag}: name at least one provider", code="routing_instruction_invalid"
            )
        for name in names:
            if name not in self.config.providers:
                raise InvalidRequest(
                    f"routing instruction {tag}: unknown provider {name!r}",
                    code="routing_instruction_invalid",
                )
