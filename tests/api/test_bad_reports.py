"""Bad reports from agents and oversized bodies: 4xx problem+json, and nothing recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import Live, assert_problem, claim, submit

BIG_INT = 2**70


@pytest.fixture
async def task(admin: httpx.AsyncClient) -> dict[str, Any]:
    return await submit(admin)


async def test_non_finite_numbers_from_agents(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient, task: dict[str, Any]
) -> None:
    await claim(agent)
    base = f"/api/v1/agent/tasks/{task['id']}"
    json_ = {"content-type": "application/json"}
    for path, raw in (
        ("/result", '{"attempt": 1, "status": "complete", "result": NaN}'),
        ("/outputs", '{"attempt": 1, "data": [Infinity]}'),
        ("/progress", '{"attempt": 1, "eta": Infinity}'),
        ("/progress", '{"attempt": 1, "percent": NaN}'),
    ):
        response = await agent.post(base + path, content=raw, headers=json_)
        assert "finite" in assert_problem(response, 400)["detail"], (path, raw)
    response = await agent.post("/api/v1/events", content="[NaN]", headers=json_)
    assert_problem(response, 400)
    # The task is untouched and still readable as JSON.
    shown = await admin.get(f"/api/v1/tasks/{task['id']}")
    assert shown.json()["status"] == "active" and shown.json()["progress"]["eta"] is None
    assert (await admin.get(f"/api/v1/tasks/{task['id']}/outputs")).json() == []


async def test_bad_agent_reports(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient, task: dict[str, Any]
) -> None:
    await claim(agent)
    base = f"/api/v1/agent/tasks/{task['id']}"
    for path, body in (
        ("/result", {"status": "complete"}),
        ("/result", {"attempt": 1, "status": "done"}),
        ("/result", {"attempt": 0, "status": "complete"}),
        ("/result", {"attempt": BIG_INT, "status": "complete"}),
        ("/result", {"attempt": "1", "status": "complete"}),
        ("/result", {"attempt": 1.0, "status": "complete"}),
        ("/result", {"attempt": 1, "status": "complete", "extra": 1}),
        ("/result", {"attempt": 1, "status": "error", "msg": ["x"]}),
        ("/progress", {"attempt": 1, "percent": 101}),
        ("/progress", {"attempt": 1, "percent": "50"}),
        ("/progress", {"attempt": 1, "eta": -1}),
        ("/progress", {"attempt": 1, "activity": "x" * 1001}),
        ("/progress", {"attempt": BIG_INT}),
        ("/log", {"attempt": 1}),
        ("/log", {"attempt": 1, "text": 5}),
        ("/outputs", {"attempt": 1}),
        ("/outputs", []),
    ):
        response = await agent.post(base + path, json=body)
        assert_problem(response, 422)
    shown = (await admin.get(f"/api/v1/tasks/{task['id']}")).json()
    assert shown["status"] == "active" and shown["progress"]["percent"] is None
    assert (await admin.get(f"/api/v1/tasks/{task['id']}/logs")).json() == []


async def test_oversized_log_chunk_is_413(agent: httpx.AsyncClient, task: dict[str, Any]) -> None:
    await claim(agent)
    response = await agent.post(
        f"/api/v1/agent/tasks/{task['id']}/log", json={"attempt": 1, "text": "x" * 300_000}
    )
    assert_problem(response, 413)


@pytest.mark.settings(max_body_bytes=1024)
async def test_oversized_bodies_are_413(live: Live, admin: httpx.AsyncClient) -> None:
    big = {"type": "echo", "payload": "x" * 2000}
    assert_problem(await admin.post("/api/v1/tasks", json=big), 413)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "echo", "payload": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'"}'

    # No Content-Length: the limit holds while the body streams in.
    streamed = await admin.post(
        "/api/v1/tasks", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(streamed, 413)
    agent = await live.agent("host-1")
    assert_problem(await agent.post("/api/v1/events", json=["x" * 2000]), 413)
    # Within the limit, all is well.
    assert (await admin.post("/api/v1/tasks", json={"type": "echo"})).status_code == 201


async def test_oversized_payloads_within_the_body_limit(admin: httpx.AsyncClient) -> None:
    response = await admin.post(
        "/api/v1/tasks", json={"type": "echo", "payload": "x" * (1024 * 1024 + 1)}
    )
    assert_problem(response, 413)
