"""Writes of one statement run without a BEGIN and COMMIT of ours (`Base._write` with
`one_statement`): a lone submit and a lone claim. They must be as durable and as atomic
as a transaction, map errors the same way, and leave the pooled connection transactional
for the next caller. Run against SQLite and PostgreSQL (`store` is parametrized)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select

from taskfleet.core import errors
from taskfleet.core.models import NewTask, TaskFilter, TaskStatus
from taskfleet.store import tables
from taskfleet.store.base import task_row
from taskfleet.store.sql import SqlStore, open_store

NOW = 1_700_000_000.0


async def test_a_lone_task_is_committed_when_add_tasks_returns(
    store: SqlStore, db_url: str
) -> None:
    [task] = await store.add_tasks([NewTask(type="t", payload={"n": 1})], NOW)
    other = await open_store(db_url)  # another pool: it sees only what was committed
    try:
        seen = await other.get_task(task.id)
    finally:
        await other.close()
    assert seen is not None and seen.status is TaskStatus.QUEUED and seen.payload == {"n": 1}


async def test_a_lone_claim_is_committed_when_it_returns(store: SqlStore, db_url: str) -> None:
    agent = await store.add_agent("a1", None, NOW)
    [task] = await store.add_tasks([NewTask(type="t")], NOW)
    claimed = await store.claim_task(agent, NOW, 60.0)
    assert claimed is not None and claimed.id == task.id and claimed.attempt == 1
    other = await open_store(db_url)
    try:
        seen = await other.get_task(task.id)
    finally:
        await other.close()
    assert seen is not None and seen.status is TaskStatus.ACTIVE and seen.lease_owner == agent.id
    assert await store.claim_task(agent, NOW, 60.0) is None  # nothing left: nothing written


async def test_a_refused_lone_insert_is_a_conflict_and_leaves_nothing(store: SqlStore) -> None:
    with pytest.raises(errors.Conflict):
        await store.add_tasks([NewTask(type="t", job_id=999)], NOW)  # no such job
    assert await store.list_tasks(TaskFilter(limit=10)) == []


async def test_a_transaction_after_a_lone_statement_still_rolls_back(store: SqlStore) -> None:
    """The pool hands the same connection out again: it must not stay in autocommit."""
    await store.add_tasks([NewTask(type="kept")], NOW)
    with pytest.raises(RuntimeError):
        async with store._write() as conn:
            await conn.execute(insert(tables.tasks).values(task_row(NewTask(type="gone"), NOW)))
            raise RuntimeError("half-way through a transaction")
    assert [t.type for t in await store.list_tasks(TaskFilter(limit=10))] == ["kept"]


async def test_reads_on_postgresql_are_statements_of_their_own(postgres_url: str) -> None:
    """A read sends no BEGIN: each statement is its own transaction, with a snapshot and
    a clock of its own (inside one transaction `now()` would stand still)."""
    store = await open_store(postgres_url)
    try:
        async with store._read() as conn:
            first = (await conn.execute(select(func.now()))).scalar_one()
            second = (await conn.execute(select(func.now()))).scalar_one()
        assert second > first
        # The pool hands the connection out again: writes must still be transactions.
        with pytest.raises(RuntimeError):
            async with store._write() as conn:
                await conn.execute(insert(tables.tasks).values(task_row(NewTask(type="g"), NOW)))
                raise RuntimeError("half-way through a transaction")
        assert await store.list_tasks(TaskFilter(limit=10)) == []
    finally:
        await store.close()


async def test_one_agents_slots_and_a_heartbeat_are_committed_when_they_return(
    store: SqlStore, db_url: str
) -> None:
    """On PostgreSQL the free slots of one agent are one statement, and so is a
    heartbeat: each a transaction of its own, committed when the call returns."""
    agent = await store.add_agent("a1", None, NOW)
    await store.add_tasks([NewTask(type="t") for _ in range(2)], NOW)
    first, second, none = await store.claim_tasks([(agent, 60.0)] * 3, NOW)
    assert first is not None and second is not None and none is None
    await store.extend_lease(first.id, agent.id, first.attempt, NOW + 600, None, NOW + 1)
    with pytest.raises(errors.Conflict):  # a stale heartbeat is still refused
        await store.extend_lease(first.id, agent.id, first.attempt + 1, NOW + 9, None, NOW + 1)
    other = await open_store(db_url)
    try:
        seen = [await other.get_task(t.id) for t in (first, second)]
    finally:
        await other.close()
    assert [(t.status, t.lease_owner) for t in seen if t is not None] == [
        (TaskStatus.ACTIVE, agent.id),
        (TaskStatus.ACTIVE, agent.id),
    ]
    assert seen[0] is not None and seen[0].lease_expires == NOW + 600
