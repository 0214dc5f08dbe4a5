"""The connection discipline shared by every query module, and row-to-domain mapping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Row, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taskfleet.core import errors
from taskfleet.core.models import (
    Account,
    Agent,
    AgentStatus,
    Progress,
    Role,
    TargetKind,
    Task,
    TaskStatus,
)
from taskfleet.store.engine import is_sqlite


class Base:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sqlite = is_sqlite(engine)
        # SQLite has one writer: queue writers of this process here rather than in
        # SQLite's busy handler, which sleeps and retries.
        self._write_lock = asyncio.Lock() if self.sqlite else None

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite)."""
        lock = self._write_lock or contextlib.nullcontext()
        async with lock:
            try:
                async with self.engine.begin() as conn:
                    yield conn
            except exc.IntegrityError as error:
                raise errors.Conflict("that conflicts with an existing record") from error

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            if self.sqlite:
                await conn.execution_options(sqlite_begin="DEFERRED")
            yield conn

    async def close(self) -> None:
        await self.engine.dispose()


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
        created_at=row.created_at,
        updated_at=row.updated_at,
        claimed_at=row.claimed_at,
        finished_at=row.finished_at,
    )
