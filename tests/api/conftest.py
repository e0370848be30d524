"""An app per test on a fresh database (SQLite and PostgreSQL), its lifespan running, and an
HTTP client talking to it through ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from hetuflow.config import DatabaseConfig
from hetuflow.server.app import create_app

from .helpers import make_config


@pytest.fixture
async def app(database: DatabaseConfig) -> AsyncIterator[FastAPI]:
    application = create_app(make_config(database, max_body_bytes=64 * 1024, max_batch_tasks=50))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8080") as http:
        yield http
