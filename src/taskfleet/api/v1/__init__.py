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

router = APIRouter(prefix="/api/v1")
for _module in (accounts, fleet, tasks, agent_http, jobs, schedules, registration, commands):
    router.include_router(_module.router)
