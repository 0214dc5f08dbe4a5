"""The Django Remotes wire format: JSON answers, errors mapped in one place, the
`Authorization: Token …` credentials and the JSON bodies the client sends.

The client calls `.json()` on every answer, so every answer is JSON, errors included. Errors
take the two shapes the original sent: its views' `{"status": "ERROR", "message": …}`
(400, 413, and the 403 of a post) and Django REST framework's `{"detail": …}` for
credentials (401, 403), unknown paths (404) and methods (405).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from taskfleet.api.auth import services_of
from taskfleet.core import errors
from taskfleet.core.models import Agent

log = logging.getLogger(__name__)

APP_NAME = "Django Remotes"
VERSION = "0.3.1"  #: the client version this dialect was checked against
MEDIA_TYPE = "application/json"
MAX_TOKEN_CHARS = 1024
NO_CREDENTIALS = "Authentication credentials were not provided."
INVALID_TOKEN = "Invalid token."
NO_PERMISSION = "You do not have permission to perform this action."

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


def prefix_of(configured: str) -> str:
    """`/remotes/` as `/remotes`. Raises ValueError for `/`: below the root, the original's
    `api/v1/…` paths would shadow the native API's."""
    prefix = "/" + configured.strip().strip("/")
    if prefix == "/":
        raise ValueError("remotes_prefix cannot be `/`: use a prefix such as /remotes/")
    return prefix


def reply(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, headers, media_type=MEDIA_TYPE)


def ok(**fields: object) -> Response:
    return reply({"status": "OK", **fields})


def error(status: int, message: str, **fields: object) -> Response:
    """The original views' own error shape."""
    return reply({"status": "ERROR", "message": message, **fields}, status)


def detail(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """Django REST framework's error shape."""
    return reply({"detail": message}, status, headers)


def to_reply(exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and isinstance(exc.__cause__, errors.Error):
        exc = exc.__cause__
    if isinstance(exc, errors.Unauthorized):
        return detail(401, exc.message, {"WWW-Authenticate": "Token"})
    if isinstance(exc, errors.Forbidden):
        return detail(403, exc.message)
    if isinstance(exc, errors.NotFound):
        return detail(404, exc.message)
    if isinstance(exc, errors.TooLarge):
        return error(413, exc.message)
    if isinstance(exc, errors.Busy):
        return detail(503, exc.message)
    if isinstance(exc, errors.Error):
        return error(400, exc.message)
    if isinstance(exc, HTTPException):
        return detail(exc.status_code, str(exc.detail))
    log.exception("remotes request failed", exc_info=exc, extra={"action": "remotes_error"})
    return error(500, "internal error; the server log has the details")


class RemotesRoute(APIRoute):
    """Maps every error to the original's JSON, in one place."""

    def get_route_handler(self) -> Endpoint:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return to_reply(exc)

        return handle


def dispatch(methods: dict[str, Endpoint]) -> Endpoint:
    """One endpoint for every method of a path: a 405 in JSON for the methods it lacks."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        handler = methods.get(method)
        if handler is None:
            allowed = ", ".join(methods)
            return detail(405, f'Method "{request.method}" not allowed.', {"Allow": allowed})
        return await handler(request)

    return endpoint


# -- credentials and bodies -----------------------------------------------------------------


def token_of(request: Request) -> str:
    """The key of `Authorization: Token <key>` (`Bearer` is accepted too)."""
    scheme, _, key = request.headers.get("authorization", "").strip().partition(" ")
    key = key.strip()
    if scheme.lower() not in ("token", "bearer") or not key:
        raise errors.Unauthorized(NO_CREDENTIALS)
    if len(key) > MAX_TOKEN_CHARS:
        raise errors.Unauthorized(INVALID_TOKEN)
    return key


async def host(request: Request) -> Agent:
    """The host behind a host token. Raises `Unauthorized` or `Forbidden`."""
    found = services_of(request)
    token = token_of(request)
    try:
        principal = await found.accounts.resolve_token(token)
    except errors.Unauthorized:
        raise errors.Unauthorized(INVALID_TOKEN) from None
    if principal.is_admin:
        raise errors.Forbidden(NO_PERMISSION)
    agent = await found.agents.for_principal(principal)
    if not agent.enabled:
        raise errors.Forbidden("this host is disabled")
    return agent


async def body(request: Request) -> dict[str, Any]:
    """The JSON object sent; {} for an empty body. Raises `Invalid`."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise errors.Invalid("JSON parse error: the body is not JSON") from None
    if not isinstance(value, dict):
        raise errors.Invalid("the body must be a JSON object")
    return value


def path_id(request: Request) -> int:
    """The numeric id in the path; `NotFound` for anything else, as Django's `<int:pk>`."""
    raw = str(request.path_params.get("command_id", ""))
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise errors.NotFound("Not found.")
    return int(raw)
