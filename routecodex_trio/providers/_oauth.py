"""The OAuth 2.0 exchanges the gateway and ``routecodex login`` make: refresh (RFC 6749 6),
device authorization (RFC 8628) and authorization code with PKCE (RFC 7636).

httpx does the HTTP (it runs on trio through anyio, and the token endpoint is called a few
times an hour, so our own pool has nothing to add), with the provider's proxy and trust
settings: each exchange is given the provider's ``OAuthHttp`` (``_oauth_http``), which picks
the client for each endpoint URL.

No OAuth library: the three exchanges are a form POST each, and what takes care -- which
errors mean "log in again", slow_down, the token shapes of Qwen's and iFlow's servers -- is
ours either way.

Errors from the server are reported by their OAuth ``error`` code and description only: the
body of a token response is never quoted whole, since it may carry tokens.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

import attrs
import httpx

if TYPE_CHECKING:
    from ..config import AuthConfig
    from ._oauth_http import OAuthHttp

# RFC 8628 3.4.
DEVICE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
# A token endpoint that takes longer than this is down, as far as one refresh is concerned.
TOKEN_TIMEOUT_S: Final = 30.0
# Refresh errors that mean the refresh token itself is dead (revoked, expired, wrong client):
# retrying cannot help, only a new login can (RFC 6749 5.2).
FATAL_ERRORS: Final = frozenset({"invalid_grant", "invalid_client", "unauthorized_client", "access_denied"})
# The longest error description we repeat.
_MAX_DESCRIPTION: Final = 200


class OAuthError(Exception):
    """The token or device endpoint refused, or could not be reached.

    ``fatal`` is true when only a new login can help (a revoked or expired refresh token);
    false for network failures, 5xx and 429, which a later attempt may get past.
    """

    def __init__(
        self, message: str, *, error: str = "", fatal: bool = False, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error = error
        self.fatal = fatal
        self.status = status


@attrs.frozen(kw_only=True)
class DeviceCode:
    device_code: str = attrs.field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


@attrs.frozen(kw_only=True)
class PkcePair:
    verifier: str = attrs.field(repr=False)
    challenge: str


def pkce_pair() -> PkcePair:
    """A fresh RFC 7636 verifier (43 chars of base64url) and its S256 challenge."""
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return PkcePair(verifier=verifier, challenge=base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


def _client_auth(auth: AuthConfig, form: dict[str, str]) -> dict[str, str]:
    """Headers for the client's authentication: HTTP Basic with a secret (RFC 6749 2.3.1),
    else the public client's ``client_id`` in the form."""
    form["client_id"] = auth.client_id or ""
    headers = {"accept": "application/json"}
    if auth.client_secret is not None:
        pair = f"{auth.client_id}:{auth.client_secret.reveal()}".encode()
        headers["authorization"] = "Basic " + base64.b64encode(pair).decode()
    return headers


def _describe(body: Any, status: int) -> tuple[str, str]:
    """(error code, short description) of an OAuth error answer."""
    if isinstance(body, dict):
        error = body.get("error")
        description = body.get("error_description") or body.get("message") or ""
        code = error if isinstance(error, str) else ""
        text = str(description)[:_MAX_DESCRIPTION]
        return code, f"{code or status}{': ' + text if text else ''}"
    return "", f"HTTP {status}"


