"""No route or dependency runs in a worker thread: FastAPI runs every plain `def` endpoint
or dependency through the thread pool, a hop that costs a request more than its query."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from taskfleet.app import build
from taskfleet.config import Settings


def _calls(dependant: Dependant) -> Iterator[Any]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from _routes(included.routes)


def test_every_endpoint_and_dependency_is_async(tmp_path: Any) -> None:
    app = build(Settings(db=str(tmp_path / "x.db")))
    routes = list(_routes(app.router.routes))
    assert len(routes) > 50  # every dialect's routes are in the app
    blocking = sorted(
        {
            f"{route.path}: {getattr(call, '__qualname__', call)}"
            for route in routes
            for call in _calls(route.dependant)
            if not inspect.iscoroutinefunction(call)
        }
    )
    assert blocking == []
