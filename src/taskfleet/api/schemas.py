"""Wire models of the native API: pydantic, for validation and the OpenAPI spec.

Core knows nothing of these; `from_*` functions translate domain records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskfleet.core import models
from taskfleet.core.models import AgentStatus, RegistrationPolicy, Role, TaskStatus


def iso(ts: float | None) -> str | None:
    """RFC 3339 in UTC with microseconds, or None."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Login(Strict):
    name: str = Field(max_length=64)
    secret: str = Field(max_length=1024)


class Session(BaseModel):
    token: str
    expires_in: int = Field(description="seconds")


class AccountIn(Strict):
    name: str = Field(max_length=64)
    role: Role
    secret: str = Field(min_length=1, max_length=1024)


class AccountOut(BaseModel):
    id: int
    name: str
    role: Role
    enabled: bool
    created_at: str | None

    @classmethod
    def of(cls, a: models.Account) -> AccountOut:
        return cls(
            id=a.id, name=a.name, role=a.role, enabled=a.enabled, created_at=iso(a.created_at)
        )


class Registration(Strict):
    name: str = Field(max_length=64)
    secret: str = Field(min_length=1, max_length=1024)


class Policy(Strict):
    policy: RegistrationPolicy


class AgentOut(BaseModel):
    name: str
    nickname: str
    tags: list[str]
    groups: list[str]
    task_types: list[str]
    status: AgentStatus
    requested_status: AgentStatus | None
    requested_lazy: bool
    online: bool
    last_seen: str | None
    version: str
    platform: str
    public_key: str | None
    verified: bool
    enabled: bool
    metadata: dict[str, Any]
    created_at: str | None

    @classmethod
    def of(cls, a: models.Agent) -> AgentOut:
        return cls(
            name=a.name,
            nickname=a.nickname,
            tags=list(a.tags),
            groups=list(a.groups),
            task_types=list(a.task_types),
            status=a.status,
            requested_status=a.requested_status,
            requested_lazy=a.requested_lazy,
            online=a.online,
            last_seen=iso(a.last_seen),
            version=a.version,
            platform=a.platform,
            public_key=a.public_key,
            verified=a.verified,
            enabled=a.enabled,
            metadata=a.metadata,
            created_at=iso(a.created_at),
        )


class AgentPatch(Strict):
    enabled: bool | None = None
    tags: list[str] | None = Field(default=None, max_length=64)
    groups: list[str] | None = Field(default=None, max_length=64)
    nickname: str | None = Field(default=None, max_length=200)
    metadata: dict[str, Any] | None = None
    requested_status: AgentStatus | None = None
    lazy: bool = Field(default=False, description="apply requested_status after the current task")


class GroupIn(Strict):
    name: str = Field(max_length=64)


class GroupOut(BaseModel):
    name: str
    created_at: str | None


class JobIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    type: str = Field(default="", max_length=128)
    priority: int = 0
    settings: dict[str, Any] = Field(default_factory=dict)


class JobOut(BaseModel):
    id: int
    name: str
    type: str
    priority: int
    settings: dict[str, Any]
    created_at: str | None

    @classmethod
    def of(cls, j: models.Job) -> JobOut:
        return cls(
            id=j.id,
            name=j.name,
            type=j.type,
            priority=j.priority,
            settings=j.settings,
            created_at=iso(j.created_at),
        )


class TaskIn(Strict):
    type: str = Field(min_length=1, max_length=128)
    payload: Any = None
    agent: str | None = Field(default=None, description="run on this agent")
    group: str | None = Field(default=None, description="run on any one member of this group")
    tags: list[str] | None = Field(default=None, description="run on an agent with all tags")
    broadcast: bool = Field(default=False, description="one task per member of `group`")
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    max_attempts: int = Field(default=3, ge=1, le=100)
    timeout_seconds: float | None = Field(default=None, gt=0, le=30 * 86400)
    job_id: int | None = None

    @model_validator(mode="after")
    def _one_target(self) -> TaskIn:
        given = [n for n in ("agent", "group", "tags") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"give at most one of agent, group and tags (got {', '.join(given)})")
        if self.broadcast and not self.group:
            raise ValueError("broadcast needs a group")
        return self

    def to_new(self) -> models.NewTask:
        kind, target = models.TargetKind.ANY, ""
        if self.agent:
            kind, target = models.TargetKind.AGENT, self.agent
        elif self.group:
            kind, target = models.TargetKind.GROUP, self.group
        elif self.tags:
            kind, target = models.TargetKind.TAGS, ",".join(self.tags)
        return models.NewTask(
            type=self.type,
            payload=self.payload,
            target_kind=kind,
            target=target,
            priority=self.priority,
            max_attempts=self.max_attempts,
            timeout_seconds=self.timeout_seconds,
            job_id=self.job_id,
        )


class TaskBatch(Strict):
    tasks: list[TaskIn] = Field(min_length=1, max_length=10_000)


class ProgressOut(BaseModel):
    percent: float | None
    eta: float | None
    activity: str


class TaskOut(BaseModel):
    id: int
    type: str
    payload: Any
    target_kind: models.TargetKind
    target: str
    priority: int
    status: TaskStatus
    attempt: int
    max_attempts: int
    agent_id: int | None = Field(description="the agent holding or last holding the lease")
    lease_expires: str | None
    timeout_seconds: float | None
    progress: ProgressOut
    result: Any
    error: str | None
    job_id: int | None
    created_at: str | None
    updated_at: str | None
    claimed_at: str | None
    finished_at: str | None

    @classmethod
    def of(cls, t: models.Task) -> TaskOut:
        return cls(
            id=t.id,
            type=t.type,
            payload=t.payload,
            target_kind=t.target_kind,
            target=t.target,
            priority=t.priority,
            status=t.status,
            attempt=t.attempt,
            max_attempts=t.max_attempts,
            agent_id=t.lease_owner,
            lease_expires=iso(t.lease_expires),
            timeout_seconds=t.timeout_seconds,
            progress=ProgressOut(
                percent=t.progress.percent, eta=t.progress.eta, activity=t.progress.activity
            ),
            result=t.result,
            error=t.error,
            job_id=t.job_id,
            created_at=iso(t.created_at),
            updated_at=iso(t.updated_at),
            claimed_at=iso(t.claimed_at),
            finished_at=iso(t.finished_at),
        )


class TaskPage(BaseModel):
    tasks: list[TaskOut]
    next_after: int | None = Field(description="pass as `after` for the next page")


class LogChunkOut(BaseModel):
    id: int
    attempt: int
    time: str | None
    text: str


class OutputOut(BaseModel):
    id: int
    time: str | None
    data: Any


class EventOut(BaseModel):
    id: int
    time: str | None
    data: Any


class Hello(Strict):
    version: str = Field(default="", max_length=100)
    platform: str = Field(default="", max_length=200)
    task_types: list[str] | None = Field(default=None, max_length=64)
    tags: list[str] | None = Field(default=None, max_length=64)


class Attempt(Strict):
    attempt: int = Field(ge=1)


class ProgressIn(Attempt):
    percent: float | None = Field(default=None, ge=0, le=100)
    eta: float | None = Field(default=None, ge=0)
    activity: str = Field(default="", max_length=1000)


class ResultIn(Attempt):
    status: Literal["complete", "error", "cancelled"]
    result: Any = None
    msg: str = Field(default="", max_length=10_000)


class LogIn(Attempt):
    text: str


class OutputIn(Attempt):
    data: Any


class LeaseOut(BaseModel):
    status: TaskStatus
    cancel_requested: bool
    lease_expires: str | None