async def _post(http: OAuthHttp, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
    route = http.route(url)
    try:
        response = await route.client.post(url, data=form, headers=headers, timeout=TOKEN_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise OAuthError(f"cannot reach {url}{route.via}: {route.why(exc)}") from None
    route.check_proxy_answer(url, response.status_code)
    try:
        body = response.json()
    except ValueError:
        body = None
    return response.status_code, body


def _token_answer(status: int, body: Any, url: str) -> dict[str, Any]:
    if status >= 400 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        error, text = _describe(body, status)
        if status < 400:
            text = "the answer holds no access_token"
        fatal = error in FATAL_ERRORS or (status in (400, 401) and not error)
        raise OAuthError(f"token endpoint {url} refused: {text}", error=error, fatal=fatal, status=status)
    return body


async def refresh(http: OAuthHttp, auth: AuthConfig, refresh_token: str) -> dict[str, Any]:
    """Trade a refresh token for new tokens.

    Returns:
        The token answer: ``access_token``, and ``expires_in``/``refresh_token``/... when sent.

    Raises:
        OAuthError: ``fatal`` for a dead refresh token, else a passing failure.
    """
    assert auth.token_url is not None
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    headers = _client_auth(auth, form)
    status, body = await _post(http, auth.token_url, form, headers)
    return _token_answer(status, body, auth.token_url)


async def start_device(http: OAuthHttp, auth: AuthConfig, pkce: PkcePair) -> DeviceCode:
    """Ask for a device code (RFC 8628 3.1). The PKCE challenge is sent too: Qwen's server
    requires it, and an RFC 8628 server ignores parameters it does not know."""
    assert auth.device_url is not None
    form = {"code_challenge": pkce.challenge, "code_challenge_method": "S256"}
    if auth.scopes:
        form["scope"] = " ".join(auth.scopes)
    headers = _client_auth(auth, form)
    status, body = await _post(http, auth.device_url, form, headers)
    if (
        status >= 400
        or not isinstance(body, dict)
        or not body.get("device_code")
        or not body.get("user_code")
    ):
        raise OAuthError(f"device authorization at {auth.device_url} failed: {_describe(body, status)[1]}")
    uri = body.get("verification_uri") or body.get("verification_url") or ""
    return DeviceCode(
        device_code=str(body["device_code"]),
        user_code=str(body["user_code"]),
        verification_uri=str(uri),
        verification_uri_complete=body.get("verification_uri_complete"),
        expires_in=float(body.get("expires_in") or 600),
        # RFC 8628 3.2: 5 s when the server names none; a server may ask for less (our tests do).
        interval=float(body["interval"]) if isinstance(body.get("interval"), (int, float)) else 5.0,
    )


async def poll_device(
    http: OAuthHttp, auth: AuthConfig, device: DeviceCode, pkce: PkcePair
) -> dict[str, Any] | str:
    """One poll of the token endpoint: the tokens, or ``"authorization_pending"``/``"slow_down"``.

    Raises:
        OAuthError: ``access_denied``, ``expired_token`` or any other refusal (``error`` says which).
    """
    assert auth.token_url is not None
    form = {"grant_type": DEVICE_GRANT, "device_code": device.device_code, "code_verifier": pkce.verifier}
    headers = _client_auth(auth, form)
    status, body = await _post(http, auth.token_url, form, headers)
    if status >= 400 or not isinstance(body, dict) or "access_token" not in body:
        error, text = _describe(body, status)
        if error in ("authorization_pending", "slow_down"):
            return error
        raise OAuthError(f"login failed: {text}", error=error, fatal=True, status=status)
    return _token_answer(status, body, auth.token_url)


async def fetch_api_key(http: OAuthHttp, auth: AuthConfig, access_token: str) -> str | None:
    """The account's API key from ``userinfo_url`` (iFlow), or None without one.

    iFlow reads the token from the ``accessToken`` parameter; it is also sent as a Bearer.

    Raises:
        OAuthError: the endpoint failed or named no API key (not fatal: the next refresh may work).
    """
    if auth.userinfo_url is None:
        return None
    route = http.route(auth.userinfo_url)
    try:
        response = await route.client.get(
            auth.userinfo_url,
            params={"accessToken": access_token},
            headers={"accept": "application/json", "authorization": f"Bearer {access_token}"},
            timeout=TOKEN_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        raise OAuthError(f"user info at {auth.userinfo_url}{route.via} failed: {route.why(exc)}") from None
    route.check_proxy_answer(auth.userinfo_url, response.status_code)
    try:
        body = response.json()
    except ValueError as exc:
        raise OAuthError(f"user info at {auth.userinfo_url} failed: {type(exc).__name__}") from None
    data = body.get("data") if isinstance(body, dict) else None
    api_key = data.get("apiKey") if isinstance(data, dict) else None
    if response.status_code >= 400 or not isinstance(api_key, str) or not api_key.strip():
        raise OAuthError(f"user info at {auth.userinfo_url} named no API key (HTTP {response.status_code})")
    return api_key.strip()


async def grant_with_api_key(http: OAuthHttp, auth: AuthConfig, answer: dict[str, Any]) -> dict[str, Any]:
    """A token answer, with the account's ``api_key`` added when the provider has one."""
    api_key = await fetch_api_key(http, auth, str(answer["access_token"]))
    return answer if api_key is None else {**answer, "api_key": api_key}


def authorization_url(auth: AuthConfig, redirect_uri: str, state: str, pkce: PkcePair) -> str:
    """The URL the user opens for the authorization code flow (RFC 6749 4.1.1 + RFC 7636)."""
    assert auth.authorize_url is not None
    params = {
        "response_type": "code",
        "client_id": auth.client_id or "",
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
    }
    if auth.scopes:
        params["scope"] = " ".join(auth.scopes)
    separator = "&" if "?" in auth.authorize_url else "?"
    return auth.authorize_url + separator + urlencode(params)


async def exchange_code(
    http: OAuthHttp, auth: AuthConfig, code: str, redirect_uri: str, pkce: PkcePair
) -> dict[str, Any]:
    """Trade an authorization code for tokens (RFC 6749 4.1.3, with the PKCE verifier)."""
    assert auth.token_url is not None
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": pkce.verifier,
    }
    headers = _client_auth(auth, form)
    status, body = await _post(http, auth.token_url, form, headers)
    return _token_answer(status, body, auth.token_url)
