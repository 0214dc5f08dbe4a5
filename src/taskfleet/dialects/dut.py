"""The dutserver dialect (seed `000_951aad4179e96c87.txt`, PROTOCOLS.md §1).

Served at the root and under `/dut/`. Admins send the raw session token in
`Authorization`; agents send the raw `user:pass` (HTTP Basic is accepted too). Errors are
`{"error": true, "msg": …}` with a non-200 status. Where taskfleet differs from the
original on purpose, docs/dialects/dutserver.md says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from taskfleet.api.agent_hub import Hub
from taskfleet.api.auth import basic_credentials, services_of
from taskfleet.core import errors
from taskfleet.core.models import (
    Agent,
    NewTask,
    Principal,
    RegistrationPolicy,
    TargetKind,
    TaskStatus,
)

#: Every dut task has this type, so that only dut agents (which say they take it) get them.
TASK_TYPE = "dut"
ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
STATUS = {
    errors.TooLarge: 413,
    errors.Invalid: 400,
    errors.Unauthorized: 403,  # dutserver answers every auth failure with 403
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Busy: 503,
}


def reply(body: object = None, status: int = 200) -> Response:
    if body is None:
        return Response(status_code=status)  # the original's "empty, unless error"
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def fail(status: int, msg: str) -> Response:
    return reply({"error": True, "msg": msg}, status)


def _to_reply(exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and isinstance(exc.__cause__, errors.Error):
        exc = exc.__cause__
    if isinstance(exc, errors.Error):
        status = next((STATUS[k] for k in type(exc).__mro__ if k in STATUS), 400)
        return fail(status, exc.message)
    assert isinstance(exc, HTTPException)
    return fail(exc.status_code, str(exc.detail))


class DutRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (errors.Error, HTTPException) as exc:
                return _to_reply(exc)

        return handle


# -- credentials, as the original clients send them ------------------------------------------


def _authorization(request: Request) -> str:
    return request.headers.get("authorization", "").strip()


async def _admin(request: Request) -> Principal:
    token = _authorization(request)
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token:
        raise errors.Unauthorized("Authorization failure")
    try:
        principal = await services_of(request).accounts.resolve_token(token)
    except errors.Unauthorized:
        raise errors.Unauthorized("Authorization failure") from None
    if not principal.is_admin:
        raise errors.Forbidden("Authorization failure")
    return principal


async def _agent(request: Request) -> Agent:
    header = _authorization(request)
    if header.lower().startswith("basic "):
        name, secret = basic_credentials(header[6:].strip())
    else:
        name, sep, secret = header.partition(":")
        if not sep:
            raise errors.Unauthorized("Authorization failure")
    found = services_of(request)
    try:
        principal = await found.accounts.authenticate(name, secret)
    except errors.Unauthorized:
        raise errors.Unauthorized("Authorization failure") from None
    return await found.agents.for_principal(principal)


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise errors.Invalid("Invalid JSON") from None


def _query(request: Request, name: str) -> str:
    value = request.query_params.get(name, "")
    if not value:
        raise errors.Invalid(f"Missing {name} parameter")
    return value


router = APIRouter(route_class=DutRoute, include_in_schema=False)


@router.api_route("/login", methods=ANY_METHOD)
async def login(request: Request) -> Response:
    found = services_of(request)
    try:
        token = await found.accounts.login(
            request.query_params.get("user", ""), request.query_params.get("pass", "")
        )
        principal = await found.accounts.resolve_token(token)
    except errors.Unauthorized:
        return fail(403, "Invalid credentials")
    if not principal.is_admin:
        await found.accounts.logout(token)
        return fail(403, "Invalid credentials")
    return reply({"error": False, "msg": "Logged in", "token": token})


@router.api_route("/logout", methods=ANY_METHOD)
async def logout(request: Request) -> Response:
    token = _authorization(request)
    if not token:
        return fail(400, "Missing Authorization header")
    try:
        await services_of(request).accounts.logout(token)
    except errors.Unauthorized:
        pass  # the original logs out unknown tokens silently, too
    return reply({"error": False, "msg": "Logged out"})


@router.api_route("/agents", methods=ANY_METHOD)
async def agents(request: Request) -> Response:
    if request.method == "POST":
        return await _self_register(request)
    if request.method != "GET":
        return fail(405, "/agents only supports POST and GET")
    await _admin(request)
    fleet = await services_of(request).agents.all()
    names = [a.name for a in fleet]
    online = {a.name: a.online for a in fleet}
    return reply({"error": False, "agents": names, "online": online})


async def _self_register(request: Request) -> Response:
    user, password = request.query_params.get("user", ""), request.query_params.get("pass", "")
    if not user or not password:
        return fail(400, "Pass 'user' and 'pass' in query string")
    try:
        await services_of(request).accounts.register_agent(user, password)
    except errors.Forbidden:
        return fail(405, "Agents self-registration is disabled")
    return reply()


@router.api_route("/agents_selfreg", methods=ANY_METHOD)
@router.api_route("/agent_selfreg", methods=ANY_METHOD)
async def self_registration(request: Request) -> Response:
    await _admin(request)
    accounts = services_of(request).accounts
    if request.method == "GET":
        enabled = await accounts.registration_policy() is RegistrationPolicy.OPEN
        return Response("1" if enabled else "0", media_type="text/plain")
    if request.method != "POST":
        return fail(405, "/agents_selfreg only supports POST and GET")
    choice = {"1": RegistrationPolicy.OPEN, "0": RegistrationPolicy.CLOSED}.get(
        request.query_params.get("enabled", "")
    )
    if choice is None:
        return fail(400, "Pass 'enabled=1' or 'enabled=0' in query string")
    await accounts.set_registration_policy(choice)
    return reply()


@router.api_route("/events", methods=ANY_METHOD)
async def events(request: Request) -> Response:
    found = services_of(request)
    if request.method == "POST":
        agent = await _agent(request)
        await found.agents.post_event(agent, await _json_body(request))
        return reply()
    if request.method != "GET":
        return fail(405, "/events only supports POST and GET")
    await _admin(request)
    listed = await found.agents.list_events(_query(request, "agent"))
    return reply(
        {
            "error": False,
            "events": [e.data for e in listed],
            "max_size": found.agents.event_bound,
        }
    )


@router.api_route("/tasks", methods=ANY_METHOD)
async def tasks(request: Request) -> Response:
    if request.method == "POST":
        return await _submit(request)
    if request.method == "GET":
        return await _poll(request)
    return fail(400, "/tasks endpoint supports only GET and POST")


async def _submit(request: Request) -> Response:
    await _admin(request)
    found = services_of(request)
    target = _query(request, "target")
    payload = await _json_body(request)
    (task,) = await found.tasks.submit(
        [NewTask(type=TASK_TYPE, payload=payload, target_kind=TargetKind.AGENT, target=target)]
    )
    if request.query_params.get("noWait") == "1":
        return reply({"error": False, "msg": "Task enqueued", "id": task.id})
    done = await found.tasks.wait(task.id, found.settings.dut_result_wait_seconds)
    if done.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        return fail(502, f"task {task.id} {done.status.value}: {done.error}")
    return reply({"error": False, "result": done.result, "id": task.id})


async def _poll(request: Request) -> Response:
    agent = await _agent(request)
    found = services_of(request)
    if agent.task_types != (TASK_TYPE,):
        agent = await found.agents.hello(agent, task_types=[TASK_TYPE])
    else:
        agent = await found.agents.seen(agent)
    hub: Hub = request.app.state.agent_hub
    task = await hub.claim_wait(
        agent, found.settings.dut_poll_seconds, found.settings.dut_lease_seconds
    )
    if task is None:
        return reply({"error": False, "events": []})
    return reply({"error": False, "events": {str(task.id): task.payload}})


async def serve_poll(scope: Scope, receive: Receive, send: Send) -> None:
    """`GET /tasks` (the agent's long-poll) as a plain ASGI app, which `app.App` serves
    ahead of the routing stack: thousands of polls are held at once, for up to
    `dut_poll_seconds` each, and every layer of that stack would keep suspended frames and
    exit stacks for as long (about 9 KiB a poll). The same `_poll`; errors are answered
    as `DutRoute` answers them."""
    request = Request(scope, receive)
    try:
        response = await _poll(request)
    except (errors.Error, HTTPException) as exc:
        response = _to_reply(exc)
    await response(scope, receive, send)


def poll_paths(raintank_prefix: str) -> frozenset[str]:
    """The paths of the agent's long-poll, but for one the raintank dialect (mounted
    first) would serve."""
    return frozenset(
        path
        for path in (prefix + "/tasks" for prefix in PREFIXES)
        if path != raintank_prefix and not path.startswith(raintank_prefix + "/")
    )


async def _task_id(request: Request) -> int:
    raw = request.query_params.get("id", "")
    if not raw.isdigit():
        raise errors.Invalid("Pass a numeric 'id' in query string")
    return int(raw)


@router.api_route("/tasks_result", methods=ANY_METHOD)
@router.api_route("/task_result", methods=ANY_METHOD)
async def tasks_result(request: Request) -> Response:
    if request.method != "POST":
        return fail(405, "/tasks_result supports only POST")
    agent = await _agent(request)
    task_id = await _task_id(request)
    result = await _json_body(request)
    tasks = services_of(request).tasks
    await tasks.complete(agent, task_id, await tasks.attempt_of(agent, task_id), result)
    return reply()


PREFIXES = ("", "/dut")  #: served at the root (fixed client paths) and under /dut/
