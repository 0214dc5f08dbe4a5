"""remotes: registration tokens, enrollments, commands, command groups, runs, host variables

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-23 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON(none_as_null=True)


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete=ondelete,
    )


def _tokens_and_enrollments() -> None:
    op.create_table(
        "registration_tokens",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registration_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_registration_tokens_token_hash")),
    )
    op.create_table(
        "enrollments",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("agent_id", Id, nullable=True),
        sa.Column("token_id", Id, nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("verified_at", sa.Float(), nullable=True),
        _fk("enrollments", "agent_id", "agents", "CASCADE"),
        _fk("enrollments", "token_id", "registration_tokens", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
        sa.UniqueConstraint("agent_id", name=op.f("uq_enrollments_agent_id")),
        sa.UniqueConstraint("uuid", name=op.f("uq_enrollments_uuid")),
    )
    op.create_index(op.f("ix_enrollments_token_id"), "enrollments", ["token_id"], unique=False)


def _command_groups() -> None:
    op.create_table(
        "command_groups",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("starts_at", sa.Float(), nullable=True),
        sa.Column("ends_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_command_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_command_groups_name")),
    )
    op.create_table(
        "command_group_hosts",
        sa.Column("command_group_id", Id, nullable=False),
        sa.Column("group_id", Id, nullable=False),
        _fk("command_group_hosts", "command_group_id", "command_groups", "CASCADE"),
        _fk("command_group_hosts", "group_id", "groups", "CASCADE"),
        sa.PrimaryKeyConstraint(
            "command_group_id", "group_id", name=op.f("pk_command_group_hosts")
        ),
    )
    op.create_index(
        op.f("ix_command_group_hosts_group_id"), "command_group_hosts", ["group_id"], unique=False
    )


def _commands() -> None:
    op.create_table(
        "commands",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("command_group_id", Id, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("settings", Json, nullable=False),
        sa.Column("variables", Json, nullable=False),
        sa.Column("result_variables", Json, nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        _fk("commands", "command_group_id", "command_groups", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
    )
    op.create_index(
        op.f("ix_commands_command_group_id"), "commands", ["command_group_id"], unique=False
    )


def _runs_and_variables() -> None:
    op.create_table(
        "command_runs",
        sa.Column("task_id", Id, nullable=False),
        sa.Column("command_id", Id, nullable=False),
        sa.Column("agent_id", Id, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        _fk("command_runs", "agent_id", "agents", "CASCADE"),
        _fk("command_runs", "command_id", "commands", "CASCADE"),
        _fk("command_runs", "task_id", "tasks", "CASCADE"),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_command_runs")),
    )
    op.create_index(
        "ix_command_runs_command_id_agent_id",
        "command_runs",
        ["command_id", "agent_id"],
        unique=False,
    )
    op.create_table(
        "host_variables",
        sa.Column("agent_id", Id, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        _fk("host_variables", "agent_id", "agents", "CASCADE"),
        sa.PrimaryKeyConstraint("agent_id", "name", name=op.f("pk_host_variables")),
    )


def upgrade() -> None:
    _tokens_and_enrollments()
    _command_groups()
    _commands()
    _runs_and_variables()


def downgrade() -> None:
    op.drop_table("host_variables")
    op.drop_index("ix_command_runs_command_id_agent_id", table_name="command_runs")
    op.drop_table("command_runs")
    op.drop_index(op.f("ix_commands_command_group_id"), table_name="commands")
    op.drop_table("commands")
    op.drop_index(op.f("ix_command_group_hosts_group_id"), table_name="command_group_hosts")
    op.drop_table("command_group_hosts")
    op.drop_table("command_groups")
    op.drop_index(op.f("ix_enrollments_token_id"), table_name="enrollments")
    op.drop_table("enrollments")
    op.drop_table("registration_tokens")
