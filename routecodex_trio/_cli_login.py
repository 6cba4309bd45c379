"""``routecodex login NAME``: an OAuth login for a provider's ``[auth]`` table (issue 19).

Device flow (RFC 8628): prints the verification URL and the user code, then polls the token
endpoint at the server's ``interval``, five seconds slower after each ``slow_down``, until the
user approves (tokens), refuses (``access_denied``) or the code expires (``expired_token``).

Authorization code with PKCE (RFC 7636): listens on 127.0.0.1 on a free port, prints the URL to
open, and waits for the browser's redirect; a redirect whose ``state`` is not ours is answered
400 and ignored (it did not come from our login), one with an ``error`` ends the login.

Every call to the provider's OAuth endpoints goes out with its network settings (proxy, trust,
client certificate), as the gateway's refreshes do (``providers/_oauth_http``).

Either way the token file is written atomically, 0600 in a 0700 folder, in the shape the file
already had (Qwen Code's, ours...). A running gateway notices the new file by itself.

Also here: the token-file checks ``check-config`` runs (``check_token_files``).
"""

from __future__ import annotations

import secrets
import sys
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

import trio

from ._errors import ConfigError, GatewayError
from .config import load_config

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from pathlib import Path

    from .config import AuthConfig, GatewayConfig, NetworkConfig, ProviderConfig
    from .providers._oauth_http import OAuthHttp

# A device code's default life when the server does not say (RFC 8628 suggests minutes).
DEFAULT_LOGIN_TIMEOUT_S: Final = 600.0
# RFC 8628 3.5: "slow_down ... the interval MUST be increased by 5 seconds".
SLOW_DOWN_STEP_S: Final = 5.0
# The browser's redirect request is read up to this size, within this time.
MAX_REDIRECT_BYTES: Final = 16 * 1024
REDIRECT_READ_TIMEOUT_S: Final = 10.0


class LoginFailed(GatewayError):
    """The login did not produce tokens (denied, expired, state or endpoint trouble)."""


