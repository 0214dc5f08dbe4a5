"""The one place that turns errors into `application/problem+json` (RFC 9457) on /api/v1.

Dialects have their own route classes doing the same for their own error shapes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from taskfleet.core import errors

log = logging.getLogger(__name__)

STATUS = {
    errors.TooLarge: 413,
    errors.Invalid: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
}


def status_of(error: errors.Error) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


def problem(status: int, detail: str, title: str | None = None, **extra: object) -> Response:
    body = {
        "type": "about:blank",
        "title": title or _title(status),
        "status": status,
        "detail": detail,
        **extra,
    }
    headers = {"WWW-Authenticate": 'Bearer, Basic realm="taskfleet"'} if status == 401 else None
    return Response(
        json.dumps(body),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def to_problem(exc: Exception) -> Response:
    """Maps an exception raised while handling a request; unknown ones become a logged 500."""
    if isinstance(exc, HTTPException) and isinstance(exc.__cause__, errors.Error):
        exc = exc.__cause__  # FastAPI wraps errors raised while reading the body
    if isinstance(exc, errors.Error):
        return problem(status_of(exc), exc.message)
    if isinstance(exc, RequestValidationError):
        return problem(422, validation_detail(exc), errors=exc.errors()[:20])
    if isinstance(exc, HTTPException):
        return problem(exc.status_code, str(exc.detail))
    log.exception("unhandled error", exc_info=exc, extra={"action": "unhandled_error"})
    return problem(500, "internal error; the server log has the details")


class ProblemRoute(APIRoute):
    """An APIRoute whose errors, request validation included, come out as problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (errors.Error, RequestValidationError, HTTPException) as exc:
                return to_problem(exc)

        return handle
