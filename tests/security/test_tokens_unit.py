"""Roles and durations (pure)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hetuflow.config import AuthConfig, Config, ServerConfig
from hetuflow.errors import InvalidInput
from hetuflow.tokens import Role, hint_of, new_secret, parse_duration


def test_roles_nest_and_agent_stands_apart() -> None:
    assert Role.ADMIN.allows(Role.OPERATOR)
    assert Role.ADMIN.allows(Role.VIEWER)
    assert Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.OPERATOR.allows(Role.ADMIN)
    assert not Role.VIEWER.allows(Role.OPERATOR)
    assert not Role.AGENT.allows(Role.VIEWER)
    assert not Role.ADMIN.allows(Role.AGENT)
    assert Role.AGENT.allows(Role.AGENT)


def test_secrets_are_random_prefixed_and_hinted_briefly() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(secret.startswith("hf_") and len(secret) == 46 for secret in secrets)
    assert all(len(hint_of(secret)) == 9 for secret in secrets)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        ("3600", timedelta(hours=1)),
        (" 1.5h ", timedelta(minutes=90)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0d", "-1d", "1y", "d", "1e9", "4000w", "30 days"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(text)


@pytest.mark.parametrize(
    ("bind", "enabled", "expected"),
    [
        ("127.0.0.1:8080", None, False),
        ("[::1]:8080", None, False),
        ("localhost:8080", None, False),
        ("0.0.0.0:8080", None, True),
        ("[::]:8080", None, True),
        ("10.0.0.5:8080", None, True),
        ("scheduler.internal:8080", None, True),
        ("127.0.0.1:8080", True, True),
        ("0.0.0.0:8080", False, False),
    ],
)
def test_auth_is_on_unless_loopback_or_said_otherwise(
    bind: str, enabled: bool | None, expected: bool
) -> None:
    config = Config(server=ServerConfig(bind_address=bind), auth=AuthConfig(enabled=enabled))
    assert config.auth_enabled is expected
