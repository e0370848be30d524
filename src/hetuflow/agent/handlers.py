"""Handlers: one function per task type, async or sync.

``Handlers`` is a registry that an ``Agent`` owns (``agent.handler``) and that a module can
build on its own and hand over (``agent.include(handlers)``, or ``--module`` on the command
line: see ``load_module``). A handler takes ``(payload)`` or ``(payload, ctx)``; its return
value is the task's result. Sync handlers run in a thread pool; async ones run on the agent's
event loop with no thread of their own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from hetuflow.agent.context import TaskContext
from hetuflow.errors import ConfigInvalid

log = logging.getLogger("hetuflow.agent")

HandlerFunc = Callable[..., Any]
F = TypeVar("F", bound=HandlerFunc)


def _takes_context(func: HandlerFunc) -> bool:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: assume (payload, ctx)
        return True
    positional = [
        parameter
        for parameter in signature.parameters.values()
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    ]
    has_varargs = any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values())
    if has_varargs or len(positional) >= 2:
        return True
    if len(positional) == 1:
        return False
    raise TypeError(f"handler {func!r} must take (payload) or (payload, ctx)")


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler and how to call it."""

    task_type: str
    func: HandlerFunc
    is_async: bool
    takes_context: bool

    @classmethod
    def of(cls, task_type: str, func: HandlerFunc) -> Handler:
        if not callable(func):
            raise TypeError(f"handler for {task_type!r} is not callable: {func!r}")
        target = getattr(func, "__call__", func)  # noqa: B004 - callable objects
        is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(target)
        return cls(task_type, func, is_async, _takes_context(func))

    def _args(self, payload: dict[str, Any], ctx: TaskContext) -> tuple[Any, ...]:
        return (payload, ctx) if self.takes_context else (payload,)

    async def invoke(
        self,
        payload: dict[str, Any],
        ctx: TaskContext,
        pool: Callable[[], concurrent.futures.Executor],
        grace_seconds: float,
        abandon: Callable[[asyncio.Future[Any]], None] | None = None,
    ) -> Any:
        """Run the handler; a cancel reaches async handlers as ``CancelledError`` and sync
        ones through ``ctx.cancelled`` (the thread gets ``grace_seconds`` to return). A sync
        handler still running after that is given up on: ``abandon`` gets the future of its
        thread (the slots keep counting it until it ends), then ``CancelledError`` is raised."""
        if self.is_async:
            coroutine: Awaitable[Any] = self.func(*self._args(payload, ctx))
            return await coroutine
        ctx.cancelled  # noqa: B018 - made on the loop thread, before the handler's thread reads it
        future = asyncio.get_running_loop().run_in_executor(
            pool(), self.func, *self._args(payload, ctx)
        )
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            ctx.request_cancel()
            try:
                await asyncio.wait_for(asyncio.shield(future), grace_seconds)
            except TimeoutError:
                log.warning(
                    "sync handler for %s (task %s attempt %d) ignored the cancel for %.1f s; "
                    "its outcome is reported, its slot stays taken until its thread returns",
                    self.task_type,
                    ctx.task_id,
                    ctx.attempt,
                    grace_seconds,
                )
            except BaseException:
                pass  # cancelled again while waiting: the thread is given up on all the same
            if not future.done() and abandon is not None:
                abandon(future)
            raise


class Handlers:
    """Handlers by task type."""

    def __init__(self) -> None:
        self._by_type: dict[str, Handler] = {}

    def handler(self, task_type: str) -> Callable[[F], F]:
        """Decorator: ``@handlers.handler("web-scraping")`` registers the function."""

        def register(func: F) -> F:
            self.add(task_type, func)
            return func

        return register

    def add(self, task_type: str, func: HandlerFunc) -> None:
        if not task_type:
            raise ValueError("task type must not be empty")
        if task_type in self._by_type:
            log.warning("handler for task type %r replaced by %r", task_type, func)
        self._by_type[task_type] = Handler.of(task_type, func)

    def include(self, other: Handlers) -> None:
        for handler in other:
            self._by_type[handler.task_type] = handler

    def get(self, task_type: str) -> Handler | None:
        return self._by_type.get(task_type)

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._by_type

    def __iter__(self) -> Iterator[Handler]:
        return iter(list(self._by_type.values()))

    def task_types(self) -> list[str]:
        return sorted(self._by_type)


def load_module(name: str, register: Callable[[ModuleType], int]) -> ModuleType:
    """Import ``name`` (a dotted module path) and let ``register`` take its handlers.

    Raises ``ConfigInvalid`` when the module cannot be imported or registers nothing.
    """
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        raise ConfigInvalid(
            f"cannot import handler module {name!r}: {error}", field="module"
        ) from None
    if register(module) == 0:
        raise ConfigInvalid(
            f"module {name!r} registers no handler: give it a `register(agent)` function "
            "or a module-level `Handlers()` object",
            field="module",
        )
    return module
