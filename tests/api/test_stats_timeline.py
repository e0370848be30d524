"""`GET /api/stats/timeline`: finished tasks and their duration percentiles over a chosen
window, in a bounded number of buckets; an unknown window is a 422."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from hetuflow.models import AttemptOutcome

from .helpers import now_of
from .test_errors import assert_error
from .test_tasks import create, finish


@pytest.mark.parametrize(
    ("window", "bucket_seconds", "buckets"),
    [("15m", 30, 30), ("1h", 60, 60), ("6h", 300, 72), ("24h", 1200, 72), ("7d", 7200, 84)],
)
async def test_each_window_has_its_buckets_and_counts_what_finished(
    client: httpx.AsyncClient, app: FastAPI, window: str, bucket_seconds: int, buckets: int
) -> None:
    await create(client, task_type="w")
    await finish(app, "w", AttemptOutcome.SUCCEEDED, started_at=now_of(app) - timedelta(seconds=2))
    await create(client, task_type="w")
    await finish(app, "w", AttemptOutcome.FAILED, error="boom", started_at=now_of(app))
    await create(client, task_type="w")  # pending: not in the timeline

    response = await client.get("/api/stats/timeline", params={"window": window})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["window"], body["bucket_seconds"]) == (window, bucket_seconds)
    assert len(body["buckets"]) == buckets
    starts = [datetime.fromisoformat(bucket["start"]) for bucket in body["buckets"]]
    assert starts[0] == datetime.fromisoformat(body["since"])
    assert {later - earlier for earlier, later in itertools.pairwise(starts)} == {
        timedelta(seconds=bucket_seconds)
    }
    assert starts[-1] <= now_of(app) < starts[-1] + timedelta(seconds=bucket_seconds)
    assert body["sampled"] == 2
    assert not body["truncated"]
    full = [bucket for bucket in body["buckets"] if sum(bucket["by_status"].values())]
    assert 1 <= len(full) <= 2  # both just finished (a bucket edge may fall between them)
    assert sum(bucket["by_status"]["succeeded"] for bucket in full) == 1
    assert sum(bucket["by_status"]["failed"] for bucket in full) == 1
    assert "pending" not in full[0]["by_status"]
    assert all(bucket["run_seconds"]["p95"] is not None for bucket in full)
    assert max(bucket["run_seconds"]["p95"] for bucket in full) >= 2
    empty = body["buckets"][0]
    assert sum(empty["by_status"].values()) == 0
    assert empty["queue_wait_seconds"] == {"p50": None, "p95": None}


@pytest.mark.parametrize("window", ["2h", "1d", "", "3600"])
async def test_an_unknown_window_is_422(client: httpx.AsyncClient, window: str) -> None:
    response = await client.get("/api/stats/timeline", params={"window": window})
    assert assert_error(response, 422, "invalid_input")["field"] == "window"


async def test_the_default_window_is_one_hour(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/stats/timeline")).json()
    assert (body["window"], len(body["buckets"])) == ("1h", 60)
