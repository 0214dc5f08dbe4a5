"""Reports on their way to the server: spooled first, sent in order, deleted when answered.

The flusher runs once per connected session. It sends waiting reports, up to the
session's window at a time, and settles each reply: accepted or refused for good (a stale
attempt's 409, a task that is gone, a report the server can never take) means the report
leaves the spool; anything else ends the session, and the report is sent again after the
reconnect. So a result is never lost, and the server records it once (a repeat for the
same attempt is accepted once; a stale one is refused and recorded nowhere).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol

from taskfleet.agent import protocol as wire
from taskfleet.agent.spool import Entry, Spool
from taskfleet.agent.transports import AuthFailed, Offline, Reply, Session

log = logging.getLogger(__name__)

#: Refusals that will never turn into an acceptance: the report is dropped.
DROP = frozenset({wire.INVALID, wire.TOO_LARGE, wire.FORBIDDEN, wire.NOT_FOUND, wire.CONFLICT})
#: Room left in a message for the envelope around a report's params.
ENVELOPE_BYTES = 1024
#: Refusals that mean "this attempt is no longer yours": stop working on it.
STALE = frozenset({wire.NOT_FOUND, wire.CONFLICT})


class Listener(Protocol):
    def task_stale(self, task_id: int, attempt: int) -> None:
        """The server no longer accepts reports for this attempt."""

    def cancel_requested(self, task_id: int, attempt: int) -> None:
        """A heartbeat reply says an operator asked to cancel this attempt."""

    def spool_changed(self) -> None:
        """The spool crossed its limit (either way) or became empty."""


class Outbox:
    def __init__(
        self,
        spool: Spool,
        limit: int,
        listener: Listener,
        max_message_bytes: int = wire.MAX_MESSAGE_BYTES,
    ) -> None:
        self.spool = spool
        self.limit = limit
        self.max_report_bytes = max_message_bytes - ENVELOPE_BYTES
        self._listener = listener
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()
        if not len(spool):
            self._empty.set()

    @property
    def over_limit(self) -> bool:
        """While True the agent takes no new work (the server is not keeping up)."""
        return len(self.spool) > self.limit

    def put(
        self,
        method: str,
        params: dict[str, Any],
        task_id: int | None = None,
        attempt: int | None = None,
        coalesce: str | None = None,
    ) -> None:
        """Spools a report (synchronously: it is on disk when this returns) and wakes the
        flusher. Raises `ReportTooLarge` for a report no server message could carry."""
        was_over = self.over_limit
        self.spool.add(method, params, task_id, attempt, coalesce, self.max_report_bytes)
        self._empty.clear()
        self._wake.set()
        if self.over_limit != was_over:
            self._listener.spool_changed()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    async def flush_forever(self, session: Session) -> None:
        """Sends every waiting report, then each new one, until the session breaks."""
        cursor = 0
        in_flight: deque[tuple[Entry, asyncio.Future[Reply]]] = deque()
        while True:
            if len(in_flight) < session.window:
                batch = self.spool.pending(cursor, session.window - len(in_flight))
                for entry in batch:
                    in_flight.append((entry, await session.submit(entry.method, entry.params)))
                    cursor = entry.id
                if batch:
                    continue
            if in_flight:
                await asyncio.wait([in_flight[0][1]])
                self._settle_done(in_flight)
                continue
            self._wake.clear()
            if not self.spool.pending(cursor, 1):
                await self._wake.wait()

    def _settle_done(self, in_flight: deque[tuple[Entry, asyncio.Future[Reply]]]) -> None:
        """Settles the replies that have come, in order; the reports they end leave the
        spool together (one transaction for an array of answers)."""
        done: list[Entry] = []
        try:
            while in_flight and in_flight[0][1].done():
                entry, reply = in_flight.popleft()
                if self._settle(entry, reply.result()):
                    done.append(entry)
        finally:
            self._forget(done)

    def _settle(self, entry: Entry, reply: Reply) -> bool:
        """Whether the report leaves the spool; raises when the session must end."""
        if reply.ok:
            if isinstance(reply.result, dict) and reply.result.get("cancel_requested"):
                self._tell(self._listener.cancel_requested, entry)
            return True
        if reply.code == wire.UNAUTHORIZED:
            raise AuthFailed(reply.message)
        if reply.code not in DROP:
            raise Offline(f"the server could not take a report ({reply.code}): {reply.message}")
        log.warning(
            "the server refused %s for task %s attempt %s (%s): %s",
            entry.method,
            entry.task_id,
            entry.attempt,
            reply.code,
            reply.message,
            extra={"action": "report_refused"},
        )
        if reply.code in STALE:
            self._tell(self._listener.task_stale, entry)
        return True

    @staticmethod
    def _tell(callback: Any, entry: Entry) -> None:
        if entry.task_id is not None and entry.attempt is not None:
            callback(entry.task_id, entry.attempt)

    def _forget(self, entries: list[Entry]) -> None:
        if not entries:
            return
        was_over = self.over_limit
        self.spool.remove(*(entry.id for entry in entries))
        if not len(self.spool):
            self._empty.set()
        if self.over_limit != was_over:
            self._listener.spool_changed()
