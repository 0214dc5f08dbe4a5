"""Queries for jobs, tasks, task logs and outputs.

Every state change is a compare-and-set that names the state it expects; zero rows
updated means the caller is stale (`Conflict`) or the task does not exist (`NotFound`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Row,
    Select,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)

from taskfleet.core import errors
from taskfleet.core.models import (
    Agent,
    Job,
    JSONValue,
    LogChunk,
    NewTask,
    Outcome,
    Output,
    Progress,
    Task,
    TaskFilter,
    TaskStatus,
)
from taskfleet.store.base import Base, Conn, task_row, to_task
from taskfleet.store.jobs import forget_failures
from taskfleet.store.queue import TAKE_CHOSEN, best_queued, take_best_for
from taskfleet.store.tables import jobs, task_logs, task_outputs, tasks
from taskfleet.store.task_statements import (
    ANY_QUEUED,
    EXTEND,
    EXTEND_WITH_PROGRESS,
    FINISH,
    FINISH_ALL,
    GET,
    INSERT_ALL,
    INSERT_MANY,
    INSERT_ONE,
    JSON_KEYS,
    RUNNING,
    TERMINAL,
    json_text,
)

REAP_BATCH = 500


def _lease(agent: Agent, now: float, lease_seconds: float) -> dict[str, Any]:
    """The parameters of `TAKE` that lease a task to the agent."""
    return {"agent_id": agent.id, "expires": now + lease_seconds, "now": now}


def _runs_of_one_agent(claims: Sequence[tuple[Agent, float]]) -> list[list[int]]:
    """The places of the claims, in runs of consecutive claims by one agent (one lease)."""
    runs: list[list[int]] = []
    for i, (agent, lease) in enumerate(claims):
        first, first_lease = claims[runs[-1][0]] if runs else (None, None)
        if first is not None and (first.id, first_lease) == (agent.id, lease):
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _order(task: Task) -> tuple[int, int, int]:
    """The claim's order: the best task first."""
    return (-task.job_priority, -task.priority, task.id)


def _filtered(query: TaskFilter) -> Select[Any]:
    stmt = select(tasks).where(tasks.c.id > query.after_id)
    if query.status is not None:
        stmt = stmt.where(tasks.c.status == query.status.value)
    if query.type is not None:
        stmt = stmt.where(tasks.c.type == query.type)
    if query.agent_id is not None:
        stmt = stmt.where(tasks.c.lease_owner == query.agent_id)
    if query.target is not None:
        stmt = stmt.where(tasks.c.target == query.target)
    if query.job_id is not None:
        stmt = stmt.where(tasks.c.job_id == query.job_id)
    return stmt.order_by(tasks.c.id).limit(query.limit)


