"""Flamenco worker endpoints about the worker itself: registration, sign-on and sign-off,
and the status changes an admin requests (asleep, awake, shutdown) and the worker acks.

Registration and the global registration policy: with `flamenco_registration_secret`
set, a worker must present an HS256 JWT signed with it (as the v2.4 manager asks), and a
valid one registers the worker whatever the policy, since the secret is the admin's
consent. Without it, the server's registration policy decides, as for every other kind of
agent: `open` registers, `approval` registers a disabled worker, `closed` answers 403.
"""

from __future__ import annotations

import secrets

import jwt
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from taskfleet.api.auth import services_of
from taskfleet.core import errors
from taskfleet.core.models import AgentStatus
from taskfleet.dialects.flamenco import wire

router = APIRouter(route_class=wire.FlamencoRoute, include_in_schema=False)

#: The JWT claims a registration token must carry (the v2.4 manager checks the same).
REQUIRED_CLAIMS = ["exp", "iat"]
JWT_LEEWAY_SECONDS = 30  #: clock skew allowed between the token's issuer and this server


def _check_registration_token(request: Request, secret: str) -> bool:
    """True when a registration secret is configured and the bearer token is signed with
    it; `Forbidden` when one is configured and the token is missing or wrong."""
    if not secret:
        return False
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Forbidden(
            "registering needs `Authorization: Bearer <JWT>` signed with the registration secret"
        )
    try:
        jwt.decode(
            token.strip(),
            secret,
            algorithms=["HS256"],
            options={"require": REQUIRED_CLAIMS},
            leeway=JWT_LEEWAY_SECONDS,
        )
    except jwt.InvalidTokenError as exc:
        raise errors.Forbidden(f"invalid registration token: {exc}") from None
    return True


@router.post("/register-worker")
async def register_worker(request: Request) -> Response:
    """Creates an agent account named with a new 24-hex `_id`, with the worker's secret."""
    found = services_of(request)
    vouched = _check_registration_token(request, found.settings.flamenco_registration_secret)
    doc = await wire.json_object(request)
    secret = wire.text(doc, "secret", limit=1024)
    if not secret:
        raise errors.Invalid("'secret' must be a non-empty string")
    task_types = wire.names(doc, "supported_task_types") or []
    name = secrets.token_hex(12)
    await found.accounts.register_agent(name, secret, vouched=vouched)
    await found.agents.update(name, nickname=wire.text(doc, "nickname", limit=200))
    agent = await found.agents.hello(
        await found.agents.get(name),
        version=wire.software(request),
        platform=wire.text(doc, "platform", limit=200),
        task_types=task_types,
        status=AgentStatus.STARTING,
    )
    address = request.client.host if request.client else ""
    return wire.document(wire.worker_document(agent, address))


@router.post("/sign-on")
async def sign_on(request: Request) -> Response:
    """Updates nickname and task types without re-registering; the worker is `starting`."""
    agent = await wire.worker(request)
    doc = await wire.json_object(request, required=False)
    found = services_of(request)
    if "nickname" in doc:
        agent = await found.agents.update(agent.name, nickname=wire.text(doc, "nickname"))
    await found.agents.hello(
        agent,
        version=wire.software(request),
        platform=agent.platform,
        task_types=wire.names(doc, "supported_task_types"),
        status=AgentStatus.STARTING,
    )
    return wire.no_content()


@router.post("/sign-off")
async def sign_off(request: Request) -> Response:
    """Requeues the worker's tasks; a sleeping worker will sleep again when it is back."""
    agent = await wire.worker(request)
    found = services_of(request)
    await found.tasks.sign_off(agent)
    await found.agents.sign_off(agent)
    return wire.no_content()


@router.get("/status-change")
async def status_change(request: Request) -> Response:
    """200 with the requested status, or 204 when none is pending."""
    agent = await services_of(request).agents.seen(await wire.worker(request))
    if agent.requested_status is None:
        return wire.no_content()
    return wire.document(wire.status_change(agent.requested_status))


@router.post("/ack-status-change/{status}")
async def ack_status_change(status: str, request: Request) -> Response:
    """The worker is now in `status`; a matching request is cleared. Always 204 for a
    known status, as the original (which only logs a mismatch)."""
    agent = await wire.worker(request)
    try:
        acked = AgentStatus(status)
    except ValueError:
        raise errors.Invalid(f"unknown worker status {status[:40]!r}") from None
    await services_of(request).agents.acknowledge_status(agent, acked)
    return wire.no_content()
