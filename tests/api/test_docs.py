"""docs/api.md lists every route the server has (so the reference cannot fall behind)."""

from __future__ import annotations

from pathlib import Path

import httpx

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


async def test_every_route_is_in_the_reference(client: httpx.AsyncClient) -> None:
    text = DOC.read_text(encoding="utf-8")
    document = (await client.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"`{method.upper()} {path}`" in text, f"{method.upper()} {path} not in api.md"
