"""The one place where failures become OpenAI-shaped error responses.

`{"error": {"message", "type", "param", "code"}}` with the HTTP status the
OpenAI SDK maps to its exception classes (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 429 RateLimitError, ...).
"""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from openr.contracts import ScorerError
from openr.engine.base import EngineRequestError

logger = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param, code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def to_api_error(exc: Exception) -> APIError:
    """Map any exception raised while serving a request to the error the client sees."""
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EngineRequestError):
        return APIError(exc.status, exc.message, exc.param)
    if isinstance(exc, ScorerError):
        return APIError(exc.status, exc.message, code=exc.code or ("prm_unavailable" if exc.status == 503 else None))
    logger.exception("internal error while serving a request", exc_info=exc)
    return APIError(500, f"internal server error: {type(exc).__name__}: {exc}", code="internal_error")


def error_response(exc: Exception) -> JSONResponse:
    err = to_api_error(exc)
    return JSONResponse(error_body(err.status, err.message, err.param, err.code),
                        status_code=err.status, headers=err.headers)


def error_event(exc: Exception) -> dict:
    """The error as an in-band SSE payload, for failures after the stream began."""
    err = to_api_error(exc)
    return error_body(err.status, err.message, err.param, err.code)


def _is_union_tag(part) -> bool:
    """Pydantic names the member of a union it tried (`str`, `list[TextPart]`,
    `literal['none','auto']`) in an error's location; a client's param stops before it."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none") or part[:1].isupper()
                                      or any(c in part for c in "[]'"))


def from_validation_error(exc: ValidationError) -> APIError:
    """Pydantic's first complaint, with its location as a dotted `param`."""
    first = exc.errors()[0]
    loc = list(first["loc"])
    cut = next((i for i, part in enumerate(loc) if _is_union_tag(part)), len(loc))
    param = ".".join(str(part) for part in loc[:cut]) or None
    message = first["msg"]
    if param:
        message = f"{param}: {message}"
    return bad_request(message, param)
