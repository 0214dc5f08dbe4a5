"""Queries for registration tokens and the enrollments of hosts that registered with one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Row, insert, select, update

from taskfleet.core import errors
from taskfleet.core.models import Agent, AgentStatus, Enrollment, RegistrationToken, Role
from taskfleet.store.agents import _groups_of
from taskfleet.store.base import Base, Conn, to_agent
from taskfleet.store.tables import (
    accounts,
    agent_groups,
    agents,
    enrollments,
    groups,
    registration_tokens,
    sessions,
)


def _to_token(row: Row[Any]) -> RegistrationToken:
    return RegistrationToken(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        uses=row.uses,
        last_used_at=row.last_used_at,
    )


def _to_enrollment(row: Row[Any]) -> Enrollment:
    return Enrollment(
        id=row.id,
        uuid=row.uuid,
        agent_id=row.agent_id,
        token_id=row.token_id,
        created_at=row.created_at,
        verified_at=row.verified_at,
    )


async def _join_group(conn: Conn, agent_id: int, name: str, now: float) -> None:
    group_id = (await conn.execute(select(groups.c.id).where(groups.c.name == name))).scalar()
    if group_id is None:
        query = insert(groups).values(name=name, created_at=now).returning(groups.c.id)
        group_id = (await conn.execute(query)).scalar_one()
    member = select(agent_groups).where(
        agent_groups.c.agent_id == agent_id, agent_groups.c.group_id == group_id
    )
    if (await conn.execute(member)).first() is None:
        await conn.execute(insert(agent_groups).values(agent_id=agent_id, group_id=group_id))


class RegistrationQueries(Base):
    async def add_registration_token(
        self, name: str, token_hash: str, expires_at: float | None, now: float
    ) -> RegistrationToken:
        values = {"name": name, "token_hash": token_hash, "expires_at": expires_at}
        async with self._write() as conn:
            query = insert(registration_tokens).values(**values, created_at=now, uses=0)
            row = (await conn.execute(query.returning(registration_tokens))).one()
        return _to_token(row)

    async def list_registration_tokens(self) -> list[RegistrationToken]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(registration_tokens).order_by(registration_tokens.c.id)
            )
            return [_to_token(r) for r in rows]

    async def registration_token(
        self, token_id: int | None = None, token_hash: str | None = None
    ) -> RegistrationToken | None:
        column = registration_tokens.c
        where = column.id == token_id if token_hash is None else column.token_hash == token_hash
        async with self._read() as conn:
            row = (await conn.execute(select(registration_tokens).where(where))).first()
        return None if row is None else _to_token(row)

    async def revoke_registration_token(self, token_id: int, now: float) -> RegistrationToken:
        column = registration_tokens.c
        async with self._write() as conn:
            await conn.execute(
                update(registration_tokens)
                .where(column.id == token_id, column.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            row = (
                await conn.execute(select(registration_tokens).where(column.id == token_id))
            ).first()
        if row is None:
            raise errors.NotFound(f"no registration token {token_id}")
        return _to_token(row)

    async def count_registration_token_use(self, token_id: int, now: float) -> None:
        column = registration_tokens.c
        async with self._write() as conn:
            await conn.execute(
                update(registration_tokens)
                .where(column.id == token_id)
                .values(uses=column.uses + 1, last_used_at=now)
            )

    async def add_enrollment(
        self, uuid: str, public_key: str, token_id: int, now: float
    ) -> Enrollment:
        async with self._write() as conn:
            query = insert(enrollments).values(uuid=uuid, token_id=token_id, created_at=now)
            enrollment_id = (await conn.execute(query.returning(enrollments.c.id))).scalar_one()
            agent_id = (
                await conn.execute(
                    insert(agents)
                    .values(
                        name=f"host-{enrollment_id:06d}",
                        tags=[],
                        task_types=[],
                        status=AgentStatus.OFFLINE.value,
                        metadata={},
                        created_at=now,
                        public_key=public_key,
                        verified=False,
                        enabled=False,
                    )
                    .returning(agents.c.id)
                )
            ).scalar_one()
            done = (
                update(enrollments)
                .where(enrollments.c.id == enrollment_id)
                .values(agent_id=agent_id)
                .returning(enrollments)
            )
            row = (await conn.execute(done)).one()
        return _to_enrollment(row)

    async def enrollment(
        self, uuid: str | None = None, agent_id: int | None = None
    ) -> Enrollment | None:
        column = enrollments.c
        where = column.uuid == uuid if agent_id is None else column.agent_id == agent_id
        async with self._read() as conn:
            row = (await conn.execute(select(enrollments).where(where))).first()
        return None if row is None else _to_enrollment(row)

    async def complete_enrollment(
        self,
        enrollment_id: int,
        secret_hash: str,
        group: str,
        token_hash: str,
        token_expires: float,
        now: float,
    ) -> Agent:
        async with self._write() as conn:
            agent_id = (
                await conn.execute(
                    update(enrollments)
                    .where(enrollments.c.id == enrollment_id, enrollments.c.verified_at.is_(None))
                    .values(verified_at=now)
                    .returning(enrollments.c.agent_id)
                )
            ).scalar()
            if agent_id is None:
                raise errors.Conflict("Host already verified")
            agent = await self._activate(conn, agent_id, secret_hash, now)
            await conn.execute(
                insert(sessions).values(
                    token_hash=token_hash, account_id=agent.account_id, expires=token_expires
                )
            )
            if group:
                await _join_group(conn, agent_id, group, now)
            groups_of = await _groups_of(conn, [agent_id])
        return replace(agent, groups=tuple(groups_of.get(agent_id, ())))

    @staticmethod
    async def _activate(conn: Conn, agent_id: int, secret_hash: str, now: float) -> Agent:
        """Gives the agent an account of its own name and enables and verifies it."""
        name = (await conn.execute(select(agents.c.name).where(agents.c.id == agent_id))).scalar()
        if name is None:
            raise errors.NotFound("Host not found")
        account = {"name": name, "role": Role.AGENT.value, "secret_hash": secret_hash}
        query = insert(accounts).values(**account, enabled=True, created_at=now)
        account_id = (await conn.execute(query.returning(accounts.c.id))).scalar_one()
        row = (
            await conn.execute(
                update(agents)
                .where(agents.c.id == agent_id)
                .values(account_id=account_id, enabled=True, verified=True)
                .returning(agents)
            )
        ).one()
        return to_agent(row)
