"""The in-process bus: one server, one event loop."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

#: Called with the channel's name when it is notified.
Listener = Callable[[str], None]


class LocalBus:
    def __init__(self) -> None:
        #: a waiter's result is True when a notification woke it, False when it timed out
        self._waiters: defaultdict[str, set[asyncio.Future[bool]]] = defaultdict(set)
        self._listeners: defaultdict[str, set[Listener]] = defaultdict(set)

    async def notify(self, channels: Iterable[str]) -> None:
        self.wake(channels)

    def wake(self, channels: Iterable[str]) -> None:
        """Wakes local waiters synchronously (also used by the PostgreSQL listener)."""
        for channel in channels:
            for waiter in self._waiters.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(True)
            for listener in list(self._listeners.get(channel, ())):
                listener(channel)

    def subscribe(self, channels: Sequence[str], listener: Listener) -> Callable[[], None]:
        """Calls `listener` on every notification of `channels` until the returned function
        is called. Unlike `wait`, nothing is missed between two wake-ups, and a sleeping
        subscriber costs no future or task: one per idle agent connection adds up."""
        for channel in channels:
            self._listeners[channel].add(listener)

        def unsubscribe() -> None:
            for channel in channels:
                listeners = self._listeners.get(channel)
                if listeners is not None:
                    listeners.discard(listener)
                    if not listeners:
                        del self._listeners[channel]

        return unsubscribe

    async def wait(self, channels: Sequence[str], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        for channel in channels:
            self._waiters[channel].add(waiter)
        # A timer rather than wait_for: no task or shield per sleeping long-poll.
        timer = loop.call_later(max(0.0, timeout), _time_out, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            for channel in channels:
                waiters = self._waiters.get(channel)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[channel]
            if not waiter.done():
                waiter.cancel()

    def wake_all(self) -> None:
        """Wakes every waiter and listener, so that each reads the database again."""
        self.wake(set(self._waiters) | set(self._listeners))

    async def close(self) -> None:
        self.wake_all()


def _time_out(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
