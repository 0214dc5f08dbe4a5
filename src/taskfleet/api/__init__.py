"""The native REST API (/api/v1) and the native agent websocket."""

from __future__ import annotations
