"""Agents, groups and agents' events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from starlette.responses import Response

from taskfleet.api import schemas as s
from taskfleet.api.problems import ProblemRoute
from taskfleet.api.v1.deps import (
    Admin,
    AgentCaller,
    Found,
)

router = APIRouter(route_class=ProblemRoute)


# -- agents, groups, events ---------------------------------------------------------------


@router.get("/agents", response_model=list[s.AgentOut], tags=["agents"])
async def list_agents(_: Admin, found: Found) -> list[s.AgentOut]:
    return [s.AgentOut.of(a) for a in await found.agents.all()]


@router.get("/agents/{name}", response_model=s.AgentOut, tags=["agents"])
async def show_agent(name: str, _: Admin, found: Found) -> s.AgentOut:
    return s.AgentOut.of(await found.agents.get(name))


@router.patch("/agents/{name}", response_model=s.AgentOut, tags=["agents"])
async def patch_agent(name: str, body: s.AgentPatch, _: Admin, found: Found) -> s.AgentOut:
    agents = found.agents
    updated = await agents.update(
        name,
        enabled=body.enabled,
        tags=body.tags,
        nickname=body.nickname,
        metadata=body.metadata,
    )
    if body.groups is not None:
        updated = await agents.set_groups(name, body.groups)
    if body.requested_status is not None:
        updated = await agents.request_status(name, body.requested_status, body.lazy)
    return s.AgentOut.of(updated)


@router.delete("/agents/{name}", status_code=204, tags=["agents"])
async def delete_agent(name: str, _: Admin, found: Found) -> Response:
    await found.agents.delete(name)
    return Response(status_code=204)


@router.get("/agents/{name}/events", response_model=list[s.EventOut], tags=["events"])
async def agent_events(
    name: str, _: Admin, found: Found, limit: Annotated[int | None, Query(ge=1, le=10_000)] = None
) -> list[s.EventOut]:
    events = await found.agents.list_events(name, limit)
    return [s.EventOut(id=e.id, time=s.iso(e.time), data=e.data) for e in events]


@router.post("/events", status_code=201, response_model=s.EventOut, tags=["events"])
async def post_event(me: AgentCaller, found: Found, data: Annotated[Any, Body()]) -> s.EventOut:
    """An agent records an event (any JSON). Admins read them per agent."""
    event = await found.agents.post_event(me, data)
    return s.EventOut(id=event.id, time=s.iso(event.time), data=event.data)


@router.get("/groups", response_model=list[s.GroupOut], tags=["groups"])
async def list_groups(_: Admin, found: Found) -> list[s.GroupOut]:
    return [
        s.GroupOut(name=g.name, created_at=s.iso(g.created_at))
        for g in await found.agents.list_groups()
    ]


@router.post("/groups", status_code=201, response_model=s.GroupOut, tags=["groups"])
async def add_group(body: s.GroupIn, _: Admin, found: Found) -> s.GroupOut:
    group = await found.agents.add_group(body.name)
    return s.GroupOut(name=group.name, created_at=s.iso(group.created_at))


@router.get("/groups/{name}/members", response_model=list[s.AgentOut], tags=["groups"])
async def group_members(name: str, _: Admin, found: Found) -> list[s.AgentOut]:
    return [s.AgentOut.of(a) for a in await found.agents.group_members(name)]


@router.delete("/groups/{name}", status_code=204, tags=["groups"])
async def delete_group(name: str, _: Admin, found: Found) -> Response:
    await found.agents.delete_group(name)
    return Response(status_code=204)
