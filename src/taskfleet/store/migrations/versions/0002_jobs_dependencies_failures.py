"""jobs: job priority, task dependencies, per-agent failures, blacklist, job outputs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 11:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMN with a server default fills existing rows on both backends; no
    # table rebuild, so SQLite's cascading foreign keys never fire.
    op.add_column(
        "tasks", sa.Column("job_priority", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column(
        "tasks", sa.Column("fail_limit", sa.Integer(), server_default="1", nullable=False)
    )
    op.drop_index("ix_tasks_queue", table_name="tasks")
    op.create_index(
        "ix_tasks_queue", "tasks", ["status", "job_priority", "priority", "id"], unique=False
    )
    op.create_table(
        "task_parents",
        sa.Column("task_id", Id, nullable=False),
        sa.Column("parent_id", Id, nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["tasks.id"],
            name=op.f("fk_task_parents_parent_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_parents_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "parent_id", name=op.f("pk_task_parents")),
    )
    op.create_index(op.f("ix_task_parents_parent_id"), "task_parents", ["parent_id"], unique=False)
    op.create_table(
        "task_failures",
        sa.Column("task_id", Id, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("agent_id", Id, nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_failures_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "attempt", name=op.f("pk_task_failures")),
    )
    op.create_index(op.f("ix_task_failures_agent_id"), "task_failures", ["agent_id"], unique=False)
    op.create_table(
        "job_blacklist",
        sa.Column("job_id", Id, nullable=False),
        sa.Column("task_type", sa.String(length=128), nullable=False),
        sa.Column("agent_id", Id, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_job_blacklist_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_blacklist_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "task_type", "agent_id", name=op.f("pk_job_blacklist")),
    )
    op.create_table(
        "job_outputs",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("job_id", Id, nullable=False),
        sa.Column("task_id", Id, nullable=True),
        sa.Column("agent_id", Id, nullable=True),
        sa.Column("time", sa.Float(), nullable=False),
        sa.Column("data", sa.JSON(none_as_null=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_outputs_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_outputs")),
    )
    op.create_index("ix_job_outputs_job_id_id", "job_outputs", ["job_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_outputs_job_id_id", table_name="job_outputs")
    op.drop_table("job_outputs")
    op.drop_table("job_blacklist")
    op.drop_index(op.f("ix_task_failures_agent_id"), table_name="task_failures")
    op.drop_table("task_failures")
    op.drop_index(op.f("ix_task_parents_parent_id"), table_name="task_parents")
    op.drop_table("task_parents")
    op.drop_index("ix_tasks_queue", table_name="tasks")
    op.create_index("ix_tasks_queue", "tasks", ["status", "priority", "id"], unique=False)
    # SQLite drops a column in place since 3.35; neither column is indexed or constrained.
    op.drop_column("tasks", "fail_limit")
    op.drop_column("tasks", "job_priority")
