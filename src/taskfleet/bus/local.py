"""The in-process bus: one server, one event loop."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence


class LocalBus:
    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)

    async def notify(self, channels: Iterable[str]) -> None:
        self.wake(channels)

    def wake(self, channels: Iterable[str]) -> None:
        """Wakes local waiters synchronously (also used by the PostgreSQL listener)."""
        for channel in channels:
            for waiter in self._waiters.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)

    async def wait(self, channels: Sequence[str], timeout: float) -> bool:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for channel in channels:
            self._waiters[channel].add(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            for channel in channels:
                waiters = self._waiters.get(channel)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[channel]
            if not waiter.done():
                waiter.cancel()

    def wake_all(self) -> None:
        """Wakes every waiter, so that each reads the database again."""
        self.wake(list(self._waiters))

    async def close(self) -> None:
        self.wake_all()
