"""Opening the database: URLs, SQLite pragmas and transaction mode, migrations at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 10_000
PG_POOL_SIZE = 20  #: connections each server keeps open to PostgreSQL
PG_POOL_OVERFLOW = 10  #: more, opened only for a burst and closed after it
#: Serializes `alembic upgrade` across replicas sharing one PostgreSQL database.
MIGRATION_LOCK_ID = 7_413_551


def engine_url(url: str) -> str:
    """Accepts a file path, `sqlite:///…` or `postgresql://…`; names the driver we use:
    SQLite's own (on the event loop thread, see store/base.py) and asyncpg."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().absolute()}"
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"):
        parsed = parsed.set(drivername="sqlite")
    elif parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def open_engine(url: str, synchronous: str = "NORMAL") -> Engine | AsyncEngine:
    """Creates the engine. On SQLite: WAL, a busy timeout, and write transactions that start
    with BEGIN IMMEDIATE so that concurrent writers (other processes too) queue up instead
    of failing with "database is locked" half-way through a claim.

    `synchronous=NORMAL` in WAL mode survives a killed process (kill -9) without losing a
    committed transaction; only a power loss or OS crash may lose the last commits. Use
    FULL where that matters more than speed.
    """
    full_url = engine_url(url)
    if not full_url.startswith("sqlite"):
        # A pool deep enough that a busy server never opens and closes connections: the
        # default keeps 5 and closes each overflow connection when it is returned, so
        # under load every few queries paid for a new connection (and its TLS attempt).
        return create_async_engine(full_url, pool_size=PG_POOL_SIZE, max_overflow=PG_POOL_OVERFLOW)
    engine = create_engine(full_url)
    _configure_sqlite(engine, synchronous.upper())
    return engine


_BEGIN = {mode: f"BEGIN {mode}" for mode in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")}


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"unknown SQLite synchronous setting {synchronous!r}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode is not None:  # None: one statement, its own transaction (store/base.py)
            # On the driver: SQLAlchemy's execution of it cost more than SQLite's.
            driver = conn.connection.driver_connection
            assert driver is not None  # the connection is open: it is beginning
            driver.execute(_BEGIN[mode])


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
    # "heads": features may add migrations on branches of their own from 0001.
    command.upgrade(_alembic_config(connection), "heads")


async def migrate(engine: Engine | AsyncEngine) -> None:
    """Applies every pending Alembic migration (`alembic upgrade head`)."""
    if isinstance(engine, AsyncEngine):
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
    else:
        with engine.begin() as sync_conn:
            _upgrade(sync_conn)
