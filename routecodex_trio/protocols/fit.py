"""Fitting a canonical request to a target protocol: what cannot go is refused or left out, aloud.

A converted request may carry things the target cannot take: a provider-hosted tool (web
search, code interpreter...) that only the client's own protocol family runs, or input the
canonical model has no form for (``Request.unconvertible``). Nothing of that is ever dropped
without a word:

* a hosted tool the request cannot be served without (``tool_choice`` forces it, or it is the
  only tool) is a 400 naming the tool and the target, unless ``[conversion] unknown = "drop"``;
* a hosted tool offered beside client tools (Codex's everyday ``web_search``) is left out: the
  agent keeps working with its own tools;
* unconvertible input is a 400 naming its JSON path and the target, or left out with ``drop``.

Whatever is left out is listed in ``Fitted.dropped``; the pipeline logs it and names it in the
``x-routecodex-dropped`` response header.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

import attrs

from .._errors import UnsupportedConversion

if TYPE_CHECKING:
    from .canonical import HostedTool, ProtocolName, Request

UnknownPolicy = Literal["error", "drop"]

# Header value characters are limited to visible ASCII; a client's tool name may not be.
_HEADER_SAFE: Final = frozenset(chr(c) for c in range(0x20, 0x7F)) - {","}


@attrs.frozen(kw_only=True)
class Dropped:
    """One thing left out of the upstream request, by the client's JSON path."""

    path: str  # "tools[3]", "input[5]"
    what: str  # "hosted tool 'web_search'", "input item type 'computer_call'"

    def header_entry(self) -> str:
        return "".join(ch if ch in _HEADER_SAFE else "?" for ch in f"{self.path} {self.what}")


@attrs.frozen(kw_only=True)
class Fitted:
    """The request as the target gets it, and what was left out on the way."""

    request: Request
    dropped: tuple[Dropped, ...] = ()

    def header_value(self) -> str | None:
        """``x-routecodex-dropped``: the entries, comma-separated; None when nothing was dropped."""
        if not self.dropped:
            return None
        return ", ".join(entry.header_entry() for entry in self.dropped)


def _runs(tool: HostedTool, target: ProtocolName) -> bool:
    """A hosted tool runs only at an upstream of the protocol family it was written for."""
    return tool.origin == target


def fit_request(
    request: Request, target: ProtocolName, *, unknown: UnknownPolicy, routed: bool = False
) -> Fitted:
    """The request without what ``target`` cannot take.

    ``routed``: the router sent the request to the category made for its required hosted
    tool (``websearch``), so that route's target is the one meant to serve it (a search
    model, say): the tool is left out and named instead of refused.

    Raises:
        UnsupportedConversion: something the request needs, or unconvertible input, cannot reach
            ``target`` and ``unknown`` is ``"error"``.
    """
    required = request.required_hosted_tool()
    dropped: list[Dropped] = []
    kept: list[HostedTool] = []
    for tool in request.hosted_tools:
        if _runs(tool, target):
            kept.append(tool)
            continue
        if tool is required and unknown == "error" and not routed:
            raise UnsupportedConversion(
                f"the hosted tool {tool.type!r} ({tool.path or 'tools'}) cannot run at this "
                f"route's {target} upstream and the request cannot be served without it; route it "
                "to an upstream of its own protocol (a `websearch` routing category for web search)",
                param=tool.path or "tools",
                code="unsupported_tool",
            )
        dropped.append(Dropped(path=tool.path or "tools", what=f"hosted tool {tool.type!r}"))
    for item in request.unconvertible:
        if unknown == "error":
            raise UnsupportedConversion(
                f"{item.what} at {item.path} has no equivalent in the {target} protocol of this "
                "route's upstream; remove it, route to an upstream of the client's protocol, or "
                'set [conversion] unknown = "drop"',
                param=item.path,
                code="unsupported_content",
            )
        dropped.append(Dropped(path=item.path, what=item.what))
    if not dropped:
        return Fitted(request=request)
    choice = request.tool_choice
    if required is not None and not any(tool is required for tool in kept):
        # The forced tool is gone (drop policy): let the model answer without it.
        choice = None
    fitted = attrs.evolve(request, hosted_tools=tuple(kept), unconvertible=(), tool_choice=choice)
    return Fitted(request=fitted, dropped=tuple(dropped))
