"""Every error hetuflow raises on purpose, under one root.

The REST layer maps the intermediate classes (``NotFound``, ``Conflict``, ``InvalidInput``,
``TooLarge``, ``Unavailable``, ``Unauthenticated``, ``PermissionDenied``) to HTTP statuses in
one table (``hetuflow.server.api.errors``); nothing else needs to know about HTTP. Every class is
defined here but the SDK's (``hetuflow.client.errors``); tests/unit/test_errors.py checks that
this tree lists every one, where it sits::

    HetuflowError
    ├── NotFound                    kinds: one HTTP status each
    │   ├── TaskNotFound
    │   ├── AgentNotFound
    │   ├── CronJobNotFound
    │   ├── TokenNotFound
    │   ├── WorkflowNotFound
    │   ├── TriggerNotFound
    │   ├── HookNotFound
    │   └── RateLimitNotFound
    ├── Conflict
    │   ├── TaskAlreadyFinished
    │   ├── TaskNotFinished
    │   ├── WorkflowAlreadyFinished
    │   ├── WorkflowNotRetryable
    │   ├── TaskNotRetryable
    │   ├── AgentNameTaken
    │   ├── CronJobNameTaken
    │   ├── RateLimitNameTaken
    │   ├── StatusTransitionInvalid
    │   ├── AgentOffline
    │   ├── AgentOnline
    │   ├── AgentDeleted
    │   ├── TriggerNameTaken
    │   ├── HookNameTaken
    │   ├── EventIdReused
    │   └── NoAgentForBroadcast
    ├── InvalidInput
    │   ├── RateLimitUnknown
    │   ├── CronExpressionInvalid
    │   ├── TimeZoneInvalid
    │   ├── WorkflowInvalid
    │   └── NoTrigger
    ├── TooLarge
    │   └── PayloadTooLarge
    ├── Unavailable
    │   └── StoreUnavailable
    ├── Unauthenticated
    │   └── SignatureInvalid
    ├── PermissionDenied
    ├── ConfigInvalid               no kind (HTTP 500 if ever raised by a route)
    ├── MigrationFailed
    ├── ProtocolViolation           the agent protocol (hetuflow.protocol re-exports it)
    ├── RegistrationRefused         the agent (hetuflow.agent exports AgentRejected,
    ├── AgentRejected                 TaskFailed and TaskTimedOut)
    ├── TaskFailed                  raised by a handler: ends the attempt failed
    │   └── ShellPayloadInvalid
    ├── TaskTimedOut                raised by a handler: ends the attempt timed_out
    └── ClientError                 the SDK, in hetuflow.client.errors
        ├── ServerUnreachable
        └── WaitTimeout             also a TimeoutError
"""

from __future__ import annotations

from typing import Any


