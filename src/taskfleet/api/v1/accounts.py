"""Sessions, accounts and the registration policy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from taskfleet.api import schemas as s
from taskfleet.api.problems import ProblemRoute
from taskfleet.api.v1.deps import (
    Admin,
    Caller,
    Found,
)
from taskfleet.core import errors
from taskfleet.core.accounts import SESSION_TTL_SECONDS

router = APIRouter(route_class=ProblemRoute)


# -- sessions -----------------------------------------------------------------------------


@router.post("/login", response_model=s.Session, tags=["sessions"])
async def login(body: s.Login, found: Found) -> s.Session:
    token = await found.accounts.login(body.name, body.secret)
    return s.Session(token=token, expires_in=SESSION_TTL_SECONDS)


@router.post("/logout", status_code=204, tags=["sessions"])
async def logout(request: Request, found: Found) -> Response:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthorized("send the session token as `Authorization: Bearer <token>`")
    await found.accounts.logout(token.strip())
    return Response(status_code=204)


@router.get("/me", tags=["sessions"])
async def me(who: Caller) -> dict[str, Any]:
    return {"name": who.name, "role": who.role.value}


# -- accounts and registration ---------------------------------------------------------------


@router.get("/accounts", response_model=list[s.AccountOut], tags=["accounts"])
async def list_accounts(_: Admin, found: Found) -> list[s.AccountOut]:
    return [s.AccountOut.of(a) for a in await found.accounts.all()]


@router.post("/accounts", status_code=201, response_model=s.AccountOut, tags=["accounts"])
async def add_account(body: s.AccountIn, _: Admin, found: Found) -> s.AccountOut:
    return s.AccountOut.of(await found.accounts.add(body.name, body.role, body.secret))


@router.delete("/accounts/{name}", status_code=204, tags=["accounts"])
async def remove_account(name: str, _: Admin, found: Found) -> Response:
    await found.accounts.remove(name)
    return Response(status_code=204)


@router.get("/registration", response_model=s.Policy, tags=["accounts"])
async def get_policy(_: Admin, found: Found) -> s.Policy:
    return s.Policy(policy=await found.accounts.registration_policy())


@router.put("/registration", response_model=s.Policy, tags=["accounts"])
async def set_policy(body: s.Policy, _: Admin, found: Found) -> s.Policy:
    await found.accounts.set_registration_policy(body.policy)
    return body


@router.post("/register", status_code=201, response_model=s.AgentOut, tags=["accounts"])
async def register(body: s.Registration, found: Found) -> s.AgentOut:
    """Self-registration of an agent, as the registration policy allows; with a
    registration `token`, under any policy (the agent joins the configured group)."""
    if body.token is not None:
        await found.registration.register_agent(body.name, body.secret, body.token)
    else:
        await found.accounts.register_agent(body.name, body.secret)
    return s.AgentOut.of(await found.agents.get(body.name))
