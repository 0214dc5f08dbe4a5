"""Store calls that come up together go to the store together.

A broadcast wakes thousands of agent connections at once; a busy fleet frees slots and
reports results on several connections within one event-loop iteration. Each claim and
each result used to be a transaction of its own: on PostgreSQL a commit (and an fsync)
apiece, on SQLite the cost of a transaction apiece. A `Batch` collects the calls made
while the loop runs and hands them to one store method in one transaction, in the order
they came. A lone call waits for nothing but the next loop iteration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from taskfleet.core import errors

#: Calls per transaction: big enough for a broadcast to share commits, small enough that
#: the first callers get their answers while the rest are still being worked on.
MAX_BATCH = 256

In = TypeVar("In")
Out = TypeVar("Out")


class Batch(Generic[In, Out]):
    """Runs `run(items)` for the items asked for together. `run` answers each item in
    order, with its value or with the domain error refusing that item alone; an exception
    it raises (the transaction failed) goes to every caller of the batch."""

    def __init__(
        self,
        run: Callable[[list[In]], Awaitable[Sequence[Out | errors.Error]]],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, item: In) -> Out:
        (answer,) = await self.many([item])
        return answer

    async def many(self, items: Sequence[In]) -> list[Out]:
        """Answers several items of one caller (in the same transaction when they fit)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Out]] = [loop.create_future() for _ in items]
        self._pending.extend(zip(items, futures, strict=True))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="taskfleet-batch")
        return [await future for future in futures]

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._answer(batch)
                # Let this batch's callers have their answers before the next batch runs:
                # on SQLite the store call itself never yields.
                await asyncio.sleep(0)
        except BaseException:  # cancelled: nobody is left to run the rest
            for _, future in self._pending:
                future.cancel()
            self._pending.clear()
            raise
        finally:
            self._flusher = None

    async def _answer(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            answers = await self._run([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled: the server is stopping
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), answer in zip(batch, answers, strict=True):
            # A caller that went away meanwhile leaves what was done done: a claimed
            # task's lease runs out, or the agent's sign-off hands it back, as for any
            # lost delivery; a recorded result stays recorded.
            if future.done():
                continue
            if isinstance(answer, errors.Error):
                future.set_exception(answer)
            else:
                future.set_result(answer)
