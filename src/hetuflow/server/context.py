"""What every server component is built from; wired once in the app factory."""

from __future__ import annotations

from dataclasses import dataclass

from hetuflow.clock import Clock
from hetuflow.config import Config
from hetuflow.store.base import Notifier, Store


@dataclass(frozen=True, slots=True)
class ServerContext:
    config: Config
    store: Store
    notifier: Notifier
    clock: Clock
    node_id: str
