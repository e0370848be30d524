"""docs/api.md lists every route the server has and every error code it answers (so the
reference cannot fall behind)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx

from hetuflow import errors
from hetuflow.server.api.errors import STATUS_BY_KIND

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


async def test_every_route_is_in_the_reference(client: httpx.AsyncClient) -> None:
    text = DOC.read_text(encoding="utf-8")
    document = (await client.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"`{method.upper()} {path}`" in text, f"{method.upper()} {path} not in api.md"


def _kinds(root: type[errors.HetuflowError]) -> Iterator[type[errors.HetuflowError]]:
    for kind in root.__subclasses__():
        yield kind
        yield from _kinds(kind)


def test_every_error_code_is_in_the_table_under_its_status() -> None:
    rows: dict[int, str] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if found := re.match(r"\| (\d{3}) \| (.*?) \|", line):
            rows[int(found[1])] = rows.get(int(found[1]), "") + found[2]
    bases = set(STATUS_BY_KIND)  # the kinds themselves (conflict, too_large...) are abstract
    missing = []
    for kind in _kinds(errors.HetuflowError):
        status = next((STATUS_BY_KIND[k] for k in kind.__mro__ if k in STATUS_BY_KIND), None)
        if status is None or (kind in bases and kind is not errors.InvalidInput):
            continue
        if f"`{kind.code}`" not in rows.get(status, ""):
            missing.append(f"{status} {kind.code}")
    assert not missing, f"error codes missing from the table in docs/api.md: {missing}"
