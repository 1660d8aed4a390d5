"""JupyterHub as the source of users, admins and lecture roles.

Select it with ``c.GraderService.authenticator_class = "jupyterhub"``; docs/jupyterhub.md has the matching
``jupyterhub_config.py``.

A request proves who it is in one of two ways:

- ``Authorization: token <t>`` with a hub token: a user's API token, or the single-user server's
  $JUPYTERHUB_API_TOKEN that the lab extension forwards. No XSRF check applies (browsers never add
  that header on their own).
- The service's own cookie, holding the OAuth token the hub issued to this service after the browser
  went through ``<base_url>oauth_login`` -> hub -> ``<base_url>oauth_callback``. Such requests return
  ``Identity(via="cookie")`` so the API's base handler enforces the XSRF check on state-changing methods.

Either way the hub turns the token into a user model (``GET <hub>/api/user`` *with that token*, as
``HubAuth.user_for_token`` does). That endpoint always includes the owner's name, admin flag and
groups -- the hub adds the "identify" scopes ``read:users:name!user=<self>`` and
``read:users:groups!user=<self>`` for it whatever the token's own scopes -- plus the token's scopes.
So the service's own API token needs no role to identify callers; it is only the OAuth client secret.

The answers are cached for ``cache_max_age`` seconds per token (HubAuth's cache), which bounds how long a
group change on the hub takes to show up in the service.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jupyterhub.services.auth import HubOAuth, check_scopes
from tornado import web
from tornado.httputil import url_concat
from traitlets import Bool, Integer, List, TraitError, Unicode, default, validate

from ..api.base import SLUG_RE, APIHandler
from ..api.errors import APIError
from ..api.permissions import public
from .base import Authenticator, Identity, token_from_header
from .roles import highest_roles

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from tornado.web import RequestHandler

# `<lecture code>:<role>`, e.g. `ml:tutor`; the code must be a valid lecture slug.
DEFAULT_GROUP_PATTERN = (
    r"(?P<lecture>[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?):(?P<role>student|tutor|instructor)"
)
XSRF_COOKIE = "_xsrf"
# An OAuth login that takes longer than this is abandoned; the browser drops the state cookie.
OAUTH_STATE_MAX_AGE = 600


def roles_from_groups(groups: list[str], pattern: re.Pattern[str]) -> dict[str, str]:
    """Lecture code -> role from hub group names; the highest role wins within a lecture.

    Groups that do not match the whole pattern, or whose lecture part is not a valid lecture code,
    are ignored: hubs have many groups that mean nothing to the grader.
    """
    pairs = []
    for group in groups:
        match = pattern.fullmatch(group)
        if match is None:
            continue
        code, role = match.group("lecture"), match.group("role").lower()
        if SLUG_RE.match(code):
            pairs.append((code, role))
    return highest_roles(pairs)


def safe_next_url(value: str | None, default: str) -> str:
    """`value` if it is a path on this origin, else `default`.

    The login route takes `?next=` from the URL, so a crafted link could otherwise send a freshly
    logged-in user to another site (an open redirect). `//host` and `/\\host` are other sites to a
    browser, and browsers drop tabs and newlines before parsing, so those are refused too.
    """
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


class JupyterHubAuthenticator(Authenticator):
    """Users, admin flags and lecture roles from JupyterHub (HubOAuth underneath)."""

    hub_api_url = Unicode(
        help="The hub's API URL as the service reaches it, e.g. http://hub:8081/hub/api. "
        "Default: $JUPYTERHUB_API_URL, else http://127.0.0.1:8081/hub/api."
    ).tag(config=True)

    @default("hub_api_url")
    def _default_hub_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL") or "http://127.0.0.1:8081/hub/api"

    hub_public_url = Unicode(
        help="The hub's URL as browsers see it, ending in /hub/: where the OAuth login sends them. "
        "A path (/hub/) is right when the service is reached through the hub's proxy; a service reached "
        "directly needs the full URL (https://hub.example.org/hub/). "
        "Default: $JUPYTERHUB_PUBLIC_HUB_URL, else <$JUPYTERHUB_BASE_URL>hub/."
    ).tag(config=True)

    @default("hub_public_url")
    def _default_hub_public_url(self) -> str:
        public = os.environ.get("JUPYTERHUB_PUBLIC_HUB_URL")
        if public:
            return public
        return os.environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/hub/"

    @validate("hub_public_url")
    def _validate_hub_public_url(self, proposal: dict[str, Any]) -> str:
        return proposal["value"].rstrip("/") + "/"

    api_token = Unicode(
        help="The service's token: the `api_token` of its entry in c.JupyterHub.services. The hub also "
        "uses it as the OAuth client secret. Default: $JUPYTERHUB_API_TOKEN."
    ).tag(config=True)

    @default("api_token")
    def _default_api_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    service_name = Unicode(
        help="The service's name in c.JupyterHub.services. Tokens need the scope "
        "access:services!service=<name> (or access:services). Default: $JUPYTERHUB_SERVICE_NAME, else grader."
    ).tag(config=True)

    @default("service_name")
    def _default_service_name(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_NAME") or "grader"

    oauth_client_id = Unicode(
        help="The OAuth client id the hub registered for the service; also the name of the login cookie. "
        "Default: $JUPYTERHUB_CLIENT_ID, else service-<service_name> (the hub's default)."
    ).tag(config=True)

    @default("oauth_client_id")
    def _default_oauth_client_id(self) -> str:
        return os.environ.get("JUPYTERHUB_CLIENT_ID") or f"service-{self.service_name}"

    oauth_redirect_uri = Unicode(
        help="Where the hub sends the browser back after login; must equal the service's "
        "oauth_redirect_uri in c.JupyterHub.services. Default: $JUPYTERHUB_OAUTH_CALLBACK_URL, else "
        "<base_url>oauth_callback (right under the hub's proxy at /services/<name>/). A service reached "
        "directly needs the full URL, e.g. https://grader.example.org/oauth_callback."
    ).tag(config=True)

    @default("oauth_redirect_uri")
    def _default_oauth_redirect_uri(self) -> str:
        return os.environ.get("JUPYTERHUB_OAUTH_CALLBACK_URL") or self.base_url + "oauth_callback"

    cache_max_age = Integer(
        30,
        help="Seconds to reuse the hub's answer for a token. This bounds how long a hub change (a user "
        "added to or removed from a <lecture>:<role> group, admin flag, revoked token) takes to reach the "
        "service. HubAuth's own default of 300 s is too long for role changes in a running course; "
        "30 s costs each active token at most two hub requests a minute. 0: ask the hub on every request.",
    ).tag(config=True)

    @validate("cache_max_age")
    def _validate_cache_max_age(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 0:
            raise TraitError("cache_max_age must be 0 or more seconds")
        return proposal["value"]

    hub_request_timeout = Integer(
        10, help="Seconds to wait for the hub's API before answering 504 (aiohttp would wait 5 minutes)."
    ).tag(config=True)

    admin_from_hub = Bool(True, help="Whether JupyterHub admins are grader-service admins.").tag(config=True)

    admin_users = List(
        Unicode(), help="Names of further grader-service admins, whatever their hub admin flag."
    ).tag(config=True)

    auto_create_lectures = Bool(
        False,
        help="Create a lecture (name = code) the first time a user in a <code>:<role> group is seen. "
        "If False, groups for lectures that do not exist yet are ignored until an admin creates them.",
    ).tag(config=True)

    group_pattern = Unicode(
        DEFAULT_GROUP_PATTERN,
        help="Regular expression (matched against the whole group name) with named groups `lecture` and "
        "`role` (student, tutor or instructor) that turns hub groups into lecture roles. "
        "The default matches <lecture code>:<role>, e.g. ml:tutor.",
    ).tag(config=True)

    @validate("group_pattern")
    def _validate_group_pattern(self, proposal: dict[str, Any]) -> str:
        try:
            pattern = re.compile(proposal["value"])
        except re.error as e:
            raise TraitError(f"group_pattern is not a regular expression: {e}") from None
        missing = {"lecture", "role"} - set(pattern.groupindex)
        if missing:
            raise TraitError(f"group_pattern needs the named group(s) {', '.join(sorted(missing))}")
        return proposal["value"]

    hub_auth: HubOAuth | None = None

    # --- derived settings -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The service's URL prefix (GraderService.base_url); cookies are scoped to it."""
        return getattr(self.parent, "base_url", "/")

    @property
    def access_scope(self) -> str:
        return f"access:services!service={self.service_name}"

    @property
    def authorize_url(self) -> str:
        return self.hub_public_url + "api/oauth2/authorize"

    @property
    def cookie_name(self) -> str:
        return self.oauth_client_id

    @property
    def state_cookie_name(self) -> str:
        return self.oauth_client_id + "-oauth-state"

    @property
    def default_next_url(self) -> str:
        return self.base_url + "api/v1/user"

    # --- Authenticator interface ------------------------------------------------------------

    async def start(self) -> None:
        if not self.api_token:
            raise ValueError(
                "JupyterHubAuthenticator.api_token is empty: set it (or $JUPYTERHUB_API_TOKEN) to the "
                "api_token of the service's entry in c.JupyterHub.services"
            )
        self.hub_auth = HubOAuth(
            parent=self,
            api_url=self.hub_api_url,
            api_token=self.api_token,
            oauth_client_id=self.oauth_client_id,
            oauth_redirect_uri=self.oauth_redirect_uri,
            base_url=self.base_url,
            cache_max_age=self.cache_max_age,
            access_scopes={self.access_scope},
        )
        self.log.info(
            "Authenticating with JupyterHub at %s as service %r (cache %d s)",
            self.hub_api_url,
            self.service_name,
            self.cache_max_age,
        )

    async def stop(self) -> None:
        # HubAuth talks to the hub through jupyterhub's shared aiohttp session; close it so that
        # shutdown does not warn about an unclosed client session.
        from jupyterhub.httpclient import JupyterHubHTTPClient

        if JupyterHubHTTPClient.initialized():
            await JupyterHubHTTPClient.instance().close()

    async def authenticate(self, handler: RequestHandler, session: Session) -> Identity | None:
        """A header token decides alone; otherwise the login cookie, if any.

        A token the hub does not know (or an expired cookie) is None, hence 401; a known token without
        the service's access scope is a 403 that names the missing scope.
        """
        token = token_from_header(handler)
        if token:
            model = await self.user_model(token)
            return None if model is None else self.identity_from_model(model, via="token")
        cookie = handler.get_signed_cookie(self.cookie_name)
        if not cookie:
            return None
        model = await self.user_model(cookie.decode("ascii", "replace"))
        if model is None:
            handler.clear_cookie(self.cookie_name, path=self.base_url)
            return None
        identity = self.identity_from_model(model, via="cookie")
        if not handler.get_cookie(XSRF_COOKIE):
            # A logged-in browser that lost its _xsrf cookie gets a new one, so its next
            # state-changing request can pass the check.
            self.set_xsrf_cookie(handler)
        return identity

    def get_handlers(self, base_url: str) -> list[tuple[str, type, dict[str, Any]]]:
        return [
            ("/oauth_login", OAuthLoginHandler, {}),
            ("/oauth_callback", OAuthCallbackHandler, {}),
        ]

    def login_url(self, handler: RequestHandler) -> str | None:
        return url_concat(self.base_url + "oauth_login", {"next": handler.request.uri})

    # --- talking to the hub -----------------------------------------------------------------

    async def user_model(self, token: str) -> dict[str, Any] | None:
        """The hub's model of the token's owner (cached), or None if the hub does not know the token."""
        assert self.hub_auth is not None, "JupyterHubAuthenticator.start() was not called"
        # HubAuth's cache treats a max age of 0 as "forever"; ours means "never".
        use_cache = self.cache_max_age > 0
        return await self._hub_call(self.hub_auth.user_for_token(token, use_cache=use_cache, sync=False))

    async def token_for_code(self, code: str, code_verifier: str) -> str:
        assert self.hub_auth is not None, "JupyterHubAuthenticator.start() was not called"
        return await self._hub_call(
            self.hub_auth.token_for_code(code, code_verifier=code_verifier, sync=False)
        )

    async def _hub_call(self, awaitable: Any) -> Any:
        """Await a HubAuth call with a deadline, turning its failures into JSON 502/504 answers.

        HubAuth reports an unreachable hub as a tornado 500, but that is not our bug: it is a bad gateway.
        """
        try:
            async with asyncio.timeout(self.hub_request_timeout):
                return await awaitable
        except TimeoutError:
            raise APIError(504, f"JupyterHub did not answer within {self.hub_request_timeout} s") from None
        except web.HTTPError as e:
            self.log.error("JupyterHub API request failed: %s", e.log_message)
            raise APIError(502, f"JupyterHub API request failed: {e.log_message}") from None

    def identity_from_model(self, model: dict[str, Any], via: str) -> Identity:
        """The caller's identity from the hub's user model; 403 if the token may not use this service."""
        if model.get("kind", "user") != "user":
            raise APIError(
                403,
                f"Only JupyterHub users can use this service, not the {model.get('kind')} {model.get('name')!r}",
            )
        if not check_scopes(self.access_scope, set(model.get("scopes") or ())):
            raise APIError(
                403,
                f"The token lacks the scope {self.access_scope!r} (or 'access:services') that this service "
                "requires; ask the hub admin to grant it (see the service's JupyterHub docs)",
            )
        name = model["name"]
        admin = (self.admin_from_hub and bool(model.get("admin"))) or name in self.admin_users
        roles = roles_from_groups(list(model.get("groups") or ()), re.compile(self.group_pattern))
        return Identity(name=name, admin=admin, roles=roles, via=via)

    # --- cookies ----------------------------------------------------------------------------

    def cookie_kwargs(self, handler: RequestHandler) -> dict[str, Any]:
        """Options shared by the service's cookies.

        Scoped to the service's base URL, so that under the hub's proxy they never reach (or clash with)
        the hub's or the user servers' cookies of the same name; SameSite=Lax, so cross-site POSTs do
        not even carry them. `request.protocol` honours X-Forwarded-Proto from the proxy.
        """
        kwargs: dict[str, Any] = {"path": self.base_url, "samesite": "Lax"}
        if handler.request.protocol == "https":
            kwargs["secure"] = True
        return kwargs

    def set_login_cookie(self, handler: RequestHandler, token: str) -> None:
        handler.set_signed_cookie(self.cookie_name, token, httponly=True, **self.cookie_kwargs(handler))

    def set_xsrf_cookie(self, handler: RequestHandler) -> None:
        """A fresh tornado XSRF cookie (a random hex token: tornado's documented version-1 format).

        Set at every login, so a value planted in the browser before login (cookie tossing) is
        useless afterwards. Readable by scripts on purpose: clients echo it in X-XSRFToken.
        """
        handler.set_cookie(XSRF_COOKIE, secrets.token_hex(16), **self.cookie_kwargs(handler))

    def set_state_cookie(self, handler: RequestHandler, state: str, next_url: str, verifier: str) -> None:
        """Keep the OAuth state, the `next` URL and the PKCE verifier in a signed cookie.

        HubOAuth keeps them in process memory instead, which breaks when the callback reaches another
        replica of the service; a signed cookie works with any number of replicas.
        """
        value = json.dumps({"state": state, "next": next_url, "verifier": verifier})
        handler.set_signed_cookie(
            self.state_cookie_name,
            value,
            expires_days=None,
            max_age=OAUTH_STATE_MAX_AGE,
            httponly=True,
            **self.cookie_kwargs(handler),
        )

    def pop_state_cookie(self, handler: RequestHandler) -> dict[str, str] | None:
        """The saved OAuth state, cleared so that it serves exactly one callback."""
        raw = handler.get_signed_cookie(self.state_cookie_name, max_age_days=OAUTH_STATE_MAX_AGE / 86400)
        handler.clear_cookie(self.state_cookie_name, path=self.base_url)
        if not raw:
            return None
        try:
            saved = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(saved, dict) or not all(isinstance(saved.get(k), str) for k in ("state", "next")):
            return None
        return saved


