"""Every error hetuflow raises on purpose, under one root.

The REST layer maps the intermediate classes (``NotFound``, ``Conflict``, ``InvalidInput``,
``TooLarge``) to HTTP statuses in one table; nothing else needs to know about HTTP.
"""

from __future__ import annotations


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


class CronExpressionInvalid(InvalidInput):
    code = "cron_expression_invalid"


class TimeZoneInvalid(InvalidInput):
    code = "time_zone_invalid"


class WorkflowInvalid(InvalidInput):
    """A workflow document that cannot run: a cycle, an unknown or duplicate step name, no
    steps, too many steps. ``field`` names the step (``steps.<name>``)."""

    code = "workflow_invalid"


class PayloadTooLarge(TooLarge):
    code = "payload_too_large"


class ConfigInvalid(HetuflowError):
    code = "config_invalid"


class StoreUnavailable(Unavailable):
    code = "store_unavailable"


class MigrationFailed(HetuflowError):
    code = "migration_failed"
