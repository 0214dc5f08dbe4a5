"""Queries for accounts, sessions and server settings."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update

from taskfleet.core import errors
from taskfleet.core.models import Account, JSONValue, Role
from taskfleet.store.base import Base, to_account
from taskfleet.store.tables import accounts, agents, sessions, settings


class AccountQueries(Base):
    async def add_account(self, name: str, role: Role, secret_hash: str, now: float) -> Account:
        async with self._write() as conn:
            if (await conn.execute(select(accounts.c.id).where(accounts.c.name == name))).first():
                raise errors.Conflict(f"an account named {name!r} already exists")
            row = (
                await conn.execute(
                    insert(accounts)
                    .values(
                        name=name,
                        role=role.value,
                        secret_hash=secret_hash,
                        enabled=True,
                        created_at=now,
                    )
                    .returning(accounts)
                )
            ).one()
        return to_account(row)

    async def remove_account(self, name: str) -> None:
        async with self._write() as conn:
            found = (
                await conn.execute(select(accounts.c.id).where(accounts.c.name == name))
            ).first()
            if found is None:
                raise errors.NotFound(f"no account named {name!r}")
            await conn.execute(delete(sessions).where(sessions.c.account_id == found.id))
            await conn.execute(delete(agents).where(agents.c.account_id == found.id))
            await conn.execute(delete(accounts).where(accounts.c.id == found.id))

    async def list_accounts(self) -> list[Account]:
        async with self._read() as conn:
            rows = await conn.execute(select(accounts).order_by(accounts.c.name))
            return [to_account(r) for r in rows]

    async def account_with_hash(self, name: str) -> tuple[Account, str] | None:
        async with self._read() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.name == name))).first()
        return None if row is None else (to_account(row), row.secret_hash)

    async def set_secret_hash(self, account_id: int, secret_hash: str) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(accounts).where(accounts.c.id == account_id).values(secret_hash=secret_hash)
            )

    async def add_session(self, token_hash: str, account_id: int, expires: float) -> None:
        async with self._write() as conn:
            await conn.execute(
                insert(sessions).values(
                    token_hash=token_hash, account_id=account_id, expires=expires
                )
            )

    async def session_account(self, token_hash: str, now: float) -> Account | None:
        query = (
            select(accounts)
            .join(sessions, sessions.c.account_id == accounts.c.id)
            .where(sessions.c.token_hash == token_hash, sessions.c.expires > now)
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else to_account(row)

    async def remove_session(self, token_hash: str) -> bool:
        async with self._write() as conn:
            result = await conn.execute(delete(sessions).where(sessions.c.token_hash == token_hash))
        return bool(result.rowcount)

    async def get_setting(self, key: str) -> JSONValue:
        async with self._read() as conn:
            row = (
                await conn.execute(select(settings.c.value).where(settings.c.key == key))
            ).first()
        return None if row is None else row.value

    async def set_setting(self, key: str, value: JSONValue) -> None:
        async with self._write() as conn:
            done = await conn.execute(
                update(settings).where(settings.c.key == key).values(value=value)
            )
            if not done.rowcount:
                await conn.execute(insert(settings).values(key=key, value=value))
