"""``[providers.NAME.auth]``: account credentials obtained by an OAuth login (issue 19).

An OAuth provider has no ``api_key``: its keys are token files, one per account, each holding
an access token (sent upstream as ``Authorization: Bearer``) and the refresh token that renews
it. ``token_file``/``token_files`` rotate and cool exactly like ``api_keys`` do; the router
sees one key per file.

``preset = "qwen" | "iflow"`` fills in the client and endpoints of the provider's own CLI.
Every preset value names where it was read (docs/config.md, "Account credentials"); a key
written next to the preset overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

import attrs

AuthFlow = Literal["device", "pkce"]
AuthPreset = Literal["qwen", "iflow"]

# Refresh this long before the access token expires: a request in flight when it expires would
# fail, and five minutes covers a long stream plus a slow token endpoint.
DEFAULT_REFRESH_MARGIN_S: Final = 300.0
# Where ``routecodex login NAME`` writes, and the gateway reads, when no token_file is named.
DEFAULT_TOKEN_DIR: Final = "~/.routecodex/auth"


@attrs.frozen(kw_only=True)
class AuthPresetValues:
    flow: AuthFlow
    client_id: str
    token_url: str
    device_url: str | None = None
    authorize_url: str | None = None
    scopes: tuple[str, ...] = ()
    client_secret: str | None = None
    userinfo_url: str | None = None
    source: str = ""


# The values each provider's own CLI uses; the source of each is in docs/config.md.
PRESETS: Final[dict[str, AuthPresetValues]] = {
    # Qwen Code (QwenLM/qwen-code, packages/core/src/qwen/qwenOAuth2.ts): RFC 8628 device flow
    # with a PKCE verifier, against chat.qwen.ai.
    "qwen": AuthPresetValues(
        flow="device",
        client_id="f0304373b74a44d2b584a3fb70ca9e56",
        token_url="https://chat.qwen.ai/api/v1/oauth2/token",
        device_url="https://chat.qwen.ai/api/v1/oauth2/device/code",
        scopes=("openid", "profile", "email", "model.completion"),
        source="https://github.com/QwenLM/qwen-code/blob/main/packages/core/src/qwen/qwenOAuth2.ts",
    ),
    # iFlow CLI: authorization code flow with a loopback redirect, against iflow.cn. The CLI is
    # published as a bundle; its client id and secret are public (a native app cannot keep a
    # secret, RFC 8252 8.5) and quoted by the projects listed in docs/config.md.
    "iflow": AuthPresetValues(
        flow="pkce",
        client_id="10009311001",
        client_secret="4Z3YjXycVsQvyGF1etiNlIBB4RsqSDtW",
        token_url="https://iflow.cn/oauth/token",
        authorize_url="https://iflow.cn/oauth",
        # iFlow's access token only buys the account's API key, which chat requests carry.
        userinfo_url="https://iflow.cn/api/oauth/getUserInfo",
        scopes=(),
        source="iFlow CLI (@iflow-ai/iflow-cli), as quoted in public OAuth clients",
    ),
}


@attrs.frozen(kw_only=True)
class AuthConfig:
    """One provider's OAuth client, endpoints and token files.

    After loading, ``flow``/``client_id``/``token_url``/... hold the preset's values where the
    file left them out (``resolve_auth``).
    """

    type: Literal["oauth"] = "oauth"
    preset: AuthPreset | None = None
    flow: AuthFlow | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    token_url: str | None = None
    device_url: str | None = None
    authorize_url: str | None = None
    scopes: tuple[str, ...] | None = None
    # After every token grant, GET this with the access token: its ``data.apiKey`` is what
    # requests carry instead of the access token (iFlow's two-step login).
    userinfo_url: str | None = None
    refresh_margin: float = attrs.field(default=DEFAULT_REFRESH_MARGIN_S, validator=attrs.validators.ge(1))
    token_file: str | None = None
    token_files: tuple[str, ...] = ()

    def paths(self, provider: str) -> tuple[Path, ...]:
        """Every token file, ``token_file`` first; the default file when none is named."""
        names = ((self.token_file,) if self.token_file else ()) + self.token_files
        if not names:
            names = (f"{DEFAULT_TOKEN_DIR}/{provider}.json",)
        return tuple(Path(os.path.expanduser(name)) for name in names)


def resolve_auth(auth: AuthConfig | None) -> AuthConfig | None:
    """``auth`` with its preset's values wherever the file set none."""
    if auth is None or auth.preset is None:
        return auth
    preset = PRESETS[auth.preset]
    secret = auth.client_secret
    if secret is None and preset.client_secret is not None:
        secret = Secret(preset.client_secret)
    return attrs.evolve(
        auth,
        flow=auth.flow or preset.flow,
        client_id=auth.client_id or preset.client_id,
        client_secret=secret,
        token_url=auth.token_url or preset.token_url,
        device_url=auth.device_url or preset.device_url,
        authorize_url=auth.authorize_url or preset.authorize_url,
        userinfo_url=auth.userinfo_url or preset.userinfo_url,
        scopes=auth.scopes if auth.scopes is not None else preset.scopes,
    )


def _url_problem(where: str, url: str | None) -> str | None:
    if url is None:
        return f"{where}: required"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{where}: {url!r} is not an http(s) URL"
    return None


def auth_problems(provider: str, provider_type: str, auth: AuthConfig, has_api_keys: bool) -> list[str]:
    """What is wrong with a resolved ``auth`` table, each naming its key path."""
    where = f"providers.{provider}.auth"
    problems: list[str] = []
    if provider_type == "mock":
        problems.append(f"{where}: a mock provider needs no credentials")
    if has_api_keys:
        problems.append(
            f"providers.{provider}: api_key/api_keys and an auth table are two kinds of keys; use one"
        )
    if auth.flow is None:
        problems.append(f'{where}.flow: required ("device" or "pkce"), or a preset')
    if not auth.client_id:
        problems.append(f"{where}.client_id: required, or a preset")
    for key in (
        ("token_url",)
        + (("device_url",) if auth.flow == "device" else ())
        + (("authorize_url",) if auth.flow == "pkce" else ())
    ):
        problem = _url_problem(f"{where}.{key}", getattr(auth, key))
        if problem:
            problems.append(problem)
    if auth.userinfo_url is not None:
        problem = _url_problem(f"{where}.userinfo_url", auth.userinfo_url)
        if problem:
            problems.append(problem)
    if auth.client_secret is not None and not auth.client_secret.reveal():
        problems.append(f"{where}.client_secret: empty")
    names = ((auth.token_file,) if auth.token_file else ()) + auth.token_files
    if any(not name.strip() for name in names):
        problems.append(f"{where}.token_files: a token file name is a non-empty path")
    paths = auth.paths(provider)
    if len(set(paths)) != len(paths):
        problems.append(f"{where}.token_files: a token file is listed twice")
    return problems


# Last, as in _model: the two modules name each other, and whichever is imported first must
# have defined its classes before it asks for the other's.
from ._model import Secret  # noqa: E402
