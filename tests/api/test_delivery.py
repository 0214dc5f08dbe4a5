"""Delivery semantics through the API: at-least-once delivery, exactly-once recording.

Lease tests use a short lease and a fast reaper, and wait on conditions with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from taskfleet.core.models import TaskStatus
from tests.api.conftest import Live, assert_problem, claim, eventually, submit

FAST_LEASES = pytest.mark.settings(lease_seconds=0.3, reap_interval=0.05, poll_interval=0.05)


async def status_becomes(
    admin: httpx.AsyncClient, task_id: int, status: str, timeout: float = 10.0
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        task: dict[str, Any] = (await admin.get(f"/api/v1/tasks/{task_id}")).json()
        return task if task["status"] == status else None

    return await eventually(check, timeout)


def result_body(task: dict[str, Any], result: object, attempt: int | None = None) -> Any:
    attempt = task["attempt"] if attempt is None else attempt
    return {"attempt": attempt, "status": "complete", "result": result}


@FAST_LEASES
async def test_expired_lease_requeues_the_task(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    task = await submit(admin, max_attempts=3)
    first = await claim(agent)
    assert first["attempt"] == 1
    requeued = await status_becomes(admin, task["id"], "queued")
    assert requeued["attempt"] == 1 and requeued["agent_id"] is None
    second = await claim(agent)
    assert second["id"] == task["id"] and second["attempt"] == 2


@pytest.mark.settings(lease_seconds=0.4, reap_interval=0.05)
async def test_progress_keeps_the_lease_alive(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    task = await submit(admin)
    await claim(agent)
    # Report at a quarter of the lease for three lease lengths: the task stays ours...
    deadline = time.monotonic() + 3 * 0.4
    while time.monotonic() < deadline:
        response = await agent.post(
            f"/api/v1/agent/tasks/{task['id']}/progress", json={"attempt": 1, "percent": 10}
        )
        assert response.status_code == 200, response.text
        await asyncio.sleep(0.1)  # the agent's heartbeat interval, not a synchronisation
    shown = (await admin.get(f"/api/v1/tasks/{task['id']}")).json()
    assert shown["status"] == "active" and shown["attempt"] == 1
    # ...and once the reports stop, the lease runs out.
    await status_becomes(admin, task["id"], "queued")


@FAST_LEASES
async def test_out_of_attempts_fails_with_a_clear_error(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    task = await submit(admin, max_attempts=2)
    await claim(agent)
    await status_becomes(admin, task["id"], "queued")
    await claim(agent)
    failed = await status_becomes(admin, task["id"], "failed")
    assert failed["attempt"] == 2
    assert "attempt 2 of 2" in failed["error"] and "no attempts are left" in failed["error"]
    assert (await agent.post("/api/v1/agent/claim", params={"wait": 0})).status_code == 204


# A lease long enough for the second attempt to report well before it runs out.
@pytest.mark.settings(lease_seconds=1.0, reap_interval=0.05)
async def test_stale_attempt_result_is_refused_and_recorded_nowhere(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient, live: Live
) -> None:
    task = await submit(admin)
    slow = await claim(agent)
    await status_becomes(admin, task["id"], "queued")
    other = await live.agent("host-2", hello=True)
    current = await claim(other)
    assert current["attempt"] == 2

    url = f"/api/v1/agent/tasks/{task['id']}/result"
    stale = await agent.post(url, json=result_body(slow, "from attempt 1"))
    assert "not current" in assert_problem(stale, 409)["detail"]
    stale_log = await agent.post(
        f"/api/v1/agent/tasks/{task['id']}/log", json={"attempt": 1, "text": "late"}
    )
    assert_problem(stale_log, 409)
    stale_progress = await agent.post(
        f"/api/v1/agent/tasks/{task['id']}/progress", json={"attempt": 1}
    )
    assert_problem(stale_progress, 409)

    response = await other.post(url, json=result_body(current, "from attempt 2"))
    assert response.status_code == 200
    # The stale attempt may retry as often as it likes: the record stays the current one's.
    assert_problem(await agent.post(url, json=result_body(slow, "from attempt 1")), 409)
    shown = (await admin.get(f"/api/v1/tasks/{task['id']}")).json()
    assert shown["status"] == "completed" and shown["result"] == "from attempt 2"
    assert shown["attempt"] == 2
    assert (await admin.get(f"/api/v1/tasks/{task['id']}/logs")).json() == []


async def test_repeated_result_is_accepted_once(
    live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    task = await submit(admin)
    claimed = await claim(agent)
    url = f"/api/v1/agent/tasks/{task['id']}/result"
    first = await agent.post(url, json=result_body(claimed, {"n": 1}))
    second = await agent.post(url, json=result_body(claimed, {"n": 1}))
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second.json()["result"] == {"n": 1}
    # Recorded once: the second answer changed nothing, not even the finish time.
    shown = (await admin.get(f"/api/v1/tasks/{task['id']}")).json()
    assert shown == first.json()
    assert await live.services.tasks.counts() == {TaskStatus.COMPLETED: 1}
    # A different outcome for the same, finished attempt is a conflict.
    assert_problem(
        await agent.post(url, json={"attempt": 1, "status": "error", "msg": "oops"}), 409
    )


async def test_result_for_a_future_attempt_is_refused(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    task = await submit(admin)
    await claim(agent)
    response = await agent.post(
        f"/api/v1/agent/tasks/{task['id']}/result", json=result_body(task, "x", attempt=7)
    )
    assert_problem(response, 409)
    assert (await admin.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "active"


@FAST_LEASES
async def test_expired_lease_of_a_cancel_request_ends_cancelled(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    task = await submit(admin)
    await claim(agent)
    await admin.post(f"/api/v1/tasks/{task['id']}/cancel")
    cancelled = await status_becomes(admin, task["id"], "cancelled")
    assert "stopped reporting" in cancelled["error"]


@pytest.mark.settings(reap_interval=0.05)
async def test_task_timeout_fails_it(admin: httpx.AsyncClient, agent: httpx.AsyncClient) -> None:
    task = await submit(admin, timeout_seconds=0.2)
    await claim(agent)
    failed = await status_becomes(admin, task["id"], "failed")
    assert "timed out" in failed["error"]
