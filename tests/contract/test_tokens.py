"""Contract: API and agent tokens (stored hashed, found by hash, revoked, gone with the agent)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from hetuflow.errors import AgentNotFound, TokenNotFound
from hetuflow.models import NewAgent
from hetuflow.store.base import Store
from hetuflow.tokens import TOKEN_PREFIX, Role, hash_secret, new_token

from ._support import T0


async def test_a_token_is_stored_by_hash_and_found_by_it(store: Store) -> None:
    secret, new = new_token("ci", Role.OPERATOR, expires_at=T0 + timedelta(days=30))
    assert secret.startswith(TOKEN_PREFIX)
    assert len(secret) > 40
    assert new.secret_hash == hash_secret(secret) != secret
    made = await store.create_api_token(new, now=T0)
    assert (made.name, made.role, made.agent_id) == ("ci", Role.OPERATOR, None)
    assert made.hint == secret[: len(made.hint)]
    assert len(made.hint) < 12  # never enough of the secret to use it
    assert (made.created_at, made.expires_at, made.revoked_at) == (
        T0,
        T0 + timedelta(days=30),
        None,
    )
    assert await store.find_api_token(hash_secret(secret)) == made
    assert await store.find_api_token(hash_secret(secret + "x")) is None
    assert await store.find_api_token(secret) is None  # the clear secret is not a key
    assert await store.list_api_tokens() == [made]


async def test_revoking_is_idempotent_and_kept(store: Store) -> None:
    secret, new = new_token("viewer", Role.VIEWER)
    made = await store.create_api_token(new, now=T0)
    revoked = await store.revoke_api_token(made.id, now=T0 + timedelta(minutes=1))
    assert revoked.revoked_at == T0 + timedelta(minutes=1)
    assert revoked.problem_at(T0 + timedelta(minutes=2)) == "the token was revoked"
    again = await store.revoke_api_token(made.id, now=T0 + timedelta(hours=1))
    assert again.revoked_at == T0 + timedelta(minutes=1)
    assert await store.find_api_token(hash_secret(secret)) == revoked
    with pytest.raises(TokenNotFound):
        await store.revoke_api_token(uuid.uuid4(), now=T0)


async def test_expiry_is_decided_by_the_caller(store: Store) -> None:
    _, new = new_token("short", Role.ADMIN, expires_at=T0 + timedelta(seconds=10))
    made = await store.create_api_token(new, now=T0)
    assert made.problem_at(T0 + timedelta(seconds=9)) is None
    assert made.problem_at(T0 + timedelta(seconds=10)) == "the token has expired"


async def test_agent_tokens_belong_to_an_agent_and_go_with_it(store: Store) -> None:
    agent = await store.create_agent(NewAgent("agent-1"), now=T0)
    secret, new = new_token("agent-1", Role.AGENT, agent_id=agent.id)
    made = await store.create_api_token(new, now=T0)
    assert made.agent_id == agent.id
    _, other = new_token("other", Role.VIEWER)
    kept = await store.create_api_token(other, now=T0 + timedelta(seconds=1))
    assert [token.id for token in await store.list_api_tokens()] == [kept.id, made.id]
    _, orphan = new_token("ghost", Role.AGENT, agent_id=uuid.uuid4())
    with pytest.raises(AgentNotFound):
        await store.create_api_token(orphan, now=T0)
    await store.delete_agent(agent.id, now=T0)
    assert await store.find_api_token(hash_secret(secret)) is None
    assert await store.list_api_tokens() == [kept]


async def test_hostile_names_are_stored_as_text(store: Store) -> None:
    name = "x'); DROP TABLE api_tokens; --"
    _, new = new_token(name, Role.VIEWER)
    made = await store.create_api_token(new, now=T0)
    assert made.name == name
    assert await store.find_api_token("' OR '1'='1") is None
    assert [token.name for token in await store.list_api_tokens()] == [name]
