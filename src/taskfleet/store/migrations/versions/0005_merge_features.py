"""merge the jobs, schedules and remotes branches

Revision ID: 0005
Revises: 0002, 0003, 0004
Create Date: 2026-11-23

The three features were built side by side, each branching from 0001; this revision joins
them so that the history has one head again. It changes no schema.
"""

from __future__ import annotations

revision = "0005"
down_revision = ("0002", "0003", "0004")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