class HetuflowError(Exception):
    """Root of every error hetuflow raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


# --- kinds (mapped to HTTP statuses in one place) -------------------------------------------


class NotFound(HetuflowError):
    code = "not_found"


class Conflict(HetuflowError):
    code = "conflict"


class InvalidInput(HetuflowError):
    code = "invalid_input"


class TooLarge(HetuflowError):
    code = "too_large"


class Unavailable(HetuflowError):
    code = "unavailable"


class Unauthenticated(HetuflowError):
    """No token, or one that is unknown, expired or revoked (HTTP 401)."""

    code = "unauthorized"


class PermissionDenied(HetuflowError):
    """A valid token whose role does not allow the request (HTTP 403)."""

    code = "forbidden"


# --- concrete problems ------------------------------------------------------------------------


class SignatureInvalid(Unauthenticated):
    """A hook call whose signature or timestamp is missing, stale or wrong."""

    code = "signature_invalid"


class TaskNotFound(NotFound):
    code = "task_not_found"


class AgentNotFound(NotFound):
    code = "agent_not_found"


class CronJobNotFound(NotFound):
    code = "cron_job_not_found"


class TokenNotFound(NotFound):
    code = "token_not_found"


class WorkflowNotFound(NotFound):
    code = "workflow_not_found"


class TriggerNotFound(NotFound):
    code = "trigger_not_found"


class HookNotFound(NotFound):
    code = "hook_not_found"


class RateLimitNotFound(NotFound):
    code = "rate_limit_not_found"


class RateLimitUnknown(InvalidInput):
    """A task names a rate limit that does not exist (or asks more units than it allows)."""

    code = "rate_limit_unknown"


class TaskAlreadyFinished(Conflict):
    code = "task_already_finished"


class TaskNotFinished(Conflict):
    """Replaying a task that has not finished yet."""

    code = "task_not_finished"


class WorkflowAlreadyFinished(Conflict):
    code = "workflow_already_finished"


class WorkflowNotRetryable(Conflict):
    """Retrying a workflow that is still running, or whose every step succeeded."""

    code = "workflow_not_retryable"


class TaskNotRetryable(Conflict):
    """Retrying a task that has not ended failed, timed out, cancelled or quarantined, or a
    workflow step (its descendants would not follow)."""

    code = "task_not_retryable"


class AgentNameTaken(Conflict):
    code = "agent_name_taken"


class CronJobNameTaken(Conflict):
    code = "cron_job_name_taken"


class RateLimitNameTaken(Conflict):
    code = "rate_limit_name_taken"


class StatusTransitionInvalid(Conflict):
    code = "status_transition_invalid"


class AgentOffline(Conflict):
    """The action needs a connected agent (e.g. drain, resume)."""

    code = "agent_offline"


class AgentOnline(Conflict):
    """The action needs an agent that is not connected (delete: drain or disconnect it first)."""

    code = "agent_online"


class AgentDeleted(Conflict):
    """A connection registers as an agent that was deleted (``DELETE /api/agents/{id}``)."""

    code = "agent_deleted"


class TriggerNameTaken(Conflict):
    code = "trigger_name_taken"


class HookNameTaken(Conflict):
    code = "hook_name_taken"


class EventIdReused(Conflict):
    """An event id already delivered with another event key."""

    code = "event_id_reused"


class NoAgentForBroadcast(Conflict):
    """A broadcast (``dispatch: "all"``) found no online, enabled agent that runs its task
    type with its capabilities: nothing was created."""

    code = "no_agent_for_broadcast"


class CronExpressionInvalid(InvalidInput):
    code = "cron_expression_invalid"


class TimeZoneInvalid(InvalidInput):
    code = "time_zone_invalid"


class WorkflowInvalid(InvalidInput):
    """A workflow document that cannot run: a cycle, an unknown or duplicate step name, no
    steps, too many steps. ``field`` names the step (``steps.<name>``)."""

    code = "workflow_invalid"


class NoTrigger(InvalidInput):
    """An event whose key no trigger is bound to (a typo, or a trigger not yet created)."""

    code = "no_trigger"


class PayloadTooLarge(TooLarge):
    code = "payload_too_large"


class ConfigInvalid(HetuflowError):
    code = "config_invalid"


class StoreUnavailable(Unavailable):
    code = "store_unavailable"


class MigrationFailed(HetuflowError):
    code = "migration_failed"


# --- the agent protocol and the agent ---------------------------------------------------------


class ProtocolViolation(HetuflowError):
    """A frame that is not valid JSON, has an unknown ``type`` or a malformed field."""

    code = "protocol_violation"


class RegistrationRefused(HetuflowError):
    """The server answered the agent's registration with an ``Error``."""

    code = "registration_refused"

    def __init__(self, message: str, *, error_code: str) -> None:
        super().__init__(message)
        self.error_code = error_code


class AgentRejected(HetuflowError):
    """The server will not have this agent: another process took over its identity, it names
    an unknown agent id, or it speaks an unsupported protocol version. ``Agent.run`` raises it."""

    code = "agent_rejected"


class TaskFailed(HetuflowError):
    """Raise from a handler to fail the attempt with this error text."""

    code = "task_failed"

    def __init__(self, message: str, *, exit_code: int | None = None, result: Any = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.result = result


class ShellPayloadInvalid(TaskFailed):
    """A ``shell`` task's payload the agent cannot run (fails the attempt)."""

    code = "shell_payload_invalid"


class TaskTimedOut(HetuflowError):
    """Raise from a handler to end the attempt ``timed_out`` (the retry policy applies)."""

    code = "task_timed_out"

    def __init__(self, message: str, *, exit_code: int | None = None, result: Any = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.result = result
