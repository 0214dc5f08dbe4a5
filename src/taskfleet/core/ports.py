"""The ports core needs from the outside world, named in the domain's words.

`store/` implements `Store` on SQLite and PostgreSQL; `bus/` implements `Bus`. Services get
them in `__init__`, so tests can hand in the real thing with a temporary database.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Protocol

from taskfleet.core import errors
from taskfleet.core.models import (
    Account,
    Agent,
    BlacklistEntry,
    Command,
    CommandGroup,
    Enrollment,
    Event,
    Group,
    Job,
    JobOutput,
    JobSummary,
    JSONValue,
    LogChunk,
    NewCommand,
    NewCommandGroup,
    NewSchedule,
    NewTask,
    Outcome,
    Output,
    Progress,
    RegistrationToken,
    Role,
    Schedule,
    ScheduleFilter,
    Task,
    TaskFailure,
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
    async def add_agent(
        self, name: str, account_id: int | None, now: float, runs_schedules: bool = False
    ) -> Agent:
        """Raises `Conflict` when the name is taken."""

    async def get_agent(self, name: str) -> Agent | None: ...

    async def get_agent_by_id(self, agent_id: int) -> Agent | None: ...

    async def list_agents(self) -> list[Agent]: ...

    async def touch_agents(self, agent_ids: Sequence[int], now: float) -> None:
        """Sets `last_seen` of these agents (those that are gone are skipped)."""
        ...

    async def agents_offline(self, agent_ids: Sequence[int], now: float) -> None:
        """Marks these agents offline (as `update_agent` with online, status and last_seen
        would, one by one)."""
        ...

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
    async def add_tasks(
        self,
        tasks: Sequence[NewTask],
        now: float,
        leases: Mapping[int, tuple[int, float]] | None = None,
    ) -> list[Task]:
        """Inserts the tasks in one transaction: they are on disk when this returns.

        `leases` maps a task's index to (agent id, lease expiry): that task is inserted
        already claimed by the agent (active, attempt 1), as `claim_task` would leave it.
        """

    async def get_task(self, task_id: int) -> Task | None: ...

    async def list_tasks(self, query: TaskFilter) -> list[Task]: ...

    async def count_tasks_by_status(self) -> dict[TaskStatus, int]: ...

    async def any_queued(self) -> bool:
        """Whether any task is queued, cheaply at any queue depth and history length."""
        ...

    async def claim_task(self, agent: Agent, now: float, lease_seconds: float) -> Task | None:
        """Leases the best queued task this agent may run, or None.

        Two claimers never get the same task for the same attempt; the attempt counter
        is incremented by the claim.
        """

    async def claim_tasks(
        self, claims: Sequence[tuple[Agent, float]], now: float
    ) -> list[Task | None]:
        """`claim_task` for each (agent, lease seconds) in one transaction, in order: one
        commit for all of them. The answers are in the same order."""
        ...

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

    async def finish_tasks(
        self, outcomes: Sequence[Outcome], now: float
    ) -> list[tuple[Task, bool] | errors.Error]:
        """Records each outcome of a current attempt in one transaction (one commit for all
        of them); answers in the same order with (task, newly_recorded) or the error that
        refuses that outcome alone.

        A repeat for an attempt already finished the same way answers (task, False); any
        other stale report answers `Conflict` (`NotFound` for no such task) and changes
        nothing.
        """
        ...

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
        """`finish_tasks` for one outcome; raises the error that refuses it."""

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

    async def get_job(self, job_id: int) -> Job | None: ...


class JobStore(Protocol):
    async def add_job_with_tasks(
        self,
        job: Job,
        new: Sequence[NewTask],
        edges: Sequence[tuple[int, int]],
        now: float,
    ) -> tuple[Job, list[Task]]:
        """Inserts the job and its tasks in one transaction; `edges` are (child, parent)
        indexes into `new`. The tasks are queued in the order given."""

    async def job_summaries(self, limit: int, job_id: int | None = None) -> list[JobSummary]:
        """Newest jobs first, with their tasks counted by status."""

    async def task_parent_ids(self, task_id: int) -> list[int]: ...

    async def failures_of_task(self, task_id: int) -> list[TaskFailure]:
        """The failed attempts still held against the task (a requeue clears them)."""

    async def blacklist_of_job(self, job_id: int) -> list[BlacklistEntry]: ...

    async def fail_task(
        self,
        task_id: int,
        agent_id: int,
        attempt: int,
        error: str,
        now: float,
        *,
        blacklist_threshold: int,
        candidates: Collection[int],
    ) -> tuple[Task, bool]:
        """Records the current attempt as failed by the agent; returns (task, newly_recorded).

        Below the task's `fail_limit`, while some agent in `candidates` has neither failed
        it nor been blacklisted, the task goes back to the queue; otherwise it fails for
        good, and so do the queued tasks that depend on it. An agent that has failed
        `blacklist_threshold` tasks of a job's type is blacklisted for them. A repeat of a
        recorded failure returns (task, False); any other stale report raises `Conflict`.
        """

    async def requeue_failed_tasks(
        self, job_id: int, now: float, extra_attempts: int
    ) -> list[Task]:
        """Queues every failed task of the job again, forgetting their failures and the
        job's blacklist."""

    async def release_task(self, task_id: int, agent_id: int, attempt: int, now: float) -> Task:
        """The agent gives back its current attempt: the task is queued again (failed on
        the last attempt allowed, cancelled when a cancel was requested)."""

    async def add_job_output(
        self,
        job_id: int,
        task_id: int | None,
        agent_id: int | None,
        time: float,
        data: JSONValue,
        bound: int,
    ) -> JobOutput:
        """Appends an output, dropping the job's oldest beyond `bound`."""

    async def list_job_outputs(self, job_id: int, limit: int) -> list[JobOutput]:
        """Oldest first, at most the newest `limit`."""


