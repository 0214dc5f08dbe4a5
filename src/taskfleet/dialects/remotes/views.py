"""The Django Remotes endpoints: status and discovery, host registration, verification and
status, and the commands a host lists, fetches (encrypted to its key) and reports on.

Every path is served below the prefix with and without its trailing slash, except
`api/status`, which redirects to `api/status/` as Django did (the client follows it).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from taskfleet.api.auth import services_of
from taskfleet.core import crypto, errors
from taskfleet.core.models import Agent, Command
from taskfleet.dialects.remotes import wire
from taskfleet.dialects.remotes.wire import Endpoint

log = logging.getLogger(__name__)

ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
ENCRYPTED_FIELDS = ["name", "settings", "variables", "command"]
#: The endpoints discovery names, by the client's settings keys, below `<prefix>/api/v1/`.
ENDPOINTS = {
    "command_get": "commands/get/",
    "command_post": "commands/post/",
    "commands_list": "commands/list/",
    "host_register": "host/register/",
    "host_status": "host/status/",
    "host_verify": "host/verify/",
}
REQUIRED = "This field is required."


def _prefix(request: Request) -> str:
    return wire.prefix_of(services_of(request).settings.remotes_prefix)


def _server_url(request: Request) -> str:
    configured = services_of(request).settings.remotes_server_url
    if configured:
        return configured.rstrip("/") + "/"
    return f"{str(request.base_url).rstrip('/')}{_prefix(request)}/"


async def status(request: Request) -> Response:
    return wire.ok(
        app_name=wire.APP_NAME,
        version=wire.VERSION,
        server_url=_server_url(request),
        discover=f"{_prefix(request)}/api/v1/discover/",
    )


async def status_redirect(request: Request) -> Response:
    location = f"{_prefix(request)}/api/status/"
    if request.url.query:
        location += f"?{request.url.query}"
    return wire.reply({"detail": f"Moved permanently to {location}"}, 301, {"Location": location})


async def discover(request: Request) -> Response:
    base = f"{_prefix(request)}/api/v1/"
    return wire.ok(endpoints={key: base + path for key, path in ENDPOINTS.items()})


# -- hosts ------------------------------------------------------------------------------------


async def register(request: Request) -> Response:
    """A host registers with the registration token and its public key; it gets its
    enrollment UUID encrypted to that key, and stays disabled until it verifies."""
    registration = services_of(request).registration
    token = wire.token_of(request)
    await registration.check_token(token)
    sent = await wire.body(request)
    if "public_key" not in sent:
        return wire.error(400, "Missing host public key")
    enrollment, agent = await registration.enroll(token, sent["public_key"])
    log.info("host %s registered", agent.name, extra={"action": "remotes_register"})
    return wire.ok(encrypted=crypto.rsa_encrypt(_key_of(agent), enrollment.uuid))


async def verify(request: Request) -> Response:
    """The host signs "OK" with its private key; it gets its host token encrypted."""
    registration = services_of(request).registration
    token = wire.token_of(request)
    await registration.check_token(token)
    sent = await wire.body(request)
    if "uuid" not in sent:
        return wire.error(400, "Missing host UUID")
    if "encrypted" not in sent:
        return wire.error(400, "Missing encrypted text")
    try:
        agent, host_token = await registration.verify(token, sent["uuid"], sent["encrypted"])
    except (errors.NotFound, errors.Conflict) as exc:
        return wire.error(400, exc.message)
    log.info("host %s verified", agent.name, extra={"action": "remotes_verify"})
    return wire.ok(encrypted=crypto.rsa_encrypt(_key_of(agent), host_token))


def _key_of(agent: Agent) -> crypto.PublicKey:
    if agent.public_key is None:
        raise errors.Invalid("this host has no public key")
    return crypto.load_public_key(agent.public_key)


async def host_status(request: Request) -> Response:
    agent = await wire.host(request)
    ids = {g.name: g.id for g in await services_of(request).agents.list_groups()}
    return wire.ok(
        app_name=wire.APP_NAME,
        version=wire.VERSION,
        id=agent.id,
        user_id=agent.account_id,
        user_name=agent.name,
        hosts_groups=[{"id": ids[name], "name": name} for name in agent.groups if name in ids],
    )


# -- commands --------------------------------------------------------------------------------


async def commands_list(request: Request) -> Response:
    agent = await wire.host(request)
    pending = await services_of(request).commands.pending(agent)
    return wire.ok(results=[{"group": group, "command": command} for group, command in pending])


async def command_get(request: Request) -> Response:
    """The command with its name, settings, variables and source under a fresh Fernet key,
    and that key encrypted to the host's public key."""
    agent = await wire.host(request)
    command_id = wire.path_id(request)
    key = _key_of(agent)
    command, variables = await services_of(request).commands.fetch(agent, command_id)
    return wire.reply(_encrypted(command, variables, key))


