"""`alembic upgrade head` on an empty database gives exactly the schema of `tables.metadata`,
on both backends, and the migrations walk down and up again cleanly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from taskfleet.store.engine import MIGRATIONS, migrate, open_engine
from taskfleet.store.tables import metadata
from tests.conftest import PostgresServer

T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Engine | AsyncEngine]:
    """An engine on a database with no tables at all."""
    if request.param == "sqlite":
        engine = open_engine(str(tmp_path / "empty.db"))
        yield engine
        await dispose(engine)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = await server.create_database(template=None)
    engine = open_engine(url)
    yield engine
    await dispose(engine)
    await server.drop_database(url)


async def dispose(engine: Engine | AsyncEngine) -> None:
    if isinstance(engine, AsyncEngine):
        await engine.dispose()
    else:
        engine.dispose()


async def on_connection(
    engine: Engine | AsyncEngine, fn: Callable[[Connection], T], *, begin: bool = False
) -> T:
    """Runs `fn` with a plain connection, whichever engine the store opened."""
    if isinstance(engine, AsyncEngine):
        async with engine.begin() if begin else engine.connect() as aconn:
            return await aconn.run_sync(fn)
    with engine.begin() if begin else engine.connect() as conn:
        return fn(conn)


def _alembic(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


def _revisions(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


def _downgrade(connection: Connection) -> None:
    command.downgrade(_alembic(connection), "base")


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_head_gives_the_declared_schema(engine: Engine | AsyncEngine) -> None:
    await migrate(engine)

    assert await on_connection(engine, _schema_diff) == []
    heads = set(ScriptDirectory(str(MIGRATIONS)).get_heads())
    assert await on_connection(engine, _revisions) == heads


async def test_migrating_twice_changes_nothing(engine: Engine | AsyncEngine) -> None:
    await migrate(engine)
    await migrate(engine)

    assert await on_connection(engine, _schema_diff) == []


async def test_downgrade_to_base_and_up_again(engine: Engine | AsyncEngine) -> None:
    await migrate(engine)

    await on_connection(engine, _downgrade, begin=True)
    assert await on_connection(engine, _tables) == {"alembic_version"}

    await migrate(engine)
    assert await on_connection(engine, _schema_diff) == []
