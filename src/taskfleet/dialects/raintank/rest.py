"""The task-server REST API: agents, tasks (the engine's schedules) and the heartbeat.

Answers are `{"meta": …, "body": …}` envelopes with Go's JSON bytes. Errors come back as
the original sent them: HTTP 200 with the code in `meta` (400, 404, 409, 500), except an
authentication failure (HTTP 401), a task not found by GET (HTTP 404) and an invalid
agent name on create (HTTP 400), which the original answered with those statuses.
"""

from __future__ import annotations

import email
import hmac
import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from taskfleet.api.auth import services_of
from taskfleet.core import errors
from taskfleet.core.models import Agent, JSONValue, ScheduleFilter
from taskfleet.dialects.raintank import wire
from taskfleet.services import Services

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/json; charset=UTF-8"
META_CODE = {
    errors.TooLarge: 413,
    errors.Invalid: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Busy: 503,
}
#: Meta codes also sent as the HTTP status: the original's, and 503 so that clients retry.
HTTP_STATUS = {401: 401, 403: 403, 503: 503}
PAGE_SIZE = 50  #: the original's default `limit`
MAX_PAGE_SIZE = 1000


def reply(kind: str, body: Any) -> Response:
    return Response(wire.envelope(kind, body), media_type=MEDIA_TYPE)


def fail(code: int, message: str, status: int = 200) -> Response:
    return Response(wire.error_envelope(code, message), status_code=status, media_type=MEDIA_TYPE)


class Failure(Exception):
    """An error answered with a real HTTP status, as the original did in a few places."""

    def __init__(self, code: int, message: str, status: int) -> None:
        super().__init__(message)
        self.response = fail(code, message, status)


