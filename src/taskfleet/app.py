"""The composition root: `build(settings)` wires store, bus, services and routers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from taskfleet import __version__, statsd
from taskfleet.api import agent_hub, agent_ws, problems, v1, ws_protocol
from taskfleet.api.limits import BodyLimit
from taskfleet.bus.local import LocalBus
from taskfleet.bus.postgres import PostgresBus, asyncpg_dsn
from taskfleet.config import Settings
from taskfleet.core.schedules import Scheduler
from taskfleet.dialects import dut, flamenco, raintank, remotes, teeth
from taskfleet.services import Services, wire
from taskfleet.store.sql import SqlStore, open_store

log = logging.getLogger(__name__)


async def _reap_forever(found: Services) -> None:
    """Requeues tasks whose lease ran out, fails those out of attempts or time."""
    while True:
        try:
            await found.tasks.reap()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("lease sweep failed", extra={"action": "reap"})
        await asyncio.sleep(found.settings.reap_interval)


async def _open_bus(settings: Settings, store: SqlStore) -> LocalBus | PostgresBus:
    """LISTEN/NOTIFY when replicas may share the database, else wake-ups in this process."""
    if store.engine.dialect.name != "postgresql":
        return LocalBus()
    bus = PostgresBus(asyncpg_dsn(settings.db))
    await bus.start()
    return bus


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    store = await open_store(settings.db, settings.sqlite_synchronous)
    bus = await _open_bus(settings, store)
    found = wire(settings, store, bus)
    app.state.services = found
    app.state.agent_hub = hub = agent_hub.Hub(found, bus)
    app.state.teeth = listener = teeth.Listener(found, hub)
    await listener.start()
    reaper = asyncio.create_task(_reap_forever(found), name="taskfleet-reaper")
    scheduler = Scheduler(found.schedules, settings.schedule_tick_seconds)
    scheduler.start()
    reporter = statsd.Reporter(settings, found)
    await reporter.start()
    log.info("taskfleet %s serving %s", __version__, settings.db, extra={"action": "start"})
    try:
        yield
    finally:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await reporter.stop()
        await scheduler.stop()
        await listener.stop()
        await hub.close()
        await bus.close()
        await store.close()


class App(FastAPI):
    """FastAPI, with the connections agents hold open served ahead of the whole stack:
    the native agent socket and dutserver's long-poll (`GET /tasks`).

    Each agent holds its socket for hours, or its poll for most of the time, and every
    layer between uvicorn and the endpoint (FastAPI's and Starlette's `__call__`, their
    telemetry, error and body-limit middlewares, ours, the router, the route, FastAPI's
    exit stacks) keeps a suspended frame or more for that long: about 10 KiB per agent,
    a third of what one cost the server. None of them does anything for these two: they
    answer their errors themselves, in their own wire shape, and read no body.
    """

    dut_polls: frozenset[str] = frozenset()  #: the paths of dutserver's long-poll

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind, root = scope["type"], str(scope.get("root_path", ""))
        path = str(scope.get("path", ""))[len(root) :]
        if kind == "websocket" and path == agent_ws.WS_PATH:
            scope["app"] = self
            await agent_ws.serve_socket(scope, receive, send)
        elif kind == "http" and scope["method"] == "GET" and path in self.dut_polls:
            scope["app"] = self
            await self._serve_poll(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    @staticmethod
    async def _serve_poll(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await dut.serve_poll(scope, receive, send)
        except Exception as exc:  # what the stack's handler of last resort answers (logged)
            await problems.to_problem(exc)(scope, receive, send)


def _raintank_shadows_native(settings: Settings) -> bool:
    """Whether raintank is served where native paths are (at /api/v1, as the original
    was, or under it): then its routes must come first, to answer the paths both have.
    Elsewhere they come after the native ones: routing tries routes in order, and each
    native request (the hot ones) would try every raintank route first."""
    prefix = raintank.prefix_of(settings)
    return prefix == v1.PREFIX or prefix.startswith(v1.PREFIX + "/")


def build(settings: Settings) -> FastAPI:
    app = App(
        title="taskfleet",
        version=__version__,
        summary="Run work on a fleet of machines.",
        lifespan=_lifespan,
        docs_url="/api/v1/docs",
        openapi_url="/api/v1/openapi.json",
        redoc_url=None,
    )
    app.state.settings = settings
    shadows_native = _raintank_shadows_native(settings)
    if shadows_native:
        raintank.mount(app, settings)
    for router in v1.routers:
        app.include_router(router, prefix=v1.PREFIX)
    if not shadows_native:
        raintank.mount(app, settings)
    app.add_api_websocket_route(agent_ws.WS_PATH, agent_ws.endpoint)
    for prefix in dut.PREFIXES:
        app.include_router(dut.router, prefix=prefix)
    app.dut_polls = dut.poll_paths(raintank.prefix_of(settings))
    app.include_router(flamenco.router)  # at the root only: the worker drops any prefix
    remotes.mount(app, settings)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        found: Services = request.app.state.services
        body = found.metrics.render(await found.tasks.counts())
        return Response(body, media_type="text/plain; version=0.0.4")

    app.add_exception_handler(HTTPException, problems.http_error)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> Response:
        return problems.to_problem(exc)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


class _Server(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT the long-polls answer at once (as if they timed
    out), so that the graceful shutdown does not wait out 26 s polls or cut them off."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        found: Services | None = getattr(self.app.state, "services", None)
        if found is not None:
            found.tasks.stop()
        super().handle_exit(sig, frame)


#: uvicorn's options that shape what each connection costs; the tests serve with them too.
UVICORN_OPTIONS: dict[str, Any] = {
    "ws": ws_protocol.LeanWebSocketProtocol,
    "ws_per_message_deflate": False,  # ~50 KiB less per agent socket
}

#: Allocations between young collections (CPython's default is 700), then young collections
#: per middle one and middle ones per full one (defaults 10 and 10).
GC_THRESHOLDS = (50_000, 50, 100)


def _tune_gc() -> None:
    """Fewer, later garbage collections. A server holding thousands of agents has millions
    of long-lived objects, and CPython's default thresholds made a 10,000-agent broadcast
    (which allocates a lot at once) spend much of its time in collections walking
    them. Reference counting still frees everything that is not in a cycle at
    once; only cyclic garbage waits longer. What exists at start (modules, the app, the
    schema) is frozen out of collections altogether, as Python's documentation suggests."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(settings: Settings) -> None:
    """Runs the server until SIGINT or SIGTERM."""
    app = build(settings)
    _tune_gc()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go through our handler (text or JSON)
        timeout_graceful_shutdown=10,
        # A fleet reconnecting at once (a restart) queues thousands of handshakes: the
        # default backlog of 2048 resets the rest. The kernel caps it at somaxconn.
        backlog=8192,
        **UVICORN_OPTIONS,
    )
    _Server(config, app).run()
