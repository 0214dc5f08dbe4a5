"""A long-poll whose standby a broadcast took waits for the hand-over, whatever else wakes
it meanwhile (api/agent_hub.py `LongPoll`)."""

from __future__ import annotations

import asyncio

from taskfleet.api.agent_hub import LongPoll
from taskfleet.core.models import Task


async def test_a_taken_standby_waits_for_its_hand_over_through_other_wake_ups() -> None:
    poll = LongPoll()
    waiting = asyncio.create_task(poll.handed_within(5.0, lambda: False))
    await asyncio.sleep(0)
    poll.on_bus("tasks")  # some other news: not what it waits for
    await asyncio.sleep(0)
    assert not waiting.done()
    task = Task(id=7, type="dut", attempt=1)
    assert poll.hand_over(task)
    await asyncio.wait_for(waiting, 1)
    assert poll.handed is task
    assert not poll.hand_over(Task(id=8, type="dut"))  # one task per poll


async def test_the_wait_for_a_hand_over_ends_when_the_server_stops_or_in_time() -> None:
    poll = LongPoll()
    await asyncio.wait_for(poll.handed_within(5.0, lambda: True), 1)
    await asyncio.wait_for(poll.handed_within(0.01, lambda: False), 1)
    assert poll.handed is None
    poll.answered = True
    assert not poll.hand_over(Task(id=9, type="dut"))  # answered already: stays leased


async def test_a_failed_broadcast_ends_the_wait_at_once() -> None:
    poll = LongPoll()
    waiting = asyncio.create_task(poll.handed_within(5.0, lambda: False))
    await asyncio.sleep(0)
    assert poll.hand_over(None)  # the broadcast's insert failed: nothing comes
    await asyncio.wait_for(waiting, 1)
    assert poll.handed is None and poll.lost
    poll.lost = False  # as claim_wait does before it claims again
    assert poll.hand_over(Task(id=10, type="dut"))  # a later broadcast may still hand over
