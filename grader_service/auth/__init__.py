"""Authenticators: who is calling. Permissions live in grader_service.api.permissions."""

from .base import Authenticator, Identity
from .token import TokenAuthenticator

# Short names accepted by `c.GraderService.authenticator_class`.
AUTHENTICATOR_ALIASES = {
    "token": "grader_service.auth.token.TokenAuthenticator",
    "jupyterhub": "grader_service.auth.jupyterhub.JupyterHubAuthenticator",
}

__all__ = ["AUTHENTICATOR_ALIASES", "Authenticator", "Identity", "TokenAuthenticator"]
