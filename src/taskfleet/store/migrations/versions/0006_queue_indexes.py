"""queue indexes that the claim walks in its own order

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

The claim orders queued tasks by job priority and priority, both descending, then id. The
old index (status, job_priority, priority, id) ran the other way and mixed every kind of
target, so each claim sorted the whole queue: fine at a thousand tasks, seconds at a
million. The new ones are partial (queued tasks only) and ordered as the claim reads them,
one for "any" and tags targets and one for agent and group targets.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")
ORDER: list[str | sa.TextClause] = [sa.text("job_priority DESC"), sa.text("priority DESC"), "id"]


def upgrade() -> None:
    op.drop_index("ix_tasks_queue", table_name="tasks")
    op.create_index(
        "ix_tasks_queued",
        "tasks",
        ["target_kind", *ORDER],
        sqlite_where=QUEUED,
        postgresql_where=QUEUED,
    )
    op.create_index(
        "ix_tasks_queued_for",
        "tasks",
        ["target_kind", "target", *ORDER],
        sqlite_where=QUEUED,
        postgresql_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_queued_for", table_name="tasks")
    op.drop_index("ix_tasks_queued", table_name="tasks")
    op.create_index("ix_tasks_queue", "tasks", ["status", "job_priority", "priority", "id"])
