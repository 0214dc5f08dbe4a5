"""Fixtures shared by every test folder: a scrubbed environment, a real PostgreSQL server
started for the session, and one fresh database per test on SQLite or PostgreSQL.

PostgreSQL runs from the binaries in /usr/lib/postgresql/<version>/bin (or PATH), in a
temporary folder, on a free loopback port. PostgreSQL refuses to run as root, so when the
tests run as root (sessions, CI) `initdb` and `pg_ctl` run as the `postgres` user. Each
test gets `CREATE DATABASE test_<n> TEMPLATE taskfleet_template`, a copy of a database
migrated once per session, which is much faster than migrating every time.

Use `db_url` (parametrized over both backends), `store` (a `SqlStore` on `db_url`),
`sqlite_url` or `postgres_url` (one backend), or `postgres_server.create_database()`
when a test needs several databases.
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import pytest

from taskfleet.store.sql import SqlStore, open_store

T = TypeVar("T")

TEMPLATE_DB = "taskfleet_template"
PG_USER = "postgres"  #: the superuser initdb creates (trust authentication)
PG_START_SECONDS = 60


def pytest_configure(config: pytest.Config) -> None:
    # Settings come from TASKFLEET_* variables; a developer's shell must not leak into tests.
    for name in [n for n in os.environ if n.startswith("TASKFLEET_")]:
        del os.environ[name]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine to completion on its own loop in a thread, so that sync fixtures
    can do async work without touching the event loop pytest-asyncio manages."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coro)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="run-sync")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def _pg_bindir() -> Path:
    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for bindir in found:
        if (Path(bindir) / "initdb").exists() and (Path(bindir) / "pg_ctl").exists():
            return Path(bindir)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb).parent
    pytest.fail(
        "PostgreSQL is required: no initdb/pg_ctl in /usr/lib/postgresql/*/bin or on PATH. "
        "Install it (Debian/Ubuntu: apt-get install postgresql).",
        pytrace=False,
    )


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: switch to the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser") is None:
        pytest.fail("running as root needs `runuser` to start PostgreSQL", pytrace=False)
    return ["runuser", "-u", PG_USER, "--", *argv]


def _run(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}",
            pytrace=False,
        )


@dataclass
class PostgresServer:
    """A PostgreSQL server owned by the test session."""

    host: str
    port: int
    user: str = PG_USER
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str) -> str:
        """A `postgresql://` URL, as `open_store` and `Settings.db` take it."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    async def admin(self) -> asyncpg.Connection:
        """A connection to the `postgres` maintenance database; close it when done."""
        return await asyncpg.connect(self.url("postgres"))

    async def create_database(self, template: str | None = TEMPLATE_DB) -> str:
        """A new database, a copy of the migrated template (or empty with `template=None`);
        returns its URL."""
        name = f"test_{next(self._names)}"
        conn = await self.admin()
        try:
            source = template or "template0"
            # FILE_COPY (PostgreSQL 15+) beats the default WAL_LOG for a small template.
            strategy = " STRATEGY FILE_COPY" if conn.get_server_version().major >= 15 else ""
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"{strategy}')
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        """Drops a database made by `create_database`, even with connections left open."""
        name = url.rsplit("/", 1)[1]
        conn = await self.admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def create_database_sync(self, template: str | None = TEMPLATE_DB) -> str:
        """`create_database` for sync code (fixtures that start subprocesses, ...)."""
        return run_sync(self.create_database(template))

    def drop_database_sync(self, url: str) -> None:
        run_sync(self.drop_database(url))


def _start_postgres(bindir: Path, root: Path) -> int:
    """Creates a cluster in `root/data` and starts it; returns its port."""
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER)
        shutil.chown(sockets, PG_USER)
    initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", PG_USER]
    _run(_as_postgres([*initdb, "-E", "UTF8", "--no-locale", "--no-sync"]), root)
    log = root / "postgres.log"
    for _ in range(3):  # the free port may be taken before the server binds it
        port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        pg_ctl = [str(bindir / "pg_ctl"), "start", "-D", str(data), "-l", str(log)]
        start = [*pg_ctl, "-w", "-t", str(PG_START_SECONDS), "-o", options]
        if subprocess.run(_as_postgres(start), cwd=root, capture_output=True).returncode == 0:
            return port
    pytest.fail(f"PostgreSQL did not start; its log:\n{log.read_text()}", pytrace=False)


async def _make_template(server: PostgresServer) -> None:
    conn = await server.admin()
    try:
        await conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await conn.close()
    store = await open_store(server.url(TEMPLATE_DB))
    # Closing disposes the pool: CREATE DATABASE ... TEMPLATE needs the template idle.
    await store.close()
    conn = await server.admin()
    try:
        await conn.execute(f'ALTER DATABASE "{TEMPLATE_DB}" ALLOW_CONNECTIONS false')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the session, with `taskfleet_template` migrated."""
    bindir = _pg_bindir()
    # Not pytest's tmp_path: its parent is private to root, and the server runs as postgres.
    # A RAM disk where there is one: copying the template there is ten times faster.
    ram = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="taskfleet-pg-", dir=ram))
    try:
        port = _start_postgres(bindir, root)
        try:
            server = PostgresServer(host="127.0.0.1", port=port)
            run_sync(_make_template(server))
            yield server
        finally:
            subprocess.run(
                _as_postgres(
                    [str(bindir / "pg_ctl"), "stop", "-D", str(root / "data"), "-m", "immediate"]
                ),
                cwd=root,
                capture_output=True,
                check=False,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for this test."""
    url = await postgres_server.create_database()
    yield url
    await postgres_server.drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file path in this test's tmp_path (migrated when first opened)."""
    return str(tmp_path / "taskfleet.db")


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database URL, once per backend."""
    if request.param == "sqlite":
        yield str(tmp_path / "taskfleet.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = await server.create_database()
    yield url
    await server.drop_database(url)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlStore]:
    """A `SqlStore` on `db_url`, closed after the test."""
    opened = await open_store(db_url)
    yield opened
    await opened.close()
