"""The web console: static files shipped in the package (``hetuflow/web``), served by the server.

``/`` answers the console's ``index.html``; its scripts and styles are under ``/static/``. The
console routes pages with the URL fragment (``/#/tasks/…``), so nothing else is claimed and
``/api``, ``/ws``, ``/docs``, ``/openapi.json``, ``/metrics``, ``/healthz`` and ``/readyz`` stay
with their own routes whatever order things are mounted in.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response

STATIC_PREFIX = "/static"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _load_assets() -> dict[str, bytes]:
    """Every file of ``hetuflow/web`` by name, read once (the package does not change)."""
    root = resources.files("hetuflow").joinpath("web")
    return {
        entry.name: entry.read_bytes()
        for entry in root.iterdir()
        if entry.is_file() and any(entry.name.endswith(suffix) for suffix in _MEDIA_TYPES)
    }


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/`` and its assets under ``/static/``."""
    assets = _load_assets()
    index = assets["index.html"]

    @app.get("/", include_in_schema=False)
    async def console_index() -> HTMLResponse:
        return HTMLResponse(index, headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @app.get(STATIC_PREFIX + "/{name}", include_in_schema=False)
    async def console_asset(name: str) -> Response:
        body = assets.get(name)
        if body is None or name == "index.html":
            raise HTTPException(status_code=404, detail=f"no console file {name!r}")
        media_type = _MEDIA_TYPES[name[name.rindex(".") :]]
        return Response(
            body,
            media_type=media_type,
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )
