"""The native REST API under /api/v1: operators' endpoints and the agents' HTTP fallback.

Every endpoint declares the role it needs through a dependency; agents see only their own
tasks and events. Errors come out as problem+json through `ProblemRoute`.
"""

from __future__ import annotations

from fastapi import APIRouter

from taskfleet.api.v1 import (
    accounts,
    agent_http,
    commands,
    fleet,
    jobs,
    registration,
    schedules,
    tasks,
)

PREFIX = "/api/v1"
#: Each is included in the app under `PREFIX` by itself, not through one /api/v1 router:
#: FastAPI matches a request against every level of included routers again, so a level
#: less is one pass less over the native routes on every native request.
routers: tuple[APIRouter, ...] = tuple(
    m.router for m in (accounts, fleet, tasks, agent_http, jobs, schedules, registration, commands)
)
