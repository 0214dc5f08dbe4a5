"""Queries for agents, groups and agents' events."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from sqlalchemy import delete, func, insert, select, update

from taskfleet.core import errors
from taskfleet.core.models import Agent, AgentStatus, Event, Group, JSONValue
from taskfleet.store.base import Base, Conn, to_agent
from taskfleet.store.tables import agent_groups, agents, events, groups

TOUCH_CHUNK = 500  #: ids per UPDATE, well under every backend's limit on bound parameters
AGENT_FIELDS = frozenset(c.name for c in agents.columns) - {"id", "name", "created_at"}


async def _groups_of(conn: Conn, agent_ids: Sequence[int]) -> dict[int, list[str]]:
    query = (
        select(agent_groups.c.agent_id, groups.c.name)
        .join(groups, groups.c.id == agent_groups.c.group_id)
        .where(agent_groups.c.agent_id.in_(agent_ids))
        .order_by(groups.c.name)
    )
    found: dict[int, list[str]] = {}
    for row in await conn.execute(query):
        found.setdefault(row.agent_id, []).append(row.name)
    return found


class AgentQueries(Base):
    async def add_agent(
        self, name: str, account_id: int | None, now: float, runs_schedules: bool = False
    ) -> Agent:
        async with self._write() as conn:
            row = (
                await conn.execute(
                    insert(agents)
                    .values(
                        name=name,
                        account_id=account_id,
                        tags=[],
                        task_types=[],
                        status=AgentStatus.OFFLINE.value,
                        metadata={},
                        created_at=now,
                        runs_schedules=runs_schedules,
                    )
                    .returning(agents)
                )
            ).one()
        return to_agent(row)

    async def _one_agent(self, conn: Conn, where: object) -> Agent | None:
        row = (await conn.execute(select(agents).where(where))).first()  # type: ignore[arg-type]
        if row is None:
            return None
        return to_agent(row, tuple((await _groups_of(conn, [row.id])).get(row.id, ())))

    async def get_agent(self, name: str) -> Agent | None:
        async with self._read() as conn:
            return await self._one_agent(conn, agents.c.name == name)

    async def get_agent_by_id(self, agent_id: int) -> Agent | None:
        async with self._read() as conn:
            return await self._one_agent(conn, agents.c.id == agent_id)

    async def list_agents(self) -> list[Agent]:
        async with self._read() as conn:
            rows = list(await conn.execute(select(agents).order_by(agents.c.name)))
            member_of = await _groups_of(conn, [r.id for r in rows])
        return [to_agent(r, tuple(member_of.get(r.id, ()))) for r in rows]

    async def touch_agents(self, agent_ids: Sequence[int], now: float) -> None:
        await self._update_many(agent_ids, {"last_seen": now})

    async def agents_offline(self, agent_ids: Sequence[int], now: float) -> None:
        offline = {"online": False, "status": AgentStatus.OFFLINE.value, "last_seen": now}
        await self._update_many(agent_ids, offline)

    async def _update_many(self, agent_ids: Sequence[int], values: dict[str, object]) -> None:
        """The same values on many agents, in one transaction of a few statements."""
        ids = sorted(set(agent_ids))
        async with self._write() as conn:
            for start in range(0, len(ids), TOUCH_CHUNK):
                chunk = ids[start : start + TOUCH_CHUNK]
                await conn.execute(update(agents).where(agents.c.id.in_(chunk)).values(values))

    async def update_agent(self, agent_id: int, **fields: object) -> Agent:
        unknown = set(fields) - AGENT_FIELDS
        if unknown:
            raise ValueError(f"not agent fields: {sorted(unknown)}")
        values = {
            k: (v.value if isinstance(v, Enum) else list(v) if isinstance(v, tuple) else v)
            for k, v in fields.items()
        }
        async with self._write() as conn:
            done = await conn.execute(update(agents).where(agents.c.id == agent_id).values(values))
            if not done.rowcount:
                raise errors.NotFound(f"no agent with id {agent_id}")
            agent = await self._one_agent(conn, agents.c.id == agent_id)
        assert agent is not None
        return agent

    async def delete_agent(self, agent_id: int) -> None:
        async with self._write() as conn:
            await conn.execute(delete(events).where(events.c.agent_id == agent_id))
            await conn.execute(delete(agent_groups).where(agent_groups.c.agent_id == agent_id))
            await conn.execute(delete(agents).where(agents.c.id == agent_id))

    async def set_agent_groups(self, agent_id: int, names: Sequence[str], now: float) -> Agent:
        async with self._write() as conn:
            if (
                await conn.execute(select(agents.c.id).where(agents.c.id == agent_id))
            ).first() is None:
                raise errors.NotFound(f"no agent with id {agent_id}")
            existing = {
                r.name: r.id
                for r in await conn.execute(select(groups).where(groups.c.name.in_(names)))
            }
            for name in set(names) - set(existing):
                existing[name] = (
                    await conn.execute(
                        insert(groups).values(name=name, created_at=now).returning(groups.c.id)
                    )
                ).scalar_one()
            await conn.execute(delete(agent_groups).where(agent_groups.c.agent_id == agent_id))
            if names:
                await conn.execute(
                    insert(agent_groups),
                    [{"agent_id": agent_id, "group_id": existing[n]} for n in names],
                )
            agent = await self._one_agent(conn, agents.c.id == agent_id)
        if agent is None:
            raise errors.NotFound(f"no agent with id {agent_id}")
        return agent

    async def add_group(self, name: str, now: float) -> Group:
        async with self._write() as conn:
            if (await conn.execute(select(groups.c.id).where(groups.c.name == name))).first():
                raise errors.Conflict(f"a group named {name!r} already exists")
            row = (
                await conn.execute(
                    insert(groups).values(name=name, created_at=now).returning(groups)
                )
            ).one()
        return Group(id=row.id, name=row.name, created_at=row.created_at)

    async def list_groups(self) -> list[Group]:
        async with self._read() as conn:
            rows = await conn.execute(select(groups).order_by(groups.c.name))
            return [Group(id=r.id, name=r.name, created_at=r.created_at) for r in rows]

    async def group_members(self, name: str) -> list[Agent]:
        members = (
            select(agent_groups.c.agent_id)
            .join(groups, groups.c.id == agent_groups.c.group_id)
            .where(groups.c.name == name)
        )
        query = select(agents).where(agents.c.id.in_(members)).order_by(agents.c.name)
        # The members' groups by the same subquery: with their ids as bound parameters, a
        # broadcast to 10,000 agents sent (and PostgreSQL planned) 10,000 parameters.
        their_groups = (
            select(agent_groups.c.agent_id, groups.c.name)
            .join(groups, groups.c.id == agent_groups.c.group_id)
            .where(agent_groups.c.agent_id.in_(members))
            .order_by(groups.c.name)
        )
        async with self._read() as conn:
            rows = list(await conn.execute(query))
            member_of: dict[int, list[str]] = {}
            for row in await conn.execute(their_groups):
                member_of.setdefault(row.agent_id, []).append(row.name)
        return [to_agent(r, tuple(member_of.get(r.id, ()))) for r in rows]

    async def delete_group(self, name: str) -> None:
        async with self._write() as conn:
            done = await conn.execute(delete(groups).where(groups.c.name == name))
            if not done.rowcount:
                raise errors.NotFound(f"no group named {name!r}")

    async def add_event(self, agent_id: int, time: float, data: JSONValue, bound: int) -> Event:
        async with self._write() as conn:
            new_id = (
                await conn.execute(
                    insert(events)
                    .values(agent_id=agent_id, time=time, data=data)
                    .returning(events.c.id)
                )
            ).scalar_one()
            # Ring buffer: keep the newest `bound` events of this agent.
            oldest_kept = (
                select(events.c.id)
                .where(events.c.agent_id == agent_id)
                .order_by(events.c.id.desc())
                .offset(bound - 1)
                .limit(1)
                .scalar_subquery()
            )
            await conn.execute(
                delete(events).where(events.c.agent_id == agent_id, events.c.id < oldest_kept)
            )
        return Event(id=new_id, agent_id=agent_id, time=time, data=data)

    async def list_events(self, agent_id: int, limit: int) -> list[Event]:
        newest = (
            select(events)
            .where(events.c.agent_id == agent_id)
            .order_by(events.c.id.desc())
            .limit(limit)
            .subquery()
        )
        async with self._read() as conn:
            rows = await conn.execute(select(newest).order_by(newest.c.id))
            return [Event(id=r.id, agent_id=r.agent_id, time=r.time, data=r.data) for r in rows]

    async def count_online_agents(self) -> int:
        async with self._read() as conn:
            query = select(func.count()).select_from(agents).where(agents.c.online.is_(True))
            return int((await conn.execute(query)).scalar_one())
