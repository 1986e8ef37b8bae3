"""Domain exceptions and the one table that maps them to HTTP.

Lower layers (runtime, batcher) raise these without knowing about HTTP; the HTTP layer turns
any of them into `{"error": {"type", "message", "request_id"}}` with the status below. The
`reason` of each class is both the error `type` in the body and the `reason` label of
`atom_failures_total`. Only the 500s (`inference_error`, `bank_reload_failed`, `internal_error`)
are the service's own faults; every other reason is a request refused for what it asked or when it came.
"""

from __future__ import annotations

from typing import Any


class AtomError(Exception):
    reason = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInput(AtomError):
    """NaN/Inf, wrong modality, empty input, wrong shape, a bad field value."""

    reason = "invalid_input"


class TooLarge(AtomError):
    """Too many inputs, components or bytes."""

    reason = "too_large"


class QueueFull(AtomError):
    """The batching queue has no room for the request's items."""

    reason = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class Overloaded(QueueFull):
    """Too many requests in flight (the admission limit), refused before the body is read."""

    reason = "overloaded"


class Unauthorized(AtomError):
    """Missing or wrong API key."""

    reason = "unauthorized"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ModelNotFound(AtomError):
    """The request names a model this service does not serve."""

    reason = "model_not_found"


class NotReady(AtomError):
    """Not loaded yet, or shutting down."""

    reason = "not_ready"


class DeadlineExceeded(AtomError):
    """The request deadline passed before its results were ready."""

    reason = "deadline"


class InferenceFailed(AtomError):
    """The model or the neighbor search failed for a batch; the service keeps serving."""

    reason = "inference_error"


class BankReloadFailed(AtomError):
    """The bank could not be loaded again (its folder is missing or invalid); the old one is still served."""

    reason = "bank_reload_failed"


class InternalError(AtomError):
    """A fault of the service itself outside inference (a bug); answered with a request id."""

    reason = "internal_error"


# The one exception -> status table.
HTTP_STATUS: dict[type[AtomError], int] = {
    InvalidInput: 422,
    TooLarge: 413,
    QueueFull: 429,
    Overloaded: 429,
    Unauthorized: 401,
    ModelNotFound: 404,
    NotReady: 503,
    DeadlineExceeded: 504,
    InferenceFailed: 500,
    BankReloadFailed: 500,
    InternalError: 500,
}

FAILURE_REASONS = tuple(cls.reason for cls in HTTP_STATUS)


def http_status(exc: AtomError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def error_body(error_type: str, message: str, request_id: str | None) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message, "request_id": request_id}}
