"""Schedules: task definitions that run every `interval` seconds on the agents a route selects.

Agents that run schedules themselves (raintank's) get the definitions from their dialect
and run them on their own clock. For every other agent the server creates one task per run:
a `Scheduler` loop (one per server) starts the runs that are due. Starting a run is a
compare-and-set on the schedule's `next_run`, in the same transaction as the tasks it
creates, so replicas sharing a database never both start the same run.

Routes: `any` (one online agent, chosen at random and moved to another once it has been
offline for `move_after` seconds), `tags` (every agent with at least one of the tags) and
`agents` (the agents with these ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import replace

from taskfleet.core import errors
from taskfleet.core.agents import agent_channel, check_labels
from taskfleet.core.models import (
    Agent,
    NewSchedule,
    NewTask,
    Route,
    RouteKind,
    Schedule,
    ScheduleFilter,
    TargetKind,
    Task,
)
from taskfleet.core.ports import Bus, Clock, Store
from taskfleet.core.tasks import MAX_PAYLOAD_BYTES, check_new_task

log = logging.getLogger(__name__)

SCHEDULES_CHANNEL = "schedules"  #: woken whenever a schedule or its routing changes
MAX_INTERVAL_SECONDS = 2**31 - 1  #: about 68 years; keeps `interval` in a 32-bit column
MAX_ROUTE_ITEMS = 1000
MAX_NAME_LENGTH = 255
MOVE_AFTER_SECONDS = 2.0
TICK_SECONDS = 1.0
DUE_BATCH = 100  #: schedules started per tick; the next tick takes the rest
RUN_ATTEMPTS = 1  #: a failed run is not retried: the next run comes soon enough
ORDERS = ("id", "name")


def check_route(route: Route) -> Route:
    if route.kind is RouteKind.ANY:
        if route.tags or route.agent_ids:
            raise errors.Invalid("an `any` route takes no tags or agents")
        return route
    if route.kind is RouteKind.TAGS:
        if route.agent_ids or not route.tags:
            raise errors.Invalid("a `tags` route needs at least one tag, and no agents")
        return replace(route, tags=check_labels(route.tags, "route tags"))
    if route.tags or not route.agent_ids or len(route.agent_ids) > MAX_ROUTE_ITEMS:
        raise errors.Invalid(f"an `agents` route needs 1-{MAX_ROUTE_ITEMS} agent ids, and no tags")
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in route.agent_ids):
        raise errors.Invalid("agent ids must be positive integers")
    return replace(route, agent_ids=tuple(sorted(set(route.agent_ids))))


def check_new_schedule(new: NewSchedule) -> NewSchedule:
    """Validates a definition; returns it normalized (route tags and ids sorted)."""
    if not isinstance(new.name, str) or not 0 < len(new.name) <= MAX_NAME_LENGTH:
        raise errors.Invalid(f"a schedule name must be 1-{MAX_NAME_LENGTH} characters")
    if not isinstance(new.type, str) or not 0 < len(new.type) <= 128:
        raise errors.Invalid("a schedule's task type must be 1-128 characters")
    interval = new.interval
    if isinstance(interval, bool) or not isinstance(interval, int):
        raise errors.Invalid("interval must be a whole number of seconds")
    if not 0 < interval <= MAX_INTERVAL_SECONDS:
        raise errors.Invalid(
            f"interval must be between 1 and {MAX_INTERVAL_SECONDS} seconds (got {interval})"
        )
    if not isinstance(new.config, dict):
        raise errors.Invalid("config must be a JSON object")
    try:
        size = len(json.dumps(new.config))
    except (TypeError, ValueError) as exc:
        raise errors.Invalid("config must be JSON") from exc
    if size > MAX_PAYLOAD_BYTES:
        raise errors.TooLarge(f"config must be at most {MAX_PAYLOAD_BYTES} bytes of JSON")
    return replace(new, route=check_route(new.route), enabled=bool(new.enabled))


def routes_to(schedule: Schedule, agent: Agent) -> bool:
    """Whether the schedule's route selects the agent (the rule `schedules_for_agent`
    applies in SQL)."""
    route = schedule.route
    if route.kind is RouteKind.ANY:
        return schedule.assigned_agent == agent.id
    if route.kind is RouteKind.AGENTS:
        return agent.id in route.agent_ids
    return not set(route.tags).isdisjoint(agent.tags)


def takes_type(agent: Agent, task_type: str) -> bool:
    return not agent.task_types or task_type in agent.task_types


def next_run_after(due: float, interval: int, now: float) -> float:
    """The first run time after `now` on the schedule's grid: runs missed while no server
    was running are skipped, not made up one by one."""
    missed = max(0, math.floor((now - due) / interval))
    return due + (missed + 1) * interval


class ScheduleService:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        clock: Clock,
        move_after: float = MOVE_AFTER_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._bus = bus
        self._clock = clock
        self.move_after = move_after
        self._rng = rng or random.Random()

    # -- definitions --------------------------------------------------------------------

    async def create(self, new: NewSchedule) -> Schedule:
        """Stores a schedule. Its first run is one interval from now (when raintank agents
        also start theirs). Raises `Invalid`, `NotFound` for an unknown agent id, and
        `Conflict` when the name is taken."""
        new = check_new_schedule(new)
        await self._check_agents(new.route)
        assigned = await self._pick(new) if new.route.kind is RouteKind.ANY else None
        now = self._clock.now()
        schedule = await self._store.add_schedule(new, assigned, now + new.interval, now)
        await self._changed()
        return schedule

    async def get(self, schedule_id: int) -> Schedule:
        """Raises `NotFound`."""
        schedule = await self._store.get_schedule(schedule_id)
        if schedule is None:
            raise errors.NotFound(f"no schedule {schedule_id}")
        return schedule

    async def find(self, query: ScheduleFilter) -> list[Schedule]:
        """Schedules matching the filter, a page at a time. Raises `Invalid`."""
        if not 0 < query.limit <= 1000:
            raise errors.Invalid("limit must be between 1 and 1000")
        if query.offset < 0:
            raise errors.Invalid("offset must not be negative")
        if query.order_by not in ORDERS:
            raise errors.Invalid(f"order by one of {', '.join(ORDERS)}")
        return await self._store.list_schedules(query)

    async def update(self, schedule_id: int, new: NewSchedule) -> Schedule:
        """Replaces the definition. An `any` route keeps its agent unless it was routed
        another way before. A new interval, or enabling, restarts the runs one interval
        from now. Raises like `create`, and `NotFound`."""
        new = check_new_schedule(new)
        current = await self.get(schedule_id)
        await self._check_agents(new.route)
        assigned = None
        if new.route.kind is RouteKind.ANY:
            keep = current.route.kind is RouteKind.ANY and current.assigned_agent is not None
            assigned = current.assigned_agent if keep else await self._pick(new)
        now = self._clock.now()
        restart = new.interval != current.interval or (new.enabled and not current.enabled)
        next_run = now + new.interval if restart else None
        schedule = await self._store.update_schedule(schedule_id, new, assigned, next_run, now)
        await self._changed()
        return schedule

    async def delete(self, schedule_id: int) -> Schedule | None:
        """Deletes the schedule; the tasks of its earlier runs stay. Returns the deleted
        schedule, or None when there was none."""
        deleted = await self._store.delete_schedule(schedule_id)
        if deleted is not None:
            await self._changed()
        return deleted

    async def for_agent(self, agent: Agent) -> list[Schedule]:
        """The enabled schedules routed to the agent, in id order."""
        return await self._store.schedules_for_agent(agent)

    async def runs(self, schedule_id: int, after_id: int = 0, limit: int = 100) -> list[Task]:
        """The tasks created for agents by the schedule's runs, with their results."""
        await self.get(schedule_id)
        return await self._store.schedule_runs(schedule_id, after_id, limit)

    async def _check_agents(self, route: Route) -> None:
        for agent_id in route.agent_ids:
            if await self._store.get_agent_by_id(agent_id) is None:
                raise errors.NotFound(f"no agent with id {agent_id}")

    async def _online(self) -> list[Agent]:
        return [a for a in await self._store.list_agents() if a.online and a.enabled]

    async def _pick(self, schedule: NewSchedule) -> int | None:
        return self._choose(schedule, await self._online())

    def _choose(
        self, schedule: NewSchedule | Schedule, online: Sequence[Agent], avoid: int | None = None
    ) -> int | None:
        """A random online agent for an `any` route, or None while there is none."""
        found = [a.id for a in online if a.id != avoid and takes_type(a, schedule.type)]
        return self._rng.choice(found) if found else None

    async def _changed(self) -> None:
        await self._bus.notify([SCHEDULES_CHANNEL])

    # -- the server's loop ----------------------------------------------------------------

    async def tick(self) -> list[Task]:
        """One pass of the scheduler: moves stranded `any` routes, then starts the runs
        that are due. Returns the tasks created."""
        await self.rebalance()
        return await self.run_due()

    async def rebalance(self) -> list[Schedule]:
        """Moves `any`-routed schedules whose agent has been offline (or gone, or disabled)
        for `move_after` seconds to a random online agent. Returns the moved ones."""
        cutoff = self._clock.now() - self.move_after
        stranded = await self._store.stranded_schedules(cutoff, DUE_BATCH)
        online = await self._online() if stranded else []
        moved = []
        for schedule in stranded:
            target = self._choose(schedule, online, avoid=schedule.assigned_agent)
            if target is None:
                continue  # stays where it is until some agent is online
            if await self._store.assign_schedule(schedule.id, schedule.assigned_agent, target):
                moved.append(replace(schedule, assigned_agent=target))
                log.info(
                    "schedule %d moved to agent %d",
                    schedule.id,
                    target,
                    extra={"action": "schedule_moved", "schedule": schedule.id},
                )
        if moved:
            await self._changed()
        return moved

    async def run_due(self) -> list[Task]:
        """Starts every due run: one task per routed agent that takes tasks, unless its task
        from an earlier run is still queued. Exactly one replica starts each run."""
        now = self._clock.now()
        due = await self._store.due_schedules(now, DUE_BATCH)
        if not due:
            return []
        agents = await self._store.list_agents()
        created: list[Task] = []
        for schedule in due:
            runs = [(a.id, self._run_task(schedule, a)) for a in self._runners(schedule, agents)]
            next_run = next_run_after(schedule.next_run, schedule.interval, now)
            started = await self._store.start_run(
                schedule.id, schedule.next_run, next_run, runs, now
            )
            created += started or []
        if created:
            await self._bus.notify({agent_channel(t.target) for t in created})
        return created

    @staticmethod
    def _runners(schedule: Schedule, agents: Sequence[Agent]) -> list[Agent]:
        return [
            a
            for a in agents
            if not a.runs_schedules
            and a.enabled
            and takes_type(a, schedule.type)
            and routes_to(schedule, a)
        ]

    @staticmethod
    def _run_task(schedule: Schedule, agent: Agent) -> NewTask:
        return check_new_task(
            NewTask(
                type=schedule.type,
                payload=schedule.config,
                target_kind=TargetKind.AGENT,
                target=agent.name,
                max_attempts=RUN_ATTEMPTS,
            )
        )


class Scheduler:
    """The server's schedule loop: one named task, started and stopped by the app."""

    def __init__(self, schedules: ScheduleService, interval: float = TICK_SECONDS) -> None:
        self._schedules = schedules
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="taskfleet-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._schedules.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("schedule tick failed", extra={"action": "schedule_tick"})
            await asyncio.sleep(self._interval)
