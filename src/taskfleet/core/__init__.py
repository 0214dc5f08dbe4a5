"""The engine: domain types, services and errors. No web, SQL or socket imports here."""

from __future__ import annotations
