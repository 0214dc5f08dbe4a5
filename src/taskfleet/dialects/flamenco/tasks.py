"""Flamenco worker endpoints about tasks: fetching one, updates (activity, progress, log
lines, the final status), returning it, may-i-run, the task log, and produced outputs.

The worker's HTTP timeout is 3 s, so nothing here waits for work: `/task` answers 204
at once when there is none, and the worker asks again 5 s later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from taskfleet.api.auth import principal_from, services_of
from taskfleet.core import errors
from taskfleet.core.models import Agent, AgentStatus, Progress, Task, TaskFilter, TaskStatus
from taskfleet.core.tasks import MAX_LOG_CHUNK_BYTES
from taskfleet.dialects.flamenco import wire
from taskfleet.services import Services

router = APIRouter(route_class=wire.FlamencoRoute, include_in_schema=False)

RUNNING = (TaskStatus.ACTIVE, TaskStatus.CANCEL_REQUESTED)
WORKER_STATUSES = ("active", "completed", "failed", "canceled")  #: what a worker may send
LOG_PAGE = 1000  #: log chunks read per query for /logfile


async def _running(found: Services, agent: Agent) -> Task | None:
    active = await found.tasks.find(
        TaskFilter(status=TaskStatus.ACTIVE, agent_id=agent.id, limit=1)
    )
    return active[0] if active else None


async def _awake(found: Services, agent: Agent) -> Agent:
    """A worker asking for work is awake (and seen)."""
    agent = await found.agents.seen(agent)
    if agent.status is not AgentStatus.AWAKE:
        agent = await found.agents.acknowledge_status(agent, AgentStatus.AWAKE)
    return agent


@router.api_route("/task", methods=["GET", "POST"])
async def next_task(request: Request) -> Response:
    """423 for a pending status change, 406 without task types, else the worker's active
    task or a newly claimed one (200), or 204 when there is nothing to do."""
    agent = await wire.worker(request)
    found = services_of(request)
    running = await _running(found, agent)
    requested = agent.requested_status
    if requested is not None and (not agent.requested_lazy or running is None):
        return wire.document(wire.status_change(requested), 423)
    if not agent.task_types:
        return wire.fail(406, "this worker supports no task types")
    agent = await _awake(found, agent)
    lease = found.settings.flamenco_lease_seconds
    if running is not None:
        task = await found.tasks.heartbeat(agent, running.id, running.attempt, None, lease)
    else:
        claimed = await found.tasks.claim(agent, lease)
        if claimed is None:
            return wire.no_content()
        task = claimed
    if wire.commands_of(task) is None:
        # Not a job's task (a native task of a type this worker declares): the worker
        # could not run it, so it fails rather than "completes" doing nothing.
        await found.tasks.fail(agent, task.id, task.attempt, "not a Flamenco task: no commands")
        return wire.no_content()
    return wire.document(await _task_document(found, task, agent))


async def _task_document(found: Services, task: Task, agent: Agent) -> dict[str, object]:
    job = await found.jobs.job(task.job_id) if task.job_id is not None else None
    parents = await found.jobs.parents(task.id)
    failures = await found.jobs.failures(task.id)
    return wire.task_document(task, job, parents, failures, agent)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskUpdate:
    """A worker's `TaskUpdate` document, type-checked."""

    task_status: str | None
    activity: str
    log: str
    command_index: float | None
    command_percent: float | None
    task_percent: float | None
    metrics: Any

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> TaskUpdate:
        status = doc.get("task_status")
        if status is not None and status not in WORKER_STATUSES:
            raise errors.Invalid(f"task_status must be one of {', '.join(WORKER_STATUSES)}")
        metrics = doc.get("metrics")
        if metrics is not None and not isinstance(metrics, dict):
            raise errors.Invalid("'metrics' must be an object")
        return cls(
            task_status=status,
            activity=wire.text(doc, "activity", limit=1000),
            log=wire.text(doc, "log", limit=64 * 1024 * 1024),
            command_index=wire.number(doc, "current_command_idx"),
            command_percent=wire.number(doc, "command_progress_percentage"),
            task_percent=wire.number(doc, "task_progress_percentage"),
            metrics=metrics,
        )

    def percent(self, commands: int) -> float | None:
        """The worker's task percentage, or one derived from the command it is on (the
        2.x worker always sends 0 for the task)."""
        if self.task_percent:
            return min(max(self.task_percent, 0.0), 100.0)
        if self.command_index is None or not commands:
            return None
        done = self.command_index + min(max(self.command_percent or 0.0, 0.0), 100.0) / 100
        return min(max(done / commands * 100, 0.0), 100.0)