def _to_reply(exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and isinstance(exc.__cause__, errors.Error):
        exc = exc.__cause__
    if isinstance(exc, Failure):
        return exc.response
    if isinstance(exc, errors.Error):
        code = next((META_CODE[k] for k in type(exc).__mro__ if k in META_CODE), 400)
        return fail(code, exc.message, HTTP_STATUS.get(code, 200))
    if isinstance(exc, HTTPException):
        return fail(exc.status_code, str(exc.detail))
    log.exception("raintank request failed", exc_info=exc, extra={"action": "raintank_error"})
    return fail(500, "internal error; the server log has the details")


class RaintankRoute(APIRoute):
    """Maps every error to the original's envelope, in one place."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return _to_reply(exc)

        return handle


# -- authentication ------------------------------------------------------------------------------


async def authorize(request: Any) -> Services:
    """`Authorization: Bearer <key>`: the raintank admin key, a native API key or an admin
    session token. Raises `Unauthorized` or `Forbidden`."""
    found = services_of(request)
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise errors.Unauthorized("Unauthorized: send the admin key as `Authorization: Bearer KEY`")
    admin_key = found.settings.raintank_admin_key
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return found
    try:
        principal = await found.accounts.resolve_token(key)
    except errors.Unauthorized:
        raise errors.Unauthorized("Unauthorized: the key is not a valid admin key") from None
    if not principal.is_admin:
        raise errors.Forbidden("Permission denied: this needs an admin key")
    return found


# -- bodies ---------------------------------------------------------------------------------------


def _multipart(content_type: str, body: bytes) -> dict[str, list[str]]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = email.message_from_bytes(head + body)
    if not message.is_multipart():
        raise errors.Invalid("the multipart/form-data body could not be read")
    fields: dict[str, list[str]] = {}
    for part in message.get_payload():
        assert isinstance(part, email.message.Message)
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename() is not None:
            continue
        data = part.get_payload(decode=True)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
        fields.setdefault(name, []).append(text)
    return fields


async def _agent_input(request: Request) -> wire.AgentIn:
    """An AgentDTO bound by content type, as Macaron's binding does: JSON, multipart or
    urlencoded form (form fields are named like the JSON ones; `tags` once per tag)."""
    content_type = request.headers.get("content-type", "")
    mime = content_type.partition(";")[0].strip().lower()
    body = await request.body()
    if mime == "application/json":
        return wire.agent_from_json(wire.parse_json(body))
    if mime == "multipart/form-data":
        return wire.agent_from_form(_multipart(content_type, body))
    fields = parse_qs(request.url.query, keep_blank_values=True)
    for name, values in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
        fields.setdefault(name, []).extend(values)
    return wire.agent_from_form(fields)


async def _task_input(request: Request) -> Any:
    mime = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if mime not in ("application/json", ""):
        raise errors.Invalid("send the task as JSON, with `Content-Type: application/json`")
    return wire.parse_json(await request.body())


def _raintank_metadata(agent: Agent | None, enabled: bool, public: bool) -> dict[str, JSONValue]:
    """The original's `enabled` and `public` flags change nothing in how it routes tasks;
    they are kept as the agent's raintank metadata and given back as they were set."""
    metadata = dict(agent.metadata) if agent is not None else {}
    metadata["raintank"] = {"enabled": enabled, "public": public}
    return metadata


# -- query strings --------------------------------------------------------------------------------


def _query_int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return default
    if not raw.isdigit():
        raise errors.Invalid(f"{name} must be a whole number")
    return int(raw)


def _query_bool(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name, "")
    if not raw:
        return None
    if raw not in wire.GO_TRUE | wire.GO_FALSE:
        raise errors.Invalid(f"{name} must be true or false")
    return raw in wire.GO_TRUE


def _page(request: Request) -> tuple[int, int]:
    """(offset, limit) from `page` (from 1) and `limit`."""
    limit = _query_int(request, "limit", PAGE_SIZE) or PAGE_SIZE
    page = _query_int(request, "page", 1) or 1
    if limit > MAX_PAGE_SIZE:
        raise errors.Invalid(f"limit must be at most {MAX_PAGE_SIZE}")
    return (page - 1) * limit, limit


def _order(request: Request) -> str:
    order = request.query_params.get("orderBy", "") or "name"
    if order not in ("name", "id"):
        raise errors.Invalid("orderBy must be name or id")
    return order


def _path_id(raw: str) -> int:
    """Macaron's ParamsInt64: anything that is not a number is 0 (found nowhere)."""
    return int(raw) if raw.isdigit() and len(raw) < 19 else 0


# -- heartbeat ------------------------------------------------------------------------------------


async def heartbeat(request: Request) -> Response:
    await authorize(request)
    return reply("heartbeat", None)


async def open_heartbeat(request: Request) -> Response:
    """`GET /` of the original, which needed no key."""
    return reply("heartbeat", None)


# -- agents ---------------------------------------------------------------------------------------


def raintank_flags(agent: Agent) -> tuple[bool, bool]:
    """(enabled, public) as last set through this API; the agent's own flag otherwise."""
    flags = agent.metadata.get("raintank")
    if not isinstance(flags, dict):
        return agent.enabled, False
    return bool(flags.get("enabled", agent.enabled)), bool(flags.get("public", False))


def agent_dto(agent: Agent) -> wire.Struct:
    dto = wire.agent_dto(agent)
    dto["enabled"], dto["public"] = raintank_flags(agent)
    return dto


def _select_agents(request: Request, fleet: list[Agent]) -> list[Agent]:
    name = request.query_params.get("name", "")
    enabled, public = _query_bool(request, "enabled"), _query_bool(request, "public")
    tags = set(request.query_params.getlist("tag"))
    chosen = [
        a
        for a in fleet
        if (not name or a.name == name)
        and (enabled is None or raintank_flags(a)[0] is enabled)
        and (public is None or raintank_flags(a)[1] is public)
        and (not tags or not tags.isdisjoint(a.tags))
    ]
    if _order(request) == "id":
        chosen.sort(key=lambda a: a.id)
    offset, limit = _page(request)
    return chosen[offset : offset + limit]


async def list_agents(request: Request) -> Response:
    found = await authorize(request)
    chosen = _select_agents(request, await found.agents.all())
    return reply("agents", [agent_dto(a) for a in chosen])


async def add_agent(request: Request) -> Response:
    found = await authorize(request)
    data = await _agent_input(request)
    try:
        wire.check_agent_name(data.name)
    except errors.Invalid as exc:
        raise Failure(400, exc.message, 400) from None
    agent = await found.agents.add(
        data.name,
        tags=data.tags or [],
        metadata=_raintank_metadata(None, data.enabled, data.public),
        runs_schedules=True,
    )
    dto = wire.new_agent_dto(agent, data.tags)
    dto["enabled"], dto["public"] = data.enabled, data.public
    return reply("agent", dto)


async def update_agent(request: Request) -> Response:
    found = await authorize(request)
    data = await _agent_input(request)
    wire.check_agent_name(data.name)
    if not data.id:
        raise errors.Invalid("agent ID not set.")
    agent = await _agent_by_id(found, data.id)
    if data.name != agent.name:
        raise errors.Invalid(f"an agent cannot be renamed (agent {data.id} is {agent.name!r})")
    updated = await found.agents.update(
        agent.name,
        tags=data.tags or [],
        metadata=_raintank_metadata(agent, data.enabled, data.public),
    )
    return reply("agent", agent_dto(updated))


async def _agent_by_id(found: Services, agent_id: int) -> Agent:
    try:
        return await found.agents.get_by_id(agent_id)
    except errors.NotFound:
        raise errors.NotFound("agent not found") from None


async def show_agent(request: Request) -> Response:
    found = await authorize(request)
    agent = await _agent_by_id(found, _path_id(request.path_params["agent_id"]))
    return reply("agent", agent_dto(agent))


async def delete_agent(request: Request) -> Response:
    """Deletes the agent; its socket (on any replica) closes."""
    found = await authorize(request)
    agent = await _agent_by_id(found, _path_id(request.path_params["agent_id"]))
    await found.agents.delete(agent.name)
    return reply("agent", None)


# -- tasks ----------------------------------------------------------------------------------------


def _in_task_words(exc: errors.Error) -> errors.Error:
    """Raintank calls schedules tasks; so do its error messages."""
    exc.message = exc.message.replace("schedule", "task")
    return exc


async def list_tasks(request: Request) -> Response:
    found = await authorize(request)
    params = request.query_params
    task_type = params.get("taskType") or params.get("metric", "").rstrip("/*") or None
    offset, limit = _page(request)
    query = ScheduleFilter(
        name_like=params.get("name") or None,
        type=task_type,
        enabled=_query_bool(request, "enabled"),
        order_by=_order(request),
        offset=offset,
        limit=limit,
    )
    chosen = await found.schedules.find(query)
    # The original's empty result is a nil slice: `null`.
    return reply("tasks", [wire.task_dto(s) for s in chosen] or None)


async def add_task(request: Request) -> Response:
    found = await authorize(request)
    _, definition = wire.task_from_json(await _task_input(request))
    try:
        schedule = await found.schedules.create(definition)
    except errors.Error as exc:
        raise _in_task_words(exc) from None
    return reply("task", wire.task_dto(schedule))


async def update_task(request: Request) -> Response:
    found = await authorize(request)
    task_id, definition = wire.task_from_json(await _task_input(request))
    if not task_id:
        raise errors.Invalid("task id not set.")
    try:
        schedule = await found.schedules.update(task_id, definition)
    except errors.NotFound as exc:
        message = "task not found" if "schedule" in exc.message else exc.message
        raise errors.NotFound(message) from None
    except errors.Error as exc:
        raise _in_task_words(exc) from None
    return reply("task", wire.task_dto(schedule))


async def show_task(request: Request) -> Response:
    found = await authorize(request)
    try:
        schedule = await found.schedules.get(_path_id(request.path_params["task_id"]))
    except errors.NotFound:
        raise Failure(404, "task not found", 404) from None
    return reply("task", wire.task_dto(schedule))


async def delete_task(request: Request) -> Response:
    """Deletes the task; the agents it was routed to get `taskRemove`. Deleting a task that
    does not exist succeeds, as in the original."""
    found = await authorize(request)
    await found.schedules.delete(_path_id(request.path_params["task_id"]))
    return reply("task", None)


def router(prefix: str) -> APIRouter:
    """The REST routes under `prefix`, each with and without the trailing slash."""
    routes = APIRouter(route_class=RaintankRoute, include_in_schema=False)
    table: list[tuple[str, Callable[[Request], Coroutine[Any, Any, Response]], str]] = [
        ("", heartbeat, "GET"),
        ("/agents", list_agents, "GET"),
        ("/agents", add_agent, "POST"),
        ("/agents", update_agent, "PUT"),
        ("/agents/{agent_id}", show_agent, "GET"),
        ("/agents/{agent_id}", delete_agent, "DELETE"),
        ("/tasks", list_tasks, "GET"),
        ("/tasks", add_task, "POST"),
        ("/tasks", update_task, "PUT"),
        ("/tasks/{task_id}", show_task, "GET"),
        ("/tasks/{task_id}", delete_task, "DELETE"),
    ]
    for path, endpoint, method in table:
        for variant in {prefix + path or "/", prefix + path + "/"}:
            routes.add_api_route(variant, endpoint, methods=[method], name=endpoint.__name__)
    return routes
