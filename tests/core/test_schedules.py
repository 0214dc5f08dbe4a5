"""The schedule service against a real SQLite file, with a clock the tests move: routes,
runs for agents that take tasks, and `any` routes moving off offline agents."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskfleet.bus.local import LocalBus
from taskfleet.config import Settings
from taskfleet.core import errors
from taskfleet.core.models import Agent, NewSchedule, Route, RouteKind, TaskStatus
from taskfleet.core.schedules import ScheduleService, next_run_after
from taskfleet.services import Services, wire
from taskfleet.store.sql import open_store

START = 1_000_000.0


class ManualClock:
    def __init__(self) -> None:
        self.t = START

    def now(self) -> float:
        return self.t


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Services]:
    store = await open_store(str(tmp_path / "engine.db"))
    settings = Settings(schedule_move_after_seconds=5)
    found = wire(settings, store, LocalBus(), ManualClock())
    schedules = ScheduleService(store, found.bus, found.clock, move_after=5, rng=random.Random(7))
    object.__setattr__(found, "schedules", schedules)
    yield found
    await store.close()


def clock(found: Services) -> ManualClock:
    assert isinstance(found.clock, ManualClock)
    return found.clock


async def agent(
    found: Services,
    name: str,
    *,
    online: bool = True,
    tags: tuple[str, ...] = (),
    runs_schedules: bool = False,
) -> Agent:
    added = await found.agents.add(name, tags=tags, runs_schedules=runs_schedules)
    return await found.agents.hello(added) if online else added


def every(seconds: int, route: Route | None = None, name: str = "ping") -> NewSchedule:
    return NewSchedule(
        name=name, type="ping", interval=seconds, route=route or Route(), config={"n": 1}
    )


@pytest.mark.parametrize("interval", [0, -5, 1.5, True, 2**31])
async def test_intervals_must_be_positive_whole_seconds(engine: Services, interval: int) -> None:
    with pytest.raises(errors.Invalid, match="interval"):
        await engine.schedules.create(every(interval))


async def test_routes_are_checked(engine: Services) -> None:
    with pytest.raises(errors.NotFound, match="no agent with id 42"):
        await engine.schedules.create(every(60, Route(kind=RouteKind.AGENTS, agent_ids=(42,))))
    with pytest.raises(errors.Invalid, match="at least one tag"):
        await engine.schedules.create(every(60, Route(kind=RouteKind.TAGS)))
    with pytest.raises(errors.Invalid, match="no tags or agents"):
        await engine.schedules.create(every(60, Route(tags=("x",))))


async def test_any_picks_an_online_agent_or_waits_for_one(engine: Services) -> None:
    await agent(engine, "offline", online=False)
    waiting = await engine.schedules.create(every(60, name="early"))
    assert waiting.assigned_agent is None
    online = await agent(engine, "online")
    assert (await engine.schedules.tick()) == []
    assert (await engine.schedules.get(waiting.id)).assigned_agent == online.id
    created = await engine.schedules.create(every(60, name="late"))
    assert created.assigned_agent == online.id


async def test_one_task_per_interval_for_agents_that_take_tasks(engine: Services) -> None:
    native = await agent(engine, "native", tags=("dns",))
    raintank = await agent(engine, "rt", tags=("dns",), runs_schedules=True)
    route = Route(kind=RouteKind.TAGS, tags=("dns",))
    schedule = await engine.schedules.create(every(60, route))
    assert schedule.next_run == START + 60
    assert await engine.schedules.tick() == []

    clock(engine).t = START + 60
    (first,) = await engine.schedules.tick()
    assert (first.target, first.type, first.payload) == ("native", "ping", {"n": 1})
    assert await engine.schedules.tick() == []  # this run has started
    assert await engine.tasks.claim(native) is not None
    assert await engine.tasks.claim(raintank) is None

    clock(engine).t = START + 60 * 5 + 1  # three runs were missed: one starts, on the grid
    (second,) = await engine.schedules.tick()
    assert (await engine.schedules.get(schedule.id)).next_run == START + 60 * 6
    runs = await engine.schedules.runs(schedule.id)
    assert [t.id for t in runs] == [first.id, second.id]
    assert runs[0].status is TaskStatus.ACTIVE


async def test_an_any_route_moves_once_its_agent_stays_offline(engine: Services) -> None:
    first = await agent(engine, "first")
    schedule = await engine.schedules.create(every(60))
    assert schedule.assigned_agent == first.id
    second = await agent(engine, "second")
    await engine.agents.seen(first, online=False)

    clock(engine).t = START + 4  # back within the grace: nothing moves
    assert await engine.schedules.rebalance() == []
    clock(engine).t = START + 6
    (moved,) = await engine.schedules.rebalance()
    assert moved.assigned_agent == second.id
    assert [s.id for s in await engine.schedules.for_agent(second)] == [schedule.id]
    assert await engine.schedules.for_agent(first) == []


async def test_an_update_keeps_the_any_agent(engine: Services) -> None:
    await agent(engine, "a")
    await agent(engine, "b")
    schedule = await engine.schedules.create(every(60))
    for interval in (30, 90, 120):
        updated = await engine.schedules.update(schedule.id, every(interval))
        assert updated.assigned_agent == schedule.assigned_agent
        assert updated.interval == interval
    with pytest.raises(errors.NotFound):
        await engine.schedules.update(999, every(60))


def test_missed_runs_are_skipped_on_the_grid() -> None:
    assert next_run_after(100.0, 10, 100.0) == 110.0
    assert next_run_after(100.0, 10, 135.0) == 140.0
    assert next_run_after(100.0, 10, 99.0) == 110.0


async def test_a_new_interval_restarts_the_runs(engine: Services) -> None:
    await agent(engine, "a")
    schedule = await engine.schedules.create(every(3600))
    clock(engine).t = START + 10
    same = await engine.schedules.update(schedule.id, every(3600))
    assert same.next_run == START + 3600
    faster = await engine.schedules.update(schedule.id, every(60))
    assert faster.next_run == START + 10 + 60
