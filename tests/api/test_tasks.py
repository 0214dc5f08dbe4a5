"""Submitting, listing, showing, cancelling, requeueing and waiting for tasks."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from pydantic import TypeAdapter

from taskfleet.api.schemas import TaskOut
from tests.api.conftest import Live, assert_problem, claim, parked, submit


async def finish(agent: httpx.AsyncClient, task: dict[str, object], result: object = "ok") -> None:
    response = await agent.post(
        f"/api/v1/agent/tasks/{task['id']}/result",
        json={"attempt": task["attempt"], "status": "complete", "result": result},
    )
    assert response.status_code == 200, response.text


async def test_submit_one_and_show(live: Live, admin: httpx.AsyncClient) -> None:
    task = await submit(admin, payload={"say": "hi"}, priority=5, max_attempts=2)
    assert task["status"] == "queued" and task["attempt"] == 0
    assert task["payload"] == {"say": "hi"} and task["priority"] == 5
    assert task["target_kind"] == "any" and task["max_attempts"] == 2
    shown = await admin.get(f"/api/v1/tasks/{task['id']}")
    assert shown.json() == task
    # On disk before the API answered: the engine reads it back.
    assert (await live.services.tasks.get(task["id"])).payload == {"say": "hi"}


async def test_a_task_answer_has_the_types_its_schema_promises(
    live: Live, admin: httpx.AsyncClient
) -> None:
    # Task answers are built without validation (`TaskOut.of`): read one back strictly.
    body = {"type": "t", "payload": [1.5, None], "timeout_seconds": 30}
    answer = await admin.post("/api/v1/tasks", json=body)
    (task,) = TypeAdapter(list[TaskOut]).validate_json(answer.text, strict=True)
    shown = await admin.get(f"/api/v1/tasks/{task.id}")
    assert TaskOut.model_validate_json(shown.text, strict=True) == task


async def test_submit_targets(live: Live, admin: httpx.AsyncClient) -> None:
    await live.agent("host-1")
    await admin.post("/api/v1/groups", json={"name": "render"})
    by_agent = await submit(admin, agent="host-1")
    by_group = await submit(admin, group="render")
    by_tags = await submit(admin, tags=["b", "a"])
    assert (by_agent["target_kind"], by_agent["target"]) == ("agent", "host-1")
    assert (by_group["target_kind"], by_group["target"]) == ("group", "render")
    assert (by_tags["target_kind"], by_tags["target"]) == ("tags", "a,b")
    assert_problem(await admin.post("/api/v1/tasks", json={"type": "x", "agent": "nope"}), 404)
    assert_problem(await admin.post("/api/v1/tasks", json={"type": "x", "group": "nope"}), 404)
    both = await admin.post("/api/v1/tasks", json={"type": "x", "agent": "a", "group": "g"})
    assert "at most one" in assert_problem(both, 422)["detail"]


async def test_submit_batch(admin: httpx.AsyncClient) -> None:
    body = {"tasks": [{"type": "echo", "payload": n} for n in range(5)]}
    response = await admin.post("/api/v1/tasks/batch", json=body)
    assert response.status_code == 201
    created = response.json()
    assert [t["payload"] for t in created] == [0, 1, 2, 3, 4]
    assert len({t["id"] for t in created}) == 5


async def test_batch_is_all_or_nothing(admin: httpx.AsyncClient) -> None:
    body = {"tasks": [{"type": "echo"}, {"type": "echo", "agent": "nobody"}]}
    assert_problem(await admin.post("/api/v1/tasks/batch", json=body), 404)
    assert (await admin.get("/api/v1/tasks")).json()["tasks"] == []
    assert_problem(await admin.post("/api/v1/tasks/batch", json={"tasks": []}), 422)


async def test_broadcast_to_a_group(live: Live, admin: httpx.AsyncClient) -> None:
    names = ["host-1", "host-2", "host-3"]
    for name in names:
        await live.agent(name)
        await admin.patch(f"/api/v1/agents/{name}", json={"groups": ["render"]})
    await live.agent("outsider")
    response = await admin.post(
        "/api/v1/tasks", json={"type": "update", "group": "render", "broadcast": True}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert sorted(t["target"] for t in created) == names
    assert {t["target_kind"] for t in created} == {"agent"}

    # Each member gets its own copy; the outsider gets none.
    outsider = live.agent_client("outsider")
    assert (await outsider.post("/api/v1/agent/claim", params={"wait": 0})).status_code == 204
    for name in names:
        got = await claim(live.agent_client(name))
        assert got["target"] == name

    assert_problem(await admin.post("/api/v1/tasks", json={"type": "x", "broadcast": True}), 422)
    await admin.post("/api/v1/groups", json={"name": "empty"})
    empty = await admin.post(
        "/api/v1/tasks", json={"type": "x", "group": "empty", "broadcast": True}
    )
    assert_problem(empty, 404)


async def test_list_filters_and_pagination(
    live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    ids = [
        t["id"]
        for t in (
            await admin.post(
                "/api/v1/tasks/batch",
                json={"tasks": [{"type": "a" if n % 2 else "b"} for n in range(7)]},
            )
        ).json()
    ]
    seen: list[int] = []
    after = 0
    while True:
        page = (await admin.get("/api/v1/tasks", params={"after": after, "limit": 3})).json()
        seen += [t["id"] for t in page["tasks"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == ids

    type_a = (await admin.get("/api/v1/tasks", params={"type": "a"})).json()["tasks"]
    assert [t["id"] for t in type_a] == ids[1::2]

    task = await claim(agent)
    active = (await admin.get("/api/v1/tasks", params={"status": "active"})).json()["tasks"]
    assert [t["id"] for t in active] == [task["id"]]
    mine = (await admin.get("/api/v1/tasks", params={"agent": "agent-1"})).json()["tasks"]
    assert [t["id"] for t in mine] == [task["id"]]
    # An agent lists only the tasks it ran.
    assert [t["id"] for t in (await agent.get("/api/v1/tasks")).json()["tasks"]] == [task["id"]]
    assert_problem(await admin.get("/api/v1/tasks", params={"agent": "nobody"}), 404)


async def test_cancel_queued_task(admin: httpx.AsyncClient, agent: httpx.AsyncClient) -> None:
    task = await submit(admin)
    response = await admin.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert (await agent.post("/api/v1/agent/claim", params={"wait": 0})).status_code == 204
    assert_problem(await admin.post(f"/api/v1/tasks/{task['id']}/cancel"), 409)
    assert_problem(await admin.post("/api/v1/tasks/999/cancel"), 404)


async def test_cancel_active_task_is_confirmed_by_the_agent(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    await submit(admin)
    task = await claim(agent)
    response = await admin.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert response.json()["status"] == "cancel-requested"

    # The agent learns of it from its next progress report...
    lease = await agent.post(
        f"/api/v1/agent/tasks/{task['id']}/progress", json={"attempt": task["attempt"]}
    )
    assert lease.json()["cancel_requested"] is True
    # ...and confirms.
    response = await agent.post(
        f"/api/v1/agent/tasks/{task['id']}/result",
        json={"attempt": task["attempt"], "status": "cancelled"},
    )
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert (await admin.get(f"/api/v1/tasks/{task['id']}")).json()["status"] == "cancelled"


async def test_requeue(admin: httpx.AsyncClient, agent: httpx.AsyncClient) -> None:
    await submit(admin)
    task = await claim(agent)
    assert_problem(await admin.post(f"/api/v1/tasks/{task['id']}/requeue"), 409)
    await agent.post(
        f"/api/v1/agent/tasks/{task['id']}/result",
        json={"attempt": task["attempt"], "status": "error", "msg": "disk full"},
    )
    failed = (await admin.get(f"/api/v1/tasks/{task['id']}")).json()
    assert failed["status"] == "failed" and failed["error"] == "disk full"

    response = await admin.post(f"/api/v1/tasks/{task['id']}/requeue", params={"attempts": 2})
    assert response.status_code == 200
    requeued = response.json()
    assert requeued["status"] == "queued" and requeued["error"] is None
    assert requeued["max_attempts"] == task["attempt"] + 2
    again = await claim(agent)
    assert again["id"] == task["id"] and again["attempt"] == task["attempt"] + 1
    assert_problem(await admin.post("/api/v1/tasks/999/requeue"), 404)
    bad = await admin.post(f"/api/v1/tasks/{task['id']}/requeue", params={"attempts": 0})
    assert_problem(bad, 422)


# A slow fallback poll, so that only a wake-up can end the wait quickly.
@pytest.mark.settings(poll_interval=30.0)
async def test_wait_returns_as_soon_as_the_result_is_posted(
    live: Live, admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    await submit(admin)
    task = await claim(agent)
    started = time.monotonic()
    waiting = asyncio.create_task(
        admin.get(f"/api/v1/tasks/{task['id']}/wait", params={"timeout": 20})
    )
    await parked(live, f"task:{task['id']}")
    await finish(agent, task, {"answer": 42})
    response = await waiting
    assert time.monotonic() - started < 5
    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    assert response.json()["result"] == {"answer": 42}


async def test_wait_times_out_with_the_task_as_it_stands(
    admin: httpx.AsyncClient, agent: httpx.AsyncClient
) -> None:
    task = await submit(admin)
    started = time.monotonic()
    response = await admin.get(f"/api/v1/tasks/{task['id']}/wait", params={"timeout": 0.2})
    assert 0.2 <= time.monotonic() - started < 5
    assert response.json()["status"] == "queued"
    assert_problem(await admin.get("/api/v1/tasks/999/wait", params={"timeout": 0}), 404)


async def test_logs_and_outputs(admin: httpx.AsyncClient, agent: httpx.AsyncClient) -> None:
    await submit(admin)
    task = await claim(agent)
    base = f"/api/v1/agent/tasks/{task['id']}"
    for line in ("one\n", "two\n", "three\n"):
        response = await agent.post(f"{base}/log", json={"attempt": 1, "text": line})
        assert response.status_code == 204
    out = await agent.post(f"{base}/outputs", json={"attempt": 1, "data": {"file": "a.png"}})
    assert out.status_code == 201 and out.json()["data"] == {"file": "a.png"}

    logs = (await admin.get(f"/api/v1/tasks/{task['id']}/logs")).json()
    assert [c["text"] for c in logs] == ["one\n", "two\n", "three\n"]
    assert {c["attempt"] for c in logs} == {1}
    rest = await admin.get(
        f"/api/v1/tasks/{task['id']}/logs", params={"after": logs[0]["id"], "limit": 1}
    )
    assert [c["text"] for c in rest.json()] == ["two\n"]
    outputs = (await admin.get(f"/api/v1/tasks/{task['id']}/outputs")).json()
    assert [o["data"] for o in outputs] == [{"file": "a.png"}]
    # The agent that ran it may read them too.
    assert len((await agent.get(f"/api/v1/tasks/{task['id']}/logs")).json()) == 3

    assert_problem(await admin.get("/api/v1/tasks/999/logs"), 404)
    assert_problem(await admin.get("/api/v1/tasks/999/outputs"), 404)
    # Only the current attempt writes.
    assert_problem(await agent.post(f"{base}/log", json={"attempt": 2, "text": "x"}), 409)
    assert_problem(await agent.post(f"{base}/outputs", json={"attempt": 2, "data": 1}), 409)
