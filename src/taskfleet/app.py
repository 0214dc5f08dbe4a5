"""The composition root: `build(settings)` wires store, bus, services and routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from taskfleet import __version__
from taskfleet.api import problems, v1
from taskfleet.api.limits import BodyLimit
from taskfleet.bus.local import LocalBus
from taskfleet.config import Settings
from taskfleet.dialects import dut
from taskfleet.services import Services, wire
from taskfleet.store.sql import open_store

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


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    store = await open_store(settings.db, settings.sqlite_synchronous)
    bus = LocalBus()
    found = wire(settings, store, bus)
    app.state.services = found
    reaper = asyncio.create_task(_reap_forever(found), name="taskfleet-reaper")
    log.info("taskfleet %s serving %s", __version__, settings.db, extra={"action": "start"})
    try:
        yield
    finally:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await bus.close()
        await store.close()


def build(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="taskfleet",
        version=__version__,
        summary="Run work on a fleet of machines.",
        lifespan=_lifespan,
        docs_url="/api/v1/docs",
        openapi_url="/api/v1/openapi.json",
        redoc_url=None,
    )
    app.state.settings = settings
    app.include_router(v1.router)
    for prefix in dut.PREFIXES:
        app.include_router(dut.router, prefix=prefix)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        found: Services = request.app.state.services
        body = found.metrics.render(await found.tasks.counts())
        return Response(body, media_type="text/plain; version=0.0.4")

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> Response:
        return problems.to_problem(exc)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