def register(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add the ``login`` subcommand (called from ``cli.build_parser``)."""
    login = add("login", "Log in to a provider with OAuth ([providers.NAME.auth]) and write its token file.")
    login.add_argument("provider", metavar="NAME", help="the provider whose [auth] table to use")
    login.add_argument(
        "--key",
        type=int,
        default=0,
        metavar="N",
        help="which of its token_files to write (default: the first)",
    )
    login.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_LOGIN_TIMEOUT_S,
        metavar="SECONDS",
        help="give up after this long (default: 600; a device code's own expiry may be sooner)",
    )
    login.set_defaults(func=cmd_login)


def cmd_login(args: argparse.Namespace) -> int:
    from .cli import _config_path

    config = load_config(_config_path(args.config))
    provider = config.providers.get(args.provider)
    if provider is None:
        raise ConfigError(f"no provider {args.provider!r} in {config.source or 'the config'}")
    if provider.auth is None:
        raise ConfigError(f"provider {args.provider!r} has no [providers.{args.provider}.auth] table")
    paths = provider.auth.paths(provider.name)
    if not 0 <= args.key < len(paths):
        raise ConfigError(f"--key {args.key}: provider {args.provider!r} has {len(paths)} token file(s)")
    path = paths[args.key]
    trio.run(_login, provider, config.network, path, args.timeout)
    print(f"logged in: wrote {path} (mode 0600); a running gateway picks it up by itself")
    return 0


async def _login(provider: ProviderConfig, network: NetworkConfig, path: Path, timeout_s: float) -> None:
    from .providers._oauth import OAuthError, grant_with_api_key
    from .providers._oauth_http import open_oauth_clients
    from .providers._tokens import new_token_set, shape_of, write_token_file

    auth = provider.auth
    assert auth is not None
    async with open_oauth_clients() as clients:
        http = clients.bind(provider, network)
        try:
            with trio.fail_after(timeout_s):
                if auth.flow == "device":
                    answer = await _device(http, auth)
                else:
                    answer = await _pkce(http, auth)
                answer = await grant_with_api_key(http, auth, answer)
        except trio.TooSlowError:
            raise LoginFailed(f"no login within {timeout_s:g} s") from None
        except OAuthError as exc:
            raise LoginFailed(_explain(exc.error, exc.message)) from None
    if not answer.get("refresh_token"):
        print(
            "routecodex: warning: the server sent no refresh token; the gateway cannot renew this "
            "login when it expires",
            file=sys.stderr,
        )
    try:
        write_token_file(path, new_token_set(answer, shape_of(path)))
    except OSError as exc:
        raise LoginFailed(f"cannot write {path}: {exc.strerror or exc}") from None


def _explain(error: str, message: str) -> str:
    if error == "access_denied":
        return "the login was denied"
    if error == "expired_token":
        return "the code expired before the login was approved; run the command again"
    return message


async def _device(http: OAuthHttp, auth: AuthConfig) -> dict[str, Any]:
    from .providers._oauth import OAuthError, pkce_pair, poll_device, start_device

    pkce = pkce_pair()
    device = await start_device(http, auth, pkce)
    print("To log in, open this address in a browser:", flush=True)
    print(f"  {device.verification_uri_complete or device.verification_uri}", flush=True)
    print(f"and enter the code: {device.user_code}", flush=True)
    print("Waiting for the login to be approved...", flush=True)
    interval = max(device.interval, 0.0)
    with trio.move_on_after(device.expires_in) as expiry:
        while True:
            await trio.sleep(interval)
            result = await poll_device(http, auth, device, pkce)
            if result == "authorization_pending":
                continue
            if result == "slow_down":
                interval += SLOW_DOWN_STEP_S
                continue
            assert isinstance(result, dict)
            return result
    assert expiry.cancelled_caught
    raise OAuthError("the device code expired", error="expired_token", fatal=True)


async def _pkce(http: OAuthHttp, auth: AuthConfig) -> dict[str, Any]:
    from .providers._oauth import authorization_url, exchange_code, pkce_pair

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0] as listener:
        port = listener.socket.getsockname()[1]
        redirect_uri = f"http://127.0.0.1:{port}/callback"
        state = secrets.token_urlsafe(24)
        pkce = pkce_pair()
        print("To log in, open this address in a browser:", flush=True)
        print(f"  {authorization_url(auth, redirect_uri, state, pkce)}", flush=True)
        print(f"Waiting for the browser to come back to {redirect_uri} ...", flush=True)
        code = await _wait_for_code(listener, state)
    return await exchange_code(http, auth, code, redirect_uri, pkce)


async def _wait_for_code(listener: trio.SocketListener, state: str) -> str:
    """The authorization code from the first redirect that carries our ``state``."""
    while True:
        stream = await listener.accept()
        async with stream:
            head = b""
            with trio.move_on_after(REDIRECT_READ_TIMEOUT_S):
                while b"\r\n\r\n" not in head and len(head) < MAX_REDIRECT_BYTES:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    head += chunk
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            target = urlsplit(parts[1]) if len(parts) == 3 and parts[0] == "GET" else None
            if target is None or target.path != "/callback":
                await _answer(stream, 404, "Not the login redirect.")
                continue
            query = {k: v[0] for k, v in parse_qs(target.query).items()}
            if not secrets.compare_digest(query.get("state", ""), state):
                await _answer(
                    stream, 400, "This login link is not the one routecodex opened (state mismatch)."
                )
                print(
                    "routecodex: warning: ignored a redirect with the wrong state",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            if "error" in query:
                await _answer(stream, 400, f"Login refused: {query['error']}.")
                raise LoginFailed(_explain(query["error"], f"the login was refused: {query['error']}"))
            if not query.get("code"):
                await _answer(stream, 400, "The redirect carries no code.")
                continue
            await _answer(stream, 200, "Logged in. You can close this tab and return to the terminal.")
            return query["code"]


async def _answer(stream: trio.SocketStream, status: int, text: str) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    body = text.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    with trio.move_on_after(REDIRECT_READ_TIMEOUT_S):
        await stream.send_all(head + body)


def check_token_files(config: GatewayConfig) -> tuple[list[str], list[str]]:
    """``check-config``: (errors, warnings) about every OAuth provider's token files, naming them."""
    from .providers._tokens import TokenFileError, permission_problem, read_token_file

    errors: list[str] = []
    warnings: list[str] = []
    for name, provider in config.providers.items():
        if provider.auth is None:
            continue
        for path in provider.auth.paths(name):
            try:
                read_token_file(path)
            except TokenFileError as exc:
                errors.append(f"{name}: token file {path}: {exc.reason}; run `routecodex login {name}`")
                continue
            warning = permission_problem(path)
            if warning:
                warnings.append(f"{name}: {warning}")
    return errors, warnings