class ScheduleStore(Protocol):
    async def add_schedule(
        self, new: NewSchedule, assigned_agent: int | None, next_run: float, now: float
    ) -> Schedule:
        """Raises `Conflict` when the name is taken."""

    async def get_schedule(self, schedule_id: int) -> Schedule | None: ...

    async def list_schedules(self, query: ScheduleFilter) -> list[Schedule]: ...

    async def update_schedule(
        self,
        schedule_id: int,
        new: NewSchedule,
        assigned_agent: int | None,
        next_run: float | None,
        now: float,
    ) -> Schedule:
        """Replaces the definition, and `next_run` unless it is None. Raises `NotFound`, or
        `Conflict` when the name is taken."""

    async def delete_schedule(self, schedule_id: int) -> Schedule | None:
        """Deletes the schedule (the tasks of its runs stay); returns what was deleted."""

    async def schedules_for_agent(self, agent: Agent) -> list[Schedule]:
        """The enabled schedules whose route selects this agent, in id order."""

    async def due_schedules(self, now: float, limit: int) -> list[Schedule]:
        """Enabled schedules whose `next_run` has come, oldest first."""

    async def start_run(
        self,
        schedule_id: int,
        due: float,
        next_run: float,
        runs: Sequence[tuple[int, NewTask]],
        now: float,
    ) -> list[Task] | None:
        """Moves the schedule's `next_run` from `due` to `next_run` and, in the same
        transaction, queues one task per (agent id, task) pair, except for agents whose
        task from an earlier run of this schedule is still queued. Returns None, creating
        nothing, when `next_run` is no longer `due` (another replica started this run)."""

    async def stranded_schedules(self, offline_before: float, limit: int) -> list[Schedule]:
        """ANY-routed schedules whose agent is unassigned, gone, disabled, or offline and
        last seen before `offline_before`."""

    async def assign_schedule(
        self, schedule_id: int, expected: int | None, agent_id: int | None
    ) -> bool:
        """Moves an ANY-routed schedule from agent `expected` to `agent_id`; False when it
        was no longer on `expected`."""

    async def schedule_runs(self, schedule_id: int, after_id: int, limit: int) -> list[Task]:
        """The tasks created by the schedule's runs, in id order."""


