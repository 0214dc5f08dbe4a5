"""The one `Store` implementation, on SQLite or PostgreSQL."""

from __future__ import annotations

from taskfleet.store.accounts import AccountQueries
from taskfleet.store.agents import AgentQueries
from taskfleet.store.commands import CommandQueries
from taskfleet.store.engine import migrate, open_engine
from taskfleet.store.jobs import JobQueries
from taskfleet.store.outputs import OutputQueries
from taskfleet.store.registration import RegistrationQueries
from taskfleet.store.schedules import ScheduleQueries
from taskfleet.store.tasks import TaskQueries


class SqlStore(
    AccountQueries,
    AgentQueries,
    TaskQueries,
    JobQueries,
    OutputQueries,
    ScheduleQueries,
    RegistrationQueries,
    CommandQueries,
):
    """Implements `taskfleet.core.ports.Store`."""


async def open_store(url: str, synchronous: str = "NORMAL") -> SqlStore:
    """Opens the database at `url` and brings its schema up to date."""
    engine = open_engine(url, synchronous)
    await migrate(engine)
    return SqlStore(engine)
