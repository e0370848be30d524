"""API and agent tokens: roles, the secret's shape, how it is stored (hashed), expiry.

A token is a random secret (``hf_`` + 43 URL-safe characters, 256 bits) shown once when it
is made. The database keeps only its SHA-256: a token is found by the hash of what a client
sends, so a lookup takes the same path whatever the guess, and a leaked database holds no
usable secret. (A salted slow hash buys nothing for a 256-bit random secret.)

Roles nest: ``admin`` can do everything an ``operator`` can, who can do everything a
``viewer`` can. ``agent`` is apart: it only opens the agent WebSocket, bound to one agent.
See docs/security.md.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from hetuflow.errors import InvalidInput

TOKEN_PREFIX = "hf_"
_SECRET_BYTES = 32
HINT_LENGTH = len(TOKEN_PREFIX) + 6
"""How much of a secret is kept in clear to tell tokens apart in lists (``hf_Ab3dE9``)."""


class Role(StrEnum):
    """What a token may do. ``admin`` > ``operator`` > ``viewer``; ``agent`` only connects."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    AGENT = "agent"

    def allows(self, needed: Role) -> bool:
        """Whether a token of this role may do what needs ``needed``."""
        if self is Role.AGENT or needed is Role.AGENT:
            return self is needed
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class NewApiToken:
    """A token to store; ``secret_hash`` is ``hash_secret(secret)``, never the secret."""

    name: str
    role: Role
    secret_hash: str
    hint: str
    expires_at: datetime | None = None
    agent_id: UUID | None = None  # required for (and only for) role agent


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: UUID
    name: str
    role: Role
    hint: str
    agent_id: UUID | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def problem_at(self, now: datetime) -> str | None:
        """Why this token cannot be used at ``now`` (None: it can)."""
        if self.revoked_at is not None:
            return "the token was revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "the token has expired"
        return None


def new_secret() -> str:
    """A fresh random token secret, ``hf_`` + 43 URL-safe characters."""
    return TOKEN_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def hash_secret(secret: str) -> str:
    """What the database keeps of a secret (hex SHA-256)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def hint_of(secret: str) -> str:
    return secret[:HINT_LENGTH]


def new_token(
    name: str,
    role: Role,
    *,
    expires_at: datetime | None = None,
    agent_id: UUID | None = None,
) -> tuple[str, NewApiToken]:
    """A secret and what to store of it. Checks that only agent tokens name an agent."""
    if (role is Role.AGENT) != (agent_id is not None):
        raise InvalidInput(
            "an agent token needs an agent; other roles must not name one", field="agent_id"
        )
    secret = new_secret()
    return secret, NewApiToken(
        name=name,
        role=role,
        secret_hash=hash_secret(secret),
        hint=hint_of(secret),
        expires_at=expires_at,
        agent_id=agent_id,
    )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_TOKEN_LIFETIME = timedelta(days=10 * 365)


def parse_duration(text: str, *, field: str = "expires_in") -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600`` (seconds), ``2w`` -> timedelta (> 0, ≤ 10 years)."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidInput(
            f"{text!r} is not a duration: use a number with s, m, h, d or w (e.g. 30d)",
            field=field,
        )
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if not 0 < seconds <= MAX_TOKEN_LIFETIME.total_seconds():
        raise InvalidInput(f"{text!r} must be more than 0 and at most 10 years", field=field)
    return timedelta(seconds=seconds)
