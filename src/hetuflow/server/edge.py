"""The edge of the server: which ``Host``, ``Origin`` and proxy headers a request may carry.

``EdgeGuard`` is a pure ASGI middleware, outermost in the app, so it sees every HTTP request
and every WebSocket handshake (the agents' ``/ws`` included) before anything reads them. It
answers in the API's error shape, before any token is checked:

1. **Host** (400 ``host_not_trusted``): the ``Host`` header must name one of the trusted hosts.
   A web page on another name that resolves to this machine (DNS rebinding) sends its own
   name. Unset ``[server] trusted_hosts`` means the loopback names and the bound address while
   auth is off, any host while auth is on (the token protects the server there). A request
   with no ``Host`` at all (HTTP/1.0 tools) passes: every browser sends one; so do the
   probes ``/healthz`` and ``/readyz``, which hold no data.
2. **Proxies** (403 ``proxy_requires_auth``): while auth is off, a request carrying
   ``Forwarded``, ``X-Forwarded-*`` or ``X-Real-IP`` came through a proxy, which would publish
   the open server to whoever reaches the proxy. Behind a proxy, auth must be on.
3. **Origin** (403 ``origin_not_allowed``): a browser request that changes state (any method
   but GET, HEAD and OPTIONS) or opens a WebSocket carries ``Origin``; it must be the server's
   own (same host and port as the ``Host`` header) or one of ``[server] allowed_origins``.
   Clients that are not browsers (the CLI, the SDK, agents, curl) send no ``Origin`` and pass.
   This holds with auth on too: a cross-site page must not open ``/ws`` even with a token.
4. **Webhook deliveries** (403 ``webhook_delivery_refused``): a request carrying
   ``X-Hetuflow-Delivery-Id`` is an outgoing webhook of a hetuflow server (docs/webhooks.md),
   pointed at this server's own API (or another node's). It changes nothing here: a task whose
   ``webhook_url`` names ``/api/tasks/{id}/retry`` cannot retry tasks, nor loop.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from hetuflow.config import DEFAULT_PORTS, Config, normalize_origin
from hetuflow.protocol import CloseCode
from hetuflow.server.auth import READ_METHODS
from hetuflow.webhooks import DELIVERY_ID_HEADER

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
"""Hold no data: answered whatever the ``Host`` (probes address a node by its IP)."""
PROXY_HEADERS = frozenset({b"forwarded", b"x-real-ip"})
PROXY_HEADER_PREFIX = b"x-forwarded-"
DELIVERY_HEADER = DELIVERY_ID_HEADER.lower().encode()
"""Servers without the WebSocket denial-response extension get a close before accept."""


class Refusal(NamedTuple):
    status: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class EdgePolicy:
    """What ``EdgeGuard`` lets through; built from the config by ``EdgePolicy.of``."""

    trusted_hosts: tuple[str, ...] | None
    """Lower-case names, IP addresses and ``*.domain`` patterns; None: any host."""
    allowed_origins: frozenset[str]
    """Normalised origins (``config.normalize_origin``) allowed besides the server's own."""
    refuse_proxied: bool
    """Refuse requests that came through a proxy (auth is off)."""
    _names: frozenset[str] = field(init=False, repr=False)
    _suffixes: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        patterns = self.trusted_hosts or ()
        names = frozenset(p for p in patterns if not p.startswith("*."))
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_suffixes", tuple(p[1:] for p in patterns if p not in names))

    @classmethod
    def of(cls, config: Config) -> EdgePolicy:
        hosts = config.server.trusted_hosts
        if hosts is None and not config.auth_enabled:
            hosts = _with_bound_host(LOOPBACK_HOSTS, config.server.host)
        if hosts is not None and "*" in hosts:
            hosts = None
        return cls(hosts, frozenset(config.server.allowed_origins), not config.auth_enabled)

    def check(self, scope: Scope) -> Refusal | None:
        """Why this request or handshake is refused; None when it may go on."""
        host_header = origin = None
        delivery = False
        proxied: list[str] = []
        for name, value in scope["headers"]:  # one pass: this runs for every request
            if name == b"host":
                host_header = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name in PROXY_HEADERS or name.startswith(PROXY_HEADER_PREFIX):
                proxied.append(name.decode("latin-1"))
            elif name == DELIVERY_HEADER:
                delivery = True
        if delivery:
            return Refusal(
                403,
                "webhook_delivery_refused",
                "this is a hetuflow webhook delivery (X-Hetuflow-Delivery-Id): a task's"
                " webhook_url must not point at a hetuflow server's own API (docs/webhooks.md)",
            )
        host = parse_host(host_header) if host_header is not None else None
        # no Host at all (HTTP/1.0 tools) is no browser: every browser sends one
        probe = scope["type"] == "http" and scope.get("path") in PROBE_PATHS
        if host_header is not None and not probe and not self._trusts(host):
            return Refusal(
                400,
                "host_not_trusted",
                f"Host {host_header[:100]!r} is not a trusted host of this server: use one of"
                f" {', '.join(self.trusted_hosts or ())}, or add it to [server] trusted_hosts"
                " (docs/security.md)",
            )
        if self.refuse_proxied and proxied:
            return Refusal(
                403,
                "proxy_requires_auth",
                f"this request came through a proxy ({', '.join(sorted(set(proxied)))}) but this"
                " server runs without auth: behind a reverse proxy turn auth on ([auth] enabled"
                " = true, docs/security.md)",
            )
        changes_state = scope["type"] == "websocket" or scope.get("method") not in READ_METHODS
        if changes_state and origin is not None and not self._allows_origin(origin, host):
            what = "open a WebSocket" if scope["type"] == "websocket" else "change anything"
            return Refusal(
                403,
                "origin_not_allowed",
                f"a page from {origin[:100]!r} may not {what} on this server: only its own"
                " pages and [server] allowed_origins may (docs/security.md)",
            )
        return None

    def _trusts(self, host: tuple[str, int | None] | None) -> bool:
        if self.trusted_hosts is None:
            return True
        if host is None:
            return False
        return host[0] in self._names or host[0].endswith(self._suffixes)

    def _allows_origin(self, origin: str, host: tuple[str, int | None] | None) -> bool:
        normal = normalize_origin(origin)
        if normal is None:  # "null" (sandboxed frames, file://) or garbage: never the server's
            return False
        if normal in self.allowed_origins:
            return True
        if host is None:
            return False
        parts = urlsplit(normal)
        scheme_port = DEFAULT_PORTS[parts.scheme]
        origin_host = parse_host(parts.netloc)
        # same host and port as the request; the scheme may differ behind a TLS proxy
        return origin_host is not None and (origin_host[0], origin_host[1] or scheme_port) == (
            host[0],
            host[1] or scheme_port,
        )


