"""Jobs: named sets of tasks submitted together, with dependencies between them.

A job's tasks run in order of the job's priority, then their own, then age; a task is
offered only once all its parents have completed. Each task carries a list of commands
(`{"name": …, "settings": {…}}`) that the agent runs in order: the shape of a Flamenco
task, and a generic one. Failures are tracked per agent (see `TaskService.fail`); an admin
can requeue every failed task of a job at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from taskfleet.core import errors
from taskfleet.core.models import (
    Agent,
    BlacklistEntry,
    Job,
    JobOutput,
    JobSummary,
    JSONValue,
    NewJob,
    NewJobTask,
    NewTask,
    Task,
    TaskFailure,
    TaskFilter,
    TaskStatus,
)
from taskfleet.core.ports import Bus, Clock, Store
from taskfleet.core.tasks import MAX_BATCH, MAX_PRIORITY, QUEUE_CHANNEL, check_new_task

TASK_FAIL_LIMIT = 3  #: agents that may fail a job's task before it fails for good
#: Claims a job's task may take. Generous: returns, sign-offs and soft failures each
#: count one, and Flamenco workers return tasks freely.
JOB_TASK_ATTEMPTS = 100
JOB_OUTPUT_BOUND = 1000
MAX_SETTINGS_BYTES = 64 * 1024


def _check_text(value: object, what: str, low: int, high: int) -> str:
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise errors.Invalid(f"{what} must be a string of {low}-{high} characters")
    return value


def _check_commands(commands: Sequence[object], where: str) -> list[dict[str, JSONValue]]:
    if isinstance(commands, str | bytes) or not isinstance(commands, Sequence) or not commands:
        raise errors.Invalid(f"{where}: commands must be a non-empty list")
    checked = []
    for n, command in enumerate(commands):
        if not isinstance(command, dict) or set(command) - {"name", "settings"}:
            raise errors.Invalid(f"{where}: command {n} must be {{'name': …, 'settings': {{…}}}}")
        settings = command.get("settings", {})
        if not isinstance(settings, dict):
            raise errors.Invalid(f"{where}: the settings of command {n} must be an object")
        name = _check_text(command.get("name"), f"{where}: the name of command {n}", 1, 128)
        checked.append({"name": name, "settings": settings})
    return checked


def _resolve_parents(tasks: Sequence[NewJobTask]) -> list[tuple[int, int]]:
    """(child, parent) index pairs; parents are given by index or by name."""
    by_name = {t.name: i for i, t in enumerate(tasks)}
    edges = set()
    for child, task in enumerate(tasks):
        for ref in task.parents:
            parent = by_name.get(ref) if isinstance(ref, str) else ref
            if isinstance(parent, bool) or not isinstance(parent, int):
                raise errors.Invalid(f"task {task.name!r}: no task {ref!r} in this job")
            if not 0 <= parent < len(tasks) or parent == child:
                raise errors.Invalid(f"task {task.name!r}: parent {ref!r} is not another task")
            edges.add((child, parent))
    _refuse_cycles(tasks, edges)
    return sorted(edges)


def _refuse_cycles(tasks: Sequence[NewJobTask], edges: set[tuple[int, int]]) -> None:
    """Kahn's algorithm: tasks in a cycle would wait for each other forever."""
    waiting = [0] * len(tasks)
    children: dict[int, list[int]] = {}
    for child, parent in edges:
        waiting[child] += 1
        children.setdefault(parent, []).append(child)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    for i in ready:  # grows while we walk it
        for child in children.get(i, []):
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(ready) < len(tasks):
        stuck = sorted(tasks[i].name for i, n in enumerate(waiting) if n)
        raise errors.Invalid(f"the parents of these tasks form a cycle: {', '.join(stuck)}")


