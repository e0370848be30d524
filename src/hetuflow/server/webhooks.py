"""WebhookSender: POSTs the outbox's due deliveries (docs/webhooks.md), on every node.

The store writes a delivery in the transaction that settles a task with a ``webhook_url``
(``Store.claim_webhook_deliveries`` and its neighbours). This loop claims due deliveries (as
many as it has free sending slots, ``[webhooks] max_in_flight``), each under a lease of the
POST's timeout plus ``LEASE_MARGIN``, and sends each in its own task of one task group. A POST
answered 2xx is ``delivered``; any other answer, a refused connection or a timeout is retried
after ``backoff_seconds * 2^(n-1)`` (capped, with jitter), until ``max_attempts`` POSTs are
spent (``given_up``). Redirects are not followed (a 3xx is a failure).

Wake-ups: a new delivery's ``pg_notify`` (``WEBHOOKS_DUE``, PostgreSQL), a sending slot that
frees, a timer to the next due delivery, and at most ``poll_interval_seconds`` between looks
(SQLite has no notification, and a lost one must not strand a delivery).

A node that stops or dies mid-POST leaves its claims leased: another node (or this one after a
restart) sends them again once the lease ends. Delivery is therefore at least once; receivers
de-duplicate on ``X-Hetuflow-Delivery-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta
from typing import Literal

import httpx
import orjson

from hetuflow.config import WebhooksConfig
from hetuflow.errors import InvalidInput
from hetuflow.server.context import ServerContext
from hetuflow.server.resilience import StoreRetry
from hetuflow.store.base import WEBHOOKS_DUE
from hetuflow.webhooks import (
    DeliveryOutcome,
    DeliveryState,
    WebhookDelivery,
    backoff_delay,
    delivery_body,
    host_allowed,
    signed_headers,
)

log = logging.getLogger("hetuflow.webhooks")

LEASE_MARGIN = timedelta(seconds=30)
"""A claim's lease is the POST's timeout plus this: the POST has ended (answered or timed out)
well before another node may take the delivery again."""
MIN_IDLE_SECONDS = 0.01
"""Shortest sleep after a look that claimed nothing (rows due but locked by another node's
claim that is committing)."""
MAX_ERROR_LENGTH = 500


def check_webhook_target(url: str | None, config: WebhooksConfig, *, field: str) -> None:
    """``InvalidInput`` (422, naming ``field``) for a ``webhook_url`` this server cannot
    deliver to: it has no ``[webhooks] secret``, or the host is not in ``allowed_hosts``."""
    if url is None:
        return
    if config.secret is None:
        raise InvalidInput(
            "this server delivers no webhooks: set [webhooks] secret (docs/webhooks.md)",
            field=field,
        )
    if not host_allowed(url, config.allowed_hosts):
        raise InvalidInput(
            "the URL's host is not in [webhooks] allowed_hosts (docs/webhooks.md)", field=field
        )


class WebhookSender:
    """Sends due webhook deliveries for one node. See the module docstring."""

    def __init__(self, context: ServerContext) -> None:
        self.context = context
        self.store = context.store
        self.clock = context.clock
        self.config: WebhooksConfig = context.config.webhooks
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._random = random.Random()

    def wake(self, _payload: str = "") -> None:
        """Look at the outbox now (a delivery was written, or a slot freed)."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and send until cancelled; in-flight POSTs are cancelled with it (their
        deliveries stay leased and are sent again after the lease)."""
        secret = self.config.secret
        if secret is None:
            log.info("[webhooks] secret is not set: no webhook is delivered by this node")
            await asyncio.Event().wait()  # nothing to do until the server stops
            return
        self.context.notifier.subscribe(WEBHOOKS_DUE, self.wake)
        retry = StoreRetry(
            "webhook sender", metrics=self.context.metrics, operation="webhooks", log=log
        )
        timeout = httpx.Timeout(self.config.timeout_seconds)
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            asyncio.TaskGroup() as sends,
        ):
            while True:
                try:
                    delay = await self._pass(client, sends, secret)
                except Exception as error:
                    delay = retry.failed(error)
                else:
                    retry.succeeded()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=delay)
                self._wake.clear()

    async def _pass(
        self, client: httpx.AsyncClient, sends: asyncio.TaskGroup, secret: str
    ) -> float:
        """Claim what is due into the free slots and start sending it; return how long to
        sleep (unless woken). An idle look is one indexed read, no write."""
        poll = self.config.poll_interval_seconds
        free = self.config.max_in_flight - self._in_flight
        if free <= 0:
            return poll  # a POST that ends wakes the loop
        next_at = await self.store.next_webhook_attempt_at()
        now = self.clock.now()
        if next_at is None:
            return poll
        if next_at > now:
            return min(poll, (next_at - now).total_seconds())
        lease_until = now + timedelta(seconds=self.config.timeout_seconds) + LEASE_MARGIN
        claimed = await self.store.claim_webhook_deliveries(
            now=now, lease_until=lease_until, limit=free
        )
        for delivery in claimed:
            self._in_flight += 1
            sends.create_task(
                self._send(client, delivery, secret), name=f"hetuflow-webhook-{delivery.id}"
            )
        if not claimed:
            return MIN_IDLE_SECONDS  # due rows another node's claim holds: it commits soon
        return poll if len(claimed) == free else 0.0

    async def _send(
        self, client: httpx.AsyncClient, delivery: WebhookDelivery, secret: str
    ) -> None:
        """POST one claimed delivery and record what came of it. Never raises (a failure to
        record leaves the lease to end: the delivery is sent again)."""
        try:
            status_code, error, retryable = await self._post(client, delivery, secret)
            outcome = self._outcome(delivery, status_code, error, retryable=retryable)
            if delivery.claim_token is None:
                raise ValueError("a claimed delivery has no claim token")
            recorded = await self.store.record_webhook_attempt(
                delivery.id, delivery.claim_token, outcome, now=self.clock.now()
            )
            if recorded:
                self.context.metrics.webhook_delivery(_label(outcome))
            if outcome.state is DeliveryState.GIVEN_UP:
                log.warning(
                    "webhook delivery %s of task %s given up after %d attempts: %s",
                    delivery.id,
                    delivery.task_id,
                    delivery.attempts,
                    outcome.error,
                )
        except Exception:
            log.exception("webhook delivery %s: could not record its attempt", delivery.id)
        finally:
            self._in_flight -= 1
            self.wake()

    async def _post(
        self, client: httpx.AsyncClient, delivery: WebhookDelivery, secret: str
    ) -> tuple[int | None, str | None, bool]:
        """(HTTP status, None) for an answer, (None, why) when none came; and whether
        another attempt may do better."""
        if not host_allowed(delivery.url, self.config.allowed_hosts):
            return None, "the URL's host is not in [webhooks] allowed_hosts", False
        body = orjson.dumps(delivery_body(delivery))
        headers = signed_headers(delivery.id, body, secret=secret, now=self.clock.now())
        try:
            async with client.stream("POST", delivery.url, content=body, headers=headers) as answer:
                return answer.status_code, None, True  # the body is not read
        except httpx.TimeoutException:
            return None, f"timed out after {self.config.timeout_seconds:g} s", True
        except Exception as error:  # refused, reset, TLS, a URL httpx will not send to...
            return None, f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH], True

    def _outcome(
        self,
        delivery: WebhookDelivery,
        status_code: int | None,
        error: str | None,
        *,
        retryable: bool,
    ) -> DeliveryOutcome:
        if status_code is not None and 200 <= status_code < 300:
            return DeliveryOutcome(DeliveryState.DELIVERED, None, status_code, None)
        if error is None:
            error = f"answered HTTP {status_code}"
        config = self.config
        if delivery.attempts >= config.max_attempts or not retryable:
            return DeliveryOutcome(DeliveryState.GIVEN_UP, None, status_code, error)
        delay = backoff_delay(
            delivery.attempts,
            base_seconds=config.backoff_seconds,
            max_seconds=config.max_backoff_seconds,
            jitter=config.jitter,
            u=self._random.random(),
        )
        return DeliveryOutcome(DeliveryState.PENDING, self.clock.now() + delay, status_code, error)


def _label(outcome: DeliveryOutcome) -> Literal["delivered", "retried", "given_up"]:
    if outcome.state is DeliveryState.DELIVERED:
        return "delivered"
    if outcome.state is DeliveryState.GIVEN_UP:
        return "given_up"
    return "retried"
