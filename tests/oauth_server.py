"""A fake OAuth server and an upstream that takes only its access tokens, both raw ASGI apps.

``FakeOAuth`` speaks the three grants the gateway and ``routecodex login`` use:

* device authorization (RFC 8628): ``POST /device/code`` records the PKCE challenge; each poll
  of ``POST /token`` takes the next outcome of ``device_script`` (``pending``, ``slow_down``,
  ``denied``, ``expired``, ``ok``), and ``ok`` checks the verifier against the challenge;
* authorization code with PKCE: the test plays the browser, ``approve()`` issues a code bound
  to the challenge and redirect URI the login printed, and the exchange checks both;
* refresh: a known refresh token gets a new access token and (``rotate``) a new refresh token,
  the old one dying; a revoked one gets ``invalid_grant``. ``refresh_delay_s`` holds the
  answer back so that concurrent callers overlap with it.

``TokenUpstream`` answers chat completions for a known, unexpired access token and 401 (quoting
the token, as some upstreams do) for anything else.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio

from .fakes import Receive, Send, _json, _read_body


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


@attrs.define(eq=False)
class FakeOAuth:
    client_id: str = "test-client"
    expires_in: float = 3600.0
    rotate: bool = True
    refresh_delay_s: float = 0.0
    device_script: list[str] = attrs.field(factory=list)
    device_interval: float = 0.0
    # access token -> expiry (epoch s); refresh token -> still valid
    access: dict[str, float] = attrs.field(factory=dict)
    refresh_tokens: set[str] = attrs.field(factory=set)
    revoked: set[str] = attrs.field(factory=set)
    refreshes: int = 0
    polls: list[str] = attrs.field(factory=list)
    device_codes: dict[str, str] = attrs.field(factory=dict)  # device_code -> challenge
    auth_codes: dict[str, tuple[str, str]] = attrs.field(factory=dict)  # code -> (challenge, redirect)
    errors: list[str] = attrs.field(factory=list)
    # iFlow's second step: GET /userinfo?accessToken=... names the account's API key.
    api_keys: dict[str, str] = attrs.field(factory=dict)  # api key -> access token it came from

    def issue(self, expires_in: float | None = None) -> dict[str, Any]:
        access = "at-" + secrets.token_urlsafe(12)
        refresh = "rt-" + secrets.token_urlsafe(12)
        lifetime = self.expires_in if expires_in is None else expires_in
        self.access[access] = time.time() + lifetime
        self.refresh_tokens.add(refresh)
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "resource_url": "portal.example",
        }

    def approve(self, challenge: str, redirect_uri: str) -> str:
        code = "code-" + secrets.token_urlsafe(8)
        self.auth_codes[code] = (challenge, redirect_uri)
        return code

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["path"] == "/userinfo":
            access = parse_qs(scope["query_string"].decode()).get("accessToken", [""])[0]
            if access not in self.access:
                await _json(send, 200, {"success": False, "message": "invalid token"})
                return
            api_key = "sk-" + access.removeprefix("at-")
            self.api_keys[api_key] = access
            await _json(send, 200, {"success": True, "data": {"apiKey": api_key, "email": "a@b.c"}})
            return
        form = {k: v[0] for k, v in parse_qs((await _read_body(receive)).decode()).items()}
        if form.get("client_id") != self.client_id:
            self.errors.append(f"client_id {form.get('client_id')!r}")
            await _json(send, 401, {"error": "invalid_client"})
            return
        if scope["path"] == "/device/code":
            if form.get("code_challenge_method") != "S256" or not form.get("code_challenge"):
                self.errors.append("device request without an S256 challenge")
                await _json(send, 400, {"error": "invalid_request"})
                return
            device_code = "dc-" + secrets.token_urlsafe(8)
            self.device_codes[device_code] = form["code_challenge"]
            await _json(
                send,
                200,
                {
                    "device_code": device_code,
                    "user_code": "WXYZ-1234",
                    "verification_uri": "https://auth.example/device",
                    "verification_uri_complete": "https://auth.example/device?user_code=WXYZ-1234",
                    "expires_in": 300,
                    "interval": self.device_interval,
                },
            )
            return
        if scope["path"] != "/token":
            await _json(send, 404, {"error": "not_found"})
            return
        grant = form.get("grant_type")
        if grant == "refresh_token":
            await self._refresh(form, send)
        elif grant == "urn:ietf:params:oauth:grant-type:device_code":
            await self._poll(form, send)
        elif grant == "authorization_code":
            code = form.get("code", "")
            bound = self.auth_codes.pop(code, None)
            if bound is None or bound[1] != form.get("redirect_uri"):
                self.errors.append("unknown code or redirect_uri")
                await _json(send, 400, {"error": "invalid_grant"})
            elif s256(form.get("code_verifier", "")) != bound[0]:
                self.errors.append("PKCE verifier does not match")
                await _json(send, 400, {"error": "invalid_grant", "error_description": "bad verifier"})
            else:
                await _json(send, 200, self.issue())
        else:
            await _json(send, 400, {"error": "unsupported_grant_type"})

    async def _refresh(self, form: dict[str, str], send: Send) -> None:
        self.refreshes += 1
        token = form.get("refresh_token", "")
        if self.refresh_delay_s:
            await trio.sleep(self.refresh_delay_s)
        if token in self.revoked or token not in self.refresh_tokens:
            # Quoting the token, as some servers do: the gateway must scrub it from its logs.
            description = f"refresh token {token} revoked"
            await _json(send, 400, {"error": "invalid_grant", "error_description": description})
            return
        answer = self.issue()
        if self.rotate:
            self.refresh_tokens.discard(token)
        else:
            self.refresh_tokens.discard(answer["refresh_token"])
            del answer["refresh_token"]
        await _json(send, 200, answer)

    async def _poll(self, form: dict[str, str], send: Send) -> None:
        challenge = self.device_codes.get(form.get("device_code", ""))
        if challenge is None:
            await _json(send, 400, {"error": "invalid_grant"})
            return
        outcome = self.device_script.pop(0) if self.device_script else "ok"
        self.polls.append(outcome)
        errors = {"pending": "authorization_pending", "slow_down": "slow_down"}
        errors |= {"denied": "access_denied", "expired": "expired_token"}
        if outcome in errors:
            await _json(send, 400, {"error": errors[outcome]})
        elif s256(form.get("code_verifier", "")) != challenge:
            self.errors.append("PKCE verifier does not match")
            await _json(send, 400, {"error": "invalid_grant"})
        else:
            await _json(send, 200, self.issue())


@attrs.define(eq=False)
class TokenUpstream:
    oauth: FakeOAuth
    seen: list[str] = attrs.field(factory=list)
    unauthorized: int = 0
    reject_all: bool = False  # a 401 for every token, quoting it

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        await _read_body(receive)
        token = headers.get("authorization", "").removeprefix("Bearer ")
        expiry = self.oauth.access.get(self.oauth.api_keys.get(token, token))
        if self.reject_all or expiry is None or time.time() >= expiry:
            self.unauthorized += 1
            message = f"invalid access token {token}"
            await _json(send, 401, {"error": {"message": message, "type": "invalid_request_error"}})
            return
        self.seen.append(token)
        await _json(
            send,
            200,
            {
                "id": "chatcmpl-oauth",
                "object": "chat.completion",
                "created": 1700000000,
                "model": "m1",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )
