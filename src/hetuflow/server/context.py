"""What every server component is built from; wired once in the app factory."""

from __future__ import annotations

from dataclasses import dataclass, field

from hetuflow.clock import Clock
from hetuflow.config import Config
from hetuflow.server.metrics import Metrics
from hetuflow.store.base import Notifier, Store


@dataclass(frozen=True, slots=True)
class ServerContext:
    config: Config
    store: Store
    notifier: Notifier
    clock: Clock
    node_id: str
    metrics: Metrics = field(default_factory=Metrics)
    """This app's Prometheus metrics (its own registry); components call its methods."""
