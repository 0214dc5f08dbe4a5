"""Domain types: frozen records and string enums, free of any storage or wire concern.

Times are UNIX seconds (float, UTC): cheap to compare in SQL on both backends and
trivially rendered in each dialect's own time format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

#: A task payload, result or event as decoded JSON. The server never looks inside.
JSONValue: TypeAlias = Any


class Role(StrEnum):
    ADMIN = "admin"  #: operators: submit work, manage the fleet
    AGENT = "agent"  #: hosts: take work and report on it


class TaskStatus(StrEnum):
    QUEUED = "queued"  #: waiting for an agent
    ACTIVE = "active"  #: leased to an agent for the current attempt
    COMPLETED = "completed"  #: a result was recorded
    FAILED = "failed"  #: the agent reported an error, or attempts ran out, or it timed out
    CANCEL_REQUESTED = "cancel-requested"  #: an admin asked; the agent has not confirmed yet
    CANCELLED = "cancelled"  #: cancelled before running, or confirmed by the agent

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class TargetKind(StrEnum):
    AGENT = "agent"  #: one agent, by name
    GROUP = "group"  #: any one member of a group, by group name
    TAGS = "tags"  #: any agent carrying every tag in the set
    ANY = "any"  #: any agent that supports the task type


class AgentStatus(StrEnum):
    OFFLINE = "offline"
    STARTING = "starting"
    AWAKE = "awake"
    ASLEEP = "asleep"
    ERROR = "error"
    SHUTDOWN = "shutdown"
    TIMEOUT = "timeout"
    TESTING = "testing"  #: Flamenco workers started with `--test` acknowledge this


class RegistrationPolicy(StrEnum):
    CLOSED = "closed"  #: accounts come only from the CLI or the admin API
    OPEN = "open"  #: anyone may register an agent (dutserver's self-registration switch on)
    TOKEN = "token"  #: registering needs a registration token issued by an admin
    APPROVAL = "approval"  #: anyone may register, but new agents wait for an admin's approval


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    id: int
    name: str
    role: Role
    enabled: bool = True
    created_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is calling: resolved by a transport from credentials, checked by services."""

    name: str
    role: Role
    account_id: int | None = None  #: None for API keys from config

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    id: int
    name: str
    account_id: int | None = None
    nickname: str = ""
    tags: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    task_types: tuple[str, ...] = ()  #: empty means "takes any type"
    status: AgentStatus = AgentStatus.OFFLINE
    requested_status: AgentStatus | None = None
    requested_lazy: bool = False  #: apply the requested status after the current task
    online: bool = False
    last_seen: float | None = None
    version: str = ""
    platform: str = ""
    public_key: str | None = None
    verified: bool = False
    enabled: bool = True
    metadata: dict[str, JSONValue] = field(default_factory=dict)
    created_at: float = 0.0
    #: The agent receives schedule definitions and runs them itself (raintank agents);
    #: otherwise the server creates a task for it on every run of a schedule routed to it.
    runs_schedules: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    id: int
    name: str
    created_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: int
    name: str
    type: str = ""
    priority: int = 0
    settings: dict[str, JSONValue] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an agent's attempt at a task ended, as it reports it (see `Store.finish_tasks`)."""

    task_id: int
    agent_id: int
    attempt: int
    status: TaskStatus  #: completed, failed or cancelled
    result: JSONValue = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    percent: float | None = None
    eta: float | None = None  #: seconds remaining, as the agent estimates
    activity: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewTask:
    """What a submitter asks for; the engine fills in the rest."""

    type: str
    payload: JSONValue = None
    target_kind: TargetKind = TargetKind.ANY
    target: str = ""  #: agent name, group name, or comma-joined tags
    priority: int = 0
    max_attempts: int = 3
    timeout_seconds: float | None = None
    job_id: int | None = None
    job_priority: int = 0  #: copied from the job: claims order by it before `priority`
    #: Failures by this many different agents fail the task for good; below that a failure
    #: requeues it for another agent ("soft-fails"). 1: the first failure is final.
    fail_limit: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    id: int
    type: str
    payload: JSONValue = None
    target_kind: TargetKind = TargetKind.ANY
    target: str = ""
    priority: int = 0
    status: TaskStatus = TaskStatus.QUEUED
    attempt: int = 0  #: counts claims; never repeats, so stale reports stay stale
    max_attempts: int = 3  #: the last attempt number allowed (a requeue raises it)
    lease_owner: int | None = None  #: agent id holding the current attempt
    lease_expires: float | None = None
    timeout_seconds: float | None = None
    progress: Progress = field(default_factory=Progress)
    result: JSONValue = None
    error: str | None = None
    job_id: int | None = None
    job_priority: int = 0
    fail_limit: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0
    claimed_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFilter:
    status: TaskStatus | None = None
    type: str | None = None
    agent_id: int | None = None  #: tasks leased to, or last run by, this agent
    target: str | None = None
    job_id: int | None = None
    after_id: int = 0  #: keyset pagination: only ids greater than this
    limit: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    id: int
    agent_id: int
    time: float
    data: JSONValue


