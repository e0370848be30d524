"""Token routes (admin only): create (the secret is in this answer only), list, revoke."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from hetuflow.server.api.deps import Context
from hetuflow.server.api.errors import error_responses
from hetuflow.server.api.schemas import Name
from hetuflow.server.auth import issue_token
from hetuflow.tokens import MAX_TOKEN_LIFETIME, ApiToken, Role

router = APIRouter(prefix="/api/tokens", tags=["tokens"])


class TokenCreate(BaseModel):
    """A token to make. Agent tokens name their agent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role = Field(
        description="`admin` (everything, tokens included), `operator` (create, cancel and "
        "retry tasks; manage cron jobs and agents), `viewer` (read only), `agent` (connect "
        "one agent's WebSocket)."
    )
    name: Name | None = Field(default=None, description="Label for people; default the role.")
    expires_in_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TOKEN_LIFETIME.total_seconds(),
        description="Refused after this many seconds; none: until revoked.",
    )
    agent_id: UUID | None = Field(
        default=None, description="For role `agent` (only): the agent it connects as."
    )


class TokenOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: UUID
    name: str
    role: Role
    hint: str = Field(description="The secret's first characters, to tell tokens apart.")
    agent_id: UUID | None
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken, now: datetime) -> TokenOut:
        status: Literal["active", "expired", "revoked"] = "active"
        if token.revoked_at is not None:
            status = "revoked"
        elif token.expires_at is not None and token.expires_at <= now:
            status = "expired"
        return cls(
            id=token.id,
            name=token.name,
            role=token.role,
            hint=token.hint,
            agent_id=token.agent_id,
            status=status,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
        )


class TokenCreated(TokenOut):
    token: str = Field(description="The secret, shown this once: the server keeps its hash.")


class TokenList(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: list[TokenOut]


@router.post(
    "",
    status_code=201,
    response_model=TokenCreated,
    summary="Create a token",
    responses=error_responses(400, 401, 403, 404, 413, 422),
)
async def create_token(body: TokenCreate, context: Context) -> TokenCreated:
    """The answer carries the secret (`token`); it is never shown again."""
    now = context.clock.now()
    expires_at = None
    if body.expires_in_seconds is not None:
        expires_at = now + timedelta(seconds=body.expires_in_seconds)
    secret, token = await issue_token(
        context.store,
        name=body.name or body.role.value,
        role=body.role,
        now=now,
        expires_at=expires_at,
        agent_id=body.agent_id,
    )
    return TokenCreated(**TokenOut.of(token, now).model_dump(), token=secret)


@router.get(
    "", response_model=TokenList, summary="List tokens", responses=error_responses(401, 403)
)
async def list_tokens(context: Context) -> TokenList:
    """Every token, newest first, revoked and expired ones too; never a secret."""
    now = context.clock.now()
    return TokenList(items=[TokenOut.of(t, now) for t in await context.store.list_api_tokens()])


@router.delete(
    "/{token_id}",
    response_model=TokenOut,
    summary="Revoke a token",
    responses=error_responses(401, 403, 404),
)
async def revoke_token(token_id: UUID, context: Context) -> TokenOut:
    """Refused from now on, on every node. Revoking twice is harmless."""
    now = context.clock.now()
    return TokenOut.of(await context.store.revoke_api_token(token_id, now=now), now)
