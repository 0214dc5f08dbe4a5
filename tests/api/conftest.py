"""A real taskfleet server for API tests: uvicorn on a loopback port, in the test's loop.

`live` is a running server on a fresh SQLite file; mark a test with
`@pytest.mark.settings(lease_seconds=0.5, reap_interval=0.05)` to change its settings
(the marker is registered in pyproject.toml).
`start_server(db=..., **settings)` starts more (for instance on `db_url`, which runs the
test on SQLite and PostgreSQL). `module_live` is one server shared by a module's tests.
The server shares the test's event loop, so a test can also reach the app's services
(`live.services`) directly.

Admin clients log in through /api/v1/login and send the session token as Bearer; agent
clients send HTTP Basic credentials. Every client is closed before its server stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import argon2
import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI

from taskfleet import app as taskfleet_app
from taskfleet.config import Settings
from taskfleet.core.accounts import AccountService
from taskfleet.core.models import Account, Role
from taskfleet.services import Services
from taskfleet.store.sql import open_store

T = TypeVar("T")

START_SECONDS = 10.0
ADMIN_SECRET = "admin-secret"
AGENT_SECRET = "agent-secret"
PROBLEM = "application/problem+json"
#: Cheap argon2 parameters for accounts the tests create. Verification reads the
#: parameters from the hash, so the server checks these secrets quickly too.
FAST_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class _Server(uvicorn.Server):
    """uvicorn that reports readiness as an event, stops on an event instead of polling a
    flag every 0.1 s, and leaves signal handlers alone."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the default headers once
        await self.stopping.wait()

    def stop(self) -> None:
        self.should_exit = True
        self.stopping.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield  # pytest owns SIGINT; the fixture stops the server with `should_exit`


class Live:
    """A running server and the clients talking to it."""

    def __init__(self, app: FastAPI, settings: Settings, base_url: str) -> None:
        self.app = app
        self.settings = settings
        self.base_url = base_url
        self._clients: list[httpx.AsyncClient] = []

    @property
    def services(self) -> Services:
        found: Services = self.app.state.services
        return found

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """A client for this server (no credentials unless given), closed at teardown."""
        kwargs.setdefault("timeout", 30.0)
        client = httpx.AsyncClient(base_url=self.base_url, **kwargs)
        self._clients.append(client)
        return client

    async def add_account(self, name: str, role: Role, secret: str) -> Account:
        """Creates an account straight through the engine, with cheap hashing."""
        found = self.services
        accounts = AccountService(found.store, found.clock, hasher=FAST_HASHER)
        return await accounts.add(name, role, secret)

    async def admin(self, name: str = "root") -> httpx.AsyncClient:
        """A new admin account, logged in: its client sends the session token."""
        await self.add_account(name, Role.ADMIN, ADMIN_SECRET)
        return await self.login(name, ADMIN_SECRET)

    async def login(self, name: str, secret: str) -> httpx.AsyncClient:
        response = await self.client().post("/api/v1/login", json={"name": name, "secret": secret})
        assert response.status_code == 200, response.text
        token = response.json()["token"]
        return self.client(headers={"Authorization": f"Bearer {token}"})

    async def agent(self, name: str = "agent-1", hello: bool = False) -> httpx.AsyncClient:
        """A new agent account; its client sends HTTP Basic credentials."""
        await self.add_account(name, Role.AGENT, AGENT_SECRET)
        client = self.agent_client(name)
        if hello:
            response = await client.post("/api/v1/agent/hello", json={"version": "test"})
            assert response.status_code == 200, response.text
        return client

    def agent_client(self, name: str, secret: str = AGENT_SECRET) -> httpx.AsyncClient:
        return self.client(auth=httpx.BasicAuth(name, secret))

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        self._clients.clear()


