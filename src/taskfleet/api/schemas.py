"""Wire models of the native API: pydantic, for validation and the OpenAPI spec.

Core knows nothing of these; `from_*` functions translate domain records.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskfleet.core import models
from taskfleet.core.models import AgentStatus, RegistrationPolicy, Role, TaskStatus


@functools.lru_cache(maxsize=1024)
def iso(ts: float | None) -> str | None:
    """RFC 3339 in UTC with microseconds, or None. Cached: the tasks of one submission
    share their times, and a broadcast to 10,000 agents formatted 50,000 of them."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


MAX_ID = 2**63 - 1  #: ids are 64-bit
MAX_ATTEMPT = 2**31 - 1  #: attempt counters are 32-bit
MAX_PRIORITY = 1_000_000
MAX_TARGET_LENGTH = 1024  #: a task's target: an agent or group name, or joined tags

# Request bodies take numbers and booleans as JSON has them: no "5" for 5, no true for 1.
# Bounds keep every value inside the database column it lands in, on every backend.
Bool = Annotated[bool, Field(strict=True)]
Int = Annotated[int, Field(strict=True)]
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Id = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
Priority = Annotated[int, Field(strict=True, ge=-MAX_PRIORITY, le=MAX_PRIORITY)]


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
    token: str | None = Field(
        default=None, max_length=1024, description="a registration token (`token` policy)"
    )


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
    enabled: Bool | None = None
    tags: list[str] | None = Field(default=None, max_length=64)
    groups: list[str] | None = Field(default=None, max_length=64)
    nickname: str | None = Field(default=None, max_length=200)
    metadata: dict[str, Any] | None = None
    requested_status: AgentStatus | None = None
    lazy: Bool = Field(default=False, description="apply requested_status after the current task")


class GroupIn(Strict):
    name: str = Field(max_length=64)


class GroupOut(BaseModel):
    name: str
    created_at: str | None


