"""The ports core needs from the outside world, named in the domain's words.

`store/` implements `Store` on SQLite and PostgreSQL; `bus/` implements `Bus`. Services get
them in `__init__`, so tests can hand in the real thing with a temporary database.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from taskfleet.core.models import (
    Account,
    Agent,
    Event,
    Group,
    Job,
    JSONValue,
    LogChunk,
    NewTask,
    Output,
    Progress,
    Role,
    Task,
    TaskFilter,
    TaskStatus,
)


class Clock(Protocol):
    def now(self) -> float:
        """UNIX time in seconds."""


class SystemClock:
    def now(self) -> float:
        return time.time()


class Bus(Protocol):
    """Wake-ups only: the database is the truth, so a lost wake-up costs one poll interval."""

    async def notify(self, channels: Iterable[str]) -> None:
        """Wake every waiter on any of these channels (here or on other replicas)."""

    async def wait(self, channels: Sequence[str], timeout: float) -> bool:
        """Sleep until one of the channels is notified or `timeout` seconds pass.

        Returns True when woken by a notification.
        """

    def wake_all(self) -> None:
        """Wakes every waiter of this process (shutting down, or after a lost link)."""


class AccountStore(Protocol):
    async def add_account(self, name: str, role: Role, secret_hash: str, now: float) -> Account:
        """Raises `Conflict` when the name is taken."""

    async def remove_account(self, name: str) -> None:
        """Removes the account, its sessions and its agent. Raises `NotFound`."""

    async def list_accounts(self) -> list[Account]: ...

    async def account_with_hash(self, name: str) -> tuple[Account, str] | None:
        """The account and its secret hash, for verifying a login."""

    async def set_secret_hash(self, account_id: int, secret_hash: str) -> None: ...

    async def add_session(self, token_hash: str, account_id: int, expires: float) -> None: ...

    async def session_account(self, token_hash: str, now: float) -> Account | None:
        """The account behind an unexpired session."""

    async def remove_session(self, token_hash: str) -> bool: ...

    async def get_setting(self, key: str) -> JSONValue: ...

    async def set_setting(self, key: str, value: JSONValue) -> None: ...


class AgentStore(Protocol):
    async def add_agent(self, name: str, account_id: int | None, now: float) -> Agent:
        """Raises `Conflict` when the name is taken."""

    async def get_agent(self, name: str) -> Agent | None: ...

    async def get_agent_by_id(self, agent_id: int) -> Agent | None: ...

    async def list_agents(self) -> list[Agent]: ...

    async def update_agent(self, agent_id: int, **fields: object) -> Agent:
        """Sets plain agent fields (tags, status, online, ...). Raises `NotFound`."""

    async def delete_agent(self, agent_id: int) -> None: ...

    async def set_agent_groups(self, agent_id: int, groups: Sequence[str], now: float) -> Agent:
        """Makes the agent a member of exactly these groups, creating missing ones."""

    async def add_group(self, name: str, now: float) -> Group: ...

    async def list_groups(self) -> list[Group]: ...

    async def group_members(self, name: str) -> list[Agent]: ...

    async def delete_group(self, name: str) -> None: ...

    async def add_event(self, agent_id: int, time: float, data: JSONValue, bound: int) -> Event:
        """Appends an event, dropping the agent's oldest beyond `bound`."""

    async def list_events(self, agent_id: int, limit: int) -> list[Event]:
        """Oldest first, at most the newest `limit`."""


class TaskStore(Protocol):
    async def add_tasks(self, tasks: Sequence[NewTask], now: float) -> list[Task]:
        """Inserts the tasks in one transaction: they are on disk when this returns."""

    async def get_task(self, task_id: int) -> Task | None: ...

    async def list_tasks(self, query: TaskFilter) -> list[Task]: ...

    async def count_tasks_by_status(self) -> dict[TaskStatus, int]: ...

    async def claim_task(self, agent: Agent, now: float, lease_seconds: float) -> Task | None:
        """Leases the best queued task this agent may run, or None.

        Two claimers never get the same task for the same attempt; the attempt counter
        is incremented by the claim.
        """

    async def extend_lease(
        self,
        task_id: int,
        agent_id: int,
        attempt: int,
        lease_until: float,
        progress: Progress | None,
        now: float,
    ) -> Task:
        """Extends the current attempt's lease. Raises `Conflict` for a stale attempt."""

    async def finish_task(
        self,
        task_id: int,
        agent_id: int,
        attempt: int,
        status: TaskStatus,
        result: JSONValue,
        error: str | None,
        now: float,
    ) -> tuple[Task, bool]:
        """Records the outcome of the current attempt; returns (task, newly_recorded).

        A repeat for an attempt already finished the same way returns (task, False);
        any other stale report raises `Conflict` and changes nothing.
        """

    async def request_cancel(self, task_id: int, now: float) -> Task: ...

    async def requeue_task(self, task_id: int, now: float, extra_attempts: int) -> Task:
        """Puts a finished task back in the queue, allowing `extra_attempts` more attempts.
        Raises `Conflict` for a task that has not finished."""

    async def release_agent_tasks(self, agent_id: int, now: float) -> list[Task]:
        """Puts the agent's active tasks back in the queue (sign-off, lost connection); a
        task on its last allowed attempt fails instead, and cancel requests are confirmed."""

    async def expire_leases(self, now: float) -> list[Task]:
        """Requeues tasks whose lease expired, fails those out of attempts or past their
        timeout, and confirms cancellations nobody is left to confirm."""

    async def append_log(self, task_id: int, attempt: int, time: float, text: str) -> None: ...

    async def read_log(self, task_id: int, after_id: int, limit: int) -> list[LogChunk]: ...

    async def add_output(self, task_id: int, time: float, data: JSONValue) -> Output: ...

    async def list_outputs(self, task_id: int) -> list[Output]: ...

    async def add_job(
        self, name: str, type: str, priority: int, settings: JSONValue, now: float
    ) -> Job: ...

    async def get_job(self, job_id: int) -> Job | None: ...

    async def list_jobs(self, limit: int) -> list[Job]: ...


class Store(AccountStore, AgentStore, TaskStore, Protocol):
    """Everything the engine keeps."""

    async def close(self) -> None: ...
