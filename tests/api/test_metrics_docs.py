"""Prometheus metrics, the OpenAPI spec and the interactive docs."""

from __future__ import annotations

import httpx

from tests.api.conftest import Live, claim, submit


def sample(text: str, name: str) -> float:
    """The value of the sample `name` (with its labels, as exposed) in Prometheus text."""
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"no sample {name} in:\n{text}")


async def test_metrics(live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient) -> None:
    await submit(admin)
    await submit(admin)
    await claim(agent)
    response = await live.client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, 'taskfleet_tasks{status="queued"}') == 1
    assert sample(text, 'taskfleet_tasks{status="active"}') == 1
    assert sample(text, 'taskfleet_tasks{status="completed"}') == 0
    assert sample(text, "taskfleet_claims_total") == 1


async def test_openapi_spec(live: Live) -> None:
    response = await live.client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "taskfleet"
    for path in ("/api/v1/tasks", "/api/v1/agent/claim", "/api/v1/login"):
        assert path in spec["paths"]
    assert "TaskIn" in spec["components"]["schemas"]


async def test_docs_page_loads(live: Live) -> None:
    response = await live.client().get("/api/v1/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/api/v1/openapi.json" in response.text
