"""Claims that come up together go to the store together.

A broadcast wakes thousands of agent connections at once, and a busy fleet frees slots on
several connections within one event-loop iteration. Each used to claim in a transaction
of its own: on PostgreSQL a commit (and an fsync) per claim, on SQLite the cost of a
transaction per claim. `ClaimBatch` collects the claims asked for while the loop runs
and hands them to `Store.claim_tasks` in one transaction, in the order they came. A lone
claim waits for nothing but the next loop iteration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from taskfleet.core.models import Agent, Task
from taskfleet.core.ports import Store

#: Claims per transaction: big enough for a broadcast to share commits, small enough that
#: the first agents get their tasks while the rest are still being claimed.
MAX_BATCH = 256

Pending = tuple[Agent, float, asyncio.Future[Task | None]]


class ClaimBatch:
    def __init__(self, store: Store, now: Callable[[], float], max_batch: int = MAX_BATCH):
        self._store = store
        self._now = now
        self._max_batch = max_batch
        self._pending: list[Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def claim(self, agent: Agent, lease_seconds: float) -> Task | None:
        """Leases the best task this agent may run now, or returns None (`Store.claim_task`)."""
        future: asyncio.Future[Task | None] = asyncio.get_running_loop().create_future()
        self._pending.append((agent, lease_seconds, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="taskfleet-claims")
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._run(batch)
                # Let this batch's agents have their tasks before the next batch is
                # claimed: on SQLite the store call itself never yields.
                await asyncio.sleep(0)
        except BaseException:  # cancelled: nobody is left to run the rest
            for _, _, future in self._pending:
                future.cancel()
            self._pending.clear()
            raise
        finally:
            self._flusher = None

    async def _run(self, batch: list[Pending]) -> None:
        try:
            claims = [(agent, lease) for agent, lease, _ in batch]
            tasks = await self._store.claim_tasks(claims, self._now())
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled: the server is stopping
            for _, _, future in batch:
                future.cancel()
            raise
        for (_, _, future), task in zip(batch, tasks, strict=True):
            # A caller that went away meanwhile leaves its task leased: the lease runs
            # out, or the agent's sign-off hands it back, as for any lost delivery.
            if not future.done():
                future.set_result(task)
