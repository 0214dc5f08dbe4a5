"""A PostgreSQL pool with no connection free in time makes a request `Busy` (a 503 on
every wire), never an unhandled error (a 500)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from taskfleet.api.problems import status_of
from taskfleet.core import errors
from taskfleet.core.models import NewTask
from taskfleet.store.engine import engine_url
from taskfleet.store.sql import SqlStore
from tests.conftest import PostgresServer


async def test_an_exhausted_pool_is_busy(postgres_server: PostgresServer) -> None:
    url = await postgres_server.create_database()
    engine = create_async_engine(engine_url(url), pool_size=1, max_overflow=0, pool_timeout=0.2)
    store = SqlStore(engine)
    try:
        async with engine.connect():  # the only connection, held
            with pytest.raises(errors.Busy) as read:
                await store.get_task(1)
            with pytest.raises(errors.Busy):
                await store.add_tasks([NewTask(type="t")], 0.0)
        assert status_of(read.value) == 503
        # Once a connection is free again, the same requests go through.
        assert len(await store.add_tasks([NewTask(type="t")], 0.0)) == 1
    finally:
        await engine.dispose()
        await postgres_server.drop_database(url)
