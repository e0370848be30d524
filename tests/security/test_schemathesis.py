"""Schemathesis over the OpenAPI document, in process against the ASGI app with auth on and an
admin token: no generated request (valid or not) gets a 5xx. Bounded and derandomized so it
runs in seconds and the same way every time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.core.result import Ok
from schemathesis.python.asgi import shutdown_lifespans

from hetuflow.config import DatabaseConfig
from hetuflow.server.app import create_app
from hetuflow.server.auth import issue_token
from hetuflow.store import create_store
from hetuflow.tokens import Role

from .conftest import secured_config

EXAMPLES_PER_OPERATION = 25
STREAMING = {
    ("GET", "/api/events"),
    ("GET", "/api/tasks/{task_id}/logs/stream"),
    ("GET", "/api/workflows/{workflow_id}/events"),
}
"""Endless or long-lived streams, covered by their own tests."""
SIGNED = ("POST", "/api/hooks/{name}")
"""Answers a hook's signature, not the token: a generated call is 401 (or 404, 422)."""


async def _admin_token(database: DatabaseConfig) -> str:
    store = create_store(database)
    await store.open()
    try:
        secret, _ = await issue_token(store, name="fuzz", role=Role.ADMIN, now=datetime.now(UTC))
        return secret
    finally:
        await store.close()


def test_no_generated_request_gets_a_server_error(sqlite_database: DatabaseConfig) -> None:
    secret = asyncio.run(_admin_token(sqlite_database))
    app = create_app(secured_config(sqlite_database, max_body_bytes=64 * 1024))
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        checked = 0
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            route = (operation.method.upper(), operation.path)
            if route in STREAMING:
                continue

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def check(case: Case[Any]) -> None:
                response = case.call(headers=headers)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} -> {response.status_code}:"
                    f" {response.text[:500]}\n{case.as_curl_command()}"
                )
                if (case.method.upper(), case.operation.path) != SIGNED:
                    assert response.status_code not in (401, 403), response.text

            check()
            checked += 1
        assert checked >= 25
    finally:
        shutdown_lifespans()
