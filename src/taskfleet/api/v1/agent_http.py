"""The agents' HTTP fallback: hello, long-poll claims, progress, results, logs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from taskfleet.api import schemas as s
from taskfleet.api.problems import ProblemRoute
from taskfleet.api.v1.deps import (
    MAX_WAIT_SECONDS,
    AgentCaller,
    Found,
    TaskId,
)
from taskfleet.core.models import Progress, TaskStatus

router = APIRouter(route_class=ProblemRoute)


# -- the agent's HTTP fallback (long-poll) ----------------------------------------------------


@router.post("/agent/hello", response_model=s.AgentOut, tags=["agent"])
async def hello(body: s.Hello, me: AgentCaller, found: Found) -> s.AgentOut:
    updated = await found.agents.hello(
        me,
        version=body.version,
        platform=body.platform,
        task_types=body.task_types,
        tags=body.tags,
    )
    return s.AgentOut.of(updated)


@router.post(
    "/agent/claim",
    response_model=s.TaskOut | None,
    tags=["agent"],
    responses={204: {"description": "no task within the wait"}},
)
async def claim(
    me: AgentCaller,
    found: Found,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 25.0,
) -> Any:
    """Long-poll for the next task; 204 when none came within `wait` seconds."""
    await found.agents.seen(me)
    task = await found.tasks.claim_wait(me, wait)
    return Response(status_code=204) if task is None else s.TaskOut.of(task)


@router.post("/agent/tasks/{task_id}/progress", response_model=s.LeaseOut, tags=["agent"])
async def progress(
    task_id: TaskId, body: s.ProgressIn, me: AgentCaller, found: Found
) -> s.LeaseOut:
    """Extends the lease; answers 409 when the attempt is no longer current."""
    report = Progress(percent=body.percent, eta=body.eta, activity=body.activity)
    task = await found.tasks.heartbeat(me, task_id, body.attempt, report)
    return s.LeaseOut(
        status=task.status,
        cancel_requested=task.status is TaskStatus.CANCEL_REQUESTED,
        lease_expires=s.iso(task.lease_expires),
    )


@router.post("/agent/tasks/{task_id}/result", response_model=s.TaskOut, tags=["agent"])
async def result(task_id: TaskId, body: s.ResultIn, me: AgentCaller, found: Found) -> s.TaskOut:
    """Records the attempt's outcome; a repeat for the same attempt is accepted once."""
    tasks = found.tasks
    if body.status == "complete":
        task = await tasks.complete(me, task_id, body.attempt, body.result)
    elif body.status == "error":
        task = await tasks.fail(me, task_id, body.attempt, body.msg)
    else:
        task = await tasks.confirm_cancel(me, task_id, body.attempt)
    return s.TaskOut.of(task)


@router.post("/agent/tasks/{task_id}/log", status_code=204, tags=["agent"])
async def append_log(task_id: TaskId, body: s.LogIn, me: AgentCaller, found: Found) -> Response:
    await found.tasks.log(me, task_id, body.attempt, body.text)
    return Response(status_code=204)


@router.post(
    "/agent/tasks/{task_id}/outputs", status_code=201, response_model=s.OutputOut, tags=["agent"]
)
async def add_output(
    task_id: TaskId, body: s.OutputIn, me: AgentCaller, found: Found
) -> s.OutputOut:
    out = await found.tasks.add_output(me, task_id, body.attempt, body.data)
    return s.OutputOut(id=out.id, time=s.iso(out.time), data=out.data)


@router.post("/agent/sign-off", response_model=list[s.TaskOut], tags=["agent"])
async def sign_off(me: AgentCaller, found: Found) -> list[s.TaskOut]:
    """The agent leaves: its running tasks return to the queue."""
    released = await found.tasks.sign_off(me)
    await found.agents.seen(me, online=False)
    return [s.TaskOut.of(t) for t in released]