class RegistrationStore(Protocol):
    async def add_registration_token(
        self, name: str, token_hash: str, expires_at: float | None, now: float
    ) -> RegistrationToken: ...

    async def list_registration_tokens(self) -> list[RegistrationToken]: ...

    async def registration_token(
        self, token_id: int | None = None, token_hash: str | None = None
    ) -> RegistrationToken | None:
        """The token with this id or this hash."""

    async def revoke_registration_token(self, token_id: int, now: float) -> RegistrationToken:
        """Revokes it (a revoked token stays revoked). Raises `NotFound`."""

    async def count_registration_token_use(self, token_id: int, now: float) -> None: ...

    async def add_enrollment(
        self, uuid: str, public_key: str, token_id: int, now: float
    ) -> Enrollment:
        """Creates the enrollment and its agent (`host-<6-digit enrollment id>`, disabled,
        unverified, holding the public key) in one transaction."""

    async def enrollment(
        self, uuid: str | None = None, agent_id: int | None = None
    ) -> Enrollment | None: ...

    async def complete_enrollment(
        self,
        enrollment_id: int,
        secret_hash: str,
        group: str,
        token_hash: str,
        token_expires: float,
        now: float,
    ) -> Agent:
        """In one transaction: marks the enrollment verified (compare-and-set: `Conflict`
        when it already was), gives its agent an agent account with this secret hash and a
        session for `token_hash`, enables and verifies the agent, and adds it to `group`
        (created when missing; "" for none)."""


class CommandStore(Protocol):
    async def add_command_group(self, new: NewCommandGroup, now: float) -> CommandGroup:
        """Creates missing host groups. Raises `Conflict` when the name is taken."""

    async def update_command_group(
        self, group_id: int, new: NewCommandGroup, now: float
    ) -> CommandGroup:
        """Raises `NotFound`, or `Conflict` when the name is taken."""

    async def get_command_group(self, group_id: int) -> CommandGroup | None: ...

    async def list_command_groups(self) -> list[CommandGroup]:
        """In run order: by `order`, then id."""

    async def delete_command_group(self, group_id: int) -> bool:
        """Deletes the group and its commands (the tasks of their runs stay)."""

    async def add_command(self, new: NewCommand, now: float) -> Command:
        """Raises `NotFound` for an unknown group."""

    async def update_command(self, command_id: int, new: NewCommand, now: float) -> Command:
        """Raises `NotFound` for an unknown command or group."""

    async def get_command(self, command_id: int) -> Command | None: ...

    async def list_commands(self, group_id: int | None) -> list[Command]:
        """In run order: by group order, group id, command order, command id."""

    async def delete_command(self, command_id: int) -> bool: ...

    async def pending_commands(self, agent_id: int, now: float) -> list[tuple[int, int]]:
        """(group id, command id) of the commands the agent should run now, in run order:
        active commands of active groups inside their time window, assigned to a host group
        of the agent, that the agent has no finished (or cancel-requested) run of."""

    async def command_for_agent(
        self, command_id: int, agent_id: int, now: float, available: bool
    ) -> Command | None:
        """The command when its group is assigned to a host group of the agent; with
        `available`, only when it is also active, its group active and in its window."""

    async def start_command_run(
        self, command_id: int, agent_id: int, task: NewTask, now: float, lease_until: float
    ) -> Task:
        """The task of the agent's current run of the command, leased to the agent until
        `lease_until`: an active one has its lease extended, a queued one (its lease ran
        out) is leased again with a new attempt, else a new task is created leased."""

    async def command_runs(self, command_id: int, limit: int) -> list[Task]:
        """The tasks of the command's runs, newest first."""

    async def host_variables(self, agent_id: int) -> dict[str, str]: ...

    async def set_host_variables(self, agent_id: int, values: dict[str, str], now: float) -> None:
        """Sets (creating or replacing) these variables of the agent."""


class Store(
    AccountStore,
    AgentStore,
    TaskStore,
    JobStore,
    ScheduleStore,
    RegistrationStore,
    CommandStore,
    Protocol,
):
    """Everything the engine keeps."""

    async def close(self) -> None: ...
