"""The SDK's errors: every failure is a ``ClientError`` (a ``HetuflowError``)."""

from __future__ import annotations

from hetuflow.errors import HetuflowError


class ClientError(HetuflowError):
    """The server refused a request, or could not be reached.

    ``status`` is the HTTP status (None when there was no response), ``code`` the server's
    error code (``task_not_found``, ``invalid_input``, …), ``field`` the input at fault.
    """

    code = "client_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.status = status
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}: " if self.status is not None else ""
        return prefix + self.message


class ServerUnreachable(ClientError):
    code = "server_unreachable"


class WaitTimeout(ClientError, TimeoutError):
    code = "wait_timeout"
