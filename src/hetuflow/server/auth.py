"""Who may do what: the bearer-token check of the REST API, ``/metrics`` and the agent gateway.

With auth on (``Config.auth_enabled``) every request carries ``Authorization: Bearer <token>``.
``authorize`` is the one dependency, applied where the routers are included
(``server/api/__init__.py``, ``server/app.py``): reads need a ``viewer`` token, every other
method an ``operator`` token, and the token routes an ``admin`` one. Missing, unknown, expired
and revoked tokens get 401 with ``WWW-Authenticate: Bearer``; a valid token of too low a role
gets 403. Open without a token: ``/healthz``, ``/readyz``, the console's static files, the API
description (``/docs``, ``/openapi.json``) and, with ``[auth] metrics_open``, ``/metrics``.

Agents authenticate their WebSocket handshake with an ``agent`` token (bound to one agent) or
an ``admin`` token (any agent); see ``authenticate_agent`` and docs/security.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hetuflow.clock import Clock
from hetuflow.errors import PermissionDenied, Unauthenticated
from hetuflow.store.base import Store
from hetuflow.tokens import ApiToken, Role, hash_secret, new_token

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="A hetuflow token (`hf_…`): `Authorization: Bearer <token>`.",
)
"""Declares the scheme in the OpenAPI document (so `/docs` can send a token)."""
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SECRET_LENGTH = 512
"""Longer bearer values are refused without a lookup."""


def bearer_secret(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None when absent)."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, secret = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return secret.strip()


class Authenticator:
    """Turns a presented secret into a token, or refuses it. Wired once by the app factory."""

    def __init__(self, store: Store, clock: Clock, *, enabled: bool, metrics_open: bool) -> None:
        self.store = store
        self.clock = clock
        self.enabled = enabled
        self.metrics_open = metrics_open

    async def identify(self, secret: str | None) -> ApiToken:
        """The valid token for ``secret``; ``Unauthenticated`` naming why otherwise."""
        if secret is None:
            raise Unauthenticated(
                "this server requires a token: send 'Authorization: Bearer <token>'"
                " (hetuflow-server create-token makes one)"
            )
        if len(secret) > MAX_SECRET_LENGTH:
            raise Unauthenticated("the token is not valid")
        token = await self.store.find_api_token(hash_secret(secret))
        if token is None:
            raise Unauthenticated("the token is not valid")
        problem = token.problem_at(self.clock.now())
        if problem is not None:
            raise Unauthenticated(problem)
        return token

    async def check(self, headers: Mapping[str, str], needed: Role) -> ApiToken | None:
        """The token of a request that needs ``needed``; None when auth is off."""
        if not self.enabled:
            return None
        token = await self.identify(bearer_secret(headers))
        if not token.role.allows(needed):
            raise PermissionDenied(
                f"this needs a token with role {needed} or higher; this token is {token.role}"
            )
        return token


def _authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


async def authorize(request: Request, _: Credentials) -> None:
    """The dependency of every protected route: viewer to read, operator to change."""
    needed = Role.VIEWER if request.method in READ_METHODS else Role.OPERATOR
    request.state.token = await _authenticator(request).check(request.headers, needed)


async def authorize_admin(request: Request, _: Credentials) -> None:
    """The dependency of the token routes."""
    request.state.token = await _authenticator(request).check(request.headers, Role.ADMIN)


async def authorize_metrics(request: Request, _: Credentials) -> None:
    """``/metrics``: a viewer token, unless ``[auth] metrics_open``."""
    authenticator = _authenticator(request)
    if not authenticator.metrics_open:
        request.state.token = await authenticator.check(request.headers, Role.VIEWER)


# --- agents -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentAccess:
    """What the handshake's token lets a connection register as."""

    agent_id: UUID | None  # None: any agent (an admin token, or auth off)
    agent_name: str | None


async def authenticate_agent(authenticator: Authenticator, websocket: WebSocket) -> AgentAccess:
    """Check the handshake of an agent connection (before it is accepted).

    The token comes from ``Authorization: Bearer …`` or, for clients that cannot set headers,
    the ``token`` query parameter. An agent token binds the connection to its agent; an admin
    token lets it register as any agent. Raises ``Unauthenticated`` / ``PermissionDenied``.
    """
    if not authenticator.enabled:
        return AgentAccess(None, None)
    secret = bearer_secret(websocket.headers)
    if secret is None:
        secret = websocket.query_params.get("token") or None
    token = await authenticator.identify(secret)
    if token.role is Role.ADMIN:
        return AgentAccess(None, None)
    if token.role is not Role.AGENT or token.agent_id is None:
        raise PermissionDenied(
            f"a {token.role} token cannot connect an agent: use an agent token"
            " (POST /api/agents or hetuflow-server create-agent-token)"
        )
    agent = await authenticator.store.get_agent(token.agent_id)
    if agent is None:  # deleted since: its tokens went with it, but be sure
        raise Unauthenticated("the token is not valid")
    return AgentAccess(agent.id, agent.name)


# --- issuing ----------------------------------------------------------------------------------


async def issue_token(
    store: Store,
    *,
    name: str,
    role: Role,
    now: datetime,
    expires_at: datetime | None = None,
    agent_id: UUID | None = None,
) -> tuple[str, ApiToken]:
    """Make a token: return its secret (to show once) and what was stored."""
    secret, new = new_token(name, role, expires_at=expires_at, agent_id=agent_id)
    return secret, await store.create_api_token(new, now=now)
