"""schedules: recurring routed task definitions, their route indexes and runs

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-23 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMN with a server default: no table rebuild, so SQLite's cascading
    # foreign keys never fire on the agents' events and group memberships.
    op.add_column(
        "agents",
        sa.Column("runs_schedules", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_table(
        "schedules",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("config", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("route_kind", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("assigned_agent_id", Id, nullable=True),
        sa.Column("next_run", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["assigned_agent_id"],
            ["agents.id"],
            name=op.f("fk_schedules_assigned_agent_id_agents"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("name", name=op.f("uq_schedules_name")),
    )
    op.create_index(
        op.f("ix_schedules_assigned_agent_id"), "schedules", ["assigned_agent_id"], unique=False
    )
    op.create_index("ix_schedules_due", "schedules", ["enabled", "next_run"], unique=False)
    op.create_table(
        "schedule_tags",
        sa.Column("schedule_id", Id, nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_tags_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("schedule_id", "tag", name=op.f("pk_schedule_tags")),
    )
    op.create_index(op.f("ix_schedule_tags_tag"), "schedule_tags", ["tag"], unique=False)
    op.create_table(
        "schedule_agents",
        sa.Column("schedule_id", Id, nullable=False),
        sa.Column("agent_id", Id, nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_schedule_agents_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_agents_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("schedule_id", "agent_id", name=op.f("pk_schedule_agents")),
    )
    op.create_index(
        op.f("ix_schedule_agents_agent_id"), "schedule_agents", ["agent_id"], unique=False
    )
    op.create_table(
        "schedule_runs",
        sa.Column("task_id", Id, nullable=False),
        sa.Column("schedule_id", Id, nullable=False),
        sa.Column("agent_id", Id, nullable=False),
        sa.Column("due", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_schedule_runs_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_runs_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_schedule_runs_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_schedule_runs")),
        sa.UniqueConstraint(
            "schedule_id", "due", "agent_id", name=op.f("uq_schedule_runs_schedule_id_due_agent_id")
        ),
    )
    op.create_index(
        "ix_schedule_runs_schedule_id_agent_id",
        "schedule_runs",
        ["schedule_id", "agent_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_schedule_runs_schedule_id_agent_id", table_name="schedule_runs")
    op.drop_table("schedule_runs")
    op.drop_index(op.f("ix_schedule_agents_agent_id"), table_name="schedule_agents")
    op.drop_table("schedule_agents")
    op.drop_index(op.f("ix_schedule_tags_tag"), table_name="schedule_tags")
    op.drop_table("schedule_tags")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_index(op.f("ix_schedules_assigned_agent_id"), table_name="schedules")
    op.drop_table("schedules")
    # SQLite drops a column in place since 3.35; this one is neither indexed nor constrained.
    op.drop_column("agents", "runs_schedules")
