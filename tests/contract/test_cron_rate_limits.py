"""Contract: a cron job's rate limits (docs/cron.md): checked when saved like a task's (an
unknown name or too many units: nothing saved), given to every task it creates, and taken
out of the job when the limit is deleted."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hetuflow.errors import RateLimitUnknown
from hetuflow.models import CronJobChanges, NewCronJob, RateLimitUse, TickOutcome
from hetuflow.server.cron_policy import cron_task
from hetuflow.store.base import Store

from ._support import T0

CRM = RateLimitUse("crm-api", 2)
MAIL = RateLimitUse("mail", 1)


def _job(*uses: RateLimitUse, name: str = "sync") -> NewCronJob:
    return NewCronJob(name, "* * * * *", "t", rate_limits=uses)


async def test_a_job_keeps_its_rate_limits_and_gives_them_to_its_tasks(store: Store) -> None:
    await store.create_rate_limit("crm-api", 5, 60, now=T0)
    await store.create_rate_limit("mail", 1, 1, now=T0)
    job = await store.create_cron_job(_job(CRM, MAIL), next_fire_at=T0, now=T0)
    assert job.rate_limits == (CRM, MAIL)
    assert await store.get_cron_job(job.id) == job
    assert [j.rate_limits for j in await store.list_cron_jobs()] == [(CRM, MAIL)]
    task = await store.fire_cron_tick(
        job.id,
        tick_at=T0,
        next_fire_at=T0 + timedelta(minutes=1),
        task=cron_task(job, T0, None),
        outcome=TickOutcome.FIRED,
        reason=None,
        now=T0,
    )
    assert task is not None
    assert task.rate_limits == (CRM, MAIL)
    stored = await store.get_task(task.id)
    assert stored is not None
    assert stored.rate_limits == (CRM, MAIL)


@pytest.mark.parametrize(
    ("uses", "message"),
    [
        ((RateLimitUse("nope", 1),), "names rate limit 'nope', which does not exist"),
        ((RateLimitUse("crm-api", 6),), "asks 6 units of rate limit 'crm-api', which allows 5"),
    ],
)
async def test_an_unknown_limit_or_too_many_units_saves_nothing(
    store: Store, uses: tuple[RateLimitUse, ...], message: str
) -> None:
    await store.create_rate_limit("crm-api", 5, 60, now=T0)
    with pytest.raises(RateLimitUnknown, match=message) as error:
        await store.create_cron_job(_job(*uses), next_fire_at=T0, now=T0)
    assert error.value.field == "rate_limits"
    assert await store.list_cron_jobs() == []
    job = await store.create_cron_job(_job(CRM), next_fire_at=T0, now=T0)
    change = CronJobChanges(name="renamed", rate_limits=uses)
    with pytest.raises(RateLimitUnknown, match=message):
        await store.update_cron_job(job.id, change, now=T0 + timedelta(seconds=1))
    assert await store.get_cron_job(job.id) == job  # the whole change rolled back


async def test_an_update_replaces_the_list(store: Store) -> None:
    await store.create_rate_limit("crm-api", 5, 60, now=T0)
    await store.create_rate_limit("mail", 1, 1, now=T0)
    job = await store.create_cron_job(_job(CRM), next_fire_at=T0, now=T0)
    later = T0 + timedelta(seconds=1)
    changed = await store.update_cron_job(job.id, CronJobChanges(rate_limits=(MAIL,)), now=later)
    assert changed.rate_limits == (MAIL,)
    assert (await store.get_cron_job(job.id)) == changed
    other = await store.update_cron_job(job.id, CronJobChanges(name="other"), now=later)
    assert other.rate_limits == (MAIL,)  # left as it was
    cleared = await store.update_cron_job(job.id, CronJobChanges(rate_limits=()), now=later)
    assert cleared.rate_limits == ()
    assert (await store.get_cron_job(job.id)) == cleared
    # The link rows went too: deleting the limit now changes nothing of the job.
    await store.delete_rate_limit("mail")
    assert (await store.get_cron_job(job.id)) == cleared


async def test_deleting_a_limit_takes_it_out_of_the_jobs(store: Store) -> None:
    await store.create_rate_limit("crm-api", 5, 60, now=T0)
    await store.create_rate_limit("mail", 1, 1, now=T0)
    both = await store.create_cron_job(_job(CRM, MAIL), next_fire_at=T0, now=T0)
    only = await store.create_cron_job(_job(MAIL, name="only-mail"), next_fire_at=T0, now=T0)
    untouched = await store.create_cron_job(_job(CRM, name="crm"), next_fire_at=T0, now=T0)
    await store.delete_rate_limit("mail")
    after = {job.id: job.rate_limits for job in await store.list_cron_jobs()}
    assert after == {both.id: (CRM,), only.id: (), untouched.id: (CRM,)}
    # A later tick creates its task without the deleted limit (it would not exist).
    job = await store.get_cron_job(only.id)
    assert job is not None
    task = await store.fire_cron_tick(
        job.id,
        tick_at=T0,
        next_fire_at=None,
        task=cron_task(job, T0, None),
        outcome=TickOutcome.FIRED,
        reason=None,
        now=T0,
    )
    assert task is not None
    assert task.rate_limits == ()
    await store.delete_cron_job(both.id)  # its link rows go with it
    await store.delete_rate_limit("crm-api")
    assert [j.rate_limits for j in await store.list_cron_jobs()] == [(), ()]
