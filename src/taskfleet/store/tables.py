"""Every table, in one place. Migrations in `migrations/` must produce exactly this schema
(a test compares them)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON(none_as_null=True)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("secret_hash", String(256), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", Float, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column(
        "account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("expires", Float, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Json),
)

agents = Table(
    "agents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="SET NULL"), index=True),
    Column("nickname", String(200), nullable=False, default=""),
    Column("tags", Json, nullable=False),
    Column("task_types", Json, nullable=False),
    Column("status", String(32), nullable=False),
    Column("requested_status", String(32)),
    Column("requested_lazy", Boolean, nullable=False, default=False),
    Column("online", Boolean, nullable=False, default=False),
    Column("last_seen", Float),
    Column("version", String(100), nullable=False, default=""),
    Column("platform", String(200), nullable=False, default=""),
    Column("public_key", Text),
    Column("verified", Boolean, nullable=False, default=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("metadata", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    # A server default lets migration 0003 add it without rebuilding the table (a rebuild
    # on SQLite would cascade-delete the agents' events and group memberships).
    Column("runs_schedules", Boolean, nullable=False, default=False, server_default=false()),
)

groups = Table(
    "groups",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

agent_groups = Table(
    "agent_groups",
    metadata,
    Column("agent_id", Id, ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", Id, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("type", String(128), nullable=False, default=""),
    Column("priority", Integer, nullable=False, default=0),
    Column("settings", Json),
    Column("created_at", Float, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("job_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), index=True),
    Column("type", String(128), nullable=False),
    Column("payload", Json),
    Column("target_kind", String(16), nullable=False),
    Column("target", String(1024), nullable=False, default=""),
    Column("priority", Integer, nullable=False, default=0),
    # Server defaults let migration 0002 add these to existing rows without rebuilding
    # the table (a rebuild on SQLite would cascade-delete every task's logs).
    Column("job_priority", Integer, nullable=False, default=0, server_default="0"),
    Column("fail_limit", Integer, nullable=False, default=1, server_default="1"),
    Column("status", String(32), nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=3),
    Column("lease_owner", Id, index=True),
    Column("lease_expires", Float),
    Column("timeout_seconds", Float),
    Column("progress_percent", Float),
    Column("progress_eta", Float),
    Column("activity", String(1000), nullable=False, default=""),
    Column("result", Json),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("claimed_at", Float),
    Column("finished_at", Float),
    Index("ix_tasks_lease", "status", "lease_expires"),
)

# The claim reads the best queued task of each kind of target it may take, each in
# (job priority desc, priority desc, id) order straight off one of these: the first row
# that passes is the answer, however deep the queue (store/queue.py). Partial, so finished
# tasks never weigh on them.
QUEUED_ORDER = (tasks.c.job_priority.desc(), tasks.c.priority.desc(), tasks.c.id)
Index(
    "ix_tasks_queued",
    tasks.c.target_kind,
    *QUEUED_ORDER,
    sqlite_where=text("status = 'queued'"),
    postgresql_where=text("status = 'queued'"),
)
Index(
    "ix_tasks_queued_for",
    tasks.c.target_kind,
    tasks.c.target,
    *QUEUED_ORDER,
    sqlite_where=text("status = 'queued'"),
    postgresql_where=text("status = 'queued'"),
)

#: A task is claimable only once every parent has completed (a job's dependencies).
task_parents = Table(
    "task_parents",
    metadata,
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "parent_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, index=True
    ),
)

#: Which agent failed which attempt; those agents are not offered the task again.
task_failures = Table(
    "task_failures",
    metadata,
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("agent_id", Id, nullable=False, index=True),
    Column("time", Float, nullable=False),
    Column("error", Text, nullable=False),
)

#: Agents that failed too many tasks of a job's task type no longer get them.
job_blacklist = Table(
    "job_blacklist",
    metadata,
    Column("job_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("task_type", String(128), primary_key=True),
    Column("agent_id", Id, ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("created_at", Float, nullable=False),
)

#: Files produced by a job's tasks, newest kept up to a bound per job.
job_outputs = Table(
    "job_outputs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("job_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("task_id", Id),
    Column("agent_id", Id),
    Column("time", Float, nullable=False),
    Column("data", Json),
    Index("ix_job_outputs_job_id_id", "job_id", "id"),
)

task_logs = Table(
    "task_logs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("time", Float, nullable=False),
    Column("text", Text, nullable=False),
)

task_outputs = Table(
    "task_outputs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("time", Float, nullable=False),
    Column("data", Json),
)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("agent_id", Id, ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("time", Float, nullable=False),
    Column("data", Json),
    Index("ix_events_agent_id_id", "agent_id", "id"),
)

#: Task definitions that run every `interval` seconds on the agents their route selects.
schedules = Table(
    "schedules",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("type", String(128), nullable=False),
    Column("config", Json, nullable=False),
    Column("interval", Integer, nullable=False),
    Column("route_kind", String(16), nullable=False),
    Column("enabled", Boolean, nullable=False),
    # The agent an `any` route runs on now (None while no agent was online).
    Column("assigned_agent_id", Id, ForeignKey("agents.id", ondelete="SET NULL"), index=True),
    Column("next_run", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_schedules_due", "enabled", "next_run"),
)

#: The tags of a `tags` route: agents with at least one of them are selected.
schedule_tags = Table(
    "schedule_tags",
    metadata,
    Column("schedule_id", Id, ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(64), primary_key=True, index=True),
)

#: The agents of an `agents` route (deleting an agent takes it off the route).
schedule_agents = Table(
    "schedule_agents",
    metadata,
    Column("schedule_id", Id, ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "agent_id", Id, ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True
    ),
)

#: One row per task a schedule's run created; unique per run and agent, so that a run is
#: started once even if two replicas race (the compare-and-set on `next_run` decides first).
schedule_runs = Table(
    "schedule_runs",
    metadata,
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("schedule_id", Id, ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False),
    Column("agent_id", Id, ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("due", Float, nullable=False),
    UniqueConstraint("schedule_id", "due", "agent_id"),
    Index("ix_schedule_runs_schedule_id_agent_id", "schedule_id", "agent_id"),
)

#: Tokens an admin hands out for hosts to register with; only their SHA-256 is kept.
registration_tokens = Table(
    "registration_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("revoked_at", Float),
    Column("uses", Integer, nullable=False, default=0),
    Column("last_used_at", Float),
)

#: Hosts that registered with a token and a public key (Django Remotes); `uuid` is the
#: secret shared with the host, `verified_at` when it proved it holds its private key.
enrollments = Table(
    "enrollments",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("agent_id", Id, ForeignKey("agents.id", ondelete="CASCADE"), unique=True),
    Column("token_id", Id, ForeignKey("registration_tokens.id", ondelete="SET NULL"), index=True),
    Column("created_at", Float, nullable=False),
    Column("verified_at", Float),
)

#: Commands run in groups, in `position` order, while active and inside the time window.
command_groups = Table(
    "command_groups",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("position", Integer, nullable=False, default=0),
    Column("active", Boolean, nullable=False, default=True),
    Column("starts_at", Float),
    Column("ends_at", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

#: The host groups (agent groups) a command group's commands run on.
command_group_hosts = Table(
    "command_group_hosts",
    metadata,
    Column(
        "command_group_id",
        Id,
        ForeignKey("command_groups.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "group_id", Id, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True, index=True
    ),
)

#: Python sources for hosts to run once each (Django Remotes' commands).
commands = Table(
    "commands",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "command_group_id",
        Id,
        ForeignKey("command_groups.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("name", String(200), nullable=False),
    Column("source", Text, nullable=False),
    Column("position", Integer, nullable=False, default=0),
    Column("active", Boolean, nullable=False, default=True),
    Column("settings", Json, nullable=False),
    Column("variables", Json, nullable=False),
    Column("result_variables", Json, nullable=False),
    Column("timeout_seconds", Integer),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

#: One row per run of a command by a host: the engine task that records it.
command_runs = Table(
    "command_runs",
    metadata,
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("command_id", Id, ForeignKey("commands.id", ondelete="CASCADE"), nullable=False),
    Column("agent_id", Id, ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_command_runs_command_id_agent_id", "command_id", "agent_id"),
)

#: Values commands' results left on a host, read by its later commands.
host_variables = Table(
    "host_variables",
    metadata,
    Column("agent_id", Id, ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)
