"""Tasks: submit, list, show, wait, cancel, requeue, logs and outputs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from taskfleet.api import schemas as s
from taskfleet.api.problems import ProblemRoute
from taskfleet.api.v1.deps import (
    MAX_WAIT_SECONDS,
    Admin,
    After,
    Caller,
    Found,
    TaskId,
)
from taskfleet.core.models import TaskFilter, TaskStatus
from taskfleet.services import Services

router = APIRouter(route_class=ProblemRoute)


# -- jobs and tasks -----------------------------------------------------------------------


async def _submit(found: Services, items: list[s.TaskIn]) -> list[s.TaskOut]:
    created = []
    plain = [t.to_new() for t in items if not t.broadcast]
    if plain:
        created += await found.tasks.submit(plain)
    for item in (t for t in items if t.broadcast):
        assert item.group is not None
        created += await found.tasks.broadcast(item.group, item.to_new())
    return [s.TaskOut.of(t) for t in created]


@router.post("/tasks", status_code=201, response_model=list[s.TaskOut], tags=["tasks"])
async def submit_task(body: s.TaskIn, _: Admin, found: Found) -> list[s.TaskOut]:
    """Queues one task (or, with `broadcast`, one per group member). Returns what was queued."""
    return await _submit(found, [body])


@router.post("/tasks/batch", status_code=201, response_model=list[s.TaskOut], tags=["tasks"])
async def submit_tasks(body: s.TaskBatch, _: Admin, found: Found) -> list[s.TaskOut]:
    return await _submit(found, body.tasks)


@router.get("/tasks", response_model=s.TaskPage, tags=["tasks"])
async def list_tasks(
    who: Caller,
    found: Found,
    status: TaskStatus | None = None,
    type: Annotated[str | None, Query(max_length=128)] = None,
    agent: Annotated[str | None, Query(max_length=64)] = None,
    job: Annotated[int | None, Query(ge=1, le=s.MAX_ID)] = None,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> s.TaskPage:
    """Tasks in id order, filtered; an agent sees only the tasks it ran."""
    agent_id = None
    if not who.is_admin:
        agent_id = (await found.agents.for_principal(who)).id
    elif agent is not None:
        agent_id = (await found.agents.get(agent)).id
    query = TaskFilter(
        status=status, type=type, agent_id=agent_id, job_id=job, after_id=after, limit=limit
    )
    found_tasks = await found.tasks.find(query)
    next_after = found_tasks[-1].id if len(found_tasks) == limit else None
    return s.TaskPage(tasks=[s.TaskOut.of(t) for t in found_tasks], next_after=next_after)


@router.get("/tasks/{task_id}", response_model=s.TaskOut, tags=["tasks"])
async def show_task(task_id: TaskId, who: Caller, found: Found) -> s.TaskOut:
    return s.TaskOut.of(await found.tasks.get(task_id, who))


@router.get("/tasks/{task_id}/wait", response_model=s.TaskOut, tags=["tasks"])
async def wait_task(
    task_id: TaskId,
    who: Caller,
    found: Found,
    timeout: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 25.0,
) -> s.TaskOut:
    """Returns once the task has finished, or as it stands after `timeout` seconds."""
    return s.TaskOut.of(await found.tasks.wait(task_id, timeout, who))


@router.post("/tasks/{task_id}/cancel", response_model=s.TaskOut, tags=["tasks"])
async def cancel_task(task_id: TaskId, _: Admin, found: Found) -> s.TaskOut:
    return s.TaskOut.of(await found.tasks.cancel(task_id))


@router.post("/tasks/{task_id}/requeue", response_model=s.TaskOut, tags=["tasks"])
async def requeue_task(
    task_id: TaskId,
    _: Admin,
    found: Found,
    attempts: Annotated[int, Query(ge=1, le=100, description="attempts it gets anew")] = 3,
) -> s.TaskOut:
    """Puts a finished task back in the queue; attempt numbers keep counting up."""
    return s.TaskOut.of(await found.tasks.requeue(task_id, attempts))


@router.get("/tasks/{task_id}/logs", response_model=list[s.LogChunkOut], tags=["tasks"])
async def task_logs(
    task_id: TaskId,
    who: Caller,
    found: Found,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[s.LogChunkOut]:
    await found.tasks.get(task_id, who)
    chunks = await found.tasks.read_log(task_id, after, limit)
    return [
        s.LogChunkOut(id=c.id, attempt=c.attempt, time=s.iso(c.time), text=c.text) for c in chunks
    ]


@router.get("/tasks/{task_id}/outputs", response_model=list[s.OutputOut], tags=["tasks"])
async def task_outputs(task_id: TaskId, who: Caller, found: Found) -> list[s.OutputOut]:
    await found.tasks.get(task_id, who)
    return [
        s.OutputOut(id=o.id, time=s.iso(o.time), data=o.data)
        for o in await found.tasks.outputs(task_id)
    ]
