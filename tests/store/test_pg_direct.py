"""Hot statements on PostgreSQL run on the asyncpg connection directly (`Conn.rows`,
store/direct.py `PgPrepared`), past SQLAlchemy's execution. They must read and write
exactly what SQLAlchemy does, raise the errors it raises, and stay inside the
transaction SQLAlchemy's connection is in."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import bindparam, exc, insert, select

from taskfleet.core import errors
from taskfleet.core.models import NewTask, Outcome, TaskFilter, TaskStatus
from taskfleet.store import tables
from taskfleet.store.base import Conn, to_task
from taskfleet.store.direct import expanding
from taskfleet.store.queue import take_best_for
from taskfleet.store.sql import SqlStore, open_store
from taskfleet.store.task_statements import FINISH, GET
from tests.conftest import PostgresServer

NOW = 1_700_000_000.0
#: A hot statement that can break a constraint: a name is unique and at most 64 long.
ADD_ACCOUNT = (
    insert(tables.accounts)
    .values(
        name=bindparam("name"),
        role="admin",
        secret_hash="x",
        enabled=True,
        created_at=bindparam("now"),
    )
    .returning(tables.accounts.c.id, tables.accounts.c.name)
)


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[SqlStore]:
    store = await open_store(postgres_url)
    yield store
    await store.close()


async def _via_sqlalchemy(conn: Conn, statement: Any, params: dict[str, Any]) -> list[dict]:
    return [dict(row._mapping) for row in await conn.execute(statement, params)]


VALUES = [None, 0, 2.5, 0.1, -1e300, "text", "é\u2603", [1, "a", None], {"k": {"n": None}}, True]


@pytest.mark.parametrize("value", VALUES)
async def test_direct_rows_are_what_sqlalchemy_reads_and_writes(
    pg_store: SqlStore, value: object
) -> None:
    agent = await pg_store.add_agent("a1", None, NOW)
    (task,) = await pg_store.add_tasks(
        [NewTask(type="t", payload=value, timeout_seconds=1.25)], NOW
    )
    async with pg_store._read() as conn:  # what the insert (direct) returned
        assert [task] == [to_task(r) for r in await conn.execute(GET, {"task_id": task.id})]
    claimed = await pg_store.claim_task(agent, NOW + 0.5, 60.0)
    assert claimed is not None
    async with pg_store._read() as conn:
        direct = await conn.rows(GET, {"task_id": task.id})
        assert direct == await _via_sqlalchemy(conn, GET, {"task_id": task.id})
    assert to_task(direct[0]) == claimed  # what the claim (direct too) returned
    assert direct[0]["payload"] == value and direct[0]["result"] is None  # NULL
    assert direct[0]["timeout_seconds"] == 1.25 and direct[0]["lease_expires"] == NOW + 60.5
    params = {
        "task_id": task.id,
        "agent_id": agent.id,
        "attempt_no": claimed.attempt,
        "new_status": TaskStatus.COMPLETED.value,
        "new_result": value,
        "new_error": None,
        "now": NOW + 1.5,
    }
    async with pg_store._write() as conn:
        (finished,) = await conn.rows(FINISH[True], params)
        # What it wrote, read back by SQLAlchemy in the same transaction, is what it returned.
        assert [finished] == await _via_sqlalchemy(conn, GET, {"task_id": task.id})
    assert finished["result"] == value and finished["progress_percent"] == 100.0
    assert finished["lease_expires"] is None and finished["finished_at"] == NOW + 1.5


async def test_direct_rows_are_part_of_the_transaction(pg_store: SqlStore) -> None:
    """The first statement of a transaction may be a direct one: it must not run (and
    commit) on its own before SQLAlchemy sends BEGIN."""
    with pytest.raises(RuntimeError):
        async with pg_store._write() as conn:
            await conn.rows(ADD_ACCOUNT, {"name": "gone", "now": NOW})
            raise RuntimeError("half-way through a transaction")
    async with pg_store._write() as conn:
        (kept,) = await conn.rows(ADD_ACCOUNT, {"name": "kept", "now": NOW})
        seen = await conn.execute(select(tables.accounts.c.id))  # the same transaction
        assert [row.id for row in seen] == [kept["id"]]
    assert [a.name for a in await pg_store.list_accounts()] == ["kept"]


async def test_direct_rows_raise_what_sqlalchemy_raises(pg_store: SqlStore) -> None:
    async with pg_store._write() as conn:
        await conn.rows(ADD_ACCOUNT, {"name": "taken", "now": NOW})
    for params in ({"name": "taken", "now": NOW}, {"name": "x" * 65, "now": NOW}):
        raised = []
        for run in (Conn.rows, _via_sqlalchemy):
            async with pg_store._read() as conn:
                with pytest.raises(exc.DBAPIError) as caught:
                    await run(conn, ADD_ACCOUNT, params)
            raised.append((type(caught.value), type(caught.value.orig)))
            # And `Base._write` turns it into the same error as before.
            with pytest.raises(Exception) as refused:
                async with pg_store._write() as conn:
                    await run(conn, ADD_ACCOUNT, params)
            raised.append(type(refused.value))
        assert raised[:2] == raised[2:]
    assert raised[0] == (exc.DBAPIError, pg_store.engine.dialect.loaded_dbapi.Error)
    # A unique violation is an IntegrityError, refused as a conflict.
    with pytest.raises(exc.IntegrityError):
        async with pg_store._read() as conn:
            await conn.rows(ADD_ACCOUNT, {"name": "taken", "now": NOW})
    with pytest.raises(errors.Conflict):
        async with pg_store._write() as conn:
            await conn.rows(ADD_ACCOUNT, {"name": "taken", "now": NOW})
    # The connection is fine for the next caller.
    assert [a.name for a in await pg_store.list_accounts()] == ["taken"]


async def test_an_expanding_parameter_goes_through_sqlalchemy(pg_store: SqlStore) -> None:
    (task,) = await pg_store.add_tasks([NewTask(type="t")], NOW)
    by_ids = select(tables.tasks.c.id).where(
        tables.tasks.c.id.in_(bindparam("ids", expanding=True))
    )
    async with pg_store._read() as conn:
        assert await conn.rows(by_ids, {"ids": [task.id, task.id + 1]}) == [{"id": task.id}]
    assert await pg_store.list_tasks(TaskFilter(limit=5)) == [task]


async def test_a_typed_agents_claim_runs_directly(pg_store: SqlStore) -> None:
    """On PostgreSQL an agent's task types are one array parameter, so its claim is a
    statement compiled once; it still takes only tasks of its types."""
    agent = dataclasses.replace(await pg_store.add_agent("a1", None, NOW), task_types=("b", "c"))
    statement, _ = take_best_for(agent, 1, array=True)
    assert not expanding(statement)
    await pg_store.add_tasks([NewTask(type="a"), NewTask(type="c"), NewTask(type="b")], NOW)
    taken = await pg_store.claim_tasks([(agent, 60.0)] * 3, NOW)
    assert sorted(t.type for t in taken if t is not None) == ["b", "c"] and taken[2] is None
    assert [(await pg_store.claim_task(agent, NOW, 60.0))] == [None]


async def test_a_batch_of_outcomes_stores_what_sqlalchemy_reads(pg_store: SqlStore) -> None:
    """One statement records the batch (`FINISH_ALL`): the results go in as a JSON array
    parameter, so each must come out as it went in, NULL (None) included."""
    agent = await pg_store.add_agent("a1", None, NOW)
    await pg_store.add_tasks([NewTask(type="t") for _ in VALUES], NOW)
    claimed = await pg_store.claim_tasks([(agent, 60.0)] * len(VALUES), NOW)
    outcomes = [
        Outcome(t.id, agent.id, t.attempt, TaskStatus.COMPLETED, value)
        for t, value in zip(claimed, VALUES, strict=True)
        if t is not None
    ]
    answers = await pg_store.finish_tasks(outcomes, NOW + 1)
    async with pg_store._read() as conn:
        for answer, outcome in zip(answers, outcomes, strict=True):
            assert isinstance(answer, tuple) and answer[1]
            rows = await conn.execute(GET, {"task_id": outcome.task_id})
            assert [answer[0]] == [to_task(r) for r in rows]
            assert answer[0].result == outcome.result
        # None is SQL NULL, as SQLAlchemy stores it for this column (none_as_null).
        assert outcomes[0].result is None
        null = tables.tasks.c.result.is_(None)
        query = select(null).where(tables.tasks.c.id == outcomes[0].task_id)
        assert (await conn.execute(query)).scalar_one() is True


async def test_a_lost_connection_is_dropped_as_sqlalchemy_drops_it(
    pg_store: SqlStore, postgres_server: PostgresServer, postgres_url: str
) -> None:
    (task,) = await pg_store.add_tasks([NewTask(type="t")], NOW)
    assert await pg_store.get_task(task.id) == task
    admin = await postgres_server.admin()
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            postgres_url.rsplit("/", 1)[1],
        )
    finally:
        await admin.close()
    with pytest.raises(exc.DBAPIError) as caught:  # the pooled connection was lost
        await pg_store.get_task(task.id)
    assert caught.value.connection_invalidated
    assert await pg_store.get_task(task.id) == task  # on a new connection


async def test_a_batch_of_tasks_is_stored_as_sqlalchemy_reads_it(pg_store: SqlStore) -> None:
    """One statement inserts a batch (`INSERT_ALL`, arrays unnested in order): the tasks
    come back in the order given, as SQLAlchemy reads them, a lease included."""
    agent = await pg_store.add_agent("a1", None, NOW)
    new = [
        NewTask(type=f"t{i}", payload=value, priority=-i, timeout_seconds=i or None)
        for i, value in enumerate(VALUES)
    ]
    added = await pg_store.add_tasks(new, NOW, {2: (agent.id, NOW + 60)})
    assert [(t.type, t.payload) for t in added] == [(n.type, n.payload) for n in new]
    assert [t.id for t in added] == sorted(t.id for t in added)
    assert (added[2].status, added[2].lease_owner, added[2].attempt) == (
        TaskStatus.ACTIVE,
        agent.id,
        1,
    )
    async with pg_store._read() as conn:
        for task in added:
            rows = await conn.execute(GET, {"task_id": task.id})
            assert [task] == [to_task(r) for r in rows]
        null = select(tables.tasks.c.payload.is_(None)).where(tables.tasks.c.id == added[0].id)
        assert (await conn.execute(null)).scalar_one() is True  # None is SQL NULL


async def test_a_refused_batch_of_tasks_leaves_nothing(pg_store: SqlStore) -> None:
    with pytest.raises(errors.Conflict):  # no such job
        await pg_store.add_tasks([NewTask(type="t"), NewTask(type="t", job_id=999)], NOW)
    # Too long for the column: refused as the caller's error, not cut to length.
    with pytest.raises(errors.Invalid, match="too long or out of range"):
        await pg_store.add_tasks([NewTask(type="t"), NewTask(type="x" * 129)], NOW)
    with pytest.raises(errors.Invalid, match="too long or out of range"):  # a lone one too
        await pg_store.add_tasks([NewTask(type="x" * 129)], NOW)
    assert await pg_store.list_tasks(TaskFilter(limit=5)) == []