ServerFactory = Callable[..., Awaitable[Live]]


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Live]:
    """Runs `taskfleet.app.build(settings)` under uvicorn until the block ends."""
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off only for sockets
    # whose proto says TCP, and with it on every response waits ~40 ms for a delayed ACK.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = dataclasses.replace(settings, host="127.0.0.1", port=port)
        app = taskfleet_app.build(settings)
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            **taskfleet_app.UVICORN_OPTIONS,
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
        live = Live(app, settings, f"http://127.0.0.1:{port}")
        try:
            await _until_ready(server, serving)
            yield live
        finally:
            await live.aclose()
            server.stop()
            await serving


async def _until_ready(server: _Server, serving: asyncio.Task[None]) -> None:
    ready = asyncio.create_task(server.ready.wait())
    done, _ = await asyncio.wait(
        {ready, serving}, timeout=START_SECONDS, return_when=asyncio.FIRST_COMPLETED
    )
    if ready not in done:
        ready.cancel()
        if serving in done:
            serving.result()  # raises what stopped it
        raise RuntimeError(f"the server did not start within {START_SECONDS} s")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; servers start on copies, which skips most of the migration."""
    path = tmp_path_factory.mktemp("template") / "taskfleet.db"

    async def migrate() -> None:
        await (await open_store(str(path))).close()

    # In a thread: this sync fixture must not run a loop in pytest-asyncio's thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, migrate()).result()
    return path


@pytest.fixture
async def start_server(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[ServerFactory]:
    """`await start_server(db=None, **settings)` starts a server, stopped after the test.

    Without `db`, each server gets a fresh SQLite file in `tmp_path`."""
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def start(db: str | None = None, **overrides: Any) -> Live:
            nonlocal count
            count += 1
            if db is None:
                db = str(shutil.copyfile(sqlite_template, tmp_path / f"taskfleet-{count}.db"))
            return await stack.enter_async_context(serve(Settings(db=db, **overrides)))

        yield start


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_live(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> AsyncIterator[Live]:
    """One server for a whole module, for tests that leave nothing behind that matters
    (bad input, the route sweep). The module needs
    `pytestmark = pytest.mark.asyncio(loop_scope="module")`."""
    db = shutil.copyfile(sqlite_template, tmp_path_factory.mktemp("module") / "taskfleet.db")
    async with serve(Settings(db=str(db))) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_admin(module_live: Live) -> httpx.AsyncClient:
    return await module_live.admin()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_agent(module_live: Live) -> httpx.AsyncClient:
    return await module_live.agent("agent-1", hello=True)


@pytest.fixture
async def live(request: pytest.FixtureRequest, start_server: ServerFactory) -> Live:
    marker = request.node.get_closest_marker("settings")
    return await start_server(**(marker.kwargs if marker else {}))


@pytest.fixture
async def admin(live: Live) -> httpx.AsyncClient:
    return await live.admin()


@pytest.fixture
async def agent(live: Live) -> httpx.AsyncClient:
    """The agent `agent-1`, which has said hello."""
    return await live.agent("agent-1", hello=True)


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float = 10.0, interval: float = 0.02
) -> T:
    """Polls `check` until it returns something truthy, or fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def parked(live: Live, channel: str) -> None:
    """Waits until a request is parked on the server's bus channel (a long-poll or a wait).

    Tests that prove a wake-up use this to post their change only after the waiter sleeps.
    Waiters sleep in a `LocalBus` (the PostgreSQL bus embeds one as `_local`), which keeps
    them in `_waiters`.
    """
    bus = live.services.bus
    local = getattr(bus, "_local", bus)

    async def waiting() -> bool:
        return channel in getattr(local, "_waiters", {})

    await eventually(waiting)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is problem+json with this status and a human-readable detail."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"], body
    return body


async def submit(admin: httpx.AsyncClient, **task: Any) -> dict[str, Any]:
    """Submits one task (type "echo" unless given) and returns it."""
    task.setdefault("type", "echo")
    response = await admin.post("/api/v1/tasks", json=task)
    assert response.status_code == 201, response.text
    created: list[dict[str, Any]] = response.json()
    assert len(created) == 1
    return created[0]


async def claim(agent: httpx.AsyncClient, wait: float = 0) -> dict[str, Any]:
    """Claims a task that must be there."""
    response = await agent.post("/api/v1/agent/claim", params={"wait": wait})
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task
