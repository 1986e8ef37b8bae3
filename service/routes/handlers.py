"""Every error becomes `{"error": {"type", "message", "request_id"}}` with its status from the one table."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import (
    HTTP_STATUS,
    AtomError,
    DeadlineExceeded,
    InferenceFailed,
    InternalError,
    InvalidInput,
    ModelNotFound,
    NotReady,
    Overloaded,
    QueueFull,
    TooLarge,
    Unauthorized,
    error_body,
    http_status,
)
from ..metrics import Metrics
from ..schemas import ErrorResponse


def error_response(exc: AtomError, request_id: str | None, metrics: Metrics, model: str = "") -> JSONResponse:
    """The one error shape; the failure counted under the model the request was routed to ("" before)."""
    metrics.failures.labels(reason=exc.reason, model=model).inc()
    return JSONResponse(
        error_body(exc.reason, exc.message, request_id), status_code=http_status(exc), headers=exc.headers
    )


def validation_message(exc: RequestValidationError) -> str:
    """The first pydantic error as `field: problem`, e.g. `neighbors: Input should be ...`."""
    first = exc.errors()[0]
    loc = list(first.get("loc", ()))
    if loc[:1] == ["body"]:
        loc = loc[1:]
    # A value that matches no member of a union (e.g. an input that is neither a string nor an
    # array) reports one error per member, tagged by type; one plain sentence says it better.
    tags = [part for part in loc if isinstance(part, str) and (part in _TYPE_TAGS or "[" in part)]
    loc = [part for part in loc if part not in tags]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    message = first.get("msg", "invalid request")
    if tags:
        message = _UNION_HINTS.get(str(loc[0]) if loc else "", "matches none of the accepted forms")
    return f"{where}: {message}" if where else message


_TYPE_TAGS = {"str", "float", "int", "list"}
_UNION_HINTS = {
    "inputs": "expected a string (text models) or an array of numbers (numeric models)",
    "input": "expected a string or a list of strings (token arrays are not accepted)",
}


def install_exception_handlers(app: FastAPI, metrics: Metrics) -> None:
    def request_id(request: Request) -> str | None:
        return request.scope.get("state", {}).get("request_id")

    def model(request: Request) -> str:
        return request.scope.get("state", {}).get("model", "")

    async def on_atom_error(request: Request, exc: AtomError) -> JSONResponse:
        return error_response(exc, request_id(request), metrics, model(request))

    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(InvalidInput(validation_message(exc)), request_id(request), metrics, model(request))

    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Routing errors (404, 405) are not failures of the service: same shape, no failure count.
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(kind, str(exc.detail), request_id(request)), status_code=exc.status_code, headers=exc.headers
        )

    app.add_exception_handler(AtomError, on_atom_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)


def error_responses(*errors: type[AtomError]) -> dict[int | str, dict]:
    """The OpenAPI `responses` of a route that can fail with these errors, each with the one error body."""
    out: dict[int | str, dict] = {}
    for cls in errors:
        status = HTTP_STATUS[cls]
        entry = out.setdefault(status, {"model": ErrorResponse, "description": ""})
        entry["description"] = "; ".join(filter(None, [entry["description"], cls.__doc__ or cls.reason]))
    return out


# What each kind of route can answer besides 200 (the middleware adds 413 and 429 on /v1, 500 anywhere).
SERVING_ERRORS = error_responses(InvalidInput, TooLarge, QueueFull, Overloaded, Unauthorized, ModelNotFound, NotReady,
                                 DeadlineExceeded, InferenceFailed, InternalError)
MODEL_INFO_ERRORS = error_responses(Unauthorized, NotReady, Overloaded, TooLarge, InternalError)
