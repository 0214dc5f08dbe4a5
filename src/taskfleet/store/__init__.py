"""Persistence: SQLAlchemy Core tables and queries, on SQLite (default) or PostgreSQL."""

from __future__ import annotations
