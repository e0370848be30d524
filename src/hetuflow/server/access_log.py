"""The server's access lines without query strings.

uvicorn writes one line per HTTP request (``uvicorn.access``) and per WebSocket handshake
(``uvicorn.error``: ``"WebSocket /ws?token=…" [accepted]``) with the full path and query. An
agent that sends its token as ``?token=`` (tools that cannot set headers) would leave it in
every log that keeps these lines. ``QueryStringDropped`` cuts the query off the path of those
records (``/ws?token=hf_…`` -> ``/ws``); the method, path, status and client stay.
"""

from __future__ import annotations

import logging

ACCESS_LOGGERS = ("uvicorn.access", "uvicorn.error")
"""uvicorn's loggers that name a request's path: HTTP requests, WebSocket handshakes."""


class QueryStringDropped(logging.Filter):
    """Rewrite a record's path arguments (``/…?…``) to the path alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_path_with_query(arg) for arg in args):
            record.args = tuple(_path_with_query(arg) or arg for arg in args)
        return True


def _path_with_query(value: object) -> str | None:
    """The path of a ``/path?query`` argument; None for any other."""
    if isinstance(value, str) and value.startswith("/") and "?" in value:
        return value.partition("?")[0]
    return None


def drop_query_strings() -> None:
    """Install ``QueryStringDropped`` on uvicorn's access loggers (once per process)."""
    for name in ACCESS_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(existing, QueryStringDropped) for existing in target.filters):
            target.addFilter(QueryStringDropped())
