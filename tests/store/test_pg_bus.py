"""The PostgreSQL bus: replicas sharing one database wake each other's waiters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

import pytest

from taskfleet.app import build
from taskfleet.bus.local import LocalBus
from taskfleet.bus.postgres import PostgresBus, asyncpg_dsn, payloads
from taskfleet.config import Settings
from taskfleet.core.models import NewTask, TargetKind
from taskfleet.services import wire
from taskfleet.store.sql import open_store
from tests.conftest import PostgresServer

WOKEN_SECONDS = 10.0  # generous: a wake-up normally takes milliseconds
QUIET_SECONDS = 0.3  # how long a waiter must stay asleep to count as not woken

BusFactory = Callable[[], Awaitable[PostgresBus]]


@pytest.fixture
async def start_bus(postgres_url: str) -> AsyncIterator[BusFactory]:
    """Starts buses (replicas) on one database; all are closed after the test."""
    started: list[PostgresBus] = []

    async def start() -> PostgresBus:
        bus = PostgresBus(asyncpg_dsn(postgres_url), reconnect_min_seconds=0.05)
        await bus.start()
        started.append(bus)
        return bus

    yield start
    for bus in started:
        await bus.close()


async def start_waiting(
    bus: PostgresBus, channels: Sequence[str], timeout: float
) -> asyncio.Task[bool]:
    waiting = asyncio.create_task(bus.wait(channels, timeout))
    await asyncio.sleep(0)  # one turn of the loop: the waiter is registered
    return waiting


async def woken_eventually(waiter: PostgresBus, notifier: PostgresBus, channel: str) -> bool:
    """Notifies until the waiter wakes; for when a connection may still be coming back."""
    deadline = asyncio.get_running_loop().time() + WOKEN_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        waiting = await start_waiting(waiter, [channel], 0.2)
        await notifier.notify([channel])
        if await waiting:
            return True
    return False


class SignallingBus:
    """A real bus that also tells when someone starts waiting on it."""

    def __init__(self, bus: PostgresBus) -> None:
        self.bus = bus
        self.waiting = asyncio.Event()

    async def notify(self, channels: Iterable[str]) -> None:
        await self.bus.notify(channels)

    async def wait(self, channels: Sequence[str], timeout: float) -> bool:
        waiting = self.bus.wait(channels, timeout)
        self.waiting.set()
        return await waiting


def test_dsn_drops_the_sqlalchemy_driver() -> None:
    assert asyncpg_dsn("postgresql+asyncpg://u:p%40ss@db:5433/fleet") == (
        "postgresql://u:p%40ss@db:5433/fleet"
    )
    assert asyncpg_dsn("postgresql://postgres@127.0.0.1/x") == "postgresql://postgres@127.0.0.1/x"
    assert asyncpg_dsn("postgres://h/x") == "postgresql://h/x"


def test_payloads_are_coalesced_and_chunked_under_the_limit() -> None:
    names = [f"task:{n}" for n in range(3000)] + ["tasks", "tasks", "bad,name"]

    chunks = payloads(names, limit=1000)

    assert all(len(c.encode()) <= 1000 for c in chunks)
    assert len(chunks) > 1
    sent = [name for chunk in chunks for name in chunk.split(",")]
    assert sorted(sent) == sorted(set(names) - {"bad,name"})
    assert payloads(["a", "b"]) == ["a,b"]
    assert payloads([]) == []


async def test_notify_on_one_replica_wakes_a_waiter_on_another(start_bus: BusFactory) -> None:
    first, second = await start_bus(), await start_bus()
    waiting = await start_waiting(first, ["tasks", "agent:a"], WOKEN_SECONDS)

    await second.notify(["agent:a"])

    assert await waiting is True


async def test_only_the_notified_channels_wake(start_bus: BusFactory) -> None:
    first, second = await start_bus(), await start_bus()
    other = await start_waiting(first, ["agent:x"], QUIET_SECONDS)
    notified = await start_waiting(first, ["agent:y"], WOKEN_SECONDS)

    await second.notify(["agent:y"])

    assert await notified is True
    assert await other is False


async def test_own_notify_wakes_local_waiters(start_bus: BusFactory) -> None:
    bus = await start_bus()
    waiting = await start_waiting(bus, ["tasks"], WOKEN_SECONDS)

    await bus.notify(["tasks"])

    assert await waiting is True


async def test_notifications_longer_than_one_payload_arrive(start_bus: BusFactory) -> None:
    first, second = await start_bus(), await start_bus()
    names = [f"task:{n:08d}" for n in range(3000)]  # about 40 KB of names
    assert len(payloads(names)) > 1
    waiting = [await start_waiting(first, [name], WOKEN_SECONDS) for name in names[::500]]
    last = await start_waiting(first, [names[-1]], WOKEN_SECONDS)

    await second.notify(names)

    assert await asyncio.gather(*waiting, last) == [True] * (len(waiting) + 1)


async def test_pending_notifications_go_out_on_close(start_bus: BusFactory) -> None:
    first, second = await start_bus(), await start_bus()
    waiting = await start_waiting(first, ["tasks"], WOKEN_SECONDS)

    await second.notify(["tasks"])
    await second.close()

    assert await waiting is True


async def test_close_wakes_local_waiters(start_bus: BusFactory) -> None:
    bus = await start_bus()
    waiting = await start_waiting(bus, ["tasks"], WOKEN_SECONDS)

    await bus.close()

    assert await asyncio.wait_for(waiting, WOKEN_SECONDS) is True


async def test_listener_reconnects_after_its_connection_is_killed(
    start_bus: BusFactory, postgres_url: str, postgres_server: PostgresServer
) -> None:
    first, second = await start_bus(), await start_bus()
    assert await woken_eventually(first, second, "tasks")

    admin = await postgres_server.admin()
    try:
        pids = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1",
            postgres_url.rsplit("/", 1)[1],
        )
        for row in pids:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", row["pid"])
    finally:
        await admin.close()

    assert len(pids) == 2
    assert await woken_eventually(first, second, "tasks")
    assert await woken_eventually(second, first, "tasks")
    assert first.connected and second.connected


async def test_a_long_poll_on_one_replica_gets_a_task_queued_on_another(
    start_bus: BusFactory, postgres_url: str
) -> None:
    settings = Settings(db=postgres_url, poll_interval=60.0)  # only a wake-up is fast enough
    polled = SignallingBus(await start_bus())
    replicas = [
        wire(settings, await open_store(postgres_url), await start_bus()),
        wire(settings, await open_store(postgres_url), polled),
    ]
    submitter, server = replicas
    try:
        agent = await server.store.add_agent("a", None, 0.0)
        polling = asyncio.create_task(server.tasks.claim_wait(agent, timeout=30.0))
        await asyncio.wait_for(polled.waiting.wait(), WOKEN_SECONDS)

        [task] = await submitter.tasks.submit(
            [NewTask(type="t", target_kind=TargetKind.AGENT, target="a")]
        )

        claimed = await asyncio.wait_for(polling, WOKEN_SECONDS)
        assert claimed is not None and claimed.id == task.id
    finally:
        for replica in replicas:
            await replica.store.close()


async def test_the_server_picks_the_bus_for_its_database(db_url: str) -> None:
    app = build(Settings(db=db_url))

    async with app.router.lifespan_context(app):
        bus = app.state.services.bus
        assert isinstance(bus, PostgresBus if db_url.startswith("postgresql") else LocalBus)