def log_chunks(log: str) -> list[str]:
    """The log as newline-ended chunks under the engine's chunk limit, split at lines."""
    if not log:
        return []
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in log.splitlines():
        line = line.encode()[: MAX_LOG_CHUNK_BYTES - 1].decode(errors="ignore") + "\n"
        if current and size + len(line.encode()) > MAX_LOG_CHUNK_BYTES:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line.encode())
    chunks.append("".join(current))
    return chunks


@router.post("/tasks/{task_id}/update")
async def update_task(task_id: str, request: Request) -> Response:
    """404 unknown task, 409 assigned elsewhere, else 204; status and activity are ignored
    once the task no longer runs (the log is still kept)."""
    agent = await wire.worker(request)
    number = wire.parse_id(task_id)
    update = TaskUpdate.parse(await wire.json_object(request))
    tasks = services_of(request).tasks
    attempt = await tasks.attempt_of(agent, number)
    for chunk in log_chunks(update.log):
        await tasks.log(agent, number, attempt, chunk)
    task = await tasks.get(number)
    if task.attempt == attempt and task.status in RUNNING:
        await _apply(services_of(request), agent, task, update)
    return wire.no_content()


async def _apply(found: Services, agent: Agent, task: Task, update: TaskUpdate) -> None:
    tasks, attempt = found.tasks, task.attempt
    progress = Progress(
        percent=update.percent(len(wire.commands_of(task) or [])), activity=update.activity
    )
    lease = found.settings.flamenco_lease_seconds
    await tasks.heartbeat(agent, task.id, attempt, progress, lease)
    if update.task_status == "completed":
        metrics = {"metrics": update.metrics} if update.metrics else None
        await tasks.complete(agent, task.id, attempt, metrics)
    elif update.task_status == "failed":
        await tasks.fail(agent, task.id, attempt, update.activity or "the worker failed the task")
    elif update.task_status == "canceled":
        await tasks.confirm_cancel(agent, task.id, attempt)


@router.post("/tasks/{task_id}/return")
async def return_task(task_id: str, request: Request) -> Response:
    """The worker gives the task back unfinished: it is queued again. Always 204 once the
    task is known and was this worker's (the worker reads the body of anything else)."""
    agent = await wire.worker(request)
    number = wire.parse_id(task_id)
    tasks = services_of(request).tasks
    attempt = await tasks.attempt_of(agent, number)
    task = await tasks.get(number)
    if task.attempt == attempt and task.status in RUNNING:
        await tasks.release(agent, number, attempt)
    return wire.no_content()


@router.get("/may-i-run/{task_id}")
async def may_i_run(task_id: str, request: Request) -> Response:
    """Always 200 with `may_keep_running`; a yes also extends the task's lease."""
    agent = await wire.worker(request)
    number = wire.parse_id(task_id)
    found = services_of(request)
    try:
        task = await found.tasks.get(number)
    except errors.NotFound:
        return wire.document(wire.may_keep_running(False, "task not found"))
    return wire.document(await _may_keep_running(found, agent, task))


async def _may_keep_running(found: Services, agent: Agent, task: Task) -> dict[str, object]:
    if task.lease_owner != agent.id:
        return wire.may_keep_running(False, "task is assigned to another worker")
    if task.status is not TaskStatus.ACTIVE:
        return wire.may_keep_running(False, f"task is {wire.task_status(task.status)}")
    requested = agent.requested_status
    if requested not in (None, AgentStatus.AWAKE) and not agent.requested_lazy:
        return wire.may_keep_running(False, "worker status change requested", requested)
    lease = found.settings.flamenco_lease_seconds
    try:
        await found.tasks.heartbeat(agent, task.id, task.attempt, None, lease)
    except errors.Conflict:
        return wire.may_keep_running(False, "task is no longer assigned to this worker")
    return wire.may_keep_running(True)


@router.get("/logfile/{job_id}/{task_id}")
async def logfile(job_id: str, task_id: str, request: Request) -> Response:
    """The task's log as text. Needs credentials: a worker's Basic auth (its own tasks)
    or an admin's bearer token."""
    who = await principal_from(request)
    job, number = wire.parse_id(job_id), wire.parse_id(task_id)
    tasks = services_of(request).tasks
    task = await tasks.get(number, who)
    if task.job_id != job:
        raise errors.NotFound(f"task {task_id} is not in job {job_id}")
    parts: list[str] = []
    after = 0
    while chunks := await tasks.read_log(number, after, LOG_PAGE):
        parts.extend(c.text for c in chunks)
        after = chunks[-1].id
    return Response("".join(parts), media_type="text/plain; charset=utf-8")


@router.post("/output-produced")
async def output_produced(request: Request) -> Response:
    """Keeps the paths with the job the worker is running: 204, 422 for no paths."""
    agent = await wire.worker(request)
    paths = wire.names(await wire.json_object(request), "paths")
    if not paths or not any(p.strip() for p in paths):
        return wire.fail(422, "the document has no paths")
    await services_of(request).jobs.record_output(agent, {"paths": paths})
    return wire.no_content()