class TaskIn(Strict):
    type: str = Field(min_length=1, max_length=128)
    payload: Any = None
    agent: str | None = Field(default=None, max_length=64, description="run on this agent")
    group: str | None = Field(
        default=None, max_length=64, description="run on any one member of this group"
    )
    tags: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=64, description="run on an agent with all tags"
    )
    broadcast: Bool = Field(default=False, description="one task per member of `group`")
    priority: Priority = 0
    max_attempts: Int = Field(default=3, ge=1, le=100)
    timeout_seconds: Float | None = Field(default=None, gt=0, le=30 * 86400)
    job_id: Id | None = None

    @model_validator(mode="after")
    def _one_target(self) -> TaskIn:
        given = [n for n in ("agent", "group", "tags") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"give at most one of agent, group and tags (got {', '.join(given)})")
        if self.broadcast and not self.group:
            raise ValueError("broadcast needs a group")
        if self.tags and len(",".join(self.tags)) > MAX_TARGET_LENGTH:
            raise ValueError(f"tags must join to at most {MAX_TARGET_LENGTH} characters")
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
        # Built without validation: the values are the engine's own, of the fields' types
        # (a batch's answer built 500 validated models; tests/api check the shapes).
        return cls.model_construct(
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
            progress=ProgressOut.model_construct(
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
    attempt: Int = Field(ge=1, le=MAX_ATTEMPT)


class ProgressIn(Attempt):
    percent: Float | None = Field(default=None, ge=0, le=100)
    eta: Float | None = Field(default=None, ge=0)
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


# -- jobs of tasks with dependencies (Flamenco's jobs) -------------------------------------

StrictIndex = Annotated[int, Field(strict=True, ge=0, le=10_000)]
TaskName = Annotated[str, Field(min_length=1, max_length=200)]


class CommandIn(Strict):
    name: str = Field(min_length=1, max_length=128)
    settings: dict[str, Any] = Field(default_factory=dict)


class JobTaskIn(Strict):
    name: TaskName | None = Field(default=None, description="unique in the job [task-<index>]")
    task_type: str = Field(min_length=1, max_length=128)
    priority: Priority = 0
    commands: list[CommandIn] = Field(min_length=1, max_length=1000)
    parents: list[StrictIndex | TaskName] = Field(
        default_factory=list,
        max_length=10_000,
        description="tasks of this job that must complete first: by index or by name",
    )


class JobSubmission(Strict):
    name: str = Field(min_length=1, max_length=200)
    type: str = Field(default="", max_length=128)
    priority: Priority = 0
    settings: dict[str, Any] = Field(default_factory=dict)
    fail_limit: Int | None = Field(
        default=None, ge=1, le=100, description="agents that may fail a task [task_fail_limit]"
    )
    tasks: list[JobTaskIn] = Field(default_factory=list, max_length=10_000)

    def to_new(self) -> models.NewJob:
        return models.NewJob(
            name=self.name,
            type=self.type,
            priority=self.priority,
            settings=self.settings,
            fail_limit=self.fail_limit,
            tasks=tuple(
                models.NewJobTask(
                    name=t.name or f"task-{n}",
                    type=t.task_type,
                    priority=t.priority,
                    commands=tuple(c.model_dump() for c in t.commands),
                    parents=tuple(t.parents),
                )
                for n, t in enumerate(self.tasks)
            ),
        )


class BlacklistOut(BaseModel):
    agent: str
    task_type: str
    since: str | None


class JobSummaryOut(BaseModel):
    id: int
    name: str
    type: str
    priority: int
    settings: dict[str, Any]
    created_at: str | None
    status: str = Field(description="queued, active, completed, failed or cancelled")
    total: int
    counts: dict[str, int] = Field(description="tasks by status")
    blacklist: list[BlacklistOut]

    @classmethod
    def of(
        cls, summary: models.JobSummary, blacklist: list[models.BlacklistEntry]
    ) -> JobSummaryOut:
        job = summary.job
        return cls(
            id=job.id,
            name=job.name,
            type=job.type,
            priority=job.priority,
            settings=job.settings,
            created_at=iso(job.created_at),
            status=summary.status,
            total=summary.total,
            counts={k.value: v for k, v in sorted(summary.counts.items())},
            blacklist=[
                BlacklistOut(agent=b.agent_name, task_type=b.task_type, since=iso(b.time))
                for b in blacklist
            ],
        )


class JobSubmitted(JobSummaryOut):
    tasks: list[TaskOut] = Field(description="the queued tasks, in submission order")


class RequeuedOut(BaseModel):
    requeued: list[int] = Field(description="ids of the tasks queued again")


class JobOutputOut(BaseModel):
    id: int
    task_id: int | None
    agent_id: int | None
    time: str | None
    data: Any


class TaskFailureOut(BaseModel):
    attempt: int
    agent: str | None
    time: str | None
    error: str


# -- schedules -------------------------------------------------------------------------------

AgentName = Annotated[str, Field(max_length=64)]


class RouteIn(Strict):
    kind: models.RouteKind = Field(
        default=models.RouteKind.ANY,
        description="`any`: one online agent, moved when it goes offline; `tags`: every "
        "agent with at least one of `tags`; `agents`: the agents named in `agents`",
    )
    tags: list[AgentName] = Field(default_factory=list, max_length=1000)
    agents: list[AgentName] = Field(default_factory=list, max_length=1000)


class ScheduleIn(Strict):
    name: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=128, description="the type of every run's task")
    interval: Int = Field(ge=1, le=2**31 - 1, description="seconds between runs")
    route: RouteIn = Field(default_factory=RouteIn)
    config: dict[str, Any] = Field(
        default_factory=dict, description="the payload of every run's task"
    )
    enabled: Bool = True

    def to_new(self, agent_ids: list[int]) -> models.NewSchedule:
        route = models.Route(
            kind=self.route.kind, tags=tuple(self.route.tags), agent_ids=tuple(agent_ids)
        )
        return models.NewSchedule(
            name=self.name,
            type=self.type,
            interval=self.interval,
            route=route,
            config=self.config,
            enabled=self.enabled,
        )


class RouteOut(BaseModel):
    kind: models.RouteKind
    tags: list[str]
    agents: list[str]


class ScheduleOut(BaseModel):
    id: int
    name: str
    type: str
    interval: int
    route: RouteOut
    config: dict[str, Any]
    enabled: bool
    assigned_agent: str | None = Field(description="the agent an `any` route runs on now")
    next_run: str | None = Field(description="when the next run's tasks are created")
    created_at: str | None
    updated_at: str | None

    @classmethod
    def of(cls, sc: models.Schedule, names: dict[int, str]) -> ScheduleOut:
        """`names` maps agent ids to names."""
        route = RouteOut(
            kind=sc.route.kind,
            tags=list(sc.route.tags),
            agents=[names.get(i, str(i)) for i in sc.route.agent_ids],
        )
        assigned = None if sc.assigned_agent is None else names.get(sc.assigned_agent)
        return cls(
            id=sc.id,
            name=sc.name,
            type=sc.type,
            interval=sc.interval,
            route=route,
            config=sc.config,
            enabled=sc.enabled,
            assigned_agent=assigned,
            next_run=iso(sc.next_run),
            created_at=iso(sc.created_at),
            updated_at=iso(sc.updated_at),
        )


# -- registration tokens, agents' public keys, commands (Django Remotes) ---------------------

MAX_ORDER = 2**31 - 1
TextName = Annotated[str, Field(min_length=1, max_length=200)]


def timestamp(value: datetime | None) -> float | None:
    """A time as UNIX seconds; a time without a zone is UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class RegistrationTokenIn(Strict):
    name: str = Field(default="", max_length=200, description="what the token is for")
    expires_in: Float | None = Field(
        default=None, gt=0, le=10 * 365 * 86400, description="seconds; none: never expires"
    )


class RegistrationTokenOut(BaseModel):
    id: int
    name: str
    token: str | None = Field(default=None, description="the token: shown once, when created")
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None
    uses: int = Field(description="registrations made with it")
    last_used_at: str | None

    @classmethod
    def of(cls, t: models.RegistrationToken, token: str | None = None) -> RegistrationTokenOut:
        return cls(
            id=t.id,
            name=t.name,
            token=token,
            created_at=iso(t.created_at),
            expires_at=iso(t.expires_at),
            revoked_at=iso(t.revoked_at),
            uses=t.uses,
            last_used_at=iso(t.last_used_at),
        )


class PublicKeyIn(Strict):
    public_key: str = Field(max_length=16_384, description="RSA public key, PEM (SPKI)")


class KeyProofIn(PublicKeyIn):
    signature: str = Field(
        max_length=4096,
        description="base64 RSA-PSS (MGF1-SHA256, max salt) SHA-256 signature of "
        "`taskfleet-key:<agent name>` with the private key",
    )


class CommandGroupIn(Strict):
    name: TextName
    order: Int = Field(default=0, ge=-MAX_ORDER, le=MAX_ORDER)
    active: Bool = True
    starts_at: datetime | None = Field(default=None, description="runs only after this")
    ends_at: datetime | None = Field(default=None, description="runs only before this")
    host_groups: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=64, description="agent groups whose members run it"
    )

    def to_new(self) -> models.NewCommandGroup:
        return models.NewCommandGroup(
            name=self.name,
            order=self.order,
            active=self.active,
            starts_at=timestamp(self.starts_at),
            ends_at=timestamp(self.ends_at),
            host_groups=tuple(self.host_groups),
        )


class CommandGroupOut(BaseModel):
    id: int
    name: str
    order: int
    active: bool
    starts_at: str | None
    ends_at: str | None
    host_groups: list[str]
    created_at: str | None
    updated_at: str | None

    @classmethod
    def of(cls, g: models.CommandGroup) -> CommandGroupOut:
        return cls(
            id=g.id,
            name=g.name,
            order=g.order,
            active=g.active,
            starts_at=iso(g.starts_at),
            ends_at=iso(g.ends_at),
            host_groups=list(g.host_groups),
            created_at=iso(g.created_at),
            updated_at=iso(g.updated_at),
        )


class HostCommandIn(Strict):
    group_id: Id
    name: TextName
    source: str = Field(max_length=512 * 1024, description="Python source the host runs")
    order: Int = Field(default=0, ge=-MAX_ORDER, le=MAX_ORDER)
    active: Bool = True
    settings: dict[Annotated[str, Field(max_length=200)], str] = Field(
        default_factory=dict, max_length=1000, description="`__SETTINGS__` of the script"
    )
    variables: list[TextName] = Field(
        default_factory=list, max_length=1000, description="host variables it reads"
    )
    result_variables: list[TextName] = Field(
        default_factory=list,
        max_length=1000,
        description="host variables set from its result list, in order",
    )
    timeout_seconds: Int | None = Field(default=None, ge=1, le=30 * 86400)

    def to_new(self) -> models.NewCommand:
        return models.NewCommand(
            group_id=self.group_id,
            name=self.name,
            source=self.source,
            order=self.order,
            active=self.active,
            settings=dict(self.settings),
            variables=tuple(self.variables),
            result_variables=tuple(self.result_variables),
            timeout_seconds=self.timeout_seconds,
        )


class HostCommandOut(BaseModel):
    id: int
    group_id: int
    name: str
    source: str
    order: int
    active: bool
    settings: dict[str, str]
    variables: list[str]
    result_variables: list[str]
    timeout_seconds: int | None
    created_at: str | None
    updated_at: str | None

    @classmethod
    def of(cls, c: models.Command) -> HostCommandOut:
        return cls(
            id=c.id,
            group_id=c.group_id,
            name=c.name,
            source=c.source,
            order=c.order,
            active=c.active,
            settings=c.settings,
            variables=list(c.variables),
            result_variables=list(c.result_variables),
            timeout_seconds=c.timeout_seconds,
            created_at=iso(c.created_at),
            updated_at=iso(c.updated_at),
        )