def _encrypted(
    command: Command, variables: dict[str, str | None], key: crypto.PublicKey
) -> dict[str, object]:
    secret = crypto.new_fernet_key()

    def seal(text: str) -> str:
        return crypto.fernet_encrypt(secret, text)

    return {
        "id": command.id,
        "name": seal(command.name),
        "settings": {name: seal(value) for name, value in command.settings.items()},
        "variables": {k: None if v is None else seal(v) for k, v in variables.items()},
        "command": seal(command.source),
        "timeout": command.timeout_seconds,
        "encrypted": ENCRYPTED_FIELDS,
        "encryption_key": crypto.rsa_encrypt(key, secret.decode("ascii")),
    }


async def command_post(request: Request) -> Response:
    """The host's stdout (`output`) and result list (`result`), each a Fernet token under
    the key from its UUID; stored as its run's task result."""
    agent = await wire.host(request)
    command_id = wire.path_id(request)
    found = services_of(request)
    try:
        await found.commands.assigned(agent, command_id)
    except errors.Forbidden as exc:
        return wire.error(403, exc.message)
    sent = await wire.body(request)
    problems = {f: [REQUIRED] for f in ("output", "result") if not isinstance(sent.get(f), str)}
    if problems:
        return wire.error(400, f"send {' and '.join(problems)} as text", **problems)
    key = await found.registration.shared_key(agent)
    output = crypto.fernet_decrypt(key, sent["output"], "output")
    result = crypto.fernet_decrypt(key, sent["result"], "result")
    await found.commands.report(agent, command_id, output, result)
    return wire.reply({"status": "OK", "results": {"id": command_id}}, 201)


async def not_found(request: Request) -> Response:
    return wire.detail(404, "Not found.")


def router(prefix: str) -> APIRouter:
    """Every endpoint below `prefix`, and JSON 404s for anything else there."""
    routes = APIRouter(route_class=wire.RemotesRoute, include_in_schema=False)
    table: list[tuple[str, dict[str, Endpoint]]] = [
        ("/api/status/", {"GET": status}),
        ("/api/v1/discover/", {"GET": discover}),
        ("/api/v1/host/register/", {"POST": register}),
        ("/api/v1/host/verify/", {"POST": verify}),
        ("/api/v1/host/status/", {"GET": host_status}),
        ("/api/v1/commands/list/", {"GET": commands_list}),
        ("/api/v1/commands/get/{command_id}/", {"GET": command_get}),
        ("/api/v1/commands/post/{command_id}/", {"POST": command_post}),
    ]
    for path, methods in table:
        endpoint = wire.dispatch(methods)
        routes.add_api_route(prefix + path, endpoint, methods=ANY_METHOD)
        if path != "/api/status/":
            routes.add_api_route(prefix + path.rstrip("/"), endpoint, methods=ANY_METHOD)
    redirect = wire.dispatch({"GET": status_redirect})
    routes.add_api_route(prefix + "/api/status", redirect, methods=ANY_METHOD)
    for path in ("", "/", "/{rest:path}"):
        routes.add_api_route(prefix + path, not_found, methods=ANY_METHOD)
    return routes
