"""Queries for commands, command groups, the hosts' runs of them and the hosts' variables.

"What should this host run now" is one query: the commands of active groups in their time
window, assigned to a host group the agent is in, without a finished run by this agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, delete, exists, insert, or_, select, update

from taskfleet.core import errors
from taskfleet.core.models import (
    Command,
    CommandGroup,
    NewCommand,
    NewCommandGroup,
    NewTask,
    Task,
    TaskStatus,
)
from taskfleet.store.base import Base, Conn, task_row, to_task
from taskfleet.store.tables import (
    agent_groups,
    command_group_hosts,
    command_groups,
    command_runs,
    commands,
    groups,
    host_variables,
    tasks,
)

#: A run in one of these states is still to be done; any other state means the host ran it.
OPEN = (TaskStatus.QUEUED.value, TaskStatus.ACTIVE.value)
RUN_ORDER = (
    command_groups.c.position,
    command_groups.c.id,
    commands.c.position,
    commands.c.id,
)


def _to_group(row: Row[Any], hosts: Sequence[str]) -> CommandGroup:
    return CommandGroup(
        id=row.id,
        name=row.name,
        order=row.position,
        active=row.active,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        host_groups=tuple(hosts),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _to_command(row: Row[Any]) -> Command:
    return Command(
        id=row.id,
        group_id=row.command_group_id,
        name=row.name,
        source=row.source,
        order=row.position,
        active=row.active,
        settings=dict(row.settings or {}),
        variables=tuple(row.variables or ()),
        result_variables=tuple(row.result_variables or ()),
        timeout_seconds=row.timeout_seconds,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _group_values(new: NewCommandGroup, now: float) -> dict[str, Any]:
    return {
        "name": new.name,
        "position": new.order,
        "active": new.active,
        "starts_at": new.starts_at,
        "ends_at": new.ends_at,
        "updated_at": now,
    }


def _command_values(new: NewCommand, now: float) -> dict[str, Any]:
    return {
        "command_group_id": new.group_id,
        "name": new.name,
        "source": new.source,
        "position": new.order,
        "active": new.active,
        "settings": new.settings,
        "variables": list(new.variables),
        "result_variables": list(new.result_variables),
        "timeout_seconds": new.timeout_seconds,
        "updated_at": now,
    }


async def _hosts_of(conn: Conn, group_ids: Sequence[int]) -> dict[int, list[str]]:
    query = (
        select(command_group_hosts.c.command_group_id, groups.c.name)
        .join(groups, groups.c.id == command_group_hosts.c.group_id)
        .where(command_group_hosts.c.command_group_id.in_(group_ids))
        .order_by(groups.c.name)
    )
    found: dict[int, list[str]] = {}
    for row in await conn.execute(query):
        found.setdefault(row.command_group_id, []).append(row.name)
    return found


async def _set_hosts(conn: Conn, group_id: int, names: Sequence[str], now: float) -> None:
    existing = {
        r.name: r.id for r in await conn.execute(select(groups).where(groups.c.name.in_(names)))
    }
    for name in sorted(set(names) - set(existing)):
        query = insert(groups).values(name=name, created_at=now).returning(groups.c.id)
        existing[name] = (await conn.execute(query)).scalar_one()
    column = command_group_hosts.c
    await conn.execute(delete(command_group_hosts).where(column.command_group_id == group_id))
    if names:
        rows = [{"command_group_id": group_id, "group_id": existing[n]} for n in names]
        await conn.execute(insert(command_group_hosts), rows)


async def _check_name_free(conn: Conn, name: str, group_id: int = 0) -> None:
    query = select(command_groups.c.id).where(
        command_groups.c.name == name, command_groups.c.id != group_id
    )
    if (await conn.execute(query)).first() is not None:
        raise errors.Conflict(f"a command group named {name!r} already exists")


async def _check_group(conn: Conn, group_id: int) -> None:
    query = select(command_groups.c.id).where(command_groups.c.id == group_id)
    if (await conn.execute(query)).first() is None:
        raise errors.NotFound(f"no command group {group_id}")


def _assigned(agent_id: int) -> ColumnElement[bool]:
    """The command's group is assigned to a host group the agent is in."""
    membership = command_group_hosts.join(
        agent_groups, agent_groups.c.group_id == command_group_hosts.c.group_id
    )
    return exists(
        select(command_group_hosts.c.group_id)
        .select_from(membership)
        .where(
            command_group_hosts.c.command_group_id == commands.c.command_group_id,
            agent_groups.c.agent_id == agent_id,
        )
    )