@dataclass(frozen=True, slots=True, kw_only=True)
class LogChunk:
    id: int
    task_id: int
    attempt: int
    time: float
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Output:
    id: int
    task_id: int
    time: float
    data: JSONValue


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJobTask:
    """One task of a job being submitted; `parents` name other tasks of the same job by
    their index in the submission or by their name."""

    name: str
    type: str
    commands: tuple[dict[str, JSONValue], ...]  #: each `{"name": str, "settings": {...}}`
    priority: int = 0
    parents: tuple[int | str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    name: str
    type: str = ""
    priority: int = 0
    settings: dict[str, JSONValue] = field(default_factory=dict)
    tasks: tuple[NewJobTask, ...] = ()
    fail_limit: int | None = None  #: None: the server's `task_fail_limit`


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSummary:
    """A job with its tasks counted by status."""

    job: Job
    counts: dict[TaskStatus, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def status(self) -> str:
        """`failed` once any task failed for good, `completed` when all did, `active`
        while any runs, `cancelled` when every task ended and some were cancelled,
        else `queued`."""
        counts, total = self.counts, self.total
        if counts.get(TaskStatus.FAILED):
            return TaskStatus.FAILED.value
        if total and counts.get(TaskStatus.COMPLETED, 0) == total:
            return TaskStatus.COMPLETED.value
        if counts.get(TaskStatus.ACTIVE) or counts.get(TaskStatus.CANCEL_REQUESTED):
            return TaskStatus.ACTIVE.value
        if total and not counts.get(TaskStatus.QUEUED) and counts.get(TaskStatus.CANCELLED):
            return TaskStatus.CANCELLED.value
        return TaskStatus.QUEUED.value


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFailure:
    """One agent's failed attempt at a task (Flamenco's `failed_by_workers`)."""

    task_id: int
    attempt: int
    agent_id: int
    agent_name: str | None  #: None once the agent is deleted
    time: float
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BlacklistEntry:
    """An agent that failed too many tasks of a job's task type no longer gets them."""

    job_id: int
    task_type: str
    agent_id: int
    agent_name: str
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOutput:
    """A file an agent produced while running one of the job's tasks."""

    id: int
    job_id: int
    task_id: int | None
    agent_id: int | None
    time: float
    data: JSONValue


class RouteKind(StrEnum):
    ANY = "any"  #: one online agent, moved to another when it goes offline
    TAGS = "tags"  #: every agent carrying at least one of the tags
    AGENTS = "agents"  #: the agents with these ids


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Which agents a schedule runs on."""

    kind: RouteKind = RouteKind.ANY
    tags: tuple[str, ...] = ()  #: for TAGS
    agent_ids: tuple[int, ...] = ()  #: for AGENTS


@dataclass(frozen=True, slots=True, kw_only=True)
class NewSchedule:
    """A task definition that runs every `interval` seconds on the agents its route selects."""

    name: str
    type: str
    interval: int  #: seconds between runs
    route: Route = field(default_factory=Route)
    config: dict[str, JSONValue] = field(default_factory=dict)  #: the runs' payload
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    id: int
    name: str
    type: str
    interval: int
    route: Route = field(default_factory=Route)
    config: dict[str, JSONValue] = field(default_factory=dict)
    enabled: bool = True
    assigned_agent: int | None = None  #: the agent an ANY route runs on now
    next_run: float = 0.0  #: when the next tasks for agents that take tasks are created
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleFilter:
    name_like: str | None = None  #: an SQL LIKE pattern (`%` and `_` are wildcards)
    type: str | None = None
    enabled: bool | None = None
    order_by: str = "id"  #: "id" or "name"
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationToken:
    """A credential an admin hands out for hosts to register with (Django Remotes'
    registration token). Only its SHA-256 is kept; the token itself is shown once."""

    id: int
    name: str
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    uses: int = 0  #: registrations made with it
    last_used_at: float | None = None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrollment:
    """A host that registered with a token and its public key. Its agent stays disabled
    until the host proves it holds the private key; `uuid` is a secret shared with the host
    (sent to it encrypted to its key), from which Django Remotes derives a Fernet key."""

    id: int
    uuid: str
    agent_id: int
    token_id: int | None
    created_at: float = 0.0
    verified_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewCommandGroup:
    """Commands run in group order, then command order, on the members of `host_groups`,
    while the group is active and inside its time window (a bound of None is open)."""

    name: str
    order: int = 0
    active: bool = True
    starts_at: float | None = None
    ends_at: float | None = None
    host_groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandGroup(NewCommandGroup):
    id: int
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NewCommand:
    """Python source a host runs once (Django Remotes' commands). `variables` are the host
    variables it reads; item i of its result list is stored in `result_variables[i]`."""

    group_id: int
    name: str
    source: str
    order: int = 0
    active: bool = True
    settings: dict[str, str] = field(default_factory=dict)
    variables: tuple[str, ...] = ()
    result_variables: tuple[str, ...] = ()
    timeout_seconds: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Command(NewCommand):
    id: int
    created_at: float = 0.0
    updated_at: float = 0.0
