"""Commands and command groups (Django Remotes hosts run them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from taskfleet.api import schemas as s
from taskfleet.api.problems import ProblemRoute
from taskfleet.api.v1.deps import (
    Admin,
    Found,
)

router = APIRouter(route_class=ProblemRoute)


# -- commands and command groups (Django Remotes hosts run them) ---------------------------

CommandGroupId = Annotated[int, Path(ge=1, le=s.MAX_ID)]
CommandId = Annotated[int, Path(ge=1, le=s.MAX_ID)]


@router.post(
    "/command-groups", status_code=201, response_model=s.CommandGroupOut, tags=["commands"]
)
async def add_command_group(body: s.CommandGroupIn, _: Admin, found: Found) -> s.CommandGroupOut:
    """Commands of the group run on the members of `host_groups`, while the group is active
    and inside its time window; groups run in `order`."""
    return s.CommandGroupOut.of(await found.commands.add_group(body.to_new()))


@router.get("/command-groups", response_model=list[s.CommandGroupOut], tags=["commands"])
async def list_command_groups(_: Admin, found: Found) -> list[s.CommandGroupOut]:
    return [s.CommandGroupOut.of(g) for g in await found.commands.groups()]


@router.get("/command-groups/{group_id}", response_model=s.CommandGroupOut, tags=["commands"])
async def show_command_group(group_id: CommandGroupId, _: Admin, found: Found) -> s.CommandGroupOut:
    return s.CommandGroupOut.of(await found.commands.group(group_id))


@router.put("/command-groups/{group_id}", response_model=s.CommandGroupOut, tags=["commands"])
async def replace_command_group(
    group_id: CommandGroupId, body: s.CommandGroupIn, _: Admin, found: Found
) -> s.CommandGroupOut:
    return s.CommandGroupOut.of(await found.commands.update_group(group_id, body.to_new()))


@router.delete("/command-groups/{group_id}", status_code=204, tags=["commands"])
async def delete_command_group(group_id: CommandGroupId, _: Admin, found: Found) -> Response:
    """Deletes the group and its commands; the tasks of their runs stay."""
    await found.commands.delete_group(group_id)
    return Response(status_code=204)


@router.post("/commands", status_code=201, response_model=s.HostCommandOut, tags=["commands"])
async def add_command(body: s.HostCommandIn, _: Admin, found: Found) -> s.HostCommandOut:
    """Python source every host of the group's host groups runs once. Each run is a task
    of type `command` targeted at the host."""
    return s.HostCommandOut.of(await found.commands.add(body.to_new()))


@router.get("/commands", response_model=list[s.HostCommandOut], tags=["commands"])
async def list_commands(
    _: Admin,
    found: Found,
    group: Annotated[int | None, Query(ge=1, le=s.MAX_ID, description="one group's")] = None,
) -> list[s.HostCommandOut]:
    return [s.HostCommandOut.of(c) for c in await found.commands.all(group)]


@router.get("/commands/{command_id}", response_model=s.HostCommandOut, tags=["commands"])
async def show_command(command_id: CommandId, _: Admin, found: Found) -> s.HostCommandOut:
    return s.HostCommandOut.of(await found.commands.get(command_id))


@router.put("/commands/{command_id}", response_model=s.HostCommandOut, tags=["commands"])
async def replace_command(
    command_id: CommandId, body: s.HostCommandIn, _: Admin, found: Found
) -> s.HostCommandOut:
    """Replaces the definition; hosts that ran it do not run it again."""
    return s.HostCommandOut.of(await found.commands.update(command_id, body.to_new()))


@router.delete("/commands/{command_id}", status_code=204, tags=["commands"])
async def delete_command(command_id: CommandId, _: Admin, found: Found) -> Response:
    await found.commands.delete(command_id)
    return Response(status_code=204)


@router.get("/commands/{command_id}/runs", response_model=list[s.TaskOut], tags=["commands"])
async def command_runs(
    command_id: CommandId,
    _: Admin,
    found: Found,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[s.TaskOut]:
    """The tasks of the command's runs on every host, newest first."""
    return [s.TaskOut.of(t) for t in await found.commands.runs(command_id, limit)]
