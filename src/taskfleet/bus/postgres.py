"""The PostgreSQL bus: wake-ups between replicas that share one database.

One dedicated asyncpg connection LISTENs on the PostgreSQL channel `taskfleet` and also
sends this replica's notifications, so that it can recognise its own echo by the sending
backend's pid. A notification's payload is the comma-joined names of the bus channels to
wake; waiters on this replica sleep in an embedded `LocalBus`.

NOTIFY is only a hint (the database is the truth and waiters re-read it at least every
poll interval), so `notify` never fails its caller: it wakes local waiters at once and
hands the channels to the connection's task, which coalesces everything pending into as
few NOTIFYs as the 8000-byte payload limit allows. That task reconnects when the
connection drops and pings it on a timer to notice a dead peer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from taskfleet.bus.local import Listener, LocalBus

log = logging.getLogger(__name__)

PG_CHANNEL = "taskfleet"
MAX_PAYLOAD_BYTES = 7999  #: PostgreSQL refuses payloads of 8000 bytes or more
PING_SECONDS = 30.0
RECONNECT_MIN_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 30.0
TIMEOUT_SECONDS = 10.0  #: for connecting, pinging and sending
CLOSE_SECONDS = 5.0  #: how long `close` lets pending notifications go out
SEND_SQL = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload"


def asyncpg_dsn(url: str) -> str:
    """The DSN asyncpg takes for a SQLAlchemy URL such as `postgresql+asyncpg://…`."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def payloads(channels: Iterable[str], limit: int = MAX_PAYLOAD_BYTES) -> list[str]:
    """The channel names, comma-joined into as few payloads of at most `limit` bytes as
    a greedy fill gives. Names that cannot travel (too long, or with a comma) are dropped:
    their waiters still wake at their next poll."""
    chunks: list[str] = []
    current: list[str] = []
    used = -1  # bytes of ",".join(current)
    for name in sorted(set(channels)):
        size = len(name.encode())
        if "," in name or size > limit:
            log.warning("bus channel %r cannot be notified", name, extra={"action": "notify"})
            continue
        if current and used + 1 + size > limit:
            chunks.append(",".join(current))
            current, used = [], -1
        current.append(name)
        used += 1 + size
    if current:
        chunks.append(",".join(current))
    return chunks


class PostgresBus:
    """Implements `taskfleet.core.ports.Bus` across replicas with LISTEN/NOTIFY.

    Call `start` before use and `close` at the end.
    """

    def __init__(
        self,
        dsn: str,
        *,
        ping_seconds: float = PING_SECONDS,
        reconnect_min_seconds: float = RECONNECT_MIN_SECONDS,
    ) -> None:
        self._dsn = dsn
        self._ping_seconds = ping_seconds
        self._reconnect_min = reconnect_min_seconds
        self._local = LocalBus()
        self._conn: Any = None  # asyncpg.Connection, owned by the listener task
        self._pending: set[str] = set()
        self._wakeup = asyncio.Event()  # something is pending, or the connection dropped
        self._stopping = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        """Connects and starts listening. Raises when the database cannot be reached, so
        that a misconfigured server fails at start rather than running deaf."""
        self._conn = await self._connect()
        self._listener = asyncio.create_task(self._listen(), name="taskfleet-pg-bus")

    async def notify(self, channels: Iterable[str]) -> None:
        names = set(channels)
        if not names:
            return
        self._local.wake(names)
        self._pending |= names
        self._wakeup.set()

    async def wait(self, channels: Sequence[str], timeout: float) -> bool:
        return await self._local.wait(channels, timeout)

    def subscribe(self, channels: Sequence[str], listener: Listener) -> Callable[[], None]:
        """As `LocalBus.subscribe`, for notifications from this replica and the others."""
        return self._local.subscribe(channels, listener)

    def wake_all(self) -> None:
        """Wakes every waiter and listener on this replica."""
        self._local.wake_all()

    async def close(self) -> None:
        """Sends what is pending (for up to `CLOSE_SECONDS`), disconnects, wakes waiters."""
        self._stopping.set()
        self._wakeup.set()
        if self._listener is not None:
            try:
                await asyncio.wait_for(self._listener, CLOSE_SECONDS)
            except TimeoutError:
                log.warning("bus closed with notifications unsent", extra={"action": "close"})
        await self._disconnect()
        await self._local.close()

    # -- the listener task ---------------------------------------------------------------

    async def _connect(self) -> Any:
        conn = await asyncpg.connect(self._dsn, timeout=TIMEOUT_SECONDS)
        try:
            await conn.add_listener(PG_CHANNEL, self._on_notification)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(lambda _conn: self._wakeup.set())
        return conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=TIMEOUT_SECONDS)
            except Exception:  # close() has already aborted the connection
                log.debug("bus connection closed uncleanly", extra={"action": "close"})

    def _on_notification(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if pid != conn.get_server_pid():  # our own NOTIFY: local waiters are awake already
            self._local.wake(payload.split(","))

    async def _listen(self) -> None:
        delay = 0.0
        while not self._stopping.is_set():
            try:
                if self._conn is None:
                    self._conn = await self._connect()
                    log.info("bus reconnected", extra={"action": "bus_reconnect"})
                    # Notifications sent while we were away are lost: let every waiter
                    # look at the database now rather than at its next poll.
                    self._local.wake_all()
                delay = 0.0
                await self._serve(self._conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "bus connection failed (%s); reconnecting in %.1f s",
                    exc,
                    delay,
                    extra={"action": "bus_reconnect"},
                )
                await self._disconnect()
                await self._pause(delay)
                delay = min(max(2 * delay, self._reconnect_min), RECONNECT_MAX_SECONDS)

    async def _serve(self, conn: Any) -> None:
        """Sends what is pending and pings when idle, until stopping or the link drops."""
        while True:
            self._wakeup.clear()
            if conn.is_closed():
                raise ConnectionError("the bus connection closed")
            if self._pending:
                await self._send(conn)
            elif self._stopping.is_set():
                return
            else:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self._ping_seconds)
                except TimeoutError:
                    await conn.execute("SELECT 1", timeout=TIMEOUT_SECONDS)

    async def _send(self, conn: Any) -> None:
        names, self._pending = self._pending, set()
        try:
            await conn.execute(SEND_SQL, PG_CHANNEL, payloads(names), timeout=TIMEOUT_SECONDS)
        except BaseException:
            self._pending |= names  # goes out after reconnecting
            raise

    async def _pause(self, seconds: float) -> None:
        """Waits before reconnecting, but not past `close`."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self._stopping.wait(), seconds)
            except TimeoutError:
                pass
