"""The API on both backends (`db_url`: SQLite and PostgreSQL): the round trip, delivery
semantics, and input that only PostgreSQL would refuse (so a gap shows up as a 500 there).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.api.conftest import Live, ServerFactory, assert_problem, claim, parked, submit

BIG_INT = 2**70


@pytest.fixture
async def live(db_url: str, start_server: ServerFactory) -> Live:
    # A slow fallback poll, so that only a bus wake-up answers a long-poll quickly.
    return await start_server(db=db_url, poll_interval=30.0)


async def test_round_trip(live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient) -> None:
    task = await submit(admin, payload={"n": 1})
    claiming = asyncio.create_task(agent.post("/api/v1/agent/claim", params={"wait": 10}))
    waiting = asyncio.create_task(
        admin.get(f"/api/v1/tasks/{task['id']}/wait", params={"timeout": 10})
    )
    claimed = (await claiming).json()
    assert claimed["id"] == task["id"] and claimed["attempt"] == 1
    await parked(live, f"task:{task['id']}")
    started = time.monotonic()
    response = await agent.post(
        f"/api/v1/agent/tasks/{task['id']}/result",
        json={"attempt": 1, "status": "complete", "result": {"ok": True}},
    )
    assert response.status_code == 200
    done = await waiting
    assert time.monotonic() - started < 5
    assert done.json()["status"] == "completed" and done.json()["result"] == {"ok": True}


async def test_claim_wakes_on_submit(
    live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    claiming = asyncio.create_task(agent.post("/api/v1/agent/claim", params={"wait": 10}))
    await parked(live, "tasks")
    started = time.monotonic()
    task = await submit(admin)
    response = await claiming
    assert time.monotonic() - started < 5
    assert response.json()["id"] == task["id"]


async def test_requeued_task_never_repeats_an_attempt(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    task = await submit(admin)
    first = await claim(agent)
    url = f"/api/v1/agent/tasks/{task['id']}/result"
    report = {"attempt": first["attempt"], "status": "complete", "result": "first run"}
    assert (await agent.post(url, json=report)).status_code == 200
    assert (await admin.post(f"/api/v1/tasks/{task['id']}/requeue")).status_code == 200
    second = await claim(agent)
    assert second["attempt"] > first["attempt"]
    # A late copy of the first run's report is stale, not the second run's result.
    assert_problem(await agent.post(url, json=report), 409)
    shown = (await admin.get(f"/api/v1/tasks/{task['id']}")).json()
    assert shown["status"] == "active" and shown["result"] is None


async def test_input_postgresql_would_refuse(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    json_ = {"content-type": "application/json"}
    for raw in (
        '{"type": "echo", "payload": "\\u0000"}',
        '{"type": "echo", "payload": {"\\u0000": 1}}',
        '{"type": "ec\\u0000ho"}',
        '{"type": "echo", "payload": NaN}',
        '{"type": "echo", "payload": "\\ud800"}',
    ):
        response = await admin.post("/api/v1/tasks", content=raw, headers=json_)
        assert_problem(response, 400)
    for body in (
        {"type": "echo", "job_id": BIG_INT},
        {"type": "echo", "priority": 2**31},
        {"type": "echo", "tags": ["t"] * 600},
    ):
        assert_problem(await admin.post("/api/v1/tasks", json=body), 422)
    assert_problem(await admin.post("/api/v1/jobs", json={"name": "j", "priority": 2**31}), 422)
    assert_problem(await admin.get(f"/api/v1/tasks/{2**63}"), 422)
    assert_problem(await admin.get("/api/v1/tasks", params={"type": "\x00"}), 400)
    assert_problem(await admin.get("/api/v1/agents/a%00"), 400)
    assert_problem(await agent.post("/api/v1/events", json={"log": "a\x00b"}), 400)

    task = await submit(admin)
    await claim(agent)
    base = f"/api/v1/agent/tasks/{task['id']}"
    assert_problem(await agent.post(f"{base}/log", json={"attempt": 1, "text": "a\x00"}), 400)
    assert_problem(await agent.post(f"{base}/progress", json={"attempt": 2**31}), 422)
    progress = await agent.post(f"{base}/progress", json={"attempt": 1, "activity": "\x00"})
    assert_problem(progress, 400)
    result = {"attempt": 1, "status": "error", "msg": "exit\x00"}
    assert_problem(await agent.post(f"{base}/result", json=result), 400)
    assert (await admin.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "active"


async def test_long_names_and_text(admin: httpx.AsyncClient, agent: httpx.AsyncClient) -> None:
    """Values at each column's limit are kept; past it they are refused, not truncated by
    one backend and kept by the other."""
    tags = [f"{n:02}" + "a" * 62 for n in range(15)]  # 974 characters joined
    task = await submit(admin, type="t" * 128, tags=tags)
    assert task["type"] == "t" * 128 and task["target"] == ",".join(tags)
    too_many = [*tags, "b" * 64]
    assert_problem(await admin.post("/api/v1/tasks", json={"type": "x", "tags": too_many}), 422)
    assert_problem(await admin.post("/api/v1/tasks", json={"type": "t" * 129}), 422)
    job = await admin.post("/api/v1/jobs", json={"name": "j" * 200, "type": "t" * 128})
    assert job.status_code == 201
    assert_problem(await admin.post("/api/v1/jobs", json={"name": "j" * 201}), 422)
    hello = await agent.post(
        "/api/v1/agent/hello", json={"version": "v" * 100, "platform": "p" * 200}
    )
    assert hello.status_code == 200
    assert_problem(await agent.post("/api/v1/agent/hello", json={"version": "v" * 101}), 422)
