"""Queries for schedules, the indexes of their routes, and their runs.

A route's tags and agent ids live in their own tables, so that "the schedules routed to
this agent" is one indexed query, asked by every connected raintank agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    and_,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)

from taskfleet.core import errors
from taskfleet.core.models import (
    Agent,
    NewSchedule,
    NewTask,
    Route,
    RouteKind,
    Schedule,
    ScheduleFilter,
    Task,
    TaskStatus,
)
from taskfleet.store.base import Base, Conn, task_row, to_task
from taskfleet.store.tables import (
    agents,
    schedule_agents,
    schedule_runs,
    schedule_tags,
    schedules,
    tasks,
)


def _to_schedule(row: Row[Any], route: Route) -> Schedule:
    return Schedule(
        id=row.id,
        name=row.name,
        type=row.type,
        interval=row.interval,
        route=route,
        config=row.config or {},
        enabled=row.enabled,
        assigned_agent=row.assigned_agent_id,
        next_run=row.next_run,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _values(new: NewSchedule, assigned_agent: int | None, now: float) -> dict[str, Any]:
    return {
        "name": new.name,
        "type": new.type,
        "config": new.config,
        "interval": new.interval,
        "route_kind": new.route.kind.value,
        "enabled": new.enabled,
        "assigned_agent_id": assigned_agent if new.route.kind is RouteKind.ANY else None,
        "updated_at": now,
    }


async def _routes(conn: Conn, rows: Sequence[Row[Any]]) -> list[Schedule]:
    """The schedules of these rows, with their routes read from the route indexes."""
    ids = [r.id for r in rows]
    tags: dict[int, list[str]] = {}
    agent_ids: dict[int, list[int]] = {}
    if ids:
        query = select(schedule_tags).where(schedule_tags.c.schedule_id.in_(ids))
        for t in await conn.execute(query.order_by(schedule_tags.c.tag)):
            tags.setdefault(t.schedule_id, []).append(t.tag)
        query = select(schedule_agents).where(schedule_agents.c.schedule_id.in_(ids))
        for a in await conn.execute(query.order_by(schedule_agents.c.agent_id)):
            agent_ids.setdefault(a.schedule_id, []).append(a.agent_id)
    return [
        _to_schedule(
            r,
            Route(
                kind=RouteKind(r.route_kind),
                tags=tuple(tags.get(r.id, ())),
                agent_ids=tuple(agent_ids.get(r.id, ())),
            ),
        )
        for r in rows
    ]


async def _set_route(conn: Conn, schedule_id: int, route: Route) -> None:
    await conn.execute(delete(schedule_tags).where(schedule_tags.c.schedule_id == schedule_id))
    await conn.execute(delete(schedule_agents).where(schedule_agents.c.schedule_id == schedule_id))
    if route.tags:
        rows = [{"schedule_id": schedule_id, "tag": t} for t in route.tags]
        await conn.execute(insert(schedule_tags), rows)
    if route.agent_ids:
        rows2 = [{"schedule_id": schedule_id, "agent_id": a} for a in route.agent_ids]
        await conn.execute(insert(schedule_agents), rows2)


async def _check_name_free(conn: Conn, name: str, schedule_id: int = 0) -> None:
    query = select(schedules.c.id).where(schedules.c.name == name, schedules.c.id != schedule_id)
    if (await conn.execute(query)).first() is not None:
        raise errors.Conflict(f"a schedule named {name!r} already exists")


def _routed_to(agent: Agent) -> ColumnElement[bool]:
    """SQL for "the schedule's route selects this agent" (core's `routes_to`)."""
    by_id = exists().where(
        schedule_agents.c.schedule_id == schedules.c.id, schedule_agents.c.agent_id == agent.id
    )
    routes = [
        and_(
            schedules.c.route_kind == RouteKind.ANY.value,
            schedules.c.assigned_agent_id == agent.id,
        ),
        and_(schedules.c.route_kind == RouteKind.AGENTS.value, by_id),
    ]
    if agent.tags:
        by_tag = exists().where(
            schedule_tags.c.schedule_id == schedules.c.id, schedule_tags.c.tag.in_(agent.tags)
        )
        routes.append(and_(schedules.c.route_kind == RouteKind.TAGS.value, by_tag))
    return or_(*routes)


class ScheduleQueries(Base):
    async def add_schedule(
        self, new: NewSchedule, assigned_agent: int | None, next_run: float, now: float
    ) -> Schedule:
        values = _values(new, assigned_agent, now) | {"next_run": next_run, "created_at": now}
        async with self._write() as conn:
            await _check_name_free(conn, new.name)
            row = (await conn.execute(insert(schedules).values(values).returning(schedules))).one()
            await _set_route(conn, row.id, new.route)
            return (await _routes(conn, [row]))[0]

    async def get_schedule(self, schedule_id: int) -> Schedule | None:
        async with self._read() as conn:
            return await self._one_schedule(conn, schedule_id)

    @staticmethod
    async def _one_schedule(conn: Conn, schedule_id: int) -> Schedule | None:
        row = (await conn.execute(select(schedules).where(schedules.c.id == schedule_id))).first()
        return None if row is None else (await _routes(conn, [row]))[0]

    async def list_schedules(self, query: ScheduleFilter) -> list[Schedule]:
        stmt = select(schedules)
        if query.name_like is not None:
            stmt = stmt.where(schedules.c.name.like(query.name_like))
        if query.type is not None:
            stmt = stmt.where(schedules.c.type == query.type)
        if query.enabled is not None:
            stmt = stmt.where(schedules.c.enabled.is_(query.enabled))
        order = [schedules.c.name, schedules.c.id] if query.order_by == "name" else [schedules.c.id]
        stmt = stmt.order_by(*order).offset(query.offset).limit(query.limit)
        async with self._read() as conn:
            return await _routes(conn, list(await conn.execute(stmt)))

    async def update_schedule(
        self,
        schedule_id: int,
        new: NewSchedule,
        assigned_agent: int | None,
        next_run: float | None,
        now: float,
    ) -> Schedule:
        values = _values(new, assigned_agent, now)
        if next_run is not None:
            values["next_run"] = next_run
        async with self._write() as conn:
            await _check_name_free(conn, new.name, schedule_id)
            row = (
                await conn.execute(
                    update(schedules)
                    .where(schedules.c.id == schedule_id)
                    .values(values)
                    .returning(schedules)
                )
            ).first()
            if row is None:
                raise errors.NotFound(f"no schedule {schedule_id}")
            await _set_route(conn, schedule_id, new.route)
            return (await _routes(conn, [row]))[0]

    async def delete_schedule(self, schedule_id: int) -> Schedule | None:
        async with self._write() as conn:
            found = await self._one_schedule(conn, schedule_id)
            if found is not None:
                await conn.execute(delete(schedules).where(schedules.c.id == schedule_id))
            return found

    async def schedules_for_agent(self, agent: Agent) -> list[Schedule]:
        query = (
            select(schedules)
            .where(schedules.c.enabled.is_(True), _routed_to(agent))
            .order_by(schedules.c.id)
        )
        async with self._read() as conn:
            return await _routes(conn, list(await conn.execute(query)))

    async def due_schedules(self, now: float, limit: int) -> list[Schedule]:
        query = (
            select(schedules)
            .where(schedules.c.enabled.is_(True), schedules.c.next_run <= now)
            .order_by(schedules.c.next_run, schedules.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            return await _routes(conn, list(await conn.execute(query)))

    async def start_run(
        self,
        schedule_id: int,
        due: float,
        next_run: float,
        runs: Sequence[tuple[int, NewTask]],
        now: float,
    ) -> list[Task] | None:
        advance = (
            update(schedules)
            .where(
                schedules.c.id == schedule_id,
                schedules.c.next_run == due,
                schedules.c.enabled.is_(True),
            )
            .values(next_run=next_run)
            .returning(schedules.c.id)
        )
        async with self._write() as conn:
            if (await conn.execute(advance)).first() is None:
                return None
            busy = await self._still_queued(conn, schedule_id, due, [a for a, _ in runs])
            fresh = [(agent, task) for agent, task in runs if agent not in busy]
            if not fresh:
                return []
            inserted = await conn.execute(
                insert(tasks).returning(tasks, sort_by_parameter_order=True),
                [task_row(task, now) for _, task in fresh],
            )
            created = [to_task(r) for r in inserted]
            await conn.execute(
                insert(schedule_runs),
                [
                    {"task_id": t.id, "schedule_id": schedule_id, "agent_id": agent, "due": due}
                    for (agent, _), t in zip(fresh, created, strict=True)
                ],
            )
            return created

    @staticmethod
    async def _still_queued(
        conn: Conn, schedule_id: int, due: float, agent_ids: list[int]
    ) -> set[int]:
        """The agents among these whose task from an earlier run has not been claimed yet,
        or that already have one for this run."""
        if not agent_ids:
            return set()
        query = (
            select(schedule_runs.c.agent_id)
            .join(tasks, tasks.c.id == schedule_runs.c.task_id)
            .where(
                schedule_runs.c.schedule_id == schedule_id,
                schedule_runs.c.agent_id.in_(agent_ids),
                or_(tasks.c.status == TaskStatus.QUEUED.value, schedule_runs.c.due == due),
            )
        )
        return {r.agent_id for r in await conn.execute(query)}

    async def stranded_schedules(self, offline_before: float, limit: int) -> list[Schedule]:
        gone = or_(
            schedules.c.assigned_agent_id.is_(None),
            agents.c.id.is_(None),
            agents.c.enabled.is_(False),
            and_(
                agents.c.online.is_(False),
                or_(agents.c.last_seen.is_(None), agents.c.last_seen < offline_before),
            ),
        )
        query = (
            select(schedules)
            .select_from(schedules.outerjoin(agents, agents.c.id == schedules.c.assigned_agent_id))
            .where(schedules.c.route_kind == RouteKind.ANY.value, gone)
            .order_by(schedules.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            return await _routes(conn, list(await conn.execute(query)))

    async def assign_schedule(
        self, schedule_id: int, expected: int | None, agent_id: int | None
    ) -> bool:
        current = schedules.c.assigned_agent_id
        on_expected = current.is_(None) if expected is None else current == expected
        stmt = (
            update(schedules)
            .where(
                schedules.c.id == schedule_id,
                schedules.c.route_kind == RouteKind.ANY.value,
                on_expected,
            )
            .values(assigned_agent_id=agent_id)
        )
        async with self._write() as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def schedule_runs(self, schedule_id: int, after_id: int, limit: int) -> list[Task]:
        query = (
            select(tasks)
            .join(schedule_runs, schedule_runs.c.task_id == tasks.c.id)
            .where(schedule_runs.c.schedule_id == schedule_id, tasks.c.id > after_id)
            .order_by(tasks.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            return [to_task(r) for r in await conn.execute(query)]
