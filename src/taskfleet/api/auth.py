"""Who is calling: `Authorization: Bearer <session token or API key>` for admins (and agents
with sessions), HTTP Basic with name and secret for agents."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import HTTPConnection

from taskfleet.core import errors
from taskfleet.core.accounts import NAME_RE
from taskfleet.core.models import Agent, Principal
from taskfleet.services import Services


def services_of(conn: HTTPConnection) -> Services:
    return conn.app.state.services  # type: ignore[no-any-return]


async def services(conn: HTTPConnection) -> Services:
    """FastAPI dependency: the app's services. Async, because FastAPI runs a plain `def`
    dependency in a worker thread: a thread hop on every request."""
    return services_of(conn)


def basic_credentials(value: str) -> tuple[str, str]:
    """Decodes the payload of `Authorization: Basic …`. Raises `Unauthorized`."""
    try:
        name, sep, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise errors.Unauthorized("malformed Basic credentials") from None
    if not sep:
        raise errors.Unauthorized("malformed Basic credentials")
    if not NAME_RE.match(name):
        # No account can have this name; answering here also keeps bytes such as NUL,
        # which PostgreSQL refuses in text, away from the database.
        raise errors.Unauthorized("invalid credentials")
    return name, secret


async def principal_from(conn: HTTPConnection) -> Principal:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    found = services_of(conn)
    if scheme.lower() == "bearer" and value:
        return await found.accounts.resolve_token(value)
    if scheme.lower() == "basic" and value:
        return await found.accounts.authenticate(*basic_credentials(value))
    raise errors.Unauthorized("send `Authorization: Bearer <token>` or Basic credentials")


async def caller(conn: HTTPConnection) -> Principal:
    """FastAPI dependency: any authenticated caller."""
    return await principal_from(conn)


async def admin(conn: HTTPConnection) -> Principal:
    """FastAPI dependency: an admin."""
    principal = await principal_from(conn)
    if not principal.is_admin:
        raise errors.Forbidden("this needs an admin account")
    return principal


async def agent(conn: HTTPConnection) -> Agent:
    """FastAPI dependency: the calling agent's record."""
    principal = await principal_from(conn)
    return await services_of(conn).agents.for_principal(principal)
