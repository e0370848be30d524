"""Handlers that take their agent process down (loaded with ``--module poison_handlers``):
``exit`` calls ``os._exit`` (no cleanup, no goodbye), ``segfault`` dereferences NULL."""

from __future__ import annotations

import ctypes
import os
from typing import Any

from hetuflow.agent import Handlers

handlers = Handlers()


@handlers.handler("exit")
def exit_now(payload: dict[str, Any]) -> None:
    os._exit(3)


@handlers.handler("segfault")
def segfault(payload: dict[str, Any]) -> None:
    ctypes.string_at(0)


@handlers.handler("fine")
def fine(payload: dict[str, Any]) -> str:
    return "ok"
