"""The raintank dialect: raintank task-server's REST API and task-agent-ng's websocket
(seed `001_60cf48c1a8205734.txt`, PROTOCOLS.md §2), for its agents and clients unchanged.

Served under `raintank_prefix` (default `/raintank/api/v1`; `/api/v1` serves it where the
original was, ahead of the native routes of the same paths). The original's tasks are the
engine's schedules: definitions that raintank agents receive and run on their own clock.
Clients and agents send `Authorization: Bearer <admin key>`. Where taskfleet differs from
the original on purpose, docs/dialects/raintank.md says so.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from taskfleet.config import Settings
from taskfleet.dialects.raintank import rest, socket

ORIGINAL_PREFIX = "/api/v1"  #: where task-server served it; also `GET /` was its heartbeat


def prefix_of(settings: Settings) -> str:
    prefix = "/" + settings.raintank_prefix.strip("/")
    if prefix == "/":
        raise ValueError(
            "raintank_prefix cannot be `/`: the original's paths start with /api/v1; "
            "set it to /api/v1 to serve them there"
        )
    return prefix


def mount(app: FastAPI, settings: Settings) -> None:
    """Adds the REST routes and the agent socket at the configured prefix."""
    prefix = prefix_of(settings)
    app.include_router(rest.router(prefix))
    if prefix == ORIGINAL_PREFIX:
        root = APIRouter(route_class=rest.RaintankRoute, include_in_schema=False)
        root.add_api_route("/", rest.open_heartbeat, methods=["GET"])
        app.include_router(root)
    app.add_api_websocket_route(prefix + "/socket/{name}/{version}", socket.endpoint)


__all__ = ["mount", "prefix_of"]