@functools.lru_cache(maxsize=1024)
def parse_host(value: str) -> tuple[str, int | None] | None:
    """A ``Host`` header (``example.com:8080``, ``[::1]:8080``) -> (lower-case host with IP
    addresses in their normal form, port or None); None when it is not one. Cached: a server
    sees few distinct values, and this runs for every request."""
    value = value.strip().lower()
    if value.startswith("["):
        address, bracket, port = value[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        try:
            host = str(ipaddress.IPv6Address(address))
        except ValueError:
            return None
        port = port[1:]
    else:
        host, colon, port = value.partition(":")
        if colon and not port:
            return None
        if not host or not host.isascii() or not all(c.isalnum() or c in ".-_" for c in host):
            return None
    if not port:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _with_bound_host(names: tuple[str, ...], bound: str) -> tuple[str, ...]:
    parsed = parse_host(f"[{bound}]" if ":" in bound else bound)
    if parsed is None or parsed[0] in names or parsed[0] in ("0.0.0.0", "::"):
        return names
    return (*names, parsed[0])


class EdgeGuard:
    """ASGI middleware: refuse what ``EdgePolicy.check`` refuses, pass the rest on."""

    def __init__(self, app: ASGIApp, *, policy: EdgePolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self.policy.check(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        logger.debug("refused %s %s: %s", scope["type"], scope.get("path"), refusal.message)
        body = {"error": {"code": refusal.code, "message": refusal.message, "field": None}}
        response = JSONResponse(body, refusal.status)
        if scope["type"] == "http":
            await response(scope, receive, send)
            return
        websocket = WebSocket(scope, receive, send)
        if "websocket.http.response" in scope.get("extensions", {}):
            await websocket.send_denial_response(response)
        else:
            await websocket.close(CloseCode.POLICY_VIOLATION, refusal.message[:120])
