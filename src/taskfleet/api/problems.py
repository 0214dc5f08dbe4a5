"""The one place that turns errors into `application/problem+json` (RFC 9457) on /api/v1.

Dialects have their own route classes doing the same for their own error shapes.
"""

from __future__ import annotations

import email.message
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from taskfleet.api import limits
from taskfleet.core import errors

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
STATUS = {
    errors.TooLarge: 413,
    errors.Invalid: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Busy: 503,
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


def validation_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    """Where and what, without `input` or `ctx`: those echo the request (secrets included)
    and may hold objects JSON cannot encode, such as the exception a validator raised."""
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in err.get("loc", ())],
            "msg": str(err.get("msg", "invalid")),
            "type": str(err.get("type", "invalid")),
        }
        for err in exc.errors()[:20]
    ]


def to_problem(exc: Exception) -> Response:
    """Maps an exception raised while handling a request; unknown ones become a logged 500."""
    if isinstance(exc, HTTPException) and isinstance(exc.__cause__, errors.Error):
        exc = exc.__cause__  # FastAPI wraps errors raised while reading the body
    if isinstance(exc, errors.Error):
        return problem(status_of(exc), exc.message)
    if isinstance(exc, RequestValidationError):
        return problem(422, validation_detail(exc), errors=validation_errors(exc))
    if isinstance(exc, HTTPException):
        return problem(exc.status_code, str(exc.detail))
    log.exception("unhandled error", exc_info=exc, extra={"action": "unhandled_error"})
    return problem(500, "internal error; the server log has the details")


async def http_error(request: Request, exc: Exception) -> Response:
    """Exception handler for errors raised outside any route (unknown path, wrong method):
    problem+json under /api/v1, FastAPI's default shape elsewhere (dialects have theirs)."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
        return await http_exception_handler(request, exc)
    response = problem(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def _is_json(request: Request) -> bool:
    """Whether the body is declared JSON, which is when FastAPI decodes it."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return False
    if content_type == "application/json":  # nearly every request: no header parsing
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def check_request(request: Request, takes_body: bool) -> None:
    """Refuses NUL in the URL, bodies that are not JSON (415), and JSON that parses but
    cannot be stored the same everywhere (`limits.check_json`).

    Reads the body first; Starlette caches it and its JSON for the route handler.
    A body that does not parse is left for FastAPI to report as a validation error.
    """
    limits.check_text(request.path_params.values())
    limits.check_text(v for item in request.query_params.multi_items() for v in item)
    if not takes_body or not await request.body():
        return
    if not _is_json(request):
        raise HTTPException(415, "send the body as JSON, with `Content-Type: application/json`")
    try:
        value = await request.json()
    except (ValueError, RecursionError):
        return
    limits.check_json(value)


class ProblemRoute(APIRoute):
    """An APIRoute whose errors, request validation included, come out as problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def handle(request: Request) -> Response:
            try:
                await check_request(request, takes_body)
                return await handler(request)
            except (errors.Error, RequestValidationError, HTTPException) as exc:
                return to_problem(exc)

        return handle
