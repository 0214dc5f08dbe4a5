"""The connection discipline shared by every query module, and row-to-domain mapping.

SQLite runs on the event loop's own thread through SQLAlchemy's plain driver: a query on a
local file takes tens of microseconds, far less than handing it to a worker thread and
back (aiosqlite), which under load costs milliseconds of GIL hand-offs per query.
PostgreSQL goes through asyncpg. Query code sees one `Conn` either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, Executable, Row, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taskfleet.core import errors
from taskfleet.core.models import (
    Account,
    Agent,
    AgentStatus,
    NewTask,
    Progress,
    Role,
    TargetKind,
    Task,
    TaskStatus,
)

#: A safety net: services validate input, but a value the database still refuses (too
#: long, out of range) is the caller's error, not the server's.
DATA_ERROR = "a value is too long or out of range for the database"
#: Every pooled PostgreSQL connection stayed busy for the pool's timeout (a burst bigger
#: than the pool): the request did nothing, and may be sent again.
BUSY = "the server is busy: no database connection came free in time; try again"
Params = dict[str, Any] | list[dict[str, Any]] | None


class Conn:
    """One connection inside a transaction, awaited the same way on both backends."""

    def __init__(self, conn: Connection | AsyncConnection) -> None:
        self._conn = conn

    async def execute(self, statement: Executable, parameters: Params = None) -> CursorResult[Any]:
        if isinstance(self._conn, AsyncConnection):
            return await self._conn.execute(statement, parameters)
        return self._conn.execute(statement, parameters)

    async def run_sync(self, fn: Any) -> Any:
        if isinstance(self._conn, AsyncConnection):
            return await self._conn.run_sync(fn)
        return fn(self._conn)


class Base:
    def __init__(self, engine: Engine | AsyncEngine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer: queue writers of this process here rather than in
        # SQLite's busy handler, which sleeps and retries.
        self._write_lock = asyncio.Lock() if self.sqlite else None

    @contextlib.asynccontextmanager
    async def _write(self, *, one_statement: bool = False) -> AsyncIterator[Conn]:
        """One write transaction (BEGIN IMMEDIATE on SQLite).

        `one_statement`: the caller runs exactly one statement, which the database then
        runs as a transaction of its own, as atomic and as durable (committed when
        `execute` returns), without our BEGIN and COMMIT. On PostgreSQL those are two of
        the three round trips of a write, on the path from a submit to its agent; a
        SQLite write statement outside a transaction takes the write lock when it
        starts, as BEGIN IMMEDIATE does.
        """
        lock = self._write_lock or contextlib.nullcontext()
        async with lock:
            try:
                if one_statement:
                    async with self._autocommit() as conn:
                        yield conn
                elif isinstance(self.engine, AsyncEngine):
                    async with self.engine.begin() as aconn:
                        yield Conn(aconn)
                else:
                    with self.engine.begin() as conn:
                        yield Conn(conn)
            except exc.IntegrityError as error:
                raise errors.Conflict("that conflicts with an existing record") from error
            except exc.DataError as error:
                raise errors.Invalid(DATA_ERROR) from error
            except exc.TimeoutError as error:
                raise errors.Busy(BUSY) from error

    @contextlib.asynccontextmanager
    async def _autocommit(self) -> AsyncIterator[Conn]:
        if isinstance(self.engine, AsyncEngine):
            async with self.engine.connect() as aconn:
                await aconn.execution_options(isolation_level="AUTOCOMMIT")
                yield Conn(aconn)
        else:
            # The driver runs in autocommit mode already (store/engine.py): only our
            # BEGIN is left out, and the commit at the end has nothing to do.
            with self.engine.connect() as conn:
                conn.execution_options(sqlite_begin=None)
                yield Conn(conn)
                conn.commit()

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        try:
            if isinstance(self.engine, AsyncEngine):
                async with self.engine.connect() as aconn:
                    yield Conn(aconn)
            else:
                with self.engine.connect() as conn:
                    conn.execution_options(sqlite_begin="DEFERRED")
                    yield Conn(conn)
        except exc.DataError as error:
            raise errors.Invalid(DATA_ERROR) from error
        except exc.TimeoutError as error:
            raise errors.Busy(BUSY) from error

    async def close(self) -> None:
        if isinstance(self.engine, AsyncEngine):
            await self.engine.dispose()
        else:
            self.engine.dispose()


def to_account(row: Row[Any]) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        enabled=row.enabled,
        created_at=row.created_at,
    )


def to_agent(row: Row[Any], groups: tuple[str, ...] = ()) -> Agent:
    return Agent(
        id=row.id,
        name=row.name,
        account_id=row.account_id,
        nickname=row.nickname,
        tags=tuple(row.tags or ()),
        groups=groups,
        task_types=tuple(row.task_types or ()),
        status=AgentStatus(row.status),
        requested_status=AgentStatus(row.requested_status) if row.requested_status else None,
        requested_lazy=row.requested_lazy,
        online=row.online,
        last_seen=row.last_seen,
        version=row.version,
        platform=row.platform,
        public_key=row.public_key,
        verified=row.verified,
        enabled=row.enabled,
        metadata=row._mapping["metadata"] or {},
        created_at=row.created_at,
        runs_schedules=row.runs_schedules,
    )


def to_task(row: Row[Any]) -> Task:
    return Task(
        id=row.id,
        type=row.type,
        payload=row.payload,
        target_kind=TargetKind(row.target_kind),
        target=row.target,
        priority=row.priority,
        status=TaskStatus(row.status),
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        lease_owner=row.lease_owner,
        lease_expires=row.lease_expires,
        timeout_seconds=row.timeout_seconds,
        progress=Progress(
            percent=row.progress_percent, eta=row.progress_eta, activity=row.activity
        ),
        result=row.result,
        error=row.error,
        job_id=row.job_id,
        job_priority=row.job_priority,
        fail_limit=row.fail_limit,
        created_at=row.created_at,
        updated_at=row.updated_at,
        claimed_at=row.claimed_at,
        finished_at=row.finished_at,
    )


def task_row(t: NewTask, now: float) -> dict[str, Any]:
    """The row that queues a new task (the inverse of `to_task`)."""
    return {
        "job_id": t.job_id,
        "type": t.type,
        "payload": t.payload,
        "target_kind": t.target_kind.value,
        "target": t.target,
        "priority": t.priority,
        "job_priority": t.job_priority,
        "fail_limit": t.fail_limit,
        "status": TaskStatus.QUEUED.value,
        "attempt": 0,
        "max_attempts": t.max_attempts,
        "timeout_seconds": t.timeout_seconds,
        "activity": "",
        "created_at": now,
        "updated_at": now,
    }
