"""The app factory: the one place where server objects are wired together.

``create_app`` builds a FastAPI app around a Store and a Notifier; the lifespan opens them,
runs the SchedulerEngine's loops in a task group, and on shutdown cancels and awaits them.
Nothing here is a module-level singleton: a test builds the app with the store it wants.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

from fastapi import Depends, FastAPI

from hetuflow import __version__
from hetuflow.clock import Clock, SystemClock
from hetuflow.config import Config
from hetuflow.models import ConcurrencyLimits
from hetuflow.server import metrics
from hetuflow.server.api import ROUTERS as API_ROUTERS
from hetuflow.server.api.errors import install_error_handlers, unavailable_log
from hetuflow.server.api.hot_routes import HotRoutes
from hetuflow.server.auth import Authenticator, authorize_metrics
from hetuflow.server.concurrency import ConcurrencyKeys
from hetuflow.server.console import mount_console
from hetuflow.server.context import ServerContext
from hetuflow.server.edge import EdgeGuard, EdgePolicy
from hetuflow.server.engine import SchedulerEngine
from hetuflow.server.gateway import AgentSocketRoute
from hetuflow.server.tasks import TaskQueue
from hetuflow.store import create_notifier, create_store
from hetuflow.store.base import Notifier, Store

API_DESCRIPTION = """\
hetuflow stores tasks durably and pushes each one to a capable agent over WebSocket (`/ws`).

Tasks are created here (or by cron jobs), dispatched by priority to agents that support their
task type and have every required capability, and end `succeeded`, `failed`, `timed_out` or
`cancelled`. Errors share one JSON shape: `{"error": {"code", "message", "field"}}`.

When auth is on (always when the server listens beyond loopback), send
`Authorization: Bearer <token>`: a `viewer` token reads, an `operator` token also changes
tasks, cron jobs and agents, an `admin` token also manages tokens. 401 without a valid token,
403 when its role is too low. See docs/security.md.

Before any token is checked, the `Host` header must name a trusted host (400
`host_not_trusted`; with auth off: `localhost`, `127.0.0.1`, `[::1]` unless `[server]
trusted_hosts` says otherwise), a browser page of another origin may not change state or open
`/ws` (403 `origin_not_allowed`), and with auth off requests that came through a proxy
(`X-Forwarded-*`, `Forwarded`) are refused (403 `proxy_requires_auth`).
"""


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    notifier: Notifier | None = None,
    clock: Clock | None = None,
    node_id: str | None = None,
) -> FastAPI:
    """Build the server app. The store and notifier are opened by the app's lifespan."""
    context = ServerContext(
        config=config,
        store=(
            store
            if store is not None
            else create_store(
                config.database,
                priority_aging_seconds=config.scheduler.priority_aging_seconds,
                max_agent_crashes_per_task=config.scheduler.max_agent_crashes_per_task,
            )
        ),
        notifier=notifier if notifier is not None else create_notifier(config.database),
        clock=clock if clock is not None else SystemClock(),
        node_id=node_id or config.server.node_id or f"node-{uuid.uuid4().hex[:8]}",
    )
    context.store.on_workflow_finished(context.metrics.workflow_finished)
    context.store.on_tasks_created(context.metrics.task_submitted)
    engine = SchedulerEngine(context)
    task_queue = TaskQueue(
        context.store,
        context.notifier,
        context.clock,
        config.scheduler,
        max_batch_tasks=config.server.max_batch_tasks,
        metrics=context.metrics,
        max_payload_bytes=config.server.max_payload_bytes,
        agents=engine.agents,
        sees_every_agent=config.database.kind == "sqlite",  # one server process
        dispatcher=engine.dispatcher,
        concurrency=ConcurrencyKeys(context.store, ConcurrencyLimits(dict(config.concurrency))),
        webhooks=config.webhooks,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await context.store.open()
        try:
            await context.notifier.open()
            try:
                async with asyncio.TaskGroup() as group:
                    runner = group.create_task(engine.run(), name="scheduler-engine")
                    await engine.started.wait()
                    yield
                    context.stopping.set()
                    runner.cancel()
            finally:
                await context.notifier.close()
        finally:
            await context.store.close()

    app = FastAPI(
        title="hetuflow",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.context = context
    app.state.engine = engine
    app.state.task_queue = task_queue
    app.state.authenticator = Authenticator(
        context.store,
        context.clock,
        enabled=config.auth_enabled,
        metrics_open=config.auth.metrics_open,
    )
    app.add_middleware(  # innermost: inside CatchAll, BodySizeLimit and EdgeGuard
        HotRoutes,
        queue=task_queue,
        context=context,
        authenticator=app.state.authenticator,
        unavailable_log=unavailable_log(app),
    )
    install_error_handlers(app)
    app.add_middleware(AgentSocketRoute, gateway=engine.gateway, path="/ws")
    app.add_middleware(EdgeGuard, policy=EdgePolicy.of(config))  # outermost: /ws too
    for api_router, dependencies in API_ROUTERS:
        app.include_router(api_router, dependencies=dependencies)
    app.include_router(metrics.router, dependencies=[Depends(authorize_metrics)])
    mount_console(app)
    return app


CONFIG_ENV = "HETUFLOW_CONFIG_JSON"


def begin_stopping(app: FastAPI) -> None:
    """The HTTP server is shutting down: end the app's open streams now. Safe to call from a
    signal handler of the thread running the event loop."""
    stopping = app.state.context.stopping
    try:
        asyncio.get_running_loop().call_soon_threadsafe(stopping.set)
    except RuntimeError:  # no loop running here: nothing is waiting on the event yet
        stopping.set()


def stop_streams_on_signals(app: FastAPI) -> None:
    """Chain ``begin_stopping`` before the SIGINT/SIGTERM handlers installed now (uvicorn's,
    which only start its graceful shutdown). For servers run by uvicorn itself (workers)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(
            sig: int, frame: FrameType | None, previous: Callable[..., Any] = previous
        ) -> None:
            begin_stopping(app)
            previous(sig, frame)

        signal.signal(signum, handler)


def create_app_from_environment() -> FastAPI:
    """The app of one worker process of ``hetuflow-server start --workers N`` (a uvicorn
    factory): the parent resolved the config and passed it as JSON in ``$HETUFLOW_CONFIG_JSON``.
    uvicorn calls it after installing its signal handlers, which get ``begin_stopping`` first."""
    from hetuflow.logging import configure_logging
    from hetuflow.server.access_log import drop_query_strings

    config = Config.model_validate_json(os.environ[CONFIG_ENV])
    configure_logging(config.server.log_format, config.server.log_level)
    drop_query_strings()
    app = create_app(config)
    stop_streams_on_signals(app)
    return app
