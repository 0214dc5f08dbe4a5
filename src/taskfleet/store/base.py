"""The connection discipline shared by every query module, and row-to-domain mapping.

SQLite runs on the event loop's own thread through SQLAlchemy's plain driver: a query on a
local file takes tens of microseconds, far less than handing it to a worker thread and
back (aiosqlite), which under load costs milliseconds of GIL hand-offs per query.
PostgreSQL goes through asyncpg. Query code sees one `Conn` either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, Executable, Row, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

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
from taskfleet.store.direct import Hot, InsertMany, expanding, pg_prepared, prepared_for

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

    async def rows(self, statement: Hot, params: dict[str, Any]) -> Sequence[Mapping[Any, Any]]:
        """The rows a hot statement returns, as mappings by column name, run on the driver
        directly: SQLite's (`Prepared`) or asyncpg (`PgPrepared`, `_pg_rows`)."""
        if expanding(statement):
            return [row._mapping for row in await self.execute(statement, params)]
        if isinstance(self._conn, AsyncConnection):
            return await self._pg_rows(statement, params)
        prepared = prepared_for(statement)
        try:
            return prepared.rows(self._conn.connection.driver_connection, params)
        except Exception as error:  # as SQLAlchemy raises it (sqlite3's IntegrityError is
            dbapi = self._conn.dialect.loaded_dbapi  # its exc.IntegrityError, ...)
            raise exc.DBAPIError.instance(
                prepared.sql, params, error, dbapi.Error, dialect=self._conn.dialect
            ) from error

    async def _pg_rows(self, statement: Hot, params: dict[str, Any]) -> list[dict[str, Any]]:
        """`PgPrepared` inside SQLAlchemy's transaction on this connection, with errors
        raised as SQLAlchemy raises them (so `Base._write` maps them the same way).

        SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement it
        runs: this starts it the same way first when the connection is not in
        autocommit. That is the adapter's private interface; without it (another
        SQLAlchemy) the statement goes through SQLAlchemy's execution.
        """
        assert isinstance(self._conn, AsyncConnection)
        pooled = await self._pooled()
        adapted = pooled.dbapi_connection
        begin = getattr(adapted, "_start_transaction", None)
        mutex = getattr(adapted, "_execute_mutex", None)
        if begin is None or mutex is None or not hasattr(adapted, "_transaction"):
            result = await self._conn.execute(statement, params)
            return [dict(row._mapping) for row in result]
        dialect = self._conn.dialect
        prepared = pg_prepared(statement, dialect)
        values = prepared.values(params)
        async with mutex:
            try:
                if adapted._transaction is None:  # type: ignore[union-attr]
                    await begin()  # nothing in autocommit
                return await prepared.rows(pooled.driver_connection, values)
            except Exception as error:
                raise await self._sqlalchemy_error(error, prepared.sql, values) from error

    async def _pooled(self) -> PoolProxiedConnection:
        """The pooled connection, without a trip through a greenlet when SQLAlchemy's
        connection holds a valid one (it does I/O only to replace an invalidated one)."""
        assert isinstance(self._conn, AsyncConnection)
        sync = self._conn.sync_connection
        if sync is not None and not sync.closed and not sync.invalidated:
            return sync.connection
        return await self._conn.get_raw_connection()

    async def _sqlalchemy_error(self, error: Exception, sql: str, values: list[Any]) -> Exception:
        """The exception SQLAlchemy would raise for an asyncpg error: the adapter's
        translation (a unique violation is its IntegrityError) wrapped as SQLAlchemy's
        (`exc.IntegrityError`), the connection invalidated if it was lost."""
        assert isinstance(self._conn, AsyncConnection)
        pooled = await self._pooled()
        dialect = self._conn.dialect
        dbapi = dialect.loaded_dbapi
        try:
            pooled.dbapi_connection._handle_exception(error)  # type: ignore[union-attr]
        except dbapi.Error as translated:
            lost = dialect.is_disconnect(translated, pooled.dbapi_connection, None)
            if lost:
                await self._conn.invalidate(translated)
            return exc.DBAPIError.instance(
                sql, values, translated, dbapi.Error, connection_invalidated=lost, dialect=dialect
            )
        except Exception as other:  # not a database error: as it was
            return other
        return error  # pragma: no cover (`_handle_exception` always raises)

    async def insert_many(
        self, inserter: InsertMany, rows: list[dict[str, Any]]
    ) -> Sequence[Mapping[Any, Any]]:
        """The rows inserted, in the order given, by `inserter` on SQLite's driver (on
        PostgreSQL one statement takes any number of rows: `tasks.INSERT_ALL`)."""
        assert not isinstance(self._conn, AsyncConnection), "SQLite only"
        return inserter.rows(self._conn.connection.driver_connection, rows)

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
        #: The same pool, its connections checked out in autocommit (and reset when
        #: returned): one step, where setting the option on a connection is another.
        self._autocommit_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if isinstance(engine, AsyncEngine)
            else None
        )
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
            except exc.DBAPIError as error:
                if _data_exception(error):
                    raise errors.Invalid(DATA_ERROR) from error
                raise

    @contextlib.asynccontextmanager
    async def _autocommit(self) -> AsyncIterator[Conn]:
        if self._autocommit_engine is not None:
            async with self._autocommit_engine.connect() as aconn:
                yield Conn(aconn)
        else:
            # The driver runs in autocommit mode already (store/engine.py): only our
            # BEGIN is left out, and the commit at the end has nothing to do.
            assert isinstance(self.engine, Engine)
            with self.engine.connect() as conn:
                conn.execution_options(sqlite_begin=None)
                yield Conn(conn)
                conn.commit()

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Conn]:
        """A connection for reads only.

        On PostgreSQL in autocommit: each statement its own implicit transaction, without
        the BEGIN and ROLLBACK that were two of a read's three round trips. A read
        transaction bought nothing: under READ COMMITTED every statement takes a snapshot
        of its own anyway, and no read holds locks or a cursor across statements. The
        pool resets the isolation level when the connection goes back (`_autocommit`).
        """
        try:
            if isinstance(self.engine, AsyncEngine):
                async with self._autocommit() as conn:
                    yield conn
            else:
                with self.engine.connect() as conn:
                    conn.execution_options(sqlite_begin="DEFERRED")
                    yield Conn(conn)
        except exc.DataError as error:
            raise errors.Invalid(DATA_ERROR) from error
        except exc.TimeoutError as error:
            raise errors.Busy(BUSY) from error
        except exc.DBAPIError as error:
            if _data_exception(error):
                raise errors.Invalid(DATA_ERROR) from error
            raise

    async def close(self) -> None:
        if isinstance(self.engine, AsyncEngine):
            await self.engine.dispose()
        else:
            self.engine.dispose()


