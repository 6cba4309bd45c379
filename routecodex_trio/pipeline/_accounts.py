"""OAuth accounts in the pipeline (issue 19): cooling the keys that need a login, and listing them.

A token file belongs to one key index of one provider, but health is kept per
``provider.model#key``: a key that needs a login is cooled under every model of its provider,
so that no model tries it again before ``fatal_cooldown`` (or a login) brings it back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..providers._credentials import login_hint

if TYPE_CHECKING:
    from ..config import GatewayConfig
    from ..providers import CredentialSet
    from ..router import Router


def cool_account(config: GatewayConfig, router: Router, provider: str, index: int, reason: str) -> None:
    """Cool every target of key ``index`` of ``provider`` for ``[health] fatal_cooldown``."""
    provider_config = config.providers.get(provider)
    if provider_config is None:
        return
    for model in provider_config.models:
        target = router.target(provider, model.id, index)
        router.health.cool(target.health_key, config.health.fatal_cooldown, reason)


def cool_logins(config: GatewayConfig, router: Router, credentials: CredentialSet | None) -> None:
    """At the start of a config generation: the keys whose token files are unusable start cooled."""
    if credentials is None:
        return
    for credential in credentials.needing_login():
        if credential.provider in config.providers:
            reason = f"{credential.problem}; {login_hint(credential.provider)}"
            cool_account(config, router, credential.provider, credential.index, reason)


def login_required(config: GatewayConfig, credentials: CredentialSet | None) -> list[dict[str, Any]]:
    """The keys that need ``routecodex login``, for ``GET /health``: no path, no token."""
    if credentials is None:
        return []
    return [
        {
            "provider": c.provider,
            "key": c.index,
            "reason": c.problem,
            "command": f"routecodex login {c.provider}",
        }
        for c in credentials.needing_login()
        if c.provider in config.providers
    ]