def check_job(job: NewJob, fail_limit: int) -> tuple[Job, list[NewTask]]:
    """The job record and its tasks as the engine queues them. Raises `Invalid`."""
    _check_text(job.name, "a job name", 1, 200)
    _check_text(job.type, "a job type", 0, 128)
    if isinstance(job.priority, bool) or not isinstance(job.priority, int):
        raise errors.Invalid("a job priority must be an integer")
    if not -MAX_PRIORITY <= job.priority <= MAX_PRIORITY:
        raise errors.Invalid(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    if not isinstance(job.settings, dict) or len(json.dumps(job.settings)) > MAX_SETTINGS_BYTES:
        raise errors.Invalid(f"job settings must be an object of at most {MAX_SETTINGS_BYTES} B")
    if not 1 <= fail_limit <= 100:
        raise errors.Invalid("fail_limit must be between 1 and 100")
    if len(job.tasks) > MAX_BATCH:
        raise errors.Invalid(f"a job has at most {MAX_BATCH} tasks")
    names = [_check_text(t.name, "a task name", 1, 200) for t in job.tasks]
    if len(set(names)) < len(names):
        raise errors.Invalid("task names must be unique within a job")
    record = Job(id=0, name=job.name, type=job.type, priority=job.priority, settings=job.settings)
    queued = [
        check_new_task(
            NewTask(
                type=t.type,
                payload={"name": t.name, "commands": _check_commands(t.commands, t.name)},
                priority=t.priority,
                max_attempts=JOB_TASK_ATTEMPTS,
                job_priority=job.priority,
                fail_limit=fail_limit,
            )
        )
        for t in job.tasks
    ]
    return record, queued


class JobService:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        clock: Clock,
        *,
        fail_limit: int = TASK_FAIL_LIMIT,
        output_bound: int = JOB_OUTPUT_BOUND,
    ) -> None:
        self._store = store
        self._bus = bus
        self._clock = clock
        self.fail_limit = fail_limit
        self.output_bound = output_bound

    async def submit(self, job: NewJob) -> tuple[Job, list[Task]]:
        """Queues the job with all its tasks, or nothing: they are on disk when this
        returns. Raises `Invalid` for a bad job, unknown parents or a dependency cycle."""
        limit = self.fail_limit if job.fail_limit is None else job.fail_limit
        record, queued = check_job(job, limit)
        edges = _resolve_parents(job.tasks)
        stored, created = await self._store.add_job_with_tasks(
            record, queued, edges, self._clock.now()
        )
        await self._bus.notify([QUEUE_CHANNEL])
        return stored, created

    async def job(self, job_id: int) -> Job:
        """The job record alone (no counting). Raises `NotFound`."""
        found = await self._store.get_job(job_id)
        if found is None:
            raise errors.NotFound(f"no job {job_id}")
        return found

    async def get(self, job_id: int) -> JobSummary:
        """Raises `NotFound`."""
        found = await self._store.job_summaries(1, job_id)
        if not found:
            raise errors.NotFound(f"no job {job_id}")
        return found[0]

    async def all(self, limit: int = 100) -> list[JobSummary]:
        """Newest first."""
        if not 0 < limit <= 1000:
            raise errors.Invalid("limit must be between 1 and 1000")
        return await self._store.job_summaries(limit)

    async def requeue_failed(self, job_id: int) -> list[Task]:
        """Queues every failed task of the job again (with their dependents that failed
        because of them), forgetting which agents failed them and the job's blacklist."""
        await self.get(job_id)
        requeued = await self._store.requeue_failed_tasks(
            job_id, self._clock.now(), JOB_TASK_ATTEMPTS
        )
        if requeued:
            await self._bus.notify([QUEUE_CHANNEL])
        return requeued

    async def parents(self, task_id: int) -> list[int]:
        return await self._store.task_parent_ids(task_id)

    async def failures(self, task_id: int) -> list[TaskFailure]:
        return await self._store.failures_of_task(task_id)

    async def blacklist(self, job_id: int) -> list[BlacklistEntry]:
        return await self._store.blacklist_of_job(job_id)

    async def record_output(self, agent: Agent, data: JSONValue) -> JobOutput | None:
        """Keeps an output of the job whose task the agent is running (the newest
        `output_bound` per job). Returns None when the agent runs no job's task."""
        if len(json.dumps(data)) > MAX_SETTINGS_BYTES:
            raise errors.TooLarge(f"an output must be at most {MAX_SETTINGS_BYTES} B of JSON")
        running = await self._store.list_tasks(
            TaskFilter(status=TaskStatus.ACTIVE, agent_id=agent.id, limit=10)
        )
        task = next((t for t in running if t.job_id is not None), None)
        if task is None or task.job_id is None:
            return None
        return await self._store.add_job_output(
            task.job_id, task.id, agent.id, self._clock.now(), data, self.output_bound
        )

    async def outputs(self, job_id: int, limit: int = 1000) -> list[JobOutput]:
        """Oldest first. Raises `NotFound`."""
        await self.get(job_id)
        return await self._store.list_job_outputs(job_id, limit)