def _available(now: float) -> ColumnElement[bool]:
    group = command_groups.c
    return and_(
        commands.c.active.is_(True),
        group.active.is_(True),
        or_(group.starts_at.is_(None), group.starts_at < now),
        or_(group.ends_at.is_(None), group.ends_at > now),
    )


def _has_run(agent_id: int) -> ColumnElement[bool]:
    """The agent has a run of the command that is over (or cancel-requested)."""
    return exists(
        select(command_runs.c.task_id)
        .join(tasks, tasks.c.id == command_runs.c.task_id)
        .where(
            command_runs.c.command_id == commands.c.id,
            command_runs.c.agent_id == agent_id,
            tasks.c.status.not_in(OPEN),
        )
    )


def _in_groups() -> Any:
    return commands.join(command_groups, command_groups.c.id == commands.c.command_group_id)


class CommandQueries(Base):
    # -- groups -------------------------------------------------------------------------------

    async def add_command_group(self, new: NewCommandGroup, now: float) -> CommandGroup:
        async with self._write() as conn:
            await _check_name_free(conn, new.name)
            query = insert(command_groups).values(**_group_values(new, now), created_at=now)
            group_id = (await conn.execute(query.returning(command_groups.c.id))).scalar_one()
            await _set_hosts(conn, group_id, new.host_groups, now)
            found = await self._one_group(conn, group_id)
        assert found is not None
        return found

    async def update_command_group(
        self, group_id: int, new: NewCommandGroup, now: float
    ) -> CommandGroup:
        async with self._write() as conn:
            await _check_group(conn, group_id)
            await _check_name_free(conn, new.name, group_id)
            await conn.execute(
                update(command_groups)
                .where(command_groups.c.id == group_id)
                .values(**_group_values(new, now))
            )
            await _set_hosts(conn, group_id, new.host_groups, now)
            found = await self._one_group(conn, group_id)
        assert found is not None
        return found

    @staticmethod
    async def _one_group(conn: Conn, group_id: int) -> CommandGroup | None:
        query = select(command_groups).where(command_groups.c.id == group_id)
        row = (await conn.execute(query)).first()
        if row is None:
            return None
        return _to_group(row, (await _hosts_of(conn, [group_id])).get(group_id, []))

    async def get_command_group(self, group_id: int) -> CommandGroup | None:
        async with self._read() as conn:
            return await self._one_group(conn, group_id)

    async def list_command_groups(self) -> list[CommandGroup]:
        query = select(command_groups).order_by(command_groups.c.position, command_groups.c.id)
        async with self._read() as conn:
            rows = list(await conn.execute(query))
            hosts = await _hosts_of(conn, [r.id for r in rows])
        return [_to_group(r, hosts.get(r.id, [])) for r in rows]

    async def delete_command_group(self, group_id: int) -> bool:
        async with self._write() as conn:
            done = await conn.execute(delete(command_groups).where(command_groups.c.id == group_id))
        return bool(done.rowcount)

    # -- commands -----------------------------------------------------------------------------

    async def add_command(self, new: NewCommand, now: float) -> Command:
        async with self._write() as conn:
            await _check_group(conn, new.group_id)
            query = insert(commands).values(**_command_values(new, now), created_at=now)
            row = (await conn.execute(query.returning(commands))).one()
        return _to_command(row)

    async def update_command(self, command_id: int, new: NewCommand, now: float) -> Command:
        async with self._write() as conn:
            await _check_group(conn, new.group_id)
            row = (
                await conn.execute(
                    update(commands)
                    .where(commands.c.id == command_id)
                    .values(**_command_values(new, now))
                    .returning(commands)
                )
            ).first()
        if row is None:
            raise errors.NotFound(f"no command {command_id}")
        return _to_command(row)

    async def get_command(self, command_id: int) -> Command | None:
        async with self._read() as conn:
            row = (await conn.execute(select(commands).where(commands.c.id == command_id))).first()
        return None if row is None else _to_command(row)

    async def list_commands(self, group_id: int | None) -> list[Command]:
        query = select(commands).select_from(_in_groups()).order_by(*RUN_ORDER)
        if group_id is not None:
            query = query.where(commands.c.command_group_id == group_id)
        async with self._read() as conn:
            return [_to_command(r) for r in await conn.execute(query)]

    async def delete_command(self, command_id: int) -> bool:
        async with self._write() as conn:
            done = await conn.execute(delete(commands).where(commands.c.id == command_id))
        return bool(done.rowcount)

    # -- the hosts' side ------------------------------------------------------------------

    async def pending_commands(self, agent_id: int, now: float) -> list[tuple[int, int]]:
        query = (
            select(command_groups.c.id.label("group_id"), commands.c.id)
            .select_from(_in_groups())
            .where(_assigned(agent_id), _available(now), ~_has_run(agent_id))
            .order_by(*RUN_ORDER)
        )
        async with self._read() as conn:
            return [(r.group_id, r.id) for r in await conn.execute(query)]

    async def command_for_agent(
        self, command_id: int, agent_id: int, now: float, available: bool
    ) -> Command | None:
        query = (
            select(commands)
            .select_from(_in_groups())
            .where(commands.c.id == command_id, _assigned(agent_id))
        )
        if available:
            query = query.where(_available(now))
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _to_command(row)

    async def start_command_run(
        self, command_id: int, agent_id: int, task: NewTask, now: float, lease_until: float
    ) -> Task:
        lease = {"lease_owner": agent_id, "lease_expires": lease_until, "updated_at": now}
        async with self._write() as conn:
            current = await self._open_run(conn, command_id, agent_id)
            if current is None:
                return await self._new_run(conn, command_id, agent_id, task, now, lease)
            values: dict[str, Any] = {**lease, "status": TaskStatus.ACTIVE.value}
            if current.status is TaskStatus.QUEUED:
                values.update(attempt=current.attempt + 1, claimed_at=now)
            row = (
                await conn.execute(
                    update(tasks)
                    .where(
                        tasks.c.id == current.id,
                        tasks.c.attempt == current.attempt,
                        tasks.c.status == current.status.value,
                    )
                    .values(values)
                    .returning(tasks)
                )
            ).first()
        if row is None:
            raise errors.Conflict("the host's run of this command changed; try again")
        return to_task(row)

    @staticmethod
    async def _open_run(conn: Conn, command_id: int, agent_id: int) -> Task | None:
        query = (
            select(tasks)
            .join(command_runs, command_runs.c.task_id == tasks.c.id)
            .where(
                command_runs.c.command_id == command_id,
                command_runs.c.agent_id == agent_id,
                tasks.c.status.in_(OPEN),
            )
            .order_by(tasks.c.id.desc())
            .limit(1)
        )
        row = (await conn.execute(query)).first()
        return None if row is None else to_task(row)

    @staticmethod
    async def _new_run(
        conn: Conn,
        command_id: int,
        agent_id: int,
        task: NewTask,
        now: float,
        lease: dict[str, Any],
    ) -> Task:
        values = {
            **task_row(task, now),
            **lease,
            "status": TaskStatus.ACTIVE.value,
            "attempt": 1,
            "claimed_at": now,
        }
        row = (await conn.execute(insert(tasks).values(values).returning(tasks))).one()
        run = {"task_id": row.id, "command_id": command_id, "agent_id": agent_id}
        await conn.execute(insert(command_runs).values(**run, created_at=now))
        return to_task(row)

    async def command_runs(self, command_id: int, limit: int) -> list[Task]:
        query = (
            select(tasks)
            .join(command_runs, command_runs.c.task_id == tasks.c.id)
            .where(command_runs.c.command_id == command_id)
            .order_by(tasks.c.id.desc())
            .limit(limit)
        )
        async with self._read() as conn:
            return [to_task(r) for r in await conn.execute(query)]

    async def host_variables(self, agent_id: int) -> dict[str, str]:
        query = select(host_variables).where(host_variables.c.agent_id == agent_id)
        async with self._read() as conn:
            return {r.name: r.value for r in await conn.execute(query)}

    async def set_host_variables(self, agent_id: int, values: dict[str, str], now: float) -> None:
        column = host_variables.c
        async with self._write() as conn:
            for name, value in values.items():
                done = await conn.execute(
                    update(host_variables)
                    .where(column.agent_id == agent_id, column.name == name)
                    .values(value=value, updated_at=now)
                )
                if not done.rowcount:
                    row = {"agent_id": agent_id, "name": name, "value": value, "updated_at": now}
                    await conn.execute(insert(host_variables).values(**row))
