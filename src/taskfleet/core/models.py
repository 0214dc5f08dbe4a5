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
