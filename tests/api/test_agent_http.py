"""The agent's HTTP fallback: hello, long-poll claims, progress, results, sign-off."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import httpx
import pytest

from tests.api.conftest import Live, assert_problem, claim, parked, submit


async def test_hello_marks_the_agent_online(live: Live, admin: httpx.AsyncClient) -> None:
    agent = await live.agent("host-1")
    assert (await admin.get("/api/v1/agents/host-1")).json()["online"] is False
    response = await agent.post(
        "/api/v1/agent/hello",
        json={"version": "2.0", "platform": "linux-x86_64", "task_types": ["echo", "sleep"]},
    )
    assert response.status_code == 200
    me = response.json()
    assert me["online"] and me["status"] == "awake" and me["last_seen"] is not None
    assert me["task_types"] == ["echo", "sleep"] and me["platform"] == "linux-x86_64"


async def test_claim_long_poll_returns_204_after_wait(agent: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await agent.post("/api/v1/agent/claim", params={"wait": 0.3})
    elapsed = time.monotonic() - started
    assert response.status_code == 204 and response.content == b""
    assert 0.3 <= elapsed < 5


@pytest.mark.settings(poll_interval=30.0)  # only a wake-up can answer the claim quickly
async def test_claim_returns_when_a_task_is_queued_while_waiting(
    live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    claiming = asyncio.create_task(agent.post("/api/v1/agent/claim", params={"wait": 10}))
    await parked(live, "tasks")
    task = await submit(admin, payload="wake up")
    response = await claiming
    assert time.monotonic() - started < 5
    assert response.status_code == 200
    assert response.json()["id"] == task["id"] and response.json()["status"] == "active"


@pytest.mark.settings(poll_interval=30.0)
async def test_claim_wakes_for_a_task_addressed_to_the_agent(
    live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    claiming = asyncio.create_task(agent.post("/api/v1/agent/claim", params={"wait": 10}))
    await parked(live, "agent:agent-1")
    task = await submit(admin, agent="agent-1")
    response = await claiming
    assert response.status_code == 200 and response.json()["id"] == task["id"]


async def test_claim_honours_priority_then_age(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    low = await submit(admin, priority=-5)
    first = await submit(admin)
    high = await submit(admin, priority=10)
    second = await submit(admin)
    order = [(await claim(agent))["id"] for _ in range(4)]
    assert order == [high["id"], first["id"], second["id"], low["id"]]
    assert (await agent.post("/api/v1/agent/claim", params={"wait": 0})).status_code == 204


async def test_claim_respects_task_types_and_tags(live: Live, admin: httpx.AsyncClient) -> None:
    agent = await live.agent("host-1")
    await agent.post("/api/v1/agent/hello", json={"task_types": ["echo"], "tags": ["gpu"]})
    await submit(admin, type="sleep")
    await submit(admin, type="echo", tags=["gpu", "big"])
    wanted = await submit(admin, type="echo", tags=["gpu"])
    assert (await claim(agent))["id"] == wanted["id"]
    assert (await agent.post("/api/v1/agent/claim", params={"wait": 0})).status_code == 204


async def test_progress_extends_the_lease(
    live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    await submit(admin)
    task = await claim(agent)
    first_expiry = datetime.fromisoformat(task["lease_expires"])
    response = await agent.post(
        f"/api/v1/agent/tasks/{task['id']}/progress",
        json={"attempt": task["attempt"], "percent": 40, "eta": 12.5, "activity": "rendering"},
    )
    assert response.status_code == 200, response.text
    lease = response.json()
    assert lease["status"] == "active" and lease["cancel_requested"] is False
    assert datetime.fromisoformat(lease["lease_expires"]) > first_expiry
    shown = (await admin.get(f"/api/v1/tasks/{task['id']}")).json()
    assert shown["progress"] == {"percent": 40.0, "eta": 12.5, "activity": "rendering"}
    assert shown["lease_expires"] == lease["lease_expires"]


async def test_result_complete_and_error(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    await submit(admin)
    await submit(admin)
    done = await claim(agent)
    response = await agent.post(
        f"/api/v1/agent/tasks/{done['id']}/result",
        json={"attempt": done["attempt"], "status": "complete", "result": [1, "two", None]},
    )
    assert response.status_code == 200
    completed = response.json()
    assert completed["status"] == "completed" and completed["result"] == [1, "two", None]
    assert completed["progress"]["percent"] == 100.0 and completed["finished_at"]

    broken = await claim(agent)
    response = await agent.post(
        f"/api/v1/agent/tasks/{broken['id']}/result",
        json={"attempt": broken["attempt"], "status": "error", "msg": "exit code 3"},
    )
    assert response.json()["status"] == "failed" and response.json()["error"] == "exit code 3"


async def test_agent_sees_its_own_task_only(
    live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    other = await live.agent("host-2", hello=True)
    await submit(admin)
    mine = await claim(agent)
    addressed = await submit(admin, agent="agent-1")
    assert (await agent.get(f"/api/v1/tasks/{mine['id']}")).status_code == 200
    assert (await agent.get(f"/api/v1/tasks/{addressed['id']}")).status_code == 200

    for path in ("", "/logs", "/outputs", "/wait?timeout=0"):
        stolen = await other.get(f"/api/v1/tasks/{mine['id']}{path}")
        missing = await other.get(f"/api/v1/tasks/999999{path}")
        # Same answer as for a task that does not exist: nothing leaks.
        assert assert_problem(stolen, 404)["detail"] == f"no task {mine['id']}"
        assert assert_problem(missing, 404)["detail"] == "no task 999999"
    assert (await other.get("/api/v1/tasks")).json()["tasks"] == []


async def test_result_for_a_task_the_agent_does_not_hold_is_409(
    live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    other = await live.agent("host-2", hello=True)
    await submit(admin)
    task = await claim(agent)
    body = {"attempt": task["attempt"], "status": "complete", "result": "forged"}
    assert_problem(await other.post(f"/api/v1/agent/tasks/{task['id']}/result", json=body), 409)
    progress = await other.post(
        f"/api/v1/agent/tasks/{task['id']}/progress", json={"attempt": task["attempt"]}
    )
    assert_problem(progress, 409)
    shown = (await admin.get(f"/api/v1/tasks/{task['id']}")).json()
    assert shown["status"] == "active" and shown["result"] is None
    missing = await other.post("/api/v1/agent/tasks/999999/result", json=body)
    assert_problem(missing, 404)


async def test_sign_off_requeues_the_agents_tasks(
    live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    await submit(admin, max_attempts=2)
    task = await claim(agent)
    response = await agent.post("/api/v1/agent/sign-off")
    assert response.status_code == 200
    assert [t["id"] for t in response.json()] == [task["id"]]
    assert (await admin.get("/api/v1/agents/agent-1")).json()["online"] is False
    shown = (await admin.get(f"/api/v1/tasks/{task['id']}")).json()
    assert shown["status"] == "queued" and shown["agent_id"] is None
    # The attempt it had counts: the next one is attempt 2, and the last.
    other = await live.agent("host-2", hello=True)
    assert (await claim(other))["attempt"] == 2


async def test_admin_cannot_use_agent_endpoints(admin: httpx.AsyncClient) -> None:
    assert_problem(await admin.post("/api/v1/agent/claim", params={"wait": 0}), 403)
    assert_problem(await admin.post("/api/v1/agent/hello", json={}), 403)
