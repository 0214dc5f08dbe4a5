"""Schedules: task definitions that run every interval on the agents a route selects."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from taskfleet.api import schemas as s
from taskfleet.api.problems import ProblemRoute
from taskfleet.api.v1.deps import (
    Admin,
    After,
    Found,
)
from taskfleet.core import errors, models
from taskfleet.services import Services

router = APIRouter(route_class=ProblemRoute)


# -- schedules: task definitions that run every interval on the agents a route selects ----------

ScheduleId = Annotated[int, Path(ge=1, le=s.MAX_ID)]


async def _schedule_in(found: Services, body: s.ScheduleIn) -> models.NewSchedule:
    return body.to_new([(await found.agents.get(name)).id for name in body.route.agents])


async def _schedule_out(found: Services, schedules: list[models.Schedule]) -> list[s.ScheduleOut]:
    names = {a.id: a.name for a in await found.agents.all()}
    return [s.ScheduleOut.of(sc, names) for sc in schedules]


@router.post("/schedules", status_code=201, response_model=s.ScheduleOut, tags=["schedules"])
async def add_schedule(body: s.ScheduleIn, _: Admin, found: Found) -> s.ScheduleOut:
    """Runs `type` with `config` as payload every `interval` seconds on the routed agents:
    one task per run and agent (agents that run schedules themselves, such as raintank's,
    get the definition instead). The first run is one interval from now."""
    created = await found.schedules.create(await _schedule_in(found, body))
    return (await _schedule_out(found, [created]))[0]


@router.get("/schedules", response_model=list[s.ScheduleOut], tags=["schedules"])
async def list_schedules(
    _: Admin,
    found: Found,
    type: Annotated[str | None, Query(max_length=128)] = None,
    enabled: bool | None = None,
    offset: Annotated[int, Query(ge=0, le=s.MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[s.ScheduleOut]:
    query = models.ScheduleFilter(type=type, enabled=enabled, offset=offset, limit=limit)
    return await _schedule_out(found, await found.schedules.find(query))


@router.get("/schedules/{schedule_id}", response_model=s.ScheduleOut, tags=["schedules"])
async def show_schedule(schedule_id: ScheduleId, _: Admin, found: Found) -> s.ScheduleOut:
    return (await _schedule_out(found, [await found.schedules.get(schedule_id)]))[0]


@router.put("/schedules/{schedule_id}", response_model=s.ScheduleOut, tags=["schedules"])
async def replace_schedule(
    schedule_id: ScheduleId, body: s.ScheduleIn, _: Admin, found: Found
) -> s.ScheduleOut:
    """Replaces the definition; agents that run schedules themselves are told at once."""
    updated = await found.schedules.update(schedule_id, await _schedule_in(found, body))
    return (await _schedule_out(found, [updated]))[0]


@router.delete("/schedules/{schedule_id}", status_code=204, tags=["schedules"])
async def delete_schedule(schedule_id: ScheduleId, _: Admin, found: Found) -> Response:
    """Deletes the schedule; the tasks of its earlier runs stay."""
    if await found.schedules.delete(schedule_id) is None:
        raise errors.NotFound(f"no schedule {schedule_id}")
    return Response(status_code=204)


@router.get("/schedules/{schedule_id}/runs", response_model=list[s.TaskOut], tags=["schedules"])
async def schedule_runs(
    schedule_id: ScheduleId,
    _: Admin,
    found: Found,
    after: After = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[s.TaskOut]:
    """The tasks the schedule's runs created, with their status and results, in id order."""
    return [s.TaskOut.of(t) for t in await found.schedules.runs(schedule_id, after, limit)]
