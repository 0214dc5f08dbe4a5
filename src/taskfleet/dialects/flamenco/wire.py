"""The Flamenco wire format: 24-hex ids, the documents of `documents.go`, Basic
credentials, and errors as the original manager sends them (`http.Error`: a plain-text
message with the status code).

The real worker reads few keys but is strict where it reads: the may-i-run and 423 bodies
go through attrs classes that die on an unknown key, so they are built here and nowhere else.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from taskfleet.api import limits
from taskfleet.api.auth import basic_credentials, services_of
from taskfleet.core import errors
from taskfleet.core.models import (
    Agent,
    AgentStatus,
    Job,
    TaskFailure,
    TaskStatus,
)
from taskfleet.core.models import Task as EngineTask

ID_RE = re.compile(r"[0-9a-f]{24}")
MAX_ID = 2**63 - 1
MANAGER_ID = "0" * 24  #: the `manager` of every task: this server
STATUS = {
    errors.TooLarge: 413,
    errors.Invalid: 400,
    errors.Unauthorized: 401,  # the worker re-registers on a 401 from /sign-on
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,  # the worker drops an update answered 404 or 409
    errors.Busy: 503,  # the worker keeps the update and sends it again
}
#: Engine task statuses in Flamenco's words (it spells "canceled" with one l).
TASK_STATUS = {TaskStatus.CANCELLED: "canceled"}


def hex_id(number: int) -> str:
    """An engine id as a 24-hex ObjectId-like string."""
    return f"{number:024x}"


def parse_id(raw: str) -> int:
    """The engine id behind a 24-hex string; anything else is an unknown id (`NotFound`)."""
    number = int(raw, 16) if ID_RE.fullmatch(raw) else 0
    if not 0 < number <= MAX_ID:
        raise errors.NotFound(f"no such id {raw[:40]!r}")
    return number


def task_status(status: TaskStatus) -> str:
    return TASK_STATUS.get(status, status.value)


# -- answers --------------------------------------------------------------------------------


def document(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def no_content() -> Response:
    return Response(status_code=204)


def fail(status: int, message: str) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="Flamenco"'} if status == 401 else None
    return Response(message + "\n", status, headers=headers, media_type="text/plain")


def status_change(status: AgentStatus) -> dict[str, str]:
    """A `WorkerStatus` document: exactly one key, or the worker's attrs class dies."""
    return {"status_requested": status.value}


def may_keep_running(
    allowed: bool, reason: str = "", requested: AgentStatus | None = None
) -> dict[str, object]:
    """A `MayKeepRunningResponse`: `may_keep_running`, and `reason` and `status_requested`
    only when there is one (strings or absent: nothing else, never null)."""
    answer: dict[str, object] = {"may_keep_running": allowed}
    if reason:
        answer["reason"] = reason
    if requested is not None:
        answer["status_requested"] = requested.value
    return answer


def _to_reply(exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and isinstance(exc.__cause__, errors.Error):
        exc = exc.__cause__  # FastAPI wraps errors raised while reading the body
    if isinstance(exc, errors.Error):
        status = next((STATUS[k] for k in type(exc).__mro__ if k in STATUS), 400)
        return fail(status, exc.message)
    assert isinstance(exc, HTTPException)
    return fail(exc.status_code, str(exc.detail))


class FlamencoRoute(APIRoute):
    """Maps every core error to the original's plain-text error, in this one place."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                limits.check_text(request.path_params.values())
                return await handler(request)
            except (errors.Error, HTTPException) as exc:
                return _to_reply(exc)

        return handle


# -- requests --------------------------------------------------------------------------------


async def worker(request: Request) -> Agent:
    """The calling worker, from HTTP Basic `_id:secret`. Raises `Unauthorized` (401)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise errors.Unauthorized("send the worker's _id and secret with HTTP Basic auth")
    found = services_of(request)
    principal = await found.accounts.authenticate(*basic_credentials(value.strip()))
    if principal.is_admin:
        raise errors.Forbidden("this endpoint is for workers")
    return await found.agents.for_principal(principal)


def software(request: Request) -> str:
    return request.headers.get("user-agent", "")[:100]


async def json_object(request: Request, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}` unless `required`."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise errors.Invalid("this endpoint needs a JSON document in the body")
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise errors.Invalid("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise errors.Invalid("the body must be a JSON object")
    limits.check_json(value)
    return value


def text(doc: dict[str, Any], key: str, default: str = "", limit: int = 10_000) -> str:
    """A string field; absent or null gives `default`."""
    value = doc.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > limit:
        raise errors.Invalid(f"{key!r} must be a string of at most {limit} characters")
    return value


def number(doc: dict[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise errors.Invalid(f"{key!r} must be a number")
    return float(value)


def names(doc: dict[str, Any], key: str) -> list[str] | None:
    """A list of strings; None when absent."""
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.Invalid(f"{key!r} must be a list of strings")
    return value


# -- documents -------------------------------------------------------------------------------


def worker_document(agent: Agent, address: str) -> dict[str, object]:
    """A `Worker` document. The secret is never sent back."""
    return {
        "_id": agent.name,
        "nickname": agent.nickname,
        "address": address,
        "status": agent.status.value,
        "platform": agent.platform,
        "time_cost": 0,
        "supported_task_types": list(agent.task_types),
        "software": agent.version,
        "status_requested": agent.requested_status.value if agent.requested_status else "",
        "lazy_status_request": agent.requested_lazy,
        "sleep_schedule": {"schedule_active": False},
    }


def commands_of(task: EngineTask) -> list[Any] | None:
    """The task's commands, or None when its payload is not a Flamenco task."""
    payload = task.payload
    commands = payload.get("commands") if isinstance(payload, dict) else None
    return commands if isinstance(commands, list) else None


def task_document(
    task: EngineTask,
    job: Job | None,
    parents: list[int],
    failures: list[TaskFailure],
    worker: Agent,
) -> dict[str, object]:
    """A `Task` document with the original keys; the worker reads `_id` and `commands`."""
    payload = task.payload if isinstance(task.payload, dict) else {}
    settings = job.settings if job else {}
    return {
        "_id": hex_id(task.id),
        "job": hex_id(job.id) if job else "",
        "manager": MANAGER_ID,
        "project": str(settings.get("project", "")),
        "user": str(settings.get("user", "")),
        "name": str(payload.get("name", f"task-{task.id}")),
        "status": task_status(task.status),
        "priority": task.priority,
        "job_priority": task.job_priority,
        "job_type": job.type if job else "",
        "task_type": task.type,
        "commands": commands_of(task) or [],
        "activity": task.progress.activity,
        "parents": [hex_id(p) for p in parents],
        "worker": worker.nickname or worker.name,
        "failed_by_workers": [
            {"id": f.agent_name or "", "identifier": f.agent_name or ""} for f in failures
        ],
    }
