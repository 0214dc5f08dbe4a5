"""Registration tokens and agents' public keys."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Path

from taskfleet.api import schemas as s
from taskfleet.api.problems import ProblemRoute
from taskfleet.api.v1.deps import (
    Admin,
    AgentCaller,
    Found,
)
from taskfleet.core import errors, models

router = APIRouter(route_class=ProblemRoute)


# -- registration tokens and agents' public keys ---------------------------------------------

TokenId = Annotated[int, Path(ge=1, le=s.MAX_ID)]


@router.post(
    "/registration-tokens",
    status_code=201,
    response_model=s.RegistrationTokenOut,
    tags=["registration"],
)
async def create_registration_token(
    body: s.RegistrationTokenIn, _: Admin, found: Found
) -> s.RegistrationTokenOut:
    """A token hosts register with (`POST /register` with `token`, or Django Remotes' host
    registration). The answer is the only time the token is shown."""
    created, token = await found.registration.create_token(body.name, body.expires_in)
    return s.RegistrationTokenOut.of(created, token)


@router.get(
    "/registration-tokens", response_model=list[s.RegistrationTokenOut], tags=["registration"]
)
async def list_registration_tokens(_: Admin, found: Found) -> list[s.RegistrationTokenOut]:
    return [s.RegistrationTokenOut.of(t) for t in await found.registration.tokens()]


@router.delete(
    "/registration-tokens/{token_id}",
    response_model=s.RegistrationTokenOut,
    tags=["registration"],
)
async def revoke_registration_token(
    token_id: TokenId, _: Admin, found: Found
) -> s.RegistrationTokenOut:
    """Revokes the token: no more registrations with it; hosts registered with it stay."""
    return s.RegistrationTokenOut.of(await found.registration.revoke_token(token_id))


@router.put("/agents/{name}/public-key", response_model=s.AgentOut, tags=["registration"])
async def set_public_key(name: str, body: s.PublicKeyIn, _: Admin, found: Found) -> s.AgentOut:
    """Sets the agent's RSA public key, verified on the admin's word."""
    return s.AgentOut.of(await found.registration.set_public_key(name, body.public_key))


@router.put("/agent/public-key", response_model=s.AgentOut, tags=["agent"])
async def prove_public_key(body: s.KeyProofIn, me: AgentCaller, found: Found) -> s.AgentOut:
    """The calling agent registers its RSA public key, proving it holds the private key."""
    updated = await found.registration.prove_key(me, body.public_key, body.signature)
    return s.AgentOut.of(updated)


@router.post("/tasks/sealed", status_code=201, response_model=list[s.TaskOut], tags=["tasks"])
async def submit_sealed(body: s.TaskIn, _: Admin, found: Found) -> list[s.TaskOut]:
    """Like `POST /tasks`, with the payload sealed to the agent's verified public key (one
    task per member, each sealed to its own key, with `broadcast`): the server keeps only
    what the agent can open."""
    if body.broadcast and body.group:
        members = await found.agents.group_members(body.group)
        template = body.to_new()
        new = [
            replace(template, target_kind=models.TargetKind.AGENT, target=a.name) for a in members
        ]
    elif body.agent:
        new = [body.to_new()]
    else:
        raise errors.Invalid("a sealed task needs an `agent`, or a `group` with `broadcast`")
    submitted = await found.tasks.submit(await found.registration.seal(new))
    return [s.TaskOut.of(t) for t in submitted]
