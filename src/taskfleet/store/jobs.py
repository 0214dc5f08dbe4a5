"""Queries for jobs of dependent tasks: submission in one transaction, the rules that keep
a task from an agent (unfinished parents, an earlier failure, the job's blacklist), failed
attempts and what they lead to, and the outputs a job produced.

Every state change is a compare-and-set that names the state it expects, as in `tasks.py`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, distinct, func, insert, select, update

from taskfleet.core import errors
from taskfleet.core.models import (
    BlacklistEntry,
    Job,
    JobSummary,
    NewTask,
    Task,
    TaskFailure,
    TaskStatus,
)
from taskfleet.store.base import Base, Conn, task_row, to_task
from taskfleet.store.tables import (
    agents,
    job_blacklist,
    jobs,
    task_failures,
    task_parents,
    tasks,
)
from taskfleet.store.task_statements import RUNNING


async def forget_failures(conn: Conn, task_ids: Sequence[int]) -> None:
    """Clears the failures of requeued tasks, so every agent may try them again."""
    await conn.execute(delete(task_failures).where(task_failures.c.task_id.in_(task_ids)))


def _current(task_id: int, agent_id: int, attempt: int) -> ColumnElement[bool]:
    return and_(
        tasks.c.id == task_id,
        tasks.c.lease_owner == agent_id,
        tasks.c.attempt == attempt,
        tasks.c.status.in_(RUNNING),
    )


def _hard_failure(task: Task, error: str, failed_by: set[int], left: set[int]) -> str | None:
    """The message a failure ends the task with, or None when it may go to another agent."""
    if task.fail_limit <= 1:
        return error
    last = f"; the last failure: {error}"
    if task.status is TaskStatus.CANCEL_REQUESTED:
        return error
    if len(failed_by) >= task.fail_limit:
        return f"failed by {len(failed_by)} agents (the limit is {task.fail_limit}){last}"
    if not left:
        return f"no agent left to run it: each one that could failed it or is blacklisted{last}"
    if task.attempt >= task.max_attempts:
        return f"failed on attempt {task.attempt} of {task.max_attempts}{last}"
    return None


def _failed(error: str, now: float) -> dict[str, object]:
    return {
        "status": TaskStatus.FAILED.value,
        "error": error,
        "finished_at": now,
        "updated_at": now,
        "lease_expires": None,
    }


def _requeued(now: float) -> dict[str, object]:
    return {
        "status": TaskStatus.QUEUED.value,
        "lease_owner": None,
        "lease_expires": None,
        "updated_at": now,
    }


def _to_job(row: Any) -> Job:
    return Job(
        id=row.id,
        name=row.name,
        type=row.type,
        priority=row.priority,
        settings=row.settings or {},
        created_at=row.created_at,
    )


class JobQueries(Base):
    async def add_job_with_tasks(
        self,
        job: Job,
        new: Sequence[NewTask],
        edges: Sequence[tuple[int, int]],
        now: float,
    ) -> tuple[Job, list[Task]]:
        values = {
            "name": job.name,
            "type": job.type,
            "priority": job.priority,
            "settings": job.settings,
            "created_at": now,
        }
        async with self._write() as conn:
            stored = _to_job(
                (await conn.execute(insert(jobs).values(values).returning(jobs))).one()
            )
            rows = [{**task_row(t, now), "job_id": stored.id} for t in new]
            created: list[Task] = []
            if rows:  # a job may start empty; its tasks come later with its job_id
                inserted = await conn.execute(
                    insert(tasks).returning(tasks, sort_by_parameter_order=True), rows
                )
                created = [to_task(r) for r in inserted]
            if edges:
                links = [
                    {"task_id": created[child].id, "parent_id": created[parent].id}
                    for child, parent in edges
                ]
                await conn.execute(insert(task_parents), links)
        return stored, created

    async def job_summaries(self, limit: int, job_id: int | None = None) -> list[JobSummary]:
        query = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if job_id is not None:
            query = query.where(jobs.c.id == job_id)
        async with self._read() as conn:
            found = [_to_job(r) for r in await conn.execute(query)]
            counted = (
                select(tasks.c.job_id, tasks.c.status, func.count().label("n"))
                .where(tasks.c.job_id.in_([j.id for j in found]))
                .group_by(tasks.c.job_id, tasks.c.status)
            )
            counts: dict[int, dict[TaskStatus, int]] = {}
            for row in await conn.execute(counted):
                counts.setdefault(row.job_id, {})[TaskStatus(row.status)] = int(row.n)
        return [JobSummary(job=j, counts=counts.get(j.id, {})) for j in found]

    async def task_parent_ids(self, task_id: int) -> list[int]:
        query = (
            select(task_parents.c.parent_id)
            .where(task_parents.c.task_id == task_id)
            .order_by(task_parents.c.parent_id)
        )
        async with self._read() as conn:
            return [r.parent_id for r in await conn.execute(query)]

    async def failures_of_task(self, task_id: int) -> list[TaskFailure]:
        query = (
            select(task_failures, agents.c.name)
            .join(agents, agents.c.id == task_failures.c.agent_id, isouter=True)
            .where(task_failures.c.task_id == task_id)
            .order_by(task_failures.c.attempt)
        )
        async with self._read() as conn:
            return [
                TaskFailure(
                    task_id=r.task_id,
                    attempt=r.attempt,
                    agent_id=r.agent_id,
                    agent_name=r.name,
                    time=r.time,
                    error=r.error,
                )
                for r in await conn.execute(query)
            ]

    async def blacklist_of_job(self, job_id: int) -> list[BlacklistEntry]:
        query = (
            select(job_blacklist, agents.c.name)
            .join(agents, agents.c.id == job_blacklist.c.agent_id)
            .where(job_blacklist.c.job_id == job_id)
            .order_by(job_blacklist.c.task_type, agents.c.name)
        )
        async with self._read() as conn:
            return [
                BlacklistEntry(
                    job_id=r.job_id,
                    task_type=r.task_type,
                    agent_id=r.agent_id,
                    agent_name=r.name,
                    time=r.created_at,
                )
                for r in await conn.execute(query)
            ]

    # -- failures ---------------------------------------------------------------------------

    async def fail_task(
        self,
        task_id: int,
        agent_id: int,
        attempt: int,
        error: str,
        now: float,
        *,
        blacklist_threshold: int,
        candidates: Collection[int],
    ) -> tuple[Task, bool]:
        current = select(tasks).where(_current(task_id, agent_id, attempt))
        if not self.sqlite:
            current = current.with_for_update()
        async with self._write() as conn:
            row = (await conn.execute(current)).first()
            if row is None:
                return await self._repeated_failure(conn, task_id, agent_id, attempt), False
            task = to_task(row)
            await conn.execute(
                insert(task_failures).values(
                    task_id=task_id, attempt=attempt, agent_id=agent_id, time=now, error=error
                )
            )
            banned = await self._blacklist(conn, task, agent_id, blacklist_threshold, now)
            failed_by = set(
                (
                    await conn.execute(
                        select(task_failures.c.agent_id).where(task_failures.c.task_id == task_id)
                    )
                ).scalars()
            )
            left = set(candidates) - failed_by - banned
            final = _hard_failure(task, error, failed_by, left)
            values = _requeued(now) | {"error": error} if final is None else _failed(final, now)
            done = to_task(
                (
                    await conn.execute(
                        update(tasks)
                        .where(tasks.c.id == task_id, tasks.c.status == task.status.value)
                        .values(values)
                        .returning(tasks)
                    )
                ).one()
            )
            if final is not None:
                await self._fail_dependents(conn, [task_id], now)
            if task.job_id is not None and agent_id in banned and not set(candidates) - banned:
                await self._fail_stranded(conn, task, now)
        return done, True

    async def _repeated_failure(
        self, conn: Conn, task_id: int, agent_id: int, attempt: int
    ) -> Task:
        """The task, when this exact failure was already recorded; else why it is stale."""
        row = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).first()
        if row is None:
            raise errors.NotFound(f"no task {task_id}")
        task = to_task(row)
        seen = select(task_failures.c.agent_id).where(
            task_failures.c.task_id == task_id, task_failures.c.attempt == attempt
        )
        if (await conn.execute(seen)).scalar() == agent_id:
            return task
        raise errors.Conflict(
            f"attempt {attempt} of task {task_id} is not current "
            f"(the task is {task.status.value}, attempt {task.attempt})"
        )

    async def _blacklist(
        self, conn: Conn, task: Task, agent_id: int, threshold: int, now: float
    ) -> set[int]:
        """Blacklists the agent for the task's job and type once it has failed `threshold`
        of those tasks; returns every agent blacklisted for them."""
        if task.job_id is None:
            return set()
        of_type = and_(
            job_blacklist.c.job_id == task.job_id, job_blacklist.c.task_type == task.type
        )
        banned = set(
            (await conn.execute(select(job_blacklist.c.agent_id).where(of_type))).scalars()
        )
        if threshold <= 0 or agent_id in banned:
            return banned
        failed = (
            select(func.count(distinct(task_failures.c.task_id)))
            .join(tasks, tasks.c.id == task_failures.c.task_id)
            .where(
                task_failures.c.agent_id == agent_id,
                tasks.c.job_id == task.job_id,
                tasks.c.type == task.type,
            )
        )
        if (await conn.execute(failed)).scalar_one() >= threshold:
            entry = {"job_id": task.job_id, "task_type": task.type, "agent_id": agent_id}
            await conn.execute(insert(job_blacklist).values(created_at=now, **entry))
            banned.add(agent_id)
        return banned

    async def _fail_stranded(self, conn: Conn, task: Task, now: float) -> None:
        """Every agent that takes this type is blacklisted for the job: its queued tasks of
        that type can never run, so they fail now rather than wait forever."""
        error = f"no agent left to run it: every agent taking {task.type!r} is blacklisted"
        stranded = await conn.execute(
            update(tasks)
            .where(
                tasks.c.job_id == task.job_id,
                tasks.c.type == task.type,
                tasks.c.status == TaskStatus.QUEUED.value,
            )
            .values(_failed(error, now))
            .returning(tasks.c.id)
        )
        await self._fail_dependents(conn, list(stranded.scalars()), now)

    async def _fail_dependents(self, conn: Conn, failed: list[int], now: float) -> None:
        """Queued tasks that depend, directly or not, on a failed task can never run."""
        while failed:
            children = select(task_parents.c.task_id).where(task_parents.c.parent_id.in_(failed))
            done = await conn.execute(
                update(tasks)
                .where(tasks.c.id.in_(children), tasks.c.status == TaskStatus.QUEUED.value)
                .values(_failed("a task it depends on failed", now))
                .returning(tasks.c.id)
            )
            failed = list(done.scalars())

    async def requeue_failed_tasks(
        self, job_id: int, now: float, extra_attempts: int
    ) -> list[Task]:
        failed = and_(tasks.c.job_id == job_id, tasks.c.status == TaskStatus.FAILED.value)
        async with self._write() as conn:
            ids = list((await conn.execute(select(tasks.c.id).where(failed))).scalars())
            if not ids:
                return []
            await forget_failures(conn, ids)
            await conn.execute(delete(job_blacklist).where(job_blacklist.c.job_id == job_id))
            values = _requeued(now) | {
                "max_attempts": tasks.c.attempt + extra_attempts,
                "result": None,
                "error": None,
                "finished_at": None,
            }
            done = await conn.execute(update(tasks).where(failed).values(values).returning(tasks))
            return sorted((to_task(r) for r in done), key=lambda t: t.id)

    async def release_task(self, task_id: int, agent_id: int, attempt: int, now: float) -> Task:
        async with self._write() as conn:
            row = (
                await conn.execute(select(tasks).where(_current(task_id, agent_id, attempt)))
            ).first()
            if row is None:
                raise await self._not_current(conn, task_id, attempt)
            task = to_task(row)
            if task.status is TaskStatus.CANCEL_REQUESTED:
                values = _failed("cancelled (the agent gave it back)", now)
                values["status"] = TaskStatus.CANCELLED.value
            elif task.attempt >= task.max_attempts:
                values = _failed("the agent gave it back during the last attempt allowed", now)
            else:
                values = _requeued(now)
            done = await conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id, tasks.c.status == task.status.value)
                .values(values)
                .returning(tasks)
            )
            return to_task(done.one())

    @staticmethod
    async def _not_current(conn: Conn, task_id: int, attempt: int) -> errors.Error:
        row = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).first()
        if row is None:
            return errors.NotFound(f"no task {task_id}")
        return errors.Conflict(f"attempt {attempt} of task {task_id} is not current")