def _data_exception(error: exc.DBAPIError) -> bool:
    """A value the database refuses (SQLSTATE class 22: too long, out of range) that the
    driver did not raise as a DataError: SQLAlchemy's asyncpg adapter raises "value too
    long for type character varying" as a plain database error."""
    return str(getattr(error.orig, "sqlstate", "") or "").startswith("22")


def to_account(row: Row[Any]) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        enabled=row.enabled,
        created_at=row.created_at,
    )


def to_agent(found: Row[Any], groups: tuple[str, ...] = ()) -> Agent:
    # By key: a Row's attributes cost about 1 us each, and 10,000 agents are read at once.
    row = found._mapping
    return Agent(
        id=row["id"],
        name=row["name"],
        account_id=row["account_id"],
        nickname=row["nickname"],
        tags=tuple(row["tags"] or ()),
        groups=groups,
        task_types=tuple(row["task_types"] or ()),
        status=AgentStatus(row["status"]),
        requested_status=AgentStatus(row["requested_status"]) if row["requested_status"] else None,
        requested_lazy=row["requested_lazy"],
        online=row["online"],
        last_seen=row["last_seen"],
        version=row["version"],
        platform=row["platform"],
        public_key=row["public_key"],
        verified=row["verified"],
        enabled=row["enabled"],
        metadata=row["metadata"] or {},
        created_at=row["created_at"],
        runs_schedules=row["runs_schedules"],
    )


#: A dict lookup, where calling the enum costs a microsecond: every task read goes by here.
_KINDS = {kind.value: kind for kind in TargetKind}
_STATUSES = {status.value: status for status in TaskStatus}


def to_task(found: Row[Any] | Mapping[Any, Any]) -> Task:
    row = found._mapping if isinstance(found, Row) else found  # by key, as in `to_agent`
    return Task(
        id=row["id"],
        type=row["type"],
        payload=row["payload"],
        target_kind=_KINDS[row["target_kind"]],
        target=row["target"],
        priority=row["priority"],
        status=_STATUSES[row["status"]],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        lease_owner=row["lease_owner"],
        lease_expires=row["lease_expires"],
        timeout_seconds=row["timeout_seconds"],
        progress=Progress(
            percent=row["progress_percent"], eta=row["progress_eta"], activity=row["activity"]
        ),
        result=row["result"],
        error=row["error"],
        job_id=row["job_id"],
        job_priority=row["job_priority"],
        fail_limit=row["fail_limit"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        claimed_at=row["claimed_at"],
        finished_at=row["finished_at"],
    )


def task_row(t: NewTask, now: float, lease: tuple[int, float] | None = None) -> dict[str, Any]:
    """The row that queues a new task (the inverse of `to_task`), or, with `lease` (agent
    id, expiry), that has it claimed by that agent as `queue.TAKE` would."""
    row: dict[str, Any] = {
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
        # Every row names the same columns: one executemany inserts them all.
        "lease_owner": None,
        "lease_expires": None,
        "claimed_at": None,
    }
    if lease is not None:
        row.update(
            status=TaskStatus.ACTIVE.value,
            attempt=1,
            lease_owner=lease[0],
            lease_expires=lease[1],
            claimed_at=now,
        )
    return row