class TaskQueries(Base):
    async def add_tasks(
        self,
        new: Sequence[NewTask],
        now: float,
        leases: Mapping[int, tuple[int, float]] | None = None,
    ) -> list[Task]:
        leases = leases or {}
        rows = [task_row(t, now, leases.get(i)) for i, t in enumerate(new)]
        if not rows:  # nothing to insert (core never asks: a submit has 1 to MAX_BATCH)
            return []
        if len(rows) == 1:  # one INSERT, a transaction of its own
            async with self._write(one_statement=True) as conn:
                return [to_task(r) for r in await conn.rows(INSERT_ONE, rows[0])]
        if not self.sqlite:  # one INSERT of them all, a transaction of its own
            params = {f"all_{key}": [row[key] for row in rows] for key in rows[0]}
            for key in JSON_KEYS:  # as SQLAlchemy's JSON type writes them (json.dumps)
                params[f"all_{key}"] = [json_text(v) for v in params[f"all_{key}"]]
            async with self._write(one_statement=True) as conn:
                added = await conn.rows(INSERT_ALL, params)
            return sorted(map(to_task, added), key=lambda task: task.id)
        # On SQLite: multi-row statements on the driver, which must commit all or none.
        async with self._write() as conn:
            return [to_task(r) for r in await conn.insert_many(INSERT_MANY, rows)]

    async def get_task(self, task_id: int) -> Task | None:
        async with self._read() as conn:
            return await self._get(conn, task_id)

    @staticmethod
    async def _get(conn: Conn, task_id: int) -> Task | None:
        for row in await conn.rows(GET, {"task_id": task_id}):
            return to_task(row)
        return None

    async def list_tasks(self, query: TaskFilter) -> list[Task]:
        async with self._read() as conn:
            return [to_task(r) for r in await conn.execute(_filtered(query))]

    async def any_queued(self) -> bool:
        async with self._read() as conn:
            return (await conn.execute(ANY_QUEUED)).first() is not None

    async def count_tasks_by_status(self) -> dict[TaskStatus, int]:
        query = select(tasks.c.status, func.count().label("n")).group_by(tasks.c.status)
        async with self._read() as conn:
            return {TaskStatus(r.status): int(r.n) for r in await conn.execute(query)}

    async def claim_task(self, agent: Agent, now: float, lease_seconds: float) -> Task | None:
        return (await self.claim_tasks([(agent, lease_seconds)], now))[0]

    async def claim_tasks(
        self, claims: Sequence[tuple[Agent, float]], now: float
    ) -> list[Task | None]:
        if len(claims) == 1:
            # A lone claim (an agent woken by a new task) is one statement, a transaction
            # of its own.
            ((agent, lease_seconds),) = claims
            statement, params = take_best_for(agent, 1, one=self.sqlite, array=not self.sqlite)
            async with self._write(one_statement=True) as conn:
                lease = _lease(agent, now, lease_seconds)
                found = await conn.rows(statement, {**params, **lease})
            return [to_task(found[0]) if found else None]
        taken: list[Task | None] = [None] * len(claims)
        hopeful = {agent.id for agent, _ in claims}  #: agents that may find more
        # One statement per run of claims of one agent (its free slots), which on
        # PostgreSQL locks only the rows it looks at: concurrent claimers skip them. The
        # free slots of one agent alone are one statement there, a transaction of its own.
        runs = _runs_of_one_agent(claims)
        async with self._write(one_statement=not self.sqlite and len(runs) == 1) as conn:
            for places in runs:
                agent, lease_seconds = claims[places[0]]
                if agent.id not in hopeful:
                    continue
                lease = _lease(agent, now, lease_seconds)
                rows: Sequence[Row[Any] | Mapping[Any, Any]]
                if self.sqlite:  # the only writer: nothing changes between the two
                    rows = [
                        row
                        for chosen in await best_queued(conn, agent, len(places))
                        for row in await conn.rows(TAKE_CHOSEN, {**lease, "chosen": chosen})
                    ]
                else:
                    statement, params = take_best_for(agent, len(places), array=True)
                    rows = await conn.rows(statement, {**params, **lease})
                if len(rows) < len(places):
                    hopeful.discard(agent.id)  # nothing more for it in this transaction
                for place, task in zip(
                    places, sorted(map(to_task, rows), key=_order), strict=False
                ):
                    taken[place] = task  # the best to the first claim; the rest get None
        return taken

    async def _stale(self, conn: Conn, task_id: int, attempt: int) -> errors.Error:
        task = await self._get(conn, task_id)
        if task is None:
            return errors.NotFound(f"no task {task_id}")
        return errors.Conflict(
            f"attempt {attempt} of task {task_id} is not current "
            f"(the task is {task.status.value}, attempt {task.attempt})"
        )

    async def extend_lease(
        self,
        task_id: int,
        agent_id: int,
        attempt: int,
        lease_until: float,
        progress: Progress | None,
        now: float,
    ) -> Task:
        params: dict[str, Any] = {
            "task_id": task_id,
            "agent_id": agent_id,
            "attempt_no": attempt,
            "until": lease_until,
            "now": now,
        }
        statement = EXTEND
        if progress is not None:
            statement = EXTEND_WITH_PROGRESS
            params.update(percent=progress.percent, eta=progress.eta, text=progress.activity[:1000])
        # One statement, a transaction of its own (a heartbeat): the read that explains a
        # refusal changes nothing, and would take a snapshot of its own in a transaction.
        async with self._write(one_statement=not self.sqlite) as conn:
            for row in await conn.rows(statement, params):
                return to_task(row)
            raise await self._stale(conn, task_id, attempt)

    async def finish_tasks(
        self, outcomes: Sequence[Outcome], now: float
    ) -> list[tuple[Task, bool] | errors.Error]:
        if not self.sqlite and len({o.task_id for o in outcomes}) == len(outcomes):
            return await self._finish_at_once(outcomes, now)
        answers: list[tuple[Task, bool] | errors.Error] = []
        async with self._write() as conn:
            for outcome in outcomes:
                answers.append(await self._finish(conn, outcome, now))
        return answers

    async def _finish_at_once(
        self, outcomes: Sequence[Outcome], now: float
    ) -> list[tuple[Task, bool] | errors.Error]:
        """The outcomes (of distinct tasks) recorded by one statement, without BEGIN and
        COMMIT: on PostgreSQL each of those is a round trip, and this is every agent's
        path to a result. Refused outcomes are then read one by one, as `_finish` does,
        each a statement of its own: in a transaction under READ COMMITTED they would take
        a snapshot of their own all the same, and they change nothing. A task reported
        twice in the batch takes `_finish`'s way: the second report must see the first.
        """
        if len(outcomes) == 1:
            (outcome,) = outcomes
            async with self._write(one_statement=True) as conn:
                return [await self._finish(conn, outcome, now)]
        # In id order, as the lease sweep (`expire_leases`) updates rows: looking the tasks
        # up by primary key (`FINISH_ALL`), the statement locks them in the sweep's order,
        # which keeps the two from deadlocking. The planner picks the join, so this is not
        # a guarantee; a deadlock is reported as before.
        ordered = sorted(outcomes, key=lambda o: o.task_id)
        params = {
            "task_ids": [o.task_id for o in ordered],
            "agent_ids": [o.agent_id for o in ordered],
            "attempts": [o.attempt for o in ordered],
            "statuses": [o.status.value for o in ordered],
            "results": [o.result for o in ordered],
            "errors": [o.error for o in ordered],
            "now": now,
        }
        async with self._write(one_statement=True) as conn:
            done = {row["id"]: row for row in await conn.rows(FINISH_ALL, params)}
            return [
                (to_task(done[o.task_id]), True)
                if o.task_id in done
                else await self._refused(conn, o)
                for o in outcomes
            ]

    async def finish_task(
        self,
        task_id: int,
        agent_id: int,
        attempt: int,
        status: TaskStatus,
        result: JSONValue,
        error: str | None,
        now: float,
    ) -> tuple[Task, bool]:
        outcome = Outcome(task_id, agent_id, attempt, status, result, error)
        (answer,) = await self.finish_tasks([outcome], now)
        if isinstance(answer, errors.Error):
            raise answer
        return answer

    async def _finish(self, conn: Conn, o: Outcome, now: float) -> tuple[Task, bool] | errors.Error:
        params = {
            "task_id": o.task_id,
            "agent_id": o.agent_id,
            "attempt_no": o.attempt,
            "new_status": o.status.value,
            "new_result": o.result,
            "new_error": o.error,
            "now": now,
        }
        for row in await conn.rows(FINISH[o.status is TaskStatus.COMPLETED], params):
            return to_task(row), True
        return await self._refused(conn, o)

    async def _refused(self, conn: Conn, o: Outcome) -> tuple[Task, bool] | errors.Error:
        """The answer to an outcome that changed nothing: a repeat, or stale."""
        task = await self._get(conn, o.task_id)
        if (
            task is not None
            and task.lease_owner == o.agent_id
            and task.attempt == o.attempt
            and task.status is o.status
            and task.result == o.result
            and task.error == o.error
        ):
            return task, False
        return await self._stale(conn, o.task_id, o.attempt)

    async def request_cancel(self, task_id: int, now: float) -> Task:
        current = select(tasks).where(tasks.c.id == task_id)
        if not self.sqlite:
            # Hold the row, so that a claim or finish cannot slip in before the update.
            current = current.with_for_update()
        async with self._write() as conn:
            found = (await conn.execute(current)).first()
            task = None if found is None else to_task(found)
            if task is None:
                raise errors.NotFound(f"no task {task_id}")
            if task.status.terminal:
                raise errors.Conflict(f"task {task_id} is already {task.status.value}")
            if task.status is TaskStatus.QUEUED:
                values: dict[str, object] = {
                    "status": TaskStatus.CANCELLED.value,
                    "finished_at": now,
                    "error": "cancelled before it ran",
                }
            else:
                values = {"status": TaskStatus.CANCEL_REQUESTED.value}
            row = (
                await conn.execute(
                    update(tasks)
                    .where(tasks.c.id == task_id, tasks.c.status == task.status.value)
                    .values(updated_at=now, **values)
                    .returning(tasks)
                )
            ).one()
        return to_task(row)

    async def requeue_task(self, task_id: int, now: float, extra_attempts: int) -> Task:
        # Attempt numbers never repeat (a late report from an earlier run must stay stale),
        # so a requeue raises the limit instead of resetting the counter.
        values: dict[str, object] = {
            "max_attempts": tasks.c.attempt + extra_attempts,
            "status": TaskStatus.QUEUED.value,
            "lease_owner": None,
            "lease_expires": None,
            "result": None,
            "error": None,
            "finished_at": None,
            "updated_at": now,
        }
        async with self._write() as conn:
            row = (
                await conn.execute(
                    update(tasks)
                    .where(tasks.c.id == task_id, tasks.c.status.in_(TERMINAL))
                    .values(values)
                    .returning(tasks)
                )
            ).first()
            if row is None:
                task = await self._get(conn, task_id)
                if task is None:
                    raise errors.NotFound(f"no task {task_id}")
                raise errors.Conflict(f"task {task_id} is {task.status.value}, not finished")
            await forget_failures(conn, [task_id])  # a fresh start: every agent may try again
        return to_task(row)

    async def release_agent_tasks(self, agent_id: int, now: float) -> list[Task]:
        owned = and_(tasks.c.lease_owner == agent_id)
        async with self._write() as conn:
            cancelled = await conn.execute(
                update(tasks)
                .where(owned, tasks.c.status == TaskStatus.CANCEL_REQUESTED.value)
                .values(
                    status=TaskStatus.CANCELLED.value,
                    finished_at=now,
                    updated_at=now,
                    lease_expires=None,
                    error="cancelled (the agent left)",
                )
                .returning(tasks)
            )
            released = [to_task(r) for r in cancelled]
            requeued = await conn.execute(
                update(tasks)
                .where(
                    owned,
                    tasks.c.status == TaskStatus.ACTIVE.value,
                    tasks.c.attempt < tasks.c.max_attempts,
                )
                .values(
                    status=TaskStatus.QUEUED.value,
                    lease_owner=None,
                    lease_expires=None,
                    updated_at=now,
                )
                .returning(tasks)
            )
            released += [to_task(r) for r in requeued]
            exhausted = await conn.execute(
                update(tasks)
                .where(owned, tasks.c.status == TaskStatus.ACTIVE.value)
                .values(
                    status=TaskStatus.FAILED.value,
                    finished_at=now,
                    updated_at=now,
                    lease_expires=None,
                    error="the agent left during the last attempt allowed",
                )
                .returning(tasks)
            )
            return released + [to_task(r) for r in exhausted]

    async def expire_leases(self, now: float) -> list[Task]:
        timed_out = and_(
            tasks.c.timeout_seconds.is_not(None),
            tasks.c.claimed_at + tasks.c.timeout_seconds < now,
        )
        expired = tasks.c.lease_expires < now
        query = (
            select(tasks)
            .where(tasks.c.status.in_(RUNNING), or_(expired, timed_out))
            .order_by(tasks.c.id)  # one lock order for every replica's sweep
            .limit(REAP_BATCH)
        )
        changed: list[Task] = []
        async with self._write() as conn:
            for row in list(await conn.execute(query)):
                task = to_task(row)
                values = self._after_expiry(task, now)
                done = (
                    await conn.execute(
                        update(tasks)
                        .where(
                            tasks.c.id == task.id,
                            tasks.c.attempt == task.attempt,
                            tasks.c.status == task.status.value,
                        )
                        .values(updated_at=now, **values)
                        .returning(tasks)
                    )
                ).first()
                if done is not None:
                    changed.append(to_task(done))
        return changed

    @staticmethod
    def _after_expiry(task: Task, now: float) -> dict[str, object]:
        finished = {"finished_at": now, "lease_expires": None}
        if (
            task.timeout_seconds is not None
            and task.claimed_at is not None
            and (task.claimed_at + task.timeout_seconds < now)
        ):
            return {
                "status": TaskStatus.FAILED.value,
                **finished,
                "error": f"timed out after {task.timeout_seconds:g} s "
                f"(attempt {task.attempt} of {task.max_attempts})",
            }
        if task.status is TaskStatus.CANCEL_REQUESTED:
            return {
                "status": TaskStatus.CANCELLED.value,
                **finished,
                "error": "cancelled (the agent stopped reporting)",
            }
        if task.attempt >= task.max_attempts:
            return {
                "status": TaskStatus.FAILED.value,
                **finished,
                "error": f"lease expired on attempt {task.attempt} of {task.max_attempts}: "
                "the agent stopped reporting, and no attempts are left",
            }
        return {"status": TaskStatus.QUEUED.value, "lease_owner": None, "lease_expires": None}

    async def append_log(self, task_id: int, attempt: int, time: float, text: str) -> None:
        async with self._write() as conn:
            await conn.execute(
                insert(task_logs).values(task_id=task_id, attempt=attempt, time=time, text=text)
            )

    async def read_log(self, task_id: int, after_id: int, limit: int) -> list[LogChunk]:
        query = (
            select(task_logs)
            .where(task_logs.c.task_id == task_id, task_logs.c.id > after_id)
            .order_by(task_logs.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            return [
                LogChunk(id=r.id, task_id=r.task_id, attempt=r.attempt, time=r.time, text=r.text)
                for r in await conn.execute(query)
            ]

    async def add_output(self, task_id: int, time: float, data: JSONValue) -> Output:
        async with self._write() as conn:
            new_id = (
                await conn.execute(
                    insert(task_outputs)
                    .values(task_id=task_id, time=time, data=data)
                    .returning(task_outputs.c.id)
                )
            ).scalar_one()
        return Output(id=new_id, task_id=task_id, time=time, data=data)

    async def list_outputs(self, task_id: int) -> list[Output]:
        query = (
            select(task_outputs)
            .where(task_outputs.c.task_id == task_id)
            .order_by(task_outputs.c.id)
        )
        async with self._read() as conn:
            return [
                Output(id=r.id, task_id=r.task_id, time=r.time, data=r.data)
                for r in await conn.execute(query)
            ]

    async def get_job(self, job_id: int) -> Job | None:
        async with self._read() as conn:
            row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).first()
        return None if row is None else _to_job(row)


def _to_job(row: Any) -> Job:
    return Job(
        id=row.id,
        name=row.name,
        type=row.type,
        priority=row.priority,
        settings=row.settings or {},
        created_at=row.created_at,
    )
