"""An app with auth on, per test, on a fresh database (SQLite and PostgreSQL), with a token of
every role, and an HTTP client through ASGI that sends no token unless told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import httpx
import pytest
from fastapi import FastAPI

from hetuflow.config import AuthConfig, Config, DatabaseConfig, ServerConfig
from hetuflow.models import NewAgent
from hetuflow.server.app import create_app
from hetuflow.server.auth import issue_token
from hetuflow.server.context import ServerContext
from hetuflow.tokens import Role


def secured_config(database: DatabaseConfig, **server: object) -> Config:
    return Config(
        database=database,
        server=ServerConfig.model_validate(server),
        auth=AuthConfig(enabled=True),
    )


def context_of(app: FastAPI) -> ServerContext:
    context: ServerContext = app.state.context
    return context


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def app(database: DatabaseConfig) -> AsyncIterator[FastAPI]:
    application = create_app(secured_config(database, max_payload_bytes=1024))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def tokens(app: FastAPI) -> dict[Role, str]:
    """A secret of every role; the agent one belongs to agent ``agent-1``."""
    context = context_of(app)
    now = context.clock.now()
    secrets: dict[Role, str] = {}
    for role in (Role.ADMIN, Role.OPERATOR, Role.VIEWER):
        secrets[role], _ = await issue_token(context.store, name=role, role=role, now=now)
    agent = await context.store.create_agent(NewAgent("agent-1"), now=now)
    secrets[Role.AGENT], _ = await issue_token(
        context.store, name="agent-1", role=Role.AGENT, now=now, agent_id=agent.id
    )
    return secrets


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8080") as http:
        yield http


ANY_ID = UUID("00000000-0000-4000-8000-000000000000")