class _OAuthRouteHandler(APIHandler):
    """Base of the login routes: JSON errors, request accounting, and the caller if already known."""

    auth_required = False

    @property
    def authenticator(self) -> JupyterHubAuthenticator:
        auth = self.service.authenticator
        assert isinstance(auth, JupyterHubAuthenticator)  # only it routes these handlers
        return auth


class OAuthLoginHandler(_OAuthRouteHandler):
    """`GET <base_url>oauth_login?next=/path`: send the browser to the hub's OAuth authorize page."""

    @public
    async def get(self) -> None:
        auth = self.authenticator
        next_url = safe_next_url(self.get_query_argument("next", None), auth.default_next_url)
        if self.identity is not None and self.identity.via == "cookie":
            self.redirect(next_url)  # already logged in: no round trip through the hub
            return
        state = secrets.token_urlsafe(16)
        assert auth.hub_auth is not None, "JupyterHubAuthenticator.start() was not called"
        verifier, challenge, method = auth.hub_auth.generate_pkce_code_challenge()
        auth.set_state_cookie(self, state, next_url, verifier)
        self.redirect(
            url_concat(
                auth.authorize_url,
                {
                    "client_id": auth.oauth_client_id,
                    "redirect_uri": auth.oauth_redirect_uri,
                    "response_type": "code",
                    "state": state,
                    "code_challenge": challenge,
                    "code_challenge_method": method,
                },
            )
        )


