"""``routecodex usage``: the totals of the usage records (issue 18), as a table or JSON.

Reads the store the config names (``[teams] usage``): the SQLite file directly (read-only,
beside a running gateway: WAL lets readers in while it writes), or the Redis stream.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import orjson
import trio

from ._errors import GatewayError, InvalidRequest
from .config import load_config

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from .config import GatewayConfig
    from .teams import UsageTotals


def register(sub: Any, add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add the ``usage`` subcommand (called once from ``cli.build_parser``)."""
    del sub  # ``add`` already knows the subparsers; kept for the common signature
    from .teams._usage import GROUP_BY

    usage = add("usage", "Print usage totals (requests, tokens, cost) from the usage records.")
    usage.add_argument("--since", default="7d", help="30m, 12h, 7d, 2w or an ISO date (default: 7d)")
    usage.add_argument("--by", default="key", choices=GROUP_BY, help="group by (default: key)")
    usage.add_argument("--json", action="store_true", help="print JSON (the same as GET /admin/usage)")
    usage.set_defaults(func=cmd_usage)


def cmd_usage(args: argparse.Namespace) -> int:
    from .cli import _config_path
    from .teams import parse_since, usage_document

    config = load_config(_config_path(args.config))
    try:
        since = parse_since(args.since, time.time())
    except InvalidRequest as exc:
        print(f"routecodex: {exc.message}", file=sys.stderr)
        return 2
    totals = _totals(config, since, args.by)
    document = usage_document(totals, args.by, args.since, since)
    if args.json:
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(format_table(document))
    return 0


def _totals(config: GatewayConfig, since: float, by: str) -> list[UsageTotals]:
    from .teams._usage import query_sqlite, usage_path

    backend = config.teams.usage_backend(config.state.backend)
    if backend == "off":
        raise GatewayError('[teams] usage = "off": this gateway keeps no usage records', status=400)
    if backend == "sqlite":
        return query_sqlite(usage_path(config), since, by)
    return trio.run(_stream_totals, config, since, by)


async def _stream_totals(config: GatewayConfig, since: float, by: str) -> list[UsageTotals]:
    import coredis

    from .state._redis import RedisLink
    from .teams import query_stream

    assert config.state.url is not None
    client: coredis.Redis[bytes] = coredis.Redis.from_url(
        config.state.url.reveal(), connect_timeout=config.state.connect_timeout, verify_version=False
    )
    async with client:
        link = RedisLink(client, config.state.prefix, 30.0)
        with trio.fail_after(60):
            return await query_stream(link, f"{config.state.prefix}usage", since, by)


def format_table(document: dict[str, Any]) -> str:
    """The totals as aligned columns, the sum last."""
    head = (document["by"], "requests", "errors", "input", "output", "cached", "cost_usd")
    rows = [
        (
            group["group"] or ("(anonymous)" if document["by"] == "key" else "-"),
            f"{group['requests']:,}",
            f"{group['errors']:,}",
            f"{group['input_tokens']:,}",
            f"{group['output_tokens']:,}",
            f"{group['cached_tokens']:,}",
            f"{group['cost_usd']:.4f}",
        )
        for group in document["groups"]
    ]
    total = document["total"]
    rows.append(
        (
            "total",
            f"{total['requests']:,}",
            f"{total['errors']:,}",
            f"{total['input_tokens']:,}",
            f"{total['output_tokens']:,}",
            f"{total['cached_tokens']:,}",
            f"{total['cost_usd']:.4f}",
        )
    )
    widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head))]
    lines = [f"usage since {document['since']}"]
    for n, row in enumerate((head, *rows)):
        if n == len(rows):
            lines.append("  ".join("-" * w for w in widths))
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    return "\n".join(lines)
