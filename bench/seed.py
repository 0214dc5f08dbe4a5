"""Filling a taskfleet database directly, for speed: accounts, agents, a group, queued tasks.

Rows are built with the store's own tables and row mapping (`store.tables`,
`store.base.task_row`), so they are what the server itself would write. Every agent
account shares one cheap argon2 hash of `infra.SECRET`: the benches measure dispatch, not
password hashing (the server still verifies each agent once when it connects).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import argon2
import infra
from sqlalchemy import Engine, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from taskfleet.core.models import AgentStatus, NewTask, Role
from taskfleet.store.base import task_row
from taskfleet.store.engine import engine_url
from taskfleet.store.sql import SqlStore, open_store
from taskfleet.store.tables import accounts, agent_groups, agents, groups, tasks

CHUNK = 20_000  #: rows per INSERT batch


def cheap_hash(secret: str = infra.SECRET) -> str:
    return argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(secret)


async def migrate(db: str) -> None:
    """Creates the schema (the server would, at its start)."""
    store = await open_store(db)
    await store.close()


async def _execute(engine: Engine | AsyncEngine, statement: Any, rows: Sequence[Any]) -> None:
    if isinstance(engine, AsyncEngine):
        async with engine.begin() as aconn:
            await aconn.execute(statement, list(rows))
    else:
        with engine.begin() as conn:
            conn.execute(statement, list(rows))


async def _ids(engine: Engine | AsyncEngine, table: Any, names: Sequence[str]) -> dict[str, int]:
    query = select(table.c.id, table.c.name)
    found: dict[str, int] = {}
    for start in range(0, len(names), 5000):
        part = query.where(table.c.name.in_(names[start : start + 5000]))
        if isinstance(engine, AsyncEngine):
            async with engine.connect() as aconn:
                rows = (await aconn.execute(part)).all()
        else:
            with engine.connect() as conn:
                rows = conn.execute(part).all()
        found.update({r.name: r.id for r in rows})
    return found


async def add_agents(
    db: str, names: Sequence[str], group: str | None = None, admin: bool = False
) -> None:
    """Agent accounts with their agent records (offline, any task type), optionally all
    members of `group`; with `admin`, also an admin account `admin` (secret `pw`)."""
    store = await open_store(db)
    try:
        await _add_agents(store, names, group, admin)
    finally:
        await store.close()


async def _add_agents(
    store: SqlStore, names: Sequence[str], group: str | None, admin: bool
) -> None:
    engine, now, secret_hash = store.engine, time.time(), cheap_hash()
    account_rows = [
        {"name": n, "role": Role.AGENT.value, "secret_hash": secret_hash, "enabled": True}
        for n in names
    ]
    if admin:
        account_rows.append(
            {"name": "admin", "role": Role.ADMIN.value, "secret_hash": secret_hash, "enabled": True}
        )
    for row in account_rows:
        row["created_at"] = now
    for start in range(0, len(account_rows), CHUNK):
        await _execute(engine, insert(accounts), account_rows[start : start + CHUNK])
    account_ids = await _ids(engine, accounts, list(names))
    agent_rows = [
        {
            "name": n,
            "account_id": account_ids[n],
            "tags": [],
            "task_types": [],
            "status": AgentStatus.OFFLINE.value,
            "metadata": {},
            "created_at": now,
        }
        for n in names
    ]
    for start in range(0, len(agent_rows), CHUNK):
        await _execute(engine, insert(agents), agent_rows[start : start + CHUNK])
    if group is None:
        return
    await _execute(engine, insert(groups), [{"name": group, "created_at": now}])
    group_id = (await _ids(engine, groups, [group]))[group]
    agent_ids = await _ids(engine, agents, list(names))
    members = [{"agent_id": agent_ids[n], "group_id": group_id} for n in names]
    for start in range(0, len(members), CHUNK):
        await _execute(engine, insert(agent_groups), members[start : start + CHUNK])


def _task_rows(count: int, task_type: str) -> Iterator[dict[str, Any]]:
    now = time.time()
    template = task_row(NewTask(type=task_type), now)
    for _ in range(count):
        yield dict(template)


async def queue_tasks(db: str, count: int, task_type: str = "noop") -> None:
    """Adds `count` queued tasks (any agent, priority 0) in bulk: executemany on SQLite,
    COPY on PostgreSQL."""
    if count <= 0:
        return
    url = engine_url(db)
    if url.startswith("postgresql"):
        await _copy_tasks(db, count, task_type)
        return
    store = await open_store(db)
    try:
        rows = _task_rows(count, task_type)
        while batch := [row for _, row in zip(range(CHUNK), rows, strict=False)]:
            await _execute(store.engine, insert(tasks), batch)
    finally:
        await store.close()


async def _copy_tasks(db: str, count: int, task_type: str) -> None:
    import asyncpg

    template = task_row(NewTask(type=task_type), time.time())
    columns = [k for k, v in template.items() if v is not None]
    record = tuple(template[c] for c in columns)
    conn = await asyncpg.connect(db)
    try:
        for start in range(0, count, 100_000):
            size = min(100_000, count - start)
            await conn.copy_records_to_table("tasks", records=[record] * size, columns=columns)
        await conn.execute("ANALYZE tasks")
    finally:
        await conn.close()