class OAuthCallbackHandler(_OAuthRouteHandler):
    """`GET <base_url>oauth_callback?code=&state=`: finish the login, set the cookies, go to `next`."""

    @public
    async def get(self) -> None:
        auth = self.authenticator
        error = self.get_query_argument("error", None)
        if error:
            detail = self.get_query_argument("error_description", None) or error
            raise APIError(400, f"JupyterHub did not complete the login: {detail}")
        code = self.get_query_argument("code", None)
        state = self.get_query_argument("state", None)
        if not code or not state:
            raise APIError(400, "The OAuth callback needs the code and state arguments")
        saved = auth.pop_state_cookie(self)
        if saved is None or not hmac.compare_digest(saved["state"].encode(), state.encode()):
            raise APIError(
                400,
                f"This login was not started in this browser, or took too long; start again at {auth.base_url}oauth_login",
            )
        token = await auth.token_for_code(code, saved.get("verifier", ""))
        model = await auth.user_model(token)
        if model is None:
            raise APIError(502, "JupyterHub issued a token that it then did not recognise")
        auth.identity_from_model(model, via="cookie")  # refuses users without access to the service
        auth.set_login_cookie(self, token)
        auth.set_xsrf_cookie(self)
        auth.log.info("Logged in %s through JupyterHub", model["name"])
        self.redirect(saved["next"])
