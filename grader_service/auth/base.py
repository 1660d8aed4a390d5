"""The authenticator interface: who is making this request?

An authenticator turns a request into an :class:`Identity` (or None). The API's base
handler then records the user and applies permissions in one place, so authenticators
only answer "who", never "may they".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from traitlets.config import LoggingConfigurable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from tornado.web import RequestHandler


@dataclass(frozen=True)
class Identity:
    """The authenticated caller.

    `roles` is None when the authenticator does not manage lecture roles (standalone
    tokens: roles are granted through the API); otherwise it maps lecture code to role
    and the service mirrors it (JupyterHub groups).
    """

    name: str
    admin: bool = False
    display_name: str | None = None
    roles: dict[str, str] | None = None
    # "token" (Authorization header) or "cookie" (browser session): only the latter needs XSRF checks.
    via: str = "token"
    # The caller's User row id, when the authenticator has already loaded the row in the request's
    # session (service tokens): the service then finds it without another query.
    user_id: int | None = None


class Authenticator(LoggingConfigurable):
    """Base class. Subclasses implement :meth:`authenticate`."""

    async def authenticate(self, handler: RequestHandler, session: Session) -> Identity | None:
        """Return the caller's identity, or None when the request carries no valid credentials."""
        raise NotImplementedError

    def get_handlers(self, base_url: str) -> list[tuple[str, type, dict[str, Any]]]:
        """Extra routes the authenticator needs (e.g. an OAuth callback)."""
        return []

    def login_url(self, handler: RequestHandler) -> str | None:
        """Where a browser without credentials should be sent, if anywhere."""
        return None

    async def start(self) -> None:
        """Called once when the service starts."""

    async def stop(self) -> None:
        """Called once when the service stops."""


def token_from_header(handler: RequestHandler) -> str | None:
    """The token in `Authorization: token <t>` (or `Bearer <t>`)."""
    header = handler.request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return None
